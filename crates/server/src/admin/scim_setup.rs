//! Connecting an identity provider over SCIM: the tenant's SCIM tokens (rotated
//! with a grace period for the previous one, listed without secrets, revoked),
//! what the setup page shows (base URL, last request, recent errors) and a
//! server-side check of the endpoint.

use axum::extract::{Path, Request, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use entitle_store::{MAX_SCIM_GRACE, ScimToken, ScimTokenState, StoreError, Tenant, secrets};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::directory::SyncErrorJson;
use crate::auth::Caller;
use crate::directory::LastRequest;
use crate::error::{ApiError, ApiResult};
use crate::extract::{body_bytes, json_from_slice};
use crate::state::AppState;
use crate::wire::rfc3339;

/// The grace period of a rotation that names none.
const DEFAULT_GRACE_HOURS: u32 = 24;

/// The SCIM setup routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/scim-token",
            post(rotate_scim_token),
        )
        .route(
            "/api/v1/tenants/{tenant}/scim-tokens",
            get(list_scim_tokens),
        )
        .route(
            "/api/v1/tenants/{tenant}/scim-tokens/{id}",
            delete(revoke_scim_token),
        )
        .route("/api/v1/tenants/{tenant}/scim-setup", get(scim_setup))
        .route(
            "/api/v1/tenants/{tenant}/scim-setup/check",
            get(check_scim_setup),
        )
}

/// Body of `POST …/scim-token` (optional: an empty body keeps the default).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateScimToken {
    /// How long the previous token keeps working, in hours: 0 ends it now;
    /// default 24, at most 168 (a week).
    #[schema(minimum = 0, maximum = 168)]
    pub grace_period_hours: Option<u32>,
}

/// A SCIM token, without its secret.
#[derive(Serialize, ToSchema)]
pub struct ScimTokenJson {
    /// Id.
    pub id: String,
    /// `current` (the newest), `grace` (replaced, still working), `expired`
    /// (replaced, grace period over) or `revoked`.
    pub status: String,
    /// When it was created.
    pub created_at: String,
    /// When the identity provider last presented it (to the minute).
    pub last_used_at: Option<String>,
    /// The end of its grace period, once replaced.
    pub expires_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Seconds left of its grace period, while in one.
    pub grace_seconds_left: Option<i64>,
}

impl ScimTokenJson {
    fn new(token: &ScimToken, now: OffsetDateTime) -> Self {
        let state = token.state(now);
        Self {
            id: token.id.clone(),
            status: state.as_str().to_owned(),
            created_at: rfc3339(token.created_at),
            last_used_at: token.last_used_at.map(rfc3339),
            expires_at: token.expires_at.map(rfc3339),
            revoked_at: token.revoked_at.map(rfc3339),
            grace_seconds_left: match state {
                ScimTokenState::Grace(until) => Some((until - now).whole_seconds().max(0)),
                _ => None,
            },
        }
    }
}

/// A new SCIM token, shown once.
#[derive(Serialize, ToSchema)]
pub struct RotatedScimToken {
    /// The bearer token the identity provider must use from now on.
    pub scim_token: String,
    /// Where the identity provider sends SCIM requests.
    pub scim_base_path: String,
    /// The new token's record.
    pub token: ScimTokenJson,
    /// The previous token that keeps working until its `expires_at`, if any.
    pub previous: Option<ScimTokenJson>,
    /// Ids of the older tokens that stopped working now.
    pub ended: Vec<String>,
}

/// Creates a new SCIM token, shown once. Of the tokens that worked until now,
/// the one the identity provider used last (the newer if neither was used)
/// keeps working for the grace period (default 24 hours; 0 ends it now), so
/// that provisioning does not break while the new token is pasted; every
/// other one stops at once, so at most two tokens ever work.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/scim-token", tag = "scim",
    request_body(content = Option<RotateScimToken>, description = "Optional; an empty body rotates with a 24-hour grace period"),
    params(("tenant" = String, Path)),
    responses((status = 200, body = RotatedScimToken), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn rotate_scim_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    request: Request,
) -> ApiResult<Json<RotatedScimToken>> {
    // The caller is known before the body is read.
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let bytes = body_bytes(request, &state).await?;
    // An empty body (as before grace periods existed) and `null` mean the default.
    let body: RotateScimToken = if bytes.iter().all(u8::is_ascii_whitespace) {
        RotateScimToken::default()
    } else {
        json_from_slice::<Option<RotateScimToken>>(&bytes)?.unwrap_or_default()
    };
    let hours = body.grace_period_hours.unwrap_or(DEFAULT_GRACE_HOURS);
    let grace = time::Duration::hours(i64::from(hours));
    if grace > MAX_SCIM_GRACE {
        return Err(ApiError::unprocessable(
            "invalid_grace_period",
            format!(
                "grace_period_hours must be 0 to {}",
                MAX_SCIM_GRACE.whole_hours()
            ),
        ));
    }
    let token = secrets::new_secret("ent_scim");
    let rotation = state
        .store
        .rotate_scim_token_with_grace(
            &tenant.id,
            &secrets::hash_secret(&token),
            grace,
            &caller.actor,
        )
        .await?;
    let now = OffsetDateTime::now_utc();
    Ok(Json(RotatedScimToken {
        scim_token: token,
        scim_base_path: base_path(&tenant),
        token: ScimTokenJson::new(&rotation.token, now),
        previous: rotation.kept.as_ref().map(|t| ScimTokenJson::new(t, now)),
        ended: rotation.ended.into_iter().map(|t| t.id).collect(),
    }))
}

