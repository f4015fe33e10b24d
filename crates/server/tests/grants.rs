//! Time-bound grants (issue 15, part 2): a grant reaches a held long-poll at
//! its start and leaves it at its end without a poll; revoking it early wakes
//! it too; its fields are checked; it is audited.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, Tenant, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn in_seconds(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .expect("format")
}

async fn grant(app: &TestApp, t: &Tenant, body: Value) -> common::Answer {
    app.post(&t.path("/grants"), &t.admin, body).await
}

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

/// A tenant with user ada, her enrolled device (token, report) and
/// private_access off for everyone.
async fn setup(app: &TestApp) -> (Tenant, String, Value) {
    let t = app.tenant("acme").await;
    t.user(app, "ada", &[]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(app, "ada", device.clone()).await;
    t.save(app, "private_access", settings(false, &[], &[]))
        .await;
    (t, token, device)
}

async fn a_grant_reaches_a_held_long_poll_at_its_start_and_leaves_at_its_end(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, token, device) = setup(&app).await;
    let first = sync(&app, &token, &device, None, None).await;
    assert_eq!(first.body["services"]["private_access"]["enabled"], false);

    let ends_at = in_seconds(6);
    let created = grant(
        &app,
        &t,
        json!({"user": "ada", "service": "private_access", "starts_at": in_seconds(2),
               "ends_at": ends_at, "justification": "incident 4711"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["state"], "upcoming");
    assert_eq!(created.body["user_name"], "ada");

    // Held with the first policy's ETag: answered when the grant starts.
    let started = sync(&app, &token, &device, first.etag.as_deref(), Some(30)).await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    let service = &started.body["services"]["private_access"];
    assert_eq!(service["enabled"], true, "{service}");
    assert_eq!(service["reason"], "temporary_grant", "{service}");
    let active = app.get(&t.path("/grants?state=active"), &t.admin).await;
    assert_eq!(active.body["items"].as_array().map(Vec::len), Some(1));

    // Held again: answered when it ends.
    let ended = sync(&app, &token, &device, started.etag.as_deref(), Some(30)).await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    assert_eq!(ended.body["services"]["private_access"]["enabled"], false);
    let listed = app.get(&t.path("/grants"), &t.admin).await;
    assert_eq!(listed.body["items"][0]["state"], "ended");
    assert_eq!(audit(&app, &t, "grant.create").await.len(), 1);
}

async fn revoking_a_grant_early_wakes_held_long_polls(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, token, device) = setup(&app).await;
    let created = grant(
        &app,
        &t,
        json!({"user": "ada", "service": "private_access", "duration": "8h",
               "justification": "on call"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["state"], "active");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let on = sync(&app, &token, &device, None, None).await;
    assert_eq!(on.body["services"]["private_access"]["enabled"], true);
    let explanation = on.body["services"]["private_access"]["explanation"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let end_day = &created.body["ends_at"].as_str().expect("ends_at")[..10];
    assert!(explanation.contains(end_day), "{explanation}");

    let path = t.path(&format!("/grants/{id}"));
    let (held, revoked) = tokio::join!(
        sync(&app, &token, &device, on.etag.as_deref(), Some(30)),
        async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            app.call(Method::DELETE, &path, Some(&t.admin), None, &[])
                .await
        }
    );
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.body["state"], "revoked");
    assert_eq!(held.status, StatusCode::OK, "{:?}", held.body);
    assert_eq!(held.body["services"]["private_access"]["enabled"], false);
    let again = app
        .call(Method::DELETE, &path, Some(&t.admin), None, &[])
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let revokes = audit(&app, &t, "grant.revoke").await;
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0]["principal"]["kind"], "api_token");
}

