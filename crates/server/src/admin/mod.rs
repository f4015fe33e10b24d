//! The admin REST API under `/api/v1` (SPEC §7, §10).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use entitle_core::{
    DeviceGroupId, IMPACT_SAMPLE_SIZE, PopulationEntry, SERVICES, ServiceDef, Settings, impact,
    service,
};
use entitle_store::{
    Account, AccountChange, ApiToken, DeviceFilter, NewTenant, NewUser, Role, SaveRequest,
    StoreError, Tenant, TokenGrant, User, secrets,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{
    DecisionJson, DeviceGroupBody, DeviceGroupJson, DeviceJson, ImpactJson, PrincipalJson,
    SettingsJson, report_json, rfc3339,
};

/// The admin API's routes.
pub fn router() -> Router<AppState> {
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
        .route(
            "/api/v1/tenants/{tenant}/accounts",
            post(create_account).get(list_accounts),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}",
            patch(update_account),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}/password",
            post(set_password),
        )
        .route(
            "/api/v1/tenants/{tenant}/accounts/{id}/sessions",
            delete(end_sessions),
        )
        .route(
            "/api/v1/tenants/{tenant}/scim-token",
            post(rotate_scim_token),
        )
        .route(
            "/api/v1/tenants/{tenant}/device-groups/preview",
            post(preview_device_group),
        )
        .route(
            "/api/v1/tenants/{tenant}/groups",
            post(create_group).get(list_groups),
        )
        .route(
            "/api/v1/tenants/{tenant}/groups/{id}",
            get(get_group).delete(delete_group),
        )
        .route("/api/v1/tenants/{tenant}/users", post(create_user))
        .route(
            "/api/v1/tenants/{tenant}/users/{user}",
            get(get_user).patch(update_user),
        )
        .route(
            "/api/v1/tenants/{tenant}/device-groups",
            post(create_device_group).get(list_device_groups),
        )
        .route(
            "/api/v1/tenants/{tenant}/device-groups/{id}",
            get(get_device_group)
                .put(update_device_group)
                .delete(delete_device_group),
        )
        .route(
            "/api/v1/tenants/{tenant}/entitlements",
            get(get_entitlements),
        )
        .route(
            "/api/v1/tenants/{tenant}/entitlements/history",
            get(history),
        )
        .route(
            "/api/v1/tenants/{tenant}/entitlements/rollback",
            post(rollback),
        )
        .route(
            "/api/v1/tenants/{tenant}/entitlements/{service}",
            get(get_settings).put(put_settings),
        )
        .route(
            "/api/v1/tenants/{tenant}/entitlements/{service}/preview",
            post(preview),
        )
        .route("/api/v1/tenants/{tenant}/devices", get(list_devices))
        .route(
            "/api/v1/tenants/{tenant}/devices/{id}",
            get(get_device)
                .delete(delete_device)
                .patch(crate::enrollment::change_device),
        )
        .route("/api/v1/tenants/{tenant}/audit", get(audit))
        .route(
            "/api/v1/tenants/{tenant}/directory/status",
            get(directory_status),
        )
}

/// Page sizes: default 50, at most 200.
fn page_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50).clamp(1, 200)
}

fn service_or_404(id: &str) -> ApiResult<&'static ServiceDef> {
    service(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_service", e.to_string()))
}

// ---------------------------------------------------------------- tenants

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
    let role = match Role::parse(&body.role) {
        Some(role @ (Role::Admin | Role::Viewer)) => role,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_role",
                "role must be \"admin\" or \"viewer\"",
            ));
        }
    };
    issue_token(&state, &caller, Some(tenant.id), role, &body).await
}

// ---------------------------------------------------------------- groups and users

/// Body of `POST …/groups`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Display name, unique in the tenant regardless of case.
    pub display_name: String,
    /// Ids of groups nested inside this one.
    #[serde(default)]
    pub member_groups: Vec<String>,
}

/// A directory group.
#[derive(Serialize, ToSchema)]
pub struct GroupJson {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// local (API) or scim (identity provider).
    pub source: String,
    /// Direct members: users and nested groups.
    pub member_count: i64,
    /// Ids of groups nested directly inside.
    pub member_groups: Vec<String>,
    /// Ids of the services whose entitlements select the group, so that a
    /// deletion (by an admin or by the directory) is never a surprise.
    pub used_by: Vec<String>,
}

impl From<entitle_store::Group> for GroupJson {
    fn from(group: entitle_store::Group) -> Self {
        Self {
            id: group.id,
            display_name: group.display_name,
            source: group.source,
            member_count: group.member_count,
            member_groups: group.member_groups,
            used_by: Vec::new(),
        }
    }
}

