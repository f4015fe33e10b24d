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

    let refused = s.app.delete(&path, &s.t.admin).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "group_in_use");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("Temp laptops") && message.contains("Private Applications"),
        "{message}"
    );

    let forced = s
        .app
        .delete(&format!("{path}?force=true"), &s.t.admin)
        .await;
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

/// Deleting a group nested inside an excluded group would give its members
/// what the exclusion keeps from them: refused with 409 unless forced.
async fn a_group_nested_in_an_excluded_group_is_not_deleted_unasked(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eu = t.group(&app, "Contractors EU", &[]).await;
    let contractors = t.group(&app, "Contractors", &[&eu]).await;
    t.user(&app, "bob", &[&eu]).await;
    let mut zpa = settings(true, &[], &[]);
    zpa["exclude_user_groups"] = json!([contractors]);
    t.save(&app, "private_access", zpa).await;
    let (_, token, policy) = t
        .enroll(
            &app,
            "bob",
            report("bob-pc", "windows", "4.0", "corporate", true),
        )
        .await;
    assert_eq!(policy["services"]["private_access"]["enabled"], false);

    let path = t.path(&format!("/groups/{eu}"));
    let refused = app.delete(&path, &t.admin).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
    assert_eq!(refused.body["error"]["code"], "group_in_excluded_group");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("\"Contractors\"") && message.contains("Private"),
        "{message}"
    );
    let device = report("bob-pc", "windows", "4.0", "corporate", true);
    let still = sync(&app, &token, &device, None, None).await;
    assert_eq!(still.body["services"]["private_access"]["enabled"], false);

    // Forced, the administrator has been told what it does.
    let forced = app.delete(&format!("{path}?force=true"), &t.admin).await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    let after = sync(&app, &token, &device, None, None).await;
    assert_eq!(after.body["services"]["private_access"]["enabled"], true);
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

async fn enroll_with(app: &TestApp, key: &str, hostname: &str, ownership: &str) -> common::Answer {
    app.post(
        "/agent/v1/enroll",
        "",
        json!({"enrollment_key": key, "user_name": "ada",
               "device": report(hostname, "macos", "4.0", ownership, true)}),
    )
    .await
}

