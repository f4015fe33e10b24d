//! Sign-in through the company's identity provider with OpenID Connect: the
//! authorization code flow with PKCE (S256), `state` and `nonce`.
//!
//! This module knows the provider: its settings, discovery, the JWKS (cached,
//! fetched again when a token names an unknown key), the token call, the ID
//! token's checks and the mapping from claims to a tenant and a role. The
//! portal's pages are in `portal/sso.rs`.
//!
//! The server only ever talks to the configured issuer: discovery must name the
//! same issuer, and its token and key endpoints must be on the issuer's origin.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use entitle_store::Role;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Seconds of clock difference tolerated on `exp` and `iat`.
pub const LEEWAY_S: u64 = 60;
/// Largest answer read from the provider (discovery, keys, tokens).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long discovery and keys are kept before they are fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// Keys are fetched again for an unknown `kid` at most this often, so that
/// forged tokens cannot make the server hammer the provider.
const REFETCH_KEYS_AFTER: Duration = Duration::from_secs(60);
/// Signature algorithms accepted (asymmetric only: a shared-secret HS256 token
/// would let anyone who knows the client secret forge one).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why an OpenID Connect setting or sign-in is refused. The messages are shown
/// to the person signing in, so they say what is wrong without secrets.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The provider could not be reached or answered something unusable.
    #[error("the identity provider could not be used: {0}")]
    Provider(String),
    /// The provider refused the sign-in (an OAuth error).
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    /// The ID token failed a check.
    #[error("the identity provider's ID token was refused: {0}")]
    Token(String),
    /// No mapping gives this person a tenant.
    #[error("{0}")]
    Unmapped(String),
}

/// What the server may be asked about a mapping rule: whom it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A value of the groups claim (Okta: group names; Entra ID: object ids).
    Group(String),
    /// Every email of a domain.
    Domain(String),
    /// One email address.
    Email(String),
}

/// One mapping rule: `group:NAME=TENANT:ROLE`, `domain:DOMAIN=TENANT:ROLE` or
/// `email:ADDRESS=TENANT:ROLE`. The first rule that matches wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRule {
    /// Whom it selects.
    pub selector: Selector,
    /// The tenant's name.
    pub tenant: String,
    /// The role: `admin` or `viewer` (never `super_admin`).
    pub role: Role,
}

impl MappingRule {
    /// Parses `KIND:VALUE=TENANT:ROLE`.
    pub fn parse(text: &str) -> Result<MappingRule, OidcError> {
        let bad = |why: &str| {
            OidcError::Config(format!(
                "mapping {text:?}: {why}; expected group:NAME=TENANT:ROLE, domain:DOMAIN=TENANT:ROLE or email:ADDRESS=TENANT:ROLE"
            ))
        };
        let (selector, target) = text.trim().rsplit_once('=').ok_or_else(|| bad("no '='"))?;
        let (kind, value) = selector.split_once(':').ok_or_else(|| bad("no kind"))?;
        let value = value.trim();
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        let selector = match kind.trim() {
            "group" => Selector::Group(value.to_owned()),
            "domain" => Selector::Domain(value.trim_start_matches('@').to_ascii_lowercase()),
            "email" => Selector::Email(value.to_ascii_lowercase()),
            _ => return Err(bad("unknown kind")),
        };
        let (tenant, role) = target.split_once(':').ok_or_else(|| bad("no role"))?;
        let tenant = tenant.trim();
        if tenant.is_empty() {
            return Err(bad("empty tenant"));
        }
        let role = match role.trim() {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => return Err(bad("the role must be admin or viewer")),
        };
        Ok(MappingRule {
            selector,
            tenant: tenant.to_owned(),
            role,
        })
    }

    fn matches(&self, who: &Identity) -> bool {
        match &self.selector {
            Selector::Group(group) => who.groups.iter().any(|g| g == group),
            Selector::Domain(domain) => who
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
            Selector::Email(email) => who
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email)),
        }
    }
}

