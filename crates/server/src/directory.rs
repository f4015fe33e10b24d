//! What this node saw of each tenant's directory sync: when the identity
//! provider last called, its last authenticated request, and its recent
//! errors (refused SCIM tokens among them), for the sync status and the SCIM
//! setup page.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// Errors kept per tenant.
const KEPT_ERRORS: usize = 20;
/// The last-request time is written to the store at most this often per tenant.
const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// At most one refused SCIM token is remembered per tenant this often, so
/// that a flood of bad tokens costs neither memory nor database reads.
const AUTH_FAILURE_EVERY: Duration = Duration::from_secs(1);
/// Tenant names (or ids) whose last refusal time is kept; past it, older
/// entries go, and a refusal is not remembered rather than growing the map.
const AUTH_FAILURE_KEYS: usize = 4096;
/// The longest tenant name or id in a SCIM URL worth remembering a refusal for.
const MAX_TENANT_KEY: usize = 63;
/// Longest text kept of a request's path or user agent.
const MAX_SHOWN: usize = 200;

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

/// The last SCIM request a tenant's token opened: what it was and how it was
/// answered, never its body, query or credential.
#[derive(Debug, Clone)]
pub struct LastRequest {
    /// When.
    pub at: OffsetDateTime,
    /// The HTTP method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The client's `User-Agent`, if any.
    pub user_agent: Option<String>,
}

impl LastRequest {
    /// A request as kept: path and user agent cut short and without control characters.
    pub fn new(method: &str, path: &str, status: u16, user_agent: Option<&str>) -> Self {
        Self {
            at: OffsetDateTime::now_utc(),
            method: shown(method),
            path: shown(path),
            status,
            user_agent: user_agent.map(shown).filter(|ua| !ua.is_empty()),
        }
    }

    /// Which identity provider the user agent looks like, if a known one.
    pub fn identity_provider(&self) -> Option<&'static str> {
        identity_provider(self.user_agent.as_deref()?)
    }
}

/// Microsoft Entra ID and Okta name themselves in their SCIM clients' user agents.
pub fn identity_provider(user_agent: &str) -> Option<&'static str> {
    let lower = user_agent.to_ascii_lowercase();
    if lower.contains("microsoft.identity") {
        Some("Microsoft Entra ID")
    } else if lower.contains("okta") {
        Some("Okta")
    } else {
        None
    }
}

fn shown(text: &str) -> String {
    text.chars()
        .filter(|c| entitle_core::is_name_char(*c))
        .take(MAX_SHOWN)
        .collect()
}

/// Per-tenant directory activity on this node.
#[derive(Default)]
pub struct DirectoryActivity {
    touched: Mutex<HashMap<String, Instant>>,
    errors: Mutex<HashMap<String, VecDeque<SyncError>>>,
    last_requests: Mutex<HashMap<String, LastRequest>>,
    auth_failures: Mutex<HashMap<String, Instant>>,
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

    /// Remembers the last request a tenant's token opened.
    pub fn record_request(&self, tenant_id: &str, request: LastRequest) {
        let mut last = self.last_requests.lock().unwrap_or_else(|e| e.into_inner());
        last.insert(tenant_id.to_owned(), request);
    }

    /// The last request a tenant's token opened on this node, if any.
    pub fn last_request(&self, tenant_id: &str) -> Option<LastRequest> {
        let last = self.last_requests.lock().unwrap_or_else(|e| e.into_inner());
        last.get(tenant_id).cloned()
    }

    /// Whether a refused SCIM token for the tenant named `key` in the URL
    /// should be remembered now: at most once a second per name, for names
    /// that could be a tenant's, in a map of bounded size.
    pub fn should_record_auth_failure(&self, key: &str) -> bool {
        if key.is_empty() || key.len() > MAX_TENANT_KEY {
            return false;
        }
        let mut failures = self.auth_failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(last) = failures.get(key)
            && now.duration_since(*last) < AUTH_FAILURE_EVERY
        {
            return false;
        }
        if failures.len() >= AUTH_FAILURE_KEYS && !failures.contains_key(key) {
            failures.retain(|_, last| now.duration_since(*last) < AUTH_FAILURE_EVERY);
            if failures.len() >= AUTH_FAILURE_KEYS {
                return false;
            }
        }
        failures.insert(key.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_remembered_once_a_second_per_tenant_in_a_bounded_map() {
        let activity = DirectoryActivity::default();
        assert!(activity.should_record_auth_failure("acme"));
        assert!(!activity.should_record_auth_failure("acme"));
        assert!(activity.should_record_auth_failure("globex"));
        assert!(!activity.should_record_auth_failure(&"x".repeat(64)));
        assert!(!activity.should_record_auth_failure(""));
        for i in 0..AUTH_FAILURE_KEYS * 2 {
            activity.should_record_auth_failure(&format!("t{i}"));
        }
        let kept = activity
            .auth_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        assert!(kept <= AUTH_FAILURE_KEYS, "{kept}");
    }

    #[test]
    fn the_identity_provider_is_told_by_its_user_agent() {
        assert_eq!(
            identity_provider("Microsoft.Identity.Provisioning/1.0"),
            Some("Microsoft Entra ID")
        );
        assert_eq!(identity_provider("Okta SCIM Client 1.0.0"), Some("Okta"));
        assert_eq!(identity_provider("curl/8.5.0"), None);
        let kept = LastRequest::new(
            "GET",
            "/scim/v2/acme/Users\u{0}",
            200,
            Some(&"a\n".repeat(300)),
        );
        assert!(
            kept.user_agent
                .as_deref()
                .is_some_and(|ua| ua.len() == MAX_SHOWN && !ua.contains('\n'))
        );
        assert!(!kept.path.contains('\u{0}'));
    }
}
