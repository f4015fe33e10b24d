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
    DeviceGroupId, GroupId, GroupNames, IMPACT_SAMPLE_SIZE, PopulationEntry, ROLLOUT_STEPS,
    SERVICES, ServiceDef, Settings, impact, rollout_preview, service,
};
use entitle_store::{SaveRequest, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use super::scheduled_changes::{self, SaveBody, StoreOrApi};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::population::{Decidable, blocking};
use crate::snapshot::TenantSnapshot;
use crate::state::AppState;
use crate::wire::{ErrorDetailJson, ImpactJson, PrincipalJson, SettingsJson, rfc3339};

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

/// The version an `If-Match` header names; `*` and absence mean "any". An
/// `Err` is the message of the 412 for an ETag this server never issued.
fn expected_version(headers: &HeaderMap) -> Result<Option<i64>, String> {
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
        format!("If-Match {text} does not name a version of these settings; read them again to get the current ETag")
    })
}

/// The answer to a stale save: the error, and what the caller needs to merge
/// their change into the current settings without a second request.
#[derive(Serialize, ToSchema)]
pub struct StaleJson {
    /// `stale_version`, and what to do.
    pub error: ErrorDetailJson,
    /// The settings as they are now, and who made them so.
    pub current: CurrentSettingsJson,
}

/// The current settings of a service and the version that made them so.
#[derive(Serialize, ToSchema)]
pub struct CurrentSettingsJson {
    /// SETTINGS as stored now.
    pub settings: SettingsJson,
    /// Their version; `If-Match` of a save on top of them sends it as the ETag.
    pub version: i64,
    /// The ETag to send as `If-Match`.
    pub etag: String,
    /// Who saved this version (absent for a tenant's defaults, never saved).
    pub changed_by: Option<PrincipalJson>,
    /// When, RFC 3339 (absent for a tenant's defaults).
    pub changed_at: Option<String>,
    /// Names of the groups the settings select, by id; deleted groups are marked.
    pub names: BTreeMap<String, String>,
}

/// Saves one service's settings as a new config version; settings equal to the
/// stored ones are answered with the stored version and write nothing. With
/// `"apply_at"` (RFC 3339, future) beside the settings, the save is checked now
/// and scheduled (202): applied once at that time with `If-Match` = the
/// version sent now (or, without `If-Match`, the version stored now).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/entitlements/{service}", tag = "entitlements", request_body = super::scheduled_changes::SaveBodyJson,
    params(("tenant" = String, Path), ("service" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = SettingsJson, headers(("ETag" = String))), (status = 202, body = super::scheduled_changes::ScheduledChangeJson, description = "Scheduled: the body had \"apply_at\""), (status = 403), (status = 412, body = StaleJson), (status = 422)))]
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, service_id)): Path<(String, String)>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<SaveBody>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let service = service_or_404(&service_id)?;
    let expected = match expected_version(&headers) {
        Ok(expected) => expected,
        Err(message) => return stale(&state, &tenant.id, service, message).await,
    };
    let SaveBody {
        settings: body,
        apply_at,
    } = body;
    if let Some(apply_at) = apply_at {
        let scheduled = scheduled_changes::schedule(
            &state, &caller, &tenant, service, expected, body, &apply_at,
        );
        return match scheduled.await {
            Ok(response) => Ok(response),
            Err(StoreOrApi::Store(error @ StoreError::Stale { .. })) => {
                stale(&state, &tenant.id, service, error.to_string()).await
            }
            Err(StoreOrApi::Store(error)) => Err(error.into()),
            Err(StoreOrApi::Api(error)) => Err(error),
        };
    }
    let request = SaveRequest {
        service,
        expected_version: expected,
        settings: body.into(),
        actor: caller.actor.clone(),
        action: "entitlement.save",
        check_default_rule: true,
        restored_from: None,
    };
    let saved = match state.store.save_settings(&tenant.id, request).await {
        Ok(saved) => saved,
        Err(error @ StoreError::Stale { .. }) => {
            return stale(&state, &tenant.id, service, error.to_string()).await;
        }
        Err(error) => return Err(error.into()),
    };
    if saved.config_version == tenant.config_version {
        tracing::info!(tenant = %tenant.id, service = service.id, config_version = saved.config_version, actor = %caller.name, "entitlement saved without change");
    } else {
        state.snapshots.refresh(&tenant.id).await?;
        tracing::info!(tenant = %tenant.id, service = service.id, config_version = saved.config_version, actor = %caller.name, "entitlement saved");
    }
    Ok(with_etag(saved.stored.version, &saved.stored.settings))
}

