//! Time-bound grants: one user (optionally one of their devices) gets one
//! service from a start to an end time, with a justification. Creating and
//! revoking one bumps the tenant's data version (decisions depend on it) and
//! is audited. A grant ends by itself: snapshots are built "as of" a time and
//! keep only the grants active then, with the next start or end as their
//! expiry.

use async_trait::async_trait;
use entitle_core::ServiceDef;
use time::OffsetDateTime;

use crate::{Actor, StoreResult};

/// The longest a grant may last.
pub const MAX_GRANT_DURATION: time::Duration = time::Duration::days(30);
/// How far ahead a grant may start.
pub const MAX_GRANT_START_AHEAD: time::Duration = time::Duration::days(366);
/// The longest justification, in characters.
pub const MAX_JUSTIFICATION: usize = 500;
/// The most grants a tenant may have that have not ended (active or upcoming).
pub const MAX_LIVE_GRANTS: u32 = 1_000;
/// The most grants one listing answers, newest first.
pub const GRANTS_LISTED: u32 = 500;

/// One grant.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// Stable id.
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// The user it grants to.
    pub user_id: String,
    /// Their login name.
    pub user_name: String,
    /// Only this device of theirs, or every device.
    pub device_id: Option<String>,
    /// The service.
    pub service: String,
    /// From.
    pub starts_at: OffsetDateTime,
    /// Until (exclusive).
    pub ends_at: OffsetDateTime,
    /// Why, as the administrator wrote it.
    pub justification: String,
    /// Whether it gives the service even to a user or device an exclusion
    /// group excludes.
    pub overrides_exclusions: bool,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: Actor,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Who revoked it.
    pub revoked_by: Option<Actor>,
}

impl Grant {
    /// Whether it gives the service at `at`.
    pub fn active_at(&self, at: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.starts_at <= at && at < self.ends_at
    }

    /// `active`, `upcoming`, `ended` or `revoked` at `at`.
    pub fn state_at(&self, at: OffsetDateTime) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if at < self.starts_at {
            "upcoming"
        } else if at < self.ends_at {
            "active"
        } else {
            "ended"
        }
    }
}

/// A grant to create. The server checks times and text before; the store
/// checks that the user and device exist in the tenant, and the count.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// User id or login name.
    pub user: String,
    /// One device of the user's, or all.
    pub device_id: Option<String>,
    /// The service.
    pub service: &'static ServiceDef,
    /// From.
    pub starts_at: OffsetDateTime,
    /// Until.
    pub ends_at: OffsetDateTime,
    /// Why.
    pub justification: String,
    /// Whether exclusions give way to it.
    pub overrides_exclusions: bool,
    /// Who creates it.
    pub actor: Actor,
}

/// Storage of grants.
#[async_trait]
pub trait GrantStore {
    /// Creates a grant, audited, bumping the data version.
    async fn create_grant(&self, tenant_id: &str, grant: NewGrant) -> StoreResult<Grant>;
    /// The tenant's grants, newest first, at most [`GRANTS_LISTED`].
    async fn grants(&self, tenant_id: &str) -> StoreResult<Vec<Grant>>;
    /// Revokes a grant that has not ended, audited, bumping the data
    /// version; `Refused` (`grant_over`) when it had ended or was revoked.
    async fn revoke_grant(&self, tenant_id: &str, id: &str, actor: &Actor) -> StoreResult<Grant>;
}
