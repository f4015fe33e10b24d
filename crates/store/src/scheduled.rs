//! Scheduled entitlement changes: a save that takes effect at a later time.
//!
//! A change is checked when it is scheduled (the same rules as a save) and
//! stored with the version of the settings it was made on top of. At its
//! time, one node claims it, saves it and records the outcome in one
//! transaction under the tenant's write lock: the save's `If-Match` is that
//! version, so a change made in between is a recorded conflict, never
//! overwritten; a group deleted in between is a recorded failure. Because the
//! claim commits with the save, a node that dies before its commit leaves the
//! change pending for the next node (or its own restart) to apply, once.

use async_trait::async_trait;
use entitle_core::{ServiceDef, Settings};
use time::OffsetDateTime;

use crate::{Actor, StoreResult};

/// The most changes a tenant may have pending at once.
pub const MAX_PENDING_CHANGES: u32 = 100;
/// The most changes one listing answers (pending first, then recent outcomes).
pub const SCHEDULED_CHANGES_LISTED: u32 = 200;
/// How far ahead a change may be scheduled.
pub const MAX_SCHEDULE_AHEAD: time::Duration = time::Duration::days(366);

/// Where a scheduled change is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledStatus {
    /// Waiting for its time.
    Pending,
    /// Saved at its time (or later, if no node was running then).
    Applied,
    /// Not saved: the settings changed after it was scheduled.
    Conflict,
    /// Not saved: it broke a rule at its time (e.g. a group deleted since).
    Failed,
    /// Cancelled before its time.
    Cancelled,
}

impl ScheduledStatus {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduledStatus::Pending => "pending",
            ScheduledStatus::Applied => "applied",
            ScheduledStatus::Conflict => "conflict",
            ScheduledStatus::Failed => "failed",
            ScheduledStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<ScheduledStatus> {
        Some(match text {
            "pending" => ScheduledStatus::Pending,
            "applied" => ScheduledStatus::Applied,
            "conflict" => ScheduledStatus::Conflict,
            "failed" => ScheduledStatus::Failed,
            "cancelled" => ScheduledStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One scheduled change.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledChange {
    /// Stable id.
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The service whose settings it saves.
    pub service: String,
    /// The settings it saves.
    pub settings: Settings,
    /// The settings version it was made on top of: the save's `If-Match`.
    pub expected_version: i64,
    /// When it is to be applied.
    pub apply_at: OffsetDateTime,
    /// Where it is in its life.
    pub status: ScheduledStatus,
    /// When it was scheduled.
    pub created_at: OffsetDateTime,
    /// Who scheduled it: the save's actor.
    pub created_by: Actor,
    /// When it was applied, refused or cancelled.
    pub outcome_at: Option<OffsetDateTime>,
    /// Why it was refused (conflict, failed), or how late it was applied.
    pub outcome_message: Option<String>,
    /// The config version it wrote (applied and changing something).
    pub config_version: Option<i64>,
    /// The node that applied it, or who cancelled it.
    pub outcome_by: Option<String>,
}

/// A change to schedule.
#[derive(Debug, Clone)]
pub struct NewScheduledChange {
    /// The service.
    pub service: &'static ServiceDef,
    /// The settings to save at `apply_at`.
    pub settings: Settings,
    /// `If-Match` of the request; `None`: the version stored now.
    pub expected_version: Option<i64>,
    /// When to apply it.
    pub apply_at: OffsetDateTime,
    /// Who schedules it.
    pub actor: Actor,
}

/// A due change, as the applier finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueChange {
    /// The tenant.
    pub tenant_id: String,
    /// The change.
    pub id: String,
}

/// Storage of scheduled changes.
#[async_trait]
pub trait ScheduledChangeStore {
    /// Checks the change as a save would be checked now (`Stale` when
    /// `expected_version` is not current, `Invalid` when it breaks a rule) and
    /// stores it as pending, audited.
    async fn schedule_change(
        &self,
        tenant_id: &str,
        change: NewScheduledChange,
    ) -> StoreResult<ScheduledChange>;
    /// Pending changes by time, then the most recent outcomes, at most
    /// [`SCHEDULED_CHANGES_LISTED`]; optionally of one service.
    async fn scheduled_changes(
        &self,
        tenant_id: &str,
        service: Option<&str>,
    ) -> StoreResult<Vec<ScheduledChange>>;
    /// One change.
    async fn scheduled_change(&self, tenant_id: &str, id: &str) -> StoreResult<ScheduledChange>;
    /// Cancels a pending change, audited; `Refused` (`not_pending`) once it
    /// has an outcome.
    async fn cancel_scheduled_change(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &Actor,
    ) -> StoreResult<ScheduledChange>;
    /// Pending changes due at `now`, oldest first, every tenant.
    async fn due_changes(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<DueChange>>;
    /// When the next pending change is due, every tenant.
    async fn next_change_at(&self) -> StoreResult<Option<OffsetDateTime>>;
    /// Applies a due change if it is still pending: the claim, the save with
    /// its checks, the outcome and its audit entry in one transaction.
    /// `None` when it was no longer pending (another node applied it, or it
    /// was cancelled) or is not due yet.
    async fn apply_scheduled_change(
        &self,
        tenant_id: &str,
        id: &str,
        node: &str,
    ) -> StoreResult<Option<ScheduledChange>>;
}
