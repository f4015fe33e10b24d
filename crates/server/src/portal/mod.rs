//! The admin portal: server-rendered pages with their first view's data inlined,
//! plus small scripts that call the same `/api/v1` as every other client, with
//! the session cookie and a CSRF header.
//!
//! Pages are askama templates (`crates/server/templates/`), which escape every
//! value for HTML; the first view's data is JSON made safe for a script
//! element (`inline_json`). Styles and scripts are served by this server from
//! `/portal/assets/`, so the page's CSP allows no inline script or style and
//! nothing leaves the machine (no CDN).

mod admins;
mod grants;
mod scim_setup;
mod sign_in;
mod sso;
mod users;

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;

use axum::Extension;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::{SERVICES, ServiceDef, service};
use entitle_store::{Account, Actor, ActorKind, Role, Session, StoreError, Tenant, secrets};
use serde::Deserialize;
use serde_json::{Value, json};
use sign_in::{DUMMY_HASH, SignInGuard};
use time::OffsetDateTime;

use crate::admin;
use crate::admin::device_groups::device_group_list;
use crate::admin::directory::{SyncErrorJson, user_group_used_by};
use crate::auth::{Caller, SESSION_COOKIE, session};
use crate::enrollment::KeyJson;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddress, JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{
    DecisionJson, DeviceGroupJson, SettingsJson, applied_json, report_json, rfc3339,
};

/// The styles and scripts of the pages, by file name, with their media type.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "portal.css",
        "text/css; charset=utf-8",
        include_str!("assets/portal.css"),
    ),
    ("common.js", JS, include_str!("assets/common.js")),
    ("login.js", JS, include_str!("assets/login.js")),
    (
        "entitlements.js",
        JS,
        include_str!("assets/entitlements.js"),
    ),
    ("devices.js", JS, include_str!("assets/devices.js")),
    ("device.js", JS, include_str!("assets/device.js")),
    (
        "device_groups.js",
        JS,
        include_str!("assets/device_groups.js"),
    ),
    ("directory.js", JS, include_str!("assets/directory.js")),
    ("audit.js", JS, include_str!("assets/audit.js")),
    ("scim_setup.js", JS, include_str!("assets/scim_setup.js")),
    (
        "scim_setup.css",
        "text/css; charset=utf-8",
        include_str!("assets/scim_setup.css"),
    ),
    ("admins.js", JS, include_str!("assets/admins.js")),
    ("invitation.js", JS, include_str!("assets/invitation.js")),
    ("users.js", JS, include_str!("assets/users.js")),
    ("user.js", JS, include_str!("assets/user.js")),
    ("group.js", JS, include_str!("assets/group.js")),
    ("grants.js", JS, include_str!("assets/grants.js")),
];
const JS: &str = "text/javascript; charset=utf-8";

/// How long a portal session lasts.
const SESSION_HOURS: i64 = 8;

/// The portal's routes.
pub fn router() -> Router<AppState> {
    let assets = Router::new().route("/portal/assets/{name}", get(asset));
    let pages = Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/portal/login", post(login))
        .route("/portal/logout", post(logout))
        .route("/t/{tenant}", get(tenant_home))
        .route("/t/{tenant}/entitlements/{service}", get(entitlements_page))
        .route("/t/{tenant}/devices", get(devices_page))
        .route("/t/{tenant}/devices/{id}", get(device_page))
        .route("/t/{tenant}/device-groups", get(device_groups_page))
        .route("/t/{tenant}/directory", get(directory_page))
        .route("/t/{tenant}/audit", get(audit_page))
        .route("/t/{tenant}/scim-setup", get(scim_setup::scim_setup_page))
        .merge(sso::router())
        .merge(admins::router())
        .merge(users::router())
        .merge(grants::router())
        .layer(axum::middleware::map_response(page_headers))
        // One guard per server: its throttle and hashing permits are shared by
        // every sign-in this server answers.
        .layer(Extension(Arc::new(SignInGuard::default())));
    pages.merge(assets)
}

