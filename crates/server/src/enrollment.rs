//! Who may enroll a device and what is believed about it: scoped enrollment
//! keys, attested ownership and the tenant's device approval mode (SPEC §11).
//!
//! A device's own report is not proof: a user could report `corporate` and
//! receive what corporate laptops get. Ownership that decides entitlement is
//! vouched for by the key the device enrolled with or by an administrator, and
//! in approval mode a new device gets no group-based service until approved.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use entitle_core::Ownership;
use entitle_store::{DeviceChange, EnrollmentKey, NewEnrollmentKey, secrets};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use crate::admin::devices::device_detail_json;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::state::AppState;
use crate::wire::{DeviceJson, rfc3339};

/// The most devices one bulk approval names.
const MAX_BULK_APPROVE: usize = 1_000;
/// The longest an enrollment key's name may be.
const MAX_KEY_NAME: usize = 200;

/// Routes for enrollment keys, device trust and the approval mode.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/enrollment-keys",
            post(create_key).get(list_keys),
        )
        .route(
            "/api/v1/tenants/{tenant}/enrollment-keys/{id}",
            delete(revoke_key),
        )
        .route(
            "/api/v1/tenants/{tenant}/enrollment-key/rotate",
            post(rotate_tenant_key),
        )
        .route(
            "/api/v1/tenants/{tenant}/devices/approve",
            post(approve_devices),
        )
        .route(
            "/api/v1/tenants/{tenant}/device-approval",
            get(get_approval).put(set_approval),
        )
}

/// Body of `POST …/enrollment-keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What administrators call it, e.g. "Corporate laptops, autopilot".
    pub name: String,
    /// `corporate` or `personal`: every device enrolled with the key is
    /// treated as such, whatever it reports. Omitted: the key attests nothing.
    pub ownership: Option<String>,
    /// Refused after this time (RFC 3339).
    pub expires_at: Option<String>,
    /// Refused after this many days (1–3650); an alternative to `expires_at`.
    pub expires_in_days: Option<u32>,
    /// Refused after this many enrollments.
    pub max_uses: Option<u32>,
}

/// A scoped enrollment key, without its secret.
#[derive(Serialize, ToSchema)]
pub struct KeyJson {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Ownership it attests, if any.
    pub ownership: Option<String>,
    /// When it stops working.
    pub expires_at: Option<String>,
    /// How many enrollments it allows.
    pub max_uses: Option<i64>,
    /// Enrollments so far.
    pub uses: i64,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// Whether it can enroll a device now.
    pub usable: bool,
}

impl From<&EnrollmentKey> for KeyJson {
    fn from(key: &EnrollmentKey) -> Self {
        KeyJson {
            id: key.id.clone(),
            name: key.name.clone(),
            ownership: key.ownership.map(|o| o.as_str().to_owned()),
            expires_at: key.expires_at.map(rfc3339),
            max_uses: key.max_uses,
            uses: key.uses,
            revoked_at: key.revoked_at.map(rfc3339),
            created_at: rfc3339(key.created_at),
            usable: key.unusable(OffsetDateTime::now_utc()).is_none(),
        }
    }
}

/// A new scoped key with its secret, shown once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key agents present as `enrollment_key`; shown once.
    pub enrollment_key: String,
    /// The key's settings.
    #[serde(flatten)]
    pub key: KeyJson,
}

/// Every scoped key of a tenant.
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Newest first.
    pub items: Vec<KeyJson>,
}