impl GroupJson {
    /// The group, naming the services that select it.
    fn with_used_by(group: entitle_store::Group, selections: &[(&'static str, Settings)]) -> Self {
        let used_by = user_group_used_by(selections, &group.id);
        Self {
            used_by,
            ..Self::from(group)
        }
    }
}

/// Creates a local group.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/groups", tag = "directory", request_body = CreateGroup,
    params(("tenant" = String, Path)), responses((status = 201, body = GroupJson), (status = 409), (status = 422)))]
pub(crate) async fn create_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateGroup>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let name = body.display_name.trim();
    if name.is_empty() || name.chars().count() > 256 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "display_name must be 1 to 256 characters",
        ));
    }
    let group = state
        .store
        .create_group(&tenant.id, name, &body.member_groups, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok((StatusCode::CREATED, Json(GroupJson::from(group))).into_response())
}

/// Listing parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Case-insensitive part of the name.
    pub search: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of groups.
#[derive(Serialize, ToSchema)]
pub struct GroupPage {
    /// Groups by name.
    pub items: Vec<GroupJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Searches groups by name.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups", tag = "directory",
    params(("tenant" = String, Path), ListQuery), responses((status = 200, body = GroupPage)))]
pub(crate) async fn list_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<GroupPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let page = state
        .store
        .search_groups(
            &tenant.id,
            query.search.as_deref().unwrap_or(""),
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    let selections = selections(&state, &tenant.id).await?;
    Ok(Json(GroupPage {
        items: page
            .items
            .into_iter()
            .map(|g| GroupJson::with_used_by(g, &selections))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Reads a group.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups/{id}", tag = "directory",
    params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 200, body = GroupJson), (status = 404)))]
pub(crate) async fn get_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<GroupJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let group = state.store.group(&tenant.id, &id).await?;
    let selections = selections(&state, &tenant.id).await?;
    Ok(Json(GroupJson::with_used_by(group, &selections)))
}

/// What a deletion changed.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// Services whose entitlements still select the deleted group, which now
    /// matches nothing there (only after `?force=true`).
    pub still_selected_by: Vec<String>,
}

/// Query of a group deletion.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete even when entitlements select the group; it stays in them as a
    /// deleted group that matches nothing, so no one gains access.
    pub force: Option<bool>,
}

/// Deletes a group; refused with 409 while entitlements select it, unless forced.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/groups/{id}", tag = "directory",
    params(("tenant" = String, Path), ("id" = String, Path), DeleteQuery),
    responses((status = 200, body = Deleted), (status = 404), (status = 409, description = "entitlements still select the group; they are named")))]
pub(crate) async fn delete_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> ApiResult<Json<Deleted>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let still_selected_by = state
        .store
        .delete_group(&tenant.id, &id, &caller.actor, query.force.unwrap_or(false))
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(Deleted { still_selected_by }))
}

/// Body of `POST …/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login name, unique regardless of case.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Ids of the groups the user is directly in.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A directory user.
#[derive(Serialize, ToSchema)]
pub struct UserJson {
    /// Id.
    pub id: String,
    /// Login name.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Active in the directory.
    pub active: bool,
    /// Direct group ids.
    pub groups: Vec<String>,
}

impl From<User> for UserJson {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            user_name: user.user_name,
            display_name: user.display_name,
            active: user.active,
            groups: user.groups,
        }
    }
}

/// Creates a local user.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/users", tag = "directory", request_body = CreateUser,
    params(("tenant" = String, Path)), responses((status = 201, body = UserJson), (status = 409), (status = 422)))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateUser>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let user_name = body.user_name.trim();
    if user_name.is_empty() || user_name.chars().count() > 256 {
        return Err(ApiError::unprocessable(
            "invalid_user_name",
            "user_name must be 1 to 256 characters",
        ));
    }
    let new = NewUser {
        user_name: user_name.to_owned(),
        display_name: body.display_name,
        groups: body.groups,
    };
    let user = state
        .store
        .create_user(&tenant.id, new, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok((StatusCode::CREATED, Json(UserJson::from(user))).into_response())
}

/// Reads a user by login name.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users/{user}", tag = "directory",
    params(("tenant" = String, Path), ("user" = String, Path, description = "user_name")), responses((status = 200, body = UserJson), (status = 404)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Json<UserJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    Ok(Json(UserJson::from(
        state.store.user_by_name(&tenant.id, &user).await?,
    )))
}

/// Body of `PATCH …/users/{user}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// Activate or deactivate the user.
    pub active: bool,
}