/// The page's security policy: scripts and styles only from this server's
/// files, never inline, so text that escaped into a page still cannot run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Pages are never framed, cached or allowed to load anything from elsewhere:
/// the portal works with no network beyond this server.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

/// A signed-in person; pages without one redirect to the sign-in page.
struct SignedIn(Session);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match session(parts, state).await {
            Ok(Some(session)) => Ok(SignedIn(session)),
            Ok(None) => Err(Redirect::to(&login_address(parts)).into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
}

/// The sign-in page, remembering the portal page that was asked for so that
/// the person lands on it once signed in.
fn login_address(parts: &Parts) -> String {
    let asked = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or_default();
    match return_path(asked) {
        Some(next) => format!("/login?next={}", encode_component(next)),
        None => "/login".to_owned(),
    }
}

/// A page a sign-in may send the browser back to: one of this server's tenant
/// pages, never another site (`//host`, `/\host`) nor an API address.
pub(crate) fn return_path(raw: &str) -> Option<&str> {
    let safe = raw.len() <= 2048
        && raw.starts_with("/t/")
        && !raw.contains("//")
        && !raw.contains('\\')
        && !raw.chars().any(char::is_control);
    safe.then_some(raw)
}

/// `next` of a query string, when it is a page [`return_path`] accepts.
pub(crate) fn next_from_query(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "next")
        .and_then(|(_, value)| return_path(&value).map(str::to_owned))
}

/// A cookie's percent-encoded return path, checked again after decoding.
pub(crate) fn decode_return_path(raw: &str) -> Option<String> {
    let decoded: String = form_urlencoded::parse(format!("next={raw}").as_bytes())
        .find(|(key, _)| key == "next")
        .map(|(_, value)| value.into_owned())?;
    return_path(&decoded).map(str::to_owned)
}

/// Percent-encodes a query value or cookie value.
pub(crate) fn encode_component(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl SignedIn {
    fn caller(&self) -> Caller {
        Caller::signed_in(&self.0.account)
    }

    async fn tenant(&self, state: &AppState, name: &str) -> Result<Tenant, Response> {
        self.caller()
            .tenant(state, name)
            .await
            .map_err(|e| error_page(&e))
    }
}

fn error_page(error: &ApiError) -> Response {
    let status = error.status();
    let page = MessagePage {
        title: status.as_u16().to_string(),
        heading: status.canonical_reason().unwrap_or("Error"),
        text: "That page does not exist, or you cannot see it.",
        code: "",
        back: true,
    };
    (status, render(&page)).into_response()
}

/// Serves one of the portal's styles or scripts.
async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, media_type, body)) = ASSETS.iter().find(|(file, ..)| *file == name) else {
        return ApiError::not_found("asset").into_response();
    };
    (
        [
            (CONTENT_TYPE, *media_type),
            // Asked for again on each use (there is no validator), so a new
            // release's scripts never run under an older page.
            (CACHE_CONTROL, "no-cache"),
            (
                axum::http::HeaderName::from_static("x-content-type-options"),
                "nosniff",
            ),
        ],
        *body,
    )
        .into_response()
}

/// Renders a template; a failure is logged and answered 500 without details.
fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a portal page failed to render");
            ApiError::internal().into_response()
        }
    }
}

/// JSON that is safe inside a `<script type="application/json">` element:
/// `<`, `>` and `&` cannot open a tag or a comment (`</script>`, `<!--`), and
/// U+2028/U+2029 cannot break a script that reads it. These characters only
/// occur inside JSON strings, where the `\uXXXX` escapes mean the same text.
fn inline_json(value: &Value) -> String {
    let text = value.to_string();
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            '\u{2028}' => safe.push_str("\\u2028"),
            '\u{2029}' => safe.push_str("\\u2029"),
            c => safe.push(c),
        }
    }
    safe
}

/// What the signed-in frame shows around every tenant page.
struct Frame {
    title: String,
    tenant: String,
    nav: Vec<NavLink>,
    email: String,
    role: &'static str,
    /// Already made safe by `inline_json`; the only value the templates do not escape.
    data: String,
    /// The page's script in `/portal/assets/`.
    script: &'static str,
}

