//! The sync path's cache of devices and prepared policies: a repeated sync is
//! answered without reading the device, but never with an answer a fresh read
//! would not give.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, Tenant, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    the_same_body_after_a_save_gets_the_new_policy,
    a_bad_body_is_refused_after_a_remembered_one,
    a_device_removed_on_another_node_is_refused_at_its_next_sync,
    a_device_attested_on_another_node_answers_its_held_poll,
    a_save_keeps_devices_cached_and_a_device_change_does_not,
);

async fn the_same_body_after_a_save_gets_the_new_policy(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;
    let first = sync(&app, &token, &device, None, None).await;
    let again = sync(&app, &token, &device, None, None).await;
    assert_eq!(first.etag, again.etag, "nothing changed");
    assert_eq!(first.body, again.body);
    let cached = sync(&app, &token, &device, again.etag.as_deref(), None).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);

    let before = first.body["services"]["private_access"]["enabled"]
        .as_bool()
        .expect("decision");
    t.save(&app, "private_access", settings(!before, &[], &[]))
        .await;
    let after = sync(&app, &token, &device, first.etag.as_deref(), None).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["services"]["private_access"]["enabled"], !before);
    assert_ne!(after.etag, first.etag);
}

async fn a_bad_body_is_refused_after_a_remembered_one(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;
    for _ in 0..2 {
        assert_eq!(
            sync(&app, &token, &device, None, None).await.status,
            StatusCode::OK
        );
    }
    let malformed = app
        .client
        .post(format!("{}/agent/v1/sync", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"hostname\": ")
        .send()
        .await
        .expect("answer");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let mut wrong = device.clone();
    wrong["os"] = json!("plan9");
    let refused = sync(&app, &token, &wrong, None, None).await;
    assert!(
        refused.status.is_client_error(),
        "{} {:?}",
        refused.status,
        refused.body
    );
    // The good body is still answered from what was remembered.
    assert_eq!(
        sync(&app, &token, &device, None, None).await.status,
        StatusCode::OK
    );
}

async fn a_device_removed_on_another_node_is_refused_at_its_next_sync(db: Database) {
    let first = TestApp::start(&db).await;
    // On SQLite one node is the whole deployment; the second node is the
    // same server.
    let second = TestApp::second_node(&db).await;
    let other = second.as_ref().unwrap_or(&first);
    let t = first.tenant("acme").await;
    t.user(&first, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (id, token, _) = t.enroll(&first, "ada", device.clone()).await;
    for _ in 0..3 {
        assert_eq!(
            sync(&first, &token, &device, None, None).await.status,
            StatusCode::OK
        );
    }
    let removed = other
        .call(
            Method::DELETE,
            &t.path(&format!("/devices/{id}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let refused = sync(&first, &token, &device, None, None).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
}

async fn a_device_attested_on_another_node_answers_its_held_poll(db: Database) {
    let first = TestApp::start(&db).await;
    let second = TestApp::second_node(&db).await;
    let other = second.as_ref().unwrap_or(&first);
    let t = first.tenant("acme").await;
    t.user(&first, "ada", &[]).await;
    let corporate = corporate_devices(&first, &t).await;
    t.save(
        &first,
        "private_access",
        settings(false, &[], &[&corporate]),
    )
    .await;
    let device = report("ada-mbp", "macos", "4.0", "personal", true);
    let (id, token, _) = t.enroll(&first, "ada", device.clone()).await;
    let held = sync(&first, &token, &device, None, None).await;
    assert_eq!(held.body["services"]["private_access"]["enabled"], false);

    let poll = common::hold(&first, &token, &device, held.etag.as_deref().expect("etag"));
    // Let the poll reach its hold before the change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.attest(other, &id, "corporate").await;
    // The held poll decides from the device as it is now, not as it was
    // remembered: it answers with the service on well before its 30 s end
    // (at its end, it would answer 304 from the remembered device).
    let (status, body, _) = poll.await.expect("poll");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["services"]["private_access"]["enabled"], true,
        "{body}"
    );
}

/// A save changes what devices get, not the devices: their next syncs are
/// answered from the cache, with the new policy. A change to a device made on
/// another node (here, attested ownership) is seen at its very next sync.
async fn a_save_keeps_devices_cached_and_a_device_change_does_not(db: Database) {
    let first = TestApp::start(&db).await;
    let second = TestApp::second_node(&db).await;
    let other = second.as_ref().unwrap_or(&first);
    let t = first.tenant("acme").await;
    t.user(&first, "ada", &[]).await;
    let corporate = corporate_devices(&first, &t).await;
    let device = report("ada-mbp", "macos", "4.0", "personal", true);
    let (id, token, _) = t.enroll(&first, "ada", device.clone()).await;
    let known = sync(&first, &token, &device, None, None).await;
    assert_eq!(known.status, StatusCode::OK);
    let reads = || counter(&first, "entitle_sync_device_reads_total");
    let read_once = reads().await;
    let version_reads = || counter(&first, "entitle_sync_version_reads_total");
    let versions_before = version_reads().await;

    t.save(other, "private_access", settings(false, &[], &[&corporate]))
        .await;
    let saved = sync(&first, &token, &device, known.etag.as_deref(), None).await;
    assert_eq!(saved.status, StatusCode::OK, "the save is seen at once");
    assert_eq!(saved.body["services"]["private_access"]["enabled"], false);
    assert_eq!(reads().await, read_once, "the device was not read again");
    assert_eq!(
        version_reads().await,
        versions_before + 1,
        "a cached device's sync reads the tenant's versions, once"
    );

    t.attest(other, &id, "corporate").await;
    let changed = sync(&first, &token, &device, saved.etag.as_deref(), None).await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    assert_eq!(
        changed.body["services"]["private_access"]["enabled"], true,
        "decided from the attested device"
    );
    assert_eq!(reads().await, read_once + 1, "read again once");
}

/// A counter of `app`'s metrics, which must be there.
async fn counter(app: &TestApp, name: &str) -> i64 {
    app.metric(name).await.expect(name)
}

/// A device group of the corporate-owned devices.
async fn corporate_devices(app: &TestApp, t: &Tenant) -> String {
    t.device_group(
        app,
        json!({"name": "Corporate", "os": [], "ownership": ["corporate"], "posture": []}),
    )
    .await
}
