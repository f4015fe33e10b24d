//! What this node saw of each tenant's directory sync: when the identity
//! provider last called, and its recent errors, for the sync status.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// Errors kept per tenant.
const KEPT_ERRORS: usize = 20;
/// The last-request time is written to the store at most this often per tenant.
const TOUCH_EVERY: Duration = Duration::from_secs(5);

/// One SCIM request that failed.
#[derive(Debug, Clone)]
pub struct SyncError {
    /// When.
    pub at: OffsetDateTime,
    /// The request, e.g. `PATCH /Groups/…`.
    pub request: String,
    /// The HTTP status answered.
    pub status: u16,
    /// What was wrong.
    pub detail: String,
}

/// Per-tenant directory activity on this node.
#[derive(Default)]
pub struct DirectoryActivity {
    touched: Mutex<HashMap<String, Instant>>,
    errors: Mutex<HashMap<String, VecDeque<SyncError>>>,
}

impl DirectoryActivity {
    /// Whether the last-request time should be written now (at most every few seconds).
    pub fn should_touch(&self, tenant_id: &str) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match touched.get(tenant_id) {
            Some(last) if now.duration_since(*last) < TOUCH_EVERY => false,
            _ => {
                touched.insert(tenant_id.to_owned(), now);
                true
            }
        }
    }

    /// Remembers a failed request.
    pub fn record_error(&self, tenant_id: &str, error: SyncError) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let list = errors.entry(tenant_id.to_owned()).or_default();
        if list.len() == KEPT_ERRORS {
            list.pop_front();
        }
        list.push_back(error);
    }

    /// The recent errors, newest first.
    pub fn recent_errors(&self, tenant_id: &str) -> Vec<SyncError> {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors
            .get(tenant_id)
            .map(|list| list.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}
