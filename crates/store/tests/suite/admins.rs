//! Administering accounts: invitations (single use, replaced, expired,
//! claimed by the identity provider), the last-admin rule, and sessions by
//! public id (listed per tenant, touched at most once a minute, ended one by one).

use entitle_store::{
    AccountChange, AccountStatus, Actor, ActorKind, NewAccount, NewInvitation, NewSession, Role,
    SessionClient, Store, StoreError,
};
use time::{Duration, OffsetDateTime};

use super::tenant;

fn admin() -> Actor {
    Actor::new(ActorKind::ApiToken, "id-admin", "admin")
}

/// Every scenario, on one store.
pub async fn run_all(store: &dyn Store) {
    invitations_are_single_use_and_replaceable(store).await;
    the_last_admin_cannot_be_demoted_or_disabled(store).await;
    sessions_are_listed_touched_and_ended(store).await;
}

fn invitation(tenant_id: &str, email: &str, role: Role, hash: &str, hours: i64) -> NewInvitation {
    NewInvitation {
        tenant_id: tenant_id.to_owned(),
        email: email.to_owned(),
        role,
        token_hash: hash.to_owned(),
        expires_at: OffsetDateTime::now_utc() + Duration::hours(hours),
        placeholder_hash: "invited$placeholder".to_owned(),
    }
}

