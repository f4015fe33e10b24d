//! SCIM setup over HTTP, on SQLite and on PostgreSQL: token rotation with a
//! grace period, refused tokens in the recent errors (bounded under a
//! flood), the last use of a token, and the last request the identity
//! provider made.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Database, Tenant, TestApp};
use entitle_store::{Actor, secrets};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ENTRA: &str = "Microsoft.Identity.Provisioning/1.0 (+https://aka.ms/scim)";
const OKTA: &str = "Okta SCIM Client 1.0.0";

/// A SCIM request with a bearer token (or none) and a user agent.
async fn scim(app: &TestApp, t: &Tenant, token: Option<&str>, path: &str, agent: &str) -> Value {
    scim_at(app, &t.name, token, path, agent).await.1
}

async fn scim_at(
    app: &TestApp,
    tenant: &str,
    token: Option<&str>,
    path: &str,
    agent: &str,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .get(format!("{}/scim/v2/{tenant}{path}", app.base))
        .header("User-Agent", agent);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, json!({"status": status.as_u16(), "body": body}))
}

async fn status_of(app: &TestApp, t: &Tenant, token: &str) -> u16 {
    scim(app, t, Some(token), "/Users", ENTRA).await["status"]
        .as_u64()
        .map_or(0, |s| s as u16)
}