/// Creates a scoped enrollment key.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/enrollment-keys", tag = "enrollment", request_body = CreateKey,
    params(("tenant" = String, Path)),
    responses((status = 201, body = CreatedKey), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<CreateKey>,
) -> ApiResult<Response> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let name = crate::wire::single_line("a key name", &body.name, MAX_KEY_NAME)
        .map_err(|message| ApiError::unprocessable("invalid_name", message))?;
    let ownership = body.ownership.as_deref().map(parse_ownership).transpose()?;
    let now = OffsetDateTime::now_utc();
    let expires_at = match (&body.expires_at, body.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_expiry",
                "give expires_at or expires_in_days, not both",
            ));
        }
        (Some(text), None) => {
            let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
                ApiError::bad_request("invalid_time", format!("expires_at must be RFC 3339: {e}"))
            })?;
            if at <= now {
                return Err(ApiError::unprocessable(
                    "invalid_expiry",
                    "expires_at is in the past",
                ));
            }
            Some(at)
        }
        (None, Some(days)) if (1..=3650).contains(&days) => {
            Some(now + time::Duration::days(i64::from(days)))
        }
        (None, Some(_)) => {
            return Err(ApiError::unprocessable(
                "invalid_expiry",
                "expires_in_days is 1 to 3650",
            ));
        }
        (None, None) => None,
    };
    if body.max_uses == Some(0) {
        return Err(ApiError::unprocessable(
            "invalid_max_uses",
            "max_uses is at least 1",
        ));
    }
    let secret = secrets::new_secret("ent_enroll");
    let key = state
        .store
        .create_enrollment_key(
            &tenant.id,
            NewEnrollmentKey {
                name: name.to_owned(),
                key_hash: secrets::hash_secret(&secret),
                ownership,
                expires_at,
                max_uses: body.max_uses.map(i64::from),
            },
            &caller.actor,
        )
        .await?;
    let body = CreatedKey {
        enrollment_key: secret,
        key: KeyJson::from(&key),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Lists a tenant's scoped enrollment keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/enrollment-keys", tag = "enrollment",
    params(("tenant" = String, Path)),
    responses((status = 200, body = KeyList), (status = 401), (status = 404)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<KeyList>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let keys = state.store.enrollment_keys(&tenant.id).await?;
    Ok(Json(KeyList {
        items: keys.iter().map(KeyJson::from).collect(),
    }))
}

/// Revokes a scoped enrollment key at once; devices already enrolled stay.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/enrollment-keys/{id}", tag = "enrollment",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = KeyJson), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<KeyJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let key = state
        .store
        .revoke_enrollment_key(&tenant.id, &id, &caller.actor)
        .await?;
    Ok(Json(KeyJson::from(&key)))
}

/// The tenant's new enrollment key, shown once.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// The key agents present as `enrollment_key` from now on.
    pub enrollment_key: String,
}

/// Replaces the tenant's own enrollment key (the one shown when the tenant was
/// made): the old key stops enrolling at once, devices already enrolled stay.
/// It is the key for a leaked install script; a key nobody is given after a
/// rotation leaves enrollment to scoped keys.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/enrollment-key/rotate", tag = "enrollment",
    params(("tenant" = String, Path)),
    responses((status = 200, body = RotatedKey), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn rotate_tenant_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<RotatedKey>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let secret = secrets::new_secret("ent_enroll");
    state
        .store
        .rotate_enrollment_key(&tenant.id, &secrets::hash_secret(&secret), &caller.actor)
        .await?;
    tracing::info!(tenant = %tenant.id, "tenant enrollment key rotated");
    Ok(Json(RotatedKey {
        enrollment_key: secret,
    }))
}

/// Body of `PATCH …/devices/{id}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeDevice {
    /// `corporate` or `personal` attests the ownership; `reported` goes back
    /// to what the device reports. Omitted: unchanged.
    pub ownership: Option<String>,
    /// `true` approves a device waiting for approval.
    pub approved: Option<bool>,
}