/// One link of the top navigation.
struct NavLink {
    href: String,
    label: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "entitlements.html")]
struct EntitlementsPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "device_groups.html")]
struct DeviceGroupsPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "directory.html")]
struct DirectoryPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    /// The identity provider's name when sign-in through it is configured.
    sso: Option<String>,
    /// Where the provider's sign-in starts, carrying the page to return to.
    sso_start: String,
    /// The page to return to after signing in, or empty.
    next: String,
}

/// A heading and a sentence: error pages and the server without tenants.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: String,
    heading: &'static str,
    text: &'static str,
    /// A command shown after the text, or empty.
    code: &'static str,
    back: bool,
}

/// The shared frame of a tenant page: navigation, the person, and the data.
fn frame(
    signed_in: &SignedIn,
    tenant: &Tenant,
    active: &str,
    title: &str,
    data: Value,
    script: &'static str,
) -> Frame {
    let nav = [
        (
            "entitlements",
            "Entitlements",
            format!("/t/{}/entitlements/private_access", tenant.name),
        ),
        ("devices", "Devices", format!("/t/{}/devices", tenant.name)),
        (
            "device-groups",
            "Device groups",
            format!("/t/{}/device-groups", tenant.name),
        ),
        (
            "directory",
            "Directory",
            format!("/t/{}/directory", tenant.name),
        ),
        (
            "scim-setup",
            "SCIM setup",
            format!("/t/{}/scim-setup", tenant.name),
        ),
        ("grants", "Grants", format!("/t/{}/grants", tenant.name)),
        ("audit", "Audit log", format!("/t/{}/audit", tenant.name)),
        ("admins", "Admins", format!("/t/{}/admins", tenant.name)),
    ]
    .into_iter()
    .map(|(key, label, href)| NavLink {
        href,
        label,
        current: key == active,
    })
    .collect();
    let account = &signed_in.0.account;
    let common = json!({
        "tenant": tenant.name,
        "csrf": signed_in.0.csrf_token,
        "role": account.role.as_str(),
        "can_write": account.role != Role::Viewer,
    });
    Frame {
        title: title.to_owned(),
        tenant: tenant.name.clone(),
        nav,
        email: account.email.clone(),
        role: account.role.as_str(),
        data: inline_json(&json!({"common": common, "page": data})),
        script,
    }
}

async fn home(State(state): State<AppState>, parts: Parts) -> Response {
    match session(&parts, &state).await {
        Ok(Some(session)) => match session.account.tenant_id {
            Some(tenant_id) => match state.store.tenant(&tenant_id).await {
                Ok(tenant) => {
                    Redirect::to(&format!("/t/{}/entitlements/private_access", tenant.name))
                        .into_response()
                }
                Err(error) => ApiError::from(error).into_response(),
            },
            None => match state.store.tenants().await {
                Ok(tenants) => match tenants.first() {
                    Some(first) => {
                        Redirect::to(&format!("/t/{}/entitlements/private_access", first.name))
                            .into_response()
                    }
                    None => render(&MessagePage {
                        title: "No tenant yet".to_owned(),
                        heading: "No tenant yet",
                        text: "Create one with",
                        code: "entitle tenants create NAME",
                        back: false,
                    }),
                },
                Err(error) => ApiError::from(error).into_response(),
            },
        },
        Ok(None) => Redirect::to("/login").into_response(),
        Err(error) => error.into_response(),
    }
}

/// What an address no route answers gets: API and agent callers a JSON error,
/// SCIM clients a SCIM error, people a page with a way back.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/scim/") {
        return crate::scim::unrouted();
    }
    if ["/api/", "/agent/", "/portal/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
    {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; the API is described at /api/v1/openapi.json",
        )
        .into_response();
    }
    let mut response = render(&MessagePage {
        title: "Page not found".to_owned(),
        heading: "Page not found",
        text: "There is no page at this address. It may have moved, or the link may be mistyped.",
        code: "",
        back: true,
    });
    *response.status_mut() = StatusCode::NOT_FOUND;
    page_headers(response).await
}

