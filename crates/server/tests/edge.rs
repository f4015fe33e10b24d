//! The HTTP edge under attack: the failure limiter behind a proxy, control
//! characters, the order of checks, limits, headers, and connections that
//! idle, stall or crowd.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, ROOT, Tenant, TestApp, report};
use entitle_server::{ServerConfig, TrustedProxies};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn behind_loopback_proxy() -> ServerConfig {
    ServerConfig {
        trusted_proxies: TrustedProxies::new(vec![
            TrustedProxies::parse_network("127.0.0.0/8").expect("network"),
        ]),
        ..ServerConfig::default()
    }
}

/// Behind a trusted proxy, one forwarded client's guesses limit that client
/// only, and never a valid token.
#[tokio::test]
async fn a_guesser_behind_the_proxy_locks_out_only_itself() {
    let db = Database::sqlite();
    let app = TestApp::start_with(&db, behind_loopback_proxy()).await;
    let t = app.tenant("acme").await;
    let guesser = [("X-Forwarded-For", "6.6.6.6, 198.51.100.7")];
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let answer = app
            .call(Method::GET, &t.path(""), Some("garbage"), None, &guesser)
            .await;
        statuses.push(answer.status);
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
    // The same forwarded address with a valid token passes.
    let admin = app
        .call(Method::GET, &t.path(""), Some(&t.admin), None, &guesser)
        .await;
    assert_eq!(admin.status, StatusCode::OK, "{:?}", admin.body);
    // Another client behind the same proxy is not limited.
    let other = app
        .call(
            Method::GET,
            &t.path(""),
            Some("garbage"),
            None,
            &[("X-Forwarded-For", "198.51.100.8")],
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    // Nor are SCIM clients, enrolling devices and admins without the header.
    let scim = app
        .call(
            Method::GET,
            &format!("/scim/v2/{}/Users", t.name),
            Some(&t.scim_token),
            None,
            &guesser,
        )
        .await;
    assert_eq!(scim.status, StatusCode::OK);
    let root = app.get("/api/v1/tenants", ROOT).await;
    assert_eq!(root.status, StatusCode::OK);
}

/// Without a trusted proxy the forwarding headers are ignored: a guesser
/// cannot escape the limit by inventing addresses, and a valid token from its
/// address still passes.
#[tokio::test]
async fn forwarding_headers_of_an_untrusted_peer_are_ignored() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let mut statuses = Vec::new();
    for index in 0..25 {
        let forged = format!("203.0.113.{index}");
        let answer = app
            .call(
                Method::GET,
                &t.path(""),
                Some("garbage"),
                None,
                &[
                    ("X-Forwarded-For", &forged),
                    ("Forwarded", &format!("for={forged}")),
                ],
            )
            .await;
        statuses.push(answer.status);
    }
    assert!(
        statuses[20..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let admin = app.get(&t.path(""), &t.admin).await;
    assert_eq!(admin.status, StatusCode::OK);
}

/// Any token is a method to HTTP, and anyone may send one before signing in:
/// invented methods share one label of the request counters, so that they
/// cannot grow the counters (and every scrape) without bound.
#[tokio::test]
async fn invented_methods_share_one_metrics_label() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    for index in 0..50 {
        let method = Method::from_bytes(format!("PROBE{index}X").as_bytes()).expect("a token");
        let answer = app.call(method, "/healthz", None, None, &[]).await;
        assert!(answer.status.is_client_error(), "{}", answer.status);
    }
    let metrics = app.metrics().await;
    assert!(!metrics.contains("PROBE"), "a label per invented method");
    let other: Vec<&str> = metrics
        .lines()
        .filter(|line| {
            line.starts_with("entitle_http_requests_total{") && line.contains("method=\"other\"")
        })
        .collect();
    let counted: i64 = other
        .iter()
        .filter_map(|line| line.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    assert_eq!(counted, 50, "{other:?}");
}

/// Bad device tokens and session cookies count as failures too.
#[tokio::test]
async fn bad_device_tokens_and_cookies_count() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let device = report("h", "macos", "4.0", "corporate", true);
    for _ in 0..12 {
        let answer = common::sync(&app, "not-a-token", &device, None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    let mut last = StatusCode::OK;
    for _ in 0..12 {
        last = app
            .call(
                Method::GET,
                "/api/v1/tenants",
                None,
                None,
                &[("Cookie", "entitle_session=forged")],
            )
            .await
            .status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

/// A tenant to probe: a local user "ada" with an enrolled device (its
/// token), and a SCIM user "grace" and group "staff" (their ids).
async fn probed_tenant(app: &TestApp) -> (Tenant, String, (String, String)) {
    let t = app.tenant("acme").await;
    t.user(app, "ada", &[]).await;
    let (_, device_token, _) = t
        .enroll(app, "ada", report("h", "macos", "4.0", "corporate", true))
        .await;
    let scim = format!("/scim/v2/{}", t.name);
    let user = app
        .post(
            &format!("{scim}/Users"),
            &t.scim_token,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "grace"}),
        )
        .await;
    let user_id = user.body["id"].as_str().expect("user id").to_owned();
    let group = app
        .post(&format!("{scim}/Groups"), &t.scim_token, json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "staff"}))
        .await;
    let group_id = group.body["id"].as_str().expect("group id").to_owned();
    (t, device_token, (user_id, group_id))
}

/// Every body-taking route answers 400 to a NUL, never 500, on both back ends;
/// and to a bidirectional override, with which a name displays as another's.
async fn nul_bytes_are_refused_at_the_edge(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, device_token, (user_id, group_id)) = probed_tenant(&app).await;
    // Every probe runs before the verdict, so that a failure lists them all.
    let mut wrong = Vec::new();
    // The text in JSON, and percent-encoded in a path or query.
    for (nul, encoded) in [("a\u{0}b", "%00"), ("ada\u{202E}cam", "%E2%80%AE")] {
        let ids = (user_id.as_str(), group_id.as_str());
        probe_refusals(&app, &t, (&device_token, ids), (nul, encoded), &mut wrong).await;
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Sends `nul` in every body and `encoded` in paths and queries, as a device,
/// an administrator and the identity provider; notes each answer that is not
/// a 400 (a 404 for a portal page).
async fn probe_refusals(
    app: &TestApp,
    t: &Tenant,
    (device_token, (user_id, group_id)): (&str, (&str, &str)),
    (nul, encoded): (&str, &str),
    wrong: &mut Vec<String>,
) {
    let device_token = device_token.to_owned();
    let scim = format!("/scim/v2/{}", t.name);
    let mut bad_report = report("h", "macos", "4.0", "corporate", true);
    bad_report["hostname"] = json!(nul);
    let api_probes: Vec<(Method, String, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/tenants".into(),
            ROOT.into(),
            json!({"name": nul}),
        ),
        (
            Method::POST,
            t.path("/tokens"),
            t.admin.clone(),
            json!({"name": nul, "role": "admin"}),
        ),
        (
            Method::POST,
            t.path("/accounts"),
            t.admin.clone(),
            json!({"email": format!("{nul}@x.io"), "password": "long enough password", "role": "admin"}),
        ),
        (
            Method::POST,
            t.path("/groups"),
            t.admin.clone(),
            json!({"display_name": nul}),
        ),
        (
            Method::POST,
            t.path("/users"),
            t.admin.clone(),
            json!({"user_name": nul, "groups": []}),
        ),
        (
            Method::POST,
            t.path("/device-groups"),
            t.admin.clone(),
            json!({"name": nul}),
        ),
        (
            Method::PUT,
            t.path("/device-groups/dg_nothing"),
            t.admin.clone(),
            json!({"name": nul}),
        ),
        (
            Method::PATCH,
            t.path("/users/ada"),
            t.admin.clone(),
            json!({"display_name": nul}),
        ),
        (
            Method::POST,
            t.path("/device-groups/preview"),
            t.admin.clone(),
            json!({"name": "x", "posture": [{"key": nul, "op": "eq", "value": true}]}),
        ),
        (
            Method::PUT,
            t.path("/entitlements/private_access"),
            t.admin.clone(),
            json!({"enabled_by_default": false, "user_groups": [nul]}),
        ),
        (
            Method::POST,
            t.path("/entitlements/private_access/preview"),
            t.admin.clone(),
            json!({"enabled_by_default": false, "device_groups": [nul]}),
        ),
        (
            Method::POST,
            t.path("/entitlements/rollback"),
            t.admin.clone(),
            json!({"config_version": nul}),
        ),
        (
            Method::POST,
            "/agent/v1/enroll".into(),
            String::new(),
            json!({"enrollment_key": t.enrollment_key, "user_name": nul, "device": report("h", "macos", "4.0", "corporate", true)}),
        ),
        (
            Method::POST,
            "/agent/v1/enroll".into(),
            String::new(),
            json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": bad_report.clone()}),
        ),
        (
            Method::POST,
            "/agent/v1/sync".into(),
            device_token.clone(),
            bad_report.clone(),
        ),
        (
            Method::POST,
            "/portal/login".into(),
            String::new(),
            json!({"email": format!("{nul}@x.io"), "password": nul}),
        ),
    ];
    for (method, path, token, body) in api_probes {
        let token = (!token.is_empty()).then_some(token.as_str());
        let answer = app
            .call(method.clone(), &path, token, Some(body), &[])
            .await;
        if answer.status != StatusCode::BAD_REQUEST || !answer.body["error"]["code"].is_string() {
            wrong.push(format!(
                "{method} {path}: {} {}",
                answer.status, answer.body
            ));
        }
    }
    let scim_probes: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            format!("{scim}/Users"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": nul}),
        ),
        (
            Method::POST,
            format!("{scim}/Groups"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": nul}),
        ),
        (
            Method::POST,
            format!("{scim}/Users/.search"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": format!("userName eq \"{nul}\"")}),
        ),
        (
            Method::POST,
            format!("{scim}/.search"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": format!("userName eq \"{nul}\"")}),
        ),
        (
            Method::POST,
            format!("{scim}/Groups/.search"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": format!("displayName eq \"{nul}\"")}),
        ),
        (
            Method::PUT,
            format!("{scim}/Users/{user_id}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": nul}),
        ),
        (
            Method::PATCH,
            format!("{scim}/Users/{user_id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": nul}]}),
        ),
        (
            Method::PUT,
            format!("{scim}/Groups/{group_id}"),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": nul}),
        ),
        (
            Method::PATCH,
            format!("{scim}/Groups/{group_id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": nul}]}),
        ),
    ];
    for (method, path, body) in scim_probes {
        let answer = app
            .call(method.clone(), &path, Some(&t.scim_token), Some(body), &[])
            .await;
        if answer.status != StatusCode::BAD_REQUEST || answer.body["status"] != "400" {
            wrong.push(format!(
                "{method} {path}: {} {}",
                answer.status, answer.body
            ));
        }
    }
    // Paths and queries.
    for path in [
        format!("{scim}/Users?filter=userName%20eq%20%22a{encoded}%22"),
        t.path(&format!("/users/a{encoded}b")),
        t.path(&format!("/groups?search=a{encoded}")),
        format!("/api/v1/tenants/a{encoded}"),
    ] {
        let token = if path.starts_with("/scim") {
            &t.scim_token
        } else {
            &t.admin
        };
        let answer = app.get(&path, token).await;
        if answer.status != StatusCode::BAD_REQUEST {
            wrong.push(format!("GET {path}: {} {}", answer.status, answer.body));
        }
    }
    let portal_page = format!("/t/{encoded}");
    let page = app.call(Method::GET, &portal_page, None, None, &[]).await;
    if page.status != StatusCode::NOT_FOUND {
        wrong.push(format!("GET {portal_page}: {} {}", page.status, page.body));
    }
}