/// The 412 of a stale save, carrying the current settings, their version and
/// who saved it when.
async fn stale(
    state: &AppState,
    tenant_id: &str,
    service: &'static ServiceDef,
    message: String,
) -> ApiResult<Response> {
    let stored = state.store.settings(tenant_id, service).await?;
    let changed = if stored.version > 0 {
        Some(
            state
                .store
                .config_version(tenant_id, stored.version)
                .await?,
        )
    } else {
        None
    };
    // The snapshot at least as new as the tenant now is, so that a group the
    // other administrator just created has its name.
    let fresh = state.store.tenant(tenant_id).await?;
    let snapshot = state
        .snapshots
        .at_least(tenant_id, fresh.data_version)
        .await?;
    let body = StaleJson {
        error: ErrorDetailJson {
            code: "stale_version".to_owned(),
            message,
            field: None,
        },
        current: CurrentSettingsJson {
            names: group_names(&snapshot, [&stored.settings]),
            settings: SettingsJson::from(&stored.settings),
            version: stored.version,
            etag: format!("\"{}\"", stored.version),
            changed_by: changed.as_ref().map(|v| PrincipalJson::from(&v.actor)),
            changed_at: changed.as_ref().map(|v| rfc3339(v.at)),
        },
    };
    let mut response = (StatusCode::PRECONDITION_FAILED, Json(body)).into_response();
    response
        .headers_mut()
        .insert(ETAG, settings_etag(stored.version));
    Ok(response)
}

/// The names of every group the settings select, by id; a deleted group is
/// named as it was, marked "(deleted)", and an id never known stays an id.
fn group_names<'a>(
    snapshot: &TenantSnapshot,
    settings: impl IntoIterator<Item = &'a Settings>,
) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for settings in settings {
        for id in settings
            .user_groups
            .iter()
            .chain(&settings.exclude_user_groups)
        {
            let name = match snapshot.user_group(id) {
                Some(name) => name.to_owned(),
                None => snapshot
                    .deleted_user_group(id)
                    .map_or_else(|| id.0.clone(), |name| format!("{name} (deleted)")),
            };
            names.insert(id.0.clone(), name);
        }
        for id in settings
            .device_groups
            .iter()
            .chain(&settings.exclude_device_groups)
        {
            let name = match snapshot.device_group(id) {
                Some(name) => name.to_owned(),
                None => snapshot
                    .deleted_device_group(id)
                    .map_or_else(|| id.0.clone(), |name| format!("{name} (deleted)")),
            };
            names.insert(id.0.clone(), name);
        }
    }
    names
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
    if !(1..=entitle_core::FULL_ROLLOUT).contains(&proposed.rollout_percent) {
        return Err(ApiError::from(StoreError::Invalid(
            entitle_core::SaveError::RolloutPercent {
                percent: proposed.rollout_percent,
            },
        )));
    }
    let decidable = state.populations.decidable(&tenant.id, &snapshot).await?;
    // A million devices take a few hundred milliseconds of each core: off the
    // async workers, so that syncs are not held up behind a preview.
    let json = blocking("entitlement preview", move || {
        let current = snapshot.settings(service).map(|s| &s.settings);
        current.map(|current| preview_over(service, current, &proposed, &decidable, &snapshot))
    })
    .await?
    .ok_or_else(|| ApiError::not_found("service"))?;
    Ok(Json(json))
}

/// Who gains and who loses `service` if `current` becomes `proposed`, over
/// every device, with how many each rollout step reaches: the two are
/// independent passes, run side by side.
fn preview_over(
    service: &'static ServiceDef,
    current: &Settings,
    proposed: &Settings,
    decidable: &Decidable,
    snapshot: &TenantSnapshot,
) -> ImpactJson {
    let groups = decidable.devices.groups(snapshot);
    let population = || {
        decidable
            .subjects(snapshot, &groups)
            .map(|(device, subject)| PopulationEntry {
                hostname: &device.hostname,
                subject,
            })
    };
    // The rollout steps of the proposed settings, from the same rule, plus
    // the proposed percentage itself when it is not one of the steps.
    let mut steps: Vec<u8> = ROLLOUT_STEPS.to_vec();
    if (1..=100).contains(&proposed.rollout_percent) && !steps.contains(&proposed.rollout_percent) {
        steps.push(proposed.rollout_percent);
        steps.sort_unstable();
    }
    let (result, rollout) = std::thread::scope(|scope| {
        let rollout =
            scope.spawn(|| rollout_preview(service, proposed, population(), snapshot, &steps));
        let result = impact(service, current, proposed, population(), snapshot);
        let rollout = rollout
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (result, rollout)
    });
    debug_assert!(result.gaining.sample.len() <= IMPACT_SAMPLE_SIZE);
    let mut json = ImpactJson::from(result);
    json.rollout = rollout.into_iter().map(Into::into).collect();
    json
}

/// History parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this service.
    pub service: Option<String>,
    /// How many versions (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
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
    /// The version this one restored, when it is a rollback.
    pub restored_from: Option<i64>,
}

/// Config versions, newest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryJson {
    /// Versions, newest first.
    pub items: Vec<HistoryItem>,
    /// Names of the groups the items select, by id; a group deleted since is
    /// named as it was, marked "(deleted)".
    pub names: BTreeMap<String, String>,
    /// Ids among them of groups deleted since: a restore of a version that
    /// selects one needs `without_deleted`.
    pub deleted: Vec<String>,
    /// Opaque cursor of the next (older) page, if there is one.
    pub next_cursor: Option<String>,
}