/// A tenant's SCIM tokens.
#[derive(Serialize, ToSchema)]
pub struct ScimTokenList {
    /// Newest first: the working tokens and the latest ended ones (at most 10).
    pub items: Vec<ScimTokenJson>,
}

/// Lists the tenant's SCIM tokens, without secrets.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/scim-tokens", tag = "scim",
    params(("tenant" = String, Path)), responses((status = 200, body = ScimTokenList), (status = 404)))]
pub(crate) async fn list_scim_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<ScimTokenList>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    Ok(Json(ScimTokenList {
        items: tokens(&state, &tenant).await?,
    }))
}

/// Ends a replaced token's grace period now. The current token cannot be
/// revoked (409): a rotation replaces it.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/scim-tokens/{id}", tag = "scim",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ScimTokenJson), (status = 403), (status = 404),
        (status = 409, description = "the current token; rotate it instead")))]
pub(crate) async fn revoke_scim_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<ScimTokenJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let current = state
        .store
        .scim_tokens(&tenant.id)
        .await?
        .into_iter()
        .any(|t| t.id == id && t.revoked_at.is_none() && t.expires_at.is_none());
    if current {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "current_scim_token",
            "this is the current SCIM token; rotate it to replace it",
        ));
    }
    let token = state
        .store
        .revoke_scim_token(&tenant.id, &id, &caller.actor)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::not_found("SCIM token"),
            other => other.into(),
        })?;
    Ok(Json(ScimTokenJson::new(&token, OffsetDateTime::now_utc())))
}

/// The last SCIM request a tenant's token opened on this server node.
#[derive(Serialize, ToSchema)]
pub struct LastRequestJson {
    /// When.
    pub at: String,
    /// HTTP method.
    pub method: String,
    /// Path, without the query string.
    pub path: String,
    /// Status answered.
    pub status: u16,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The identity provider the user agent names (`Microsoft Entra ID`, `Okta`), if any.
    pub identity_provider: Option<String>,
}

impl From<LastRequest> for LastRequestJson {
    fn from(request: LastRequest) -> Self {
        Self {
            identity_provider: request.identity_provider().map(str::to_owned),
            at: rfc3339(request.at),
            method: request.method,
            path: request.path,
            status: request.status,
            user_agent: request.user_agent,
        }
    }
}

/// What the SCIM setup page shows.
#[derive(Serialize, ToSchema)]
pub struct ScimSetup {
    /// The tenant's SCIM base path (append it to the server's address).
    pub scim_base_path: String,
    /// The full base URL, when the server was started with `--public-url`.
    pub scim_base_url: Option<String>,
    /// The server's time, to count grace periods down.
    pub now: String,
    /// The SCIM tokens, newest first, without secrets.
    pub tokens: Vec<ScimTokenJson>,
    /// The last request a SCIM token of the tenant opened on this node.
    pub last_request: Option<LastRequestJson>,
    /// The SCIM requests this node refused lately, newest first, refused
    /// tokens among them.
    pub recent_errors: Vec<SyncErrorJson>,
}

/// What the SCIM setup page shows: base URL, tokens, last request, errors.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/scim-setup", tag = "scim",
    params(("tenant" = String, Path)), responses((status = 200, body = ScimSetup), (status = 404)))]
pub(crate) async fn scim_setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<ScimSetup>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    Ok(Json(setup(&state, &tenant).await?))
}

/// The setup page's data, for the API and the page's first view.
pub(crate) async fn setup(state: &AppState, tenant: &Tenant) -> ApiResult<ScimSetup> {
    let path = base_path(tenant);
    Ok(ScimSetup {
        scim_base_url: state
            .config
            .public_url
            .as_deref()
            .map(|url| format!("{}{path}", url.trim_end_matches('/'))),
        scim_base_path: path,
        now: rfc3339(OffsetDateTime::now_utc()),
        tokens: tokens(state, tenant).await?,
        last_request: state
            .directory
            .last_request(&tenant.id)
            .map(LastRequestJson::from),
        recent_errors: state
            .directory
            .recent_errors(&tenant.id)
            .into_iter()
            .map(SyncErrorJson::from)
            .collect(),
    })
}

