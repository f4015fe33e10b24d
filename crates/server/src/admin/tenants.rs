//! Tenants, their API tokens and the super admin tokens.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use entitle_store::{ApiToken, NewTenant, Role, Tenant, TokenGrant, secrets};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::tenant_role;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::wire::rfc3339;

/// The tenant and token routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/api/v1/tenants/{tenant}", get(get_tenant))
        .route(
            "/api/v1/tenants/{tenant}/tokens",
            post(create_token).get(list_tokens),
        )
        .route("/api/v1/tenants/{tenant}/tokens/{id}", delete(revoke_token))
        .route(
            "/api/v1/tokens",
            post(create_super_token).get(list_super_tokens),
        )
        .route("/api/v1/tokens/{id}", delete(revoke_super_token))
}

/// Body of `POST /api/v1/tenants`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Short unique name: lower-case letters, digits and dashes.
    pub name: String,
    /// Creation time (RFC 3339); decides ZPA's default. Defaults to now.
    pub created_at: Option<String>,
}

/// A new tenant with its secrets, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedTenant {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// The key agents enroll with.
    pub enrollment_key: String,
    /// The bearer token for the tenant's SCIM endpoint.
    pub scim_token: String,
}

/// A tenant, without secrets.
#[derive(Serialize, ToSchema)]
pub struct TenantJson {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// Current config version.
    pub config_version: i64,
}

impl From<&Tenant> for TenantJson {
    fn from(tenant: &Tenant) -> Self {
        Self {
            id: tenant.id.clone(),
            name: tenant.name.clone(),
            created_at: rfc3339(tenant.created_at),
            config_version: tenant.config_version,
        }
    }
}

fn valid_tenant_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Creates a tenant and the secrets that open it (super admin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 403), (status = 409), (status = 422)))]
pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateTenant>,
) -> ApiResult<Response> {
    caller.require_super_admin()?;
    if !valid_tenant_name(&body.name) {
        return Err(ApiError::unprocessable(
            "invalid_tenant_name",
            "a tenant name is 1 to 63 lower-case letters, digits or dashes, starting with a letter or digit",
        ));
    }
    let created_at = match &body.created_at {
        Some(text) => OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
            ApiError::bad_request("invalid_time", format!("created_at must be RFC 3339: {e}"))
        })?,
        None => OffsetDateTime::now_utc(),
    };
    let enrollment_key = secrets::new_secret("ent_enroll");
    let scim_token = secrets::new_secret("ent_scim");
    let new = NewTenant {
        name: body.name,
        created_at,
        enrollment_key_hash: secrets::hash_secret(&enrollment_key),
        scim_token_hash: secrets::hash_secret(&scim_token),
    };
    let tenant = state.store.create_tenant(new, &caller.actor).await?;
    tracing::info!(tenant = %tenant.id, name = %tenant.name, "tenant created");
    let body = CreatedTenant {
        id: tenant.id,
        name: tenant.name,
        created_at: rfc3339(tenant.created_at),
        enrollment_key,
        scim_token,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Tenants list.
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// The tenants the caller can see.
    pub items: Vec<TenantJson>,
}

/// Lists the tenants the caller can see.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", responses((status = 200, body = TenantList)))]
pub(crate) async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<TenantList>> {
    let tenants = state.store.tenants().await?;
    let items = tenants
        .iter()
        .filter(|t| {
            caller.role == Role::SuperAdmin || caller.tenant_id.as_deref() == Some(t.id.as_str())
        })
        .map(TenantJson::from)
        .collect();
    Ok(Json(TenantList { items }))
}

/// Reads a tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant id or name")),
    responses((status = 200, body = TenantJson), (status = 404)))]
pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<TenantJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    Ok(Json(TenantJson::from(&tenant)))
}

/// Body of `POST …/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for the token, shown in the audit log.
    pub name: String,
    /// admin or viewer.
    pub role: String,
    /// When the token stops working (RFC 3339); at most one of this and `expires_in_days`.
    pub expires_at: Option<String>,
    /// Days until the token stops working (1 to 3650).
    pub expires_in_days: Option<u32>,
}

/// A new API token, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its role.
    pub role: String,
    /// Its id, to list and revoke it.
    pub id: String,
    /// Its name.
    pub name: String,
    /// When it stops working, if ever (RFC 3339).
    pub expires_at: Option<String>,
}

/// Creates an API token for the tenant.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/tokens", tag = "tenants", request_body = CreateToken,
    params(("tenant" = String, Path)), responses((status = 201, body = CreatedToken), (status = 403), (status = 422)))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateToken>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = tenant_role(&body.role)?;
    issue_token(&state, &caller, Some(tenant.id), role, &body).await
}

/// Lists the tenant's API tokens, without their secrets; admins only.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = TokenList), (status = 403), (status = 404)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<TokenList>> {
    // Who holds which credential is an admin's business: viewers get 403.
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    token_list(&state, Some(&tenant.id)).await
}

/// Revokes one of the tenant's API tokens at once.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/tokens/{id}", tag = "tenants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TokenJson), (status = 403), (status = 404)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<TokenJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let token = state
        .store
        .revoke_api_token(Some(&tenant.id), &id, &caller.actor)
        .await?;
    Ok(Json(TokenJson::new(token, OffsetDateTime::now_utc())))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSuperToken {
    /// A name for the token, shown in the audit log.
    pub name: String,
    /// When the token stops working (RFC 3339).
    pub expires_at: Option<String>,
    /// Days until the token stops working (1 to 3650).
    pub expires_in_days: Option<u32>,
}

