//! The directory as the admin API shows it: local groups and users and the
//! identity provider's sync status (the SCIM token is `scim_setup.rs`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::Settings;
use entitle_store::{NewUser, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{DeleteQuery, Deleted, GroupKind, delete_group_of_kind, page_limit, selections};
use crate::auth::Caller;
use crate::directory::SyncError;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{MAX_NAME, rfc3339, single_line};

/// The directory routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/groups",
            post(create_group).get(list_groups),
        )
        .route(
            "/api/v1/tenants/{tenant}/groups/{id}",
            get(get_group).delete(delete_group),
        )
        .route(
            "/api/v1/tenants/{tenant}/users",
            post(create_user).get(list_users),
        )
        .route(
            "/api/v1/tenants/{tenant}/users/{user}",
            get(get_user).patch(update_user),
        )
        .route(
            "/api/v1/tenants/{tenant}/directory/status",
            get(directory_status),
        )
}

/// Body of `POST …/groups`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Display name, unique in the tenant regardless of case.
    pub display_name: String,
    /// Ids of groups nested inside this one.
    #[serde(default, deserialize_with = "crate::wire::group_ids")]
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
    /// Active users in the group directly or through groups nested inside
    /// it, each counted once: the people an entitlement selecting the group
    /// reaches (what the group pickers show).
    pub effective_members: usize,
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
            effective_members: 0,
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

    /// The same, with its effective membership as decisions see it.
    fn counted(mut self, snapshot: &crate::snapshot::TenantSnapshot) -> Self {
        self.effective_members = snapshot.active_members(&entitle_core::GroupId(self.id.clone()));
        self
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
    let name = directory_name("display_name", "invalid_name", &body.display_name)?;
    let group = state
        .store
        .create_group(&tenant.id, name, &body.member_groups, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    let snapshot = state.snapshots.get(&tenant.id).await?;
    let json = GroupJson::from(group).counted(&snapshot);
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// Listing parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Case-insensitive part of the name (trimmed).
    #[param(required = false)]
    pub search: Option<String>,
    /// Page size (1–200, default 50).
    #[param(required = false)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, asked with the same search.
    #[param(required = false)]
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The search, trimmed (an empty one finds everything).
    pub(crate) fn search(&self) -> &str {
        self.search.as_deref().map_or("", str::trim)
    }
}

/// A page of groups.
#[derive(Serialize, ToSchema)]
pub struct GroupPage {
    /// Groups by name.
    pub items: Vec<GroupJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
    /// Whether there are more groups after this page.
    pub more: bool,
    /// How many groups match, on the first page (no `cursor`).
    pub total: Option<u64>,
}

/// A page of users.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    /// Users by login name.
    pub items: Vec<UserJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
    /// Whether there are more users after this page.
    pub more: bool,
    /// How many users match, on the first page (no `cursor`).
    pub total: Option<u64>,
}

/// Lists directory users (not deleted) whose login or display name contains
/// the search, by login name, a keyset page at a time.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users", tag = "directory",
    params(("tenant" = String, Path), ListQuery), responses((status = 200, body = UserPage), (status = 400)))]
pub(crate) async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<UserPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let page = state
        .store
        .search_users(
            &tenant.id,
            query.search(),
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    let total = match query.cursor {
        None => Some(state.store.count_users(&tenant.id, query.search()).await?),
        Some(_) => None,
    };
    Ok(Json(UserPage {
        items: page.items.into_iter().map(UserJson::from).collect(),
        more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        total,
    }))
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
            query.search(),
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    let total = match query.cursor {
        None => Some(state.store.count_groups(&tenant.id, query.search()).await?),
        Some(_) => None,
    };
    let selections = selections(&state, &tenant.id).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    Ok(Json(GroupPage {
        items: page
            .items
            .into_iter()
            .map(|g| GroupJson::with_used_by(g, &selections).counted(&snapshot))
            .collect(),
        more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        total,
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
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    Ok(Json(
        GroupJson::with_used_by(group, &selections).counted(&snapshot),
    ))
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
    delete_group_of_kind(&state, &caller, &tenant, GroupKind::Directory, &id, query).await
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
    #[serde(default, deserialize_with = "crate::wire::group_ids")]
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
    let user_name = directory_name("user_name", "invalid_user_name", &body.user_name)?;
    let display_name = body
        .display_name
        .as_deref()
        .map(|name| directory_name("display_name", "invalid_name", name).map(str::to_owned))
        .transpose()?;
    let new = NewUser {
        user_name: user_name.to_owned(),
        display_name,
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

impl From<SyncError> for SyncErrorJson {
    fn from(error: SyncError) -> Self {
        Self {
            at: rfc3339(error.at),
            request: error.request,
            status: error.status,
            detail: error.detail,
        }
    }
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
            .map(SyncErrorJson::from)
            .collect(),
    }))
}

/// A local group's or user's name: trimmed, 1 to [`MAX_NAME`] characters,
/// and one that cannot pass for another.
fn directory_name<'a>(field: &str, code: &'static str, value: &'a str) -> ApiResult<&'a str> {
    single_line(field, value, MAX_NAME).map_err(|message| ApiError::unprocessable(code, message))
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
