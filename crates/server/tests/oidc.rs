//! Sign-in through the identity provider, over HTTP on both back ends: a small
//! provider on a loopback port (discovery, keys, and a token endpoint that
//! checks the PKCE verifier and signs ID tokens with a key made at run time),
//! and what the server does with the person: the account it creates and binds
//! to the subject, the role that follows the mapping, the local account it
//! never takes over, the disabled and the unmapped it refuses.

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Database, ROOT, TestApp};
use entitle_server::ServerConfig;
use entitle_server::oidc::{MappingRule, Oidc, OidcSettings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CLIENT: &str = "entitle-test";
const SECRET: &str = "s3cret";

#[derive(Default)]
struct Flow {
    /// Claims of the next ID token (nonce, iss, aud, times added).
    claims: Value,
    nonce: String,
    challenge: String,
}

#[derive(Clone)]
struct Idp {
    issuer: String,
    key: Arc<EncodingKey>,
    jwk: Value,
    flow: Arc<Mutex<Flow>>,
}

async fn start_idp() -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("address"));
    let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("key");
    let public = private.to_public_key();
    let idp = Idp {
        issuer,
        key: Arc::new(EncodingKey::from_rsa_der(
            private.to_pkcs1_der().expect("DER").as_bytes(),
        )),
        jwk: json!({"kty": "RSA", "kid": "k", "use": "sig", "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())}),
        flow: Arc::default(),
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route(
            "/jwks",
            get(|State(idp): State<Idp>| async move { Json(json!({"keys": [idp.jwk]})) }),
        )
        .route("/token", post(token))
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    idp
}

async fn discovery(State(idp): State<Idp>) -> Json<Value> {
    let i = &idp.issuer;
    Json(
        json!({"issuer": i, "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"), "jwks_uri": format!("{i}/jwks")}),
    )
}

async fn token(
    State(idp): State<Idp>,
    headers: axum::http::HeaderMap,
    body: String,
) -> (axum::http::StatusCode, Json<Value>) {
    // The values checked here (code, verifier) need no percent-decoding.
    let form: std::collections::HashMap<&str, &str> =
        body.split('&').filter_map(|p| p.split_once('=')).collect();
    let flow = idp.flow.lock().expect("lock");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT}:{SECRET}"))
    );
    let verifier = form.get("code_verifier").copied().unwrap_or_default();
    let pkce = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str())
        || pkce != flow.challenge
        || form.get("code").copied() != Some("the-code")
    {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        );
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({"iss": idp.issuer, "aud": CLIENT, "iat": now, "exp": now + 300, "nonce": flow.nonce});
    for (k, v) in flow.claims.as_object().into_iter().flatten() {
        claims[k] = v.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k".into());
    let id_token = jsonwebtoken::encode(&header, &claims, &idp.key).expect("signed");
    (
        axum::http::StatusCode::OK,
        Json(json!({"id_token": id_token, "access_token": "a", "token_type": "Bearer"})),
    )
}

fn config(idp: &Idp, rules: &[&str]) -> ServerConfig {
    let settings = OidcSettings {
        issuer: idp.issuer.clone(),
        client_id: CLIENT.into(),
        client_secret: SECRET.into(),
        display_name: "Test IdP".into(),
        groups_claim: "groups".into(),
        redirect_uri: "http://127.0.0.1/portal/oidc/callback".into(),
        rules: rules
            .iter()
            .map(|r| MappingRule::parse(r).expect("rule"))
            .collect(),
    };
    ServerConfig {
        oidc: Some(Oidc::new(settings).expect("settings")),
        ..ServerConfig::default()
    }
}

struct Outcome {
    status: StatusCode,
    page: String,
    session: Option<String>,
}

