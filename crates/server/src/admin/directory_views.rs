//! Who is who in the directory, for people: a user's access (groups direct
//! and through nesting, devices, and every service's decision), a group's
//! effective members a keyset page at a time, and how a group sits in the
//! nesting (groups inside it, groups it is inside, entitlements that select it).
//!
//! Decisions come from the tenant's snapshot and the core's `evaluate()`,
//! exactly as a device's policy does; membership paths from the core's
//! `GroupGraph`, the one closure of nesting.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use entitle_core::{GroupId, GroupNames, SERVICES};
use entitle_store::{DeviceFilter, GroupMember, StoreError, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{page_limit, selections};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::QueryParams;
use crate::snapshot::TenantSnapshot;
use crate::state::AppState;
use crate::wire::{DecisionJson, rfc3339};

/// The directory view routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/users/{user}/access",
            get(user_access),
        )
        .route(
            "/api/v1/tenants/{tenant}/groups/{id}/members",
            get(group_members),
        )
        .route(
            "/api/v1/tenants/{tenant}/groups/{id}/nesting",
            get(group_nesting),
        )
}

/// Most devices one user's access lists.
pub(crate) const MAX_USER_DEVICES: u32 = 200;

/// A group named in a path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupRef {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
}

/// A group a user is in, directly or through nesting.
#[derive(Serialize, ToSchema)]
pub struct UserGroupJson {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Whether the user is a direct member.
    pub direct: bool,
    /// How the user belongs: from the user's own group up to this one (a
    /// direct group's path is itself); the shortest such path.
    pub path: Vec<GroupRef>,
}

/// One device of a user, with every service's decision.
#[derive(Serialize, ToSchema)]
pub struct UserDeviceJson {
    /// Device id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Client version.
    pub client_version: String,
    /// Effective ownership (attested, else reported).
    pub ownership: String,
    /// Waits for an administrator's approval.
    pub pending_approval: bool,
    /// When it last synced.
    pub last_sync_at: String,
    /// Device groups it is in.
    pub device_groups: Vec<GroupRef>,
    /// Decision per service id.
    pub decisions: BTreeMap<String, DecisionJson>,
}

/// A user's identity, groups, devices and what each service decides.
#[derive(Serialize, ToSchema)]
pub struct UserAccessJson {
    /// Id.
    pub id: String,
    /// Login name.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Primary email, as the identity provider sent it.
    pub email: Option<String>,
    /// The identity provider's own id (SCIM `externalId`).
    pub external_id: Option<String>,
    /// Active in the directory; a deprovisioned (deactivated) user's devices
    /// get no service.
    pub active: bool,
    /// Every group the user is in, direct ones first, then by name.
    pub groups: Vec<UserGroupJson>,
    /// The user's devices, by host name (at most 200).
    pub devices: Vec<UserDeviceJson>,
    /// Whether the user has more devices than listed.
    pub more_devices: bool,
    /// Per service id, what a device of this user would get if its client
    /// were recent enough and it met every device group the service selects:
    /// the user's side of the decision, which holds whether or not the user
    /// has a device.
    pub user_side: BTreeMap<String, DecisionJson>,
}

/// A user's access: groups direct and through nesting, devices, and each
/// service's decision for each device, with its explanation.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/users/{user}/access", tag = "directory",
    params(("tenant" = String, Path), ("user" = String, Path, description = "user_name")),
    responses((status = 200, body = UserAccessJson), (status = 404)))]
pub(crate) async fn user_access(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, user)): Path<(String, String)>,
) -> ApiResult<Json<UserAccessJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let user = state.store.user_by_name(&tenant.id, &user).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    Ok(Json(
        access_json(&state, &tenant.id, &snapshot, user).await?,
    ))
}

