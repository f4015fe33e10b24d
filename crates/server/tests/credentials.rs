//! Credentials have a lifecycle (issue 10, finding 7): API tokens are listed
//! without secrets, expire and are revoked at once; portal accounts are
//! disabled, change passwords and lose their sessions; emails are unique per
//! tenant only. Every scenario runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use common::{Database, ROOT, Tenant, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn token(app: &TestApp, t: &Tenant, body: Value) -> Value {
    let created = app.post(&t.path("/tokens"), &t.admin, body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn revoked_tokens_answer_401_at_once(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let ci = token(
        &app,
        &t,
        json!({"name": "ci", "role": "admin", "expires_in_days": 30}),
    )
    .await;
    let secret = ci["token"].as_str().expect("token").to_owned();
    let id = ci["id"].as_str().expect("id").to_owned();
    assert!(ci["expires_at"].is_string(), "{ci:?}");
    assert_eq!(app.get(&t.path(""), &secret).await.status, StatusCode::OK);

    // The listing names every token, with its last use, and no secret.
    let listed = app.get(&t.path("/tokens"), &t.admin).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let text = listed.body.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&t.admin),
        "{text}"
    );
    let items = listed.body["items"].as_array().expect("items");
    let entry = items
        .iter()
        .find(|i| i["id"] == id.as_str())
        .expect("listed");
    assert_eq!(entry["name"], "ci");
    assert_eq!(entry["status"], "active");
    assert_eq!(
        entry["created_by"], "token admin",
        "the token that created it"
    );
    assert!(
        entry["last_used_at"].is_string(),
        "last use recorded: {entry:?}"
    );
    assert!(entry.get("token").is_none() && entry.get("token_hash").is_none());

    let revoked = app
        .call(
            Method::DELETE,
            &t.path(&format!("/tokens/{id}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked");
    let refused = app.get(&t.path(""), &secret).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        message(&refused.body).contains("revoked"),
        "{:?}",
        refused.body
    );

    let audit = app.get(&t.path("/audit"), &t.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"token.create") && actions.contains(&"token.revoke"),
        "{actions:?}"
    );
}

async fn expired_tokens_answer_401(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatted");
    let short = token(
        &app,
        &t,
        json!({"name": "short", "role": "viewer", "expires_at": soon}),
    )
    .await;
    let secret = short["token"].as_str().expect("token").to_owned();
    assert_eq!(app.get(&t.path(""), &secret).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let refused = app.get(&t.path(""), &secret).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        message(&refused.body).contains("expired"),
        "{:?}",
        refused.body
    );
    let listed = app.get(&t.path("/tokens"), &t.admin).await;
    assert!(
        listed.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["name"] == "short" && i["status"] == "expired"),
        "{:?}",
        listed.body
    );
    for bad in [
        json!({"name": "x", "role": "admin", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "role": "admin", "expires_at": "tomorrow"}),
        json!({"name": "x", "role": "admin", "expires_in_days": 0}),
        json!({"name": "x", "role": "admin", "expires_in_days": 3, "expires_at": soon}),
    ] {
        let answer = app.post(&t.path("/tokens"), &t.admin, bad.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {:?}",
            answer.body
        );
    }
}