async fn a_grant_for_one_device_leaves_the_others_alone(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, token, device) = setup(&app).await;
    let other = report("ada-linux", "linux", "4.0", "corporate", true);
    let (other_id, other_token, _) = t.enroll(&app, "ada", other.clone()).await;
    let created = grant(
        &app,
        &t,
        json!({"user": "ada", "device_id": other_id, "service": "private_access",
               "duration": "1h", "justification": "testing the VPN on Linux"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let mine = sync(&app, &token, &device, None, None).await;
    assert_eq!(mine.body["services"]["private_access"]["enabled"], false);
    let theirs = sync(&app, &other_token, &other, None, None).await;
    assert_eq!(theirs.body["services"]["private_access"]["enabled"], true);
}

async fn grant_fields_are_checked(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, _, _) = setup(&app).await;
    let base = json!({"user": "ada", "service": "private_access", "duration": "1h",
                      "justification": "why"});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().expect("object").remove(key);
        body
    };
    for (body, field) in [
        (with("justification", json!("  ")), "justification"),
        (
            with("justification", json!("x".repeat(501))),
            "justification",
        ),
        (with("duration", json!("31d")), "duration"),
        (with("duration", json!("soon")), "duration"),
        (with("starts_at", json!(in_seconds(-3600))), "starts_at"),
        (with("starts_at", json!("tomorrow")), "starts_at"),
        (with("service", json!("teleport")), "service"),
        (with("ends_at", json!(in_seconds(60))), "ends_at"),
        (without("duration"), "ends_at"),
    ] {
        let answer = grant(&app, &t, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            answer.body
        );
        assert_eq!(
            answer.body["error"]["field"], field,
            "{body}: {:?}",
            answer.body
        );
    }
    let control = grant(&app, &t, with("justification", json!("a\u{7}b"))).await;
    assert_eq!(control.status, StatusCode::BAD_REQUEST);
    let nobody = grant(&app, &t, with("user", json!("nobody"))).await;
    assert_eq!(nobody.status, StatusCode::NOT_FOUND, "{:?}", nobody.body);
    // A device of another user.
    t.user(&app, "bob", &[]).await;
    let (bob_device, _, _) = t
        .enroll(
            &app,
            "bob",
            report("bob-pc", "windows", "4.0", "corporate", true),
        )
        .await;
    let foreign = grant(&app, &t, with("device_id", json!(bob_device))).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{:?}", foreign.body);
    // A viewer may list, not grant.
    let viewer = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "v", "role": "viewer"}),
        )
        .await;
    let viewer = viewer.body["token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.post(&t.path("/grants"), &viewer, base.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&t.path("/grants"), &viewer).await.status,
        StatusCode::OK
    );
    // Another tenant cannot grant to this tenant's users.
    let other = app.tenant("globex").await;
    let across = app
        .post(&other.path("/grants"), &other.admin, base.clone())
        .await;
    assert_eq!(across.status, StatusCode::NOT_FOUND, "{:?}", across.body);
    assert!(audit(&app, &t, "grant.create").await.is_empty());
}

async fn exclusions_win_over_a_grant_unless_it_overrides_them(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let contractors = t.group(&app, "Contractors", &[]).await;
    t.user(&app, "ada", &[&contractors]).await;
    let device = report("ada-mbp", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;
    let mut excluded = settings(true, &[], &[]);
    excluded["exclude_user_groups"] = json!([contractors]);
    t.save(&app, "private_access", excluded).await;
    let off = sync(&app, &token, &device, None, None).await;
    assert_eq!(off.body["services"]["private_access"]["enabled"], false);
    assert_eq!(
        off.body["services"]["private_access"]["reason"],
        "excluded_user_group"
    );

    let plain = grant(
        &app,
        &t,
        json!({"user": "ada", "service": "private_access", "duration": "1h",
               "justification": "asked for it"}),
    )
    .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{:?}", plain.body);
    let still = sync(&app, &token, &device, None, None).await;
    let service = &still.body["services"]["private_access"];
    assert_eq!(service["enabled"], false, "{service}");
    assert_eq!(service["reason"], "excluded_user_group", "{service}");

    let overriding = grant(
        &app,
        &t,
        json!({"user": "ada", "service": "private_access", "duration": "1h",
               "justification": "approved by the CISO", "overrides_exclusions": true}),
    )
    .await;
    assert_eq!(
        overriding.status,
        StatusCode::CREATED,
        "{:?}",
        overriding.body
    );
    let on = sync(&app, &token, &device, None, None).await;
    let service = &on.body["services"]["private_access"];
    assert_eq!(service["enabled"], true, "{service}");
    assert_eq!(service["reason"], "temporary_grant", "{service}");
}

on_both_backends!(
    exclusions_win_over_a_grant_unless_it_overrides_them,
    a_grant_reaches_a_held_long_poll_at_its_start_and_leaves_at_its_end,
    revoking_a_grant_early_wakes_held_long_polls,
    a_grant_for_one_device_leaves_the_others_alone,
    grant_fields_are_checked,
);

/// Two nodes on one PostgreSQL database: a grant created through one reaches
/// a long-poll held on the other at its start, and leaves it at its end, by
/// that node's own timer.
#[tokio::test]
async fn a_grant_made_on_one_node_reaches_a_long_poll_held_on_another() {
    let Some(db) = Database::postgres("grant across nodes").await else {
        return;
    };
    let node1 = TestApp::start(&db).await;
    let node2 = TestApp::start(&db).await;
    let (t, token, device) = setup(&node1).await;
    let first = sync(&node2, &token, &device, None, None).await;
    assert_eq!(first.body["services"]["private_access"]["enabled"], false);
    let created = grant(
        &node1,
        &t,
        json!({"user": "ada", "service": "private_access", "starts_at": in_seconds(2),
               "ends_at": in_seconds(5), "justification": "cross-node"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let started = sync(&node2, &token, &device, first.etag.as_deref(), Some(30)).await;
    assert_eq!(
        started.body["services"]["private_access"]["enabled"], true,
        "{:?}",
        started.body
    );
    let ended = sync(&node2, &token, &device, started.etag.as_deref(), Some(30)).await;
    assert_eq!(
        ended.body["services"]["private_access"]["enabled"], false,
        "{:?}",
        ended.body
    );
}