/// Activates or deactivates a user; a deactivated user's devices lose every service.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/users/{user}", tag = "directory", request_body = UpdateUser,
    params(("tenant" = String, Path), ("user" = String, Path, description = "user_name")), responses((status = 200, body = UserJson), (status = 404)))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateUser>,
) -> ApiResult<Json<UserJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let found = state.store.user_by_name(&tenant.id, &user).await?;
    let updated = state
        .store
        .set_user_active(&tenant.id, &found.id, body.active, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(UserJson::from(updated)))
}

// ---------------------------------------------------------------- device groups

/// Device groups list.
#[derive(Serialize, ToSchema)]
pub struct DeviceGroupList {
    /// Device groups by name.
    pub items: Vec<DeviceGroupJson>,
}

pub(crate) async fn device_group_json(
    state: &AppState,
    tenant_id: &str,
    group: &entitle_core::DeviceGroup,
) -> ApiResult<DeviceGroupJson> {
    let devices = state.store.all_devices(tenant_id).await?;
    let matching = devices.iter().filter(|d| group.matches(&d.report)).count();
    let selections = selections(state, tenant_id).await?;
    Ok(DeviceGroupJson::new(group, matching).used_by(device_group_used_by(&selections, &group.id)))
}

/// Each service's stored settings, in table order: which groups each
/// entitlement selects, for the `used_by` of groups.
pub(crate) async fn selections(
    state: &AppState,
    tenant_id: &str,
) -> ApiResult<Vec<(&'static str, Settings)>> {
    let mut selections = Vec::with_capacity(SERVICES.len());
    for service in SERVICES {
        let stored = state.store.settings(tenant_id, service).await?;
        selections.push((service.id, stored.settings));
    }
    Ok(selections)
}

/// The ids of the services whose entitlement selects device group `group`.
pub(crate) fn device_group_used_by(
    selections: &[(&'static str, Settings)],
    group: &DeviceGroupId,
) -> Vec<String> {
    selections
        .iter()
        .filter(|(_, settings)| settings.device_groups.contains(group))
        .map(|(service, _)| (*service).to_owned())
        .collect()
}

/// The ids of the services whose entitlement selects user group `group`.
pub(crate) fn user_group_used_by(
    selections: &[(&'static str, Settings)],
    group: &str,
) -> Vec<String> {
    selections
        .iter()
        .filter(|(_, settings)| settings.user_groups.iter().any(|g| g.0 == group))
        .map(|(service, _)| (*service).to_owned())
        .collect()
}

/// Creates a device group.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/device-groups", tag = "device-groups", request_body = DeviceGroupBody,
    params(("tenant" = String, Path)), responses((status = 201, body = DeviceGroupJson), (status = 409), (status = 422)))]
pub(crate) async fn create_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<DeviceGroupBody>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let group = body.parse(DeviceGroupId(String::new()))?;
    let group = state
        .store
        .create_device_group(&tenant.id, group, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    let json = device_group_json(&state, &tenant.id, &group).await?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// Lists device groups with their current member counts.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/device-groups", tag = "device-groups",
    params(("tenant" = String, Path)), responses((status = 200, body = DeviceGroupList)))]
pub(crate) async fn list_device_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<DeviceGroupList>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let groups = state.store.device_groups(&tenant.id).await?;
    let devices = state.store.all_devices(&tenant.id).await?;
    let selections = selections(&state, &tenant.id).await?;
    let items = groups
        .iter()
        .map(|g| {
            DeviceGroupJson::new(g, devices.iter().filter(|d| g.matches(&d.report)).count())
                .used_by(device_group_used_by(&selections, &g.id))
        })
        .collect();
    Ok(Json(DeviceGroupList { items }))
}

pub(crate) async fn find_device_group(
    state: &AppState,
    tenant_id: &str,
    id: &str,
) -> ApiResult<entitle_core::DeviceGroup> {
    state
        .store
        .device_groups(tenant_id)
        .await?
        .into_iter()
        .find(|g| g.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found("device group"))
}

/// Reads a device group.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/device-groups/{id}", tag = "device-groups",
    params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 200, body = DeviceGroupJson), (status = 404)))]
pub(crate) async fn get_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<DeviceGroupJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let group = find_device_group(&state, &tenant.id, &id).await?;
    Ok(Json(device_group_json(&state, &tenant.id, &group).await?))
}

/// Replaces a device group's name and rule.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/device-groups/{id}", tag = "device-groups", request_body = DeviceGroupBody,
    params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 200, body = DeviceGroupJson), (status = 404),
        (status = 409, description = "another device group has the name"), (status = 422)))]
pub(crate) async fn update_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<DeviceGroupBody>,
) -> ApiResult<Json<DeviceGroupJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    find_device_group(&state, &tenant.id, &id).await?;
    let group = body.parse(DeviceGroupId(id))?;
    let group = state
        .store
        .update_device_group(&tenant.id, group, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(device_group_json(&state, &tenant.id, &group).await?))
}