/// Every way to name a user, group, device, token, key or account refuses a
/// name that could pass for another (an invisible character after ASCII, a
/// decomposed accent), with the reason; names in other scripts and emoji pass.
async fn look_alike_names_are_refused_where_names_are_made(db: Database) {
    let app = TestApp::start(&db).await;
    let (t, device_token, (grace, staff)) = probed_tenant(&app).await;
    let scim = format!("/scim/v2/{}", t.name);
    let user_schema = "urn:ietf:params:scim:schemas:core:2.0:User";
    let group_schema = "urn:ietf:params:scim:schemas:core:2.0:Group";
    let patch_schema = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
    let mut wrong = Vec::new();
    // A zero-width space, a joiner after ASCII, and "José" with its accent apart.
    for (name, reason) in [
        ("ada\u{200B}", "invisible"),
        ("ada\u{200D}", "invisible"),
        ("Jose\u{301}", "normal form C"),
    ] {
        let mut bad_report = report("h", "macos", "4.0", "corporate", true);
        bad_report["hostname"] = json!(name);
        let calls: Vec<(Method, String, &str, Value)> = vec![
            (
                Method::POST,
                t.path("/tokens"),
                &t.admin,
                json!({"name": name, "role": "admin"}),
            ),
            (
                Method::POST,
                t.path("/accounts"),
                &t.admin,
                json!({"email": format!("{name}@x.io"), "password": "long enough password", "role": "admin"}),
            ),
            (
                Method::POST,
                t.path("/groups"),
                &t.admin,
                json!({"display_name": name}),
            ),
            (
                Method::POST,
                t.path("/users"),
                &t.admin,
                json!({"user_name": name, "groups": []}),
            ),
            (
                Method::POST,
                t.path("/users"),
                &t.admin,
                json!({"user_name": "x", "display_name": name, "groups": []}),
            ),
            (
                Method::POST,
                t.path("/device-groups"),
                &t.admin,
                json!({"name": name}),
            ),
            (
                Method::POST,
                t.path("/enrollment-keys"),
                &t.admin,
                json!({"name": name}),
            ),
            (
                Method::POST,
                "/agent/v1/sync".into(),
                &device_token,
                bad_report.clone(),
            ),
            (
                Method::POST,
                "/agent/v1/enroll".into(),
                "",
                json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": bad_report}),
            ),
            (
                Method::POST,
                format!("{scim}/Users"),
                &t.scim_token,
                json!({"schemas": [user_schema], "userName": name}),
            ),
            (
                Method::POST,
                format!("{scim}/Users"),
                &t.scim_token,
                json!({"schemas": [user_schema], "userName": "y", "displayName": name}),
            ),
            (
                Method::PUT,
                format!("{scim}/Users/{grace}"),
                &t.scim_token,
                json!({"schemas": [user_schema], "userName": name}),
            ),
            (
                Method::PATCH,
                format!("{scim}/Users/{grace}"),
                &t.scim_token,
                json!({"schemas": [patch_schema], "Operations": [{"op": "replace", "path": "userName", "value": name}]}),
            ),
            (
                Method::POST,
                format!("{scim}/Groups"),
                &t.scim_token,
                json!({"schemas": [group_schema], "displayName": name}),
            ),
            (
                Method::PATCH,
                format!("{scim}/Groups/{staff}"),
                &t.scim_token,
                json!({"schemas": [patch_schema], "Operations": [{"op": "replace", "path": "displayName", "value": name}]}),
            ),
        ];
        for (method, path, token, body) in calls {
            let token = (!token.is_empty()).then_some(token);
            let answer = app
                .call(method.clone(), &path, token, Some(body), &[])
                .await;
            let message = answer.body["error"]["message"]
                .as_str()
                .or(answer.body["detail"].as_str())
                .unwrap_or_default();
            let refused = matches!(answer.status.as_u16(), 400 | 422);
            if !refused || !message.contains(reason) {
                wrong.push(format!(
                    "{method} {path} {name:?}: {} {}",
                    answer.status, answer.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // Nothing was half made: the directory holds the names it held.
    let users = app.get(&format!("{scim}/Users"), &t.scim_token).await;
    assert_eq!(users.body["totalResults"], 2, "{}", users.body);
    // Names that need joiners or marks, and emoji, are names.
    for name in [
        "José Ñúñez",
        "\u{0645}\u{06CC}\u{200C}\u{062E}\u{0648}\u{0627}\u{0647}\u{0645}",
        "\u{0915}\u{094D}\u{200D}\u{0937}",
        "\u{1F468}\u{200D}\u{1F4BB} Engineers",
    ] {
        let group = app
            .post(
                &format!("{scim}/Groups"),
                &t.scim_token,
                json!({"schemas": [group_schema], "displayName": name}),
            )
            .await;
        assert_eq!(
            group.status,
            StatusCode::CREATED,
            "{name:?}: {}",
            group.body
        );
        assert_eq!(group.body["displayName"], name);
        let user = app
            .post(
                t.path("/users").as_str(),
                &t.admin,
                json!({"user_name": format!("{name}@x.io"), "groups": []}),
            )
            .await;
        assert_eq!(user.status, StatusCode::CREATED, "{name:?}: {}", user.body);
    }
}

/// A caller without a valid credential gets 401 whatever its body.
async fn strangers_learn_nothing_from_the_body(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let half = format!("{{\"hostname\": \"{}", "y".repeat(512 * 1024));
    for body in [huge.as_str(), half.as_str(), "{not json", "{}"] {
        // Through the router (a body over 1 MiB is not the lane's) and the lane.
        let answer = app
            .client
            .post(format!("{}/agent/v1/sync", app.base))
            .bearer_auth("forged")
            .body(body.to_owned())
            .send()
            .await
            .expect("sent");
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "sync, {} bytes",
            body.len()
        );
        let answer = app
            .client
            .post(format!("{}/scim/v2/{}/Users", app.base, t.name))
            .bearer_auth("forged")
            .body(body.to_owned())
            .send()
            .await
            .expect("sent");
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "scim, {} bytes",
            body.len()
        );
    }
    let answer = app
        .call(
            Method::POST,
            "/agent/v1/enroll",
            None,
            Some(
                json!({"enrollment_key": "forged", "user_name": "ada", "device": {"hostname": 5}}),
            ),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{:?}", answer.body);
}

/// Strings at the edge have one set of limits.
async fn lengths_are_limited(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let mut long_host = report("h", "macos", "4.0", "corporate", true);
    long_host["hostname"] = json!("h".repeat(254));
    let mut many_facts = report("h", "macos", "4.0", "corporate", true);
    many_facts["posture"] = (0..65).map(|i| (format!("k{i}"), json!(true))).collect();
    let mut long_value = report("h", "macos", "4.0", "corporate", true);
    long_value["posture"] = json!({"k": "v".repeat(1025)});
    let mut control = report("h", "macos", "4.0", "corporate", true);
    control["hostname"] = json!("line\nbreak");
    for device in [long_host, many_facts, long_value, control] {
        let answer = app
            .post(
                "/agent/v1/enroll",
                "",
                json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": device}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    }
    let rules: Vec<Value> = (0..65)
        .map(|i| json!({"key": format!("k{i}"), "op": "eq", "value": true}))
        .collect();
    for body in [
        json!({"name": "n".repeat(257)}),
        json!({"name": "x", "posture": rules}),
    ] {
        let answer = app.post(&t.path("/device-groups"), &t.admin, body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            answer.body
        );
    }
    let scim = app
        .post(
            &format!("/scim/v2/{}/Users", t.name),
            &t.scim_token,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "u".repeat(257)}),
        )
        .await;
    assert_eq!(scim.status, StatusCode::BAD_REQUEST, "{:?}", scim.body);
    // Each group id a body names is looked up while the tenant's writes wait.
    let ids: Vec<String> = (0..1_001).map(|i| format!("g{i}")).collect();
    let many =
        json!({"enabled_by_default": false, "user_groups": [], "exclude_device_groups": ids});
    for (method, path, body) in [
        (
            Method::POST,
            t.path("/users"),
            json!({"user_name": "many", "groups": ids}),
        ),
        (
            Method::POST,
            t.path("/groups"),
            json!({"display_name": "many", "member_groups": ids}),
        ),
        (
            Method::PUT,
            t.path("/entitlements/private_access"),
            many.clone(),
        ),
        (
            Method::POST,
            t.path("/entitlements/private_access/preview"),
            many,
        ),
    ] {
        let answer = app
            .call(method.clone(), &path, Some(&t.admin), Some(body), &[])
            .await;
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            answer.status.is_client_error() && message.contains("at most 1000 groups"),
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
    }
}

on_both_backends!(
    nul_bytes_are_refused_at_the_edge,
    look_alike_names_are_refused_where_names_are_made,
    strangers_learn_nothing_from_the_body,
    lengths_are_limited,
);

/// Enrollments per key and address are limited, successful ones included.
#[tokio::test]
async fn enrollments_are_rate_limited_per_key_and_address() {
    let db = Database::sqlite();
    let config = ServerConfig {
        enrollments_per_minute: 3,
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    for _ in 0..3 {
        t.enroll(&app, "ada", report("h", "macos", "4.0", "corporate", true))
            .await;
    }
    let answer = app
        .post(
            "/agent/v1/enroll",
            "",
            json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": report("h", "macos", "4.0", "corporate", true)}),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
}

/// Secrets are never cached and no answer is sniffed.
#[tokio::test]
async fn answers_carry_the_security_headers() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let (_, device_token, _) = t
        .enroll(&app, "ada", report("h", "macos", "4.0", "corporate", true))
        .await;
    let secret_bearing = [
        app.client
            .post(format!("{}/api/v1/tenants", app.base))
            .bearer_auth(ROOT)
            .json(&json!({"name": "beta"})),
        app.client
            .post(format!("{}{}", app.base, t.path("/tokens")))
            .bearer_auth(&t.admin)
            .json(&json!({"name": "ci", "role": "viewer"})),
        app.client
            .post(format!("{}/agent/v1/enroll", app.base))
            .json(&json!({"enrollment_key": t.enrollment_key, "user_name": "ada", "device": report("h", "macos", "4.0", "corporate", true)})),
        app.client
            .post(format!("{}/agent/v1/sync", app.base))
            .bearer_auth(&device_token)
            .json(&report("h", "macos", "4.0", "corporate", true)),
        app.client
            .get(format!("{}/scim/v2/{}/Users", app.base, t.name))
            .bearer_auth(&t.scim_token),
    ];
    for request in secret_bearing {
        let answer = request.send().await.expect("sent");
        let headers = answer.headers();
        assert_eq!(
            headers.get("cache-control").map(|v| v.as_bytes()),
            Some(&b"no-store"[..]),
            "{answer:?}"
        );
        assert_eq!(
            headers.get("x-content-type-options").map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{answer:?}"
        );
    }
    for path in ["/healthz", "/login", "/nowhere"] {
        let answer = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            answer
                .headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..]),
            "{path}"
        );
    }
}

fn short_timeouts() -> ServerConfig {
    ServerConfig {
        idle_timeout: Duration::from_millis(800),
        header_read_timeout: Duration::from_millis(800),
        ..ServerConfig::default()
    }
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection; panics if it stays open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "still open after {limit:?}: {}",
        String::from_utf8_lossy(&seen)
    );
    seen
}

fn raw_sync(token: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /agent/v1/sync{extra} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Idle keep-alive connections and heads that never end are closed, on the
/// lane and on the router alike.
#[tokio::test]
async fn idle_and_stalled_connections_are_closed() {
    let db = Database::sqlite();
    let app = TestApp::start_with(&db, short_timeouts()).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("h", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;

    // The router: one request, then silence.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let seen = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    // The lane: one sync, then silence.
    let mut stream = connect(&app).await;
    stream
        .write_all(&raw_sync(&token, &device.to_string(), ""))
        .await
        .expect("write");
    let seen = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );

    // A connection that says nothing, and heads that never end, on both sides.
    for opening in [
        &b""[..],
        b"POST /agent/v1/sync HTTP/1.1\r\nHost: x\r\n",
        b"GET /healthz HTTP/1.1\r\nHo",
    ] {
        let mut stream = connect(&app).await;
        stream.write_all(opening).await.expect("write");
        closed_within(&mut stream, Duration::from_secs(5)).await;
    }
}

/// Past the connection cap, a new connection that brings a sync is answered
/// 503 with `Retry-After` at once and closed, instead of waiting unanswered;
/// an API call is still served, on a connection kept for the API.
#[tokio::test]
async fn past_the_connection_cap_syncs_are_told_to_come_back_and_the_api_answers() {
    let db = Database::sqlite();
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("cap", "macos", "4.0", "corporate", true);
    let (_, token, _) = t.enroll(&app, "ada", device.clone()).await;
    // The test client's pooled connections close once idle past the lane's
    // idle timeout; two raw connections then take the whole cap.
    let mut first = connect(&app).await;
    let second = connect(&app).await;
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = [0u8; 12];
    first.read_exact(&mut answer).await.expect("answered");
    assert_eq!(&answer, b"HTTP/1.1 200");

    let body = device.to_string();
    let mut refused = None;
    // Until the cap is reached (the client's pooled connections may still
    // hold places), a sync may be served: try until one is refused.
    for _ in 0..50 {
        let mut third = connect(&app).await;
        third
            .write_all(&raw_sync(&token, &body, ""))
            .await
            .expect("write");
        let seen = closed_within(&mut third, Duration::from_secs(5)).await;
        let seen = String::from_utf8_lossy(&seen).to_lowercase();
        if seen.starts_with("http/1.1 503") {
            refused = Some(seen);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a sync past the cap was refused");
    assert!(refused.contains("\r\nretry-after: "), "{refused}");
    assert!(refused.contains("server_busy"), "{refused}");

    // An API call past the cap is served.
    let mut call = connect(&app).await;
    call.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let served = closed_within(&mut call, Duration::from_secs(5)).await;
    assert!(
        served.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&served)
    );
    let refusals = app
        .metric("entitle_sync_shed_total{reason=\"connections\",tenant_bucket=\"none\"}")
        .await;
    assert!(
        refusals.is_some_and(|n| n >= 1),
        "counted with the shed syncs: {refusals:?}"
    );
    drop(second);
}

/// A device that half-closes after sending a held sync still gets its answer.
#[tokio::test]
async fn a_half_closed_held_sync_is_answered() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let device = report("h", "macos", "4.0", "corporate", true);
    let (_, token, policy) = t.enroll(&app, "ada", device.clone()).await;
    let etag = policy["etag"].as_str().expect("etag").to_owned();
    let body = device.to_string();
    let request = format!(
        "POST /agent/v1/sync?wait=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIf-None-Match: {etag}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect(&app).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.shutdown().await.expect("half-close");
    let seen = closed_within(&mut stream, Duration::from_secs(10)).await;
    assert!(
        seen.starts_with(b"HTTP/1.1 304"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

/// Bodies held in memory at once are capped: while a stalled body holds the
/// whole budget, another body waits and is then refused with 503, and is
/// served once the stalled one is gone.
#[tokio::test]
async fn in_flight_body_bytes_are_capped() {
    let db = Database::sqlite();
    let config = ServerConfig {
        max_body_bytes_in_flight: 4096,
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let mut stalled = connect(&app).await;
    stalled
        .write_all(
            format!(
                "POST /api/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ROOT}\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = app
        .post("/api/v1/tenants", ROOT, json!({"name": "acme"}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "server_busy");
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = app
        .post("/api/v1/tenants", ROOT, json!({"name": "acme"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}