/// One step of the server-side check.
#[derive(Serialize, ToSchema)]
pub struct CheckStep {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// The result of the server-side check.
#[derive(Serialize, ToSchema)]
pub struct ScimCheck {
    /// Whether every step the server can check passed.
    pub ok: bool,
    /// When.
    pub checked_at: String,
    /// The steps.
    pub steps: Vec<CheckStep>,
    /// What the check does not show.
    pub limits: String,
}

/// Checks from the server's side what it can: that the tenant's SCIM
/// endpoint answers (its ServiceProviderConfig, built as a request would get
/// it), that a working token exists and that the directory can be read; and
/// reports whether the identity provider has called. Changes nothing.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/scim-setup/check", tag = "scim",
    params(("tenant" = String, Path)), responses((status = 200, body = ScimCheck), (status = 404)))]
pub(crate) async fn check_scim_setup(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<ScimCheck>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let now = OffsetDateTime::now_utc();
    let mut steps = Vec::new();

    let config = entitle_scim_protocol::service_provider_config(&base_path(&tenant));
    let bearer = config["authenticationSchemes"]
        .as_array()
        .is_some_and(|schemes| schemes.iter().any(|s| s["type"] == "oauthbearertoken"));
    steps.push(CheckStep {
        name: "SCIM endpoint".to_owned(),
        ok: bearer,
        detail: if bearer {
            format!(
                "{}/ServiceProviderConfig answers and asks for a bearer token",
                base_path(&tenant)
            )
        } else {
            "the ServiceProviderConfig names no bearer token scheme".to_owned()
        },
    });

    let tokens = state.store.scim_tokens(&tenant.id).await?;
    let working: Vec<&ScimToken> = tokens.iter().filter(|t| t.state(now).works()).collect();
    let current = working.iter().find(|t| t.expires_at.is_none());
    steps.push(CheckStep {
        name: "SCIM token".to_owned(),
        ok: current.is_some(),
        detail: match current {
            Some(token) => format!(
                "a current token exists (created {}; last used {}){}",
                rfc3339(token.created_at),
                token.last_used_at.map_or("never".to_owned(), rfc3339),
                if working.len() > 1 {
                    "; the previous one is still in its grace period"
                } else {
                    ""
                }
            ),
            None => "no working token: rotate to create one".to_owned(),
        },
    });

    let counts = state.store.directory_counts(&tenant.id).await;
    steps.push(CheckStep {
        name: "Directory".to_owned(),
        ok: counts.is_ok(),
        detail: match &counts {
            Ok(counts) => format!(
                "readable: {} users and {} groups",
                counts.users, counts.groups
            ),
            Err(error) => {
                tracing::warn!(%error, "the SCIM check could not read the directory");
                "the directory could not be read; the server log says why".to_owned()
            }
        },
    });

    let ok = steps.iter().all(|s| s.ok);
    let last = state.directory.last_request(&tenant.id);
    steps.push(CheckStep {
        name: "Identity provider".to_owned(),
        ok: last.as_ref().is_some_and(|r| r.status < 400),
        detail: match last {
            Some(request) => format!(
                "last request {} {} at {}, answered {}{}",
                request.method,
                request.path,
                rfc3339(request.at),
                request.status,
                request
                    .identity_provider()
                    .map_or(String::new(), |idp| format!(", from {idp}"))
            ),
            None => "no request with a working token has reached this server node yet".to_owned(),
        },
    });
    Ok(Json(ScimCheck {
        ok,
        checked_at: rfc3339(now),
        steps,
        limits: "This check runs inside the server. It cannot show that your identity provider \
                 reaches this address (DNS, firewalls, proxies, TLS) or that it holds the right \
                 token: use the identity provider's own Test Connection, then watch the last \
                 request."
            .to_owned(),
    }))
}

/// The tenant's SCIM base path, without a trailing slash (identity
/// providers append `/Users` and `/Groups`).
fn base_path(tenant: &Tenant) -> String {
    format!("/scim/v2/{}", tenant.name)
}

async fn tokens(state: &AppState, tenant: &Tenant) -> ApiResult<Vec<ScimTokenJson>> {
    let now = OffsetDateTime::now_utc();
    Ok(state
        .store
        .scim_tokens(&tenant.id)
        .await?
        .iter()
        .map(|t| ScimTokenJson::new(t, now))
        .collect())
}
