//! The portal under attack: hostile text from devices, the directory and
//! admins is escaped on every page, sign-in answers the same for real and
//! unknown emails and slows down only the guessing address, password hashing
//! does not stall other requests, and `Secure` cookies come from configuration.

#[macro_use]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Database, ROOT, Tenant, TestApp, report, settings, sync};
use entitle_server::{Server, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Hostile text: a comment opener that swallows what follows in a script
/// element, a script, an attribute break-out and a title break-out, each of
/// which sets `window.__xss` if it ever runs, and the line separators that end
/// a JavaScript string literal in older engines.
const HOSTILE: &str = "<!--<script>window.__xss=1</script>\"><img src=x onerror=\"window.__xss=2\"></title><script>window.__xss=3</script>\u{2028}\u{2029}'&amp;";

/// What must never appear raw in a page.
const RAW: &[&str] = &[
    "<!--<script>",
    "<script>window.__xss",
    "<img src=x",
    "</title><script>",
];

const PASSWORD: &str = "correct horse battery";

fn hostile(field: &str) -> String {
    format!("{field} {HOSTILE}")
}

async fn hostile_text_is_escaped_on_every_page(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;

    // The directory: a SCIM user and group with hostile names.
    let scim = |path: &str, body: Value| {
        let request = app
            .client
            .post(format!("{}/scim/v2/acme{path}", app.base))
            .bearer_auth(&t.scim_token)
            .header("content-type", "application/scim+json")
            .body(body.to_string());
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body
        }
    };
    let user_name = hostile("user");
    let user = scim(
        "/Users",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
               "displayName": hostile("display"), "active": true}),
    )
    .await;
    let group = scim(
        "/Groups",
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": hostile("scim group"),
               "members": [{"value": user["id"]}]}),
    )
    .await;
    let group_id = group["id"].as_str().expect("group id");
    // A local group with a hostile name nests the SCIM group.
    t.group(&app, &hostile("local group"), &[group_id]).await;

    // Devices: one enrolled with hostile text everywhere, one that turns
    // hostile at its next sync.
    let mut planted = report("plain-host", "macos", "4.5.0", "corporate", true);
    planted["hostname"] = json!(hostile("enrolled host"));
    planted["posture"][hostile("key")] = json!(hostile("value"));
    let (enrolled, _, _) = t.enroll(&app, &user_name, planted).await;
    let mut later = report("later-host", "windows", "4.5.0", "personal", true);
    let (synced, token, _) = t.enroll(&app, &user_name, later.clone()).await;
    later["hostname"] = json!(hostile("synced host"));
    later["posture"]["os_version"] = json!(hostile("os version"));
    let answer = sync(&app, &token, &later, None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);

    // Admin-controlled text: a device group (name and posture rule) and a
    // token whose name becomes an actor in the history and the audit log.
    let device_group = t
        .device_group(
            &app,
            json!({"name": hostile("device group"), "os": [], "ownership": [],
                   "posture": [{"key": hostile("key"), "op": "eq", "value": hostile("value")}]}),
        )
        .await;
    let named = app
        .post(
            &t.path("/tokens"),
            &t.admin,
            json!({"name": hostile("token"), "role": "admin"}),
        )
        .await;
    assert_eq!(named.status, StatusCode::CREATED, "{:?}", named.body);
    let hostile_admin = named.body["token"].as_str().expect("token").to_owned();
    let saved = app
        .put(
            &t.path("/entitlements/private_access"),
            &hostile_admin,
            settings(false, &[group_id], &[&device_group]),
            None,
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{:?}", saved.body);

    let session = sign_in(&app, &t).await;
    let pages: Vec<(String, &str, usize)> = vec![
        (
            "/t/acme/entitlements/private_access".into(),
            "/page/device_groups",
            1,
        ),
        ("/t/acme/devices".into(), "/page/items", 2),
        (
            format!("/t/acme/devices/{enrolled}"),
            "/page/device_groups",
            1,
        ),
        (format!("/t/acme/devices/{synced}"), "/page/services", 3),
        ("/t/acme/device-groups".into(), "/page/items", 1),
        ("/t/acme/directory".into(), "/page/group_items", 2),
        ("/t/acme/audit".into(), "/page/versions", 1),
    ];
    for (path, rows, count) in pages {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .header("cookie", &session)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .expect("a CSP")
            .to_owned();
        let script_src = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("script-src"))
            .expect("script-src");
        assert!(!script_src.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{path}"
        );
        let html = response.text().await.expect("html");
        for raw in RAW {
            assert!(!html.contains(raw), "{path} carries {raw:?} unescaped");
        }
        assert!(!html.contains("<script>"), "{path}: no inline script");
        // The line separators are harmless in HTML text but not in inline data.
        let inline = page_data_text(&html);
        assert!(
            !inline.contains(['\u{2028}', '\u{2029}', '<', '>', '&']),
            "{path}: inline data is escaped"
        );
        // The data still arrives whole: the scripts get the hostile text back
        // as text, and every row is there.
        let data: Value = serde_json::from_str(inline).expect("page data is JSON");
        assert_eq!(
            data.pointer(rows).and_then(Value::as_array).map(Vec::len),
            Some(count),
            "{path}: rows at {rows}"
        );
        assert!(
            data.to_string().contains("window.__xss=3</script>"),
            "{path}: the hostile text survives as data"
        );
    }

    // The device page's title is the host name, escaped for HTML.
    let device = app
        .client
        .get(format!("{}/t/acme/devices/{enrolled}", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("html");
    let title = device
        .split("<title>")
        .nth(1)
        .and_then(|rest| rest.split("</title>").next())
        .expect("a title");
    assert!(!title.contains(['<', '>', '"']), "{title}");
    assert_eq!(
        unescape(title),
        format!("{} · acme · entitle", hostile("enrolled host"))
    );
}

on_both_backends!(hostile_text_is_escaped_on_every_page);

/// Creates a portal admin and signs in; returns the `cookie` header value.
async fn sign_in(app: &TestApp, t: &Tenant) -> String {
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "admin@acme.test", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let response = app
        .client
        .post(format!("{}/portal/login", app.base))
        .json(&json!({"email": "admin@acme.test", "password": PASSWORD}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_owned()
}

/// HTML text with its character references resolved (the few an escaper writes).
fn unescape(html: &str) -> String {
    let mut text = String::new();
    let mut rest = html;
    while let Some(start) = rest.find('&') {
        text.push_str(&rest[..start]);
        let end = rest[start..].find(';').expect("a reference ends") + start;
        let name = &rest[start + 1..end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            _ => name
                .strip_prefix('#')
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(char::from_u32)
                .expect("a numeric reference"),
        };
        text.push(c);
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    text
}

/// The JSON text inlined in the page, as the page's script reads it.
fn page_data_text(html: &str) -> &str {
    html.split("<script type=\"application/json\" id=\"page-data\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("page data")
}

/// A sign-in attempt from `from` (a loopback address of this machine).
async fn attempt(app: &TestApp, from: IpAddr, email: &str, password: &str) -> (StatusCode, Value) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .expect("client");
    let response = client
        .post(format!("{}/portal/login", app.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sent");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

async fn wrong_passwords_slow_down_the_address_not_the_account(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "admin@acme.test", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let admin = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

    // A real email and an unknown one answer alike, attempt after attempt.
    for round in 0..5 {
        let real = attempt(&app, stranger, "Admin@acme.test", "wrong password!").await;
        let unknown = attempt(&app, stranger, "nobody@acme.test", "wrong password!").await;
        assert_eq!(real.0, StatusCode::UNAUTHORIZED, "round {round}");
        assert_eq!(real, unknown, "round {round}");
    }
    // Then both are slowed down in the same words (bar the seconds to wait).
    let real = attempt(&app, stranger, "admin@acme.test", PASSWORD).await;
    let unknown = attempt(&app, stranger, "nobody@acme.test", "wrong password!").await;
    assert_eq!(real.0, StatusCode::TOO_MANY_REQUESTS, "{}", real.1);
    assert_eq!(unknown.0, real.0);
    assert_eq!(unknown.1["error"]["code"], real.1["error"]["code"]);
    let words = |body: &Value| {
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .replace(|c: char| c.is_ascii_digit(), "")
    };
    assert_eq!(words(&unknown.1), words(&real.1));

    // The administrator, elsewhere, signs in at once.
    let signed_in = attempt(&app, admin, "admin@acme.test", PASSWORD).await;
    assert_eq!(signed_in.0, StatusCode::OK, "{}", signed_in.1);
}

on_both_backends!(wrong_passwords_slow_down_the_address_not_the_account);

/// Sixteen sign-ins at once do not stall unrelated requests. The test runs
/// the server on one async worker, so a password hashed on that worker would
/// hold every other request; `/healthz` must keep answering while the
/// sign-ins are still hashing.
#[tokio::test]
async fn health_answers_while_sign_ins_hash() {
    const SIGN_INS: usize = 16;
    const HEALTH_CHECKS: usize = 5;
    let db = Database::sqlite();
    let app = Arc::new(TestApp::start(&db).await);
    let t = app.tenant("acme").await;
    let created = app
        .post(
            &t.path("/accounts"),
            &t.admin,
            json!({"email": "admin@acme.test", "password": PASSWORD, "role": "admin"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    let done = Arc::new(AtomicUsize::new(0));
    let mut sign_ins = Vec::new();
    for i in 0..SIGN_INS {
        let (app, done) = (app.clone(), done.clone());
        sign_ins.push(tokio::spawn(async move {
            // Unknown emails: each costs one verification and no write, so
            // hashing is all the server does for them.
            let email = format!("nobody{i}@acme.test");
            let (status, _) =
                attempt(&app, IpAddr::V4(Ipv4Addr::LOCALHOST), &email, PASSWORD).await;
            done.fetch_add(1, Ordering::SeqCst);
            status
        }));
    }
    // Let the sign-ins reach the server before checking its health.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut answered_while_busy = 0;
    while answered_while_busy < HEALTH_CHECKS && done.load(Ordering::SeqCst) < SIGN_INS {
        let health = app
            .client
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(health.status(), StatusCode::OK);
        if done.load(Ordering::SeqCst) < SIGN_INS {
            answered_while_busy += 1;
        }
    }
    for sign_in in sign_ins {
        assert_eq!(sign_in.await.expect("joined"), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        answered_while_busy, HEALTH_CHECKS,
        "/healthz answered only {answered_while_busy} times while {SIGN_INS} sign-ins ran"
    );
}

/// Starts a server with `config` on the database; returns its base URL and
/// the sender that stops it.
async fn start_with(
    db: &Database,
    config: ServerConfig,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let store = db.open().await;
    let grant = entitle_store::TokenGrant {
        role: entitle_store::Role::SuperAdmin,
        tenant_id: None,
        name: "root".into(),
    };
    store
        .create_api_token(
            &entitle_store::secrets::hash_secret(ROOT),
            &grant,
            &entitle_store::Actor::system(),
        )
        .await
        .expect("root token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(Server::new(store, config).run(listener, async {
        let _ = stopped.await;
    }));
    (base, stop)
}

/// The session cookie's `Secure` attribute for a server with `public_url`,
/// signing in with the given extra headers.
async fn session_cookie(public_url: Option<&str>, headers: &[(&str, &str)]) -> String {
    let db = Database::sqlite();
    let config = ServerConfig {
        public_url: public_url.map(str::to_owned),
        ..ServerConfig::default()
    };
    let (base, _stop) = start_with(&db, config).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(ROOT)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let account = client
        .post(format!("{base}/api/v1/tenants/acme/accounts"))
        .bearer_auth(ROOT)
        .json(&json!({"email": "admin@acme.test", "password": PASSWORD, "role": "admin"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(account.status(), StatusCode::CREATED);
    let mut request = client
        .post(format!("{base}/portal/login"))
        .json(&json!({"email": "admin@acme.test", "password": PASSWORD}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "a sign-in answer is never stored"
    );
    response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_owned()
}

#[tokio::test]
async fn secure_cookies_follow_the_public_url_not_a_header() {
    let forged = session_cookie(None, &[("x-forwarded-proto", "https")]).await;
    assert!(!forged.contains("Secure"), "{forged}");
    let https = session_cookie(Some("https://entitle.example.com"), &[]).await;
    assert!(https.contains("; Secure"), "{https}");
    let http = session_cookie(Some("http://127.0.0.1:8080"), &[]).await;
    assert!(!http.contains("Secure"), "{http}");
}

/// The pages' styles and scripts are files of this server, served with their
/// media type and `nosniff`; anything else under the path is 404.
#[tokio::test]
async fn portal_assets_are_served_as_what_they_are() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    for (file, media_type) in [
        ("common.js", "text/javascript"),
        ("devices.js", "text/javascript"),
        ("portal.css", "text/css"),
    ] {
        let response = app
            .client
            .get(format!("{}/portal/assets/{file}", app.base))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(media_type), "{file}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{file}");
    }
    for missing in ["nothing.js", "..%2Fmod.rs", "devices.html"] {
        let answer = app
            .call(
                reqwest::Method::GET,
                &format!("/portal/assets/{missing}"),
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(answer.body["error"]["code"], "not_found", "{missing}");
    }
}

/// A page opened while signed out sends the browser to sign in with the page
/// remembered; anything that is not one of this server's tenant pages is
/// forgotten, so a sign-in link can never forward to another site.
#[tokio::test]
async fn sign_in_remembers_only_this_servers_pages() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let location = |response: &reqwest::Response| {
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let signed_out = client
        .get(format!("{}/t/acme/devices?q=ada&sort=os", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&signed_out),
        "/login?next=%2Ft%2Facme%2Fdevices%3Fq%3Dada%26sort%3Dos"
    );

    let page = |next: &str| {
        let client = client.clone();
        let url = format!("{}/login?next={next}", app.base);
        async move {
            client
                .get(url)
                .send()
                .await
                .expect("sent")
                .text()
                .await
                .expect("body")
        }
    };
    let kept = page("%2Ft%2Facme%2Fdevices%3Fq%3Dada").await;
    assert!(
        kept.contains(r#"data-next="/t/acme/devices?q=ada""#),
        "{kept}"
    );
    for hostile in [
        "%2F%2Fevil.example%2Ft%2F",
        "https%3A%2F%2Fevil.example%2Ft%2Facme",
        "%2Ft%2F..%5C%5Cevil.example",
        "%2Ft%2Facme%2F%2F%2Fevil.example",
        "%2Fapi%2Fv1%2Ftenants",
        "%2Ft%2Facme%0d%0aSet-Cookie%3A%20x",
    ] {
        // Refused as an empty `next`, or for control characters at the edge
        // before any page is built.
        let refused = page(hostile).await;
        assert!(!refused.contains(r#"data-next="/"#), "{hostile}: {refused}");
        assert!(
            !refused.contains("evil.example") && !refused.contains("/api/v1"),
            "{hostile}"
        );
    }
}

/// An address no route answers gets an answer in the caller's language: a
/// page with a way back for people, JSON for the API, a SCIM error for SCIM.
#[tokio::test]
async fn unknown_addresses_answer_in_the_callers_language() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let page = app
        .client
        .get(format!("{}/t/acme/no-such-page/here", app.base))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("body");
    assert!(
        html.contains("Page not found") && html.contains(r#"href="/""#),
        "{html}"
    );

    let api = app.get("/api/v1/no-such-thing", ROOT).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(api.body["error"]["code"], "not_found", "{}", api.body);

    let scim = app
        .call(reqwest::Method::GET, "/scim/v1/Users", None, None, &[])
        .await;
    assert_eq!(scim.status, StatusCode::NOT_FOUND);
    assert_eq!(
        scim.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
        "{}",
        scim.body
    );
}
