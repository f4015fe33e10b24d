//! Enrolled devices: the list, a device with its decisions, and removal.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::{ClientVersion, Os, Ownership, ServiceDef};
use entitle_store::{Device, DeviceFilter, DeviceSort, Page};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::snapshot::TenantSnapshot;
use crate::state::AppState;
use crate::wire::{DecisionJson, DeviceJson, applied_json, report_json, rfc3339};

/// The device routes; a device's PATCH is the enrollment module's.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/devices", get(list_devices))
        .route(
            "/api/v1/tenants/{tenant}/devices/export.csv",
            get(export_devices),
        )
        .route(
            "/api/v1/tenants/{tenant}/devices/{id}/resync",
            post(resync_device),
        )
        .route(
            "/api/v1/tenants/{tenant}/devices/{id}",
            get(get_device)
                .delete(delete_device)
                .patch(crate::enrollment::change_device),
        )
}

/// Device listing parameters. Every filter applies to the whole set of
/// devices before paging.
#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
pub struct DeviceQuery {
    /// Only this user's devices.
    #[param(required = false)]
    pub user_name: Option<String>,
    /// Only devices with this host name.
    #[param(required = false)]
    pub hostname: Option<String>,
    /// Only devices whose user name or host name contains this text (trimmed).
    #[param(required = false)]
    pub search: Option<String>,
    /// Only devices that report this OS (`windows`, `macos`, `linux`, `ios`, `android`).
    #[param(required = false)]
    pub os: Option<String>,
    /// Only devices with this effective ownership (`corporate`, `personal`).
    #[param(required = false)]
    pub ownership: Option<String>,
    /// Only devices last seen before this time (RFC 3339).
    #[param(required = false)]
    pub last_seen_before: Option<String>,
    /// Only devices last seen at or after this time (RFC 3339).
    #[param(required = false)]
    pub last_seen_after: Option<String>,
    /// Only devices whose client version is below this one (e.g. `4.2`).
    #[param(required = false)]
    pub client_version_below: Option<String>,
    /// `true`: only devices pending approval; `false`: only approved ones.
    #[param(required = false)]
    pub pending: Option<bool>,
    /// `current`: only devices whose agent applied the tenant's current config
    /// version; `stale`: only those behind it or that never reported one.
    #[param(required = false, inline)]
    #[serde(default, deserialize_with = "empty_as_none")]
    pub applied: Option<AppliedFilter>,
    /// With `state`: only devices in that state for this service. Without
    /// `service`, `state` keeps devices in that state for any service.
    #[param(required = false)]
    pub service: Option<String>,
    /// `on` or `off`.
    #[param(required = false)]
    pub state: Option<String>,
    /// `hostname` (default), `user_name`, `last_seen` or `os`.
    #[param(required = false)]
    pub sort: Option<String>,
    /// `asc` (default) or `desc`.
    #[param(required = false)]
    pub order: Option<String>,
    /// Page size (1–200, default 50).
    #[param(required = false)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page, asked with the same filters and order.
    #[param(required = false)]
    pub cursor: Option<String>,
}

/// The `applied` filter of a device listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppliedFilter {
    /// Applied the current config version.
    Current,
    /// Behind it, or never reported.
    Stale,
}

/// An empty value, as a portal form's "Any" sends it, is no filter.
fn empty_as_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AppliedFilter>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(value) => {
            AppliedFilter::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(value))
                .map(Some)
        }
    }
}

/// A page of devices.
#[derive(Serialize, ToSchema)]
pub struct DevicePage {
    /// Devices.
    pub items: Vec<DeviceJson>,
    /// Cursor of the next page. A page filtered by `service`/`state` or
    /// `client_version_below` may hold fewer than `limit` devices while this
    /// is set: one request looks through at most 20,000 devices.
    pub next_cursor: Option<String>,
    /// Whether there may be more devices after this page.
    pub more: bool,
    /// How many devices match, on the first page (no `cursor`), when the
    /// store alone can count them (not with `service`/`state` or
    /// `client_version_below`).
    pub total: Option<u64>,
}

/// The most devices one listing request evaluates, so that a filter that
/// matches few devices in a large fleet answers in bounded time.
const SCAN_BUDGET: usize = 20_000;

