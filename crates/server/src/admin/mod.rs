//! The admin REST API under `/api/v1` (SPEC §7, §10), one module per resource,
//! each with its own `router()`, merged here.

pub(crate) mod accounts;
pub(crate) mod audit;
pub(crate) mod device_groups;
pub(crate) mod devices;
pub(crate) mod directory;
pub(crate) mod entitlements;
pub(crate) mod tenants;

use axum::Router;
use entitle_core::{SERVICES, Settings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiResult;
use crate::state::AppState;

/// The admin API's routes.
pub fn router() -> Router<AppState> {
    tenants::router()
        .merge(accounts::router())
        .merge(directory::router())
        .merge(device_groups::router())
        .merge(entitlements::router())
        .merge(devices::router())
        .merge(audit::router())
}

/// Page sizes: default 50, at most 200.
fn page_limit(limit: Option<u32>) -> u32 {
    limit.unwrap_or(50).clamp(1, 200)
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