/// The access of a user read from the store, decided with `snapshot`.
pub(crate) async fn access_json(
    state: &AppState,
    tenant_id: &str,
    snapshot: &TenantSnapshot,
    user: User,
) -> ApiResult<UserAccessJson> {
    let identity = state.store.scim_user(tenant_id, &user.id).await?;
    let filter = DeviceFilter {
        user_name: Some(user.user_name.clone()),
        ..DeviceFilter::default()
    };
    let page = state
        .store
        .devices(tenant_id, &filter, MAX_USER_DEVICES, None)
        .await?;
    let direct: Vec<GroupId> = user.groups.iter().cloned().map(GroupId).collect();
    let mut groups: Vec<UserGroupJson> = snapshot
        .group_paths(&direct)
        .into_iter()
        .map(|(id, path)| UserGroupJson {
            display_name: group_name(snapshot, &id),
            direct: direct.contains(&id),
            id: id.0,
            path: path.iter().map(|g| group_ref(snapshot, g)).collect(),
        })
        .collect();
    groups.sort_by_cached_key(|g| (!g.direct, g.display_name.to_lowercase(), g.id.clone()));
    let devices = page
        .items
        .iter()
        .map(|device| {
            let decisions = snapshot.decide(device);
            UserDeviceJson {
                id: device.id.clone(),
                hostname: device.report.hostname.clone(),
                os: device.report.os.as_str().to_owned(),
                client_version: device.report.client_version.to_string(),
                ownership: device.decision_report().ownership.as_str().to_owned(),
                pending_approval: device.pending_approval,
                last_sync_at: rfc3339(device.last_sync_at),
                device_groups: decisions
                    .device_groups
                    .iter()
                    .map(|g| GroupRef {
                        id: g.0.clone(),
                        display_name: snapshot.device_group(g).unwrap_or(&g.0).to_owned(),
                    })
                    .collect(),
                decisions: decisions
                    .services
                    .iter()
                    .map(|(s, d)| (s.id.to_owned(), DecisionJson::from(d)))
                    .collect(),
            }
        })
        .collect();
    let user_side = snapshot
        .user_side(&user.id)
        .unwrap_or_default()
        .iter()
        .map(|(s, d)| (s.id.to_owned(), DecisionJson::from(d)))
        .collect();
    Ok(UserAccessJson {
        id: user.id,
        user_name: user.user_name,
        display_name: user.display_name,
        email: primary_email(&identity.attributes),
        external_id: identity.external_id,
        active: user.active,
        groups,
        devices,
        more_devices: page.next_cursor.is_some(),
        user_side,
    })
}

/// The primary email of SCIM `emails`, else the first one.
fn primary_email(attributes: &serde_json::Value) -> Option<String> {
    let emails = attributes.get("emails")?.as_array()?;
    let primary = emails
        .iter()
        .find(|e| e.get("primary").and_then(serde_json::Value::as_bool) == Some(true));
    primary
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

fn group_name(snapshot: &TenantSnapshot, id: &GroupId) -> String {
    snapshot.user_group(id).unwrap_or(&id.0).to_owned()
}

fn group_ref(snapshot: &TenantSnapshot, id: &GroupId) -> GroupRef {
    GroupRef {
        id: id.0.clone(),
        display_name: group_name(snapshot, id),
    }
}

/// A member of a group, directly or through nesting.
#[derive(Serialize, ToSchema)]
pub struct GroupMemberJson {
    /// User id.
    pub id: String,
    /// Login name.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Active in the directory (only active members count in `active` and in
    /// the group pickers).
    pub active: bool,
    /// Empty for a direct member; else the groups through which the user
    /// belongs, from the user's own group up to the one directly inside.
    pub via: Vec<GroupRef>,
}

/// A page of a group's effective members.
#[derive(Serialize, ToSchema)]
pub struct GroupMembersPage {
    /// Users by login name, each once.
    pub items: Vec<GroupMemberJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
    /// Whether there are more members after this page.
    pub more: bool,
    /// On the first page (no `cursor`): users in the group directly or
    /// through nesting, each once, deactivated ones included.
    pub total: Option<u64>,
    /// On the first page: how many of them are active (what pickers show).
    pub active: Option<u64>,
}

/// Paging parameters of a member listing.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Page size (1–200, default 50).
    #[param(required = false)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(required = false)]
    pub cursor: Option<String>,
}

/// Lists a group's members: users in it directly or through groups nested
/// inside it (each once, by login name, deleted users left out), with `via`
/// naming the nesting.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups/{id}/members", tag = "directory",
    params(("tenant" = String, Path), ("id" = String, Path), MembersQuery),
    responses((status = 200, body = GroupMembersPage), (status = 400, description = "a cursor this listing did not give"), (status = 404)))]