/// The most device ids a listing filtered by state hands the store. Past it,
/// both the matching devices and the others are more than this many, so at
/// least this share of the fleet matches and looking through it in order
/// finds a page quickly (one in twenty at a million devices).
const STATE_ID_SET_LIMIT: usize = 50_000;

/// A device listing's parsed filters.
pub(crate) struct DeviceListing {
    /// What the store filters and orders.
    pub filter: DeviceFilter,
    client_below: Option<ClientVersion>,
    service: Option<&'static ServiceDef>,
    state: Option<bool>,
}

impl DeviceQuery {
    /// Parses the filters; anything unknown is a 400 that names it.
    pub(crate) fn listing(&self) -> ApiResult<DeviceListing> {
        let text = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let time = |name: &'static str,
                    value: &Option<String>|
         -> ApiResult<Option<OffsetDateTime>> {
            text(value)
                .map(|v| {
                    OffsetDateTime::parse(&v, &Rfc3339).map_err(|_| {
                        ApiError::bad_request(
                            "bad_query",
                            format!("{name} must be an RFC 3339 time such as 2026-01-31T12:00:00Z"),
                        )
                    })
                })
                .transpose()
        };
        let os = text(&self.os)
            .map(|v| Os::parse(&v))
            .transpose()
            .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
        let ownership = text(&self.ownership)
            .map(|v| Ownership::parse(&v))
            .transpose()
            .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
        let client_below = text(&self.client_version_below)
            .map(|v| ClientVersion::parse(&v))
            .transpose()
            .map_err(|e| {
                ApiError::bad_request("bad_query", format!("client_version_below: {e}"))
            })?;
        let service = text(&self.service)
            .map(|v| entitle_core::service(&v))
            .transpose()
            .map_err(|e| ApiError::bad_request("bad_query", e.to_string()))?;
        let state = match text(&self.state).as_deref() {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(_) => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "state must be on or off",
                ));
            }
        };
        let applied_current = self.applied.map(|a| a == AppliedFilter::Current);
        let sort = match text(&self.sort) {
            None => DeviceSort::default(),
            Some(name) => DeviceSort::parse(&name).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_query",
                    "sort must be hostname, user_name, last_seen or os",
                )
            })?,
        };
        let descending = match text(&self.order).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "order must be asc or desc",
                ));
            }
        };
        Ok(DeviceListing {
            filter: DeviceFilter {
                user_name: text(&self.user_name),
                hostname: text(&self.hostname),
                search: text(&self.search),
                os,
                ownership,
                last_seen_before: time("last_seen_before", &self.last_seen_before)?,
                last_seen_after: time("last_seen_after", &self.last_seen_after)?,
                pending: self.pending,
                applied_current,
                ids: None,
                sort,
                descending,
            },
            client_below,
            service,
            state,
        })
    }
}

impl DeviceListing {
    /// Whether some filter needs the device's decisions or client version,
    /// which the store cannot compute.
    fn evaluates(&self) -> bool {
        self.client_below.is_some() || self.state.is_some()
    }

    /// The filters the store cannot apply.
    fn keeps(&self, snapshot: &TenantSnapshot, device: &Device) -> bool {
        if let Some(below) = &self.client_below
            && device.report.client_version >= *below
        {
            return false;
        }
        let Some(wanted) = self.state else {
            return true;
        };
        let decisions = snapshot.decide(device);
        let mut services = decisions
            .services
            .iter()
            .filter(|(s, _)| self.service.is_none_or(|w| w.id == s.id));
        services.any(|(_, d)| d.enabled == wanted)
    }

