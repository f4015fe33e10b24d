//! Credentials have a lifecycle: tokens are listed, expire, are revoked and
//! remember their last use; accounts are disabled, change passwords and lose
//! their sessions; emails are unique per tenant only.

use entitle_store::{
    AccountChange, Actor, ActorKind, NewAccount, Role, Store, StoreError, TokenGrant, secrets,
};
use time::{Duration, OffsetDateTime};

use super::tenant;

/// A token named `name`, as the principal of a change.
fn who(name: &str) -> Actor {
    Actor::new(ActorKind::ApiToken, format!("id-{name}"), name)
}

/// Every credential scenario, on one store.
pub async fn run_all(store: &dyn Store) {
    tokens_are_listed_revoked_and_touched(store).await;
    emails_are_unique_per_tenant_only(store).await;
    disabling_an_account_ends_its_sessions(store).await;
    passwords_and_sessions(store).await;
}

fn grant(tenant_id: Option<&str>, name: &str, role: Role) -> TokenGrant {
    TokenGrant {
        role,
        tenant_id: tenant_id.map(str::to_owned),
        name: name.to_owned(),
    }
}

async fn tokens_are_listed_revoked_and_touched(store: &dyn Store) {
    let a = tenant(store, "cred-tokens-a").await;
    let b = tenant(store, "cred-tokens-b").await;
    let expires = OffsetDateTime::now_utc() + Duration::days(30);
    let ci = store
        .issue_api_token(
            "cred-hash-ci",
            &grant(Some(&a), "ci", Role::Admin),
            Some(expires),
            &who("alice"),
        )
        .await
        .expect("issued");
    assert_eq!(ci.created_by.as_deref(), Some("token alice"));
    assert!(
        ci.expires_at
            .is_some_and(|at| (at - expires).abs() < Duration::seconds(1))
    );
    let other = store
        .create_api_token(
            "cred-hash-b",
            &grant(Some(&b), "b", Role::Viewer),
            &who("bob"),
        )
        .await
        .expect("issued");
    assert_eq!(other.expires_at, None);

    let listed = store.api_tokens(Some(&a)).await.expect("listed");
    assert_eq!(listed.len(), 1, "only the tenant's own tokens: {listed:?}");
    assert_eq!(listed[0], ci);
    assert!(
        store
            .api_tokens(None)
            .await
            .expect("super admin tokens")
            .iter()
            .all(|t| t.grant.tenant_id.is_none())
    );

    // Another tenant cannot revoke the token, nor see that it exists.
    assert!(matches!(
        store
            .revoke_api_token(Some(&b), &ci.id, &who("mallory"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke_api_token(None, &ci.id, &who("root")).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store
            .revoke_api_token(Some(&a), "not-an-id", &who("alice"))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let revoked = store
        .revoke_api_token(Some(&a), &ci.id, &who("alice"))
        .await
        .expect("revoked");
    let at = revoked.revoked_at.expect("revocation time");
    let again = store
        .revoke_api_token(Some(&a), &ci.id, &who("alice"))
        .await
        .expect("revoking twice is harmless");
    assert_eq!(
        again.revoked_at,
        Some(at),
        "the first revocation time stays"
    );
    let found = store.api_token("cred-hash-ci").await.expect("still found");
    assert_eq!(found.revoked_at, Some(at));
    let audit = store.audit(&a, 10, None).await.expect("audit");
    let revocations = audit
        .iter()
        .filter(|(_, e)| e.action == "token.revoke")
        .count();
    assert_eq!(revocations, 1, "one revocation, one entry");
    assert!(audit.iter().any(|(_, e)| e.action == "token.create"));

    // The last use is written at most once a minute.
    let t0 = OffsetDateTime::now_utc();
    store.touch_api_token(&other.id, t0).await.expect("touched");
    let first = store
        .api_token("cred-hash-b")
        .await
        .expect("found")
        .last_used_at
        .expect("last use recorded");
    assert!((first - t0).abs() < Duration::seconds(1));
    store
        .touch_api_token(&other.id, t0 + Duration::seconds(30))
        .await
        .expect("touched");
    let unchanged = store.api_token("cred-hash-b").await.expect("found");
    assert_eq!(
        unchanged.last_used_at,
        Some(first),
        "within a minute: no write"
    );
    store
        .touch_api_token(&other.id, t0 + Duration::seconds(61))
        .await
        .expect("touched");
    let later = store.api_token("cred-hash-b").await.expect("found");
    assert!(
        later
            .last_used_at
            .is_some_and(|at| (at - (t0 + Duration::seconds(61))).abs() < Duration::seconds(1))
    );
}

fn account(tenant_id: Option<&str>, email: &str, role: Role) -> NewAccount {
    NewAccount {
        tenant_id: tenant_id.map(str::to_owned),
        email: email.to_owned(),
        password_hash: "$argon2id$x".into(),
        role,
    }
}

async fn emails_are_unique_per_tenant_only(store: &dyn Store) {
    let a = tenant(store, "cred-emails-a").await;
    let b = tenant(store, "cred-emails-b").await;
    let in_a = store
        .create_account(
            account(Some(&a), "Admin@Example.com", Role::Admin),
            &who("t"),
        )
        .await
        .expect("first tenant");
    let in_b = store
        .create_account(
            account(Some(&b), "admin@example.com", Role::Admin),
            &who("t"),
        )
        .await
        .expect("the same email in another tenant");
    assert!(matches!(
        store
            .create_account(
                account(Some(&a), "ADMIN@example.com", Role::Viewer),
                &who("t")
            )
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    let root = store
        .create_account(
            account(None, "admin@example.com", Role::SuperAdmin),
            &who("t"),
        )
        .await
        .expect("a super admin with the same email");
    assert!(matches!(
        store
            .create_account(
                account(None, "Admin@example.com", Role::SuperAdmin),
                &who("t")
            )
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    let found = store
        .accounts_by_email("admin@EXAMPLE.com")
        .await
        .expect("found");
    // Oldest first; accounts made within one tick of the clock (a
    // millisecond on SQLite) may come in either order.
    let mut ids: Vec<&str> = found.iter().map(|a| a.id.as_str()).collect();
    assert!(found.is_sorted_by_key(|a| a.created_at), "{found:?}");
    ids.sort_unstable();
    let mut made = [in_a.id.as_str(), in_b.id.as_str(), root.id.as_str()];
    made.sort_unstable();
    assert_eq!(ids, made);
    let listed = store.accounts(&a).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, in_a.id);
    assert!(matches!(
        store.account(Some(&b), &in_a.id).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn disabling_an_account_ends_its_sessions(store: &dyn Store) {
    let t = tenant(store, "cred-disable").await;
    let other = tenant(store, "cred-disable-other").await;
    let person = store
        .create_account(
            account(Some(&t), "person@example.com", Role::Admin),
            &who("t"),
        )
        .await
        .expect("account");
    let expires = OffsetDateTime::now_utc() + Duration::hours(8);
    store
        .create_session("cred-session-1", &person.id, "csrf", expires)
        .await
        .expect("session");
    assert!(matches!(
        store
            .update_account(
                Some(&other),
                &person.id,
                AccountChange {
                    disabled: Some(true),
                    role: None
                },
                &who("mallory")
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.session("cred-session-1").await.is_ok());

    let disabled = store
        .update_account(
            Some(&t),
            &person.id,
            AccountChange {
                disabled: Some(true),
                role: Some(Role::Viewer),
            },
            &who("admin"),
        )
        .await
        .expect("disabled");
    assert!(disabled.disabled_at.is_some());
    assert_eq!(disabled.role, Role::Viewer);
    assert!(matches!(
        store.session("cred-session-1").await,
        Err(StoreError::NotFound { .. })
    ));
    // A session that slips in after the disable (a sign-in racing it) does not open.
    store
        .create_session("cred-session-2", &person.id, "csrf", expires)
        .await
        .expect("session");
    assert!(matches!(
        store.session("cred-session-2").await,
        Err(StoreError::NotFound { .. })
    ));
    let enabled = store
        .update_account(
            Some(&t),
            &person.id,
            AccountChange {
                disabled: Some(false),
                role: None,
            },
            &who("admin"),
        )
        .await
        .expect("enabled");
    assert_eq!(enabled.disabled_at, None);
    assert!(store.session("cred-session-2").await.is_ok());
    let actions: Vec<String> = store
        .audit(&t, 20, None)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    for action in [
        "account.create",
        "account.disable",
        "account.role",
        "account.enable",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

async fn passwords_and_sessions(store: &dyn Store) {
    let t = tenant(store, "cred-passwords").await;
    let person = store
        .create_account(account(Some(&t), "pw@example.com", Role::Viewer), &who("t"))
        .await
        .expect("account");
    let expires = OffsetDateTime::now_utc() + Duration::hours(8);
    let token = secrets::new_secret("s");
    let hash = secrets::hash_secret(&token);
    store
        .create_session(&hash, &person.id, "csrf", expires)
        .await
        .expect("session");
    store
        .set_account_password(
            Some(&t),
            &person.id,
            "$argon2id$new",
            false,
            &who("pw@example.com"),
        )
        .await
        .expect("changed");
    assert_eq!(
        store
            .account(Some(&t), &person.id)
            .await
            .expect("found")
            .password_hash,
        "$argon2id$new"
    );
    assert!(
        store.session(&hash).await.is_ok(),
        "own change keeps the session"
    );
    store
        .set_account_password(Some(&t), &person.id, "$argon2id$reset", true, &who("admin"))
        .await
        .expect("reset");
    assert!(store.session(&hash).await.is_err(), "a reset ends sessions");
    for name in ["cred-s-1", "cred-s-2"] {
        store
            .create_session(name, &person.id, "csrf", expires)
            .await
            .expect("session");
    }
    assert_eq!(
        store
            .end_sessions(Some(&t), &person.id, &who("admin"))
            .await
            .expect("ended"),
        2
    );
    assert!(store.session("cred-s-1").await.is_err());
    let actions: Vec<String> = store
        .audit(&t, 20, None)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "account.password").count(),
        2
    );
    assert!(actions.iter().any(|a| a == "account.sessions_end"));
}
