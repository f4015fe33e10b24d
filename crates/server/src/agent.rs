//! The agent protocol under `/agent/v1`: enrollment and policy sync with long-poll.

use std::time::Duration;

use axum::extract::{Request, State};
use std::sync::Arc;

use axum::http::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use entitle_core::DeviceReport;
use entitle_core::GroupNames;
use entitle_store::{
    Actor, ActorKind, Applied, AppliedSync, Device, DeviceMove, EnrollmentGrant, StoreError,
    secrets,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientAddress, JsonBody, body_bytes, json_from_slice, query_from_str};
use crate::shed::Admitted;
use crate::snapshot::{HeldWatch, PreparedPolicy, TenantSnapshot};
use crate::state::AppState;
use crate::sync_cache::{KnownDevice, Remembered};
use crate::wire::{AppliedReport, PolicyJson, ReportJson};

/// The agent protocol's routes. Their every answer closes its connection.
///
/// The agent lane ([`crate::lane`]) serves a connection only while it has
/// carried nothing but syncs; a connection that reached these handlers (an
/// enrollment, or a sync the lane declined) stays with hyper for good, and
/// would carry the device's later syncs, held long-polls included, at
/// hyper's cost per connection (its read and write buffers, 16–24 KiB) for
/// as long as the agent keeps it. An agent's HTTP client pools connections,
/// so its first sync would take the one it enrolled on, and every
/// connection that once carried another request drifts to hyper: a soak's
/// heap grew as they did. Closed, the agent's next sync opens a connection
/// that the lane serves. (An answer refused before these routes, by the edge
/// layer, keeps the connection open.)
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/v1/enroll", post(enroll))
        .route("/agent/v1/sync", post(sync))
        .layer(axum::middleware::map_response(close_connection))
}

async fn close_connection(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
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
    let body = body_bytes(request, &state).await?;
    let request = SyncRequest {
        held_etag,
        wait_s: query.wait.unwrap_or(0),
        body: body.to_vec(),
    };
    let admitted = admit(&state, &device).await?;
    let step = begin_sync(&state, device, request, admitted).await;
    let answer = match step? {
        SyncStep::Answer(answer) => answer,
        SyncStep::Hold(held) => held.finish(&state).await?,
    };
    Ok(answer.into_response())
}

pub(crate) struct SyncRequest {
    pub held_etag: Option<String>,
    pub wait_s: u64,
    /// The report as sent: parsed only when it differs from the device's
    /// last one, or when the tenant changed since.
    pub body: Vec<u8>,
}

pub(crate) enum SyncAnswer {
    Policy(PreparedPolicy),
    NotModified { etag: Arc<str> },
}

