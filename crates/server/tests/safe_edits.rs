//! Safe entitlement edits over HTTP on both back ends: a saved no-op writes
//! nothing, a stale save answers what it needs to merge, history names deleted
//! groups and pages by cursor, and a restore never brings back a deleted group
//! silently.

#[macro_use]
mod common;

use common::{Database, TestApp, settings};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    a_saved_no_op_writes_nothing,
    a_stale_save_answers_the_current_settings_and_who_saved_them,
    history_pages_by_cursor_and_names_deleted_groups,
    a_restore_that_names_a_deleted_group_is_refused_or_done_without_it,
);

async fn counts(app: &TestApp, t: &common::Tenant) -> (usize, usize, i64) {
    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    let audit = app.get(&t.path("/audit?limit=200"), &t.admin).await;
    let all = app.get(&t.path("/entitlements"), &t.admin).await;
    (
        history.body["items"].as_array().map_or(0, Vec::len),
        audit.body["items"].as_array().map_or(0, Vec::len),
        all.body["config_version"].as_i64().expect("config version"),
    )
}

async fn a_saved_no_op_writes_nothing(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let path = t.path("/entitlements/private_access");
    let etag = t
        .save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let store = db.open().await;
    let data_version = store.tenant("acme").await.expect("tenant").data_version;
    let before = counts(&app, &t).await;

    // The same settings, with the current ETag, and without If-Match.
    for if_match in [Some(etag.as_str()), None] {
        let again = app
            .put(&path, &t.admin, settings(false, &[&eng], &[]), if_match)
            .await;
        assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
        assert_eq!(
            again.etag.as_deref(),
            Some(etag.as_str()),
            "the unchanged version"
        );
        assert_eq!(again.body["user_groups"], json!([eng]));
    }
    assert_eq!(counts(&app, &t).await, before, "no version, no audit entry");
    assert_eq!(
        store.tenant("acme").await.expect("tenant").data_version,
        data_version,
        "no data-version bump, so held long-polls stay asleep"
    );

    // A stale no-op is still stale: the caller's view is out of date.
    let changed = app
        .put(&path, &t.admin, settings(false, &[], &[]), Some(&etag))
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    let stale = app
        .put(&path, &t.admin, settings(false, &[], &[]), Some(&etag))
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);

    // A rollback to settings equal to the current ones is a no-op too.
    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    let newest = history.body["items"][0]["config_version"]
        .as_i64()
        .expect("version");
    let before = counts(&app, &t).await;
    let rollback = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": newest}),
        )
        .await;
    assert_eq!(rollback.status, StatusCode::OK, "{:?}", rollback.body);
    assert_eq!(rollback.body["config_version"], json!(before.2));
    assert_eq!(rollback.body["changed"], json!(false));
    assert_eq!(counts(&app, &t).await, before);
}