async fn tenant_home(Path(tenant): Path<String>) -> Redirect {
    Redirect::to(&format!("/t/{tenant}/entitlements/private_access"))
}

async fn login_page(State(state): State<AppState>, parts: Parts) -> Response {
    let next = next_from_query(&parts).unwrap_or_default();
    let sso_start = if next.is_empty() {
        "/portal/oidc/start".to_owned()
    } else {
        format!("/portal/oidc/start?next={}", encode_component(&next))
    };
    render(&LoginPage {
        sso: state
            .config
            .oidc
            .as_ref()
            .map(|o| o.settings.display_name.clone()),
        sso_start,
        next,
    })
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// Refuses a sign-in body that is not JSON: a form on another site cannot send
/// JSON, so it cannot sign a browser in to an account of its choosing.
pub(crate) fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "send a JSON body (Content-Type: application/json)",
        ))
    }
}

/// Signs in with email and password; sets the session cookie.
///
/// A wrong password and an unknown email get the same answer after the same
/// work (an argon2 verification, against `DUMMY_HASH` for an unknown email),
/// and failures slow down only the (email, address) pair, never the account.
async fn login(
    State(state): State<AppState>,
    Extension(guard): Extension<Arc<SignInGuard>>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Response> {
    require_json(&headers)?;
    // No account has a longer email or password. Refused before any work, so
    // that an anonymous caller's text never reaches the audit log unbounded.
    if body.email.trim().len() > admin::accounts::MAX_EMAIL_BYTES
        || body.password.len() > admin::accounts::MAX_PASSWORD_BYTES
    {
        return Err(ApiError::bad_request(
            "invalid_sign_in",
            format!(
                "an email is at most {} bytes and a password at most {} bytes",
                admin::accounts::MAX_EMAIL_BYTES,
                admin::accounts::MAX_PASSWORD_BYTES
            ),
        ));
    }
    guard.check(&body.email, address)?;
    // Emails are unique per tenant only, so several enabled accounts may share
    // one; the account signed in to is the first whose password verifies. An
    // unknown email costs one verification against the dummy hash, like a
    // wrong password for a known one.
    let candidates: Vec<Account> = state
        .store
        .accounts_by_email(&body.email)
        .await?
        .into_iter()
        .filter(|a| a.disabled_at.is_none())
        .take(MAX_ACCOUNTS_PER_EMAIL)
        .collect();
    let mut signed_in = None;
    if candidates.is_empty() {
        guard
            .verify(body.password.clone(), DUMMY_HASH.to_owned())
            .await;
    }
    for account in &candidates {
        // An account of the identity provider has no password; it costs the
        // same work as any other, so its answer says nothing about it.
        let stored = if crate::oidc::is_account_marker(&account.password_hash)
            || crate::admin::invitations::is_invitation_placeholder(&account.password_hash)
        {
            DUMMY_HASH
        } else {
            &account.password_hash
        };
        if guard.verify(body.password.clone(), stored.to_owned()).await {
            signed_in = Some(account.clone());
            break;
        }
    }
    let Some(account) = signed_in else {
        guard.record_failure(&body.email, address);
        tracing::warn!("wrong email or password at sign-in");
        // Counted with every other wrong credential of this address; a right
        // password from the same address is never refused by it.
        let answer = state.failures.fail(
            address,
            ApiError::unauthorized("the email or the password is wrong"),
        );
        // Audited in the tenant of every account it was tried against (each
        // sees attempts on its own account, none another's; no tenant for an
        // unknown email), with the email as typed, never the password. Once
        // the address is refused for failing too often, its failures write no
        // more rows: an anonymous caller cannot grow the log past that pace.
        if answer.status() != StatusCode::TOO_MANY_REQUESTS {
            let mut tenants: Vec<Option<&str>> =
                candidates.iter().map(|a| a.tenant_id.as_deref()).collect();
            tenants.sort_unstable();
            tenants.dedup();
            if tenants.is_empty() {
                tenants.push(None);
            }
            for tenant_id in tenants {
                state
                    .store
                    .append_audit(
                        tenant_id,
                        &Actor::new(ActorKind::Anonymous, "", body.email.trim()),
                        "sign_in.failure",
                        body.email.trim(),
                        None,
                        Some(&json!({"address": address.map(|a| a.to_string())})),
                    )
                    .await?;
            }
        }
        return Err(answer);
    };
    guard.record_success(&body.email, address);
    let actor = Caller::signed_in(&account).actor;
    state
        .store
        .append_audit(
            account.tenant_id.as_deref(),
            &actor,
            "sign_in.success",
            &account.email,
            None,
            Some(&json!({"address": address.map(|a| a.to_string())})),
        )
        .await?;
    let cookie = start_session(
        &state,
        &account.id,
        admins::session_client(address, &headers),
    )
    .await?;
    let redirect = match &account.tenant_id {
        Some(tenant_id) => format!(
            "/t/{}/entitlements/private_access",
            state.store.tenant(tenant_id).await?.name
        ),
        None => "/".to_owned(),
    };
    Ok(with_session(
        Json(json!({"redirect": redirect})).into_response(),
        cookie,
    ))
}

/// Starts a portal session for the account (password, invitation or identity
/// provider alike) and returns the `Set-Cookie` value that carries it.
pub(crate) async fn start_session(
    state: &AppState,
    account_id: &str,
    client: entitle_store::SessionClient,
) -> Result<String, StoreError> {
    let token = secrets::new_secret("ent_session");
    let new = entitle_store::NewSession {
        token_hash: secrets::hash_secret(&token),
        account_id: account_id.to_owned(),
        csrf_token: secrets::new_secret("csrf"),
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(SESSION_HOURS),
        client,
    };
    state.store.start_session(new).await?;
    Ok(format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_HOURS * 3600,
        secure_attribute(state),
    ))
}

