//! The agent protocol under `/agent/v1`: enrollment and policy sync with long-poll.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use entitle_core::DeviceReport;
use entitle_core::GroupNames;
use entitle_store::{
    Actor, ActorKind, Applied, AuthenticatedDevice, Device, DeviceMove, EnrollmentGrant,
    StoreError, secrets,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddress, JsonBody, body_bytes, json_from_slice, query_from_str};
use crate::state::AppState;
use crate::wire::{AppliedReport, PolicyJson, ReportJson};

/// The agent protocol's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/v1/enroll", post(enroll))
        .route("/agent/v1/sync", post(sync))
}

/// Body of an enrollment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// The tenant's enrollment key.
    // Checked from the raw document before the rest of the body is parsed.
    #[allow(dead_code)]
    pub enrollment_key: String,
    /// The user's login name in the directory.
    pub user_name: String,
    /// The device's first report.
    pub device: ReportJson,
}

/// A new device's credentials and first policy.
#[derive(Serialize, ToSchema)]
pub struct Enrolled {
    /// The device's id.
    pub device_id: String,
    /// Bearer token for `sync`; shown once.
    pub device_token: String,
    /// The device's policy.
    pub policy: PolicyJson,
}

/// Enrolls a device for a directory user.
#[utoipa::path(post, path = "/agent/v1/enroll", tag = "agent", request_body = EnrollBody,
    responses((status = 201, body = Enrolled), (status = 400), (status = 401), (status = 403), (status = 429)))]
pub(crate) async fn enroll(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    // The key is checked before anything else in the body, so that a caller
    // without one learns nothing about the report's rules.
    let key_hash = secrets::hash_secret(
        body.get("enrollment_key")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .trim(),
    );
    let grant = match state.store.enrollment_grant(&key_hash).await {
        Ok(grant) => grant,
        Err(StoreError::NotFound { .. }) => {
            return Err(state.failures.fail(
                address,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_enrollment_key",
                    "the enrollment key is not valid; ask your administrator for the tenant's current key",
                ),
            ));
        }
        Err(other) => return Err(other.into()),
    };
    // A scoped key that expired, ran out or was revoked is a wrong key too.
    if let Some(key) = &grant.key
        && let Some(reason) = key.unusable(OffsetDateTime::now_utc())
    {
        return Err(state
            .failures
            .fail(address, StoreError::KeyUnusable { reason }.into()));
    }
    state.enrollments.admit(&key_hash, address)?;
    let body: EnrollBody = serde_json::from_value(body).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid for this call: {e}"),
        )
    })?;
    match enroll_device(&state, &grant, body).await {
        Err(error) if error.status() == StatusCode::FORBIDDEN => {
            Err(state.failures.fail(address, error))
        }
        result => result,
    }
}

async fn enroll_device(
    state: &AppState,
    grant: &EnrollmentGrant,
    body: EnrollBody,
) -> ApiResult<Response> {
    let tenant = &grant.tenant;
    let report = body.device.parse()?;
    let not_provisioned = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "user_not_provisioned",
            format!(
                "user {:?} {why}; ask your administrator to provision them in the directory",
                body.user_name
            ),
        )
    };
    let user = match state
        .store
        .user_by_name(&tenant.id, body.user_name.trim())
        .await
    {
        Ok(user) if user.active => user,
        Ok(_) => return Err(not_provisioned("is deactivated in the directory")),
        Err(StoreError::NotFound { .. }) => return Err(not_provisioned("is not in the directory")),
        Err(other) => return Err(other.into()),
    };
    let token = secrets::new_secret("ent_device");
    let device = state
        .store
        .enroll_device(
            &tenant.id,
            &user,
            &secrets::hash_secret(&token),
            &report,
            OffsetDateTime::now_utc(),
            grant.key.as_ref(),
        )
        .await?;
    tracing::info!(tenant = %tenant.id, device_id = %device.id, user = %user.user_name, "device enrolled");
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    let policy = snapshot.policy(&device, state.config.poll_interval_s);
    let body = Enrolled {
        device_id: device.id,
        device_token: token,
        policy,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Sync parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Seconds to hold the request while the policy is unchanged (at most 60).
    pub wait: Option<u64>,
}

