//! Scheduled entitlement changes: a save with `"apply_at"` is checked now and
//! stored as pending (202); the list shows pending changes and recent
//! outcomes; a pending change can be cancelled. `scheduler.rs` applies them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use entitle_core::ServiceDef;
use entitle_store::{MAX_SCHEDULE_AHEAD, NewScheduledChange, ScheduledChange, StoreError, Tenant};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::wire::{PrincipalJson, SettingsJson, rfc3339};

/// The scheduled-change routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/scheduled-changes",
            get(list_changes),
        )
        .route(
            "/api/v1/tenants/{tenant}/scheduled-changes/{id}",
            delete(cancel_change),
        )
}

/// The body of a save: SETTINGS, and optionally `apply_at` to schedule it.
/// Read as an object whose `apply_at` is taken out before the rest is read
/// as SETTINGS (which refuses unknown fields).
pub struct SaveBody {
    /// The settings.
    pub settings: SettingsJson,
    /// When to apply them, as sent (RFC 3339); `None`: now.
    pub apply_at: Option<String>,
}

impl<'de> Deserialize<'de> for SaveBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let apply_at = match object.remove("apply_at") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(text),
            Some(_) => {
                return Err(D::Error::custom(
                    "apply_at must be a time as RFC 3339 text, e.g. 2026-12-01T06:00:00Z",
                ));
            }
        };
        let settings = SettingsJson::deserialize(serde_json::Value::Object(object))
            .map_err(D::Error::custom)?;
        Ok(SaveBody { settings, apply_at })
    }
}

/// The body of a save as the OpenAPI document shows it: SETTINGS, and
/// `apply_at` to schedule it (read by [`SaveBody`]).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SaveBodyJson {
    /// SETTINGS.
    #[serde(flatten)]
    pub settings: SettingsJson,
    /// Apply the save at this time (RFC 3339, in the future, at most 366
    /// days ahead) instead of now: answered 202 with the pending change.
    pub apply_at: Option<String>,
}

/// One scheduled change.
#[derive(Serialize, ToSchema)]
pub struct ScheduledChangeJson {
    /// Its id.
    pub id: String,
    /// The service whose settings it saves.
    pub service: String,
    /// SETTINGS it saves.
    pub settings: SettingsJson,
    /// The settings version it was made on (`If-Match` of the save, or the
    /// version stored when it was scheduled): a save in between is a conflict.
    pub expected_version: i64,
    /// When it is applied, RFC 3339.
    pub apply_at: String,
    /// `pending`, `applied`, `conflict`, `failed` or `cancelled`.
    pub status: &'static str,
    /// When it was scheduled.
    pub created_at: String,
    /// Who scheduled it (the actor of the save).
    pub created_by: PrincipalJson,
    /// When it was applied, refused or cancelled.
    pub outcome_at: Option<String>,
    /// Why it was refused, or how late it was applied.
    pub message: Option<String>,
    /// The config version it wrote.
    pub config_version: Option<i64>,
    /// The node that applied it, or who cancelled it.
    pub outcome_by: Option<String>,
}

impl From<&ScheduledChange> for ScheduledChangeJson {
    fn from(change: &ScheduledChange) -> Self {
        ScheduledChangeJson {
            id: change.id.clone(),
            service: change.service.clone(),
            settings: SettingsJson::from(&change.settings),
            expected_version: change.expected_version,
            apply_at: rfc3339(change.apply_at),
            status: change.status.as_str(),
            created_at: rfc3339(change.created_at),
            created_by: PrincipalJson::from(&change.created_by),
            outcome_at: change.outcome_at.map(rfc3339),
            message: change.outcome_message.clone(),
            config_version: change.config_version,
            outcome_by: change.outcome_by.clone(),
        }
    }
}

/// Scheduled changes.
#[derive(Serialize, ToSchema)]
pub struct ScheduledChangesJson {
    /// Pending changes by time, then recent outcomes, newest first.
    pub items: Vec<ScheduledChangeJson>,
}

/// Parses `apply_at`: RFC 3339, in the future, at most a year ahead; 422
/// naming the field otherwise.
pub(crate) fn parse_apply_at(text: &str, now: OffsetDateTime) -> ApiResult<OffsetDateTime> {
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        ApiError::unprocessable(
            "invalid_apply_at",
            "apply_at must be a time as RFC 3339 text, e.g. 2026-12-01T06:00:00Z",
        )
        .with_field("apply_at")
    })?;
    if at <= now {
        return Err(ApiError::unprocessable(
            "apply_at_in_past",
            format!(
                "apply_at {text} is not in the future; save without apply_at to apply the change now"
            ),
        )
        .with_field("apply_at"));
    }
    if at - now > MAX_SCHEDULE_AHEAD {
        return Err(ApiError::unprocessable(
            "apply_at_too_far",
            "apply_at may be at most 366 days ahead",
        )
        .with_field("apply_at"));
    }
    Ok(at)
}

/// Schedules a save: checked now as a save would be (412 when `If-Match` is
/// stale, 422 when it breaks a rule), answered 202 with the pending change.
pub(crate) async fn schedule(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    service: &'static ServiceDef,
    expected_version: Option<i64>,
    settings: SettingsJson,
    apply_at: &str,
) -> Result<Response, StoreOrApi> {
    let apply_at = parse_apply_at(apply_at, OffsetDateTime::now_utc())?;
    let change = state
        .store
        .schedule_change(
            &tenant.id,
            NewScheduledChange {
                service,
                settings: settings.into(),
                expected_version,
                apply_at,
                actor: caller.actor.clone(),
            },
        )
        .await?;
    tracing::info!(tenant = %tenant.id, service = service.id, id = %change.id, apply_at = %rfc3339(change.apply_at), actor = %caller.name, "entitlement change scheduled");
    Ok((
        StatusCode::ACCEPTED,
        Json(ScheduledChangeJson::from(&change)),
    )
        .into_response())
}

/// Why scheduling failed: a store error (which the save handler answers as a
/// save's, the 412 with its body included), or an API error.
pub(crate) enum StoreOrApi {
    /// From the store.
    Store(StoreError),
    /// Already an answer.
    Api(ApiError),
}

impl From<StoreError> for StoreOrApi {
    fn from(error: StoreError) -> Self {
        StoreOrApi::Store(error)
    }
}

impl From<ApiError> for StoreOrApi {
    fn from(error: ApiError) -> Self {
        StoreOrApi::Api(error)
    }
}

/// List parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// Only this service.
    pub service: Option<String>,
}

/// Lists pending changes (by time) and recent outcomes (newest first).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/scheduled-changes", tag = "entitlements",
    params(("tenant" = String, Path), ChangesQuery), responses((status = 200, body = ScheduledChangesJson), (status = 404)))]
pub(crate) async fn list_changes(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ChangesQuery>,
) -> ApiResult<Json<ScheduledChangesJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    if let Some(id) = &query.service {
        entitle_core::service(id)
            .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "unknown_service", e.to_string()))?;
    }
    let changes = state
        .store
        .scheduled_changes(&tenant.id, query.service.as_deref())
        .await?;
    Ok(Json(ScheduledChangesJson {
        items: changes.iter().map(ScheduledChangeJson::from).collect(),
    }))
}

/// Cancels a pending change; 409 once it was applied, refused or cancelled.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/scheduled-changes/{id}", tag = "entitlements",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = ScheduledChangeJson), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn cancel_change(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<ScheduledChangeJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let change = state
        .store
        .cancel_scheduled_change(&tenant.id, &id, &caller.actor)
        .await?;
    Ok(Json(ScheduledChangeJson::from(&change)))
}