/// Attests a device's ownership or approves it.
#[utoipa::path(patch, path = "/api/v1/tenants/{tenant}/devices/{id}", tag = "devices", request_body = ChangeDevice,
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DeviceJson), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn change_device(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ChangeDevice>,
) -> ApiResult<Json<DeviceJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let ownership = match body.ownership.as_deref() {
        None => None,
        Some("reported") => Some(None),
        Some(text) => Some(Some(parse_ownership(text)?)),
    };
    let approve = match body.approved {
        Some(false) => {
            return Err(ApiError::unprocessable(
                "invalid_approval",
                "an approval cannot be withdrawn; remove the device instead",
            ));
        }
        other => other,
    };
    if ownership.is_none() && approve.is_none() {
        return Err(ApiError::unprocessable(
            "nothing_to_change",
            "give ownership (corporate, personal or reported) or approved: true",
        ));
    }
    let device = state
        .store
        .change_device(
            &tenant.id,
            &id,
            &DeviceChange { ownership, approve },
            &caller.actor,
        )
        .await?;
    // Answers the device's held long-poll with its new decisions.
    state
        .snapshots
        .refresh_for_device(&tenant.id, &device)
        .await?;
    let snapshot = state.snapshots.at_least(&tenant.id, 0).await?;
    Ok(Json(device_detail_json(&snapshot, &device)))
}

/// Body of `POST …/devices/approve`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveDevices {
    /// Devices to approve (at most 1,000).
    pub ids: Vec<String>,
}

/// What a bulk approval did.
#[derive(Serialize, ToSchema)]
pub struct Approved {
    /// Devices approved.
    pub approved: Vec<String>,
    /// Ids that name no device of the tenant.
    pub not_found: Vec<String>,
}

/// Approves many waiting devices at once.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/devices/approve", tag = "devices", request_body = ApproveDevices,
    params(("tenant" = String, Path)),
    responses((status = 200, body = Approved), (status = 400), (status = 401), (status = 403), (status = 404), (status = 413)))]
pub(crate) async fn approve_devices(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<ApproveDevices>,
) -> ApiResult<Json<Approved>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    if body.ids.len() > MAX_BULK_APPROVE {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_devices",
            format!("approve at most {MAX_BULK_APPROVE} devices per request"),
        ));
    }
    let change = DeviceChange {
        ownership: None,
        approve: Some(true),
    };
    let mut answer = Approved {
        approved: Vec::new(),
        not_found: Vec::new(),
    };
    let mut users = Vec::new();
    for id in body.ids {
        match state
            .store
            .change_device(&tenant.id, &id, &change, &caller.actor)
            .await
        {
            Ok(device) => {
                users.push(device.user_id);
                answer.approved.push(id);
            }
            Err(entitle_store::StoreError::NotFound { .. }) => answer.not_found.push(id),
            Err(other) => return Err(other.into()),
        }
    }
    state.snapshots.refresh(&tenant.id).await?;
    for (id, user_id) in answer.approved.iter().zip(&users) {
        state.snapshots.nudge(&tenant.id, id, Some(user_id));
    }
    Ok(Json(answer))
}

/// The tenant's device approval mode.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalMode {
    /// New devices wait for an administrator's approval before any
    /// group-based service.
    pub device_approval: bool,
}

/// Reads the device approval mode.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/device-approval", tag = "enrollment",
    params(("tenant" = String, Path)), responses((status = 200, body = ApprovalMode), (status = 401), (status = 404)))]
pub(crate) async fn get_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> ApiResult<Json<ApprovalMode>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    Ok(Json(ApprovalMode {
        device_approval: tenant.device_approval,
    }))
}

/// Turns the device approval mode on or off; devices already enrolled keep
/// their state.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant}/device-approval", tag = "enrollment", request_body = ApprovalMode,
    params(("tenant" = String, Path)),
    responses((status = 200, body = ApprovalMode), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub(crate) async fn set_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<ApprovalMode>,
) -> ApiResult<Json<ApprovalMode>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let tenant = state
        .store
        .set_device_approval(&tenant.id, body.device_approval, &caller.actor)
        .await?;
    Ok(Json(ApprovalMode {
        device_approval: tenant.device_approval,
    }))
}

fn parse_ownership(text: &str) -> ApiResult<Ownership> {
    Ownership::parse(text).map_err(|_| {
        ApiError::unprocessable(
            "invalid_ownership",
            format!("ownership is corporate or personal, not {text:?}"),
        )
    })
}