/// Lists config versions, newest first, a page at a time.
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
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            decode_history_cursor(cursor).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_cursor",
                    "cursor is not a next_cursor this server issued; start again without it",
                )
            })
        })
        .transpose()?;
    let limit = page_limit(query.limit);
    // One more than asked tells whether another page follows.
    let mut versions = state
        .store
        .history_before(&tenant.id, query.service.as_deref(), limit + 1, before)
        .await?;
    let more = versions.len() > limit as usize;
    versions.truncate(limit as usize);
    let next_cursor = more
        .then(|| versions.last().map(|v| encode_history_cursor(v.version)))
        .flatten();
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let names = group_names(
        &snapshot,
        versions.iter().flat_map(|v| [&v.before, &v.after]),
    );
    let deleted = names
        .keys()
        .filter(|id| {
            snapshot.user_group(&GroupId((*id).clone())).is_none()
                && snapshot
                    .device_group(&DeviceGroupId((*id).clone()))
                    .is_none()
        })
        .cloned()
        .collect();
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
            restored_from: v.restored_from,
        })
        .collect();
    Ok(Json(HistoryJson {
        items,
        names,
        deleted,
        next_cursor,
    }))
}

/// The cursor after version `version`: opaque to callers, so that its form
/// can change.
pub(crate) fn encode_history_cursor(version: i64) -> String {
    hex::encode(format!("v{version}"))
}

fn decode_history_cursor(cursor: &str) -> Option<i64> {
    let bytes = hex::decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix('v')?.parse().ok()
}

/// Body of a rollback.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The version whose settings to restore.
    pub config_version: i64,
    /// Restore the version without the groups deleted since. Without it, a
    /// version that selects a deleted group is refused (422), since dropping
    /// a group can widen who gets the service: preview the result first.
    #[serde(default)]
    pub without_deleted: bool,
}

/// The result of a rollback.
#[derive(Serialize, ToSchema)]
pub struct RollbackResult {
    /// The config version after the rollback: a new one, or the current one
    /// when the settings already equal the restored ones.
    pub config_version: i64,
    /// The service it restored.
    pub service: String,
    /// The restored settings.
    pub settings: SettingsJson,
    /// Whether a new version was written; false when the settings already
    /// equal the restored ones.
    pub changed: bool,
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
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let mut settings = version.after.clone();
    let deleted = deleted_groups(&snapshot, &settings);
    if !deleted.is_empty() {
        if !body.without_deleted {
            return Err(ApiError::unprocessable(
                "restore_selects_deleted_groups",
                format!(
                    "version {} selects {} deleted since; restore it without {} (\"without_deleted\": true; --without-deleted in the CLI), after checking the preview: without {} the service may reach more people",
                    version.version,
                    deleted.join(", "),
                    if deleted.len() == 1 { "it" } else { "them" },
                    if deleted.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        settings
            .user_groups
            .retain(|id| snapshot.user_group(id).is_some());
        settings
            .device_groups
            .retain(|id| snapshot.device_group(id).is_some());
        settings
            .exclude_user_groups
            .retain(|id| snapshot.user_group(id).is_some());
        settings
            .exclude_device_groups
            .retain(|id| snapshot.device_group(id).is_some());
    }
    let request = SaveRequest {
        service,
        expected_version: None,
        settings,
        actor: caller.actor.clone(),
        action: "entitlement.rollback",
        check_default_rule: false,
        restored_from: Some(version.version),
    };
    let saved = state.store.save_settings(&tenant.id, request).await?;
    let changed = saved.config_version != tenant.config_version;
    if changed {
        state.snapshots.refresh(&tenant.id).await?;
    }
    Ok(Json(RollbackResult {
        config_version: saved.config_version,
        service: service.id.to_owned(),
        settings: SettingsJson::from(&saved.stored.settings),
        changed,
    }))
}

/// The groups `settings` select that no longer exist, as `user group "Name"`.
fn deleted_groups(snapshot: &TenantSnapshot, settings: &Settings) -> Vec<String> {
    let name = |deleted: Option<&str>, id: &str| deleted.unwrap_or(id).to_owned();
    let users = settings
        .user_groups
        .iter()
        .chain(&settings.exclude_user_groups)
        .filter(|id: &&GroupId| snapshot.user_group(id).is_none())
        .map(|id| {
            format!(
                "user group {:?}",
                name(snapshot.deleted_user_group(id), &id.0)
            )
        });
    let devices = settings
        .device_groups
        .iter()
        .chain(&settings.exclude_device_groups)
        .filter(|id: &&DeviceGroupId| snapshot.device_group(id).is_none())
        .map(|id| {
            format!(
                "device group {:?}",
                name(snapshot.deleted_device_group(id), &id.0)
            )
        });
    users.chain(devices).collect()
}

fn service_or_404(id: &str) -> ApiResult<&'static ServiceDef> {
    service(id).map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_service", e.to_string()))
}