/// Reports the device's state and gets its policy, or 304 when unchanged.
///
/// Connections that carry only syncs are served by [`crate::lane`] instead, with
/// the same [`begin_sync`] and [`HeldSync::finish`]; this handler answers the
/// rest (a first request of another kind on the connection, HTTP/1.0, chunked bodies).
#[utoipa::path(post, path = "/agent/v1/sync", tag = "agent", request_body = ReportJson,
    params(SyncQuery, ("If-None-Match" = Option<String>, Header, description = "ETag of the policy the device holds")),
    responses((status = 200, body = PolicyJson, headers(("ETag" = String))), (status = 304), (status = 400), (status = 401),
        (status = 503, description = "The server is busy (`server_busy`); ask again after `Retry-After` seconds", headers(("Retry-After" = u64)))))]
pub(crate) async fn sync(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    request: Request,
) -> ApiResult<Response> {
    // The device is known before the query or the body is looked at.
    let token_hash = device_token_hash(
        request
            .headers()
            .get(AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    let device = state.shed.authenticate(&state, token_hash, address).await?;
    let query: SyncQuery = query_from_str(request.uri().query().unwrap_or_default())?;
    let held_etag = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned());
    let report: ReportJson = json_from_slice(&body_bytes(request, &state).await?)?;
    let request = SyncRequest {
        token_hash: device.token_hash,
        held_etag,
        wait_s: query.wait.unwrap_or(0),
        report,
    };
    let admitted = state.shed.admit(&device.device.device.tenant_id).await?;
    let step = begin_sync(&state, device.device, request).await;
    drop(admitted);
    let answer = match step? {
        SyncStep::Answer(answer) => answer,
        SyncStep::Hold(held) => held.finish(&state).await?,
    };
    Ok(answer.into_response())
}

/// A sync as read off the wire.
pub(crate) struct SyncRequest {
    /// SHA-256 of the device token.
    pub token_hash: String,
    /// The `If-None-Match` header, if any.
    pub held_etag: Option<String>,
    /// The `?wait=` asked for (capped by the server's maximum).
    pub wait_s: u64,
    /// The device's report.
    pub report: ReportJson,
}

/// What a sync answers.
pub(crate) enum SyncAnswer {
    /// The device's policy (200).
    Policy(PolicyJson),
    /// The policy the device holds is current (304).
    NotModified {
        /// Its ETag.
        etag: String,
    },
}

impl IntoResponse for SyncAnswer {
    fn into_response(self) -> Response {
        match self {
            SyncAnswer::Policy(policy) => {
                let etag = HeaderValue::from_str(&policy.etag).ok();
                let mut response = Json(policy).into_response();
                if let Some(etag) = etag {
                    response.headers_mut().insert(ETAG, etag);
                }
                response
            }
            SyncAnswer::NotModified { etag } => {
                let mut response = StatusCode::NOT_MODIFIED.into_response();
                if let Ok(value) = HeaderValue::from_str(&etag) {
                    response.headers_mut().insert(ETAG, value);
                }
                response
            }
        }
    }
}

/// Where a sync stands after its first look.
pub(crate) enum SyncStep {
    /// Answer now.
    Answer(SyncAnswer),
    /// Nothing changed and the device asked to wait.
    Hold(HeldSync),
}

/// A sync waiting for a change. It keeps only what it needs to answer later,
/// because thousands wait at once.
pub(crate) struct HeldSync {
    device_id: String,
    /// The snapshot generation the held policy was computed from.
    generation: u64,
    token_hash: String,
    held_etag: Option<String>,
    report: DeviceReport,
    changes: watch::Receiver<u64>,
    deadline: Instant,
}

/// A device that presented a valid token, before its request is read further.
pub(crate) struct SyncingDevice {
    /// SHA-256 of its token.
    pub token_hash: String,
    /// The device and its tenant's data version.
    pub device: AuthenticatedDevice,
}

/// Authenticates a sync's device token; a missing or wrong one counts as a
/// failure of the client's address.
pub(crate) async fn authenticate_sync(
    state: &AppState,
    token_hash: ApiResult<String>,
    address: Option<std::net::IpAddr>,
) -> ApiResult<SyncingDevice> {
    let checked = match token_hash {
        Ok(token_hash) => authenticate(state, &token_hash)
            .await
            .map(|device| SyncingDevice { token_hash, device }),
        Err(error) => Err(error),
    };
    checked.map_err(|error| {
        if error.status() == StatusCode::UNAUTHORIZED {
            state.failures.fail(address, error)
        } else {
            error
        }
    })
}

/// Records the authenticated device's report and answers at once unless the
/// policy it holds is current and it asked to wait.
pub(crate) async fn begin_sync(
    state: &AppState,
    authenticated: AuthenticatedDevice,
    request: SyncRequest,
) -> ApiResult<SyncStep> {
    let mut device = authenticated.device;
    let data_version = authenticated.tenant_data_version;
    let applied = match &request.report.applied {
        Some(applied) => Some(applied.parse()?),
        None => None,
    };
    let report = request.report.parse()?;
    let now = OffsetDateTime::now_utc();
    let applied = match applied {
        Some(applied) => changed_applied(state, &device, data_version, applied, now).await?,
        None => None,
    };
    // Writes only what changed, and the sync time at most every minute, so that a
    // fleet of unchanged devices does not turn every poll into a disk write.
    let report_changed = report != device.report;
    if report_changed || applied.is_some() {
        let moved = if report_changed {
            device_move(state, &device, &report, data_version).await?
        } else {
            None
        };
        state
            .store
            .record_sync(
                &device.id,
                report_changed.then_some(&report),
                applied.as_ref(),
                now,
                moved.as_ref(),
            )
            .await?;
        if report_changed {
            state.metrics.sync_write("report");
        }
        if applied.is_some() {
            state.metrics.sync_write("applied");
        }
    } else if now - device.last_sync_at > time::Duration::minutes(1) {
        state
            .store
            .record_sync(&device.id, None, None, now, None)
            .await?;
        state.metrics.sync_write("last_seen");
    }
    device.report = report;

    let mut changes = state.snapshots.subscribe(&device.tenant_id).await?;
    let generation = *changes.borrow_and_update();
    // This sync answers an earlier "sync now"; one asked from here on wakes the hold.
    state.snapshots.take_nudge(&device.id);
    let policy = current_policy(state, &device, data_version).await?;
    if !same_etag(request.held_etag.as_deref(), &policy.etag) {
        state.metrics.sync("policy");
        return Ok(SyncStep::Answer(SyncAnswer::Policy(policy)));
    }
    let wait = request.wait_s.min(state.config.max_wait_s);
    // Past the node's cap on held long-polls, answered at once rather than refused.
    if wait == 0 || !state.shed.may_hold() {
        state.metrics.sync("not_modified");
        return Ok(SyncStep::Answer(SyncAnswer::NotModified {
            etag: policy.etag,
        }));
    }
    Ok(SyncStep::Hold(HeldSync {
        device_id: device.id,
        generation,
        token_hash: request.token_hash,
        held_etag: request.held_etag,
        report: device.report,
        changes,
        deadline: Instant::now() + Duration::from_secs(wait),
    }))
}

impl HeldSync {
    /// Waits for a change that alters the device's policy, the deadline or the
    /// server's shutdown, and answers.
    pub(crate) async fn finish(mut self, state: &AppState) -> ApiResult<SyncAnswer> {
        let _held = HeldPoll::new(state);
        let mut shutdown = state.shutdown.clone();
        loop {
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // An administrator asked this device to sync now: answer
                    // (below), so that it syncs again with a fresh report.
                    if state.snapshots.take_nudge(&self.device_id) {
                        break;
                    }
                    // Another device's "sync now" leaves the snapshot as it was.
                    let generation = *self.changes.borrow_and_update();
                    if generation == self.generation {
                        continue;
                    }
                    self.generation = generation;
                    // Boxed so that the thousands of waiting futures stay small.
                    let policy = Box::pin(reauthenticated_policy(state, &self.token_hash, &self.report)).await?;
                    if !same_etag(self.held_etag.as_deref(), &policy.etag) {
                        state.metrics.sync("policy");
                        state.metrics.policy_changes_pushed.inc();
                        return Ok(SyncAnswer::Policy(policy));
                    }
                }
                () = tokio::time::sleep_until(self.deadline) => break,
                () = stopping(&mut shutdown) => break,
            }
        }
        // A last look, so that a change whose wake-up raced the deadline is not lost.
        let policy = Box::pin(reauthenticated_policy(
            state,
            &self.token_hash,
            &self.report,
        ))
        .await?;
        if !same_etag(self.held_etag.as_deref(), &policy.etag) {
            state.metrics.sync("policy");
            return Ok(SyncAnswer::Policy(policy));
        }
        state.metrics.sync("not_modified");
        Ok(SyncAnswer::NotModified { etag: policy.etag })
    }
}