/// The browser's part: start, (the provider's part: remember nonce and
/// challenge), come back with the code and the cookie.
async fn sign_in(app: &TestApp, idp: &Idp, claims: Value) -> Outcome {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let started = client
        .get(format!("{}/portal/oidc/start", app.base))
        .send()
        .await
        .expect("start");
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    let location =
        reqwest::Url::parse(started.headers()[LOCATION].to_str().expect("location")).expect("URL");
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .expect(name)
    };
    assert_eq!(param("code_challenge_method"), "S256");
    {
        let mut flow = idp.flow.lock().expect("lock");
        flow.claims = claims;
        flow.nonce = param("nonce");
        flow.challenge = param("code_challenge");
    }
    let cookie = started.headers()[SET_COOKIE]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let back = client
        .get(format!(
            "{}/portal/oidc/callback?code=the-code&state={}",
            app.base,
            param("state")
        ))
        .header("cookie", cookie)
        .send()
        .await
        .expect("callback");
    let status = back.status();
    let session = back
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("entitle_session=") && !c.starts_with("entitle_session=;"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned());
    Outcome {
        status,
        page: back.text().await.expect("page"),
        session,
    }
}

async fn account(app: &TestApp, email: &str) -> Option<Value> {
    let list = app.get("/api/v1/tenants/acme/accounts", ROOT).await;
    list.body["items"]
        .as_array()
        .or_else(|| list.body.as_array())
        .expect("accounts")
        .iter()
        .find(|a| a["email"] == email)
        .cloned()
}

