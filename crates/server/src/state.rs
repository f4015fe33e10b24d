//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use entitle_store::Store;
use tokio::sync::watch;

use crate::directory::DirectoryActivity;
use crate::limit::{BodyBudget, EnrollLimiter, FailureLimiter, TrustedProxies};
use crate::metrics::Metrics;
use crate::snapshot::Snapshots;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Seconds between an agent's regular syncs.
    pub poll_interval_s: u64,
    /// Longest `?wait=` a sync may hold.
    pub max_wait_s: u64,
    /// The address people open the portal at (`--public-url`); an `https://`
    /// one marks the session cookie `Secure`.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For` and `Forwarded` headers name the client.
    pub trusted_proxies: TrustedProxies,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's head once it has started.
    pub header_read_timeout: Duration,
    /// Connections served at once; past it a new sync is answered 503 with
    /// `Retry-After` and closed, and other calls get a few connections kept
    /// for the API.
    pub max_connections: usize,
    /// Request-body bytes held in memory at once, over every connection.
    pub max_body_bytes_in_flight: usize,
    /// Enrollments allowed per minute per enrollment key and client address.
    pub enrollments_per_minute: u32,
    /// Sign-in through the company's identity provider, when configured.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Devices the sync path keeps in memory between their syncs (about
    /// 1 KiB each); a device not kept costs one indexed read per sync.
    pub sync_cache_devices: usize,
    /// Limits of the sync gates (load shedding, see [`crate::shed`]).
    pub shed: crate::shed::ShedConfig,
}

impl ServerConfig {
    /// Whether session cookies carry `Secure`: decided by configuration only,
    /// never by a request header a client could forge.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.as_deref().is_some_and(|url| {
            url.get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            poll_interval_s: 3600,
            max_wait_s: 60,
            public_url: None,
            trusted_proxies: TrustedProxies::default(),
            idle_timeout: Duration::from_secs(75),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            enrollments_per_minute: 60,
            oidc: None,
            sync_cache_devices: 200_000,
            shed: crate::shed::ShedConfig::default(),
        }
    }
}

/// The state behind every handler.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Per-tenant snapshots and wake-up channels.
    pub snapshots: Arc<Snapshots>,
    /// Per-tenant devices as decisions read them, for previews and listings
    /// filtered by state.
    pub(crate) populations: Arc<crate::population::Populations>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Devices that synced lately, and the shared data-version reads.
    pub(crate) sync_cache: Arc<crate::sync_cache::SyncCache>,
    /// Settings.
    pub config: ServerConfig,
    /// Failed authentications per client address.
    pub failures: Arc<FailureLimiter>,
    /// Enrollments per enrollment key and client address.
    pub enrollments: Arc<EnrollLimiter>,
    /// Request-body bytes in memory, over every connection.
    pub body_budget: BodyBudget,
    /// What this node saw of each tenant's directory sync.
    pub directory: Arc<DirectoryActivity>,
    /// The sync gates: load shedding, fair between tenants.
    pub shed: Arc<crate::shed::Shed>,
    /// Devices seen since the last batch of "last seen" writes.
    pub(crate) last_seen: Arc<crate::sync_writes::LastSeen>,
    /// Applied states waiting for their group commit.
    pub(crate) applied_writes: Arc<crate::sync_writes::AppliedWrites>,
    /// Becomes true when the server shuts down, so held long-polls answer at once.
    pub shutdown: watch::Receiver<bool>,
}