    /// One page of devices in the listing's order, with the cursor of the
    /// next one. Filters the store cannot apply are applied while paging
    /// through the store in keyset order, so the cursor stays a keyset one.
    pub(crate) async fn page(
        &self,
        state: &AppState,
        tenant_id: &str,
        snapshot: &Arc<TenantSnapshot>,
        limit: u32,
        cursor: Option<&str>,
    ) -> ApiResult<Page<Device>> {
        if !self.evaluates() {
            return Ok(state
                .store
                .devices(tenant_id, &self.filter, limit, cursor)
                .await?);
        }
        // A state few devices are in (or most are) is found in memory and
        // handed to the store as a set of ids, so that a page of a rare state
        // is one indexed query instead of reading devices until enough match.
        // The devices the store returns are still checked below: one that
        // changed since is dropped, not shown in the wrong state.
        let narrowed = match self.state {
            Some(wanted) => state
                .populations
                .in_state(
                    tenant_id,
                    snapshot,
                    self.service,
                    wanted,
                    STATE_ID_SET_LIMIT,
                )
                .await?
                .map(|ids| DeviceFilter {
                    ids: Some(ids),
                    ..self.filter.clone()
                }),
            None => None,
        };
        let filter = narrowed.as_ref().unwrap_or(&self.filter);
        let batch = (limit * 4).clamp(200, 1000);
        let mut cursor = cursor.map(str::to_owned);
        let mut items = Vec::new();
        let mut scanned = 0;
        loop {
            let found = state
                .store
                .devices(tenant_id, filter, batch, cursor.as_deref())
                .await?;
            scanned += found.items.len();
            let mut rest = found.items.into_iter();
            for device in rest.by_ref() {
                if self.keeps(snapshot, &device) {
                    items.push(device);
                    if items.len() == limit as usize {
                        break;
                    }
                }
            }
            let full = items.len() == limit as usize;
            let last = if full { items.last() } else { None };
            // Where the next page starts: after the last device kept when the
            // page is full, else after the last device looked at.
            if full {
                let more = rest.len() > 0 || found.next_cursor.is_some();
                let next = if more {
                    last.map(|d| self.filter.sort.cursor_after(self.filter.descending, d))
                } else {
                    None
                };
                return Ok(Page {
                    items,
                    next_cursor: next,
                });
            }
            match found.next_cursor {
                None => {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    });
                }
                Some(next) if scanned >= SCAN_BUDGET => {
                    return Ok(Page {
                        items,
                        next_cursor: Some(next),
                    });
                }
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// How many devices match, when the store alone can tell.
    pub(crate) async fn total(&self, state: &AppState, tenant_id: &str) -> ApiResult<Option<u64>> {
        if self.evaluates() {
            return Ok(None);
        }
        Ok(Some(
            state.store.count_devices(tenant_id, &self.filter).await?,
        ))
    }
}

/// Lists devices, filtered and ordered over the whole set, a page at a time.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/devices", tag = "devices",
    params(("tenant" = String, Path), DeviceQuery),
    responses((status = 200, body = DevicePage), (status = 400)))]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<DeviceQuery>,
) -> ApiResult<Json<DevicePage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let listing = query.listing()?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let page = listing
        .page(
            &state,
            &tenant.id,
            &snapshot,
            page_limit(query.limit),
            query.cursor.as_deref(),
        )
        .await?;
    // Counted once, on the first page: later pages would count the same set again.
    let total = match query.cursor {
        None => listing.total(&state, &tenant.id).await?,
        Some(_) => None,
    };
    let items = page
        .items
        .iter()
        .map(|d| {
            let groups = snapshot.device_groups_of(d);
            device_json(
                d,
                groups.into_iter().map(|g| g.0).collect(),
                None,
                snapshot.tenant.config_version,
            )
        })
        .collect();
    Ok(Json(DevicePage {
        items,
        more: page.next_cursor.is_some(),
        next_cursor: page.next_cursor,
        total,
    }))
}

/// Devices a CSV export reads from the store at a time.
const EXPORT_BATCH: u32 = 1000;

/// Exports the devices a listing with the same filters and order shows, as
/// CSV (one column per service: `on`/`off`). Streamed a batch at a time, so
/// the server's memory stays flat however many devices match.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/devices/export.csv", tag = "devices",
    params(("tenant" = String, Path), DeviceQuery),
    responses((status = 200, content_type = "text/csv", body = String), (status = 400)))]