/// Deletes a device group; refused with 409 while entitlements select it, unless forced.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/device-groups/{id}", tag = "device-groups",
    params(("tenant" = String, Path), ("id" = String, Path), DeleteQuery),
    responses((status = 200, body = Deleted), (status = 404), (status = 409, description = "entitlements still select the group; they are named")))]
pub(crate) async fn delete_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> ApiResult<Json<Deleted>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let still_selected_by = state
        .store
        .delete_device_group(&tenant.id, &id, &caller.actor, query.force.unwrap_or(false))
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(Deleted { still_selected_by }))
}

// ---------------------------------------------------------------- entitlements

/// Every service's settings.
#[derive(Serialize, ToSchema)]
pub struct EntitlementsJson {
    /// The tenant's config version.
    pub config_version: i64,
    /// SETTINGS per service id.
    pub services: BTreeMap<String, SettingsJson>,
}

/// Reads every service's settings.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/entitlements", tag = "entitlements",
    params(("tenant" = String, Path)), responses((status = 200, body = EntitlementsJson)))]
pub(crate) async fn get_entitlements(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<EntitlementsJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let mut services = BTreeMap::new();
    for service in SERVICES {
        let stored = state.store.settings(&tenant.id, service).await?;
        services.insert(service.id.to_owned(), SettingsJson::from(&stored.settings));
    }
    Ok(Json(EntitlementsJson {
        config_version: tenant.config_version,
        services,
    }))
}

fn settings_etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn with_etag(version: i64, settings: &entitle_core::Settings) -> Response {
    let mut response = Json(SettingsJson::from(settings)).into_response();
    response.headers_mut().insert(ETAG, settings_etag(version));
    response
}

/// Reads one service's settings; the `ETag` is what `If-Match` must send back.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/entitlements/{service}", tag = "entitlements",
    params(("tenant" = String, Path), ("service" = String, Path)), responses((status = 200, body = SettingsJson, headers(("ETag" = String))), (status = 404)))]
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, service_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let service = service_or_404(&service_id)?;
    let stored = state.store.settings(&tenant.id, service).await?;
    Ok(with_etag(stored.version, &stored.settings))
}

/// The version an `If-Match` header names; `*` and absence mean "any".
fn expected_version(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    let bare = text.trim_start_matches("W/").trim_matches('"');
    // An ETag this server never issued cannot be current.
    bare.parse::<i64>().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "stale_version",
            format!("If-Match {text} does not name a version of these settings; read them again to get the current ETag"),
        )
    })
}

/// Saves one service's settings as a new config version.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/entitlements/{service}", tag = "entitlements", request_body = SettingsJson,
    params(("tenant" = String, Path), ("service" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = SettingsJson, headers(("ETag" = String))), (status = 403), (status = 412), (status = 422)))]
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, service_id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SettingsJson>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let service = service_or_404(&service_id)?;
    let request = SaveRequest {
        service,
        expected_version: expected_version(&headers)?,
        settings: body.into(),
        actor: caller.actor.clone(),
        action: "entitlement.save",
        check_default_rule: true,
    };
    let saved = state.store.save_settings(&tenant.id, request).await?;
    state.snapshots.refresh(&tenant.id).await?;
    tracing::info!(tenant = %tenant.id, service = service.id, config_version = saved.config_version, actor = %caller.name, "entitlement saved");
    Ok(with_etag(saved.stored.version, &saved.stored.settings))
}

/// Shows who would gain and lose the service under the proposed settings.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/entitlements/{service}/preview", tag = "entitlements", request_body = SettingsJson,
    params(("tenant" = String, Path), ("service" = String, Path)), responses((status = 200, body = ImpactJson), (status = 422)))]
pub(crate) async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, service_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SettingsJson>,
) -> ApiResult<Json<ImpactJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let service = service_or_404(&service_id)?;
    let proposed: Settings = body.into();
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let Some(current) = snapshot.settings(service) else {
        return Err(ApiError::not_found("service"));
    };
    // Unknown ids are reported the way a save would report them; the "Enabled by
    // Default" rule is not, since a preview shows the toggle's effect either way.
    entitle_core::check_group_ids(
        &current.settings,
        &proposed,
        |id| entitle_core::GroupNames::user_group(&*snapshot, id).is_some(),
        |id| entitle_core::GroupNames::device_group(&*snapshot, id).is_some(),
    )
    .map_err(|e| ApiError::from(StoreError::Invalid(e)))?;
    let mut devices = state.store.all_devices(&tenant.id).await?;
    // A stable order makes the sample the same from one preview to the next.
    devices.sort_by(|a, b| {
        (&a.user_name, &a.report.hostname).cmp(&(&b.user_name, &b.report.hostname))
    });
    let device_groups: Vec<_> = devices
        .iter()
        .map(|d| snapshot.device_groups_of(d))
        .collect();
    let population = devices
        .iter()
        .zip(&device_groups)
        .map(|(device, groups)| PopulationEntry {
            hostname: &device.report.hostname,
            subject: snapshot.subject(device, groups),
        });
    let result = impact(
        service,
        &current.settings,
        &proposed,
        population,
        &*snapshot,
    );
    debug_assert!(result.gaining.sample.len() <= IMPACT_SAMPLE_SIZE);
    Ok(Json(ImpactJson::from(result)))
}