pub(crate) async fn group_members(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<MembersQuery>,
) -> ApiResult<Json<GroupMembersPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let page = state
        .store
        .group_members(
            &tenant.id,
            &id,
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    let counts = match query.cursor {
        None => Some(state.store.count_group_members(&tenant.id, &id).await?),
        Some(_) => None,
    };
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    Ok(Json(GroupMembersPage {
        items: page
            .items
            .into_iter()
            .map(|m| member_json(&snapshot, m))
            .collect(),
        more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        total: counts.map(|c| c.members),
        active: counts.map(|c| c.active),
    }))
}

pub(crate) fn member_json(snapshot: &TenantSnapshot, member: GroupMember) -> GroupMemberJson {
    GroupMemberJson {
        id: member.user_id,
        user_name: member.user_name,
        display_name: member.display_name,
        active: member.active,
        via: member
            .via
            .into_iter()
            .map(|g| group_ref(snapshot, &GroupId(g)))
            .collect(),
    }
}

/// A group reached through nesting, with the path that reaches it.
#[derive(Serialize, ToSchema)]
pub struct NestedGroupJson {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// For a group inside: from the group asked about down to this one; for
    /// a group around it: from the group asked about up to this one.
    pub path: Vec<GroupRef>,
}

/// An entitlement that reaches a group's members.
#[derive(Serialize, ToSchema)]
pub struct SelectionJson {
    /// Service id.
    pub service: String,
    /// The selected group: this group, or one it is nested in (whose members
    /// it gives the service through nesting).
    pub through: GroupRef,
}

/// How a group sits in the directory's nesting.
#[derive(Serialize, ToSchema)]
pub struct GroupNestingJson {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Groups nested inside, directly or deeper.
    pub inside: Vec<NestedGroupJson>,
    /// Groups this group is nested in, directly or deeper: its members are
    /// members of these too.
    pub around: Vec<NestedGroupJson>,
    /// Entitlements that select this group or a group around it.
    pub selected_by: Vec<SelectionJson>,
    /// Active users in the group directly or through nesting, each once.
    pub active_members: usize,
}

/// Shows the groups nested inside a group and around it, and the
/// entitlements that select it (directly or through a group around it).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/groups/{id}/nesting", tag = "directory",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = GroupNestingJson), (status = 404)))]
pub(crate) async fn group_nesting(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<GroupNestingJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let group = GroupId(id);
    let Some(name) = snapshot.user_group(&group) else {
        return Err(StoreError::NotFound { what: "group" }.into());
    };
    let selections = selections(&state, &tenant.id).await?;
    Ok(Json(nesting_json(&snapshot, &group, name, &selections)))
}

pub(crate) fn nesting_json(
    snapshot: &TenantSnapshot,
    group: &GroupId,
    name: &str,
    selections: &[(&'static str, entitle_core::Settings)],
) -> GroupNestingJson {
    let listed = |paths: BTreeMap<GroupId, Vec<GroupId>>| {
        let mut items: Vec<NestedGroupJson> = paths
            .into_iter()
            .filter(|(g, _)| g != group)
            .map(|(g, path)| NestedGroupJson {
                display_name: group_name(snapshot, &g),
                id: g.0,
                path: path.iter().map(|p| group_ref(snapshot, p)).collect(),
            })
            .collect();
        items.sort_by_cached_key(|g| (g.path.len(), g.display_name.to_lowercase()));
        items
    };
    let around_paths = snapshot.group_paths(std::slice::from_ref(group));
    // Each service once, through the nearest selected group.
    let mut selected_by = Vec::new();
    let mut seen = BTreeSet::new();
    let mut by_distance: Vec<(&GroupId, &Vec<GroupId>)> = around_paths.iter().collect();
    by_distance.sort_by_key(|(_, path)| path.len());
    for (reached, _) in by_distance {
        for (service, settings) in selections {
            if settings.user_groups.contains(reached) && seen.insert(*service) {
                selected_by.push(SelectionJson {
                    service: (*service).to_owned(),
                    through: group_ref(snapshot, reached),
                });
            }
        }
    }
    selected_by.sort_by_key(|s| SERVICES.iter().position(|d| d.id == s.service));
    GroupNestingJson {
        id: group.0.clone(),
        display_name: name.to_owned(),
        inside: listed(snapshot.nested_inside(group)),
        around: listed(around_paths),
        selected_by,
        active_members: snapshot.active_members(group),
    }
}
