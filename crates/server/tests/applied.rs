//! What an agent applied (issue 13): a sync's `applied` report is validated,
//! stored only when it changes, and shown on DEVICE with the time since the
//! save of that version; device listings filter on `applied=current|stale`.

#[macro_use]
mod common;

use common::{Database, Tenant, TestApp, report, sync};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A report carrying `applied`.
fn with_applied(hostname: &str, applied: Value) -> Value {
    let mut body = report(hostname, "macos", "4.2", "corporate", true);
    body["applied"] = applied;
    body
}

fn failed_private_access(version: i64) -> Value {
    json!({"config_version": version, "services": {
        "internet_access": {"state": "running"},
        "private_access": {"state": "failed", "exit_status": 3,
                           "output": "starting tunnel\nerror: no route to gateway\n\tat connect"},
    }})
}

/// Saves a change of `service` and returns the tenant's new config version.
async fn bump(app: &TestApp, tenant: &Tenant, service: &str) -> i64 {
    let version = |body: &Value| body["config_version"].as_i64().expect("version");
    let before = app.get(&tenant.path("/entitlements"), &tenant.admin).await;
    let mut changed = before.body["services"][service].clone();
    changed["logout_on_enable"] = json!(!changed["logout_on_enable"].as_bool().unwrap_or(false));
    tenant.save(app, service, changed).await;
    let after = app.get(&tenant.path("/entitlements"), &tenant.admin).await;
    assert!(version(&after.body) > version(&before.body));
    version(&after.body)
}

/// Enrolls `count` Macs of ada's (`host-00`, …): host name, device id, token.
async fn enroll_macs(
    app: &TestApp,
    tenant: &Tenant,
    count: usize,
) -> Vec<(String, String, String)> {
    let mut devices = Vec::new();
    for n in 0..count {
        let hostname = format!("host-{n:02}");
        let (id, token, _) = tenant
            .enroll(
                app,
                "ada",
                report(&hostname, "macos", "4.2", "corporate", true),
            )
            .await;
        devices.push((hostname, id, token));
    }
    devices
}