impl IntoResponse for SyncAnswer {
    fn into_response(self) -> Response {
        match self {
            SyncAnswer::Policy(policy) => {
                let mut response = (
                    [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    policy.json,
                )
                    .into_response();
                if let Ok(etag) = HeaderValue::from_str(&policy.etag) {
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

pub(crate) enum SyncStep {
    Answer(SyncAnswer),
    Hold(HeldSync),
}

/// A sync waiting for a change. It holds the device as the sync path knows it
/// (shared with the cache), so that a wake-up decides from the snapshot
/// without reading the store.
pub(crate) struct HeldSync {
    known: Arc<KnownDevice>,
    /// The watch's generation when the hold last decided.
    generation: u64,
    /// The ETag of the policy the device holds (the current one when the
    /// hold began).
    etag: Arc<str>,
    watch: HeldWatch,
    deadline: Instant,
}

/// An authenticated device, with the tenant's data version read after its
/// sync arrived: the snapshot that answers it must be at least that new.
pub(crate) struct SyncingDevice {
    pub known: Arc<KnownDevice>,
    pub data_version: i64,
}

pub(crate) async fn authenticate_sync(
    state: &AppState,
    token_hash: ApiResult<String>,
    address: Option<std::net::IpAddr>,
) -> ApiResult<SyncingDevice> {
    let checked = match token_hash {
        Ok(token_hash) => authenticate(state, token_hash).await,
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

/// A slot of the device's tenant and of the node (503 when they stay busy),
/// taken only once the tenant has a snapshot as new as the device: waiting
/// for a rebuild is not work, and syncs that held slots through a rebuild
/// would fill the queue behind them. `begin_sync` reads the snapshot again
/// after it registers its watch, so that no change made in between is missed.
pub(crate) async fn admit<'a>(
    state: &'a AppState,
    device: &SyncingDevice,
) -> ApiResult<Admitted<'a>> {
    let tenant_id = &device.known.device.tenant_id;
    state
        .snapshots
        .at_least(tenant_id, device.data_version)
        .await?;
    state.shed.admit(tenant_id).await
}

/// The first look at a sync, doing its work under the slot `admitted` holds
/// (released before any wait for a commit, which is no work of this node's).
pub(crate) async fn begin_sync(
    state: &AppState,
    SyncingDevice {
        known,
        data_version,
    }: SyncingDevice,
    request: SyncRequest,
    admitted: Admitted<'_>,
) -> ApiResult<SyncStep> {
    let tenant_id = known.device.tenant_id.as_str();
    // Registered before the snapshot is read, so that a change from here on
    // wakes the hold.
    let watch = state
        .snapshots
        .watch(tenant_id, &known.device.user_id)
        .await?;
    let generation = watch.generation();
    // This sync answers an earlier "sync now"; one asked from here on wakes the hold.
    state.snapshots.take_nudge(&known.device.id);
    let snapshot = state.snapshots.at_least(tenant_id, data_version).await?;
    let now = OffsetDateTime::now_utc();
    let seen_lately = !last_seen_due(&known.device, now);
    // The same body as the device's last sync, against the same snapshot, and
    // nothing to write: what was prepared then is the answer.
    let held = request.held_etag.as_deref();
    let remembered = known
        .memo(snapshot.build_id, &request.body)
        .filter(|r| seen_lately && (r.json.is_some() || same_etag(held, &r.etag)));
    let (known, etag) = match remembered {
        Some(Remembered { etag, json }) => match json {
            Some(json) if !same_etag(held, &etag) => {
                state.metrics.sync("policy");
                let policy = PreparedPolicy { etag, json };
                return Ok(SyncStep::Answer(SyncAnswer::Policy(policy)));
            }
            _ => (known, etag),
        },
        None => {
            let (known, policy) = Box::pin(full_sync(
                state,
                known,
                &request.body,
                &snapshot,
                (now, held),
                admitted,
            ))
            .await?;
            if !same_etag(held, &policy.etag) {
                state.metrics.sync("policy");
                return Ok(SyncStep::Answer(SyncAnswer::Policy(policy)));
            }
            (known, policy.etag)
        }
    };
    let wait = request.wait_s.min(state.config.max_wait_s);
    // Past the node's cap on held long-polls, answered at once rather than refused.
    if wait == 0 || !state.shed.may_hold() {
        state.metrics.sync("not_modified");
        return Ok(SyncStep::Answer(SyncAnswer::NotModified { etag }));
    }
    Ok(SyncStep::Hold(HeldSync {
        known,
        generation,
        etag,
        watch,
        deadline: Instant::now() + Duration::from_secs(wait),
    }))
}

/// Whether a sync at `now` should note the device's "last seen" time: once
/// every one to two minutes, the interval spread by device id, so that a
/// fleet that syncs together (every held long-poll re-polls after a save)
/// does not note itself together. The noted times are written in batches
/// ([`crate::sync_writes`]), never by the sync that noted them.
fn last_seen_due(device: &Device, now: OffsetDateTime) -> bool {
    now - device.last_sync_at > last_seen_interval(&device.id)
}

/// 60 to 119 seconds, by device id.
fn last_seen_interval(device_id: &str) -> time::Duration {
    let spread = crate::shed::fnv1a(device_id) % 60;
    time::Duration::seconds(60 + i64::try_from(spread).unwrap_or(0))
}

/// A sync that cannot reuse the device's last answer: parses the report,
/// writes what changed (the report at once; what was applied in a group
/// commit, waited for after the slot is released), notes the sync time at
/// most every one to two minutes for the next batched write (so that a fleet
/// of unchanged devices turns no poll into a disk write of its own), decides,
/// and remembers the policy once what it depends on is stored.
async fn full_sync(
    state: &AppState,
    known: Arc<KnownDevice>,
    body: &[u8],
    snapshot: &TenantSnapshot,
    (now, held_etag): (OffsetDateTime, Option<&str>),
    admitted: Admitted<'_>,
) -> ApiResult<(Arc<KnownDevice>, PreparedPolicy)> {
    let sent: ReportJson = json_from_slice(body)?;
    let applied = match &sent.applied {
        Some(applied) => Some(applied.parse()?),
        None => None,
    };
    let report = sent.parse()?;
    let device = &known.device;
    let applied = applied.and_then(|applied| changed_applied(device, snapshot, applied, now));
    let report_changed = report != device.report;
    let mut group_commit = None;
    let wrote = if report_changed {
        let moved = device_move(snapshot, device, &report);
        state
            .store
            .record_sync(
                &device.id,
                Some(&report),
                applied.as_ref(),
                now,
                moved.as_ref(),
            )
            .await?;
        state.metrics.sync_write("report");
        if applied.is_some() {
            state.metrics.sync_write("applied");
        }
        true
    } else if let Some(applied) = &applied {
        group_commit = Some(AppliedSync {
            device_id: device.id.clone(),
            applied: applied.clone(),
            at: now,
        });
        true
    } else if last_seen_due(device, now) {
        state.last_seen.note(&device.id);
        true
    } else {
        false
    };
    let known = if wrote {
        let mut device = device.clone();
        device.report = report;
        device.last_sync_at = now;
        if let Some(applied) = applied {
            device.applied = Some(applied);
        }
        Arc::new(KnownDevice::new(
            known.token_hash.clone(),
            device,
            known.device_trust,
        ))
    } else {
        known
    };
    let policy = prepare(state, snapshot, &known.device)?;
    drop(admitted);
    if let Some(sync) = group_commit {
        state.applied_writes.record(&state.store, sync).await?;
        state.metrics.sync_write("applied");
    }
    // Kept only once stored: a device the cache knew with an applied state
    // that never reached the store would never write it.
    if wrote {
        state.sync_cache.insert(known.clone());
    }
    let keep_json = !same_etag(held_etag, &policy.etag);
    known.remember(snapshot.build_id, body, &policy, keep_json);
    Ok((known, policy))
}

/// The policy of a device under a snapshot, serialised once.
fn prepare(
    state: &AppState,
    snapshot: &TenantSnapshot,
    device: &Device,
) -> ApiResult<PreparedPolicy> {
    PreparedPolicy::new(&snapshot.policy(device, state.config.poll_interval_s)).map_err(|error| {
        tracing::error!(%error, "a policy could not be serialised");
        ApiError::internal()
    })
}

impl HeldSync {
    /// Waits for a change that alters the device's policy, the deadline or the
    /// server's shutdown, and answers.
    ///
    /// Not an `async fn`, which would keep `self` twice (as passed and as its
    /// local) in the state every held long-poll carries for its whole hold.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice"
    )]
    pub(crate) fn finish(
        mut self,
        state: &AppState,
    ) -> impl Future<Output = ApiResult<SyncAnswer>> + '_ {
        async move {
            let _held = HeldPoll::new(state);
            let mut nudged = false;
            loop {
                let mut notified = std::pin::pin!(self.watch.notified());
                // Enabled before anything it guards is read: a change, a
                // "sync now" or the shutdown (`Snapshots::wake_all`) from here
                // on completes it. No shutdown receiver of its own: every held
                // long-poll would carry one, and its wait.
                notified.as_mut().enable();
                if *state.shutdown.borrow() {
                    break;
                }
                // An administrator asked this device to sync now, or changed
                // or removed it: answer (below) from a fresh read of it.
                if state.snapshots.take_nudge(&self.known.device.id) {
                    nudged = true;
                    break;
                }
                let generation = self.watch.generation();
                if generation != self.generation {
                    self.generation = generation;
                    state.metrics.held_rechecks.inc();
                    // Decided from the snapshot alone: a change to the device
                    // itself comes as a nudge (above), on every node.
                    if let Some(policy) = Box::pin(self.changed_policy(state)).await? {
                        state.metrics.sync("policy");
                        state.metrics.policy_changes_pushed.inc();
                        return Ok(SyncAnswer::Policy(policy));
                    }
                    continue;
                }
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(self.deadline) => break,
                }
            }
            // A last look, so that a change whose wake-up raced the deadline is not lost.
            let changed = if nudged || Box::pin(self.catch_up(state)).await? {
                let policy = Box::pin(reread_policy(state, &self.known)).await?;
                (policy.etag != self.etag).then_some(policy)
            } else {
                Box::pin(self.changed_policy(state)).await?
            };
            if let Some(policy) = changed {
                state.metrics.sync("policy");
                return Ok(SyncAnswer::Policy(policy));
            }
            state.metrics.sync("not_modified");
            Ok(SyncAnswer::NotModified { etag: self.etag })
        }
    }

    /// Before a held sync answers without a wake-up (at its deadline, or at
    /// shutdown), brings this node's snapshot up to the store's versions, read
    /// after the hold ended and shared with the syncs arriving meanwhile: a
    /// save acknowledged by another node whose notification has not arrived
    /// (or was lost while the listener reconnected) must not be answered 304
    /// with the older decision. True when a change to devices moved the
    /// device-trust version since the device was read, which may be this one's
    /// removal or attestation: the device is then read again.
    async fn catch_up(&self, state: &AppState) -> ApiResult<bool> {
        let tenant_id = &self.known.device.tenant_id;
        let versions = state.sync_cache.versions(&*state.store, tenant_id).await?;
        state.snapshots.at_least(tenant_id, versions.data).await?;
        Ok(versions.device_trust != self.known.device_trust)
    }

    /// The device's policy under this node's current snapshot if it differs
    /// from the one the device holds; only then is a policy built and
    /// serialised. The ETag is remembered for the device's next sync.
    async fn changed_policy(&self, state: &AppState) -> ApiResult<Option<PreparedPolicy>> {
        let snapshot = state.snapshots.get(&self.known.device.tenant_id).await?;
        let poll_interval_s = state.config.poll_interval_s;
        let etag: Arc<str> = snapshot
            .policy_etag(&self.known.device, poll_interval_s)
            .into();
        self.known.remember_again(snapshot.build_id, etag.clone());
        if etag == self.etag {
            return Ok(None);
        }
        prepare(state, &snapshot, &self.known.device).map(Some)
    }
}

/// The policy of a held device that was changed or asked to sync: the device
/// is read again, since it may have been removed, which revokes its token.
async fn reread_policy(state: &AppState, known: &KnownDevice) -> ApiResult<PreparedPolicy> {
    let fresh = read_device(state, known.token_hash.clone()).await?;
    let device = &fresh.known.device;
    let snapshot = state
        .snapshots
        .at_least(&device.tenant_id, fresh.data_version)
        .await?;
    prepare(state, &snapshot, device)
}

/// Completes when the server starts shutting down.
/// Written out rather than with `wait_for`, whose future is larger: every
/// lane connection waits on one while idle between requests, and that wait
/// is part of the one state machine a connection keeps.
pub(crate) async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // A closed channel means the server is gone: stopping too.
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
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

/// The device with this token: from the cache while its tenant's
/// `device_trust` version (read after this sync arrived) is the one it was
/// read at, else from the store. A change elsewhere in the tenant (a save, the
/// directory) keeps the device cached: only the snapshot must catch up.
async fn authenticate(state: &AppState, token_hash: String) -> ApiResult<SyncingDevice> {
    if let Some(known) = state.sync_cache.device(&token_hash) {
        let current = state
            .sync_cache
            .versions(&*state.store, &known.device.tenant_id)
            .await
            .map_err(invalid_device_token)?;
        if current.device_trust == known.device_trust {
            return Ok(SyncingDevice {
                known,
                data_version: current.data,
            });
        }
    }
    read_device(state, token_hash).await
}

/// Reads the device from the store, and keeps it for its next syncs.
async fn read_device(state: &AppState, token_hash: String) -> ApiResult<SyncingDevice> {
    state.metrics.sync_device_reads.inc();
    match state.store.device_by_token(&token_hash).await {
        Ok(fresh) => {
            let versions = fresh.tenant_versions;
            let known = Arc::new(KnownDevice::new(
                token_hash,
                fresh.device,
                versions.device_trust,
            ));
            state.sync_cache.insert(known.clone());
            Ok(SyncingDevice {
                known,
                data_version: versions.data,
            })
        }
        Err(error) => {
            if matches!(error, StoreError::NotFound { .. }) {
                state.sync_cache.forget(&token_hash);
            }
            Err(invalid_device_token(error))
        }
    }
}

fn invalid_device_token(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound { .. } => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_device_token",
            "the device token is not valid (the device may have been removed); enroll again",
        ),
        other => other.into(),
    }
}

