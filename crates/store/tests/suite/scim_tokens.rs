//! SCIM tokens have a lifecycle: a tenant's first token is created with it;
//! a rotation keeps the previous token working for a grace period, and a
//! second rotation keeps only the token the identity provider used last;
//! replaced tokens are revoked by hand; the last use is written at most once
//! a minute; nothing ever stores or audits a secret.

use entitle_store::{AuditFilter, NewTenant, ScimTokenState, Store, StoreError, secrets};
use time::{Duration, OffsetDateTime};

use super::tester;

/// Every SCIM token scenario, on one store.
pub async fn run_all(store: &dyn Store) {
    the_first_token_comes_with_the_tenant(store).await;
    a_rotation_keeps_the_previous_token_for_its_grace(store).await;
    a_second_rotation_keeps_the_token_used_last(store).await;
    a_zero_grace_and_a_revocation_end_old_tokens_now(store).await;
    the_last_use_is_written_once_a_minute(store).await;
    rotations_forget_old_ended_tokens(store).await;
}

async fn rotations_forget_old_ended_tokens(store: &dyn Store) {
    let t = tenant_with_token(store, "scimtok-many", "many-0").await;
    for i in 1..=15 {
        store
            .rotate_scim_token_with_grace(
                &t,
                &hash(&format!("many-{i}")),
                Duration::ZERO,
                &tester(),
            )
            .await
            .expect("rotated");
    }
    let listed = store.scim_tokens(&t).await.expect("listed");
    assert_eq!(listed.len(), 10);
    let mut kept = 0;
    for i in 0..=15 {
        match store.scim_grant(&hash(&format!("many-{i}"))).await {
            Ok(_) => kept += 1,
            Err(StoreError::NotFound { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(kept, 10, "the newest ten are kept, the rest forgotten");
    assert_eq!(state_of(store, "many-15").await, ScimTokenState::Current);
}

async fn tenant_with_token(store: &dyn Store, name: &str, token: &str) -> String {
    store
        .create_tenant(
            NewTenant {
                name: name.to_owned(),
                created_at: OffsetDateTime::now_utc() - Duration::days(3),
                enrollment_key_hash: secrets::hash_secret(&format!("{name}-enroll")),
                scim_token_hash: secrets::hash_secret(token),
            },
            &tester(),
        )
        .await
        .expect("tenant created")
        .id
}

fn hash(token: &str) -> String {
    secrets::hash_secret(token)
}

async fn state_of(store: &dyn Store, token: &str) -> ScimTokenState {
    store
        .scim_grant(&hash(token))
        .await
        .expect("token found")
        .token
        .state(OffsetDateTime::now_utc())
}

async fn the_first_token_comes_with_the_tenant(store: &dyn Store) {
    let t = tenant_with_token(store, "scimtok-first", "first-token").await;
    let grant = store.scim_grant(&hash("first-token")).await.expect("grant");
    assert_eq!(grant.tenant.id, t);
    assert_eq!(grant.token.tenant_id, t);
    assert_eq!(grant.token.last_used_at, None);
    assert_eq!(
        grant.token.state(OffsetDateTime::now_utc()),
        ScimTokenState::Current
    );
    // Created with the token, not with the (backdated) tenant.
    assert!(OffsetDateTime::now_utc() - grant.token.created_at < Duration::minutes(1));
    assert_eq!(
        store
            .tenant_by_scim_token(&hash("first-token"))
            .await
            .expect("tenant")
            .id,
        t
    );
    assert!(matches!(
        store.scim_grant(&hash("no-such-token")).await,
        Err(StoreError::NotFound { .. })
    ));
    let listed = store.scim_tokens(&t).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, grant.token.id);
}

async fn a_rotation_keeps_the_previous_token_for_its_grace(store: &dyn Store) {
    let t = tenant_with_token(store, "scimtok-grace", "grace-a").await;
    let a = store.scim_grant(&hash("grace-a")).await.expect("a").token;
    let rotation = store
        .rotate_scim_token_with_grace(&t, &hash("grace-b"), Duration::hours(24), &tester())
        .await
        .expect("rotated");
    let kept = rotation.kept.expect("the previous token is kept");
    assert_eq!(kept.id, a.id);
    assert!(rotation.ended.is_empty());
    let until = kept.expires_at.expect("an end");
    let left = until - OffsetDateTime::now_utc();
    assert!(
        left > Duration::hours(23) && left <= Duration::hours(24),
        "{left}"
    );
    assert!(matches!(
        state_of(store, "grace-a").await,
        ScimTokenState::Grace(_)
    ));
    assert_eq!(state_of(store, "grace-b").await, ScimTokenState::Current);
    // Both open the tenant while the grace lasts.
    for token in ["grace-a", "grace-b"] {
        assert_eq!(
            store
                .tenant_by_scim_token(&hash(token))
                .await
                .expect("works")
                .id,
            t
        );
    }
    let listed = store.scim_tokens(&t).await.expect("listed");
    assert_eq!(
        listed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [rotation.token.id.as_str(), a.id.as_str()],
        "newest first"
    );
    // Audited with the grace, and never a secret or hash.
    let entries = store
        .audit_filtered(
            &t,
            &AuditFilter {
                action: Some("scim_token.rotate".into()),
                ..AuditFilter::default()
            },
            10,
            None,
        )
        .await
        .expect("audit");
    assert_eq!(entries.len(), 1);
    let entry = &entries[0].1;
    assert_eq!(entry.actor, tester());
    let after = entry.after.as_ref().expect("after");
    assert_eq!(after["grace_period_seconds"], 24 * 3600);
    assert_eq!(after["kept"]["id"], a.id.as_str());
    let text = after.to_string();
    assert!(!text.contains(&hash("grace-b")) && !text.contains("grace-b"));
}

async fn a_second_rotation_keeps_the_token_used_last(store: &dyn Store) {
    // The new token was lost before the identity provider got it, which still
    // uses the old one: a second rotation keeps the old one, not the lost one.
    let t = tenant_with_token(store, "scimtok-twice", "twice-a").await;
    let a = store.scim_grant(&hash("twice-a")).await.expect("a").token;
    store
        .touch_scim_token(&a.id, OffsetDateTime::now_utc())
        .await
        .expect("touched");
    let first = store
        .rotate_scim_token_with_grace(&t, &hash("twice-b"), Duration::hours(24), &tester())
        .await
        .expect("rotated");
    let second = store
        .rotate_scim_token_with_grace(&t, &hash("twice-c"), Duration::hours(2), &tester())
        .await
        .expect("rotated again");
    assert_eq!(
        second.kept.as_ref().map(|k| k.id.as_str()),
        Some(a.id.as_str())
    );
    assert_eq!(
        second
            .ended
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        [first.token.id.as_str()]
    );
    // The grace chosen now applies to the token that stays.
    let left = second.kept.and_then(|k| k.expires_at).expect("an end") - OffsetDateTime::now_utc();
    assert!(
        left <= Duration::hours(2) && left > Duration::hours(1),
        "{left}"
    );
    assert!(matches!(
        state_of(store, "twice-a").await,
        ScimTokenState::Grace(_)
    ));
    assert!(matches!(
        state_of(store, "twice-b").await,
        ScimTokenState::Revoked(_)
    ));
    assert!(matches!(
        store.tenant_by_scim_token(&hash("twice-b")).await,
        Err(StoreError::NotFound { .. })
    ));
    // Once the identity provider uses the newest token, the next rotation keeps that one.
    let c = store.scim_grant(&hash("twice-c")).await.expect("c").token;
    store
        .touch_scim_token(&c.id, OffsetDateTime::now_utc() + Duration::minutes(5))
        .await
        .expect("touched");
    let third = store
        .rotate_scim_token_with_grace(&t, &hash("twice-d"), Duration::hours(24), &tester())
        .await
        .expect("rotated a third time");
    assert_eq!(third.kept.map(|k| k.id), Some(c.id));
    assert_eq!(
        third
            .ended
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        [a.id.as_str()]
    );
    let revokes = store
        .audit_filtered(
            &t,
            &AuditFilter {
                action: Some("scim_token.revoke".into()),
                ..AuditFilter::default()
            },
            10,
            None,
        )
        .await
        .expect("audit");
    assert_eq!(revokes.len(), 2, "one revocation per ended token");
    // At most two tokens work at once.
    let now = OffsetDateTime::now_utc();
    let working = store
        .scim_tokens(&t)
        .await
        .expect("listed")
        .iter()
        .filter(|t| t.state(now).works())
        .count();
    assert_eq!(working, 2);
}

async fn a_zero_grace_and_a_revocation_end_old_tokens_now(store: &dyn Store) {
    let t = tenant_with_token(store, "scimtok-zero", "zero-a").await;
    let rotation = store
        .rotate_scim_token_with_grace(&t, &hash("zero-b"), Duration::ZERO, &tester())
        .await
        .expect("rotated");
    assert!(rotation.kept.is_none());
    assert_eq!(rotation.ended.len(), 1);
    assert!(matches!(
        state_of(store, "zero-a").await,
        ScimTokenState::Revoked(_)
    ));

    // A short grace ends by itself: expired, not revoked.
    store
        .rotate_scim_token_with_grace(&t, &hash("zero-c"), Duration::milliseconds(1), &tester())
        .await
        .expect("rotated");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(matches!(
        state_of(store, "zero-b").await,
        ScimTokenState::Expired(_)
    ));
    assert!(matches!(
        store.tenant_by_scim_token(&hash("zero-b")).await,
        Err(StoreError::NotFound { .. })
    ));

    // A token in its grace period is revoked by hand; the current one is not.
    store
        .rotate_scim_token_with_grace(&t, &hash("zero-d"), Duration::hours(1), &tester())
        .await
        .expect("rotated");
    let c = store.scim_grant(&hash("zero-c")).await.expect("c").token;
    let d = store.scim_grant(&hash("zero-d")).await.expect("d").token;
    let revoked = store
        .revoke_scim_token(&t, &c.id, &tester())
        .await
        .expect("revoked");
    let at = revoked.revoked_at.expect("revoked");
    let again = store
        .revoke_scim_token(&t, &c.id, &tester())
        .await
        .expect("again");
    assert_eq!(
        again.revoked_at,
        Some(at),
        "the first revocation time stays"
    );
    assert!(matches!(
        store.revoke_scim_token(&t, &d.id, &tester()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(state_of(store, "zero-d").await, ScimTokenState::Current);
    // Another tenant's token cannot be revoked through this one.
    let other = tenant_with_token(store, "scimtok-zero-other", "zero-other").await;
    let mine = store.scim_grant(&hash("zero-a")).await.expect("a").token;
    assert!(matches!(
        store.revoke_scim_token(&other, &mine.id, &tester()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_scim_token(&t, "not-an-id", &tester()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn the_last_use_is_written_once_a_minute(store: &dyn Store) {
    let _t = tenant_with_token(store, "scimtok-touch", "touch-a").await;
    let token = store.scim_grant(&hash("touch-a")).await.expect("a").token;
    let at = OffsetDateTime::now_utc() - Duration::minutes(10);
    store.touch_scim_token(&token.id, at).await.expect("touch");
    store
        .touch_scim_token(&token.id, at + Duration::seconds(30))
        .await
        .expect("touch");
    assert!((last_used(store, "touch-a").await - at).abs() < Duration::seconds(1));
    store
        .touch_scim_token(&token.id, at + Duration::minutes(2))
        .await
        .expect("touch");
    assert!(
        (last_used(store, "touch-a").await - (at + Duration::minutes(2))).abs()
            < Duration::seconds(1)
    );
}

async fn last_used(store: &dyn Store, token: &str) -> OffsetDateTime {
    store
        .scim_grant(&hash(token))
        .await
        .expect("grant")
        .token
        .last_used_at
        .expect("used")
}
