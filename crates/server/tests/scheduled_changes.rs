//! Scheduled entitlement changes (issue 15, part 3): a save with `apply_at`
//! is checked now, applied once at its time through the same save (If-Match,
//! validation, history, audit), cancelled, refused with a recorded reason,
//! applied once across nodes and once after a restart that straddles its time.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, Tenant, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .expect("format")
}

/// Schedules `body` for `service` at `apply_at`; the answer.
async fn schedule(
    app: &TestApp,
    t: &Tenant,
    service: &str,
    mut body: Value,
    apply_at: &str,
    if_match: Option<&str>,
) -> common::Answer {
    body["apply_at"] = json!(apply_at);
    app.put(
        &t.path(&format!("/entitlements/{service}")),
        &t.admin,
        body,
        if_match,
    )
    .await
}

/// The tenant's scheduled changes.
async fn changes(app: &TestApp, t: &Tenant) -> Vec<Value> {
    let list = app.get(&t.path("/scheduled-changes"), &t.admin).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    list.body["items"].as_array().expect("items").clone()
}

/// Waits (at most 30 s, a bound and not a timing assertion) until change
/// `id` has an outcome; the change.
async fn outcome(app: &TestApp, t: &Tenant, id: &str) -> Value {
    for _ in 0..300 {
        let found = changes(app, t)
            .await
            .into_iter()
            .find(|c| c["id"] == id)
            .expect("listed");
        if found["status"] != "pending" {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("change {id} still pending after 30 s");
}

/// Audit entries with this action.
async fn audit(app: &TestApp, t: &Tenant, action: &str) -> Vec<Value> {
    let answer = app
        .get(
            &t.path(&format!("/audit?action={action}&limit=200")),
            &t.admin,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["items"].as_array().expect("items").clone()
}

async fn applies_once_at_its_time_and_wakes_held_long_polls(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;
    let etag = t
        .save(&app, "private_access", settings(false, &[], &[]))
        .await;
    let first = sync(&app, &token, &device, None, None).await;
    assert_eq!(first.body["services"]["private_access"]["enabled"], false);

    let scheduled = schedule(
        &app,
        &t,
        "private_access",
        settings(false, &[&eng], &[]),
        &in_seconds(2),
        Some(&etag),
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    assert_eq!(scheduled.body["status"], "pending");
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    // Nothing changed yet.
    let now = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(now.body["user_groups"], json!([]));
    let pending = changes(&app, &t).await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["status"], "pending");

    // A held long-poll wakes with the change, without a poll.
    let held = sync(&app, &token, &device, first.etag.as_deref(), Some(30)).await;
    assert_eq!(held.status, StatusCode::OK, "{:?}", held.body);
    assert_eq!(held.body["services"]["private_access"]["enabled"], true);

    let done = outcome(&app, &t, &id).await;
    assert_eq!(done["status"], "applied", "{done}");
    assert!(done["config_version"].is_i64(), "{done}");
    // Applied once: one audit entry of the apply, one new version, made by
    // the admin who scheduled it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let applies = audit(&app, &t, "scheduled_change.apply").await;
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert_eq!(applies[0]["principal"]["kind"], "api_token");
    assert_eq!(applies[0]["after"]["late"], false);
    let history = app
        .get(
            &t.path("/entitlements/history?service=private_access"),
            &t.admin,
        )
        .await;
    // The first save equalled the defaults and wrote nothing.
    let items = history.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["after"]["user_groups"], json!([eng]));
    assert_eq!(items[0]["principal"]["kind"], "api_token");
    assert_eq!(audit(&app, &t, "scheduled_change.create").await.len(), 1);
}

async fn a_save_in_between_is_a_recorded_conflict(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let ops = t.group(&app, "Ops", &[]).await;
    let etag = t
        .save(&app, "private_access", settings(false, &[], &[]))
        .await;
    let scheduled = schedule(
        &app,
        &t,
        "private_access",
        settings(false, &[&eng], &[]),
        &in_seconds(2),
        Some(&etag),
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    // Someone saves before its time: the scheduled change must not overwrite it.
    t.save(&app, "private_access", settings(false, &[&ops], &[]))
        .await;
    let done = outcome(&app, &t, &id).await;
    assert_eq!(done["status"], "conflict", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap_or_default()
            .contains("saved again"),
        "{done}"
    );
    let now = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(now.body["user_groups"], json!([ops]));
    assert_eq!(audit(&app, &t, "scheduled_change.conflict").await.len(), 1);
    assert!(audit(&app, &t, "scheduled_change.apply").await.is_empty());

    // Without If-Match, the version stored when it was scheduled is the one
    // it must find: the same conflict.
    let scheduled = schedule(
        &app,
        &t,
        "private_access",
        settings(false, &[&eng], &[]),
        &in_seconds(2),
        None,
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    t.save(&app, "private_access", settings(false, &[], &[]))
        .await;
    assert_eq!(outcome(&app, &t, &id).await["status"], "conflict");
}

async fn scheduling_is_checked_now_and_cancelling_is_audited(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let path = "private_access";
    let past = schedule(
        &app,
        &t,
        path,
        settings(false, &[], &[]),
        &in_seconds(-5),
        None,
    )
    .await;
    assert_eq!(
        past.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        past.body
    );
    assert_eq!(past.body["error"]["field"], "apply_at");
    let garbage = schedule(&app, &t, path, settings(false, &[], &[]), "monday", None).await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(garbage.body["error"]["field"], "apply_at");
    let far = schedule(
        &app,
        &t,
        path,
        settings(false, &[], &[]),
        &in_seconds(400 * 86_400),
        None,
    )
    .await;
    assert_eq!(far.status, StatusCode::UNPROCESSABLE_ENTITY);
    // The save's own rules, now.
    let unknown = schedule(
        &app,
        &t,
        path,
        settings(false, &["nope"], &[]),
        &in_seconds(60),
        None,
    )
    .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        unknown.body
    );
    let stale = schedule(
        &app,
        &t,
        path,
        settings(false, &[&eng], &[]),
        &in_seconds(60),
        Some("\"999\""),
    )
    .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{:?}",
        stale.body
    );
    assert!(changes(&app, &t).await.is_empty());

    let scheduled = schedule(
        &app,
        &t,
        path,
        settings(false, &[&eng], &[]),
        &in_seconds(3600),
        None,
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    let cancel_path = t.path(&format!("/scheduled-changes/{id}"));
    // A viewer may list but not cancel.
    let viewer = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "v", "role": "viewer"}),
        )
        .await;
    let viewer = viewer.body["token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.get(&t.path("/scheduled-changes"), &viewer).await.status,
        StatusCode::OK
    );
    let refused = app
        .call(Method::DELETE, &cancel_path, Some(&viewer), None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Another tenant cannot see or cancel it.
    let other = app.tenant("globex").await;
    let foreign = app
        .call(
            Method::DELETE,
            &other.path(&format!("/scheduled-changes/{id}")),
            Some(&other.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let cancelled = app
        .call(Method::DELETE, &cancel_path, Some(&t.admin), None, &[])
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    let again = app
        .call(Method::DELETE, &cancel_path, Some(&t.admin), None, &[])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.body["error"]["code"], "not_pending");
    assert_eq!(audit(&app, &t, "scheduled_change.cancel").await.len(), 1);
    let missing = app
        .call(
            Method::DELETE,
            &t.path("/scheduled-changes/00000000-0000-4000-8000-000000000000"),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

async fn a_group_deleted_before_its_time_fails_the_change_closed(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let scheduled = schedule(
        &app,
        &t,
        "private_access",
        settings(false, &[&eng], &[]),
        &in_seconds(2),
        None,
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    let deleted = app
        .delete(&t.path(&format!("/groups/{eng}")), &t.admin)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    let done = outcome(&app, &t, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let now = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(now.body["user_groups"], json!([]));
    assert_eq!(audit(&app, &t, "scheduled_change.fail").await.len(), 1);
}

/// A change runs with its creator's authority: one scheduled by a token that
/// is revoked before its time is not applied, and says why.
async fn a_change_whose_token_was_revoked_is_not_applied(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let (secret, token_id) = t.token(&app, "temp-admin", "admin").await;
    let mut body = settings(true, &[], &[]);
    body["apply_at"] = json!(in_seconds(2));
    let scheduled = app
        .put(
            &t.path("/entitlements/digital_experience"),
            &secret,
            body,
            None,
        )
        .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    let before = app
        .get(&t.path("/entitlements/digital_experience"), &t.admin)
        .await;
    let revoked = app
        .delete(&t.path(&format!("/tokens/{token_id}")), &t.admin)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);

    let done = outcome(&app, &t, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let message = done["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("temp-admin") && message.contains("revoked"),
        "{done}"
    );
    let after = app
        .get(&t.path("/entitlements/digital_experience"), &t.admin)
        .await;
    assert_eq!(
        after.body["version"], before.body["version"],
        "{}",
        after.body
    );
    assert_eq!(
        after.body["enabled_by_default"],
        before.body["enabled_by_default"]
    );
    assert_eq!(audit(&app, &t, "scheduled_change.fail").await.len(), 1);
}

async fn applies_once_after_a_restart_that_straddles_its_time(db: Database) {
    let mut app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let scheduled = schedule(
        &app,
        &t,
        "private_access",
        settings(false, &[&eng], &[]),
        &in_seconds(2),
        None,
    )
    .await;
    assert_eq!(
        scheduled.status,
        StatusCode::ACCEPTED,
        "{:?}",
        scheduled.body
    );
    let id = scheduled.body["id"].as_str().expect("id").to_owned();
    app.stop().await;
    // The server is down when the change is due.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let app = TestApp::start(&db).await;
    let done = outcome(&app, &t, &id).await;
    assert_eq!(done["status"], "applied", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap_or_default()
            .contains("late"),
        "{done}"
    );
    let applies = audit(&app, &t, "scheduled_change.apply").await;
    assert_eq!(applies.len(), 1, "{applies:?}");
    assert_eq!(applies[0]["after"]["late"], true);
    assert!(
        applies[0]["after"]["late_by_seconds"]
            .as_f64()
            .unwrap_or_default()
            >= 2.0,
        "{:?}",
        applies[0]
    );
    let now = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(now.body["user_groups"], json!([eng]));
}

on_both_backends!(
    applies_once_at_its_time_and_wakes_held_long_polls,
    a_save_in_between_is_a_recorded_conflict,
    scheduling_is_checked_now_and_cancelling_is_audited,
    a_group_deleted_before_its_time_fails_the_change_closed,
    a_change_whose_token_was_revoked_is_not_applied,
    applies_once_after_a_restart_that_straddles_its_time,
);

/// Three nodes on one PostgreSQL database race for the same due changes:
/// each is applied exactly once.
#[tokio::test]
async fn three_postgres_nodes_apply_each_change_once() {
    let Some(db) = Database::postgres("scheduled changes on three nodes").await else {
        return;
    };
    let nodes = [
        TestApp::start(&db).await,
        TestApp::start(&db).await,
        TestApp::start(&db).await,
    ];
    let app = &nodes[0];
    let t = app.tenant("acme").await;
    let mut groups = Vec::new();
    for index in 0..3 {
        groups.push(t.group(app, &format!("G{index}"), &[]).await);
    }
    // Every service gets a change due at the same moment, scheduled through
    // different nodes; every node looks for due changes every second.
    let at = in_seconds(3);
    let mut ids = Vec::new();
    let services = ["internet_access", "private_access", "digital_experience"];
    for (index, service) in services.iter().enumerate() {
        let node = &nodes[index % 3];
        let first = schedule(
            node,
            &t,
            service,
            settings(false, &[&groups[index]], &[]),
            &at,
            None,
        )
        .await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
        ids.push(first.body["id"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        let done = outcome(app, &t, id).await;
        assert_eq!(done["status"], "applied", "{done}");
    }
    // Let every node have its try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let applies = audit(app, &t, "scheduled_change.apply").await;
    assert_eq!(applies.len(), services.len(), "{applies:?}");
    let saves = audit(app, &t, "entitlement.save").await;
    assert_eq!(saves.len(), services.len(), "{saves:?}");
    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    assert_eq!(
        history.body["items"].as_array().expect("items").len(),
        services.len()
    );
    let appliers: std::collections::BTreeSet<_> = applies
        .iter()
        .map(|a| a["after"]["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!appliers.is_empty());
}

/// The OpenAPI document shows `apply_at` in a save's body and its 202.
#[tokio::test]
async fn the_document_shows_apply_at_and_the_202() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let doc = app
        .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await
        .body;
    let put = &doc["paths"]["/api/v1/tenants/{tenant}/entitlements/{service}"]["put"];
    assert!(put["responses"]["202"].is_object(), "{put}");
    let schema = &doc["components"]["schemas"]["SaveBodyJson"];
    assert!(schema.to_string().contains("apply_at"), "{schema}");
    assert!(schema.to_string().contains("SettingsJson"), "{schema}");
}

/// Sixteen appliers over four connection pools (four "nodes") race for the
/// same due change, straight on the store: exactly one applies it.
async fn racing_appliers_apply_a_change_exactly_once(db: Database) {
    use entitle_store::{Actor, NewScheduledChange, NewTenant, ScheduledStatus, Store};
    let stores: Vec<std::sync::Arc<dyn Store>> = vec![
        db.open().await,
        db.open().await,
        db.open().await,
        db.open().await,
    ];
    let tenant = stores[0]
        .create_tenant(
            NewTenant {
                name: "race".into(),
                created_at: OffsetDateTime::now_utc(),
                enrollment_key_hash: "race-enrollment".into(),
                scim_token_hash: "race-scim".into(),
            },
            &Actor::system(),
        )
        .await
        .expect("tenant");
    let service = entitle_core::service("private_access").expect("service");
    let mut settings = stores[0]
        .settings(&tenant.id, service)
        .await
        .expect("settings")
        .settings;
    settings.logout_on_enable = !settings.logout_on_enable;
    let change = stores[0]
        .schedule_change(
            &tenant.id,
            NewScheduledChange {
                service,
                settings,
                expected_version: None,
                apply_at: OffsetDateTime::now_utc() + time::Duration::milliseconds(300),
                actor: Actor::system(),
            },
        )
        .await
        .expect("scheduled");
    let mut racers = Vec::new();
    for index in 0..16 {
        let store = stores[index % stores.len()].clone();
        let (tenant_id, id) = (tenant.id.clone(), change.id.clone());
        racers.push(tokio::spawn(async move {
            let mut applied = 0;
            for _ in 0..200 {
                if let Some(done) = store
                    .apply_scheduled_change(&tenant_id, &id, &format!("racer-{index}"))
                    .await
                    .expect("apply")
                {
                    assert_eq!(done.status, ScheduledStatus::Applied, "{done:?}");
                    applied += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            applied
        }));
    }
    let mut total = 0;
    for racer in racers {
        total += racer.await.expect("racer");
    }
    assert_eq!(total, 1, "applied {total} times");
    let history = stores[1]
        .history(&tenant.id, None, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
}

on_both_backends!(racing_appliers_apply_a_change_exactly_once);
