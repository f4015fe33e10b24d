//! Device groups: rules over device reports, and the preview of a rule.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::{DeviceGroup, DeviceGroupId, IMPACT_SAMPLE_SIZE, Settings};
use serde::Serialize;
use utoipa::ToSchema;

use super::{DeleteQuery, Deleted, GroupKind, delete_group_of_kind, selections};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::population::{Devices, PopulationDevice};
use crate::state::AppState;
use crate::wire::{DeviceGroupBody, DeviceGroupJson};

/// The device group routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/device-groups/preview",
            post(preview_device_group),
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
}

/// Device groups list.
#[derive(Serialize, ToSchema)]
pub struct DeviceGroupList {
    /// Device groups by name.
    pub items: Vec<DeviceGroupJson>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
    /// Whether there are more device groups after this page.
    pub more: bool,
    /// How many device groups match, on the first page (no `cursor`).
    pub total: Option<u64>,
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
        .await
        .map_err(name_taken)?;
    state.snapshots.refresh(&tenant.id).await?;
    let json = device_group_json(&state, &tenant.id, &group).await?;
    Ok((StatusCode::CREATED, Json(json)).into_response())
}

/// Lists device groups with their current member counts.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/device-groups", tag = "device-groups",
    params(("tenant" = String, Path), super::directory::ListQuery),
    responses((status = 200, body = DeviceGroupList), (status = 400)))]
pub(crate) async fn list_device_groups(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    crate::extract::QueryParams(query): crate::extract::QueryParams<super::directory::ListQuery>,
) -> ApiResult<Json<DeviceGroupList>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    // A tenant has tens of device groups, not thousands: they are read whole
    // and paged here, with the same keyset cursor (name, id) as the other lists.
    let search = query.search().to_lowercase();
    let mut groups: Vec<DeviceGroup> = state
        .store
        .device_groups(&tenant.id)
        .await?
        .into_iter()
        .filter(|g| g.name.to_lowercase().contains(&search))
        .collect();
    groups.sort_by_cached_key(|g| (g.name.to_lowercase(), g.id.0.clone()));
    let total = groups.len() as u64;
    let start = match query.cursor.as_deref() {
        None => 0,
        Some(cursor) => {
            let (key, id) = decode_group_cursor(cursor)?;
            groups.partition_point(|g| {
                (g.name.to_lowercase(), g.id.0.clone()) <= (key.clone(), id.clone())
            })
        }
    };
    let limit = super::page_limit(query.limit) as usize;
    let page: Vec<DeviceGroup> = groups.iter().skip(start).take(limit).cloned().collect();
    let more = start + page.len() < groups.len();
    let next_cursor = more
        .then(|| page.last())
        .flatten()
        .map(|g| hex::encode(format!("{}\u{1f}{}", g.name.to_lowercase(), g.id.0)));
    let devices = state.populations.current(&tenant.id).await?;
    let selections = selections(&state, &tenant.id).await?;
    let items = page
        .iter()
        .map(|g| answer(g, &devices, &selections))
        .collect();
    Ok(Json(DeviceGroupList {
        items,
        more,
        next_cursor,
        total: query.cursor.is_none().then_some(total),
    }))
}

/// A taken name is the `name` field's problem, so a form shows it there.
fn name_taken(error: entitle_store::StoreError) -> ApiError {
    let duplicate = matches!(error, entitle_store::StoreError::Duplicate { .. });
    let error = ApiError::from(error);
    if duplicate {
        error.with_field("name")
    } else {
        error
    }
}

fn decode_group_cursor(cursor: &str) -> ApiResult<(String, String)> {
    hex::decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            text.split_once('\u{1f}')
                .map(|(k, i)| (k.to_owned(), i.to_owned()))
        })
        .ok_or_else(|| entitle_store::StoreError::BadCursor.into())
}

async fn find_device_group(state: &AppState, tenant_id: &str, id: &str) -> ApiResult<DeviceGroup> {
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
        .await
        .map_err(name_taken)?;
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
    delete_group_of_kind(&state, &caller, &tenant, GroupKind::Device, &id, query).await
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
    let devices = state.populations.current(&tenant.id).await?;
    let mut matching: Vec<&PopulationDevice> = devices.meeting(&rule).collect();
    let sample = first_by_owner(&mut matching)
        .iter()
        .map(|d| format!("{} on {}", d.user_name, d.hostname))
        .collect();
    Ok(Json(RulePreview {
        matching_devices: matching.len(),
        sample,
    }))
}

/// Every device group of the tenant as answered; `devices` are the tenant's.
pub(crate) async fn device_group_list(
    state: &AppState,
    tenant_id: &str,
    devices: &Devices,
) -> ApiResult<Vec<DeviceGroupJson>> {
    let groups = state.store.device_groups(tenant_id).await?;
    let selections = selections(state, tenant_id).await?;
    Ok(groups
        .iter()
        .map(|g| answer(g, devices, &selections))
        .collect())
}

async fn device_group_json(
    state: &AppState,
    tenant_id: &str,
    group: &DeviceGroup,
) -> ApiResult<DeviceGroupJson> {
    let devices = state.populations.current(tenant_id).await?;
    let selections = selections(state, tenant_id).await?;
    Ok(answer(group, &devices, &selections))
}

/// A device group as answered: how many of `devices` it holds (by their
/// effective ownership, as decisions see them), and which services select it.
fn answer(
    group: &DeviceGroup,
    devices: &Devices,
    selections: &[(&'static str, Settings)],
) -> DeviceGroupJson {
    DeviceGroupJson::new(group, devices.held_by(group))
        .used_by(device_group_used_by(selections, &group.id))
}

/// The first [`IMPACT_SAMPLE_SIZE`] of `devices` in (user, host name) order,
/// as a preview samples them.
fn first_by_owner<'a, 'd>(devices: &'a mut [&'d PopulationDevice]) -> &'a [&'d PopulationDevice] {
    let by_owner = |a: &&PopulationDevice, b: &&PopulationDevice| {
        (&a.user_name, &a.hostname).cmp(&(&b.user_name, &b.hostname))
    };
    let n = IMPACT_SAMPLE_SIZE.min(devices.len());
    if n < devices.len() {
        devices.select_nth_unstable_by(n, by_owner);
    }
    let first = &mut devices[..n];
    first.sort_unstable_by(by_owner);
    first
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