async fn setup(app: &TestApp, t: &Tenant, token: &str) -> Value {
    let answer = app.get(&t.path("/scim-setup"), token).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// The recent errors whose detail starts with `prefix`.
fn errors_starting(setup: &Value, prefix: &str) -> Vec<Value> {
    setup["recent_errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter(|e| e["detail"].as_str().is_some_and(|d| d.starts_with(prefix)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Past the once-a-second limit on remembered refusals.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn viewer(app: &TestApp, t: &Tenant) -> String {
    let created = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": "viewer", "role": "viewer"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    created.body["token"].as_str().expect("token").to_owned()
}

async fn a_rotation_keeps_the_old_token_for_its_grace_period(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    assert_eq!(status_of(&app, &t, &t.scim_token).await, 200);
    let before = setup(&app, &t, &t.admin).await;
    assert_eq!(before["tokens"][0]["status"], "current");
    assert!(
        before["tokens"][0]["last_used_at"].is_string(),
        "the last use is recorded: {before}"
    );

    // An empty POST, as before grace periods existed: 24 hours by default.
    let rotated = app
        .call(
            Method::POST,
            &t.path("/scim-token"),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new_token = rotated.body["scim_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(rotated.body["scim_base_path"], "/scim/v2/acme");
    assert_eq!(rotated.body["previous"]["status"], "grace");
    let left = rotated.body["previous"]["grace_seconds_left"]
        .as_i64()
        .expect("seconds left");
    assert!((86_000..=86_400).contains(&left), "{left}");
    // Both work during the grace period.
    assert_eq!(status_of(&app, &t, &t.scim_token).await, 200);
    assert_eq!(status_of(&app, &t, &new_token).await, 200);
    let during = setup(&app, &t, &t.admin).await;
    let statuses: Vec<&str> = during["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t["status"].as_str())
        .collect();
    assert_eq!(statuses, ["current", "grace"]);
    assert!(during["tokens"][0]["last_used_at"].is_string());
    assert!(
        !during.to_string().contains(&new_token) && !during.to_string().contains(&t.scim_token),
        "no secret in the setup data"
    );

    // The grace period ends (set through the store: 1 ms for the token used
    // last, which is the new one; the older one ends at once).
    let store = db.open().await;
    store
        .rotate_scim_token_with_grace(
            &t.id,
            &secrets::hash_secret("third-token"),
            time::Duration::milliseconds(1),
            &Actor::system(),
        )
        .await
        .expect("rotated");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = scim(&app, &t, Some(&new_token), "/Users", ENTRA).await;
    assert_eq!(expired["status"], 401, "{expired}");
    assert!(
        expired["body"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("grace period ended")),
        "{expired}"
    );
    let after = setup(&app, &t, &t.admin).await;
    let reported = errors_starting(&after, "expired old token");
    assert_eq!(reported.len(), 1, "{after}");
    assert_eq!(reported[0]["status"], 401);
    assert_eq!(reported[0]["request"], "GET /scim/v2/acme/Users");
    next_second().await;
    let revoked = scim(&app, &t, Some(&t.scim_token), "/Users", ENTRA).await;
    assert_eq!(revoked["status"], 401);
    let after = setup(&app, &t, &t.admin).await;
    assert_eq!(errors_starting(&after, "revoked token").len(), 1, "{after}");
    assert_eq!(status_of(&app, &t, "third-token").await, 200);

    // A grace period of 0 ends the old token now; out-of-range or unknown
    // fields are refused before anything changes.
    let now = app
        .post(
            &t.path("/scim-token"),
            &t.admin,
            json!({"grace_period_hours": 0}),
        )
        .await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.body);
    assert!(now.body["previous"].is_null());
    assert_eq!(now.body["ended"].as_array().map(Vec::len), Some(1));
    assert_eq!(status_of(&app, &t, "third-token").await, 401);
    for (body, status) in [
        (json!({"grace_period_hours": 169}), 422),
        (json!({"grace_period_hours": -1}), 400),
        (json!({"grace_period_hours": "24"}), 400),
        (json!({"grace": 1}), 400),
    ] {
        let refused = app.post(&t.path("/scim-token"), &t.admin, body).await;
        assert_eq!(refused.status.as_u16(), status, "{}", refused.body);
    }
    let viewer = viewer(&app, &t).await;
    let refused = app.post(&t.path("/scim-token"), &viewer, json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // Audited by who rotated, with the grace chosen.
    let audit = app
        .get(&t.path("/audit?action=scim_token.rotate"), &t.admin)
        .await;
    let graces: Vec<i64> = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["after"]["grace_period_seconds"].as_i64())
        .collect();
    assert!(
        graces.contains(&86_400) && graces.contains(&0),
        "{graces:?}"
    );
}

async fn a_replaced_token_is_revoked_by_hand(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let rotated = app
        .post(
            &t.path("/scim-token"),
            &t.admin,
            json!({"grace_period_hours": 4}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let current = rotated.body["token"]["id"].as_str().expect("id").to_owned();
    let previous = rotated.body["previous"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = |id: &str| t.path(&format!("/scim-tokens/{id}"));
    let viewer = viewer(&app, &t).await;
    let listed = app.get(&t.path("/scim-tokens"), &viewer).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(2));
    let refused = app
        .call(Method::DELETE, &path(&previous), Some(&viewer), None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let refused = app
        .call(Method::DELETE, &path(&current), Some(&t.admin), None, &[])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    let revoked = app
        .call(Method::DELETE, &path(&previous), Some(&t.admin), None, &[])
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.body["status"], "revoked");
    assert_eq!(status_of(&app, &t, &t.scim_token).await, 401);
    let unknown = app
        .call(Method::DELETE, &path("nope"), Some(&t.admin), None, &[])
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let other = app.tenant("globex").await;
    let foreign = app
        .call(
            Method::DELETE,
            &other.path(&format!("/scim-tokens/{previous}")),
            Some(&other.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
}

async fn refused_tokens_are_recent_errors_and_a_flood_stays_bounded(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let other = app.tenant("globex").await;

    let none = scim(&app, &t, None, "/Users", ENTRA).await;
    assert_eq!(none["status"], 401);
    let seen = setup(&app, &t, &t.admin).await;
    assert_eq!(errors_starting(&seen, "no bearer token").len(), 1, "{seen}");
    next_second().await;
    let wrong = "ent_scim_not-a-real-token-1234567890";
    assert_eq!(status_of(&app, &t, wrong).await, 401);
    next_second().await;
    // Another tenant's token is an unknown token here, and says nothing of it.
    assert_eq!(status_of(&app, &t, &other.scim_token).await, 401);
    let seen = setup(&app, &t, &t.admin).await;
    let unknown = errors_starting(&seen, "unknown token");
    assert_eq!(unknown.len(), 2, "{seen}");
    let text = seen.to_string();
    assert!(!text.contains(wrong) && !text.contains(&other.scim_token) && !text.contains("globex"));
    assert!(
        setup(&app, &other, &other.admin).await["recent_errors"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the token's own tenant hears nothing"
    );

    // A flood of bad tokens: at most one refusal a second is remembered, in
    // a ring of 20, and a tenant that does not exist remembers nothing.
    let before = seen["recent_errors"].as_array().map_or(0, Vec::len);
    next_second().await;
    let started = Instant::now();
    let mut statuses = std::collections::BTreeSet::new();
    for i in 0..300 {
        let token = format!("flood-{i}");
        let (status, _) = scim_at(&app, "acme", Some(&token), "/Users", ENTRA).await;
        statuses.insert(status.as_u16());
        let (status, _) = scim_at(&app, "no-such-tenant", Some(&token), "/Users", ENTRA).await;
        statuses.insert(status.as_u16());
    }
    let elapsed = started.elapsed().as_secs() as usize;
    assert_eq!(
        statuses,
        [401, 429].into_iter().collect(),
        "refused, then limited"
    );
    let flooded = setup(&app, &t, &t.admin).await;
    let errors = flooded["recent_errors"].as_array().expect("errors").len();
    assert!(errors <= 20, "{errors}");
    let remembered = errors - before;
    assert!(
        remembered >= 1 && remembered <= elapsed + 2,
        "{remembered} remembered in {elapsed} s: {flooded}"
    );
    // Never two refusals remembered within a second of each other.
    let mut times: Vec<time::OffsetDateTime> = flooded["recent_errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["at"].as_str())
        .filter_map(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .collect();
    times.sort();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= time::Duration::milliseconds(990),
            "{:?} then {:?}: {flooded}",
            pair[0],
            pair[1]
        );
    }
    assert!(!flooded.to_string().contains("flood-"), "never the token");
    // A valid token still passes from the flooding address.
    assert_eq!(status_of(&app, &t, &t.scim_token).await, 200);
}

async fn the_last_request_names_the_identity_provider(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let viewer = viewer(&app, &t).await;
    let first = setup(&app, &t, &viewer).await;
    assert!(first["last_request"].is_null());
    assert_eq!(first["scim_base_path"], "/scim/v2/acme");
    assert!(first["scim_base_url"].is_null(), "no --public-url");
    let check = app.get(&t.path("/scim-setup/check"), &viewer).await;
    assert_eq!(check.status, StatusCode::OK, "{}", check.body);
    assert_eq!(check.body["ok"], true, "{}", check.body);
    let idp_step = |check: &Value| {
        check["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "Identity provider").cloned())
            .expect("an identity provider step")
    };
    assert_eq!(idp_step(&check.body)["ok"], false);

    let reply = scim(
        &app,
        &t,
        Some(&t.scim_token),
        "/Users?filter=userName%20eq%20%22ada%40acme.example%22",
        ENTRA,
    )
    .await;
    assert_eq!(reply["status"], 200);
    let seen = setup(&app, &t, &viewer).await;
    let last = &seen["last_request"];
    assert_eq!(last["method"], "GET");
    assert_eq!(last["path"], "/scim/v2/acme/Users", "no query string");
    assert_eq!(last["status"], 200);
    assert_eq!(last["user_agent"], ENTRA);
    assert_eq!(last["identity_provider"], "Microsoft Entra ID");

    // Okta's read of an unknown user is a 404, and the last request says so.
    let reply = scim(&app, &t, Some(&t.scim_token), "/Users/nobody", OKTA).await;
    assert_eq!(reply["status"], 404);
    let last = setup(&app, &t, &t.admin).await["last_request"].clone();
    assert_eq!(
        (last["status"].clone(), last["identity_provider"].clone()),
        (json!(404), json!("Okta"))
    );
    // A refused token is not a request of the identity provider's.
    assert_eq!(status_of(&app, &t, "wrong").await, 401);
    let last = setup(&app, &t, &t.admin).await["last_request"].clone();
    assert_eq!(last["identity_provider"], "Okta");
    let check = app.get(&t.path("/scim-setup/check"), &t.admin).await;
    assert_eq!(
        idp_step(&check.body)["ok"],
        false,
        "the last answer was a 404"
    );
    scim(
        &app,
        &t,
        Some(&t.scim_token),
        "/ServiceProviderConfig",
        ENTRA,
    )
    .await;
    let check = app.get(&t.path("/scim-setup/check"), &t.admin).await;
    assert_eq!(idp_step(&check.body)["ok"], true, "{}", check.body);
    assert!(
        idp_step(&check.body)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Microsoft Entra ID")),
        "{}",
        check.body
    );
}

async fn a_public_url_makes_the_base_url_absolute(db: Database) {
    let config = entitle_server::ServerConfig {
        public_url: Some("https://entitle.example.com/".into()),
        ..entitle_server::ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;
    assert_eq!(
        setup(&app, &t, &t.admin).await["scim_base_url"],
        "https://entitle.example.com/scim/v2/acme"
    );
}

on_both_backends!(
    a_rotation_keeps_the_old_token_for_its_grace_period,
    a_replaced_token_is_revoked_by_hand,
    refused_tokens_are_recent_errors_and_a_flood_stays_bounded,
    the_last_request_names_the_identity_provider,
    a_public_url_makes_the_base_url_absolute,
);