/// How the server signs people in through the provider.
#[derive(Clone)]
pub struct OidcSettings {
    /// The issuer, exactly as the provider's discovery names it.
    pub issuer: String,
    /// This server's client id at the provider.
    pub client_id: String,
    /// The client secret (never logged or shown).
    pub client_secret: String,
    /// The provider's name on the sign-in button.
    pub display_name: String,
    /// The claim that lists groups (`groups` for Okta and Entra ID).
    pub groups_claim: String,
    /// `<public URL>/portal/oidc/callback`, registered at the provider.
    pub redirect_uri: String,
    /// Claims to tenants and roles; the first that matches wins.
    pub rules: Vec<MappingRule>,
}

impl fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("display_name", &self.display_name)
            .field("groups_claim", &self.groups_claim)
            .field("redirect_uri", &self.redirect_uri)
            .field("rules", &self.rules)
            .finish()
    }
}

/// The provider's endpoints, from `<issuer>/.well-known/openid-configuration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
}

/// Who signed in, as the ID token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The issuer.
    pub issuer: String,
    /// The provider's stable id of the person.
    pub subject: String,
    /// The email, if the token has one that is not marked unverified.
    pub email: Option<String>,
    /// Values of the groups claim.
    pub groups: Vec<String>,
}

impl Identity {
    /// The tenant and role the rules give, or why none does.
    pub fn map<'a>(&self, rules: &'a [MappingRule]) -> Result<&'a MappingRule, OidcError> {
        rules.iter().find(|rule| rule.matches(self)).ok_or_else(|| {
            OidcError::Unmapped(format!(
                "{} is not given access to entitle: no mapping names this account's email or groups. Ask an entitle administrator to add one.",
                self.email.as_deref().unwrap_or("This account"),
            ))
        })
    }
}

/// A sign-in under way: what the callback needs, kept by the browser in an
/// HttpOnly cookie (so any node can finish it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Echoed by the provider; ties the callback to this browser.
    pub state: String,
    /// Must come back inside the ID token.
    pub nonce: String,
    /// PKCE: its SHA-256 was sent; the token call proves possession.
    pub verifier: String,
}

impl Pending {
    /// Fresh random values.
    pub fn new() -> Pending {
        Pending {
            state: random_text(),
            nonce: random_text(),
            verifier: random_text(),
        }
    }

    /// The PKCE S256 challenge.
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    /// The cookie's value.
    pub fn to_cookie(&self) -> String {
        format!("{}.{}.{}", self.state, self.nonce, self.verifier)
    }

    /// Reads the cookie's value; `None` when it is not one this server wrote.
    pub fn from_cookie(value: &str) -> Option<Pending> {
        let mut parts = value.split('.');
        let (state, nonce, verifier) = (parts.next()?, parts.next()?, parts.next()?);
        let ok = |p: &str| {
            p.len() == 43
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && ok(state) && ok(nonce) && ok(verifier)).then(|| Pending {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new()
    }
}

/// 32 random bytes, base64url: 43 characters.
fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The configured provider with its cached discovery and keys.
pub struct Oidc {
    /// The settings.
    pub settings: OidcSettings,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Cache>,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    discovery: Option<(Instant, Discovery)>,
    keys: Option<(Instant, JwkSet)>,
}

impl Oidc {
    /// Checks the settings and prepares the HTTP client. Nothing is fetched
    /// yet: the server starts even while the provider is down.
    pub fn new(settings: OidcSettings) -> Result<Arc<Oidc>, OidcError> {
        check_url("--oidc-issuer", &settings.issuer)?;
        if settings.client_id.trim().is_empty() {
            return Err(OidcError::Config("--oidc-client-id is empty".into()));
        }
        if settings.client_secret.is_empty() {
            return Err(OidcError::Config("the client secret is empty".into()));
        }
        if settings.rules.is_empty() {
            return Err(OidcError::Config(
                "no --oidc-map rule: nobody could sign in through the identity provider".into(),
            ));
        }
        let http = reqwest::Client::builder()
            // A redirect could lead anywhere; the provider's endpoints answer directly.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent("entitle")
            .build()
            .map_err(|e| OidcError::Config(format!("cannot prepare the HTTP client: {e}")))?;
        Ok(Arc::new(Oidc {
            settings,
            http,
            cache: tokio::sync::Mutex::new(Cache::default()),
        }))
    }

    /// The provider's endpoints, fetched once an hour.
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, discovery)) = &cache.discovery
            && at.elapsed() < CACHE_FOR
        {
            return Ok(discovery.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&url).await?;
        if discovery.issuer != self.settings.issuer {
            return Err(OidcError::Provider(format!(
                "discovery names the issuer {:?}, not the configured {:?}",
                discovery.issuer, self.settings.issuer
            )));
        }
        for (what, url) in [
            ("authorization_endpoint", &discovery.authorization_endpoint),
            ("token_endpoint", &discovery.token_endpoint),
            ("jwks_uri", &discovery.jwks_uri),
        ] {
            check_url(what, url)?;
            if origin(url) != origin(&self.settings.issuer) {
                return Err(OidcError::Provider(format!(
                    "{what} {url:?} is not on the issuer's origin; entitle only talks to the issuer"
                )));
            }
        }
        cache.discovery = Some((Instant::now(), discovery.clone()));
        Ok(discovery)
    }

