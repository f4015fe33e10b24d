//! A group's effective members: direct and through nesting, each once, in keyset pages by login name, with the nesting
//! that brings each one in.

use std::collections::BTreeSet;

use entitle_store::{MemberCounts, NewUser, Store, StoreError};

use super::{tenant, tester};

pub async fn run_all(store: &dyn Store) {
    members_are_paged_once_across_nesting(store).await;
}

async fn group(store: &dyn Store, t: &str, name: &str, inside: &[String]) -> String {
    store
        .create_group(t, name, inside, &tester())
        .await
        .expect("group")
        .id
}

async fn members_are_paged_once_across_nesting(store: &dyn Store) {
    let t = tenant(store, "views").await;
    let paris = group(store, &t, "Paris", &[]).await;
    let eu = group(store, &t, "EU", std::slice::from_ref(&paris)).await;
    let all = group(store, &t, "All", std::slice::from_ref(&eu)).await;
    let other = group(store, &t, "Other", &[]).await;
    for (name, groups) in [
        ("ana", vec![paris.clone()]),
        ("ben", vec![eu.clone(), paris.clone()]),
        ("cyd", vec![all.clone(), paris.clone()]),
        ("dan", vec![other.clone()]),
        ("eve", vec![paris.clone()]),
    ] {
        let user = NewUser {
            user_name: format!("{name}@views.test"),
            display_name: None,
            groups,
        };
        store.create_user(&t, user, &tester()).await.expect("user");
    }
    let eve = store.user_by_name(&t, "eve@views.test").await.expect("eve");
    store
        .set_user_active(&t, &eve.id, false, &tester())
        .await
        .expect("deactivated");

    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .group_members(&t, &all, 2, cursor.as_deref())
            .await
            .expect("page");
        assert!(page.items.len() <= 2);
        listed.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let names: Vec<&str> = listed.iter().map(|m| m.user_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ana@views.test",
            "ben@views.test",
            "cyd@views.test",
            "eve@views.test"
        ]
    );
    let via = |i: usize| -> Vec<String> { listed[i].via.clone() };
    assert_eq!(via(0), [paris.clone(), eu.clone()], "ana: Paris, then EU");
    assert_eq!(
        via(1),
        std::slice::from_ref(&eu),
        "ben: the shortest way in"
    );
    assert!(via(2).is_empty(), "cyd is a direct member");
    assert!(!listed[3].active);
    assert_eq!(
        store.count_group_members(&t, &all).await.expect("counts"),
        MemberCounts {
            members: 4,
            active: 3,
            nested_groups: 2
        }
    );

    // A group around All reaches the same users, each once.
    let around = store
        .create_group(&t, "Around", std::slice::from_ref(&all), &tester())
        .await
        .expect("around");
    let members = store
        .group_members(&t, &around.id, 50, None)
        .await
        .expect("around members");
    let unique: BTreeSet<&str> = members.items.iter().map(|m| m.user_name.as_str()).collect();
    assert_eq!(unique.len(), members.items.len());
    assert_eq!(members.items.len(), 4);

    // Unknown groups, and another tenant's, are not found.
    let elsewhere = tenant(store, "views-other").await;
    for (tenant_id, group_id) in [(&t, "no-such-group"), (&elsewhere, all.as_str())] {
        assert!(matches!(
            store.group_members(tenant_id, group_id, 10, None).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.count_group_members(tenant_id, group_id).await,
            Err(StoreError::NotFound { .. })
        ));
    }
}
