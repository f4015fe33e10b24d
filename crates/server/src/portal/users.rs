//! The directory's people in the portal: the user list (searched and paged
//! in the store), a user's page (groups direct and through nesting, devices,
//! every service's decision with its explanation) and a group's page
//! (members direct and through nesting, paged; nested groups; entitlements).
//!
//! Each page inlines the same JSON the API answers (`/users/{user}/access`,
//! `/groups/{id}/nesting`, `/groups/{id}/members`), so what a person sees a
//! program can read too; further member pages come from the API.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use entitle_core::{GroupId, GroupNames, SERVICES};
use serde::Deserialize;
use serde_json::json;

use super::{Frame, SignedIn, error_page, frame, render, service_json};
use crate::admin;
use crate::admin::directory_views::{access_json, member_json, nesting_json};
use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::state::AppState;

/// The people pages' routes.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/t/{tenant}/users", get(users_page))
        .route("/t/{tenant}/users/{user}", get(user_page))
        .route("/t/{tenant}/groups/{id}", get(group_page))
}

/// Users a page of the list shows.
const USER_PAGE_SIZE: u32 = 50;
/// Members a group page shows before "Show more".
const MEMBER_PAGE_SIZE: u32 = 100;
/// Longest search the user list takes, in characters.
const MAX_SEARCH: usize = 256;

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    frame: Frame,
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    frame: Frame,
}

#[derive(Deserialize)]
struct UsersQuery {
    search: Option<String>,
    cursor: Option<String>,
}

async fn users_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<UsersQuery>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let search: String = query
        .search
        .as_deref()
        .map_or("", str::trim)
        .chars()
        .take(MAX_SEARCH)
        .collect();
    let load = async {
        let page = state
            .store
            .search_users(&tenant.id, &search, USER_PAGE_SIZE, query.cursor.as_deref())
            .await?;
        let total = state.store.count_users(&tenant.id, &search).await?;
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let items: Vec<_> = page
            .items
            .iter()
            .map(|u| {
                let groups: Vec<&str> = u
                    .groups
                    .iter()
                    .map(|g| {
                        snapshot
                            .user_group(&GroupId(g.clone()))
                            .unwrap_or(g.as_str())
                    })
                    .collect();
                json!({"user_name": u.user_name, "display_name": u.display_name, "active": u.active, "groups": groups})
            })
            .collect();
        Ok::<_, ApiError>(json!({
            "items": items, "total": total, "search": search,
            "next_cursor": page.next_cursor, "first_page": query.cursor.is_none(),
        }))
    };
    let data = load.await.map_err(|e| error_page(&e))?;
    let frame = frame(&signed_in, &tenant, "directory", "Users", data, "users.js");
    Ok(render(&UsersPage { frame }))
}

async fn user_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let found = state
        .store
        .user_by_name(&tenant.id, &user)
        .await
        .map_err(|e| error_page(&ApiError::from(e)))?;
    let load = async {
        let snapshot = state
            .snapshots
            .at_least(&tenant.id, tenant.data_version)
            .await?;
        let access = access_json(&state, &tenant.id, &snapshot, found).await?;
        Ok::<_, ApiError>(json!({
            "user": access,
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(IntoResponse::into_response)?;
    let title = data["user"]["user_name"]
        .as_str()
        .unwrap_or("User")
        .to_owned();
    let frame = frame(&signed_in, &tenant, "directory", &title, data, "user.js");
    Ok(render(&UserPage { frame }))
}

async fn group_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let group = GroupId(id);
    let Some(name) = snapshot.user_group(&group).map(str::to_owned) else {
        return Err(error_page(&ApiError::not_found("group")));
    };
    let load = async {
        let selections = admin::selections(&state, &tenant.id).await?;
        let nesting = nesting_json(&snapshot, &group, &name, &selections);
        let page = state
            .store
            .group_members(&tenant.id, &group.0, MEMBER_PAGE_SIZE, None)
            .await?;
        let counts = state
            .store
            .count_group_members(&tenant.id, &group.0)
            .await?;
        let direct = state.store.group(&tenant.id, &group.0).await?;
        Ok::<_, ApiError>(json!({
            "group": nesting,
            "source": direct.source,
            "members": page.items.into_iter().map(|m| member_json(&snapshot, m)).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "total": counts.members,
            "active": counts.active,
            "page_size": MEMBER_PAGE_SIZE,
            "services": SERVICES.iter().map(service_json).collect::<Vec<_>>(),
        }))
    };
    let data = load.await.map_err(IntoResponse::into_response)?;
    let frame = frame(&signed_in, &tenant, "directory", &name, data, "group.js");
    Ok(render(&GroupPage { frame }))
}
