//! The node's timer: it rebuilds snapshots at grant boundaries (a grant's
//! start or end), waking held long-polls without a poll, and applies
//! scheduled changes. Every node runs its own; boundaries are times, so no
//! notification between nodes is needed for them.
//!
//! The applier of scheduled changes: one task per node that applies each
//! due change once (the store claims, saves and records the outcome in one
//! transaction under the tenant's lock, so of several nodes exactly one
//! applies it), then refreshes the tenant's snapshot so that held long-polls
//! wake. At start it first applies what became due while no node ran; the
//! store records how late.

use std::time::Duration;

use entitle_store::{DueChange, ScheduledStatus};
use time::OffsetDateTime;

use crate::state::AppState;

/// Longest sleep between two looks for due changes: a change scheduled on
/// another node is applied at most this late when that node is gone.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Shortest sleep, so that a store that keeps failing is not asked in a busy loop.
const MIN_IDLE: Duration = Duration::from_millis(5);
/// Due changes applied per round.
const BATCH: u32 = 100;

/// This node's name in the outcome of the changes it applies.
pub(crate) fn node_name() -> String {
    let random = entitle_store::secrets::new_secret("");
    let short: String = random
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("node-{}-{short}", std::process::id())
}

/// Applies due changes until the server shuts down.
pub(crate) async fn run(state: AppState, node: String) {
    let mut shutdown = state.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        state.snapshots.refresh_expired(now).await;
        match state.store.due_changes(now, BATCH).await {
            Ok(due) => {
                for change in due {
                    apply(&state, &change, &node).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not read due scheduled changes"),
        }
        let next_change = match state.store.next_change_at().await {
            Ok(at) => at,
            Err(error) => {
                tracing::warn!(%error, "could not read the next scheduled change");
                None
            }
        };
        let next = [next_change, state.snapshots.next_expiry()]
            .into_iter()
            .flatten()
            .min();
        let wait = next.map_or(MAX_IDLE, |at| {
            let left = at - OffsetDateTime::now_utc();
            Duration::try_from(left)
                .unwrap_or(Duration::ZERO)
                .clamp(MIN_IDLE, MAX_IDLE)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn apply(state: &AppState, due: &DueChange, node: &str) {
    match state
        .store
        .apply_scheduled_change(&due.tenant_id, &due.id, node)
        .await
    {
        Ok(Some(change)) => {
            if change.status == ScheduledStatus::Applied {
                tracing::info!(tenant = %change.tenant_id, id = %change.id, service = %change.service, config_version = ?change.config_version, message = ?change.outcome_message, "scheduled change applied");
            } else {
                tracing::warn!(tenant = %change.tenant_id, id = %change.id, service = %change.service, status = change.status.as_str(), message = ?change.outcome_message, "scheduled change not applied");
            }
            if change.config_version.is_some()
                && let Err(error) = state.snapshots.refresh(&change.tenant_id).await
            {
                tracing::warn!(%error, tenant = %change.tenant_id, "could not refresh the snapshot after a scheduled change");
            }
        }
        // Another node applied it, or it was cancelled meanwhile.
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, tenant = %due.tenant_id, id = %due.id, "could not apply a scheduled change; it stays pending")
        }
    }
}