/// History parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this service.
    pub service: Option<String>,
    /// How many versions (1–200, default 50).
    pub limit: Option<u32>,
}

/// One config version.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    /// The version number.
    pub config_version: i64,
    /// The service it changed.
    pub service: String,
    /// Who.
    pub actor: String,
    /// Who, as a principal.
    pub principal: PrincipalJson,
    /// When.
    pub at: String,
    /// SETTINGS before.
    pub before: SettingsJson,
    /// SETTINGS after.
    pub after: SettingsJson,
}

/// Config versions, newest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryJson {
    /// Versions, newest first.
    pub items: Vec<HistoryItem>,
}

/// Lists config versions, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/entitlements/history", tag = "entitlements",
    params(("tenant" = String, Path), HistoryQuery), responses((status = 200, body = HistoryJson)))]
pub(crate) async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> ApiResult<Json<HistoryJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    if let Some(id) = &query.service {
        service_or_404(id)?;
    }
    let versions = state
        .store
        .history(
            &tenant.id,
            query.service.as_deref(),
            page_limit(query.limit),
        )
        .await?;
    let items = versions
        .into_iter()
        .map(|v| HistoryItem {
            config_version: v.version,
            service: v.service,
            actor: v.actor.display(),
            principal: PrincipalJson::from(&v.actor),
            at: rfc3339(v.at),
            before: SettingsJson::from(&v.before),
            after: SettingsJson::from(&v.after),
        })
        .collect();
    Ok(Json(HistoryJson { items }))
}

/// Body of a rollback.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version whose settings to restore.
    pub config_version: i64,
}

/// The result of a rollback.
#[derive(Serialize, ToSchema)]
pub struct RollbackResult {
    /// The new config version created by the rollback.
    pub config_version: i64,
    /// The service it restored.
    pub service: String,
    /// The restored settings.
    pub settings: SettingsJson,
}

/// Restores the settings of a config version, as a new version.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/entitlements/rollback", tag = "entitlements", request_body = RollbackBody,
    params(("tenant" = String, Path)), responses((status = 200, body = RollbackResult), (status = 404), (status = 422)))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<RollbackBody>,
) -> ApiResult<Json<RollbackResult>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let version = state
        .store
        .config_version(&tenant.id, body.config_version)
        .await?;
    let service = service_or_404(&version.service)?;
    let request = SaveRequest {
        service,
        expected_version: None,
        settings: version.after.clone(),
        actor: caller.actor.clone(),
        action: "entitlement.rollback",
        check_default_rule: false,
    };
    let saved = state.store.save_settings(&tenant.id, request).await?;
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(RollbackResult {
        config_version: saved.config_version,
        service: service.id.to_owned(),
        settings: SettingsJson::from(&saved.stored.settings),
    }))
}

// ---------------------------------------------------------------- devices

/// Device listing parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Only this user's devices.
    pub user_name: Option<String>,
    /// Only devices with this host name.
    pub hostname: Option<String>,
    /// Only devices whose user name or host name contains this text.
    pub search: Option<String>,
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of devices.
#[derive(Serialize, ToSchema)]
pub struct DevicePage {
    /// Devices.
    pub items: Vec<DeviceJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

pub(crate) fn device_json(
    device: &entitle_store::Device,
    device_groups: Vec<String>,
    entitlements: Option<BTreeMap<String, DecisionJson>>,
) -> DeviceJson {
    let report = report_json(&device.report);
    DeviceJson {
        id: device.id.clone(),
        user_name: device.user_name.clone(),
        hostname: report.hostname,
        os: report.os,
        client_version: report.client_version,
        ownership: device.decision_report().ownership.as_str().to_owned(),
        reported_ownership: report.ownership,
        ownership_attested_by: device
            .attested_ownership
            .as_ref()
            .map(|a| a.by.as_str().to_owned()),
        ownership_conflict: device.ownership_conflict(),
        pending_approval: device.pending_approval,
        posture: report.posture,
        device_groups,
        enrolled_at: rfc3339(device.enrolled_at),
        last_sync_at: rfc3339(device.last_sync_at),
        entitlements,
    }
}

/// Lists devices.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/devices", tag = "devices",
    params(("tenant" = String, Path), DeviceQuery), responses((status = 200, body = DevicePage)))]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<DeviceQuery>,
) -> ApiResult<Json<DevicePage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let page = state
        .store
        .devices(
            &tenant.id,
            &DeviceFilter {
                user_name: query.user_name.clone(),
                hostname: query.hostname.clone(),
                search: query.search.clone(),
            },
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    let items = page
        .items
        .iter()
        .map(|d| {
            let groups = snapshot.device_groups_of(d);
            device_json(d, groups.into_iter().map(|g| g.0).collect(), None)
        })
        .collect();
    Ok(Json(DevicePage {
        items,
        next_cursor: page.next_cursor,
    }))
}

