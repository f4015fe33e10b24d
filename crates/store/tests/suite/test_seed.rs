//! The test-only bulk writes seed what one `create_user` or `enroll_device`
//! call each would: the tests that seed fleets with them rely on it.

use entitle_store::{
    ConfigStore, DeviceStore, DirectoryStore, Enrollment, NewUser, SqlStore, TenantStore,
};
use time::OffsetDateTime;

use super::{report, tenant, tester};

pub async fn run_all(store: &SqlStore) {
    let tenant_id = tenant(store, "bulk").await;
    let group = store
        .create_group(&tenant_id, "Team", &[], &tester())
        .await
        .expect("group");
    let users: Vec<NewUser> = ["ada", "bob"]
        .into_iter()
        .map(|name| NewUser {
            user_name: name.to_owned(),
            display_name: Some(name.to_uppercase()),
            groups: vec![group.id.clone(), group.id.clone()],
        })
        .collect();
    let version = store.versions(&tenant_id).await.expect("version").data;
    let made = store
        .create_users(&tenant_id, &users, &tester())
        .await
        .expect("users");
    assert_eq!(
        store.versions(&tenant_id).await.expect("version").data,
        version + 1,
        "one bump for the batch"
    );
    for user in &made {
        let stored = store
            .user_by_name(&tenant_id, &user.user_name)
            .await
            .expect("stored");
        assert_eq!(&stored, user, "returned as create_user returns it");
    }

    let at = OffsetDateTime::now_utc()
        .replace_millisecond(0)
        .expect("ms");
    let reports = [report("ada-mac"), report("bob-mac")];
    let enrollments: Vec<Enrollment> = made
        .iter()
        .zip(&reports)
        .map(|(user, report)| Enrollment {
            user,
            token_hash: &report.hostname,
            report,
            at,
        })
        .collect();
    let devices = store
        .enroll_devices(&tenant_id, &enrollments)
        .await
        .expect("devices");
    for device in &devices {
        let stored = store.device(&tenant_id, &device.id).await.expect("stored");
        assert_eq!(&stored, device, "returned as enroll_device returns it");
    }

    // Audited as the single calls are: each user by its creator, each device
    // by itself.
    let audit = store.audit(&tenant_id, 20, None).await.expect("audit");
    let entries: Vec<(&str, &str, &str)> = audit
        .iter()
        .map(|(_, e)| (e.action.as_str(), e.target.as_str(), e.actor.name.as_str()))
        .collect();
    for expected in [
        ("user.create", "ada", "tester"),
        ("user.create", "bob", "tester"),
        ("device.enroll", "ada-mac", "ada-mac"),
        ("device.enroll", "bob-mac", "bob-mac"),
    ] {
        assert!(entries.contains(&expected), "{expected:?} in {entries:?}");
    }
}
