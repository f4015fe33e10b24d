//! The admin portal: server-rendered pages with their first view's data inlined,
//! plus small scripts that call the same `/api/v1` as every other client, with
//! the session cookie and a CSRF header.
//!
//! Every page is one request: styles, script and data are inlined, so the first
//! view needs nothing else and nothing leaves the machine (no CDN).

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::{SERVICES, ServiceDef, service};
use entitle_store::{DeviceFilter, Role, Session, StoreError, Tenant, secrets};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::{Caller, SESSION_COOKIE, session};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddress, JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{DecisionJson, DeviceGroupJson, SettingsJson, report_json, rfc3339};

const CSS: &str = include_str!("assets/portal.css");
const COMMON_JS: &str = include_str!("assets/common.js");

/// How long a portal session lasts.
const SESSION_HOURS: i64 = 8;
/// Wrong passwords in a row before an account is slowed down.
const FREE_ATTEMPTS: i64 = 5;

/// The portal's routes.
pub fn router() -> Router<AppState> {
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
        .route("/t/{tenant}/audit", get(audit_page));
    pages.layer(axum::middleware::map_response(page_headers))
}

/// Pages are never framed, cached or allowed to load anything from elsewhere:
/// the portal works with no network beyond this server.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
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
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(error) => Err(error.into_response()),
        }
    }
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
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>{status} · entitle</title><style>{CSS}</style></head>\
         <body><main id=\"main\" class=\"narrow\"><h1>{}</h1><p>That page does not exist, or you cannot see it.</p><p><a href=\"/\">Back to entitle</a></p></main></body></html>",
        status.canonical_reason().unwrap_or("Error")
    );
    (status, Html(body)).into_response()
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The shared page frame: navigation, inlined styles, data and scripts.
fn page(
    signed_in: &SignedIn,
    tenant: &Tenant,
    active: &str,
    title: &str,
    body: &str,
    data: Value,
    script: &str,
) -> Response {
    let nav: String = [
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
        ("audit", "Audit log", format!("/t/{}/audit", tenant.name)),
    ]
    .iter()
    .map(|(key, label, href)| {
        let current = if *key == active {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    })
    .collect();
    let account = &signed_in.0.account;
    let common = json!({
        "tenant": tenant.name,
        "csrf": signed_in.0.csrf_token,
        "role": account.role.as_str(),
        "can_write": account.role != Role::Viewer,
    });
    let data = json!({"common": common, "page": data});
    // `</` inside inline JSON would end the script element early.
    let data = data.to_string().replace("</", "<\\/");
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · {tenant_name} · entitle</title>
<style>{CSS}</style>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <span class="brand">entitle</span>
  <span class="tenant" title="Tenant">{tenant_name}</span>
  <nav aria-label="Administration">{nav}</nav>
  <span class="who">{email} · {role}</span>
  <button type="button" id="sign-out" class="link">Sign out</button>
</header>
<main id="main">
{body}
</main>
<script type="application/json" id="page-data">{data}</script>
<script>{COMMON_JS}</script>
<script>{script}</script>
</body>
</html>"##,
        tenant_name = escape(&tenant.name),
        email = escape(&account.email),
        role = account.role.as_str(),
    );
    let mut response = Html(html).into_response();
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

async fn home(State(state): State<AppState>, parts: Parts) -> Response {
    match session(&parts, &state).await {
        Ok(Some(session)) => match session.account.tenant_id {
            Some(tenant_id) => match state.store.tenant(&tenant_id).await {
                Ok(tenant) => Redirect::to(&format!("/t/{}/entitlements/private_access", tenant.name)).into_response(),
                Err(error) => ApiError::from(error).into_response(),
            },
            None => match state.store.tenants().await {
                Ok(tenants) => match tenants.first() {
                    Some(first) => Redirect::to(&format!("/t/{}/entitlements/private_access", first.name)).into_response(),
                    None => Html(format!(
                        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>entitle</title><style>{CSS}</style></head>\
                         <body><main id=\"main\" class=\"narrow\"><h1>No tenant yet</h1><p>Create one with <code>entitle tenants create NAME</code>.</p></main></body></html>"
                    ))
                    .into_response(),
                },
                Err(error) => ApiError::from(error).into_response(),
            },
        },
        Ok(None) => Redirect::to("/login").into_response(),
        Err(error) => error.into_response(),
    }
}

async fn tenant_home(Path(tenant): Path<String>) -> Redirect {
    Redirect::to(&format!("/t/{tenant}/entitlements/private_access"))
}

async fn login_page() -> Html<String> {
    Html(format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Sign in · entitle</title>
<style>{CSS}</style>
</head>
<body>
<main id="main" class="narrow">
<h1>Sign in to entitle</h1>
<form id="login" novalidate>
  <label for="email">Email</label>
  <input id="email" name="email" type="email" autocomplete="username" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <p id="login-error" class="error" role="alert" hidden></p>
  <button type="submit" class="primary">Sign in</button>
</form>
</main>
<script>{script}</script>
</body>
</html>"##,
        script = include_str!("assets/login.js")
    ))
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// Signs in with email and password; sets the session cookie.
async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Response> {
    state.failures.check(address)?;
    // A form on another site cannot send JSON, so it cannot sign a browser in
    // to an account of its choosing.
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "sign in with a JSON body (Content-Type: application/json)",
        ));
    }
    let refused = || ApiError::unauthorized("the email or the password is wrong");
    // Emails are unique per tenant only: the account signed in to is the one
    // (enabled, of those with this email) whose password verifies, else the first.
    let candidates = state.store.accounts_by_email(&body.email).await?;
    let enabled: Vec<_> = candidates
        .into_iter()
        .filter(|a| a.disabled_at.is_none())
        .collect();
    let Some(first) = enabled.first().cloned() else {
        // Same work as for a wrong password, so emails cannot be probed by timing.
        let _ = crate::password::verify(&body.password, crate::password::decoy_hash());
        state.failures.record_failure(address);
        return Err(refused());
    };
    let account = match enabled.len() {
        1 => first,
        _ => enabled
            .into_iter()
            .find(|a| crate::password::verify(&body.password, &a.password_hash))
            .unwrap_or(first),
    };
    let now = OffsetDateTime::now_utc();
    if let Some(until) = account.locked_until
        && until > now
    {
        let wait = (until - now).whole_seconds() + 1;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "account_slowed_down",
            format!("too many wrong passwords for this account; try again in {wait} s"),
        ));
    }
    if !crate::password::verify(&body.password, &account.password_hash) {
        let failures = account.failed_logins + 1;
        // From the fifth wrong password in a row, each one locks the account for
        // twice as long as the one before, up to a quarter of an hour.
        let locked_until = (failures >= FREE_ATTEMPTS).then(|| {
            let seconds = (30i64 << (failures - FREE_ATTEMPTS).min(5)).min(900);
            now + time::Duration::seconds(seconds)
        });
        state
            .store
            .record_sign_in(&account.id, false, locked_until)
            .await?;
        state.failures.record_failure(address);
        tracing::warn!(account = %account.id, failures, "wrong password");
        return Err(refused());
    }
    state.store.record_sign_in(&account.id, true, None).await?;
    let token = secrets::new_secret("ent_session");
    let csrf = secrets::new_secret("csrf");
    let expires = now + time::Duration::hours(SESSION_HOURS);
    state
        .store
        .create_session(&secrets::hash_secret(&token), &account.id, &csrf, expires)
        .await?;
    let redirect = match &account.tenant_id {
        Some(tenant_id) => format!(
            "/t/{}/entitlements/private_access",
            state.store.tenant(tenant_id).await?.name
        ),
        None => "/".to_owned(),
    };
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_HOURS * 3600,
        if secure { "; Secure" } else { "" }
    );
    let mut response = Json(json!({"redirect": redirect})).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    Ok(response)
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
    tracing::info!(actor = %caller.name, "signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static("entitle_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
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
        for id in &stored.settings.user_groups {
            let name = entitle_core::GroupNames::user_group(&*snapshot, id)
                .unwrap_or(id.as_str())
                .to_owned();
            selected_names.insert(id.0.clone(), name);
        }
        let devices = state.store.all_devices(&tenant.id).await?;
        let device_groups: Vec<DeviceGroupJson> = snapshot
            .device_groups()
            .iter()
            .map(|g| {
                DeviceGroupJson::new(g, devices.iter().filter(|d| g.matches(&d.report)).count())
            })
            .collect();
        let counts = state.store.directory_counts(&tenant.id).await?;
        Ok::<_, StoreError>(json!({
            "service": service_json(service),
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
            "settings": SettingsJson::from(&stored.settings),
            "etag": format!("\"{}\"", stored.version),
            "group_names": selected_names,
            "device_groups": device_groups,
            "group_count": counts.groups,
            "device_count": devices.len(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    let body = include_str!("assets/entitlements.html");
    Ok(page(
        &signed_in,
        &tenant,
        "entitlements",
        &format!("{} entitlement", service.display_name),
        body,
        data,
        include_str!("assets/entitlements.js"),
    ))
}

#[derive(Deserialize)]
struct DeviceListQuery {
    search: Option<String>,
    service: Option<String>,
    state: Option<String>,
}

async fn devices_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<DeviceListQuery>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let search = query.search.clone().filter(|s| !s.trim().is_empty());
    let wanted_service = query.service.as_deref().and_then(|id| service(id).ok());
    let wanted_state = query
        .state
        .as_deref()
        .filter(|s| matches!(*s, "on" | "off"));
    let load = async {
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let filter = DeviceFilter {
            search: search.clone(),
            ..DeviceFilter::default()
        };
        let page = state.store.devices(&tenant.id, &filter, 200, None).await?;
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
            if let (Some(service), Some(state)) = (wanted_service, wanted_state) {
                let enabled = services
                    .get(service.id)
                    .and_then(|v| v["enabled"].as_bool())
                    .unwrap_or(false);
                if enabled != (state == "on") {
                    continue;
                }
            }
            let report = report_json(&device.report);
            items.push(json!({
                "id": device.id, "user_name": device.user_name, "hostname": report.hostname, "os": report.os,
                "ownership": report.ownership, "client_version": report.client_version,
                "last_sync_at": rfc3339(device.last_sync_at), "services": services,
            }));
        }
        Ok::<_, StoreError>(json!({
            "items": items,
            "more": page.next_cursor.is_some(),
            "search": search,
            "service": wanted_service.map(|s| s.id),
            "state": wanted_state,
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(page(
        &signed_in,
        &tenant,
        "devices",
        "Devices",
        include_str!("assets/devices.html"),
        data,
        include_str!("assets/devices.js"),
    ))
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
                   "enrolled_at": rfc3339(device.enrolled_at), "last_sync_at": rfc3339(device.last_sync_at)},
        "device_groups": groups,
        "services": services,
    });
    Ok(page(
        &signed_in,
        &tenant,
        "devices",
        &device.report.hostname,
        include_str!("assets/device.html"),
        data,
        include_str!("assets/device.js"),
    ))
}

async fn device_groups_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let load = async {
        let groups = state.store.device_groups(&tenant.id).await?;
        let devices = state.store.all_devices(&tenant.id).await?;
        let items: Vec<DeviceGroupJson> = groups
            .iter()
            .map(|g| {
                DeviceGroupJson::new(g, devices.iter().filter(|d| g.matches(&d.report)).count())
            })
            .collect();
        Ok::<_, StoreError>(json!({"items": items, "device_count": devices.len()}))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(page(
        &signed_in,
        &tenant,
        "device-groups",
        "Device groups",
        include_str!("assets/device_groups.html"),
        data,
        include_str!("assets/device_groups.js"),
    ))
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
        let groups: Vec<Value> = page
            .items
            .iter()
            .map(|g| json!({
                "id": g.id, "display_name": g.display_name, "source": g.source, "member_count": g.member_count,
                "nested": g.member_groups.iter().map(|id| names.get(id).cloned().unwrap_or_else(|| id.clone())).collect::<Vec<_>>(),
            }))
            .collect();
        Ok::<_, StoreError>(json!({
            "users": counts.users, "groups": counts.groups, "group_items": groups, "more_groups": page.next_cursor.is_some(),
            "last_scim_request_at": tenant.last_scim_request_at.map(rfc3339),
            "scim_base_path": format!("/scim/v2/{}/", tenant.name),
            "recent_errors": state.directory.recent_errors(&tenant.id).iter().map(|e| json!({
                "at": rfc3339(e.at), "request": e.request, "status": e.status, "detail": e.detail,
            })).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(page(
        &signed_in,
        &tenant,
        "directory",
        "Directory",
        include_str!("assets/directory.html"),
        data,
        include_str!("assets/directory.js"),
    ))
}

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
            .history(&tenant.id, service_filter.as_deref(), 200)
            .await?;
        let versions: Vec<Value> = history
            .iter()
            .filter(|v| actor_filter.as_ref().is_none_or(|a| v.actor.display().to_lowercase().contains(a)))
            .map(|v| json!({
                "config_version": v.version, "service": v.service, "actor": v.actor.display(), "at": rfc3339(v.at),
                "before": SettingsJson::from(&v.before), "after": SettingsJson::from(&v.after),
            }))
            .collect();
        let entries = state.store.audit(&tenant.id, 200, None).await?;
        let audit: Vec<Value> = entries
            .iter()
            .filter(|(_, e)| actor_filter.as_ref().is_none_or(|a| e.actor.display().to_lowercase().contains(a)))
            .filter(|(_, e)| service_filter.as_ref().is_none_or(|s| &e.target == s))
            .map(|(_, e)| json!({"at": rfc3339(e.at), "actor": e.actor.display(), "action": e.action, "target": e.target}))
            .collect();
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for version in &history {
            for id in version
                .before
                .user_groups
                .iter()
                .chain(&version.after.user_groups)
            {
                names.insert(
                    id.0.clone(),
                    entitle_core::GroupNames::user_group(&*snapshot, id)
                        .unwrap_or("(deleted group)")
                        .to_owned(),
                );
            }
            for id in version
                .before
                .device_groups
                .iter()
                .chain(&version.after.device_groups)
            {
                names.insert(
                    id.0.clone(),
                    entitle_core::GroupNames::device_group(&*snapshot, id)
                        .unwrap_or("(deleted device group)")
                        .to_owned(),
                );
            }
        }
        Ok::<_, StoreError>(json!({
            "versions": versions, "audit": audit, "names": names,
            "service": service_filter, "actor": query.actor,
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(|e| ApiError::from(e).into_response())?;
    Ok(page(
        &signed_in,
        &tenant,
        "audit",
        "Audit log",
        include_str!("assets/audit.html"),
        data,
        include_str!("assets/audit.js"),
    ))
}