/// Completes when the server starts shutting down.
pub(crate) async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard returned by `wait_for` is not `Send`; drop it before returning.
    let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
}

/// Keeps the held-long-poll gauge true even when the request is dropped.
struct HeldPoll<'a>(&'a AppState);

impl<'a> HeldPoll<'a> {
    fn new(state: &'a AppState) -> Self {
        state.metrics.held_long_polls.inc();
        Self(state)
    }
}

impl Drop for HeldPoll<'_> {
    fn drop(&mut self) {
        self.0.metrics.held_long_polls.dec();
    }
}

/// The hash of the bearer token in an `Authorization` header's value.
pub(crate) fn device_token_hash(authorization: Option<&[u8]>) -> ApiResult<String> {
    let token = authorization
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                "send the device token as 'Authorization: Bearer <device_token>'",
            )
        })?;
    Ok(secrets::hash_secret(token))
}

async fn authenticate(state: &AppState, token_hash: &str) -> ApiResult<AuthenticatedDevice> {
    state
        .store
        .device_by_token(token_hash)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_device_token",
                "the device token is not valid (the device may have been removed); enroll again",
            ),
            other => other.into(),
        })
}

/// The applied state to write for a sync's `applied` report: `None` when it
/// is what the device last reported (nothing to write), or when it names a
/// config version the tenant has not reached (a tenant restored from a
/// backup), which is ignored rather than refused so that the device still
/// gets its policy. `applied_at` stays the time the version was first heard of.
async fn changed_applied(
    state: &AppState,
    device: &Device,
    data_version: i64,
    reported: AppliedReport,
    now: OffsetDateTime,
) -> ApiResult<Option<Applied>> {
    let stored = device.applied.as_ref();
    if stored.is_some_and(|s| {
        s.config_version == reported.config_version && s.services == reported.services
    }) {
        return Ok(None);
    }
    let snapshot = state
        .snapshots
        .at_least(&device.tenant_id, data_version)
        .await?;
    if reported.config_version > snapshot.tenant.config_version {
        tracing::debug!(tenant = %device.tenant_id, device_id = %device.id,
            config_version = reported.config_version, "applied version ahead of the tenant's; ignored");
        return Ok(None);
    }
    let at = match stored {
        Some(s) if s.config_version == reported.config_version => s.at,
        _ => now,
    };
    Ok(Some(Applied {
        config_version: reported.config_version,
        at,
        saved_at: None,
        services: reported.services,
    }))
}