/// Reads a device with every service's decision and its explanation.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/devices/{id}", tag = "devices",
    params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 200, body = DeviceJson), (status = 404)))]
pub(crate) async fn get_device(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<DeviceJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let device = state.store.device(&tenant.id, &id).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    Ok(Json(device_detail_json(&snapshot, &device)))
}

/// DEVICE with every service's decision, as the device page and a device
/// change answer it.
pub(crate) fn device_detail_json(
    snapshot: &crate::snapshot::TenantSnapshot,
    device: &entitle_store::Device,
) -> DeviceJson {
    let decisions = snapshot.decide(device);
    let entitlements = decisions
        .services
        .iter()
        .map(|(service, decision)| (service.id.to_owned(), DecisionJson::from(decision)))
        .collect();
    let groups = decisions.device_groups.into_iter().map(|g| g.0).collect();
    device_json(device, groups, Some(entitlements))
}

/// Removes a device and revokes its token at once.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/devices/{id}", tag = "devices",
    params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 204), (status = 404)))]
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    state
        .store
        .delete_device(&tenant.id, &id, &caller.actor)
        .await?;
    // Wakes the device's held long-poll, which then finds its token revoked.
    state.snapshots.refresh(&tenant.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- audit and directory

/// Audit parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    /// When.
    pub at: String,
    /// Who, as text that names the kind (`token ci`, `ada@acme.example`, `directory`).
    pub actor: String,
    /// Who, as a principal.
    pub principal: PrincipalJson,
    /// What kind of change.
    pub action: String,
    /// What it changed.
    pub target: String,
    /// State before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// State after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditItem>,
    /// Cursor of the next (older) page.
    pub next_cursor: Option<String>,
}

/// Reads the audit log, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path), AuditQuery), responses((status = 200, body = AuditPage)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let before = match &query.cursor {
        Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this server issued")
        })?),
        None => None,
    };
    let limit = page_limit(query.limit);
    let entries = state.store.audit(&tenant.id, limit, before).await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|(id, _)| id.to_string()))
        .flatten();
    let items = entries
        .into_iter()
        .map(|(_, e)| AuditItem {
            at: rfc3339(e.at),
            actor: e.actor.display(),
            principal: PrincipalJson::from(&e.actor),
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        })
        .collect();
    Ok(Json(AuditPage { items, next_cursor }))
}

/// The directory's sync status.
#[derive(Serialize, ToSchema)]
pub struct DirectoryStatus {
    /// When the identity provider last called SCIM, if ever.
    pub last_scim_request_at: Option<String>,
    /// Users in the tenant.
    pub users: i64,
    /// Groups in the tenant.
    pub groups: i64,
    /// Where the identity provider sends SCIM requests.
    pub scim_base_path: String,
    /// The SCIM requests this node refused lately, newest first.
    pub recent_errors: Vec<SyncErrorJson>,
}

/// A SCIM request that failed.
#[derive(Serialize, ToSchema)]
pub struct SyncErrorJson {
    /// When.
    pub at: String,
    /// Method and path.
    pub request: String,
    /// Status answered.
    pub status: u16,
    /// Why.
    pub detail: String,
}

/// Shows the directory's sync status.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/directory/status", tag = "directory",
    params(("tenant" = String, Path)), responses((status = 200, body = DirectoryStatus)))]