async fn a_stale_save_answers_the_current_settings_and_who_saved_them(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let finance = t.group(&app, "Finance", &[]).await;
    let mobile = t.group(&app, "Mobile", &[]).await;
    let path = t.path("/entitlements/private_access");
    let read = app.get(&path, &t.admin).await;
    let base = read.etag.expect("etag");

    // A adds Finance; B, with the form A also loaded, adds Mobile.
    let a = app
        .put(
            &path,
            &t.admin,
            settings(false, &[&finance], &[]),
            Some(&base),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let b = app
        .put(
            &path,
            &t.admin,
            settings(false, &[&mobile], &[]),
            Some(&base),
        )
        .await;
    assert_eq!(b.status, StatusCode::PRECONDITION_FAILED, "{:?}", b.body);
    assert_eq!(b.body["error"]["code"], "stale_version");
    let current = &b.body["current"];
    assert_eq!(current["settings"]["user_groups"], json!([finance]));
    assert_eq!(current["settings"]["enabled_by_default"], json!(false));
    assert_eq!(current["etag"].as_str(), a.etag.as_deref());
    assert_eq!(b.etag, a.etag, "the ETag header names the current version");
    assert_eq!(
        Some(format!("\"{}\"", current["version"])),
        a.etag,
        "version and ETag agree"
    );
    assert_eq!(current["changed_by"]["kind"], "api_token");
    assert_eq!(current["changed_by"]["name"], "admin");
    assert!(
        current["changed_at"]
            .as_str()
            .is_some_and(|at| at.contains('T')),
        "{current}"
    );
    assert_eq!(current["names"][&finance], "Finance");
    // Nothing of B's was saved.
    let now = app.get(&path, &t.admin).await;
    assert_eq!(now.body["user_groups"], json!([finance]));

    // An ETag this server never issued gets the same answer.
    let bogus = app
        .put(
            &path,
            &t.admin,
            settings(false, &[&mobile], &[]),
            Some("\"x\""),
        )
        .await;
    assert_eq!(bogus.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        bogus.body["current"]["settings"]["user_groups"],
        json!([finance])
    );

    // Saving on top of the current version with both groups works.
    let merged = app
        .put(
            &path,
            &t.admin,
            settings(false, &[&finance, &mobile], &[]),
            current["etag"].as_str(),
        )
        .await;
    assert_eq!(merged.status, StatusCode::OK, "{:?}", merged.body);
}

async fn history_pages_by_cursor_and_names_deleted_groups(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let temp = t
        .device_group(
            &app,
            json!({"name": "Temp laptops", "os": ["macos"], "ownership": [], "posture": []}),
        )
        .await;
    t.save(&app, "private_access", settings(false, &[&eng], &[&temp]))
        .await;
    // ZIA starts on, so each of these saves changes it.
    for on in [false, true, false, true] {
        t.save(&app, "internet_access", settings(on, &[], &[]))
            .await;
    }
    let deleted = app
        .call(
            reqwest::Method::DELETE,
            &t.path(&format!("/device-groups/{temp}?force=true")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.body);

    let whole = app.get(&t.path("/entitlements/history"), &t.admin).await;
    let all: Vec<Value> = whole.body["items"].as_array().expect("items").clone();
    assert_eq!(all.len(), 5);
    assert_eq!(whole.body["next_cursor"], Value::Null);
    assert_eq!(whole.body["names"][&temp], "Temp laptops (deleted)");
    assert_eq!(whole.body["names"][&eng], "Engineering");
    assert_eq!(whole.body["deleted"], json!([temp]));

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("&cursor={c}"));
        let page = app
            .get(
                &t.path(&format!("/entitlements/history?limit=2{query}")),
                &t.admin,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        paged.extend(page.body["items"].as_array().expect("items").clone());
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all, "the pages together are the whole history");

    let only = app
        .get(
            &t.path("/entitlements/history?service=private_access&limit=1"),
            &t.admin,
        )
        .await;
    assert_eq!(only.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(only.body["next_cursor"], Value::Null);

    let bad = app
        .get(&t.path("/entitlements/history?cursor=zz"), &t.admin)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.body["error"]["code"], "invalid_cursor");
}

async fn a_restore_that_names_a_deleted_group_is_refused_or_done_without_it(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let temp = t
        .device_group(
            &app,
            json!({"name": "Temp laptops", "os": ["macos"], "ownership": [], "posture": []}),
        )
        .await;
    t.save(&app, "private_access", settings(false, &[&eng], &[&temp]))
        .await;
    t.save(&app, "private_access", settings(false, &[], &[]))
        .await;
    let removed = app
        .call(
            reqwest::Method::DELETE,
            &t.path(&format!("/device-groups/{temp}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert!(removed.status.is_success(), "{:?}", removed.body);
    let before = counts(&app, &t).await;

    let refused = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": 1}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert_eq!(
        refused.body["error"]["code"],
        "restore_selects_deleted_groups"
    );
    let message = refused.body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("device group \"Temp laptops\"") && message.contains("without_deleted"),
        "{message}"
    );
    assert!(!message.contains(&temp), "named, not a bare id: {message}");
    assert_eq!(counts(&app, &t).await, before, "nothing saved");

    let restored = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": 1, "without_deleted": true}),
        )
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(restored.body["settings"]["user_groups"], json!([eng]));
    assert_eq!(restored.body["settings"]["device_groups"], json!([]));
    assert_eq!(restored.body["config_version"], json!(3), "a new version");
    assert_eq!(restored.body["changed"], json!(true));

    // The history and the audit log say which version it restored.
    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    assert_eq!(history.body["items"][0]["config_version"], json!(3));
    assert_eq!(history.body["items"][0]["restored_from"], json!(1));
    assert_eq!(history.body["items"][1]["restored_from"], Value::Null);
    let audit = app.get(&t.path("/audit"), &t.admin).await;
    let entry = audit.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["action"] == "entitlement.rollback"))
        .expect("the rollback is audited");
    assert_eq!(entry["after"]["restored_from"], json!(1), "{entry}");
}
