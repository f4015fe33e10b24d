//! The admin REST API under `/api/v1` (SPEC §7, §10), one module per resource,
//! each with its own `router()`, merged here.

pub(crate) mod accounts;
pub(crate) mod audit;
pub(crate) mod device_group_impact;
pub(crate) mod device_groups;
pub(crate) mod devices;
pub(crate) mod directory;
pub(crate) mod directory_views;
pub(crate) mod entitlements;
pub(crate) mod invitations;
pub(crate) mod population;
pub(crate) mod scim_setup;
pub(crate) mod sessions;
pub(crate) mod tenants;

use axum::{Json, Router};
use entitle_core::{SERVICES, Settings};
use entitle_store::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The admin API's routes.
pub fn router() -> Router<AppState> {
    tenants::router()
        .merge(accounts::router())
        .merge(directory::router())
        .merge(directory_views::router())
        .merge(device_groups::router())
        .merge(device_group_impact::router())
        .merge(entitlements::router())
        .merge(devices::router())
        .merge(audit::router())
        .merge(scim_setup::router())
        .merge(invitations::router())
        .merge(sessions::router())
}

/// Page sizes: default 50, at most 200.
fn page_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50).clamp(1, 200)
}

/// The role of a tenant's token or account: admin or viewer, never super admin.
fn tenant_role(text: &str) -> ApiResult<Role> {
    match Role::parse(text) {
        Some(role @ (Role::Admin | Role::Viewer)) => Ok(role),
        _ => Err(ApiError::unprocessable(
            "invalid_role",
            "role must be \"admin\" or \"viewer\"",
        )),
    }
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

// A group and a device group are deleted alike: the same query, the same answer.

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

/// The two kinds of group an entitlement selects.
pub(crate) enum GroupKind {
    /// A directory group of users.
    Directory,
    /// A device group.
    Device,
}

/// Deletes a group of either kind and refreshes the snapshot, so that no
/// device keeps a decision that rested on it.
pub(crate) async fn delete_group_of_kind(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    kind: GroupKind,
    id: &str,
    query: DeleteQuery,
) -> ApiResult<Json<Deleted>> {
    let tenant = caller.tenant_for_write(state, tenant).await?;
    let force = query.force.unwrap_or(false);
    let store = &state.store;
    let still_selected_by = match kind {
        GroupKind::Directory => {
            store
                .delete_group(&tenant.id, id, &caller.actor, force)
                .await?
        }
        GroupKind::Device => {
            store
                .delete_device_group(&tenant.id, id, &caller.actor, force)
                .await?
        }
    };
    state.snapshots.refresh(&tenant.id).await?;
    Ok(Json(Deleted { still_selected_by }))
}