pub(crate) async fn directory_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<DirectoryStatus>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let counts = state.store.directory_counts(&tenant.id).await?;
    Ok(Json(DirectoryStatus {
        last_scim_request_at: tenant.last_scim_request_at.map(rfc3339),
        users: counts.users,
        groups: counts.groups,
        scim_base_path: format!("/scim/v2/{}/", tenant.name),
        recent_errors: state
            .directory
            .recent_errors(&tenant.id)
            .into_iter()
            .map(|e| SyncErrorJson {
                at: rfc3339(e.at),
                request: e.request,
                status: e.status,
                detail: e.detail,
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------- accounts, SCIM token, rule preview

/// Body of `POST …/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Sign-in email.
    pub email: String,
    /// 12 characters to 1,024 bytes.
    pub password: String,
    /// admin or viewer.
    pub role: String,
}

/// A portal account.
#[derive(Serialize, ToSchema)]
pub struct AccountJson {
    /// Id.
    pub id: String,
    /// Sign-in email.
    pub email: String,
    /// Role.
    pub role: String,
    /// Whether the account is disabled (cannot sign in, has no sessions).
    pub disabled: bool,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<Account> for AccountJson {
    fn from(account: Account) -> Self {
        Self {
            id: account.id,
            email: account.email,
            role: account.role.as_str().to_owned(),
            disabled: account.disabled_at.is_some(),
            disabled_at: account.disabled_at.map(rfc3339),
            created_at: rfc3339(account.created_at),
        }
    }
}

/// Creates a portal account (email and password) for the tenant.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/accounts", tag = "tenants", request_body = CreateAccount,
    params(("tenant" = String, Path)), responses((status = 201, body = AccountJson), (status = 409), (status = 422)))]
pub(crate) async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateAccount>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = match Role::parse(&body.role) {
        Some(role @ (Role::Admin | Role::Viewer)) => role,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_role",
                "role must be \"admin\" or \"viewer\"",
            ));
        }
    };
    let email = body.email.trim();
    if !email.contains('@') || email.len() > 254 || email.contains(char::is_whitespace) {
        return Err(ApiError::unprocessable(
            "invalid_email",
            "email must look like name@example.com",
        ));
    }
    let password_hash = hash_password(body.password).await?;
    let new = entitle_store::NewAccount {
        tenant_id: Some(tenant.id.clone()),
        email: email.to_owned(),
        password_hash,
        role,
    };
    let account = state.store.create_account(new, &caller.actor).await?;
    Ok((StatusCode::CREATED, Json(AccountJson::from(account))).into_response())
}

/// A new SCIM token, shown once.
#[derive(Serialize, ToSchema)]
pub struct RotatedScimToken {
    /// The bearer token the identity provider must use from now on.
    pub scim_token: String,
    /// Where the identity provider sends SCIM requests.
    pub scim_base_path: String,
}

/// Replaces the tenant's SCIM token; the old one stops working at once.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/scim-token", tag = "directory",
    params(("tenant" = String, Path)), responses((status = 200, body = RotatedScimToken), (status = 403)))]
pub(crate) async fn rotate_scim_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<RotatedScimToken>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let token = secrets::new_secret("ent_scim");
    state
        .store
        .rotate_scim_token(&tenant.id, &secrets::hash_secret(&token), &caller.actor)
        .await?;
    Ok(Json(RotatedScimToken {
        scim_token: token,
        scim_base_path: format!("/scim/v2/{}/", tenant.name),
    }))
}

/// Which enrolled devices a rule would hold.
#[derive(Serialize, ToSchema)]
pub struct RulePreview {
    /// Devices that meet the rule now.
    pub matching_devices: usize,
    /// Up to ten "user on host" entries.
    pub sample: Vec<String>,
}

/// Counts the devices a device-group rule would hold, before it is saved.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/device-groups/preview", tag = "device-groups", request_body = DeviceGroupBody,
    params(("tenant" = String, Path)), responses((status = 200, body = RulePreview), (status = 422)))]
pub(crate) async fn preview_device_group(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<DeviceGroupBody>,
) -> ApiResult<Json<RulePreview>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let rule = body.parse(DeviceGroupId(String::new()))?;
    let mut devices = state.store.all_devices(&tenant.id).await?;
    devices.sort_by(|a, b| {
        (&a.user_name, &a.report.hostname).cmp(&(&b.user_name, &b.report.hostname))
    });
    let matching: Vec<_> = devices.iter().filter(|d| rule.matches(&d.report)).collect();
    let sample = matching
        .iter()
        .take(IMPACT_SAMPLE_SIZE)
        .map(|d| format!("{} on {}", d.user_name, d.report.hostname))
        .collect();
    Ok(Json(RulePreview {
        matching_devices: matching.len(),
        sample,
    }))
}

// ---------------------------------------------------------------- credential lifecycle

/// The shortest password accepted: ASVS level 2 asks for at least 12 characters.
const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted, in bytes, so that hashing stays cheap.
const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest token lifetime accepted, in days.
const MAX_TOKEN_DAYS: u32 = 3650;