async fn device(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    let answer = app
        .get(&tenant.path(&format!("/devices/{id}")), &tenant.admin)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

/// The count of `entitle_sync_writes_total{what="…"}` in the metrics.
async fn sync_writes(app: &TestApp, what: &str) -> i64 {
    app.metric(&format!("entitle_sync_writes_total{{what=\"{what}\"}}"))
        .await
        .unwrap_or(0)
}

async fn stored_and_shown(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("applied").await;
    tenant.user(&app, "ada", &[]).await;
    let (id, token, _) = tenant
        .enroll(
            &app,
            "ada",
            report("ada-mac", "macos", "4.2", "corporate", true),
        )
        .await;
    // An old agent says nothing of what it applied.
    assert_eq!(device(&app, &tenant, &id).await["applied"], Value::Null);

    let version = bump(&app, &tenant, "internet_access").await;

    let answer = sync(
        &app,
        &token,
        &with_applied("ada-mac", failed_private_access(version)),
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let shown = device(&app, &tenant, &id).await;
    let applied = &shown["applied"];
    assert_eq!(applied["config_version"], json!(version));
    assert_eq!(applied["current"], json!(true));
    let after = applied["after_save_ms"].as_i64().expect("after_save_ms");
    assert!((0..60_000).contains(&after), "{after}");
    assert_eq!(
        applied["services"]["internet_access"],
        json!({"state": "running"})
    );
    assert_eq!(
        applied["services"]["private_access"],
        json!({"state": "failed", "exit_status": 3,
               "output": "starting tunnel\nerror: no route to gateway\n\tat connect"})
    );
    // The list shows it too.
    let list = app.get(&tenant.path("/devices"), &tenant.admin).await;
    assert_eq!(list.body["items"][0]["applied"], *applied);

    // A later save makes it stale; its first-heard time does not move while
    // the agent keeps reporting the same version with other states.
    bump(&app, &tenant, "digital_experience").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let running = json!({"config_version": version, "services": {
        "internet_access": {"state": "running"}, "private_access": {"state": "running"}}});
    let answer = sync(&app, &token, &with_applied("ada-mac", running), None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let later = device(&app, &tenant, &id).await;
    assert_eq!(later["applied"]["current"], json!(false));
    assert_eq!(later["applied"]["applied_at"], applied["applied_at"]);
    assert_eq!(
        later["applied"]["services"]["private_access"],
        json!({"state": "running"})
    );
}

async fn unchanged_applied_writes_nothing(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("quiet").await;
    tenant.user(&app, "ada", &[]).await;
    let (id, token, _) = tenant
        .enroll(
            &app,
            "ada",
            report("ada-mac", "macos", "4.2", "corporate", true),
        )
        .await;
    let body = with_applied("ada-mac", failed_private_access(0));
    let first = sync(&app, &token, &body, None, None).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(sync_writes(&app, "applied").await, 1);
    let before = device(&app, &tenant, &id).await;
    let etag = first.etag.expect("etag");
    for _ in 0..5 {
        let again = sync(&app, &token, &body, Some(&etag), None).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    }
    assert_eq!(sync_writes(&app, "applied").await, 1);
    assert_eq!(sync_writes(&app, "report").await, 0);
    assert_eq!(device(&app, &tenant, &id).await, before);
    // A change of one state is written, once.
    let mut changed = failed_private_access(0);
    changed["services"]["private_access"]["exit_status"] = json!(4);
    let body = with_applied("ada-mac", changed);
    for _ in 0..3 {
        sync(&app, &token, &body, Some(&etag), None).await;
    }
    assert_eq!(sync_writes(&app, "applied").await, 2);
    let shown = device(&app, &tenant, &id).await;
    assert_eq!(
        shown["applied"]["services"]["private_access"]["exit_status"],
        json!(4)
    );
    // Version 0 (the defaults) has no save to measure from.
    assert_eq!(shown["applied"]["after_save_ms"], Value::Null);
}

async fn invalid_applied_is_refused(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("strict").await;
    tenant.user(&app, "ada", &[]).await;
    let (id, token, _) = tenant
        .enroll(
            &app,
            "ada",
            report("ada-mac", "macos", "4.2", "corporate", true),
        )
        .await;
    let long = "x".repeat(1025);
    let many_lines = "line\n".repeat(40);
    let cases = [
        json!({"config_version": 0, "services": {"teleport": {"state": "running"}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "sleeping"}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "failed", "output": long}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "failed", "output": many_lines}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "failed", "output": "a\rb"}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "failed", "output": "a\u{1b}[2Jb"}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "failed", "output": "a\u{0}b"}}}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "running", "exit_status": 1}}}),
        json!({"config_version": -1, "services": {}}),
        json!({"config_version": "1", "services": {}}),
        json!({"config_version": 0, "services": {}, "extra": true}),
        json!({"config_version": 0, "services": {"internet_access": {"state": "running", "why": "x"}}}),
        json!({"services": {}}),
    ];
    for applied in cases {
        let answer = sync(
            &app,
            &token,
            &with_applied("ada-mac", applied.clone()),
            None,
            None,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{applied}: {:?}",
            answer.body
        );
    }
    assert_eq!(device(&app, &tenant, &id).await["applied"], Value::Null);
    assert_eq!(sync_writes(&app, "applied").await, 0);

    // A version the tenant has not reached is ignored, not refused: the
    // device still gets its policy.
    let ahead =
        json!({"config_version": 99, "services": {"internet_access": {"state": "running"}}});
    let answer = sync(&app, &token, &with_applied("ada-mac", ahead), None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(device(&app, &tenant, &id).await["applied"], Value::Null);

    // An enrollment may carry it; it is ignored there.
    let enrolled = app
        .post(
            "/agent/v1/enroll",
            "",
            json!({"enrollment_key": tenant.enrollment_key, "user_name": "ada",
                   "device": with_applied("ada-pc", failed_private_access(0))}),
        )
        .await;
    assert_eq!(enrolled.status, StatusCode::CREATED, "{:?}", enrolled.body);
    let other = enrolled.body["device_id"].as_str().expect("id");
    assert_eq!(device(&app, &tenant, other).await["applied"], Value::Null);
}