    /// The signing keys; `refresh` fetches them again (at most once a minute).
    async fn keys(&self, refresh: bool) -> Result<JwkSet, OidcError> {
        let discovery = self.discovery().await?;
        let mut cache = self.cache.lock().await;
        if let Some((at, keys)) = &cache.keys {
            let age = at.elapsed();
            if age < CACHE_FOR && (!refresh || age < REFETCH_KEYS_AFTER) {
                return Ok(keys.clone());
            }
        }
        let keys: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        cache.keys = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The provider's authorization URL for this sign-in.
    pub async fn authorization_url(&self, pending: &Pending) -> Result<String, OidcError> {
        let discovery = self.discovery().await?;
        let mut url = reqwest::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| OidcError::Provider(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.settings.redirect_uri)
            .append_pair("scope", "openid email profile")
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pending.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges the code for tokens and checks the ID token.
    pub async fn finish(&self, code: &str, pending: &Pending) -> Result<Identity, OidcError> {
        let discovery = self.discovery().await?;
        // client_secret_basic (RFC 6749 §2.3.1: each part form-encoded first),
        // the method every provider accepts by default.
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(&self.settings.client_secret)),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.settings.redirect_uri),
                ("code_verifier", &pending.verifier),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token call: {}", without_url(&e))))?;
        let status = response.status();
        let body: Value = read_json(response).await?;
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("unknown error");
            let description = body["error_description"].as_str().unwrap_or("");
            return Err(OidcError::Refused(
                format!("{error} {description}").trim().to_owned(),
            ));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| OidcError::Provider("the token answer has no id_token".into()))?;
        self.verify(id_token, &pending.nonce).await
    }

    /// Checks an ID token against the provider's keys and this sign-in's nonce.
    pub async fn verify(&self, id_token: &str, nonce: &str) -> Result<Identity, OidcError> {
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| OidcError::Token(format!("not a signed JWT ({e})")))?;
        let keys = self.keys(false).await?;
        let keys = if find_key(&keys, header.kid.as_deref(), header.alg).is_some() {
            keys
        } else {
            // A key the provider rotated in since the last fetch.
            self.keys(true).await?
        };
        verify_id_token(
            id_token,
            &keys,
            &self.settings.issuer,
            &self.settings.client_id,
            nonce,
            &self.settings.groups_claim,
        )
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {}", without_url(&e))))?;
        if !response.status().is_success() {
            return Err(OidcError::Provider(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        let value: Value = read_json(response).await?;
        serde_json::from_value(value).map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }
}

/// Reads a JSON answer of at most `MAX_RESPONSE_BYTES`.
async fn read_json(mut response: reqwest::Response) -> Result<Value, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| OidcError::Provider(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(OidcError::Provider("an answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| OidcError::Provider(format!("not JSON: {e}")))
}

/// reqwest's message without the URL it repeats (which may carry a code).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "");
    }
    text
}

/// The key that signed a token: by `kid`, else the only key of a matching type.
fn find_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    let usable = |k: &&Jwk| {
        k.common
            .public_key_use
            .as_ref()
            .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
            && k.common
                .key_algorithm
                .is_none_or(|a| a.to_string() == format!("{alg:?}"))
    };
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(usable)
            .find(|k| k.common.key_id.as_deref() == Some(kid)),
        None => {
            let mut candidates = keys.keys.iter().filter(usable);
            let only = candidates.next();
            candidates.next().is_none().then_some(only).flatten()
        }
    }
}

