//! The agent protocol over HTTP: enrollment, every decision reason, ETags, 304
//! and long-poll wake-ups, against a real server and a fresh SQLite file.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Database, Tenant, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn enrollment_refuses_bad_keys_unknown_users_and_bad_reports(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let good = report("ada-mbp", "macos", "4.0", "corporate", true);
    let enroll = |key: &str, user: &str, device: Value| {
        let body = json!({"enrollment_key": key, "user_name": user, "device": device});
        let app = &app;
        async move {
            app.call(Method::POST, "/agent/v1/enroll", None, Some(body), &[])
                .await
        }
    };
    let wrong_key = enroll("wrong", "ada", good.clone()).await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_key.body["error"]["code"], "invalid_enrollment_key");
    let unknown = enroll(&t.enrollment_key, "nobody", good.clone()).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    assert_eq!(unknown.body["error"]["code"], "user_not_provisioned");
    for (field, value) in [
        ("client_version", json!("4.x")),
        ("client_version", json!("1.2.3.4.5")),
        ("os", json!("beos")),
        ("ownership", json!("borrowed")),
        ("hostname", json!("")),
    ] {
        let mut device = good.clone();
        device[field] = value.clone();
        let answer = enroll(&t.enrollment_key, "ada", device).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{field}={value}: {:?}",
            answer.body
        );
    }
    let bad_version = {
        let mut device = good.clone();
        device["client_version"] = json!("latest");
        enroll(&t.enrollment_key, "ada", device).await
    };
    assert_eq!(bad_version.body["error"]["code"], "invalid_client_version");
    let raw = app
        .client
        .post(format!("{}/agent/v1/enroll", app.base))
        .body("{\"enrollment_key\":")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);

    // Case-insensitive user names, as directories treat them.
    let ok = enroll(&t.enrollment_key, "ADA", good.clone()).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    assert_eq!(ok.body["policy"]["device_id"], ok.body["device_id"]);
    assert_eq!(ok.body["policy"]["tenant"], t.id.as_str());

    app.call(
        Method::PATCH,
        &t.path("/users/ada"),
        Some(&t.admin),
        Some(json!({"active": false})),
        &[],
    )
    .await;
    let inactive = enroll(&t.enrollment_key, "ada", good).await;
    assert_eq!(inactive.status, StatusCode::FORBIDDEN);
    assert_eq!(inactive.body["error"]["code"], "user_not_provisioned");
}