/// The response with the new session's cookie set.
pub(crate) fn with_session(mut response: Response, cookie: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

/// Accounts that may share one email (one per tenant) tried at one sign-in;
/// each costs an argon2 verification.
const MAX_ACCOUNTS_PER_EMAIL: usize = 8;

/// `; Secure` when the configured public URL is `https://`, else nothing.
fn secure_attribute(state: &AppState) -> &'static str {
    if state.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    }
}

/// Signs out: ends the session and clears the cookie.
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    parts: Parts,
) -> ApiResult<Response> {
    if let Some(token) = crate::auth::cookie(&parts, SESSION_COOKIE) {
        state
            .store
            .delete_session(&secrets::hash_secret(token))
            .await?;
    }
    state
        .store
        .append_audit(
            caller.tenant_id.as_deref(),
            &caller.actor,
            "sign_out",
            &caller.name,
            None,
            None,
        )
        .await?;
    tracing::info!(actor = %caller.name, "signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cleared = format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attribute(&state)
    );
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/login"));
    Ok(response)
}

fn service_json(def: &ServiceDef) -> Value {
    json!({
        "id": def.id,
        "display_name": def.display_name,
        "short": def.short,
        "label": def.enabled_by_default_label,
        "min_version": def.min_version.to_string(),
        // Whether clients too old for the settings ignore "Enabled by Default"
        // as well as the groups, for the preview's "client too old" block.
        "legacy_ignores_default": matches!(def.legacy, entitle_core::LegacyBehaviour::AlwaysEnabled),
    })
}