/// Creates a super admin token; super admins only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tenants", request_body = CreateSuperToken,
    responses((status = 201, body = CreatedToken), (status = 403), (status = 422)))]
pub(crate) async fn create_super_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateSuperToken>,
) -> ApiResult<Response> {
    caller.require_super_admin()?;
    let body = CreateToken {
        name: body.name,
        role: Role::SuperAdmin.as_str().to_owned(),
        expires_at: body.expires_at,
        expires_in_days: body.expires_in_days,
    };
    issue_token(&state, &caller, None, Role::SuperAdmin, &body).await
}

/// Lists the super admin tokens; super admins only.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tenants",
    responses((status = 200, body = TokenList), (status = 403)))]
pub(crate) async fn list_super_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<TokenList>> {
    caller.require_super_admin()?;
    token_list(&state, None).await
}

/// Revokes a super admin token at once; super admins only.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tenants",
    params(("id" = String, Path)), responses((status = 200, body = TokenJson), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn revoke_super_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenJson>> {
    caller.require_super_admin()?;
    // The bootstrap token is only issued while no super admin token exists at
    // all, so revoking the last working one would lock every super admin out.
    let now = OffsetDateTime::now_utc();
    let working = |t: &ApiToken| t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now);
    let tokens = state.store.api_tokens(None).await?;
    let target_works = tokens.iter().any(|t| t.id == id && working(t));
    let others_work = tokens.iter().any(|t| t.id != id && working(t));
    if target_works && !others_work {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_super_admin_token",
            "this is the last working super admin token; create another before revoking it",
        ));
    }
    let token = state
        .store
        .revoke_api_token(None, &id, &caller.actor)
        .await?;
    Ok(Json(TokenJson::new(token, OffsetDateTime::now_utc())))
}

/// The longest token lifetime accepted, in days.
const MAX_TOKEN_DAYS: u32 = 3650;

/// When a new token expires, from `expires_at` or `expires_in_days`.
fn token_expiry(body: &CreateToken, now: OffsetDateTime) -> ApiResult<Option<OffsetDateTime>> {
    let expires_at = match (&body.expires_at, body.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_expiry",
                "give expires_at or expires_in_days, not both",
            ));
        }
        (Some(text), None) => Some(OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
            ApiError::unprocessable(
                "invalid_expiry",
                "expires_at must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
            )
        })?),
        (None, Some(days)) => {
            if !(1..=MAX_TOKEN_DAYS).contains(&days) {
                return Err(ApiError::unprocessable(
                    "invalid_expiry",
                    format!("expires_in_days is 1 to {MAX_TOKEN_DAYS}"),
                ));
            }
            Some(now + time::Duration::days(i64::from(days)))
        }
        (None, None) => None,
    };
    if let Some(at) = expires_at
        && (at <= now || at > now + time::Duration::days(i64::from(MAX_TOKEN_DAYS)))
    {
        return Err(ApiError::unprocessable(
            "invalid_expiry",
            format!("expires_at must be in the future and within {MAX_TOKEN_DAYS} days"),
        ));
    }
    Ok(expires_at)
}

/// Creates a token with the role for the tenant (`None`: a super admin token).
async fn issue_token(
    state: &AppState,
    caller: &Caller,
    tenant_id: Option<String>,
    role: Role,
    body: &CreateToken,
) -> ApiResult<Response> {
    let name = crate::wire::single_line("a token name", &body.name, 200)
        .map_err(|message| ApiError::unprocessable("invalid_name", message))?;
    let expires_at = token_expiry(body, OffsetDateTime::now_utc())?;
    let token = secrets::new_secret(match role {
        Role::SuperAdmin => "ent_root",
        Role::Admin => "ent_admin",
        Role::Viewer => "ent_viewer",
    });
    let grant = TokenGrant {
        role,
        tenant_id,
        name: name.to_owned(),
    };
    let stored = state
        .store
        .issue_api_token(
            &secrets::hash_secret(&token),
            &grant,
            expires_at,
            &caller.actor,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            role: role.as_str().to_owned(),
            id: stored.id,
            name: stored.grant.name,
            expires_at: stored.expires_at.map(rfc3339),
        }),
    )
        .into_response())
}

/// An API token as listed: never its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenJson {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: Option<String>,
    /// When it stops working (RFC 3339).
    pub expires_at: Option<String>,
    /// When it was last used, to the minute (RFC 3339).
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339).
    pub revoked_at: Option<String>,
}

impl TokenJson {
    pub(crate) fn new(token: ApiToken, now: OffsetDateTime) -> Self {
        let status = if token.revoked_at.is_some() {
            "revoked"
        } else if token.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        Self {
            id: token.id,
            name: token.grant.name,
            role: token.grant.role.as_str().to_owned(),
            status: status.to_owned(),
            created_at: rfc3339(token.created_at),
            created_by: token.created_by,
            expires_at: token.expires_at.map(rfc3339),
            last_used_at: token.last_used_at.map(rfc3339),
            revoked_at: token.revoked_at.map(rfc3339),
        }
    }
}

/// A list of tokens.
#[derive(Serialize, ToSchema)]
pub struct TokenList {
    /// The tokens, oldest first.
    pub items: Vec<TokenJson>,
}

async fn token_list(state: &AppState, tenant_id: Option<&str>) -> ApiResult<Json<TokenList>> {
    let now = OffsetDateTime::now_utc();
    let tokens = state.store.api_tokens(tenant_id).await?;
    Ok(Json(TokenList {
        items: tokens.into_iter().map(|t| TokenJson::new(t, now)).collect(),
    }))
}