async fn tokens_are_scoped_and_admin_only(db: Database) {
    let app = TestApp::start(&db).await;
    let a = app.tenant("acme").await;
    let b = app.tenant("beta").await;
    let viewer = token(&app, &a, json!({"name": "v", "role": "viewer"})).await;
    let viewer = viewer["token"].as_str().expect("token").to_owned();
    let target = token(&app, &a, json!({"name": "t", "role": "admin"})).await;
    let id = target["id"].as_str().expect("id").to_owned();
    let account = app
        .post(
            &a.path("/accounts"),
            &a.admin,
            json!({"email": "p@acme.test", "password": "correct horse battery", "role": "admin"}),
        )
        .await;
    let account_id = account.body["id"].as_str().expect("account id").to_owned();

    // Viewers can neither see nor change credentials.
    let forbidden = [
        (Method::GET, a.path("/tokens"), None),
        (
            Method::POST,
            a.path("/tokens"),
            Some(json!({"name": "x", "role": "viewer"})),
        ),
        (Method::DELETE, a.path(&format!("/tokens/{id}")), None),
        (Method::GET, a.path("/accounts"), None),
        (
            Method::POST,
            a.path("/accounts"),
            Some(
                json!({"email": "x@acme.test", "password": "correct horse battery", "role": "viewer"}),
            ),
        ),
        (
            Method::PATCH,
            a.path(&format!("/accounts/{account_id}")),
            Some(json!({"disabled": true})),
        ),
        (
            Method::POST,
            a.path(&format!("/accounts/{account_id}/password")),
            Some(json!({"password": "another long password"})),
        ),
        (
            Method::DELETE,
            a.path(&format!("/accounts/{account_id}/sessions")),
            None,
        ),
        (Method::GET, "/api/v1/tokens".to_owned(), None),
    ];
    for (method, path, body) in forbidden {
        let answer = app
            .call(method.clone(), &path, Some(&viewer), body, &[])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            answer.body
        );
    }
    // A tenant admin is no super admin.
    let answer = app.get("/api/v1/tokens", &a.admin).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    // Another tenant's token or account is 404, through either tenant's path.
    for path in [
        a.path(&format!("/tokens/{id}")),
        b.path(&format!("/tokens/{id}")),
        b.path(&format!("/accounts/{account_id}/sessions")),
    ] {
        let answer = app
            .call(Method::DELETE, &path, Some(&b.admin), None, &[])
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {:?}",
            answer.body
        );
    }
    let answer = app
        .call(
            Method::PATCH,
            &b.path(&format!("/accounts/{account_id}")),
            Some(&b.admin),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let still = app
        .get(&a.path(""), target["token"].as_str().expect("token"))
        .await;
    assert_eq!(still.status, StatusCode::OK, "the token still works");

    // Super admins list, create and revoke super admin tokens.
    let listed = app.get("/api/v1/tokens", ROOT).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        listed.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["role"] == "super_admin")
    );
    let created = app
        .post(
            "/api/v1/tokens",
            ROOT,
            json!({"name": "rotation", "expires_in_days": 1}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let root2 = created.body["token"].as_str().expect("token").to_owned();
    assert_eq!(
        app.get("/api/v1/tenants", &root2).await.status,
        StatusCode::OK
    );
    let id2 = created.body["id"].as_str().expect("id");
    let revoked = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id2}"),
            Some(ROOT),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/tenants", &root2).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The last working super admin token cannot be revoked.
    let listed = app.get("/api/v1/tokens", ROOT).await;
    let root_id = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["name"] == "root")
        .and_then(|i| i["id"].as_str())
        .expect("root token listed")
        .to_owned();
    let last = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{root_id}"),
            Some(ROOT),
            None,
            &[],
        )
        .await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{:?}", last.body);
    assert_eq!(
        app.get("/api/v1/tenants", ROOT).await.status,
        StatusCode::OK
    );
}

