//! A tenant's devices as decisions see them, for previews over every device:
//! only the columns a decision reads, in disjoint parts that can be read and
//! decided concurrently.

use async_trait::async_trait;
use entitle_core::DeviceReport;

use crate::StoreResult;

/// One device as a decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PopulationDevice {
    /// Its user.
    pub user_id: String,
    /// Its user's login name.
    pub user_name: String,
    /// The report decisions use: attested ownership in place of the reported
    /// one (what `Device::decision_report` gives).
    pub report: DeviceReport,
    /// Waiting for an administrator's approval (no group-based service).
    pub pending_approval: bool,
}

/// Reads a tenant's decision population.
#[async_trait]
pub trait PopulationStore {
    /// Part `part` of `parts` of the tenant's devices. Parts split the users
    /// (every device of a user is in the same part), so that counts of
    /// distinct users add up over the parts; together the parts hold every
    /// device once.
    async fn decision_population(
        &self,
        tenant_id: &str,
        part: usize,
        parts: usize,
    ) -> StoreResult<Vec<PopulationDevice>>;
}