async fn sign_in_through_the_provider(db: Database) {
    let idp = start_idp().await;
    let app = TestApp::start_with(
        &db,
        config(
            &idp,
            &[
                "email:lost@acme.example=gone:admin",
                "group:Entitle Admins=acme:admin",
                "domain:acme.example=acme:viewer",
            ],
        ),
    )
    .await;
    app.tenant("acme").await;

    // A new person of the admin group: an account, admin, and a session that opens the portal.
    let ada = json!({"sub": "ada-1", "email": "Ada@Acme.Example", "groups": ["Entitle Admins"]});
    let first = sign_in(&app, &idp, ada.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.page);
    assert!(
        first
            .page
            .contains("url=/t/acme/entitlements/private_access"),
        "{}",
        first.page
    );
    let session = first.session.expect("a session cookie");
    let page = app
        .client
        .get(format!("{}/t/acme/devices", app.base))
        .header("cookie", &session)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .expect("text")
            .contains("ada@acme.example · admin")
    );
    assert_eq!(
        account(&app, "ada@acme.example").await.expect("created")["role"],
        "admin"
    );
    let audit = app.get("/api/v1/tenants/acme/audit", ROOT).await;
    let signed_in = audit.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["action"] == "sign_in.success")
        .cloned()
        .expect("audited");
    assert_eq!(signed_in["target"], "ada@acme.example", "{signed_in}");

    // The account has no password: a password sign-in is refused like any wrong one.
    let password = app
        .call(
            reqwest::Method::POST,
            "/portal/login",
            None,
            Some(json!({"email": "ada@acme.example", "password": "oidc$anything at all"})),
            &[],
        )
        .await;
    assert_eq!(
        password.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        password.body
    );
    assert_eq!(
        password.body["error"]["message"],
        "the email or the password is wrong"
    );

    // Out of the group: the same account, now a viewer.
    let again = sign_in(
        &app,
        &idp,
        json!({"sub": "ada-1", "email": "ada@acme.example", "groups": []}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.page);
    assert_eq!(
        account(&app, "ada@acme.example").await.expect("kept")["role"],
        "viewer"
    );

    // Another subject with the same email does not get Ada's account.
    let other = sign_in(
        &app,
        &idp,
        json!({"sub": "someone-else", "email": "ada@acme.example"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(
        other.page.contains("belongs to another person"),
        "{}",
        other.page
    );
    assert!(other.session.is_none());

    // A local account is never taken over.
    let local = app
        .post(
            "/api/v1/tenants/acme/accounts",
            ROOT,
            json!({"email": "breakglass@acme.example", "password": "a long local password", "role": "admin"}),
        )
        .await;
    assert_eq!(local.status, StatusCode::CREATED, "{:?}", local.body);
    let taken = sign_in(
        &app,
        &idp,
        json!({"sub": "bg", "email": "breakglass@acme.example", "groups": ["Entitle Admins"]}),
    )
    .await;
    assert_eq!(taken.status, StatusCode::FORBIDDEN);
    assert!(
        taken.page.contains("local entitle account"),
        "{}",
        taken.page
    );

    // Disabled in entitle: refused, whatever the provider says.
    let id = account(&app, "ada@acme.example").await.expect("ada")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let disabled = app
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/tenants/acme/accounts/{id}"),
            Some(ROOT),
            Some(json!({"disabled": true})),
            &[],
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    let refused = sign_in(&app, &idp, ada).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.page.contains("is disabled"), "{}", refused.page);

    // Unmapped, mapped to a tenant that does not exist, or without a verified email.
    let stranger = sign_in(
        &app,
        &idp,
        json!({"sub": "x", "email": "x@elsewhere.example", "groups": ["Staff"]}),
    )
    .await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    assert!(
        stranger.page.contains("is not given access"),
        "{}",
        stranger.page
    );
    let lost = sign_in(
        &app,
        &idp,
        json!({"sub": "l", "email": "lost@acme.example"}),
    )
    .await;
    assert!(lost.page.contains("does not exist"), "{}", lost.page);
    let unverified = sign_in(&app, &idp, json!({"sub": "u", "email": "u@acme.example", "email_verified": false, "groups": ["Entitle Admins"]})).await;
    assert_eq!(unverified.status, StatusCode::FORBIDDEN);
    assert!(
        unverified.page.contains("no verified email"),
        "{}",
        unverified.page
    );
    assert!(account(&app, "x@elsewhere.example").await.is_none());
    assert!(account(&app, "u@acme.example").await.is_none());
}

/// An invited account (issue 12) may be taken by the provider's sign-in: it is
/// bound to the subject, its link is used up, and the mapping gives its role.
async fn an_invitee_may_sign_in_through_the_provider(db: Database) {
    let idp = start_idp().await;
    let app = TestApp::start_with(&db, config(&idp, &["domain:acme.example=acme:viewer"])).await;
    app.tenant("acme").await;
    let invited = app
        .post(
            "/api/v1/tenants/acme/invitations",
            ROOT,
            json!({"email": "bea@acme.example", "role": "admin"}),
        )
        .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{:?}", invited.body);
    let id = invited.body["account"]["id"].clone();
    let signed_in = sign_in(
        &app,
        &idp,
        json!({"sub": "bea-1", "email": "Bea@Acme.Example"}),
    )
    .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{}", signed_in.page);
    assert!(signed_in.session.is_some());
    let bea = account(&app, "bea@acme.example").await.expect("kept");
    assert_eq!(bea["id"], id, "the invited account, not a new one");
    assert_eq!(bea["status"], "active");
    assert_eq!(bea["role"], "viewer", "the mapping decides");
    let path = invited.body["invitation_path"].as_str().expect("path");
    let token = path.split_once('#').expect("fragment").1;
    let used = app
        .call(
            reqwest::Method::POST,
            "/portal/invitation/check",
            None,
            Some(json!({"token": token})),
            &[],
        )
        .await;
    assert_eq!(used.status, StatusCode::GONE, "{:?}", used.body);
    let again = sign_in(
        &app,
        &idp,
        json!({"sub": "bea-1", "email": "bea@acme.example"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.page);
    let other = sign_in(
        &app,
        &idp,
        json!({"sub": "impostor", "email": "bea@acme.example"}),
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
}

on_both_backends!(
    sign_in_through_the_provider,
    an_invitee_may_sign_in_through_the_provider
);

#[tokio::test]
async fn without_a_provider_there_is_no_button_and_no_route() {
    let db = Database::sqlite();
    let app = TestApp::start(&db).await;
    let login = app
        .client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .expect("login");
    assert!(
        !login
            .text()
            .await
            .expect("page")
            .contains("/portal/oidc/start")
    );
    let start = app
        .client
        .get(format!("{}/portal/oidc/start", app.base))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_provider_that_is_down_gets_a_page_not_a_500() {
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let issuer = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let idp = Idp {
        issuer,
        key: Arc::new(EncodingKey::from_secret(b"unused")),
        jwk: Value::Null,
        flow: Arc::default(),
    };
    let db = Database::sqlite();
    let app = TestApp::start_with(&db, config(&idp, &["domain:acme.example=acme:admin"])).await;
    let login = app
        .client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .expect("login");
    assert!(
        login
            .text()
            .await
            .expect("page")
            .contains("Sign in with Test IdP")
    );
    let start = app
        .client
        .get(format!("{}/portal/oidc/start", app.base))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::BAD_GATEWAY);
    assert!(
        start
            .text()
            .await
            .expect("page")
            .contains("could not be used")
    );
}