/// Signs in; returns the session cookie pair, or the refusal status.
async fn sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
) -> Result<(String, String), StatusCode> {
    let answer = app
        .client
        .post(format!("{}/portal/login", app.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sent");
    if answer.status() != StatusCode::OK {
        return Err(answer.status());
    }
    let cookie = answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let body: Value = answer.json().await.expect("json");
    Ok((
        cookie,
        body["redirect"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn with_session(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> StatusCode {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("cookie", cookie);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("sent").status()
}

async fn csrf(app: &TestApp, cookie: &str) -> String {
    let html = app
        .client
        .get(format!("{}/t/acme/entitlements/private_access", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    html.split("\"csrf\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_owned()
}

async fn disabled_accounts_cannot_sign_in_and_lose_sessions(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "Person@Acme.test", "password": "correct horse battery", "role": "viewer"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let (cookie, _) = sign_in(&app, "person@acme.test", "correct horse battery")
        .await
        .expect("signed in");
    assert_eq!(
        with_session(&app, Method::GET, &t.path(""), &cookie, None, None).await,
        StatusCode::OK
    );

    let listed = app.get(&t.path("/accounts"), &t.admin).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        !listed.body.to_string().contains("argon2"),
        "{:?}",
        listed.body
    );
    assert_eq!(listed.body["items"][0]["email"], "Person@Acme.test");

    let disabled = app
        .call(
            Method::PATCH,
            &t.path(&format!("/accounts/{id}")),
            Some(&t.admin),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    assert_eq!(disabled.body["disabled"], true);
    assert_eq!(
        with_session(&app, Method::GET, &t.path(""), &cookie, None, None).await,
        StatusCode::UNAUTHORIZED,
        "the session stops working at once"
    );
    assert_eq!(
        sign_in(&app, "person@acme.test", "correct horse battery")
            .await
            .err(),
        Some(StatusCode::UNAUTHORIZED)
    );

    let enabled = app
        .call(
            Method::PATCH,
            &t.path(&format!("/accounts/{id}")),
            Some(&t.admin),
            Some(json!({"disabled": false, "role": "admin"})),
            &[],
        )
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    assert_eq!(enabled.body["role"], "admin");
    let (cookie, _) = sign_in(&app, "person@acme.test", "correct horse battery")
        .await
        .expect("signed in again");

    // Changing your own password needs the current one and keeps you signed in.
    let csrf = csrf(&app, &cookie).await;
    let path = t.path(&format!("/accounts/{id}/password"));
    let wrong = with_session(
        &app,
        Method::POST,
        &path,
        &cookie,
        Some(&csrf),
        Some(json!({"password": "a brand new passphrase", "current_password": "not it at all"})),
    )
    .await;
    assert_eq!(wrong, StatusCode::FORBIDDEN);
    let missing = with_session(
        &app,
        Method::POST,
        &path,
        &cookie,
        Some(&csrf),
        Some(json!({"password": "a brand new passphrase"})),
    )
    .await;
    assert_eq!(missing, StatusCode::FORBIDDEN);
    let changed = with_session(&app, Method::POST, &path, &cookie, Some(&csrf), Some(json!({"password": "a brand new passphrase", "current_password": "correct horse battery"}))).await;
    assert_eq!(changed, StatusCode::NO_CONTENT);
    assert_eq!(
        with_session(&app, Method::GET, &t.path(""), &cookie, None, None).await,
        StatusCode::OK
    );
    assert!(
        sign_in(&app, "person@acme.test", "correct horse battery")
            .await
            .is_err()
    );
    let (second, _) = sign_in(&app, "person@acme.test", "a brand new passphrase")
        .await
        .expect("new password");

    // Passwords have a minimum and a maximum length.
    for bad in ["short pass", &"x".repeat(1025)] {
        let answer = app.post(&path, &t.admin, json!({"password": bad})).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], "invalid_password");
    }

    // An admin ends every session of the account.
    let ended = app
        .call(
            Method::DELETE,
            &t.path(&format!("/accounts/{id}/sessions")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{:?}", ended.body);
    assert_eq!(ended.body["ended"], 2);
    for cookie in [&cookie, &second] {
        assert_eq!(
            with_session(&app, Method::GET, &t.path(""), cookie, None, None).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // An admin's reset also ends sessions.
    let (third, _) = sign_in(&app, "person@acme.test", "a brand new passphrase")
        .await
        .expect("signed in");
    let reset = app
        .post(&path, &t.admin, json!({"password": "reset by the admin"}))
        .await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT, "{:?}", reset.body);
    assert_eq!(
        with_session(&app, Method::GET, &t.path(""), &third, None, None).await,
        StatusCode::UNAUTHORIZED
    );

    let audit = app.get(&t.path("/audit"), &t.admin).await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "account.create",
        "account.disable",
        "account.enable",
        "account.role",
        "account.password",
        "account.sessions_end",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

async fn emails_are_unique_per_tenant_not_across(db: Database) {
    let app = TestApp::start(&db).await;
    let a = app.tenant("acme").await;
    let b = app.tenant("beta").await;
    let create = |t: &Tenant, email: &str, password: &str| {
        let (path, admin) = (t.path("/accounts"), t.admin.clone());
        let body = json!({"email": email, "password": password, "role": "admin"});
        let app = &app;
        async move { app.post(&path, &admin, body).await }
    };
    let in_a = create(&a, "admin@example.com", "the password of acme").await;
    assert_eq!(in_a.status, StatusCode::CREATED, "{:?}", in_a.body);
    let in_b = create(&b, "Admin@Example.com", "the password of beta").await;
    assert_eq!(
        in_b.status,
        StatusCode::CREATED,
        "another tenant's email is not taken: {:?}",
        in_b.body
    );
    let only_b = create(&b, "only-beta@example.com", "the password of beta").await;
    assert_eq!(only_b.status, StatusCode::CREATED);
    let squat = create(&a, "only-beta@example.com", "squatting the email").await;
    assert_eq!(
        squat.status,
        StatusCode::CREATED,
        "no 409 that reveals beta's accounts"
    );
    let duplicate = create(&a, "ADMIN@example.com", "a second one in acme").await;
    assert_eq!(
        duplicate.status,
        StatusCode::CONFLICT,
        "{:?}",
        duplicate.body
    );
    assert!(!duplicate.body.to_string().contains("beta"));

    // Sign-in takes the account whose password verifies.
    let (_, to_a) = sign_in(&app, "admin@example.com", "the password of acme")
        .await
        .expect("acme");
    assert!(to_a.starts_with("/t/acme/"), "{to_a}");
    let (_, to_b) = sign_in(&app, "admin@example.com", "the password of beta")
        .await
        .expect("beta");
    assert!(to_b.starts_with("/t/beta/"), "{to_b}");
    assert!(
        sign_in(&app, "admin@example.com", "neither of them!")
            .await
            .is_err()
    );
}

on_both_backends!(
    revoked_tokens_answer_401_at_once,
    expired_tokens_answer_401,
    tokens_are_scoped_and_admin_only,
    disabled_accounts_cannot_sign_in_and_lose_sessions,
    emails_are_unique_per_tenant_not_across,
);