/// The audit record of a new report that moves the device between device
/// groups, which changes what it may get; `None` when its groups stay.
async fn device_move(
    state: &AppState,
    device: &Device,
    report: &DeviceReport,
    data_version: i64,
) -> ApiResult<Option<DeviceMove>> {
    let snapshot = state
        .snapshots
        .at_least(&device.tenant_id, data_version)
        .await?;
    let before = snapshot.device_groups_of(device);
    let after = snapshot.device_groups_of(&Device {
        report: report.clone(),
        ..device.clone()
    });
    if before == after {
        return Ok(None);
    }
    let names = |groups: &std::collections::BTreeSet<entitle_core::DeviceGroupId>| {
        groups
            .iter()
            .map(|id| {
                GroupNames::device_group(&*snapshot, id)
                    .unwrap_or(id.as_str())
                    .to_owned()
            })
            .collect()
    };
    Ok(Some(DeviceMove {
        tenant_id: device.tenant_id.clone(),
        actor: Actor::new(
            ActorKind::Device,
            device.id.as_str(),
            report.hostname.as_str(),
        ),
        before: names(&before),
        after: names(&after),
    }))
}

/// The policy of a held device after a wake-up, for the report it sent. The
/// device is read again because it may have been removed meanwhile, which
/// revokes its token.
async fn reauthenticated_policy(
    state: &AppState,
    token_hash: &str,
    report: &DeviceReport,
) -> ApiResult<PolicyJson> {
    let fresh = authenticate(state, token_hash).await?;
    let device = Device {
        report: report.clone(),
        ..fresh.device
    };
    current_policy(state, &device, fresh.tenant_data_version).await
}

async fn current_policy(
    state: &AppState,
    device: &Device,
    data_version: i64,
) -> ApiResult<PolicyJson> {
    let snapshot = state
        .snapshots
        .at_least(&device.tenant_id, data_version)
        .await?;
    Ok(snapshot.policy(device, state.config.poll_interval_s))
}

fn same_etag(held: Option<&str>, current: &str) -> bool {
    held.is_some_and(|held| {
        held.split(',')
            .any(|tag| tag.trim().trim_start_matches("W/") == current)
    })
}
