//! The storage test suite, written once against the `Store` traits and run
//! against every back end.

use entitle_core::{
    DeviceGroup, DeviceGroupId, DeviceReport, GroupId, Os, Ownership, PostureOp,
    PostureRequirement, PostureValue, Settings, service,
};
use entitle_store::{
    Actor, ActorKind, Attested, AttestedBy, DeviceChange, DeviceFilter, DeviceMove, MemberKind,
    NewAccount, NewEnrollmentKey, NewTenant, NewUser, Role, SaveRequest, ScimGroupWrite,
    ScimLookup, ScimUserWrite, Store, StoreError, TokenGrant, User, secrets,
};
use time::OffsetDateTime;

mod admins;
mod applied;
mod credentials;
mod device_changes;
mod directory_views;
mod scim_tokens;
pub mod test_seed;

async fn tenant(store: &dyn Store, name: &str) -> String {
    let new = NewTenant {
        name: name.to_owned(),
        created_at: OffsetDateTime::now_utc(),
        enrollment_key_hash: secrets::hash_secret(&secrets::new_secret("ek")),
        scim_token_hash: secrets::hash_secret(&secrets::new_secret("scim")),
    };
    store
        .create_tenant(new, &tester())
        .await
        .expect("tenant created")
        .id
}

/// A user of no group, named `name`.
async fn user(store: &dyn Store, tenant_id: &str, name: &str) -> User {
    store
        .create_user(
            tenant_id,
            NewUser {
                user_name: name.into(),
                display_name: None,
                groups: vec![],
            },
            &tester(),
        )
        .await
        .expect("user")
}

/// The principal the suite's writes are made by.
fn tester() -> Actor {
    Actor::new(ActorKind::ApiToken, "tok-1", "tester")
}

fn save(service_id: &str, expected: Option<i64>, settings: Settings) -> SaveRequest {
    SaveRequest {
        service: service(service_id).expect("known service"),
        expected_version: expected,
        settings,
        actor: tester(),
        action: "entitlement.save",
        check_default_rule: true,
        restored_from: None,
    }
}

fn report(hostname: &str) -> DeviceReport {
    DeviceReport {
        hostname: hostname.into(),
        os: Os::Macos,
        client_version: entitle_core::ClientVersion::parse("4.1.0.12").expect("version"),
        ownership: Ownership::Corporate,
        posture: [("disk_encrypted".to_owned(), PostureValue::Bool(true))].into(),
    }
}

pub async fn run_all(store: &dyn Store) {
    tenants_and_tokens(store).await;
    saves_are_versioned_and_audited(store).await;
    stale_saves_change_nothing(store).await;
    invalid_saves_change_nothing(store).await;
    deleting_a_group_removes_it_from_entitlements(store).await;
    users_groups_and_devices(store).await;
    tenants_do_not_see_each_other(store).await;
    accounts_and_sessions(store).await;
    scim_users_groups_and_memberships(store).await;
    scoped_keys_attest_and_approval_holds(store).await;
    credentials::run_all(store).await;
    scim_tokens::run_all(store).await;
    admins::run_all(store).await;
    directory_views::run_all(store).await;
    applied::run_all(store).await;
    device_changes::run_all(store).await;
    device_trust_moves_only_with_a_change_to_a_device(store).await;
}