async fn entitlements_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((tenant, service_id)): Path<(String, String)>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let service = service(&service_id).map_err(|e| {
        error_page(&ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            e.to_string(),
        ))
    })?;
    let load = async {
        let stored = state.store.settings(&tenant.id, service).await?;
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let mut selected_names = BTreeMap::new();
        // A deleted group still selected (a tombstone that matches nothing) is
        // shown by the name it had, marked deleted, never as a bare id.
        let user_ids = stored
            .settings
            .user_groups
            .iter()
            .chain(&stored.settings.exclude_user_groups);
        for id in user_ids {
            let name = match entitle_core::GroupNames::user_group(&*snapshot, id) {
                Some(name) => name.to_owned(),
                None => entitle_core::GroupNames::deleted_user_group(&*snapshot, id)
                    .map_or_else(|| id.0.clone(), |name| format!("{name} (deleted)")),
            };
            selected_names.insert(id.0.clone(), name);
        }
        let deleted_device_groups: BTreeMap<&str, String> = stored
            .settings
            .device_groups
            .iter()
            .chain(&stored.settings.exclude_device_groups)
            .filter(|id| entitle_core::GroupNames::device_group(&*snapshot, id).is_none())
            .filter_map(|id| {
                entitle_core::GroupNames::deleted_device_group(&*snapshot, id)
                    .map(|name| (id.as_str(), format!("{name} (deleted)")))
            })
            .collect();
        let devices = state.populations.current(&tenant.id).await?;
        let device_groups: Vec<DeviceGroupJson> = snapshot
            .device_groups()
            .iter()
            .map(|g| DeviceGroupJson::new(g, devices.held_by(g)))
            .collect();
        let counts = state.store.directory_counts(&tenant.id).await?;
        Ok::<_, StoreError>(json!({
            "service": service_json(service),
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
            "settings": SettingsJson::from(&stored.settings),
            "etag": format!("\"{}\"", stored.version),
            "group_names": selected_names,
            "device_groups": device_groups,
            "deleted_device_groups": deleted_device_groups,
            "group_count": counts.groups,
            "device_count": devices.len(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    let frame = frame(
        &signed_in,
        &tenant,
        "entitlements",
        &format!("{} entitlement", service.display_name),
        data,
        "entitlements.js",
    );
    Ok(render(&EntitlementsPage { frame }))
}

/// Devices a portal page shows at once.
const DEVICE_PAGE_SIZE: u32 = 100;

async fn devices_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<crate::admin::devices::DeviceQuery>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    // The same listing as `GET /devices`: every filter over the whole set, then paged.
    let listing = query.listing().map_err(|e| error_page(&e))?;
    let load = async {
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let page = listing
            .page(
                &state,
                &tenant.id,
                &snapshot,
                DEVICE_PAGE_SIZE,
                query.cursor.as_deref(),
            )
            .await?;
        let total = listing.total(&state, &tenant.id).await?;
        let mut items = Vec::new();
        for device in &page.items {
            let decisions = snapshot.decide(device);
            let services: BTreeMap<&str, Value> = decisions
                .services
                .iter()
                .map(|(s, d)| {
                    (
                        s.id,
                        json!({"enabled": d.enabled, "reason": d.reason.code()}),
                    )
                })
                .collect();
            let report = report_json(&device.report);
            items.push(json!({
                "id": device.id, "user_name": device.user_name, "hostname": report.hostname, "os": report.os,
                "client_version": report.client_version,
                "last_sync_at": rfc3339(device.last_sync_at), "services": services,
                "ownership": ownership_json(device),
                "applied": device.applied.as_ref().map(|a| applied_json(a, snapshot.tenant.config_version)),
            }));
        }
        let keys = state.store.enrollment_keys(&tenant.id).await?;
        let f = &listing.filter;
        let filtered = query.cursor.is_some()
            || [
                &query.search,
                &query.user_name,
                &query.hostname,
                &query.os,
                &query.ownership,
                &query.state,
                &query.client_version_below,
                &query.last_seen_before,
                &query.last_seen_after,
            ]
            .iter()
            .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()))
            || query.pending.is_some()
            || query.applied.is_some();
        Ok::<_, crate::error::ApiError>(json!({
            "device_approval": tenant.device_approval,
            "keys": keys.iter().map(KeyJson::from).collect::<Vec<_>>(),
            "items": items,
            "more": page.next_cursor.is_some(),
            "next_cursor": page.next_cursor,
            "total": total,
            "filtered": filtered,
            "first_page": query.cursor.is_none(),
            "search": f.search,
            "os": f.os.map(|o| o.as_str()),
            "ownership": f.ownership.map(|o| o.as_str()),
            "client_version_below": query.client_version_below.as_deref().map(str::trim),
            "service": query.service.as_deref().map(str::trim).filter(|s| !s.is_empty()),
            "state": query.state.as_deref().map(str::trim).filter(|s| !s.is_empty()),
            "applied": f.applied_current.map(|current| if current { "current" } else { "stale" }),
            "sort": f.sort.as_str(),
            "order": if f.descending { "desc" } else { "asc" },
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(|e| e.into_response())?;
    let frame = frame(
        &signed_in,
        &tenant,
        "devices",
        "Devices",
        data,
        "devices.js",
    );
    Ok(render(&DevicesPage { frame }))
}

/// Who says what a device is: the effective ownership (what device groups
/// match), what the device reports, who attested it, whether the two
/// disagree, and whether the device still waits for approval. The names are
/// those of the API's DEVICE.
fn ownership_json(device: &entitle_store::Device) -> Value {
    json!({
        "ownership": device.decision_report().ownership.as_str(),
        "reported_ownership": device.report.ownership.as_str(),
        "ownership_attested_by": device.attested_ownership.as_ref().map(|a| a.by.as_str()),
        "ownership_conflict": device.ownership_conflict(),
        "pending_approval": device.pending_approval,
    })
}

async fn device_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let device = state
        .store
        .device(&tenant.id, &id)
        .await
        .map_err(|e| error_page(&ApiError::from(e)))?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let decisions = snapshot.decide(&device);
    let groups: Vec<Value> = snapshot
        .device_groups()
        .iter()
        .filter(|g| decisions.device_groups.contains(&g.id))
        .map(|g| json!({"id": g.id.0, "name": g.name}))
        .collect();
    let services: Vec<Value> = decisions
        .services
        .iter()
        .map(|(s, d)| json!({"service": service_json(s), "decision": DecisionJson::from(d)}))
        .collect();
    let data = json!({
        "device": {"id": device.id, "user_name": device.user_name, "report": report_json(&device.report),
                   "enrolled_at": rfc3339(device.enrolled_at), "last_sync_at": rfc3339(device.last_sync_at),
                   "ownership": ownership_json(&device),
                   "applied": device.applied.as_ref().map(|a| applied_json(a, snapshot.tenant.config_version))},
        "device_groups": groups,
        "services": services,
    });
    let frame = frame(
        &signed_in,
        &tenant,
        "devices",
        &device.report.hostname,
        data,
        "device.js",
    );
    Ok(render(&DevicePage { frame }))
}

async fn device_groups_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let load = async {
        let devices = state.populations.current(&tenant.id).await?;
        // Each row names the entitlements that select its group, so that a
        // deletion is never a surprise.
        let items = device_group_list(&state, &tenant.id, &devices).await?;
        Ok::<_, ApiError>(json!({
            "items": items,
            "device_count": devices.len(),
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(IntoResponse::into_response)?;
    let frame = frame(
        &signed_in,
        &tenant,
        "device-groups",
        "Device groups",
        data,
        "device_groups.js",
    );
    Ok(render(&DeviceGroupsPage { frame }))
}

async fn directory_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let load = async {
        let counts = state.store.directory_counts(&tenant.id).await?;
        let page = state.store.search_groups(&tenant.id, "", 200, None).await?;
        let names: BTreeMap<String, String> = page
            .items
            .iter()
            .map(|g| (g.id.clone(), g.display_name.clone()))
            .collect();
        let selections = admin::selections(&state, &tenant.id).await?;
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let groups: Vec<Value> = page
            .items
            .iter()
            .map(|g| json!({
                "id": g.id, "display_name": g.display_name, "source": g.source, "member_count": g.member_count,
                "effective_members": snapshot.active_members(&entitle_core::GroupId(g.id.clone())),
                "used_by": user_group_used_by(&selections, &g.id),
                "nested": g.member_groups.iter().map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())).collect::<Vec<_>>(),
            }))
            .collect();
        Ok::<_, ApiError>(json!({
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
            "users": counts.users, "groups": counts.groups, "group_items": groups, "more_groups": page.next_cursor.is_some(),
            "last_scim_request_at": tenant.last_scim_request_at.map(rfc3339),
            "scim_base_path": format!("/scim/v2/{}/", tenant.name),
            "recent_errors": state.directory.recent_errors(&tenant.id).into_iter().map(SyncErrorJson::from).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(IntoResponse::into_response)?;
    let frame = frame(
        &signed_in,
        &tenant,
        "directory",
        "Directory",
        data,
        "directory.js",
    );
    Ok(render(&DirectoryPage { frame }))
}

/// Config versions the audit page shows at first; older ones load on demand.
const HISTORY_PAGE: usize = 200;

#[derive(Deserialize)]
struct AuditQuery {
    service: Option<String>,
    actor: Option<String>,
}

async fn audit_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let service_filter = query.service.clone().filter(|s| service(s).is_ok());
    let actor_filter = query
        .actor
        .clone()
        .map(|a| a.trim().to_lowercase())
        .filter(|a| !a.is_empty());
    let load = async {
        let history = state
            .store
            .history(&tenant.id, service_filter.as_deref(), HISTORY_PAGE as u32)
            .await?;
        let versions: Vec<Value> = history
            .iter()
            .filter(|v| actor_filter.as_ref().is_none_or(|a| v.actor.display().to_lowercase().contains(a)))
            .map(|v| json!({
                "config_version": v.version, "service": v.service, "actor": v.actor.display(), "at": rfc3339(v.at),
                "before": SettingsJson::from(&v.before), "after": SettingsJson::from(&v.after), "restored_from": v.restored_from,
            }))
            .collect();
        // All activity is read by the page's script through the API, which
        // filters and pages over the whole log.
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        // Groups deleted since: named as they were, and listed so that a
        // restore of a version selecting them is offered without them.
        let mut deleted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for version in &history {
            for id in version
                .before
                .user_groups
                .iter()
                .chain(&version.after.user_groups)
            {
                let name = match entitle_core::GroupNames::user_group(&*snapshot, id) {
                    Some(name) => name.to_owned(),
                    None => {
                        deleted.insert(id.0.clone());
                        entitle_core::GroupNames::deleted_user_group(&*snapshot, id).map_or_else(
                            || "(deleted group)".to_owned(),
                            |n| format!("{n} (deleted)"),
                        )
                    }
                };
                names.insert(id.0.clone(), name);
            }
            for id in version
                .before
                .device_groups
                .iter()
                .chain(&version.after.device_groups)
            {
                let name = match entitle_core::GroupNames::device_group(&*snapshot, id) {
                    Some(name) => name.to_owned(),
                    None => {
                        deleted.insert(id.0.clone());
                        entitle_core::GroupNames::deleted_device_group(&*snapshot, id).map_or_else(
                            || "(deleted device group)".to_owned(),
                            |n| format!("{n} (deleted)"),
                        )
                    }
                };
                names.insert(id.0.clone(), name);
            }
        }
        Ok::<_, StoreError>(json!({
            "versions": versions, "names": names, "deleted": deleted,
            // Older versions are fetched from the API's history, page by page.
            "history_next_cursor": (history.len() == HISTORY_PAGE)
                .then(|| history.last().map(|v| admin::entitlements::encode_history_cursor(v.version)))
                .flatten(),
            "service": service_filter, "actor": query.actor,
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    let frame = frame(&signed_in, &tenant, "audit", "Audit log", data, "audit.js");
    Ok(render(&AuditPage { frame }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_json_cannot_end_or_comment_out_its_script_element() {
        let value = json!({"name": "</script><!--<script>&\u{2028}\u{2029}\"'"});
        let inline = inline_json(&value);
        assert!(
            !inline.contains(['<', '>', '&', '\u{2028}', '\u{2029}']),
            "{inline}"
        );
        let back: Value = serde_json::from_str(&inline).expect("still JSON");
        assert_eq!(back, value, "the same text once parsed");
    }
}