struct Fleet {
    t: Tenant,
    devices: Vec<(&'static str, String, String, Value)>,
}

/// A tenant where every reason of SPEC §3 occurs for some device.
async fn every_reason(app: &TestApp) -> Fleet {
    let t = app.tenant("acme").await;
    let eng = t.group(app, "Engineering", &[]).await;
    let platform = t.group(app, "Platform", &[]).await;
    let all_eng = t.group(app, "All engineering", &[&eng, &platform]).await;
    t.user(app, "ada", &[&platform]).await;
    t.user(app, "bob", &[]).await;
    t.user(app, "cy", &[&eng]).await;
    let laptops = t
        .device_group(app, json!({"name": "Corporate laptops", "os": ["macos", "windows"], "ownership": ["corporate"], "posture": [{"key": "disk_encrypted", "op": "eq", "value": true}]}))
        .await;
    t.save(
        app,
        "private_access",
        settings(false, &[&all_eng], &[&laptops]),
    )
    .await;
    t.save(app, "digital_experience", settings(false, &[], &[]))
        .await;
    let mut devices = Vec::new();
    for (label, user, device) in [
        (
            "ada-mbp",
            "ada",
            report("ada-mbp", "macos", "4.1", "corporate", true),
        ),
        (
            "ada-phone",
            "ada",
            report("ada-phone", "ios", "4.1", "personal", false),
        ),
        (
            "bob-pc",
            "bob",
            report("bob-pc", "windows", "4.1", "corporate", true),
        ),
        (
            "old-client",
            "bob",
            report("old-client", "windows", "1.2.3", "corporate", true),
        ),
        (
            "cy-pc",
            "cy",
            report("cy-pc", "windows", "4.1", "corporate", true),
        ),
    ] {
        let (id, token, _) = t.enroll(app, user, device.clone()).await;
        devices.push((label, id, token, device));
    }
    let deactivated = app
        .call(
            Method::PATCH,
            &t.path("/users/cy"),
            Some(&t.admin),
            Some(json!({"active": false})),
            &[],
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK);
    Fleet { t, devices }
}

async fn every_reason_comes_out_of_sync_and_matches_the_device_page(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let expected = [
        ("ada-mbp", "internet_access", true, "enabled_by_default"),
        ("ada-mbp", "private_access", true, "group_match"),
        ("ada-mbp", "digital_experience", false, "no_groups_selected"),
        ("ada-phone", "private_access", false, "not_in_device_groups"),
        ("bob-pc", "private_access", false, "not_in_user_groups"),
        ("old-client", "private_access", true, "legacy_client"),
        ("old-client", "internet_access", true, "legacy_client"),
        ("old-client", "digital_experience", false, "legacy_client"),
        ("cy-pc", "internet_access", false, "user_inactive"),
        ("cy-pc", "private_access", false, "user_inactive"),
    ];
    for (label, service, enabled, reason) in expected {
        let (_, id, token, device) = fleet.devices.iter().find(|d| d.0 == label).expect("device");
        let policy = sync(&app, token, device, None, None).await;
        assert_eq!(policy.status, StatusCode::OK);
        let decision = &policy.body["services"][service];
        assert_eq!(decision["reason"], reason, "{label}/{service}: {decision}");
        assert_eq!(
            decision["enabled"], enabled,
            "{label}/{service}: {decision}"
        );
        assert!(
            decision["explanation"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
        assert_eq!(policy.etag.as_deref(), policy.body["etag"].as_str());

        let page = app
            .get(&fleet.t.path(&format!("/devices/{id}")), &fleet.t.admin)
            .await;
        let shown = &page.body["entitlements"][service];
        for field in [
            "enabled",
            "reason",
            "explanation",
            "matched_user_groups",
            "matched_device_groups",
        ] {
            assert_eq!(shown[field], decision[field], "{label}/{service}/{field}");
        }
    }
    let (_, _, token, device) = &fleet.devices[0];
    let policy = sync(&app, token, device, None, None).await;
    let matched = policy.body["services"]["private_access"]["matched_user_groups"]
        .as_array()
        .map(Vec::len);
    assert_eq!(
        matched,
        Some(1),
        "ada is in the selected group through nesting"
    );
}

async fn device_tokens_are_checked(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, id, token, device) = &fleet.devices[0];
    let forged = sync(&app, "ent_device_forged", device, None, None).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.body["error"]["code"], "invalid_device_token");
    let missing = app
        .call(
            Method::POST,
            "/agent/v1/sync",
            None,
            Some(device.clone()),
            &[],
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    // An admin token is not a device token.
    assert_eq!(
        sync(&app, &fleet.t.admin, device, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let mut bad = device.clone();
    bad["client_version"] = json!("four");
    assert_eq!(
        sync(&app, token, &bad, None, None).await.status,
        StatusCode::BAD_REQUEST
    );

    let removed = app
        .call(
            Method::DELETE,
            &fleet.t.path(&format!("/devices/{id}")),
            Some(&fleet.t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(
        sync(&app, token, device, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn an_unchanged_policy_answers_304_and_a_new_report_is_recorded(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, id, token, device) = &fleet.devices[0];
    let first = sync(&app, token, device, None, None).await;
    let etag = first.etag.clone().expect("etag");
    let again = sync(&app, token, device, Some(&etag), None).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));

    // A change that does not concern this device keeps the 304.
    fleet.t.group(&app, "Unrelated", &[]).await;
    assert_eq!(
        sync(&app, token, device, Some(&etag), None).await.status,
        StatusCode::NOT_MODIFIED
    );

    // The device's own report changes its decision: it became personal.
    let mut personal = device.clone();
    personal["ownership"] = json!("personal");
    let changed = sync(&app, token, &personal, Some(&etag), None).await;
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(
        changed.body["services"]["private_access"]["reason"],
        "not_in_device_groups"
    );
    let page = app
        .get(&fleet.t.path(&format!("/devices/{id}")), &fleet.t.admin)
        .await;
    assert_eq!(page.body["ownership"], "personal");
}

async fn a_held_long_poll_wakes_on_a_save_that_changes_the_device(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = fleet
        .devices
        .iter()
        .find(|d| d.0 == "bob-pc")
        .expect("bob")
        .clone();
    let etag = sync(&app, &token, &device, None, None)
        .await
        .etag
        .expect("etag");

    let held = common::hold(&app, &token, &device, &etag);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Turning Private Applications on for everyone concerns bob's device.
    let zpa = app
        .get(
            &fleet.t.path("/entitlements/private_access"),
            &fleet.t.admin,
        )
        .await;
    let mut on = zpa.body.clone();
    on["enabled_by_default"] = json!(true);
    let saved = app
        .put(
            &fleet.t.path("/entitlements/private_access"),
            &fleet.t.admin,
            on,
            zpa.etag.as_deref(),
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK);
    let (status, body, elapsed) = held.await.expect("held request");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["services"]["private_access"]["reason"],
        "enabled_by_default"
    );
    // Woken by the save, not by the 30 s timeout.
    assert!(
        elapsed < Duration::from_secs(15),
        "answered after {elapsed:?}"
    );
}

async fn a_held_long_poll_without_a_change_ends_with_304(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = &fleet.devices[0];
    let etag = sync(&app, token, device, None, None)
        .await
        .etag
        .expect("etag");
    let held = {
        let (app_base, client) = (app.base.clone(), app.client.clone());
        let (token, device, etag) = (token.clone(), device.clone(), etag.clone());
        tokio::spawn(async move {
            client
                .post(format!("{app_base}/agent/v1/sync?wait=2"))
                .bearer_auth(token)
                .header("If-None-Match", etag)
                .json(&device)
                .send()
                .await
                .expect("sent")
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    fleet.t.group(&app, "Unrelated", &[]).await;
    assert_eq!(held.await.expect("held"), StatusCode::NOT_MODIFIED);
}

/// A change this node was never told of (its notification lost while the
/// listener reconnected; here, a write that sends none) is still not answered
/// 304 with the older decision: a held sync that reaches its deadline first
/// reads the store's versions, as a fresh sync does.
async fn a_held_long_poll_at_its_deadline_catches_up_with_an_unannounced_change(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let ada = t.user(&app, "ada", &[]).await;
    t.save(&app, "private_access", settings(true, &[], &[]))
        .await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, policy) = t.enroll(&app, "ada", device.clone()).await;
    assert_eq!(policy["services"]["private_access"]["enabled"], true);
    let etag = sync(&app, &token, &device, None, None)
        .await
        .etag
        .expect("etag");
    let store = db.open_sql().await;
    let held = common::hold_for(&app, &token, &device, &etag, 2);
    // The hold began on the old snapshot; the change comes while it waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    store
        .deactivate_user_unannounced(&t.id, &ada)
        .await
        .expect("deactivated");
    let (status, body, _) = held.await.expect("held");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["services"]["private_access"]["enabled"], false,
        "{body}"
    );
}

async fn removing_a_device_ends_its_held_long_poll_with_401(db: Database) {
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, id, token, device) = fleet.devices[0].clone();
    let etag = sync(&app, &token, &device, None, None)
        .await
        .etag
        .expect("etag");
    let held = common::hold(&app, &token, &device, &etag);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed = app
        .call(
            Method::DELETE,
            &fleet.t.path(&format!("/devices/{id}")),
            Some(&fleet.t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    assert_eq!(held.await.expect("held").0, StatusCode::UNAUTHORIZED);
}

async fn no_node_answers_an_older_decision_after_a_save_on_another(db: Database) {
    let nodes = [
        TestApp::start(&db).await,
        TestApp::start(&db).await,
        TestApp::start(&db).await,
    ];
    let fleet = every_reason(&nodes[0]).await;
    let (_, _, token, device) = fleet
        .devices
        .iter()
        .find(|d| d.0 == "bob-pc")
        .expect("bob")
        .clone();
    // Every node builds its snapshot of the tenant now, before the changes.
    for node in &nodes {
        let before = sync(node, &token, &device, None, None).await;
        assert_eq!(before.body["services"]["private_access"]["enabled"], false);
    }
    let path = fleet.t.path("/entitlements/private_access");
    for round in 0..400 {
        let on = round % 2 == 0;
        let writer = &nodes[round % 3];
        let mut settings = writer.get(&path, &fleet.t.admin).await.body;
        settings["enabled_by_default"] = json!(on);
        let saved = writer.put(&path, &fleet.t.admin, settings, None).await;
        assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
        // Straight after the 200, every node, including those that only hear of
        // the change later, answers with the new decision.
        for (index, reader) in nodes.iter().enumerate() {
            let after = sync(reader, &token, &device, None, None).await;
            assert_eq!(
                after.body["services"]["private_access"]["enabled"], on,
                "round {round}, node {index}: {}",
                after.body
            );
        }
    }
}

async fn guessing_enrollment_keys_is_slowed_down_but_enrollment_is_not(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    // Many successful enrollments from one address are never limited.
    for index in 0..25 {
        let mut device = device.clone();
        device["hostname"] = json!(format!("host-{index}"));
        t.enroll(&app, "ada", device).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let guess = json!({"enrollment_key": "guess", "user_name": "ada", "device": device});
        statuses.push(
            app.call(Method::POST, "/agent/v1/enroll", None, Some(guess), &[])
                .await
                .status,
        );
    }
    assert!(
        statuses[..20]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert!(
        statuses[20..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // The guesser's failures never refuse a valid key from the same address.
    let valid = app
        .call(
            Method::POST,
            "/agent/v1/enroll",
            None,
            Some(json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": device})),
            &[],
        )
        .await;
    assert_eq!(valid.status, StatusCode::CREATED, "{:?}", valid.body);
}

/// A directory change wakes the held long-polls of the users it concerns
/// and no others: a change to one user costs that user's devices, not the
/// tenant's fleet. On PostgreSQL the change is made through a second node,
/// so that the other node's rebuild (from the change feed) is what wakes.
async fn a_directory_change_wakes_only_the_devices_it_concerns(db: Database) {
    let holder = TestApp::start(&db).await;
    let second = TestApp::second_node(&db).await;
    let admin = second.as_ref().unwrap_or(&holder);
    let fleet = every_reason(&holder).await;
    let device = |label: &str| {
        fleet
            .devices
            .iter()
            .find(|d| d.0 == label)
            .expect("in the fleet")
            .clone()
    };
    let ada = hold_long_poll(&holder, device("ada-mbp")).await;
    let bob = hold_long_poll(&holder, device("bob-pc")).await;
    while held_long_polls(&holder).await != 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rechecks_before = held_rechecks(&holder).await;

    // Ada leaves: her laptop loses Private Applications; Bob's devices are
    // not concerned.
    let deactivated = admin
        .call(
            Method::PATCH,
            &fleet.t.path("/users/ada"),
            Some(&fleet.t.admin),
            Some(json!({"active": false})),
            &[],
        )
        .await;
    assert_eq!(deactivated.status, StatusCode::OK);
    let (status, body, _) = tokio::time::timeout(Duration::from_secs(15), ada)
        .await
        .expect("woken by the change, not the timeout")
        .expect("held request");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["services"]["private_access"]["reason"],
        "user_inactive"
    );
    assert_eq!(
        held_rechecks(&holder).await - rechecks_before,
        1,
        "only Ada's hold decided again"
    );
    assert_eq!(held_long_polls(&holder).await, 1, "Bob's still held");

    // A save concerns everyone: Bob's hold decides again (and answers, as
    // the save turns Private Applications on for him).
    let path = fleet.t.path("/entitlements/private_access");
    let mut settings = admin.get(&path, &fleet.t.admin).await.body;
    settings["enabled_by_default"] = json!(true);
    assert_eq!(
        admin
            .put(&path, &fleet.t.admin, settings, None)
            .await
            .status,
        StatusCode::OK
    );
    let (status, body, _) = tokio::time::timeout(Duration::from_secs(15), bob)
        .await
        .expect("woken by the save")
        .expect("held request");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["services"]["private_access"]["reason"],
        "enabled_by_default"
    );
    assert_eq!(held_rechecks(&holder).await - rechecks_before, 2);

    // Removing a device answers its hold at once (on PostgreSQL, through the
    // change feed, which names the device and its user).
    let phone = device("ada-phone");
    let phone_id = phone.1.clone();
    let held = hold_long_poll(&holder, phone).await;
    while held_long_polls(&holder).await != 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let removed = admin
        .call(
            Method::DELETE,
            &fleet.t.path(&format!("/devices/{phone_id}")),
            Some(&fleet.t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(15), held)
        .await
        .expect("answered at once, not at the timeout")
        .expect("held request");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    no_node_answers_an_older_decision_after_a_save_on_another,
    a_directory_change_wakes_only_the_devices_it_concerns,
    enrollment_refuses_bad_keys_unknown_users_and_bad_reports,
    every_reason_comes_out_of_sync_and_matches_the_device_page,
    device_tokens_are_checked,
    an_unchanged_policy_answers_304_and_a_new_report_is_recorded,
    a_held_long_poll_wakes_on_a_save_that_changes_the_device,
    a_held_long_poll_without_a_change_ends_with_304,
    a_held_long_poll_at_its_deadline_catches_up_with_an_unannounced_change,
    removing_a_device_ends_its_held_long_poll_with_401,
    guessing_enrollment_keys_is_slowed_down_but_enrollment_is_not,
);

/// Several nodes share a PostgreSQL database: a save through one wakes a
/// long-poll held by another within seconds (SQLite is single-node).
#[tokio::test]
async fn a_save_on_one_node_wakes_a_long_poll_held_on_another() {
    let Some(db) = Database::postgres("cross-node wake-up").await else {
        return;
    };
    let node1 = TestApp::start(&db).await;
    let node3 = TestApp::start(&db).await;
    let fleet = every_reason(&node1).await;
    let (_, _, token, device) = fleet
        .devices
        .iter()
        .find(|d| d.0 == "bob-pc")
        .expect("bob")
        .clone();
    let etag = sync(&node3, &token, &device, None, None)
        .await
        .etag
        .expect("etag");
    let held = common::hold(&node3, &token, &device, &etag);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = fleet.t.path("/entitlements/private_access");
    let mut settings = node1.get(&path, &fleet.t.admin).await.body;
    settings["enabled_by_default"] = json!(true);
    assert_eq!(
        node1
            .put(&path, &fleet.t.admin, settings, None)
            .await
            .status,
        StatusCode::OK
    );
    let (status, _, elapsed) = held.await.expect("held");
    assert_eq!(status, StatusCode::OK);
    assert!(
        elapsed < Duration::from_secs(15),
        "woken by the other node's save, not the timeout: {elapsed:?}"
    );
}

/// Graceful shutdown answers held long-polls (304) instead of cutting them off.
#[tokio::test]
async fn shutdown_answers_held_long_polls() {
    let db = Database::sqlite();
    let mut app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = fleet.devices[0].clone();
    let etag = sync(&app, &token, &device, None, None)
        .await
        .etag
        .expect("etag");
    let held = {
        let (base, client) = (app.base.clone(), app.client.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let response = client
                .post(format!("{base}/agent/v1/sync?wait=30"))
                .bearer_auth(token)
                .header("If-None-Match", etag)
                .json(&device)
                .send()
                .await;
            (response.map(|r| r.status()), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.stop().await;
    let (status, elapsed) = held.await.expect("held");
    assert_eq!(
        status.expect("answered, not cut off"),
        StatusCode::NOT_MODIFIED
    );
    assert!(
        elapsed < Duration::from_secs(15),
        "answered at shutdown, not at the 30 s deadline: {elapsed:?}"
    );
}

/// One raw HTTP/1.1 exchange's answer.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one answer off a raw connection, keeping what follows it in `pending`.
async fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>) -> RawAnswer {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = response.parse(pending).expect("valid head") {
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let status = response.code.expect("status");
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().expect("length"));
            while pending.len() < head_len + length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed in the middle of an answer");
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[head_len..head_len + length].to_vec();
            pending.drain(..head_len + length);
            return RawAnswer {
                status,
                headers,
                body,
            };
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before an answer");
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn raw_sync(token: &str, report: &Value, etag: Option<&str>, extra: &str) -> Vec<u8> {
    let body = report.to_string();
    let etag = etag.map_or(String::new(), |e| format!("If-None-Match: {e}\r\n"));
    format!(
        "POST /agent/v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{etag}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Syncs a device, then holds a long-poll with the ETag it got.
async fn hold_long_poll(
    app: &TestApp,
    (_, _, token, report): (&str, String, String, Value),
) -> tokio::task::JoinHandle<(StatusCode, Value, Duration)> {
    let etag = sync(app, &token, &report, None, None)
        .await
        .etag
        .expect("etag");
    common::hold(app, &token, &report, &etag)
}

async fn held_rechecks(app: &TestApp) -> i64 {
    app.metric("entitle_held_long_poll_rechecks_total")
        .await
        .expect("counter")
}

async fn held_long_polls(app: &TestApp) -> i64 {
    app.metric("entitle_held_long_polls").await.expect("gauge")
}

/// On one keep-alive connection: syncs (also pipelined), then a request for
/// another route, then syncs again — every answer right and in order.
#[tokio::test]
async fn one_connection_carries_syncs_pipelines_and_other_routes() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = fleet.devices[0].clone();
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let mut pending = Vec::new();

    stream
        .write_all(&raw_sync(&token, &device, None, ""))
        .await
        .expect("write");
    let first = read_answer(&mut stream, &mut pending).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let etag = first.header("etag").expect("etag").to_owned();
    let policy: Value = serde_json::from_slice(&first.body).expect("policy");
    assert_eq!(policy["etag"], etag.as_str());

    // Two requests in one write: answered in order.
    let mut both = raw_sync(&token, &device, Some(&etag), "");
    both.extend(raw_sync("not-a-token", &device, None, ""));
    stream.write_all(&both).await.expect("write");
    let unchanged = read_answer(&mut stream, &mut pending).await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some(etag.as_str()));
    assert!(unchanged.body.is_empty());
    let refused = read_answer(&mut stream, &mut pending).await;
    assert_eq!(refused.status, 401);
    let error: Value = serde_json::from_slice(&refused.body).expect("json error");
    assert_eq!(error["error"]["code"], "invalid_device_token");

    // Another route on the same connection goes to the full router.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let health = read_answer(&mut stream, &mut pending).await;
    assert_eq!(health.status, 200);

    // And syncs still work there, with the same answers; the connection then
    // ends, so that the agent's next sync comes on one the lane serves.
    stream
        .write_all(&raw_sync(&token, &device, Some(&etag), ""))
        .await
        .expect("write");
    let again = read_answer(&mut stream, &mut pending).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_closed_after(&mut stream, &again, &pending).await;
}

/// Asserts that `answer` said `Connection: close` and the server then closed.
async fn assert_closed_after(stream: &mut TcpStream, answer: &RawAnswer, pending: &[u8]) {
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))) && pending.is_empty(),
        "the server closed the connection after the answer: {read:?}, {} bytes after it",
        pending.len() + rest.len()
    );
}

/// An agent's HTTP client reuses the connection it enrolled on for its first
/// sync: the enrollment's answer closes it, so that every sync of the device
/// comes on a connection that carries only syncs (served by the agent lane,
/// which keeps none of hyper's buffers while a long-poll is held). Syncs on
/// such a connection keep it open.
#[tokio::test]
async fn an_enrollment_closes_its_connection_and_syncs_keep_theirs() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let body = json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": device})
        .to_string();
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let enroll = format!(
        "POST /agent/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(enroll.as_bytes()).await.expect("write");
    let mut pending = Vec::new();
    let enrolled = read_answer(&mut stream, &mut pending).await;
    assert_eq!(enrolled.status, 201);
    assert_closed_after(&mut stream, &enrolled, &pending).await;

    let enrolled: Value = serde_json::from_slice(&enrolled.body).expect("enrolled");
    let token = enrolled["device_token"].as_str().expect("token");
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let mut etag = None;
    for _ in 0..3 {
        stream
            .write_all(&raw_sync(token, &device, etag.as_deref(), ""))
            .await
            .expect("write");
        let answer = read_answer(&mut stream, &mut pending).await;
        assert!(matches!(answer.status, 200 | 304), "{}", answer.status);
        assert_eq!(
            answer.header("connection"),
            None,
            "a sync-only connection stays open"
        );
        etag = answer.header("etag").map(str::to_owned);
    }
}

/// A chunked body and HTTP/1.0 are served too (by the full router), and
/// `Connection: close` is honoured.
#[tokio::test]
async fn unusual_sync_requests_are_still_answered() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = fleet.devices[0].clone();
    let address = app.base.trim_start_matches("http://").to_owned();

    let body = device.to_string();
    let chunked = format!(
        "POST /agent/v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream.write_all(chunked.as_bytes()).await.expect("write");
    let answer = read_answer(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 200);

    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(&raw_sync(&token, &device, None, "Connection: close\r\n"))
        .await
        .expect("write");
    let mut pending = Vec::new();
    let answer = read_answer(&mut stream, &mut pending).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .await
        .expect("read to the end");
    assert!(
        rest.is_empty() && pending.is_empty(),
        "nothing after a close"
    );

    let mut stream = TcpStream::connect(&address).await.expect("connect");
    stream
        .write_all(b"BREW /agent/v1/sync HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_answer(&mut stream, &mut Vec::new()).await;
    assert_eq!(answer.status, 405);
}

/// A device that hangs up while its sync is held stops counting as held.
#[tokio::test]
async fn a_device_that_hangs_up_while_held_is_let_go() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let fleet = every_reason(&app).await;
    let (_, _, token, device) = fleet.devices[0].clone();
    let etag = sync(&app, &token, &device, None, None)
        .await
        .etag
        .expect("etag");
    let mut stream = TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let mut held = raw_sync(&token, &device, Some(&etag), "");
    // `?wait=` goes in the request line.
    let at = held.iter().position(|b| *b == b' ').expect("space") + "/agent/v1/sync".len() + 1;
    held.splice(at..at, b"?wait=60".iter().copied());
    stream.write_all(&held).await.expect("write");
    let mut polls = 0;
    while held_long_polls(&app).await != 1 {
        polls += 1;
        assert!(polls < 100, "the sync was never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An abortive close (RST) ends the hold at once. A graceful close cannot be
    // told from a half-close, whose client still waits for the answer, so it
    // is held until its deadline.
    stream.set_zero_linger().expect("linger");
    drop(stream);
    let mut polls = 0;
    while held_long_polls(&app).await != 0 {
        polls += 1;
        assert!(polls < 100, "a closed connection stayed held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