/// The applied state to write for a sync's `applied` report: `None` when it
/// is what the device last reported (nothing to write), or when it names a
/// config version the tenant has not reached (a tenant restored from a
/// backup), which is ignored rather than refused so that the device still
/// gets its policy. `applied_at` stays the time the version was first heard of.
fn changed_applied(
    device: &Device,
    snapshot: &TenantSnapshot,
    reported: AppliedReport,
    now: OffsetDateTime,
) -> Option<Applied> {
    let stored = device.applied.as_ref();
    if stored.is_some_and(|s| {
        s.config_version == reported.config_version && s.services == reported.services
    }) {
        return None;
    }
    if reported.config_version > snapshot.tenant.config_version {
        tracing::debug!(tenant = %device.tenant_id, device_id = %device.id,
            config_version = reported.config_version, "applied version ahead of the tenant's; ignored");
        return None;
    }
    let at = match stored {
        Some(s) if s.config_version == reported.config_version => s.at,
        _ => now,
    };
    Some(Applied {
        config_version: reported.config_version,
        at,
        saved_at: None,
        services: reported.services,
    })
}

/// The audit record of a new report that moves the device between device
/// groups, which changes what it may get; `None` when its groups stay.
fn device_move(
    snapshot: &TenantSnapshot,
    device: &Device,
    report: &DeviceReport,
) -> Option<DeviceMove> {
    let before = snapshot.device_groups_of(device);
    let after = snapshot.device_groups_of(&Device {
        report: report.clone(),
        ..device.clone()
    });
    if before == after {
        return None;
    }
    let names = |groups: &std::collections::BTreeSet<entitle_core::DeviceGroupId>| {
        groups
            .iter()
            .map(|id| {
                GroupNames::device_group(snapshot, id)
                    .unwrap_or(id.as_str())
                    .to_owned()
            })
            .collect()
    };
    Some(DeviceMove {
        tenant_id: device.tenant_id.clone(),
        actor: Actor::new(
            ActorKind::Device,
            device.id.as_str(),
            report.hostname.as_str(),
        ),
        before: names(&before),
        after: names(&after),
    })
}

fn same_etag(held: Option<&str>, current: &str) -> bool {
    held.is_some_and(|held| {
        held.split(',')
            .any(|tag| tag.trim().trim_start_matches("W/") == current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_writes_are_spread_over_a_minute_by_device() {
        let intervals: std::collections::BTreeSet<i64> = (0..1000)
            .map(|i| last_seen_interval(&format!("device-{i}")).whole_seconds())
            .collect();
        assert!(
            intervals.iter().all(|s| (60..120).contains(s)),
            "{intervals:?}"
        );
        // A thousand devices land on most of the sixty seconds, not a few.
        assert!(intervals.len() > 50, "{intervals:?}");
        assert_eq!(last_seen_interval("a"), last_seen_interval("a"));
    }
}