/// A node's sync cache trusts a device it read while `device_trust` stays
/// put: every change to a device other than its own syncs must move it, in
/// the change's transaction, and nothing else need.
async fn device_trust_moves_only_with_a_change_to_a_device(store: &dyn Store) {
    let t = tenant(store, "trust-version").await;
    let ada = user(store, &t, "ada").await;
    store
        .set_device_approval(&t, true, &tester())
        .await
        .expect("approval on");
    let at = OffsetDateTime::now_utc();
    let device = store
        .enroll_device(&t, &ada, "trust-token", &report("ada-mac"), at, None)
        .await
        .expect("enrolled");
    let versions = || async { store.versions(&t).await.expect("versions") };
    let read = store.device_by_token("trust-token").await.expect("read");
    assert_eq!(
        read.tenant_versions,
        versions().await,
        "read with the device"
    );

    // Neither the device's own syncs nor changes outside it move it.
    let before = versions().await;
    let mut newer = report("ada-mac");
    newer.client_version = entitle_core::ClientVersion::parse("4.2").expect("version");
    // Two nodes whose caches both held the older report each write the new
    // one: the store writes, and audits the move, once.
    let moved = DeviceMove {
        tenant_id: t.clone(),
        actor: Actor::new(ActorKind::Device, &device.id, "ada-mac"),
        before: Vec::new(),
        after: vec!["Laptops".into()],
    };
    for _ in 0..2 {
        store
            .record_sync(&device.id, Some(&newer), None, at, Some(&moved))
            .await
            .expect("synced");
    }
    let moves = store.audit(&t, 10, None).await.expect("audit");
    let moves = moves
        .iter()
        .filter(|(_, entry)| entry.action == "device.groups_changed");
    assert_eq!(moves.count(), 1, "the same report is audited once");
    store
        .set_user_active(&t, &ada.id, false, &Actor::directory())
        .await
        .expect("deactivated");
    let settings = Settings {
        enabled_by_default: true,
        ..Settings::default()
    };
    store
        .save_settings(&t, save("internet_access", None, settings))
        .await
        .expect("saved");
    let after = versions().await;
    assert!(after.data > before.data, "decisions changed: {after:?}");
    assert_eq!(after.device_trust, before.device_trust, "no device changed");

    // Approval moves both; approving again changes nothing and moves nothing.
    let approve = DeviceChange {
        ownership: None,
        approve: Some(true),
    };
    store
        .change_device(&t, &device.id, &approve, &tester())
        .await
        .expect("approved");
    let approved = versions().await;
    assert!(approved.data > after.data && approved.device_trust > after.device_trust);
    store
        .change_device(&t, &device.id, &approve, &tester())
        .await
        .expect("approved again");
    assert_eq!(versions().await, approved, "nothing changed");

    let attested = DeviceChange {
        ownership: Some(Some(Ownership::Corporate)),
        approve: None,
    };
    store
        .change_device(&t, &device.id, &attested, &tester())
        .await
        .expect("attested");
    let attested = versions().await;
    assert!(attested.device_trust > approved.device_trust, "attested");

    store
        .delete_device(&t, &device.id, &tester())
        .await
        .expect("removed");
    let removed = versions().await;
    assert!(removed.data > attested.data && removed.device_trust > attested.device_trust);
}

