//! Entitlement settings per service: reads, saves with `If-Match`, the
//! preview of a change, the history of config versions and rollback.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use entitle_core::{
    IMPACT_SAMPLE_SIZE, PopulationEntry, SERVICES, ServiceDef, Settings, impact, service,
};
use entitle_store::{SaveRequest, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{ImpactJson, PrincipalJson, SettingsJson, rfc3339};

/// The entitlement routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
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
}

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

fn service_or_404(id: &str) -> ApiResult<&'static ServiceDef> {
    service(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_service", e.to_string()))
}