async fn stale_filter_pages_with_totals(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("fleet").await;
    tenant.user(&app, "ada", &[]).await;
    let first = bump(&app, &tenant, "internet_access").await;
    let tokens = enroll_macs(&app, &tenant, 7).await;
    // Devices 0–4 apply version 1; 5 and 6 never report.
    for (hostname, _, token) in &tokens[..5] {
        let body = with_applied(hostname, json!({"config_version": first, "services": {}}));
        let answer = sync(&app, token, &body, None, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let listed = |filter: &'static str| {
        let app = &app;
        let tenant = &tenant;
        async move {
            let mut hosts = Vec::new();
            let mut cursor: Option<String> = None;
            let mut total = None;
            loop {
                let mut path = tenant.path(&format!("/devices?applied={filter}&limit=2"));
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = app.get(&path, &tenant.admin).await;
                assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
                if cursor.is_none() {
                    total = page.body["total"].as_u64();
                }
                for item in page.body["items"].as_array().expect("items") {
                    hosts.push(item["hostname"].as_str().expect("hostname").to_owned());
                }
                match page.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            (hosts, total)
        }
    };
    let (stale, total) = listed("stale").await;
    assert_eq!(stale, ["host-05", "host-06"]);
    assert_eq!(total, Some(2));
    let (current, total) = listed("current").await;
    assert_eq!(
        current,
        ["host-00", "host-01", "host-02", "host-03", "host-04"]
    );
    assert_eq!(total, Some(5));

    // A save bumps the version: every device is behind until it applies it.
    let second = bump(&app, &tenant, "private_access").await;
    let (stale, total) = listed("stale").await;
    assert_eq!(stale.len(), 7);
    assert_eq!(total, Some(7));
    for (hostname, _, token) in &tokens[1..3] {
        let body = with_applied(hostname, json!({"config_version": second, "services": {}}));
        sync(&app, token, &body, None, None).await;
    }
    let (stale, total) = listed("stale").await;
    assert_eq!(
        stale,
        ["host-00", "host-03", "host-04", "host-05", "host-06"]
    );
    assert_eq!(total, Some(5));
    let (current, total) = listed("current").await;
    assert_eq!(current, ["host-01", "host-02"]);
    assert_eq!(total, Some(2));

    let bad = app
        .get(&tenant.path("/devices?applied=later"), &tenant.admin)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
}

/// A fleet that re-polls together after a save, each reporting the version it
/// applied: the writes are gathered into shared transactions, and every sync
/// answers only once its own state is stored, so none is lost or shown late.
async fn a_fleet_applying_together_is_written_whole(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("together").await;
    tenant.user(&app, "ada", &[]).await;
    let devices = enroll_macs(&app, &tenant, 40).await;
    let version = bump(&app, &tenant, "internet_access").await;
    let applied = |n: usize| {
        json!({"config_version": version, "services": {
            "internet_access": {"state": "failed", "exit_status": n}}})
    };
    let syncs = devices.iter().enumerate().map(|(n, (hostname, _, token))| {
        let body = with_applied(hostname, applied(n));
        let app = &app;
        async move { sync(app, token, &body, None, None).await.status }
    });
    let statuses = futures_util::future::join_all(syncs).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    for (n, (hostname, id, _)) in devices.iter().enumerate() {
        let shown = device(&app, &tenant, id).await;
        assert_eq!(
            shown["applied"]["config_version"],
            json!(version),
            "{hostname}"
        );
        assert_eq!(
            shown["applied"]["services"]["internet_access"]["exit_status"],
            json!(n),
            "{hostname}"
        );
    }
    assert_eq!(sync_writes(&app, "applied").await, 40);
}

/// A sync due to record that its device was seen answers without writing;
/// the time is written in the next batch, about a second later.
async fn last_seen_is_written_after_the_answer(db: Database) {
    let app = TestApp::start(&db).await;
    let tenant = app.tenant("seen").await;
    tenant.user(&app, "ada", &[]).await;
    let body = report("ada-mac", "macos", "4.2", "corporate", true);
    let (id, token, _) = tenant.enroll(&app, "ada", body.clone()).await;
    // Last seen an hour ago, as the store says; a save makes every node read
    // the device again rather than use what it kept.
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let store = db.open().await;
    assert_eq!(
        store
            .record_last_seen(std::slice::from_ref(&id), hour_ago)
            .await
            .expect("last seen"),
        1
    );
    bump(&app, &tenant, "internet_access").await;
    let last_seen = |device: &Value| {
        let at = device["last_sync_at"].as_str().expect("last_sync_at");
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .expect("a time")
    };
    assert!(last_seen(&device(&app, &tenant, &id).await) < hour_ago + time::Duration::minutes(1));

    let answer = sync(&app, &token, &body, None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let mut written = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if last_seen(&device(&app, &tenant, &id).await) > hour_ago + time::Duration::minutes(59) {
            written = true;
            break;
        }
    }
    assert!(written, "the last-seen time was not written within 5 s");
    assert_eq!(sync_writes(&app, "last_seen").await, 1);
    assert_eq!(sync_writes(&app, "report").await, 0);
}

on_both_backends!(
    stored_and_shown,
    unchanged_applied_writes_nothing,
    invalid_applied_is_refused,
    stale_filter_pages_with_totals,
    a_fleet_applying_together_is_written_whole,
    last_seen_is_written_after_the_answer,
);
