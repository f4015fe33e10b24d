//! Admins and roles (issue 12): invitations (accept, single use, expiry,
//! replacement), role changes and the last-admin rule, disabling, API tokens'
//! last use and revocation, and portal sessions (the list, ending one, and
//! signing out everywhere). Every scenario runs on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use common::{Database, ROOT, Tenant, TestApp};
use entitle_store::{NewInvitation, Role, secrets};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

const PASSWORD: &str = "correct horse battery";

/// A signed-in browser: its session cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
}

/// Signs in; the refusal status otherwise.
async fn sign_in(app: &TestApp, email: &str, password: &str) -> Result<Browser, StatusCode> {
    let answer = app
        .client
        .post(format!("{}/portal/login", app.base))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/140.0 Safari/537.36",
        )
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sent");
    if answer.status() != StatusCode::OK {
        return Err(answer.status());
    }
    let cookie = session_cookie(&answer);
    Ok(browser(app, cookie).await)
}

fn session_cookie(answer: &reqwest::Response) -> String {
    answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned()
}

/// The CSRF token of a session, from the page data of the Admins page.
async fn browser(app: &TestApp, cookie: String) -> Browser {
    let html = page(app, "/t/acme/admins", &cookie).await.1;
    let csrf = html
        .split("\"csrf\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_owned();
    Browser { cookie, csrf }
}

/// A portal page without following redirects: status and body, or the redirect target.
async fn page(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = client
        .get(format!("{}{path}", app.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("sent");
    let status = answer.status();
    let location = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = answer.text().await.expect("text");
    (status, location.unwrap_or(text))
}

/// A call with a session cookie (and its CSRF token for changes).
async fn as_browser(
    app: &TestApp,
    who: &Browser,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> common::Answer {
    let headers = [
        ("cookie", who.cookie.as_str()),
        ("x-csrf-token", who.csrf.as_str()),
    ];
    app.call(method, path, None, body, &headers).await
}

async fn create_account(app: &TestApp, t: &Tenant, email: &str, role: &str) -> String {
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": email, "password": PASSWORD, "role": role}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_owned()
}

async fn invite(app: &TestApp, t: &Tenant, email: &str, role: &str) -> Value {
    let answer = app
        .post(
            &t.path("/invitations"),
            &t.admin,
            json!({"email": email, "role": role}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer.body
}

/// The secret of an invitation's link (after the `#`).
fn secret(invitation: &Value) -> String {
    let path = invitation["invitation_path"].as_str().expect("path");
    let (page, secret) = path.split_once('#').expect("a fragment");
    assert_eq!(page, "/portal/invitation");
    secret.to_owned()
}

async fn portal_post(
    app: &TestApp,
    path: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    let answer = app
        .client
        .post(format!("{}{path}", app.base))
        .json(&body)
        .send()
        .await
        .expect("sent");
    let status = answer.status();
    let cookie = answer
        .headers()
        .get("set-cookie")
        .is_some()
        .then(|| session_cookie(&answer));
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, body, cookie)
}

async fn account(app: &TestApp, t: &Tenant, email: &str) -> Value {
    let listed = app.get(&t.path("/accounts"), &t.admin).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|a| a["email"] == email)
        .cloned()
        .unwrap_or_else(|| panic!("{email} in {:?}", listed.body))
}

async fn audit_actions(app: &TestApp, t: &Tenant) -> Vec<String> {
    let audit = app.get(&t.path("/audit?limit=200"), &t.admin).await;
    audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn invitation_is_accepted_once_and_signs_in(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let invited = invite(&app, &t, "New.Person@Acme.test", "viewer").await;
    assert_eq!(invited["account"]["status"], "invited");
    assert_eq!(invited["account"]["role"], "viewer");
    assert_eq!(invited["replaced"], false);
    assert!(
        invited["invitation_url"].is_null(),
        "no public URL configured"
    );
    let link = secret(&invited);
    assert!(
        !app.get(&t.path("/audit"), &t.admin)
            .await
            .body
            .to_string()
            .contains(&link)
    );

    // The invited account has no usable password.
    for password in ["", "invited$", PASSWORD] {
        assert_eq!(
            sign_in(&app, "new.person@acme.test", password).await.err(),
            Some(StatusCode::UNAUTHORIZED)
        );
    }
    let (status, checked, _) =
        portal_post(&app, "/portal/invitation/check", json!({"token": link})).await;
    assert_eq!(status, StatusCode::OK, "{checked:?}");
    assert_eq!(checked["email"], "New.Person@Acme.test");
    assert_eq!(checked["tenant"], "acme");

    // The password rules of every password.
    let (status, short, _) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": link, "password": "too short"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{short:?}");
    // A form of another site cannot post JSON.
    let form = app
        .client
        .post(format!("{}/portal/invitation", app.base))
        .header("content-type", "text/plain")
        .body(json!({"token": link, "password": PASSWORD}).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, accepted, cookie) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": link, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{accepted:?}");
    assert_eq!(accepted["redirect"], "/t/acme/entitlements/private_access");
    let cookie = cookie.expect("signed in at once");
    let who = browser(&app, cookie).await;
    let me = as_browser(&app, &who, Method::GET, &t.path(""), None).await;
    assert_eq!(me.status, StatusCode::OK);
    let now_active = account(&app, &t, "New.Person@Acme.test").await;
    assert_eq!(now_active["status"], "active");
    assert!(now_active["last_sign_in_at"].is_string(), "{now_active}");
    assert!(now_active["invitation_expires_at"].is_null());
    assert_eq!(now_active["sessions"], 1);

    // Single use.
    let (status, used, _) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": link, "password": "another good password"}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{used:?}");
    assert_eq!(used["error"]["code"], "invitation_used");
    let (status, _, _) =
        portal_post(&app, "/portal/invitation/check", json!({"token": link})).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(
        sign_in(&app, "new.person@acme.test", PASSWORD)
            .await
            .is_ok()
    );
    assert!(
        sign_in(&app, "new.person@acme.test", "another good password")
            .await
            .is_err()
    );

    // An account that exists is not invited again.
    let again = app
        .post(
            &t.path("/invitations"),
            &t.admin,
            json!({"email": "new.person@ACME.test", "role": "admin"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(again.body["error"]["code"], "account_exists");

    let actions = audit_actions(&app, &t).await;
    for action in ["account.invite", "account.invite_accept", "sign_in.success"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

async fn expired_replaced_and_unknown_links_are_refused(db: Database) {
    let config = entitle_server::ServerConfig {
        public_url: Some("https://entitle.acme.test/".into()),
        ..entitle_server::ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;

    // Re-inviting replaces the link (and the role); the old one stops working.
    let first = invite(&app, &t, "late@acme.test", "viewer").await;
    let second = invite(&app, &t, "late@acme.test", "admin").await;
    assert_eq!(second["replaced"], true);
    assert_eq!(second["account"]["role"], "admin");
    assert_eq!(second["account"]["id"], first["account"]["id"]);
    assert_eq!(
        second["invitation_url"].as_str().expect("url"),
        format!(
            "https://entitle.acme.test/portal/invitation#{}",
            secret(&second)
        )
    );
    let (status, old, _) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": secret(&first), "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{old:?}");
    assert_eq!(old["error"]["code"], "invitation_unknown");

    // Unknown and malformed secrets.
    for token in ["ent_invite_0000", "", "../../etc", &"a".repeat(5000)] {
        let (status, body, _) =
            portal_post(&app, "/portal/invitation/check", json!({"token": token})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{token:.20}: {body:?}");
    }
    let (status, _, _) = portal_post(&app, "/portal/invitation/check", json!({"nope": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // An expired link: made through the store with an expiry in the past.
    let store = db.open().await;
    let tenant = store.tenant("acme").await.expect("tenant");
    let expired = secrets::new_secret("ent_invite");
    store
        .invite_account(
            NewInvitation {
                tenant_id: tenant.id.clone(),
                email: "expired@acme.test".into(),
                role: Role::Viewer,
                token_hash: secrets::hash_secret(&expired),
                expires_at: OffsetDateTime::now_utc() - time::Duration::minutes(1),
                placeholder_hash: "invited$test".into(),
            },
            &entitle_store::Actor::system(),
        )
        .await
        .expect("invited");
    for (path, body) in [
        ("/portal/invitation/check", json!({"token": expired})),
        (
            "/portal/invitation",
            json!({"token": expired, "password": PASSWORD}),
        ),
    ] {
        let (status, body, cookie) = portal_post(&app, path, body).await;
        assert_eq!(status, StatusCode::GONE, "{path}: {body:?}");
        assert_eq!(body["error"]["code"], "invitation_expired");
        assert!(cookie.is_none());
    }
    assert_eq!(
        account(&app, &t, "expired@acme.test").await["status"],
        "invited"
    );

    // A disabled invitee's link is withdrawn.
    let id = second["account"]["id"].as_str().expect("id");
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
    assert_eq!(disabled.body["status"], "disabled");
    let (status, withdrawn, _) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": secret(&second), "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{withdrawn:?}");
    assert_eq!(withdrawn["error"]["code"], "invitation_withdrawn");
    let again = app
        .post(
            &t.path("/invitations"),
            &t.admin,
            json!({"email": "late@acme.test", "role": "admin"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["error"]["code"], "account_disabled");
}

async fn invitations_are_validated_and_admin_only(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let other = app.tenant("beta").await;
    let viewer = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "reader", "role": "viewer"}),
        )
        .await
        .body["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let long = format!("{}@acme.test", "a".repeat(250));
    let bad: Vec<(Value, StatusCode)> = vec![
        (
            json!({"email": "no-at-sign", "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a b@acme.test", "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@acme", "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@@acme.test", "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "<a>@acme.test", "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": long, "role": "viewer"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@acme.test", "role": "super_admin"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a@acme.test", "role": "owner"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": "a\u{0}@acme.test", "role": "viewer"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"email": "a@acme.test", "role": "viewer", "password": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"email": "a@acme.test"}), StatusCode::BAD_REQUEST),
    ];
    for (body, expected) in bad {
        let answer = app
            .post(&t.path("/invitations"), &t.admin, body.clone())
            .await;
        assert_eq!(answer.status, expected, "{body}: {:?}", answer.body);
    }
    let refused = app
        .post(
            &t.path("/invitations"),
            &viewer,
            json!({"email": "a@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let elsewhere = app
        .post(
            &t.path("/invitations"),
            &other.admin,
            json!({"email": "a@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.post(
            &t.path("/invitations"),
            "nonsense",
            json!({"email": "a@acme.test", "role": "viewer"})
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let listed = app.get(&t.path("/accounts"), &t.admin).await;
    assert_eq!(listed.body["items"], json!([]), "nothing was created");
}

async fn roles_change_but_the_last_admin_stays(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let ada = create_account(&app, &t, "ada@acme.test", "admin").await;
    let vic = create_account(&app, &t, "vic@acme.test", "viewer").await;
    let patch = |id: &str, body: Value| {
        let path = t.path(&format!("/accounts/{id}"));
        let app = &app;
        let token = t.admin.clone();
        async move {
            app.call(Method::PATCH, &path, Some(&token), Some(body), &[])
                .await
        }
    };

    // Ada is the only admin: neither demoted nor disabled, whoever asks.
    for body in [json!({"role": "viewer"}), json!({"disabled": true})] {
        let refused = patch(&ada, body.clone()).await;
        assert_eq!(
            refused.status,
            StatusCode::CONFLICT,
            "{body}: {:?}",
            refused.body
        );
        assert_eq!(refused.body["error"]["code"], "last_admin");
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("ada@acme.test"),
            "{:?}",
            refused.body
        );
        let by_root = app
            .call(
                Method::PATCH,
                &t.path(&format!("/accounts/{ada}")),
                Some(ROOT),
                Some(body),
                &[],
            )
            .await;
        assert_eq!(by_root.status, StatusCode::CONFLICT);
    }
    // An invited admin cannot sign in yet, so does not count.
    let bea = invite(&app, &t, "bea@acme.test", "admin").await;
    assert_eq!(
        patch(&ada, json!({"role": "viewer"})).await.status,
        StatusCode::CONFLICT
    );

    // A viewer becomes an admin; then Ada may become a viewer.
    let promoted = patch(&vic, json!({"role": "admin"})).await;
    assert_eq!(promoted.status, StatusCode::OK, "{:?}", promoted.body);
    assert_eq!(promoted.body["role"], "admin");
    let demoted = patch(&ada, json!({"role": "viewer"})).await;
    assert_eq!(demoted.status, StatusCode::OK, "{:?}", demoted.body);
    assert_eq!(demoted.body["role"], "viewer");

    // Signed in, nobody demotes or disables themselves.
    let (_, _, cookie) = portal_post(
        &app,
        "/portal/invitation",
        json!({"token": secret(&bea), "password": PASSWORD}),
    )
    .await;
    let bea_browser = browser(&app, cookie.expect("bea signed in")).await;
    let bea_id = bea["account"]["id"].as_str().expect("id");
    for body in [json!({"role": "viewer"}), json!({"disabled": true})] {
        let own = as_browser(
            &app,
            &bea_browser,
            Method::PATCH,
            &t.path(&format!("/accounts/{bea_id}")),
            Some(body),
        )
        .await;
        assert_eq!(own.status, StatusCode::CONFLICT, "{:?}", own.body);
        assert_eq!(own.body["error"]["code"], "own_account");
    }
    // Two admins demoting each other at once: one of them stays.
    let (first, second) = tokio::join!(
        patch(&vic, json!({"role": "viewer"})),
        patch(bea_id, json!({"role": "viewer"}))
    );
    let mut statuses = [first.status, second.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{:?} {:?}",
        first.body,
        second.body
    );
    let admins = app.get(&t.path("/accounts"), &t.admin).await.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|a| a["role"] == "admin" && a["status"] == "active")
        .count();
    assert_eq!(admins, 1);

    // A viewer's session changes nothing.
    let ada_viewer = sign_in(&app, "ada@acme.test", PASSWORD).await.expect("ada");
    let refused = as_browser(
        &app,
        &ada_viewer,
        Method::PATCH,
        &t.path(&format!("/accounts/{vic}")),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let actions = audit_actions(&app, &t).await;
    assert!(actions.iter().any(|a| a == "account.role"), "{actions:?}");
}

async fn disabling_ends_sessions_and_sign_in(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    create_account(&app, &t, "ada@acme.test", "admin").await;
    let vic = create_account(&app, &t, "vic@acme.test", "viewer").await;
    let who = sign_in(&app, "vic@acme.test", PASSWORD)
        .await
        .expect("signed in");
    assert_eq!(
        as_browser(&app, &who, Method::GET, &t.path(""), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(account(&app, &t, "vic@acme.test").await["sessions"], 1);
    let disabled = app
        .call(
            Method::PATCH,
            &t.path(&format!("/accounts/{vic}")),
            Some(&t.admin),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(disabled.body["sessions"], 0);
    assert_eq!(
        as_browser(&app, &who, Method::GET, &t.path(""), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        page(&app, "/t/acme/admins", &who.cookie).await,
        (
            StatusCode::SEE_OTHER,
            "/login?next=%2Ft%2Facme%2Fadmins".to_owned()
        )
    );
    assert_eq!(
        sign_in(&app, "vic@acme.test", PASSWORD).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    let enabled = app
        .call(
            Method::PATCH,
            &t.path(&format!("/accounts/{vic}")),
            Some(&t.admin),
            Some(json!({"disabled": false})),
            &[],
        )
        .await;
    assert_eq!(enabled.body["status"], "active");
    assert!(sign_in(&app, "vic@acme.test", PASSWORD).await.is_ok());
}

async fn tokens_note_their_last_use_and_revoke_at_once(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let created = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "terraform", "role": "viewer", "expires_in_days": 90}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let token = created.body["token"].as_str().expect("token").to_owned();
    let id = created.body["id"].as_str().expect("id").to_owned();
    let find = |body: &Value| {
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|t| t["id"] == id.as_str())
            .cloned()
            .expect("listed")
    };
    let before = find(&app.get(&t.path("/tokens"), &t.admin).await.body);
    assert!(before["last_used_at"].is_null());
    assert!(!before.to_string().contains(&token), "never the secret");
    assert_eq!(app.get(&t.path(""), &token).await.status, StatusCode::OK);
    let after = find(&app.get(&t.path("/tokens"), &t.admin).await.body);
    assert!(after["last_used_at"].is_string(), "{after}");
    assert_eq!(after["status"], "active");
    // Expiry in the past or too far ahead is refused.
    for body in [
        json!({"name": "x", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
        json!({"name": "x", "role": "viewer", "expires_in_days": 0}),
        json!({"name": "x", "role": "viewer", "expires_in_days": 100000}),
    ] {
        let refused = app.post(&t.path("/tokens"), &t.admin, body.clone()).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let revoked = app
        .call(
            Method::DELETE,
            &t.path(&format!("/tokens/{id}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.body["status"], "revoked");
    let refused = app.get(&t.path(""), &token).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        refused.body.to_string().contains("revoked"),
        "{:?}",
        refused.body
    );
}

async fn sessions_are_listed_and_signed_out_everywhere(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    create_account(&app, &t, "ada@acme.test", "admin").await;
    let vic_id = create_account(&app, &t, "vic@acme.test", "viewer").await;
    let laptop = sign_in(&app, "ada@acme.test", PASSWORD).await.expect("ada");
    let phone = sign_in(&app, "ada@acme.test", PASSWORD)
        .await
        .expect("ada again");
    let vic = sign_in(&app, "vic@acme.test", PASSWORD).await.expect("vic");

    let listed = as_browser(&app, &laptop, Method::GET, &t.path("/sessions"), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let items = listed.body["items"].as_array().expect("items").clone();
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    let text = listed.body.to_string();
    assert!(!text.contains(laptop.cookie.split('=').nth(1).expect("secret")));
    assert!(!text.contains(&laptop.csrf));
    assert!(items.iter().all(|s| s["last_seen_at"].is_string()));
    assert!(
        items.iter().all(|s| s["user_agent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Chrome"))),
        "{items:?}"
    );
    assert!(
        items.iter().all(|s| s["address"] == "127.0.0.1"),
        "{items:?}"
    );

    // A viewer sees and ends only their own; a viewer token nothing.
    let own = as_browser(&app, &vic, Method::GET, &t.path("/sessions"), None).await;
    assert_eq!(own.status, StatusCode::OK);
    assert_eq!(own.body["items"].as_array().expect("items").len(), 1);
    assert_eq!(own.body["items"][0]["email"], "vic@acme.test");
    let ada_session = items
        .iter()
        .find(|s| s["email"] == "ada@acme.test")
        .and_then(|s| s["id"].as_str())
        .expect("ada's session");
    let refused = as_browser(
        &app,
        &vic,
        Method::DELETE,
        &t.path(&format!("/sessions/{ada_session}")),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let viewer_token = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "r", "role": "viewer"}),
        )
        .await
        .body["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        app.get(&t.path("/sessions"), &viewer_token).await.status,
        StatusCode::FORBIDDEN
    );
    // Sessions of another tenant are not found from it.
    let beta = app.tenant("beta").await;
    let foreign = app
        .call(
            Method::DELETE,
            &beta.path(&format!("/sessions/{ada_session}")),
            Some(&beta.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&beta.path("/sessions"), &beta.admin).await.body["items"],
        json!([])
    );

    // Sign out everywhere ends both of Ada's sessions, and only hers.
    let everywhere = as_browser(&app, &laptop, Method::DELETE, "/api/v1/me/sessions", None).await;
    assert_eq!(everywhere.status, StatusCode::OK, "{:?}", everywhere.body);
    assert_eq!(everywhere.body["ended"], 2);
    for gone in [&laptop, &phone] {
        assert_eq!(
            as_browser(&app, gone, Method::GET, &t.path(""), None)
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            page(&app, "/t/acme/admins", &gone.cookie).await,
            (
                StatusCode::SEE_OTHER,
                "/login?next=%2Ft%2Facme%2Fadmins".to_owned()
            )
        );
    }
    assert_eq!(
        as_browser(&app, &vic, Method::GET, &t.path(""), None)
            .await
            .status,
        StatusCode::OK
    );
    // A token has no sessions of its own.
    let token_call = app
        .call(
            Method::DELETE,
            "/api/v1/me/sessions",
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(token_call.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Without the CSRF header a session cannot sign out everywhere.
    let forged = app
        .call(
            Method::DELETE,
            "/api/v1/me/sessions",
            None,
            None,
            &[("cookie", vic.cookie.as_str())],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // An admin ends one session of someone else.
    let vic_session = app.get(&t.path("/sessions"), &t.admin).await.body["items"][0]["id"]
        .as_str()
        .expect("vic's session")
        .to_owned();
    let ended = app
        .call(
            Method::DELETE,
            &t.path(&format!("/sessions/{vic_session}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT, "{:?}", ended.body);
    assert_eq!(
        as_browser(&app, &vic, Method::GET, &t.path(""), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let again = app
        .call(
            Method::DELETE,
            &t.path(&format!("/sessions/{vic_session}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        account(&app, &t, "vic@acme.test").await["id"],
        vic_id.as_str()
    );
    let actions = audit_actions(&app, &t).await;
    for action in ["session.revoke", "account.sessions_end"] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

async fn the_admins_page_shows_viewers_no_actions(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    create_account(&app, &t, "ada@acme.test", "admin").await;
    create_account(&app, &t, "vic@acme.test", "viewer").await;
    let ada = sign_in(&app, "ada@acme.test", PASSWORD).await.expect("ada");
    let vic = sign_in(&app, "vic@acme.test", PASSWORD).await.expect("vic");
    let (status, admin_page) = page(&app, "/t/acme/admins", &ada.cookie).await;
    assert_eq!(status, StatusCode::OK);
    for part in [
        "id=\"invite-form\"",
        "id=\"token-form\"",
        "vic@acme.test",
        "href=\"/t/acme/admins\"",
    ] {
        assert!(admin_page.contains(part), "{part}");
    }
    let (status, viewer_page) = page(&app, "/t/acme/admins", &vic.cookie).await;
    assert_eq!(status, StatusCode::OK);
    for absent in ["invite-form", "token-form", "ada@acme.test", "\"tokens\":["] {
        assert!(!viewer_page.contains(absent), "{absent} shown to a viewer");
    }
    assert!(viewer_page.contains("id=\"viewer-note\""));
    let (status, invitation) = page(&app, "/portal/invitation", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(invitation.contains("/portal/assets/invitation.js"));
}

on_both_backends!(
    invitation_is_accepted_once_and_signs_in,
    expired_replaced_and_unknown_links_are_refused,
    invitations_are_validated_and_admin_only,
    roles_change_but_the_last_admin_stays,
    disabling_ends_sessions_and_sign_in,
    tokens_note_their_last_use_and_revoke_at_once,
    sessions_are_listed_and_signed_out_everywhere,
    the_admins_page_shows_viewers_no_actions,
);
