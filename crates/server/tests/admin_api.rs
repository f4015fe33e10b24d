//! The admin API over HTTP against a real server and a fresh SQLite file.

#[macro_use]
mod common;

use common::{Database, ROOT, TestApp, report, settings};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn tokens_are_required_and_checked(db: Database) {
    let app = TestApp::start(&db).await;
    let none = app
        .call(Method::GET, "/api/v1/tenants", None, None, &[])
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["code"], "unauthorized");
    assert!(
        none.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Bearer"))
    );
    let forged = app.get("/api/v1/tenants", "not-a-token").await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.get("/api/v1/tenants", ROOT).await.status,
        StatusCode::OK
    );
}

async fn tenants_are_created_once_with_secrets_shown_once(db: Database) {
    let app = TestApp::start(&db).await;
    let created = app
        .post(
            "/api/v1/tenants",
            ROOT,
            json!({"name": "acme", "created_at": "2016-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    for field in ["id", "name", "created_at", "enrollment_key", "scim_token"] {
        assert!(
            created.body[field].is_string(),
            "{field} missing: {}",
            created.body
        );
    }
    let read = app.get("/api/v1/tenants/acme", ROOT).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(read.body.get("enrollment_key").is_none() && read.body.get("scim_token").is_none());
    // A tenant created before 2017-07-01 keeps ZPA on for everyone.
    let zpa = app
        .get("/api/v1/tenants/acme/entitlements/private_access", ROOT)
        .await;
    assert_eq!(zpa.body["enabled_by_default"], true);

    let duplicate = app
        .post("/api/v1/tenants", ROOT, json!({"name": "acme"}))
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    let invalid = app
        .post("/api/v1/tenants", ROOT, json!({"name": "Not A Slug"}))
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_time = app
        .post(
            "/api/v1/tenants",
            ROOT,
            json!({"name": "x", "created_at": "yesterday"}),
        )
        .await;
    assert_eq!(bad_time.status, StatusCode::BAD_REQUEST);

    let fresh = app
        .post("/api/v1/tenants", ROOT, json!({"name": "newco"}))
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    let zpa = app
        .get("/api/v1/tenants/newco/entitlements/private_access", ROOT)
        .await;
    assert_eq!(
        zpa.body["enabled_by_default"], false,
        "a new tenant starts with ZPA off"
    );
}

async fn another_tenants_resources_answer_404(db: Database) {
    let app = TestApp::start(&db).await;
    let a = app.tenant("alpha").await;
    let b = app.tenant("beta").await;
    let group_b = b.group(&app, "Secret", &[]).await;
    b.user(&app, "bob@beta.test", &[&group_b]).await;
    let (device_b, _, _) = b
        .enroll(
            &app,
            "bob@beta.test",
            report("bob-pc", "windows", "4.0", "corporate", true),
        )
        .await;

    for path in [
        "/api/v1/tenants/beta".to_owned(),
        format!("/api/v1/tenants/{}", b.id),
        "/api/v1/tenants/beta/groups".to_owned(),
        format!("/api/v1/tenants/beta/groups/{group_b}"),
        "/api/v1/tenants/beta/entitlements".to_owned(),
        "/api/v1/tenants/beta/devices".to_owned(),
        format!("/api/v1/tenants/beta/devices/{device_b}"),
        "/api/v1/tenants/beta/audit".to_owned(),
        "/api/v1/tenants/nonexistent".to_owned(),
    ] {
        let answer = app.get(&path, &a.admin).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {:?}",
            answer.body
        );
        assert_eq!(
            answer.body["error"]["message"], "tenant not found",
            "{path}"
        );
    }
    // Through its own tenant path, another tenant's ids are unknown too.
    let cross = app
        .get(&a.path(&format!("/devices/{device_b}")), &a.admin)
        .await;
    assert_eq!(cross.status, StatusCode::NOT_FOUND);
    let cross_save = app
        .put(
            &a.path("/entitlements/private_access"),
            &a.admin,
            settings(false, &[&group_b], &[]),
            None,
        )
        .await;
    assert_eq!(cross_save.status, StatusCode::UNPROCESSABLE_ENTITY);
    let write = app
        .put(
            "/api/v1/tenants/beta/entitlements/private_access",
            &a.admin,
            settings(true, &[], &[]),
            None,
        )
        .await;
    assert_eq!(write.status, StatusCode::NOT_FOUND);
    let listed = app.get("/api/v1/tenants", &a.admin).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.post("/api/v1/tenants", &a.admin, json!({"name": "gamma"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

async fn viewers_read_but_cannot_change_anything(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let (viewer, _) = t.token(&app, "auditor", "viewer").await;
    let read = app
        .get(&t.path("/entitlements/internet_access"), &viewer)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let etag = read.etag.expect("etag");

    let save = app
        .put(
            &t.path("/entitlements/internet_access"),
            &viewer,
            settings(false, &[], &[]),
            Some(&etag),
        )
        .await;
    assert_eq!(save.status, StatusCode::FORBIDDEN);
    assert_eq!(save.body["error"]["code"], "forbidden");
    assert_eq!(
        app.post(&t.path("/groups"), &viewer, json!({"display_name": "x"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post(
            &t.path("/tokens"),
            &viewer,
            json!({"name": "x", "role": "admin"})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let after = app
        .get(&t.path("/entitlements/internet_access"), &viewer)
        .await;
    assert_eq!(after.body, read.body, "a refused save changes nothing");
    assert_eq!(after.etag.as_deref(), Some(etag.as_str()));
    let bad_role = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "x", "role": "super_admin"}),
        )
        .await;
    assert_eq!(bad_role.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn saves_follow_the_spec_rules(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    let path = t.path("/entitlements/private_access");

    let current = app.get(&path, &t.admin).await;
    let etag = current.etag.clone().expect("etag");
    assert_eq!(current.body, settings(false, &[], &[]));

    // Groups while Enabled by Default is on: 422 with the way out in the message.
    let on_with_groups = app
        .put(&path, &t.admin, settings(true, &[&eng], &[]), Some(&etag))
        .await;
    assert_eq!(on_with_groups.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        on_with_groups.body["error"]["code"],
        "groups_while_enabled_by_default"
    );
    assert!(
        on_with_groups.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("off first"))
    );

    let unknown = app
        .put(
            &path,
            &t.admin,
            settings(false, &["no-such-group"], &[]),
            Some(&etag),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        unknown.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-group"))
    );

    let malformed = app
        .call(Method::PUT, &path, Some(&t.admin), None, &[])
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let raw = app
        .client
        .put(format!("{}{path}", app.base))
        .bearer_auth(&t.admin)
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let typo = app
        .put(&path, &t.admin, json!({"enabled_by_defualt": true}), None)
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    let unknown_service = app
        .put(
            &t.path("/entitlements/vpn"),
            &t.admin,
            settings(false, &[], &[]),
            None,
        )
        .await;
    assert_eq!(unknown_service.status, StatusCode::NOT_FOUND);

    let saved = app
        .put(&path, &t.admin, settings(false, &[&eng], &[]), Some(&etag))
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);
    let new_etag = saved.etag.expect("new etag");
    assert_ne!(new_etag, etag);

    // The first save won; a second save with the old ETag is stale and changes nothing.
    let stale = app
        .put(&path, &t.admin, settings(true, &[&eng], &[]), Some(&etag))
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let bogus = app
        .put(
            &path,
            &t.admin,
            settings(true, &[&eng], &[]),
            Some("\"garbage\""),
        )
        .await;
    assert_eq!(bogus.status, StatusCode::PRECONDITION_FAILED);
    let now = app.get(&path, &t.admin).await;
    assert_eq!(now.body, settings(false, &[&eng], &[]));
    assert_eq!(now.etag.as_deref(), Some(new_etag.as_str()));

    // Keeping the groups while turning the toggle on is allowed; they stay stored.
    let on = app
        .put(
            &path,
            &t.admin,
            settings(true, &[&eng], &[]),
            Some(&new_etag),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK);
    assert_eq!(on.body["user_groups"], json!([eng]));

    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    let items = history.body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["config_version"], 2);
    assert_eq!(items[1]["after"], settings(false, &[&eng], &[]));
    assert_eq!(items[1]["actor"], "token admin");
    assert_eq!(items[1]["principal"]["kind"], "api_token");
    assert_eq!(items[1]["principal"]["name"], "admin");

    let rolled = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": 1}),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{:?}", rolled.body);
    assert_eq!(rolled.body["config_version"], 3);
    assert_eq!(
        app.get(&path, &t.admin).await.body,
        settings(false, &[&eng], &[])
    );
    let missing = app
        .post(
            &t.path("/entitlements/rollback"),
            &t.admin,
            json!({"config_version": 99}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let all = app.get(&t.path("/entitlements"), &t.admin).await;
    assert_eq!(all.body["config_version"], 3);
    assert_eq!(
        all.body["services"]["private_access"],
        settings(false, &[&eng], &[])
    );
    let audit = app.get(&t.path("/audit"), &t.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions.iter().filter(|a| **a == "entitlement.save").count(),
        2
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "entitlement.rollback")
            .count(),
        1
    );
}

async fn groups_search_and_paginate(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let platform = t.group(&app, "Platform", &[]).await;
    t.group(&app, "Engineering", &[&platform]).await;
    for index in 0..5 {
        t.group(&app, &format!("Team {index}"), &[]).await;
    }
    let dup = app
        .post(
            &t.path("/groups"),
            &t.admin,
            json!({"display_name": "platform"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let search = app.get(&t.path("/groups?search=ENG"), &t.admin).await;
    assert_eq!(search.body["items"][0]["display_name"], "Engineering");
    assert_eq!(search.body["items"][0]["member_count"], 1);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => t.path(&format!("/groups?limit=3&cursor={c}")),
            None => t.path("/groups?limit=3"),
        };
        let page = app.get(&path, &t.admin).await;
        for item in page.body["items"].as_array().cloned().unwrap_or_default() {
            seen.push(item["display_name"].as_str().unwrap_or_default().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        [
            "Engineering",
            "Platform",
            "Team 0",
            "Team 1",
            "Team 2",
            "Team 3",
            "Team 4"
        ]
    );
    let bad_limit = app.get(&t.path("/groups?limit=lots"), &t.admin).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
}

async fn device_groups_are_validated_and_counted(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    t.enroll(
        &app,
        "ada",
        report("ada-mbp", "macos", "4.0", "corporate", true),
    )
    .await;
    t.enroll(
        &app,
        "ada",
        report("ada-phone", "ios", "4.0", "personal", false),
    )
    .await;
    let body = json!({"name": "Encrypted Macs", "os": ["macos"], "ownership": [], "posture": [{"key": "disk_encrypted", "op": "eq", "value": true}, {"key": "os_version", "op": "gte", "value": "14"}]});
    let created = app
        .post(&t.path("/device-groups"), &t.admin, body.clone())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["matching_devices"], 1);
    assert_eq!(
        app.post(&t.path("/device-groups"), &t.admin, body)
            .await
            .status,
        StatusCode::CONFLICT
    );
    for bad in [
        json!({"name": "x", "os": ["beos"]}),
        json!({"name": "x", "ownership": ["borrowed"]}),
        json!({"name": "x", "posture": [{"key": "os_version", "op": "gte", "value": "latest"}]}),
        json!({"name": "x", "posture": [{"key": "k", "op": "lt", "value": "1"}]}),
        json!({"name": " "}),
    ] {
        let answer = app
            .post(&t.path("/device-groups"), &t.admin, bad.clone())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {:?}",
            answer.body
        );
    }
    let id = created.body["id"].as_str().expect("id");
    let updated = app
        .put(
            &t.path(&format!("/device-groups/{id}")),
            &t.admin,
            json!({"name": "Any Mac", "os": ["macos"]}),
            None,
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK);
    assert_eq!(updated.body["matching_devices"], 1);
    let listed = app.get(&t.path("/device-groups"), &t.admin).await;
    assert_eq!(listed.body["items"][0]["name"], "Any Mac");
}

async fn preview_shows_who_gains_and_loses_without_saving(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    t.user(&app, "bob", &[]).await;
    t.enroll(
        &app,
        "ada",
        report("ada-mbp", "macos", "4.0", "corporate", true),
    )
    .await;
    t.enroll(
        &app,
        "bob",
        report("bob-pc", "windows", "4.0", "corporate", true),
    )
    .await;
    t.enroll(
        &app,
        "bob",
        report("bob-old", "windows", "1.2.3", "corporate", true),
    )
    .await;
    let preview = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            settings(false, &[&eng], &[]),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    assert_eq!(preview.body["gaining"]["devices"], 1);
    assert_eq!(preview.body["gaining"]["users"], 1);
    assert_eq!(preview.body["gaining"]["sample"], json!(["ada on ada-mbp"]));
    assert_eq!(preview.body["losing"]["devices"], 0);
    assert_eq!(preview.body["legacy_clients"]["devices"], 1);
    assert_eq!(
        app.get(&t.path("/entitlements/private_access"), &t.admin)
            .await
            .body,
        settings(false, &[], &[])
    );
    let unknown = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            settings(false, &["nope"], &[]),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn operations_endpoints_answer(db: Database) {
    let app = TestApp::start(&db).await;
    assert_eq!(
        app.call(Method::GET, "/healthz", None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, "/readyz", None, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let openapi = app
        .call(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(openapi.status, StatusCode::OK);
    for path in [
        "/api/v1/tenants",
        "/api/v1/tenants/{tenant}/entitlements/{service}",
        "/agent/v1/sync",
    ] {
        assert!(
            openapi.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    app.get("/api/v1/tenants", ROOT).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("entitle_http_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/tenants\""), "{metrics}");
    assert!(metrics.contains("entitle_held_long_polls"), "{metrics}");
    if cfg!(target_os = "linux") {
        // The process figures `entitle fleet` reads: this test process's own.
        let resident: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("entitle_process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .expect("resident memory");
        assert!(resident > 1024.0 * 1024.0, "{metrics}");
        assert!(
            metrics.contains("entitle_process_cpu_seconds "),
            "{metrics}"
        );
    }
}

async fn a_restart_on_the_same_database_loses_nothing(db: Database) {
    let mut app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    let (device, token, _) = t
        .enroll(
            &app,
            "ada",
            report("ada-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let etag = t
        .save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let before = app
        .get(&t.path(&format!("/devices/{device}")), &t.admin)
        .await;
    app.stop().await;

    let app = TestApp::start(&db).await;
    let settings_now = app
        .get(&t.path("/entitlements/private_access"), &t.admin)
        .await;
    assert_eq!(
        settings_now.status,
        StatusCode::OK,
        "the admin token survived"
    );
    assert_eq!(settings_now.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(settings_now.body, settings(false, &[&eng], &[]));
    let after = app
        .get(&t.path(&format!("/devices/{device}")), &t.admin)
        .await;
    assert_eq!(after.body["entitlements"], before.body["entitlements"]);
    let synced = common::sync(
        &app,
        &token,
        &report("ada-mbp", "macos", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(synced.status, StatusCode::OK, "the device token survived");
    assert_eq!(synced.body["services"]["private_access"]["enabled"], true);
    let history = app.get(&t.path("/entitlements/history"), &t.admin).await;
    assert_eq!(history.body["items"].as_array().map(Vec::len), Some(1));
}

on_both_backends!(
    a_restart_on_the_same_database_loses_nothing,
    tokens_are_required_and_checked,
    tenants_are_created_once_with_secrets_shown_once,
    another_tenants_resources_answer_404,
    viewers_read_but_cannot_change_anything,
    saves_follow_the_spec_rules,
    groups_search_and_paginate,
    device_groups_are_validated_and_counted,
    preview_shows_who_gains_and_loses_without_saving,
    operations_endpoints_answer,
);

async fn concurrent_saves_with_if_match_have_one_winner_per_round(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let path = t.path("/entitlements/digital_experience");
    const CLIENTS: usize = 50;
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let start = app.get(&path, &t.admin).await;
        let etag = start.etag.expect("etag");
        // A client whose settings equal the stored ones saves a no-op: 200
        // without a new version when it goes first, 412 after the winner.
        let unchanged = |client: usize| {
            start.body["enabled_by_default"] == client.is_multiple_of(2)
                && start.body["logout_on_enable"] == client.is_multiple_of(3)
        };
        let mut saves = Vec::new();
        for client in 0..CLIENTS {
            let (base, http, token, path, etag) = (
                app.base.clone(),
                app.client.clone(),
                t.admin.clone(),
                path.clone(),
                etag.clone(),
            );
            saves.push(tokio::spawn(async move {
                let body = json!({"enabled_by_default": client % 2 == 0, "logout_on_enable": client % 3 == 0});
                let response = http.put(format!("{base}{path}")).bearer_auth(token).header("If-Match", etag).json(&body).send().await.expect("sent");
                (response.status(), client)
            }));
        }
        let mut winners = Vec::new();
        for save in saves {
            let (status, client) = save.await.expect("task");
            match status {
                StatusCode::OK if unchanged(client) => {}
                StatusCode::OK => winners.push(client),
                StatusCode::PRECONDITION_FAILED => {}
                other => panic!("round {round}: unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = app.get(&path, &t.admin).await.body;
        let winner = winners[0];
        assert_eq!(
            stored["enabled_by_default"],
            winner % 2 == 0,
            "round {round}: the winner's save is the one stored"
        );
        assert_eq!(stored["logout_on_enable"], winner % 3 == 0);
    }
    let history = app
        .get(&t.path("/entitlements/history?limit=200"), &t.admin)
        .await;
    let versions: Vec<i64> = history.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["config_version"].as_i64())
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<i64> = (1..=ROUNDS as i64).rev().collect();
    assert_eq!(versions, expected, "no gaps, no duplicates, no lost update");
}

on_both_backends!(concurrent_saves_with_if_match_have_one_winner_per_round);

async fn portal_sessions_need_csrf_and_wrong_passwords_slow_an_account_down(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let created = app
        .post(&t.path("/accounts"), &t.admin, json!({"email": "Admin@Acme.test", "password": "correct horse battery", "role": "admin"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let weak = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "x@acme.test", "password": "short", "role": "admin"}),
        )
        .await;
    assert_eq!(weak.status, StatusCode::UNPROCESSABLE_ENTITY);
    let duplicate = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "admin@acme.test", "password": "another long one", "role": "viewer"}),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);

    let login = |password: &'static str| {
        let (client, base) = (app.client.clone(), app.base.clone());
        async move {
            client
                .post(format!("{base}/portal/login"))
                .json(&json!({"email": "admin@acme.test", "password": password}))
                .send()
                .await
                .expect("sent")
        }
    };
    let signed_in = login("correct horse battery").await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();

    // The session reads; a change needs the CSRF token that the pages carry.
    let page = app
        .client
        .get(format!("{}/t/acme/entitlements/private_access", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    let csrf = html
        .split("\"csrf\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_owned();
    let read = app
        .client
        .get(format!("{}{}", app.base, t.path("/entitlements")))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(read.status(), StatusCode::OK);
    let url = format!("{}{}", app.base, t.path("/entitlements/internet_access"));
    let body = json!({"enabled_by_default": true});
    let without = app
        .client
        .put(&url)
        .header("cookie", &session)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let with = app
        .client
        .put(&url)
        .header("cookie", &session)
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(with.status(), StatusCode::OK);
    let audit = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    assert_eq!(
        audit.body["items"][0]["actor"], "Admin@Acme.test",
        "the person is the actor"
    );
    assert_eq!(audit.body["items"][0]["principal"]["kind"], "account");

    // Sign-out ends the session.
    let out = app
        .client
        .post(format!("{}/portal/logout", app.base))
        .header("cookie", &session)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("sent");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = app
        .client
        .get(format!("{}{}", app.base, t.path("/entitlements")))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    let redirected = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/t/acme/devices", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent");
    assert_eq!(redirected.status(), StatusCode::SEE_OTHER);

    // A cross-site form cannot sign a browser in: the body must be JSON.
    let form = app
        .client
        .post(format!("{}/portal/login", app.base))
        .header("content-type", "text/plain")
        .body(r#"{"email": "admin@acme.test", "password": "correct horse battery"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Five wrong passwords in a row, then even the right one waits.
    for attempt in 0..5 {
        assert_eq!(
            login("wrong password!").await.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let slowed = login("correct horse battery").await;
    assert_eq!(slowed.status(), StatusCode::TOO_MANY_REQUESTS);
    let unknown = app
        .client
        .post(format!("{}/portal/login", app.base))
        .json(&json!({"email": "nobody@acme.test", "password": "whatever it is"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
}

on_both_backends!(portal_sessions_need_csrf_and_wrong_passwords_slow_an_account_down);
