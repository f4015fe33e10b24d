//! The entitlement preview over every device of a tenant, fast at a million
//! devices: the store reads only what a decision needs
//! (`PopulationStore::decision_population`), in parts that split the users,
//! read concurrently and decided on blocking threads, each part with core's
//! `impact()` (still the only rule). The parts' tallies add up (a user is in
//! one part only) and the sample is the first names of the merged parts'
//! samples, in order: the same devices each time.

use std::sync::Arc;

use axum::http::StatusCode;
use entitle_core::{
    IMPACT_SAMPLE_SIZE, Impact, ImpactSide, PopulationEntry, ServiceDef, Settings, impact,
};
use entitle_store::{Device, PopulationDevice};
use time::OffsetDateTime;

use crate::error::{ApiError, ApiResult};
use crate::snapshot::TenantSnapshot;
use crate::state::AppState;

/// Parts read and decided at once: one per core, so that the work spreads
/// over the cores.
fn at_once() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// Parts the population is split into: many more than are read at once, so
/// that the rows held in memory at any time are a small share of the tenant's.
const PARTS: usize = 32;

/// Who gains and who loses `service` when `current` becomes `proposed`,
/// over every device of the tenant.
pub(crate) async fn impact_over_tenant(
    state: &AppState,
    snapshot: &Arc<TenantSnapshot>,
    tenant_id: &str,
    service: &'static ServiceDef,
    current: &Settings,
    proposed: &Settings,
) -> ApiResult<Impact> {
    let parts = PARTS;
    let turns = Arc::new(tokio::sync::Semaphore::new(at_once()));
    let mut tasks = Vec::with_capacity(parts);
    for part in 0..parts {
        let store = state.store.clone();
        let snapshot = snapshot.clone();
        let turns = turns.clone();
        let (tenant_id, current, proposed) =
            (tenant_id.to_owned(), current.clone(), proposed.clone());
        tasks.push(tokio::spawn(async move {
            // The permit is held while the part is read and decided.
            let _turn = turns
                .acquire_owned()
                .await
                .map_err(|_| internal("the preview's semaphore closed"))?;
            let devices = store.decision_population(&tenant_id, part, parts).await?;
            tokio::task::spawn_blocking(move || {
                decide_part(&snapshot, service, &current, &proposed, devices)
            })
            .await
            .map_err(task_failed)
        }));
    }
    let mut merged = Impact::default();
    for task in tasks {
        let part = task.await.map_err(task_failed)??;
        add(&mut merged.gaining, part.gaining);
        add(&mut merged.losing, part.losing);
        add(&mut merged.legacy_clients, part.legacy_clients);
    }
    Ok(merged)
}

fn task_failed(error: tokio::task::JoinError) -> ApiError {
    internal(&error.to_string())
}

fn internal(error: &str) -> ApiError {
    tracing::error!(%error, "a preview task failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server could not complete the request; it has been logged",
    )
}

/// One part: its devices in (user, host name) order, each decided before
/// and after with core's `impact()`.
fn decide_part(
    snapshot: &TenantSnapshot,
    service: &ServiceDef,
    current: &Settings,
    proposed: &Settings,
    population: Vec<PopulationDevice>,
) -> Impact {
    let mut devices: Vec<Device> = population.into_iter().map(as_device).collect();
    devices.sort_unstable_by(|a, b| {
        (&a.user_name, &a.report.hostname).cmp(&(&b.user_name, &b.report.hostname))
    });
    let device_groups: Vec<_> = devices
        .iter()
        .map(|d| snapshot.device_groups_of(d))
        .collect();
    let entries = devices
        .iter()
        .zip(&device_groups)
        .map(|(device, groups)| PopulationEntry {
            hostname: &device.report.hostname,
            subject: snapshot.subject(device, groups),
        });
    impact(service, current, proposed, entries, snapshot)
}

/// A device as the snapshot's `subject` reads it: user, decision report,
/// approval. What a decision does not read (ids, times, what the agent
/// applied) is left empty.
fn as_device(device: PopulationDevice) -> Device {
    Device {
        id: String::new(),
        tenant_id: String::new(),
        user_id: device.user_id,
        user_name: device.user_name,
        report: device.report,
        enrolled_at: OffsetDateTime::UNIX_EPOCH,
        last_sync_at: OffsetDateTime::UNIX_EPOCH,
        attested_ownership: None,
        pending_approval: device.pending_approval,
        applied: None,
    }
}

/// Adds a part's side: counts add up (parts split the users), the sample
/// keeps the first names in order.
fn add(total: &mut ImpactSide, part: ImpactSide) {
    total.users += part.users;
    total.devices += part.devices;
    total.sample.extend(part.sample);
    total.sample.sort_unstable();
    total.sample.truncate(IMPACT_SAMPLE_SIZE);
}