async fn ownership_comes_from_the_key_not_the_device(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    let corporate = t
        .device_group(
            &app,
            json!({"name": "Corporate", "os": [], "ownership": ["corporate"], "posture": []}),
        )
        .await;
    t.save(
        &app,
        "private_access",
        settings(false, &[&eng], &[&corporate]),
    )
    .await;
    let created = app
        .post(
            &t.path("/enrollment-keys"),
            &t.admin,
            json!({"name": "BYOD", "ownership": "personal", "max_uses": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let key = created.body["enrollment_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key_id = created.body["id"].as_str().unwrap_or_default().to_owned();

    // Before, a user reporting "corporate" received Private Applications.
    let enrolled = enroll_with(&app, &key, "my-own-mac", "corporate").await;
    assert_eq!(enrolled.status, StatusCode::CREATED, "{:?}", enrolled.body);
    let zpa = &enrolled.body["policy"]["services"]["private_access"];
    assert_eq!(zpa["enabled"], false, "{zpa}");
    let id = enrolled.body["device_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let device = app.get(&t.path(&format!("/devices/{id}")), &t.admin).await;
    assert_eq!(device.body["ownership"], "personal");
    assert_eq!(device.body["reported_ownership"], "corporate");
    assert_eq!(device.body["ownership_attested_by"], "enrollment_key");
    assert_eq!(device.body["ownership_conflict"], true);

    // The key was for one device only, and a revoked key opens nothing.
    let second = enroll_with(&app, &key, "another", "personal").await;
    assert_eq!(second.status, StatusCode::UNAUTHORIZED, "{:?}", second.body);
    let revoked = app
        .call(
            Method::DELETE,
            &t.path(&format!("/enrollment-keys/{key_id}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.body["usable"], false);
    let listed = app.get(&t.path("/enrollment-keys"), &t.admin).await;
    assert!(
        !listed.body.to_string().contains(&key),
        "the list never shows the secret"
    );

    // An administrator can attest otherwise; the device then gets the service.
    let attested = t.attest(&app, &id, "corporate").await;
    assert_eq!(attested.body["ownership_attested_by"], "admin");
    assert_eq!(
        attested.body["entitlements"]["private_access"]["enabled"],
        true
    );
    let audit = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    assert_eq!(audit.body["items"][0]["action"], "device.attest_ownership");
}

/// The tenant's own enrollment key, once leaked in an install script, can be
/// replaced: the old key enrolls nothing more, enrolled devices keep syncing,
/// only an administrator may do it, and the audit says so without the key.
async fn the_tenant_enrollment_key_can_be_rotated(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let before = enroll_with(&app, &t.enrollment_key, "ada-mbp", "corporate").await;
    assert_eq!(before.status, StatusCode::CREATED, "{:?}", before.body);
    let device_token = before.body["device_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let (viewer, _) = t.token(&app, "auditor", "viewer").await;
    let path = t.path("/enrollment-key/rotate");
    let refused = app.post(&path, &viewer, json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);

    let rotated = app.post(&path, &t.admin, json!({})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_key = rotated.body["enrollment_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        new_key.starts_with("ent_enroll") && new_key != t.enrollment_key,
        "{new_key}"
    );
    let audit = last_audit(&app, &t).await;
    assert_eq!(audit["action"], "tenant.enrollment_key.rotate", "{audit}");
    assert_eq!(audit["principal"]["kind"], "api_token", "{audit}");
    let text = audit.to_string();
    assert!(
        !text.contains(&new_key) && !text.contains(&t.enrollment_key),
        "{text}"
    );

    let old = enroll_with(&app, &t.enrollment_key, "stranger", "corporate").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{:?}", old.body);
    let new = enroll_with(&app, &new_key, "ada-phone", "personal").await;
    assert_eq!(new.status, StatusCode::CREATED, "{:?}", new.body);
    let still = sync(
        &app,
        &device_token,
        &report("ada-mbp", "macos", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(still.status, StatusCode::OK, "{:?}", still.body);
}

async fn approval_mode_holds_new_devices(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    t.user(&app, "ada", &[&eng]).await;
    t.save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let on = app
        .call(
            Method::PUT,
            &t.path("/device-approval"),
            Some(&t.admin),
            Some(json!({"device_approval": true})),
            &[],
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{:?}", on.body);
    let (id, token, policy) = t
        .enroll(
            &app,
            "ada",
            report("ada-mbp", "macos", "4.0", "corporate", true),
        )
        .await;
    let zpa = &policy["services"]["private_access"];
    assert_eq!(zpa["enabled"], false, "{zpa}");
    assert_eq!(zpa["reason"], "pending_approval");
    // What is on for everyone stays on.
    assert_eq!(policy["services"]["internet_access"]["enabled"], true);

    let viewer = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "v", "role": "viewer"}),
        )
        .await;
    let viewer = viewer.body["token"].as_str().unwrap_or_default().to_owned();
    let refused = app
        .post(&t.path("/devices/approve"), &viewer, json!({"ids": [id]}))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let approved = app
        .post(
            &t.path("/devices/approve"),
            &t.admin,
            json!({"ids": [id, "00000000-0000-0000-0000-000000000000"]}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{:?}", approved.body);
    assert_eq!(approved.body["approved"], json!([id]));
    assert_eq!(approved.body["not_found"].as_array().map(Vec::len), Some(1));
    let after = sync(
        &app,
        &token,
        &report("ada-mbp", "macos", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(after.body["services"]["private_access"]["enabled"], true);
    // Approving it again changes nothing and records nothing.
    let before = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    let again = app
        .post(&t.path("/devices/approve"), &t.admin, json!({"ids": [id]}))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let after = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    assert_eq!(before.body["items"][0], after.body["items"][0]);
}

async fn a_report_that_moves_a_device_is_audited(db: Database) {
    let s = scenario(&db).await;
    // The laptop turns into something that is no longer macOS: it leaves Temp laptops.
    let moved = sync(
        &s.app,
        &s.laptop_token,
        &report("ada-mbp", "windows", "4.0", "corporate", true),
        None,
        None,
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK);
    let audit = s.app.get(&s.t.path("/audit?limit=1"), &s.t.admin).await;
    let entry = &audit.body["items"][0];
    assert_eq!(entry["action"], "device.groups_changed", "{entry}");
    assert_eq!(entry["principal"]["kind"], "device");
    assert_eq!(entry["before"]["device_groups"], json!(["Temp laptops"]));
    assert_eq!(entry["after"]["device_groups"], json!([]));
}

/// A failed sign-in is audited in every tenant whose account it was tried
/// against, and an anonymous caller cannot grow the log without bound: an
/// email or password no account can have is refused before any work, and an
/// address refused for failing too often writes no more rows.
async fn anonymous_sign_in_failures_are_bounded_and_audited_where_they_aimed(db: Database) {
    let app = TestApp::start(&db).await;
    let acme = app.tenant("acme").await;
    let beta = app.tenant("beta").await;
    for (t, password) in [
        (&acme, "acme's long password"),
        (&beta, "beta's long password"),
    ] {
        let created = app
            .post(
                &t.path("/accounts"),
                &t.admin,
                json!({"email": "cfo@shared.test", "password": password, "role": "admin"}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }
    let login = |email: String, password: String| {
        let (client, base) = (app.client.clone(), app.base.clone());
        async move {
            let answer = client
                .post(format!("{base}/portal/login"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .expect("sent");
            let status = answer.status();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let failures = |t: &common::Tenant| {
        let path = t.path("/audit?action=sign_in.failure&limit=100");
        let (app, admin) = (&app, t.admin.clone());
        async move {
            let audit = app.get(&path, &admin).await;
            audit.body["items"].as_array().map_or(0, Vec::len)
        }
    };
    let (status, _) = login("cfo@shared.test".into(), "a guess".into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!((failures(&acme).await, failures(&beta).await), (1, 1));

    for (email, password) in [
        (
            format!("{}@evil.example", "x".repeat(300)),
            "a guess".to_owned(),
        ),
        ("cfo@shared.test".to_owned(), "p".repeat(1025)),
    ] {
        let (status, body) = login(email, password).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["code"], "invalid_sign_in");
    }

    // Five accounts, five guesses each: the address is refused after its
    // twentieth failure, and writes no row after it.
    for index in 0..5 {
        let created = app
            .post(
                &acme.path("/accounts"),
                &acme.admin,
                json!({"email": format!("a{index}@acme.test"), "password": "a long password", "role": "viewer"}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }
    let mut statuses = Vec::new();
    for index in 0..5 {
        for _ in 0..5 {
            statuses.push(
                login(format!("a{index}@acme.test"), "a guess".into())
                    .await
                    .0,
            );
        }
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(refused >= 5, "{statuses:?}");
    let rows = failures(&acme).await;
    assert!(
        rows <= 21 && rows + refused == 26,
        "{rows} rows, {statuses:?}"
    );
}

async fn sign_ins_and_sign_outs_are_audited(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "grace@acme.test", "password": "correct horse battery", "role": "admin"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let login = |password: &'static str| {
        let (client, base) = (app.client.clone(), app.base.clone());
        async move {
            client
                .post(format!("{base}/portal/login"))
                .json(&json!({"email": "grace@acme.test", "password": password}))
                .send()
                .await
                .expect("sent")
        }
    };
    assert_eq!(
        login("not the password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let signed_in = login("correct horse battery").await;
    assert_eq!(signed_in.status(), StatusCode::OK);
    let audit = app.get(&t.path("/audit?limit=5"), &t.admin).await;
    let entries: Vec<(String, String)> = audit.body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    (
                        e["action"].as_str().unwrap_or_default().to_owned(),
                        e["principal"]["kind"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        entries.contains(&("sign_in.success".to_owned(), "account".to_owned())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("sign_in.failure".to_owned(), "anonymous".to_owned())),
        "{entries:?}"
    );
}

async fn scim(
    app: &TestApp,
    t: &common::Tenant,
    method: Method,
    path: &str,
    body: Value,
) -> common::Answer {
    app.call(
        method,
        &format!("/scim/v2/{}{path}", t.name),
        Some(&t.scim_token),
        Some(body),
        &[],
    )
    .await
}

async fn last_audit(app: &TestApp, t: &common::Tenant) -> Value {
    let audit = app.get(&t.path("/audit?limit=1"), &t.admin).await;
    audit.body["items"][0].clone()
}

async fn directory_changes_are_audited_with_before_and_after(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let user_schema = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
    let created = scim(
        &app,
        &t,
        Method::POST,
        "/Users",
        json!({"schemas": user_schema, "userName": "ada", "displayName": "Ada"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let ada = created.body["id"].as_str().unwrap_or_default().to_owned();
    let patch = |ops: Value| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});

    let renamed = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/Users/{ada}"),
        patch(json!([{"op": "replace", "value": {"userName": "ada.l", "displayName": "Ada L."}}])),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
    let entry = last_audit(&app, &t).await;
    assert_eq!(entry["action"], "user.update", "{entry}");
    assert_eq!(entry["principal"]["kind"], "directory");
    assert_eq!(
        entry["before"],
        json!({"user_name": "ada", "display_name": "Ada"})
    );
    assert_eq!(
        entry["after"],
        json!({"user_name": "ada.l", "display_name": "Ada L."})
    );

    scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/Users/{ada}"),
        patch(json!([{"op": "replace", "value": {"active": false}}])),
    )
    .await;
    let entry = last_audit(&app, &t).await;
    assert_eq!(entry["action"], "user.deactivate", "{entry}");
    assert_eq!(entry["before"], json!({"active": true}));
    assert_eq!(entry["after"], json!({"active": false}));

    let group = scim(
        &app,
        &t,
        Method::POST,
        "/Groups",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Eng"}),
    )
    .await;
    let group = group.body["id"].as_str().unwrap_or_default().to_owned();
    scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/Groups/{group}"),
        patch(json!([{"op": "add", "path": "members", "value": [{"value": ada}]}])),
    )
    .await;
    let entry = last_audit(&app, &t).await;
    assert_eq!(entry["action"], "group.members", "{entry}");
    assert_eq!(entry["after"]["added"], json!([ada]));
    let replaced = scim(&app, &t, Method::PUT, &format!("/Groups/{group}"),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Engineering", "members": []})).await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    let entry = last_audit(&app, &t).await;
    assert_eq!(entry["action"], "group.replace", "{entry}");
    assert_eq!(entry["before"]["display_name"], "Eng");
    assert_eq!(entry["after"]["display_name"], "Engineering");
    assert_eq!(entry["after"]["members"]["removed"], json!([ada]));

    // A request naming more members than one write may carry is refused before
    // the write lock is taken for long.
    let many: Vec<Value> = (0..10_001)
        .map(|n| json!({"value": format!("00000000-0000-4000-8000-{n:012}")}))
        .collect();
    let refused = scim(
        &app,
        &t,
        Method::PATCH,
        &format!("/Groups/{group}"),
        patch(json!([{"op": "add", "path": "members", "value": many}])),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{:?}",
        refused.body
    );
}

on_both_backends!(
    directory_changes_are_audited_with_before_and_after,
    sign_ins_and_sign_outs_are_audited,
    anonymous_sign_in_failures_are_bounded_and_audited_where_they_aimed,
    ownership_comes_from_the_key_not_the_device,
    the_tenant_enrollment_key_can_be_rotated,
    approval_mode_holds_new_devices,
    a_report_that_moves_a_device_is_audited,
);

on_both_backends!(
    deleting_a_selected_device_group_never_widens_access,
    a_group_deleted_by_the_directory_never_widens_access,
    a_group_nested_in_an_excluded_group_is_not_deleted_unasked,
    a_token_cannot_pose_as_the_system,
);

/// Group listings and single groups (device and user) name the services that
/// select them, so that the portal can show it before a deletion.
async fn a_device_group_names_the_entitlements_that_use_it(db: Database) {
    let s = scenario(&db).await;
    let unused =
        s.t.device_group(
            &s.app,
            json!({"name": "Unused", "os": ["linux"], "ownership": [], "posture": []}),
        )
        .await;
    let list = s.app.get(&s.t.path("/device-groups"), &s.t.admin).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let used_by = |id: &str| {
        list.body["items"]
            .as_array()
            .and_then(|items| items.iter().find(|g| g["id"] == id))
            .map(|g| g["used_by"].clone())
    };
    assert_eq!(used_by(&s.temp), Some(json!(["private_access"])));
    assert_eq!(used_by(&unused), Some(json!([])));
    let one = s
        .app
        .get(&s.t.path(&format!("/device-groups/{}", s.temp)), &s.t.admin)
        .await;
    assert_eq!(one.body["used_by"], json!(["private_access"]));

    // User groups too.
    let groups = s.app.get(&s.t.path("/groups"), &s.t.admin).await;
    let eng = groups.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|g| g["id"] == s.eng.as_str()))
        .map(|g| g["used_by"].clone());
    assert_eq!(eng, Some(json!(["private_access"])), "{:?}", groups.body);
    let one = s
        .app
        .get(&s.t.path(&format!("/groups/{}", s.eng)), &s.t.admin)
        .await;
    assert_eq!(one.body["used_by"], json!(["private_access"]));
}

on_both_backends!(a_device_group_names_the_entitlements_that_use_it,);