pub(crate) async fn export_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<DeviceQuery>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let listing = query.listing()?;
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let mut head = vec![
        "id",
        "hostname",
        "user_name",
        "os",
        "client_version",
        "ownership",
        "pending_approval",
        "last_seen",
    ];
    head.extend(entitle_core::SERVICES.iter().map(|s| s.id));
    let mut first = csv_line(head.into_iter().map(str::to_owned));
    // The first batch is read before answering, so that a bad cursor or a
    // store failure is a status, not a download cut short.
    let page = listing
        .page(
            &state,
            &tenant.id,
            &snapshot,
            EXPORT_BATCH,
            query.cursor.as_deref(),
        )
        .await?;
    for device in &page.items {
        first.push_str(&device_csv(&snapshot, device));
    }
    struct Export {
        state: AppState,
        tenant_id: String,
        snapshot: std::sync::Arc<TenantSnapshot>,
        listing: DeviceListing,
        cursor: Option<String>,
        done: bool,
    }
    let export = Export {
        state,
        tenant_id: tenant.id,
        snapshot,
        listing,
        done: page.next_cursor.is_none(),
        cursor: page.next_cursor,
    };
    let rows = futures_util::stream::unfold(export, |mut export| async move {
        if export.done {
            return None;
        }
        let page = export
            .listing
            .page(
                &export.state,
                &export.tenant_id,
                &export.snapshot,
                EXPORT_BATCH,
                export.cursor.as_deref(),
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                // The status is already sent: cutting the body short tells the client.
                tracing::warn!(status = %error.status(), "device export failed");
                export.done = true;
                return Some((Err(std::io::Error::other("device export failed")), export));
            }
        };
        let mut chunk = String::new();
        for device in &page.items {
            chunk.push_str(&device_csv(&export.snapshot, device));
        }
        export.done = page.next_cursor.is_none();
        export.cursor = page.next_cursor;
        Some((Ok(Bytes::from(chunk)), export))
    });
    let body =
        futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(first))]).chain(rows);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"devices.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn device_csv(snapshot: &TenantSnapshot, device: &Device) -> String {
    let decisions = snapshot.decide(device);
    let mut cells = vec![
        device.id.clone(),
        device.report.hostname.clone(),
        device.user_name.clone(),
        device.report.os.as_str().to_owned(),
        device.report.client_version.to_string(),
        device.decision_report().ownership.as_str().to_owned(),
        device.pending_approval.to_string(),
        rfc3339(device.last_sync_at),
    ];
    for service in entitle_core::SERVICES {
        let state = decisions
            .services
            .iter()
            .find(|(s, _)| s.id == service.id)
            .map_or("", |(_, d)| if d.enabled { "on" } else { "off" });
        cells.push(state.to_owned());
    }
    csv_line(cells.into_iter())
}

/// One CSV record. Cells are quoted when needed, and a cell a spreadsheet
/// would read as a formula (a host name such as `=cmd|…`) is prefixed with `'`.
fn csv_line(cells: impl Iterator<Item = String>) -> String {
    let mut line = cells
        .map(|cell| {
            let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{cell}")
            } else {
                cell
            };
            if cell.contains([',', '"', '\n', '\r']) || cell.starts_with('\'') {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// What a "sync now" request answers.
#[derive(Serialize, ToSchema)]
pub struct ResyncJson {
    /// The device.
    pub id: String,
    /// What happens next.
    pub message: String,
}

/// Asks a device to sync now: a held long-poll answers at once, so the agent
/// syncs again with a fresh report; a device that holds none syncs at its
/// next poll as usual.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/devices/{id}/resync", tag = "devices",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = ResyncJson), (status = 403), (status = 404)))]
pub(crate) async fn resync_device(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<ResyncJson>)> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let device = state.store.device(&tenant.id, &id).await?;
    state
        .store
        .append_audit(
            Some(&tenant.id),
            &caller.actor,
            "device.resync",
            &device.report.hostname,
            None,
            None,
        )
        .await?;
    state
        .snapshots
        .nudge(&tenant.id, &device.id, Some(&device.user_id));
    Ok((
        StatusCode::ACCEPTED,
        Json(ResyncJson {
            id: device.id,
            message: "the device syncs now if its agent is connected, else at its next sync"
                .to_owned(),
        }),
    ))
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
    device_json(
        device,
        groups,
        Some(entitlements),
        snapshot.tenant.config_version,
    )
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
    let removed = state
        .store
        .delete_device(&tenant.id, &id, &caller.actor)
        .await?;
    // Answers the device's held long-poll, which then finds its token revoked.
    state
        .snapshots
        .refresh_for_device(&tenant.id, &removed)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn device_json(
    device: &entitle_store::Device,
    device_groups: Vec<String>,
    entitlements: Option<BTreeMap<String, DecisionJson>>,
    current_version: i64,
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
        applied: device
            .applied
            .as_ref()
            .map(|a| applied_json(a, current_version)),
        entitlements,
    }
}