/// The ID token's checks (OpenID Connect Core §3.1.3.7): signature by one of
/// the provider's keys with an asymmetric algorithm, `iss`, `aud` containing
/// the client id (and `azp` naming it when there are several audiences or an
/// `azp` at all), `exp` and `iat` within `LEEWAY_S`, and the sign-in's `nonce`.
pub fn verify_id_token(
    id_token: &str,
    keys: &JwkSet,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    groups_claim: &str,
) -> Result<Identity, OidcError> {
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|e| OidcError::Token(format!("not a signed JWT ({e})")))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(OidcError::Token(format!(
            "signed with {:?}, which entitle does not accept",
            header.alg
        )));
    }
    let jwk = find_key(keys, header.kid.as_deref(), header.alg)
        .ok_or_else(|| OidcError::Token("signed by a key the provider does not publish".into()))?;
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| OidcError::Token(format!("the provider's key is unusable ({e})")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.leeway = LEEWAY_S;
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            OidcError::Token(match e.kind() {
                ErrorKind::InvalidSignature => "its signature does not verify".into(),
                ErrorKind::ExpiredSignature => "it has expired".into(),
                ErrorKind::InvalidIssuer => "it was issued by another issuer".into(),
                ErrorKind::InvalidAudience => "it was issued for another client (audience)".into(),
                ErrorKind::ImmatureSignature => "it is not valid yet".into(),
                ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
                ErrorKind::InvalidAlgorithm => "its algorithm does not match its key".into(),
                other => format!("it is malformed ({other:?})"),
            })
        })?;
    let claims = data.claims;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| OidcError::Token("its iat is not a number".into()))?;
    if iat > now + LEEWAY_S as i64 {
        return Err(OidcError::Token("it was issued in the future".into()));
    }
    let several_audiences = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != client_id => {
            return Err(OidcError::Token(
                "it was issued to another client (azp)".into(),
            ));
        }
        None if several_audiences => {
            return Err(OidcError::Token(
                "it has several audiences and no azp".into(),
            ));
        }
        _ => {}
    }
    if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
        return Err(OidcError::Token(
            "its nonce is not this sign-in's (a replayed or injected token)".into(),
        ));
    }
    let subject = claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OidcError::Token("its sub is empty".into()))?
        .to_owned();
    let verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
    let email = claims
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| verified && e.contains('@') && e.len() <= 320)
        .map(|e| e.trim().to_lowercase());
    let groups = match claims.get(groups_claim) {
        Some(Value::Array(values)) => values
            .iter()
            .filter_map(Value::as_str)
            .take(1000)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(Identity {
        issuer: issuer.to_owned(),
        subject,
        email,
        groups,
    })
}

/// Only `https://`, except on the loopback interface (tests, a local provider).
fn check_url(what: &str, url: &str) -> Result<(), OidcError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| OidcError::Config(format!("{what} {url:?}: {e}")))?;
    // Only literal loopback addresses: a name could resolve elsewhere.
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(OidcError::Config(format!(
            "{what} {url:?} must be https:// (http:// only on the loopback interface)"
        ))),
    }
}

/// Scheme, host and port.
fn origin(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// application/x-www-form-urlencoded, for client credentials in Basic auth.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char);
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// The password hash stored for an account created by a sign-in through the
/// provider: not a PHC string, so no password ever verifies against it, and
/// it binds the account to the provider's subject.
pub fn account_marker(issuer: &str, subject: &str) -> String {
    let digest = Sha256::digest(format!("{issuer}\n{subject}").as_bytes());
    format!("oidc${}", hex::encode(digest))
}

/// Whether a stored password hash is `account_marker`'s: the account signs in
/// only through the provider.
pub fn is_account_marker(stored: &str) -> bool {
    stored.starts_with("oidc$")
}

#[cfg(test)]
mod tests;