fn refused_code(result: Result<impl std::fmt::Debug, StoreError>) -> &'static str {
    match result {
        Err(StoreError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn invitations_are_single_use_and_replaceable(store: &dyn Store) {
    let t = tenant(store, "adm-invite").await;
    let invited = store
        .invite_account(
            invitation(&t, "Eve@Acme.test", Role::Viewer, "inv-1", 72),
            &admin(),
        )
        .await
        .expect("invited");
    assert!(!invited.replaced);
    assert_eq!(invited.summary.status(), AccountStatus::Invited);
    assert_eq!(invited.summary.sessions, 0);
    assert_eq!(invited.summary.account.password_hash, "invited$placeholder");
    let pending = invited.summary.pending_invitation().expect("pending");
    assert_eq!(pending.created_by, "token admin");

    // Inviting again replaces the secret and the role, not the account.
    let again = store
        .invite_account(
            invitation(&t, "eve@acme.TEST", Role::Admin, "inv-2", 72),
            &admin(),
        )
        .await
        .expect("re-invited");
    assert!(again.replaced);
    assert_eq!(again.summary.account.id, invited.summary.account.id);
    assert_eq!(again.summary.account.role, Role::Admin);
    assert!(matches!(
        store.invitation("inv-1").await,
        Err(StoreError::NotFound { .. })
    ));
    let found = store.invitation("inv-2").await.expect("found");
    assert_eq!(found.tenant_name, "adm-invite");
    assert!(found.refusal(OffsetDateTime::now_utc()).is_none());

    let accepted = store
        .accept_invitation("inv-2", "$argon2id$chosen")
        .await
        .expect("accepted");
    assert_eq!(accepted.id, invited.summary.account.id);
    let summary = store
        .account_summary(&t, &accepted.id)
        .await
        .expect("summary");
    assert_eq!(summary.status(), AccountStatus::Active);
    assert_eq!(summary.account.password_hash, "$argon2id$chosen");
    assert!(summary.invitation.is_some_and(|i| i.accepted_at.is_some()));
    assert_eq!(
        refused_code(store.accept_invitation("inv-2", "$argon2id$other").await),
        "invitation_used"
    );
    assert_eq!(
        refused_code(
            store
                .invite_account(
                    invitation(&t, "eve@acme.test", Role::Viewer, "inv-3", 72),
                    &admin()
                )
                .await
        ),
        "account_exists"
    );

    // Expired, and withdrawn by disabling.
    let late = store
        .invite_account(
            invitation(&t, "late@acme.test", Role::Viewer, "inv-late", -1),
            &admin(),
        )
        .await
        .expect("invited");
    assert_eq!(
        refused_code(store.accept_invitation("inv-late", "$argon2id$x").await),
        "invitation_expired"
    );
    store
        .update_account(
            Some(&t),
            &late.summary.account.id,
            AccountChange {
                disabled: Some(true),
                role: None,
            },
            &admin(),
        )
        .await
        .expect("disabled");
    store
        .invite_account(
            invitation(&t, "gone@acme.test", Role::Viewer, "inv-gone", 72),
            &admin(),
        )
        .await
        .expect("invited");
    let gone = store.invitation("inv-gone").await.expect("found");
    store
        .update_account(
            Some(&t),
            &gone.account.id,
            AccountChange {
                disabled: Some(true),
                role: None,
            },
            &admin(),
        )
        .await
        .expect("disabled");
    assert_eq!(
        refused_code(store.accept_invitation("inv-gone", "$argon2id$x").await),
        "invitation_withdrawn"
    );

    // The identity provider claims an invited account.
    let sso = store
        .invite_account(
            invitation(&t, "sso@acme.test", Role::Viewer, "inv-sso", 72),
            &admin(),
        )
        .await
        .expect("invited");
    let claimed = store
        .claim_invitation(&t, &sso.summary.account.id, "oidc$marker", &Actor::system())
        .await
        .expect("claimed");
    assert_eq!(claimed.password_hash, "oidc$marker");
    assert_eq!(
        refused_code(store.accept_invitation("inv-sso", "$argon2id$x").await),
        "invitation_used"
    );
    assert_eq!(
        refused_code(
            store
                .claim_invitation(&t, &accepted.id, "oidc$marker", &Actor::system())
                .await
        ),
        "not_invited"
    );

    let statuses: Vec<(String, AccountStatus)> = store
        .account_summaries(&t)
        .await
        .expect("summaries")
        .into_iter()
        .map(|s| (s.account.email.clone(), s.status()))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("Eve@Acme.test".to_owned(), AccountStatus::Active),
            ("gone@acme.test".to_owned(), AccountStatus::Disabled),
            ("late@acme.test".to_owned(), AccountStatus::Disabled),
            ("sso@acme.test".to_owned(), AccountStatus::Active),
        ]
    );
    let actions: Vec<String> = store
        .audit(&t, 50, None)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    for action in ["account.invite", "account.invite_accept"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

async fn account(store: &dyn Store, tenant_id: &str, email: &str, role: Role) -> String {
    store
        .create_account(
            NewAccount {
                tenant_id: Some(tenant_id.to_owned()),
                email: email.to_owned(),
                password_hash: "$argon2id$x".to_owned(),
                role,
            },
            &admin(),
        )
        .await
        .expect("account")
        .id
}

async fn the_last_admin_cannot_be_demoted_or_disabled(store: &dyn Store) {
    let t = tenant(store, "adm-last").await;
    let other = tenant(store, "adm-last-other").await;
    let ada = account(store, &t, "ada@acme.test", Role::Admin).await;
    // Admins of another tenant do not count.
    account(store, &other, "ada@acme.test", Role::Admin).await;
    let demote = AccountChange {
        disabled: None,
        role: Some(Role::Viewer),
    };
    let disable = AccountChange {
        disabled: Some(true),
        role: None,
    };
    for change in [demote.clone(), disable.clone()] {
        assert_eq!(
            refused_code(store.change_account(&t, &ada, change, &admin()).await),
            "last_admin"
        );
    }
    // Nor does an invited admin, or a disabled one.
    store
        .invite_account(
            invitation(&t, "new@acme.test", Role::Admin, "adm-last-inv", 72),
            &admin(),
        )
        .await
        .expect("invited");
    let off = account(store, &t, "off@acme.test", Role::Admin).await;
    store
        .update_account(Some(&t), &off, disable.clone(), &admin())
        .await
        .expect("disabled");
    assert_eq!(
        refused_code(
            store
                .change_account(&t, &ada, demote.clone(), &admin())
                .await
        ),
        "last_admin"
    );
    // With a second active admin, the first may go.
    let bea = account(store, &t, "bea@acme.test", Role::Admin).await;
    let demoted = store
        .change_account(&t, &ada, demote.clone(), &admin())
        .await
        .expect("demoted");
    assert_eq!(demoted.role, Role::Viewer);
    assert_eq!(
        refused_code(store.change_account(&t, &bea, disable, &admin()).await),
        "last_admin"
    );
    // A viewer is demoted or disabled freely; the account must be the tenant's.
    store
        .change_account(&t, &ada, demote.clone(), &admin())
        .await
        .expect("no change");
    assert!(matches!(
        store.change_account(&other, &bea, demote, &admin()).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn sessions_are_listed_touched_and_ended(store: &dyn Store) {
    let t = tenant(store, "adm-sessions").await;
    let other = tenant(store, "adm-sessions-other").await;
    let ada = account(store, &t, "ada@acme.test", Role::Admin).await;
    let vic = account(store, &t, "vic@acme.test", Role::Viewer).await;
    let stranger = account(store, &other, "x@acme.test", Role::Admin).await;
    let expires = OffsetDateTime::now_utc() + Duration::hours(8);
    let start = |hash: &str, account_id: &str| NewSession {
        token_hash: hash.to_owned(),
        account_id: account_id.to_owned(),
        csrf_token: "csrf".to_owned(),
        expires_at: expires,
        client: SessionClient {
            address: Some("192.0.2.7".into()),
            user_agent: Some("Firefox".into()),
        },
    };
    let first = store
        .start_session(start("adm-s-1", &ada))
        .await
        .expect("session");
    store
        .start_session(start("adm-s-2", &ada))
        .await
        .expect("session");
    store
        .start_session(start("adm-s-3", &vic))
        .await
        .expect("session");
    store
        .start_session(start("adm-s-4", &stranger))
        .await
        .expect("session");
    // The older entry point records a session too, without its client.
    store
        .create_session("adm-s-5", &vic, "csrf", expires)
        .await
        .expect("session");

    let all = store.tenant_sessions(&t, None).await.expect("sessions");
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|s| s.account_id != stranger));
    let firsts: Vec<_> = all.iter().filter(|s| s.id == first).collect();
    assert_eq!(firsts.len(), 1);
    assert_eq!(firsts[0].client.address.as_deref(), Some("192.0.2.7"));
    assert_eq!(firsts[0].email, "ada@acme.test");
    let vics = store
        .tenant_sessions(&t, Some(&vic))
        .await
        .expect("sessions");
    assert_eq!(vics.len(), 2);
    let summary = store.account_summary(&t, &ada).await.expect("summary");
    assert_eq!(summary.sessions, 2);
    assert!(summary.last_sign_in_at.is_some());

    // The last use is written at most once a minute.
    let session = store.session("adm-s-1").await.expect("open");
    assert_eq!(session.id, first);
    let seen = session.last_seen_at;
    store
        .touch_session(&first, seen + Duration::seconds(30))
        .await
        .expect("touched");
    assert_eq!(
        store.session("adm-s-1").await.expect("open").last_seen_at,
        seen
    );
    let later = seen + Duration::seconds(61);
    store.touch_session(&first, later).await.expect("touched");
    let touched = store.session("adm-s-1").await.expect("open").last_seen_at;
    assert_eq!(touched.unix_timestamp(), later.unix_timestamp());

    // Ending one: only the tenant's, and only the account's when scoped.
    assert!(matches!(
        store.end_session(&other, &first, None, &admin()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.end_session(&t, &first, Some(&vic), &admin()).await,
        Err(StoreError::NotFound { .. })
    ));
    let ended = store
        .end_session(&t, &first, Some(&ada), &admin())
        .await
        .expect("ended");
    assert_eq!(ended.id, first);
    assert!(matches!(
        store.session("adm-s-1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.session("adm-s-2").await.is_ok());
    assert!(matches!(
        store.end_session(&t, &first, None, &admin()).await,
        Err(StoreError::NotFound { .. })
    ));
    let actions: Vec<String> = store
        .audit(&t, 20, None)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    assert!(actions.iter().any(|a| a == "session.revoke"), "{actions:?}");
}
