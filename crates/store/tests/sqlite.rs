//! Runs the storage suite against SQLite, and checks that data survives a reopen.

mod suite;

use entitle_core::{Settings, service};
use entitle_store::{ConfigStore, SaveRequest, SqlStore, TenantStore};

#[tokio::test]
async fn sqlite_passes_the_storage_suite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqlStore::open_sqlite(&dir.path().join("entitle.db"))
        .await
        .expect("open");
    suite::run_all(&store).await;
    suite::test_seed::run_all(&store).await;
}

#[tokio::test]
async fn sqlite_keeps_everything_across_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("entitle.db");
    let tenant_id = {
        let store = SqlStore::open_sqlite(&path).await.expect("open");
        let tenant = store
            .create_tenant(
                entitle_store::NewTenant {
                    name: "acme".into(),
                    created_at: time::OffsetDateTime::now_utc(),
                    enrollment_key_hash: "ek".into(),
                    scim_token_hash: "st".into(),
                },
                &entitle_store::Actor::system(),
            )
            .await
            .expect("tenant");
        let request = SaveRequest {
            service: service("digital_experience").expect("zdx"),
            expected_version: Some(0),
            settings: Settings {
                logout_on_enable: true,
                ..Settings::default()
            },
            actor: entitle_store::Actor::system(),
            action: "entitlement.save",
            check_default_rule: true,
            restored_from: None,
        };
        store
            .save_settings(&tenant.id, request)
            .await
            .expect("saved");
        store.close().await;
        tenant.id
    };
    let store = SqlStore::open_sqlite(&path).await.expect("reopen");
    let stored = store
        .settings(&tenant_id, service("digital_experience").expect("zdx"))
        .await
        .expect("settings");
    assert!(stored.settings.logout_on_enable);
    assert_eq!(stored.version, 1);
}
