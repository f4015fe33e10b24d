//! Enrolled devices: the list, a device with its decisions, and removal.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use entitle_store::DeviceFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::wire::{DecisionJson, DeviceJson, report_json, rfc3339};

/// The device routes; a device's PATCH is the enrollment module's.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/devices", get(list_devices))
        .route(
            "/api/v1/tenants/{tenant}/devices/{id}",
            get(get_device)
                .delete(delete_device)
                .patch(crate::enrollment::change_device),
        )
}

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

fn device_json(
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
