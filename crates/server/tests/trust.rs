//! Trust rules (SPEC §11) over HTTP on both back ends: deleted groups fail
//! closed, audit actors are principals, and ownership is attested.

#[macro_use]
mod common;

use common::{Database, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// ZPA for Engineering on "Temp laptops" only; Ada is in Engineering with a
/// corporate laptop in the group and a personal phone outside it.
struct Scenario {
    app: TestApp,
    t: common::Tenant,
    eng: String,
    temp: String,
    phone_token: String,
    laptop_token: String,
}

async fn scenario(db: &Database) -> Scenario {
    let app = TestApp::start(db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    let temp = t
        .device_group(
            &app,
            json!({"name": "Temp laptops", "os": ["macos"], "ownership": [], "posture": []}),
        )
        .await;
    t.save(&app, "private_access", settings(false, &[&eng], &[&temp]))
        .await;
    let (_, laptop_token, laptop) = t
        .enroll(
            &app,
            "ada",
            report("ada-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let (_, phone_token, phone) = t
        .enroll(
            &app,
            "ada",
            report("ada-phone", "ios", "4.0", "personal", false),
        )
        .await;
    assert_eq!(laptop["services"]["private_access"]["enabled"], true);
    assert_eq!(phone["services"]["private_access"]["enabled"], false);
    Scenario {
        app,
        t,
        eng,
        temp,
        phone_token,
        laptop_token,
    }
}

async fn delete(app: &TestApp, token: &str, path: &str) -> common::Answer {
    app.call(Method::DELETE, path, Some(token), None, &[]).await
}

async fn zpa_on(s: &Scenario, token: &str, hostname: &str, os: &str) -> Value {
    let answer = sync(
        &s.app,
        token,
        &report(hostname, os, "4.0", "personal", false),
        None,
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["services"]["private_access"].clone()
}

async fn deleting_a_selected_device_group_never_widens_access(db: Database) {
    let s = scenario(&db).await;
    let path = s.t.path(&format!("/device-groups/{}", s.temp));

    let refused = delete(&s.app, &s.t.admin, &path).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "group_in_use");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("Temp laptops") && message.contains("Private Applications"),
        "{message}"
    );

    let forced = delete(&s.app, &s.t.admin, &format!("{path}?force=true")).await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    assert_eq!(forced.body["still_selected_by"], json!(["private_access"]));
    let zpa = s
        .app
        .get(&s.t.path("/entitlements/private_access"), &s.t.admin)
        .await;
    assert_eq!(
        zpa.body["device_groups"],
        json!([s.temp]),
        "kept as a tombstone"
    );

    // The personal phone does not gain the service; the laptop loses it, and
    // the explanation names the deleted group.
    let phone = zpa_on(&s, &s.phone_token, "ada-phone", "ios").await;
    assert_eq!(phone["enabled"], false, "{phone}");
    let laptop = zpa_on(&s, &s.laptop_token, "ada-mbp", "macos").await;
    assert_eq!(laptop["enabled"], false, "{laptop}");
    assert_eq!(laptop["reason"], "not_in_device_groups");
    let explanation = laptop["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains("Device group \"Temp laptops\" was deleted"),
        "{explanation}"
    );

    // A later save of another field keeps the tombstone.
    let mut keep = settings(false, &[&s.eng], &[&s.temp]);
    keep["logout_on_enable"] = json!(true);
    s.t.save(&s.app, "private_access", keep).await;
    let phone = zpa_on(&s, &s.phone_token, "ada-phone", "ios").await;
    assert_eq!(phone["enabled"], false, "{phone}");

    // The deletion is audited with the principal who made it.
    let audit = s.app.get(&s.t.path("/audit?limit=5"), &s.t.admin).await;
    let entry = audit.body["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|e| e["action"] == "device_group.delete")
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(entry["principal"]["kind"], "api_token", "{entry}");
    assert_eq!(entry["after"]["tombstone_in"], json!(["private_access"]));
}

async fn a_group_deleted_by_the_directory_never_widens_access(db: Database) {
    let s = scenario(&db).await;
    // Engineering arrives from the directory this time.
    let created = s
        .app
        .call(
            Method::POST,
            &format!("/scim/v2/{}/Groups", s.t.name),
            Some(&s.t.scim_token),
            Some(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Contractors"})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let contractors = created.body["id"].as_str().unwrap_or_default().to_owned();
    // ZDX for Contractors on Temp laptops: Ada is not a contractor.
    s.t.save(
        &s.app,
        "digital_experience",
        settings(false, &[&contractors], &[&s.temp]),
    )
    .await;
    let deleted = s
        .app
        .call(
            Method::DELETE,
            &format!("/scim/v2/{}/Groups/{contractors}", s.t.name),
            Some(&s.t.scim_token),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    // Before, the deleted user group vanished from the settings and every user
    // on a Temp laptop gained ZDX.
    let answer = sync(
        &s.app,
        &s.laptop_token,
        &report("ada-mbp", "macos", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    let zdx = &answer.body["services"]["digital_experience"];
    assert_eq!(zdx["enabled"], false, "{zdx}");
    assert!(
        zdx["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("User group \"Contractors\" was deleted")),
        "{zdx}"
    );
    let audit = s.app.get(&s.t.path("/audit?limit=3"), &s.t.admin).await;
    assert_eq!(audit.body["items"][0]["action"], "group.delete");
    assert_eq!(audit.body["items"][0]["principal"]["kind"], "directory");
}

async fn a_token_cannot_pose_as_the_system(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let forged = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "system", "role": "admin"}),
        )
        .await;
    assert_eq!(forged.status, StatusCode::CREATED, "{:?}", forged.body);
    let token = forged.body["token"].as_str().unwrap_or_default().to_owned();
    t.group(&app, "Warm-up", &[]).await;
    let group = app
        .post(
            &t.path("/groups"),
            &token,
            json!({"display_name": "Sneaky"}),
        )
        .await;
    assert_eq!(group.status, StatusCode::CREATED);
    let audit = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], "group.create");
    assert_eq!(entry["principal"]["kind"], "api_token", "{entry}");
    assert_ne!(entry["actor"], "system", "{entry}");
    assert!(
        !entry["principal"]["id"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{entry}"
    );
    // The audit log has no route that edits or deletes it.
    for method in [Method::DELETE, Method::PUT, Method::PATCH, Method::POST] {
        let answer = app
            .call(method.clone(), &t.path("/audit"), Some(&t.admin), None, &[])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} /audit"
        );
    }
}

on_both_backends!(
    deleting_a_selected_device_group_never_widens_access,
    a_group_deleted_by_the_directory_never_widens_access,
    a_token_cannot_pose_as_the_system,
);