/// Checks a new password's length and hashes it off the async workers, since
/// argon2 takes tens of milliseconds of CPU.
async fn hash_password(password: String) -> ApiResult<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_password",
            format!(
                "a password is {MIN_PASSWORD_CHARS} characters to {MAX_PASSWORD_BYTES} bytes long"
            ),
        ));
    }
    tokio::task::spawn_blocking(move || crate::password::hash(&password))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request; it has been logged",
            )
        })?
        .map_err(|e| ApiError::unprocessable("invalid_password", e.to_string()))
}

/// Whether `password` matches `stored`, checked off the async workers.
async fn verify_password(password: String, stored: String) -> bool {
    tokio::task::spawn_blocking(move || crate::password::verify(&password, &stored))
        .await
        .unwrap_or(false)
}

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
    let name = body.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "a token name is 1 to 200 characters",
        ));
    }
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
    fn new(token: ApiToken, now: OffsetDateTime) -> Self {
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

/// A list of accounts.
#[derive(Serialize, ToSchema)]
pub struct AccountList {
    /// The accounts, by email.
    pub items: Vec<AccountJson>,
}

/// Lists the tenant's portal accounts; admins only.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/accounts", tag = "tenants",
    params(("tenant" = String, Path)), responses((status = 200, body = AccountList), (status = 403), (status = 404)))]
pub(crate) async fn list_accounts(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<AccountList>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let accounts = state.store.accounts(&tenant.id).await?;
    Ok(Json(AccountList {
        items: accounts.into_iter().map(AccountJson::from).collect(),
    }))
}

/// Body of `PATCH …/accounts/{id}`; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    /// Disable (sign-in refused, sessions ended) or enable.
    pub disabled: Option<bool>,
    /// admin or viewer.
    pub role: Option<String>,
}

/// Disables, enables or changes the role of a portal account; admins only.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/accounts/{id}", tag = "tenants", request_body = UpdateAccount,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = AccountJson), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn update_account(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    parts: axum::http::request::Parts,
    JsonBody(body): JsonBody<UpdateAccount>,
) -> ApiResult<Json<AccountJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let role = match body.role.as_deref().map(Role::parse) {
        None => None,
        Some(Some(role @ (Role::Admin | Role::Viewer))) => Some(role),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid_role",
                "role must be \"admin\" or \"viewer\"",
            ));
        }
    };
    // An admin who disables or demotes their own account could leave the
    // tenant with nobody able to undo it.
    let own = crate::auth::session_account_id(&parts, &state).await? == Some(id.clone());
    if own && (body.disabled == Some(true) || role == Some(Role::Viewer)) {
        return Err(ApiError::unprocessable(
            "own_account",
            "you cannot disable or demote the account you are signed in with",
        ));
    }
    let change = AccountChange {
        disabled: body.disabled,
        role,
    };
    let account = state
        .store
        .update_account(Some(&tenant.id), &id, change, &caller.actor)
        .await?;
    Ok(Json(AccountJson::from(account)))
}

/// Body of `POST …/accounts/{id}/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password: 12 characters to 1,024 bytes.
    pub password: String,
    /// The current password, required when changing your own.
    pub current_password: Option<String>,
}

/// Sets an account's password: an admin for any account of the tenant (which
/// ends its sessions), or anyone for their own account given the current one.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/accounts/{id}/password", tag = "tenants", request_body = SetPassword,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn set_password(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    parts: axum::http::request::Parts,
    JsonBody(body): JsonBody<SetPassword>,
) -> ApiResult<StatusCode> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let own = crate::auth::session_account_id(&parts, &state).await? == Some(id.clone());
    if own {
        let account = state.store.account(Some(&tenant.id), &id).await?;
        let current = body.current_password.unwrap_or_default();
        if !verify_password(current, account.password_hash).await {
            state
                .failures
                .record_failure(crate::extract::client_address(&parts));
            return Err(ApiError::forbidden(
                "current_password is wrong; give your current password to change it",
            ));
        }
    } else {
        caller.require_writer()?;
    }
    let hash = hash_password(body.password).await?;
    // A reset by someone else ends the account's sessions, in case the reason
    // for it is that the password leaked; changing your own keeps you signed in.
    state
        .store
        .set_account_password(Some(&tenant.id), &id, &hash, !own, &caller.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many sessions ended.
#[derive(Serialize, ToSchema)]
pub struct SessionsEnded {
    /// The number of sessions ended.
    pub ended: u64,
}

/// Ends every session of a portal account at once; admins only.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/accounts/{id}/sessions", tag = "tenants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SessionsEnded), (status = 403), (status = 404)))]
pub(crate) async fn end_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<SessionsEnded>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let ended = state
        .store
        .end_sessions(Some(&tenant.id), &id, &caller.actor)
        .await?;
    Ok(Json(SessionsEnded { ended }))
}