async fn scoped_keys_attest_and_approval_holds(store: &dyn Store) {
    let t = tenant(store, "attest").await;
    let ada = user(store, &t, "ada").await;
    let key = store
        .create_enrollment_key(
            &t,
            NewEnrollmentKey {
                name: "Personal phones".into(),
                key_hash: "key-hash".into(),
                ownership: Some(Ownership::Personal),
                expires_at: None,
                max_uses: Some(1),
            },
            &tester(),
        )
        .await
        .expect("key");
    let grant = store.enrollment_grant("key-hash").await.expect("grant");
    assert_eq!(grant.tenant.id, t);
    let scoped = grant.key.expect("a scoped key");
    let at = OffsetDateTime::now_utc();
    // The device claims to be corporate; the key says personal, and wins.
    let phone = store
        .enroll_device(&t, &ada, "phone", &report("ada-phone"), at, Some(&scoped))
        .await
        .expect("enrolled");
    assert_eq!(
        phone.attested_ownership,
        Some(Attested {
            ownership: Ownership::Personal,
            by: AttestedBy::EnrollmentKey
        })
    );
    assert!(phone.ownership_conflict());
    assert_eq!(phone.decision_report().ownership, Ownership::Personal);
    let again = store
        .enroll_device(
            &t,
            &ada,
            "phone-2",
            &report("ada-phone-2"),
            at,
            Some(&scoped),
        )
        .await;
    assert!(
        matches!(again, Err(StoreError::KeyUnusable { .. })),
        "a one-use key enrolls one device: {again:?}"
    );
    let revoked = store
        .revoke_enrollment_key(&t, &key.id, &tester())
        .await
        .expect("revoked");
    assert!(revoked.revoked_at.is_some());
    assert_eq!(revoked.uses, 1);
    assert_eq!(store.enrollment_keys(&t).await.expect("keys").len(), 1);

    // Approval mode: a new device starts pending until an admin approves it.
    let approving = store
        .set_device_approval(&t, true, &tester())
        .await
        .expect("approval on");
    assert!(approving.device_approval);
    let laptop = store
        .enroll_device(&t, &ada, "laptop", &report("ada-mac"), at, None)
        .await
        .expect("enrolled");
    assert!(laptop.pending_approval);
    assert_eq!(laptop.attested_ownership, None);
    let before = store.tenant(&t).await.expect("tenant").data_version;
    let approved = store
        .change_device(
            &t,
            &laptop.id,
            &DeviceChange {
                ownership: Some(Some(Ownership::Corporate)),
                approve: Some(true),
            },
            &tester(),
        )
        .await
        .expect("approved");
    assert!(!approved.pending_approval);
    assert_eq!(
        approved.attested_ownership.map(|a| a.by),
        Some(AttestedBy::Admin)
    );
    assert!(store.tenant(&t).await.expect("tenant").data_version > before);
    let by_token = store.device_by_token("laptop").await.expect("by token");
    assert!(!by_token.device.pending_approval);
    let audit = store.audit(&t, 1, None).await.expect("audit");
    assert_eq!(audit[0].1.action, "device.approve_and_attest");
    let other = tenant(store, "attest-other").await;
    assert!(matches!(
        store
            .change_device(&other, &laptop.id, &DeviceChange::default(), &tester())
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

fn scim_user(name: &str, active: bool) -> ScimUserWrite {
    ScimUserWrite {
        user_name: name.into(),
        external_id: Some(format!("ext-{name}")),
        display_name: None,
        active,
        attributes: serde_json::json!({"name": {"givenName": name}}),
    }
}

async fn scim_users_groups_and_memberships(store: &dyn Store) {
    let t = tenant(store, "scim").await;
    let ada = store
        .scim_create_user(&t, scim_user("ada@scim.test", true))
        .await
        .expect("user");
    assert_eq!(ada.version, 1);
    assert_eq!(ada.attributes["name"]["givenName"], "ada@scim.test");
    let dup = store
        .scim_create_user(&t, scim_user("ADA@scim.test", true))
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    let bob = store
        .scim_create_user(&t, scim_user("bob@scim.test", true))
        .await
        .expect("user");

    let by_name = store
        .scim_users(&t, &ScimLookup::Name("Ada@SCIM.test".into()), None)
        .await
        .expect("lookup");
    assert_eq!(
        by_name
            .items
            .iter()
            .map(|u| u.id.clone())
            .collect::<Vec<_>>(),
        vec![ada.id.clone()]
    );
    let by_external = store
        .scim_users(
            &t,
            &ScimLookup::ExternalId("ext-bob@scim.test".into()),
            None,
        )
        .await
        .expect("lookup");
    assert_eq!(by_external.total, 1);
    let page = store
        .scim_users(&t, &ScimLookup::All, Some((1, 1)))
        .await
        .expect("page");
    assert_eq!((page.total, page.items.len()), (2, 1));
    assert_eq!(
        page.items[0].id, bob.id,
        "oldest first, so pages are stable"
    );
    let nobody = store
        .scim_users(&t, &ScimLookup::Id("not-an-id".into()), None)
        .await
        .expect("lookup");
    assert_eq!(nobody.total, 0);

    let stale = store
        .scim_replace_user(&t, &ada.id, scim_user("ada@scim.test", false), Some(7))
        .await;
    assert!(matches!(stale, Err(StoreError::Stale { .. })), "{stale:?}");
    let replaced = store
        .scim_replace_user(&t, &ada.id, scim_user("ada@scim.test", false), Some(1))
        .await
        .expect("replaced");
    assert!(!replaced.active);
    assert_eq!(replaced.version, 2);

    let platform = store
        .scim_create_group(
            &t,
            ScimGroupWrite {
                display_name: "Platform".into(),
                external_id: None,
                attributes: serde_json::json!({}),
                members: vec![ada.id.clone()],
            },
        )
        .await
        .expect("group");
    let eng = store
        .scim_create_group(
            &t,
            ScimGroupWrite {
                display_name: "Engineering".into(),
                external_id: None,
                attributes: serde_json::json!({}),
                members: vec![platform.id.clone(), bob.id.clone()],
            },
        )
        .await
        .expect("group");
    assert_eq!(eng.members.len(), 2);
    assert!(
        eng.members
            .iter()
            .any(|m| m.kind == MemberKind::Group && m.display == "Platform")
    );
    let unknown = store
        .scim_create_group(
            &t,
            ScimGroupWrite {
                display_name: "X".into(),
                external_id: None,
                attributes: serde_json::json!({}),
                members: vec!["ghost".into()],
            },
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownMembers { .. })),
        "{unknown:?}"
    );
    // Engineering contains Platform: Platform may not contain Engineering.
    let cycle = store
        .scim_change_members(&t, &platform.id, std::slice::from_ref(&eng.id), &[], None)
        .await;
    assert!(matches!(cycle, Err(StoreError::Cycle { .. })), "{cycle:?}");
    let of_ada = store
        .scim_groups(&t, &ScimLookup::Member(ada.id.clone()), None, false)
        .await
        .expect("lookup");
    assert_eq!(
        of_ada
            .items
            .iter()
            .map(|g| g.display_name.as_str())
            .collect::<Vec<_>>(),
        vec!["Platform"]
    );

    store
        .scim_change_members(
            &t,
            &platform.id,
            std::slice::from_ref(&bob.id),
            std::slice::from_ref(&ada.id),
            Some(1),
        )
        .await
        .expect("changed");
    let platform_now = store
        .scim_group(&t, &platform.id, true)
        .await
        .expect("group");
    assert_eq!(
        platform_now
            .members
            .iter()
            .map(|m| m.id.clone())
            .collect::<Vec<_>>(),
        vec![bob.id.clone()]
    );
    assert_eq!(platform_now.version, 2);

    // Deleting a user drops its memberships; its name is free again.
    store
        .scim_delete_user(&t, &bob.id, None)
        .await
        .expect("deleted");
    assert!(matches!(
        store.scim_user(&t, &bob.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .scim_group(&t, &platform.id, true)
            .await
            .expect("group")
            .members
            .is_empty()
    );
    store
        .scim_create_user(&t, scim_user("bob@scim.test", true))
        .await
        .expect("the name can be reused");
    let data = store.tenant_data(&t).await.expect("data");
    assert_eq!(data.users.len(), 2, "deleted users are not in decisions");

    let removed = store
        .scim_delete_group(&t, &eng.id, Some(1))
        .await
        .expect("deleted");
    assert!(removed.is_empty());
    assert!(matches!(
        store.scim_group(&t, &eng.id, false).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn accounts_and_sessions(store: &dyn Store) {
    let t = tenant(store, "accounts").await;
    let new = NewAccount {
        tenant_id: Some(t.clone()),
        email: "Admin@Acme.test".into(),
        password_hash: "$argon2id$x".into(),
        role: Role::Admin,
    };
    let account = store
        .create_account(new.clone(), &tester())
        .await
        .expect("account");
    assert_eq!(account.email, "Admin@Acme.test");
    assert!(matches!(
        store
            .create_account(
                NewAccount {
                    email: "admin@acme.TEST".into(),
                    ..new
                },
                &tester()
            )
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    let found = store
        .accounts_by_email(" admin@acme.test ")
        .await
        .expect("found");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, account.id);

    let expires = OffsetDateTime::now_utc() + time::Duration::hours(8);
    store
        .create_session("session-hash", &account.id, "csrf", expires)
        .await
        .expect("session");
    let session = store.session("session-hash").await.expect("session");
    assert_eq!(session.account.id, account.id);
    assert_eq!(session.csrf_token, "csrf");
    let past = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store
        .create_session("old-hash", &account.id, "csrf", past)
        .await
        .expect("session");
    assert!(
        matches!(
            store.session("old-hash").await,
            Err(StoreError::NotFound { .. })
        ),
        "expired sessions do not open"
    );
    store.delete_session("session-hash").await.expect("deleted");
    assert!(matches!(
        store.session("session-hash").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn tenants_and_tokens(store: &dyn Store) {
    let id = tenant(store, "tokens").await;
    let duplicate = store
        .create_tenant(
            NewTenant {
                name: "tokens".into(),
                created_at: OffsetDateTime::now_utc(),
                enrollment_key_hash: "a".into(),
                scim_token_hash: "b".into(),
            },
            &tester(),
        )
        .await;
    assert!(
        matches!(duplicate, Err(StoreError::Duplicate { .. })),
        "{duplicate:?}"
    );
    let grant = TokenGrant {
        role: Role::Viewer,
        tenant_id: Some(id.clone()),
        name: "ci".into(),
    };
    store
        .create_api_token("hash-1", &grant, &tester())
        .await
        .expect("token stored");
    assert_eq!(
        store.api_token("hash-1").await.expect("token found").grant,
        grant
    );
    assert!(matches!(
        store.api_token("other").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.tenant("tokens").await.expect("by name").id, id);
    assert_eq!(store.tenant(&id).await.expect("by id").name, "tokens");
}

async fn saves_are_versioned_and_audited(store: &dyn Store) {
    let t = tenant(store, "versions").await;
    let zpa = service("private_access").expect("zpa");
    let initial = store.settings(&t, zpa).await.expect("settings");
    assert_eq!(initial.version, 0);
    assert!(
        !initial.settings.enabled_by_default,
        "a tenant created today starts with ZPA off"
    );
    let eng = store
        .create_group(&t, "Engineering", &[], &tester())
        .await
        .expect("group");
    let wanted = Settings {
        user_groups: [GroupId(eng.id.clone())].into(),
        ..Settings::default()
    };
    let first = store
        .save_settings(&t, save("private_access", Some(0), wanted.clone()))
        .await
        .expect("saved");
    assert_eq!(first.config_version, 1);
    let second = store
        .save_settings(&t, save("internet_access", None, Settings::default()))
        .await
        .expect("saved");
    assert_eq!(second.config_version, 2);
    assert_eq!(
        store.settings(&t, zpa).await.expect("settings").settings,
        wanted
    );
    let history = store.history(&t, None, 10).await.expect("history");
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    assert_eq!(history[1].after, wanted);
    assert_eq!(history[1].actor, tester());
    let audit = store.audit(&t, 50, None).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|(_, e)| e.action == "entitlement.save" && e.target == "private_access")
    );
    assert_eq!(store.tenant(&t).await.expect("tenant").config_version, 2);
}

async fn stale_saves_change_nothing(store: &dyn Store) {
    let t = tenant(store, "stale").await;
    let zia = service("internet_access").expect("zia");
    let off = Settings::default();
    store
        .save_settings(&t, save("internet_access", Some(0), off.clone()))
        .await
        .expect("first save");
    let stale = store
        .save_settings(
            &t,
            save(
                "internet_access",
                Some(0),
                Settings {
                    logout_on_enable: true,
                    ..off.clone()
                },
            ),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Stale {
                expected: 0,
                current: 1
            })
        ),
        "{stale:?}"
    );
    assert_eq!(
        store.settings(&t, zia).await.expect("settings").settings,
        off
    );
    assert_eq!(store.history(&t, None, 10).await.expect("history").len(), 1);
}

async fn invalid_saves_change_nothing(store: &dyn Store) {
    let t = tenant(store, "invalid").await;
    let eng = store
        .create_group(&t, "Engineering", &[], &tester())
        .await
        .expect("group");
    let groups_while_on = Settings {
        enabled_by_default: true,
        user_groups: [GroupId(eng.id.clone())].into(),
        ..Settings::default()
    };
    let refused = store
        .save_settings(&t, save("internet_access", None, groups_while_on))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let unknown = Settings {
        user_groups: [GroupId("nope".into())].into(),
        ..Settings::default()
    };
    let refused = store
        .save_settings(&t, save("private_access", None, unknown))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert!(
        store
            .history(&t, None, 10)
            .await
            .expect("history")
            .is_empty()
    );
    assert_eq!(store.tenant(&t).await.expect("tenant").config_version, 0);
}

async fn deleting_a_group_removes_it_from_entitlements(store: &dyn Store) {
    let t = tenant(store, "deletions").await;
    let eng = store
        .create_group(&t, "Engineering", &[], &tester())
        .await
        .expect("group");
    let laptops = store
        .create_device_group(
            &t,
            DeviceGroup {
                id: DeviceGroupId(String::new()),
                name: "Laptops".into(),
                os: [Os::Macos].into(),
                ownership: [].into(),
                posture: vec![
                    PostureRequirement::new(
                        "disk_encrypted",
                        PostureOp::Eq,
                        PostureValue::Bool(true),
                    )
                    .expect("rule"),
                ],
            },
            &tester(),
        )
        .await
        .expect("device group");
    assert_eq!(
        store.device_groups(&t).await.expect("list"),
        vec![laptops.clone()]
    );
    let both = Settings {
        user_groups: [GroupId(eng.id.clone())].into(),
        device_groups: [laptops.id.clone()].into(),
        ..Settings::default()
    };
    store
        .save_settings(&t, save("private_access", None, both))
        .await
        .expect("saved");
    // A group still selected is refused without force, and nothing changes.
    let refused = store.delete_group(&t, &eng.id, &tester(), false).await;
    assert!(
        matches!(&refused, Err(StoreError::InUse { services, .. }) if services == &["private_access".to_owned()]),
        "{refused:?}"
    );
    assert!(
        store.group(&t, &eng.id).await.is_ok(),
        "refused delete kept the group"
    );
    let refused = store
        .delete_device_group(&t, laptops.id.as_str(), &tester(), false)
        .await;
    assert!(
        matches!(refused, Err(StoreError::InUse { .. })),
        "{refused:?}"
    );

    // Forced, both go, and the settings keep them as tombstones that match
    // nothing: no config version is written, no one gains access.
    let kept = store
        .delete_group(&t, &eng.id, &tester(), true)
        .await
        .expect("deleted");
    assert_eq!(kept, vec!["private_access".to_owned()]);
    let kept = store
        .delete_device_group(&t, laptops.id.as_str(), &tester(), true)
        .await
        .expect("deleted");
    assert_eq!(kept, vec!["private_access".to_owned()]);
    let zpa = service("private_access").expect("zpa");
    let now = store.settings(&t, zpa).await.expect("settings");
    assert_eq!(now.settings.user_groups, [GroupId(eng.id.clone())].into());
    assert_eq!(now.settings.device_groups, [laptops.id.clone()].into());
    assert_eq!(now.version, 1);
    assert!(matches!(
        store.group(&t, &eng.id).await,
        Err(StoreError::NotFound { .. })
    ));
    let data = store.tenant_data(&t).await.expect("snapshot data");
    assert_eq!(
        data.deleted_user_groups,
        vec![(eng.id.clone(), "Engineering".to_owned())]
    );
    assert_eq!(
        data.deleted_device_groups,
        vec![(laptops.id.0.clone(), "Laptops".to_owned())]
    );
    let audit = store.audit(&t, 10, None).await.expect("audit");
    let (_, last) = &audit[0];
    assert_eq!(last.action, "device_group.delete");
    assert_eq!(
        last.actor,
        tester(),
        "the principal, not a name, is recorded"
    );

    // Saving another field keeps the tombstones; selecting them anew is refused.
    let other_field = Settings {
        logout_on_enable: true,
        ..now.settings.clone()
    };
    store
        .save_settings(&t, save("private_access", Some(1), other_field))
        .await
        .expect("a save that keeps a deleted group is accepted");
    let readd = Settings {
        device_groups: [laptops.id.clone()].into(),
        ..Settings::default()
    };
    let refused = store
        .save_settings(&t, save("digital_experience", None, readd))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
}

async fn users_groups_and_devices(store: &dyn Store) {
    let t = tenant(store, "people").await;
    let platform = store
        .create_group(&t, "Platform", &[], &tester())
        .await
        .expect("group");
    let eng = store
        .create_group(
            &t,
            "Engineering",
            std::slice::from_ref(&platform.id),
            &tester(),
        )
        .await
        .expect("group");
    assert_eq!(eng.member_groups, vec![platform.id.clone()]);
    let dup = store.create_group(&t, "engineering", &[], &tester()).await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    let ada = store
        .create_user(
            &t,
            NewUser {
                user_name: "Ada@acme.test".into(),
                display_name: None,
                groups: vec![platform.id.clone()],
            },
            &tester(),
        )
        .await
        .expect("user");
    let dup = store
        .create_user(
            &t,
            NewUser {
                user_name: "ada@ACME.test".into(),
                display_name: None,
                groups: vec![],
            },
            &tester(),
        )
        .await;
    assert!(matches!(dup, Err(StoreError::Duplicate { .. })), "{dup:?}");
    let unknown = store
        .create_user(
            &t,
            NewUser {
                user_name: "bob".into(),
                display_name: None,
                groups: vec!["ghost".into()],
            },
            &tester(),
        )
        .await;
    assert!(
        matches!(unknown, Err(StoreError::UnknownGroups { .. })),
        "{unknown:?}"
    );
    assert_eq!(
        store
            .user_by_name(&t, "ada@acme.test")
            .await
            .expect("found")
            .id,
        ada.id
    );

    let page = store
        .search_groups(&t, "ENG", 10, None)
        .await
        .expect("search");
    assert_eq!(
        page.items
            .iter()
            .map(|g| g.display_name.as_str())
            .collect::<Vec<_>>(),
        vec!["Engineering"]
    );
    let first = store.search_groups(&t, "", 1, None).await.expect("page 1");
    let cursor = first.next_cursor.clone().expect("more pages");
    let second = store
        .search_groups(&t, "", 1, Some(&cursor))
        .await
        .expect("page 2");
    assert_eq!(first.items[0].display_name, "Engineering");
    assert_eq!(second.items[0].display_name, "Platform");
    assert!(second.next_cursor.is_none());

    let at = OffsetDateTime::now_utc();
    let device = store
        .enroll_device(&t, &ada, "dev-hash", &report("ada-mac"), at, None)
        .await
        .expect("enrolled");
    let by_token = store.device_by_token("dev-hash").await.expect("by token");
    let before = store.tenant(&t).await.expect("tenant").data_version;
    assert_eq!(by_token.tenant_versions.data, before);
    let by_token = by_token.device;
    assert_eq!(by_token.id, device.id);
    assert_eq!(by_token.report, report("ada-mac"));
    let mut moved = report("ada-mac");
    moved.client_version = entitle_core::ClientVersion::parse("4.2").expect("version");
    store
        .record_sync(&device.id, Some(&moved), None, at, None)
        .await
        .expect("synced");
    assert_eq!(
        store.device(&t, &device.id).await.expect("device").report,
        moved
    );
    let listed = store
        .devices(
            &t,
            &DeviceFilter {
                user_name: Some("ADA@acme.test".into()),
                ..DeviceFilter::default()
            },
            10,
            None,
        )
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    for filter in [
        DeviceFilter {
            hostname: Some("ADA-MAC".into()),
            ..DeviceFilter::default()
        },
        DeviceFilter {
            search: Some("da-m".into()),
            ..DeviceFilter::default()
        },
        DeviceFilter {
            search: Some("acme.TEST".into()),
            ..DeviceFilter::default()
        },
    ] {
        let found = store.devices(&t, &filter, 10, None).await.expect("list");
        assert_eq!(found.items.len(), 1, "{filter:?}");
    }
    let none = DeviceFilter {
        search: Some("%".into()),
        ..DeviceFilter::default()
    };
    assert!(
        store
            .devices(&t, &none, 10, None)
            .await
            .expect("list")
            .items
            .is_empty(),
        "% is literal"
    );
    let data = store.tenant_data(&t).await.expect("snapshot data");
    assert_eq!(data.users.len(), 1);
    assert_eq!(data.users[0].groups, vec![platform.id.clone()]);
    assert_eq!(data.nesting, vec![(eng.id.clone(), platform.id.clone())]);
    let inactive = store
        .set_user_active(&t, &ada.id, false, &Actor::directory())
        .await
        .expect("deactivated");
    assert!(!inactive.active);
    store
        .delete_device(&t, &device.id, &tester())
        .await
        .expect("deleted");
    assert!(matches!(
        store.device_by_token("dev-hash").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn tenants_do_not_see_each_other(store: &dyn Store) {
    let a = tenant(store, "tenant-a").await;
    let b = tenant(store, "tenant-b").await;
    let group = store
        .create_group(&a, "Secret", &[], &tester())
        .await
        .expect("group");
    assert!(matches!(
        store.group(&b, &group.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store
            .search_groups(&b, "", 10, None)
            .await
            .expect("search")
            .items
            .is_empty()
    );
    let cross = Settings {
        user_groups: [GroupId(group.id.clone())].into(),
        ..Settings::default()
    };
    let refused = store
        .save_settings(&b, save("private_access", None, cross))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    assert!(matches!(
        store.delete_group(&b, &group.id, &tester(), true).await,
        Err(StoreError::NotFound { .. })
    ));
}
