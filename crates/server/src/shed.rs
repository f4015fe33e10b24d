//! Load shedding for agent syncs, fair between tenants.
//!
//! A reconnect storm (every agent re-syncing after a restart) or a fleet
//! syncing ten times faster than the node can answer must not turn into
//! everyone timing out. Syncs that need work go through two gates:
//!
//! 1. **Token checks** (before the tenant is known): a small number of device
//!    token lookups run at once, node-wide. A lookup is one indexed read, so
//!    this gate is wide enough that the second one, which knows the tenant,
//!    is where a storm is shed.
//! 2. **Admission** (after authentication and the body): a sync first takes
//!    one of its tenant's slots (a tenant may use at most `tenant_share_percent`
//!    of the node's), then one of the node's. One tenant's storm therefore
//!    leaves the rest of the node's slots to the others, which take them
//!    without queueing behind the storm.
//!
//! A sync waits for a slot at most `queue_wait`, and never joins a queue that
//! is already `max_queued` long: it is answered **503** `server_busy` with a
//! `Retry-After` spread over `1..=retry_after_max_s` seconds, so that the shed
//! agents do not come back together. Held long-polls hold no slot (they wait
//! on a channel); a node holds at most `max_held_long_polls`, and past that a
//! sync is answered at once (304 or 200) instead of being held.
//!
//! Admin (`/api/v1`) and SCIM calls never pass these gates: their budget is
//! what the syncs leave, and the gates leave most of it (the token checks use
//! at most half of SQLite's pool of eight connections by default).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::agent::{SyncingDevice, authenticate_sync};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::state::AppState;

/// Limits of the sync gates (`entitle serve --max-syncs-in-flight …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShedConfig {
    /// Syncs doing work at once on this node (after authentication).
    pub max_syncs_in_flight: usize,
    /// Device-token lookups at once on this node (before the tenant is known).
    pub max_token_checks_in_flight: usize,
    /// The share of `max_syncs_in_flight` one tenant may use, in percent.
    pub tenant_share_percent: u8,
    /// The longest a sync waits for a slot before it is answered 503.
    pub queue_wait: Duration,
    /// Syncs waiting for a slot at once; more are answered 503 at once.
    pub max_queued: usize,
    /// Long-polls held at once; past it a sync is answered without holding.
    pub max_held_long_polls: usize,
    /// `Retry-After` of a shed sync is spread over 1..=this many seconds.
    pub retry_after_max_s: u64,
}

impl Default for ShedConfig {
    /// Sized from the machine's cores: four syncs doing work per core, two
    /// token checks per core, a tenant using at most three quarters of it.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            max_syncs_in_flight: (4 * cores).max(4),
            max_token_checks_in_flight: (2 * cores).max(2),
            tenant_share_percent: 75,
            queue_wait: Duration::from_millis(500),
            // A save that concerns every device answers every held
            // long-poll, and their re-polls come back together; each waits
            // only for a short token check, so the queue must hold a fleet's
            // worth of them (the wait still sheds what the node cannot serve).
            max_queued: 16_384,
            max_held_long_polls: 100_000,
            retry_after_max_s: 10,
        }
    }
}

impl ShedConfig {
    /// How many of the node's slots one tenant may hold (at least one).
    pub fn tenant_slots(&self) -> usize {
        let share = usize::from(self.tenant_share_percent.clamp(1, 100));
        self.max_syncs_in_flight
            .saturating_mul(share)
            .div_ceil(100)
            .clamp(1, self.max_syncs_in_flight.max(1))
    }
}

/// Why a sync was shed (the `reason` label of `entitle_sync_shed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Too many syncs already waiting.
    QueueFull,
    /// No token-check slot within the wait.
    TokenChecks,
    /// The tenant's share was in use for the whole wait.
    TenantShare,
    /// Every slot of the node was in use for the whole wait.
    NodeBusy,
    /// The node served as many connections as it may: a new one that brings
    /// a sync is answered and closed (see `lane::serve_past_the_cap`).
    Connections,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::TokenChecks => "token_checks",
            Reason::TenantShare => "tenant_share",
            Reason::NodeBusy => "node_busy",
            Reason::Connections => "connections",
        }
    }
}

/// The gates, shared by the lane and the axum handler.
pub struct Shed {
    config: ShedConfig,
    token_checks: Arc<Semaphore>,
    node: Arc<Semaphore>,
    tenant_slots: usize,
    /// Each tenant with a sync waiting or in flight, and its slots.
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    queued: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Shed {
    /// Gates with these limits, counting into `metrics`.
    pub fn new(config: ShedConfig, metrics: Arc<Metrics>) -> Self {
        let permits = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            token_checks: Arc::new(Semaphore::new(permits(config.max_token_checks_in_flight))),
            node: Arc::new(Semaphore::new(permits(config.max_syncs_in_flight))),
            tenant_slots: config.tenant_slots(),
            tenants: Mutex::new(HashMap::new()),
            queued: AtomicUsize::new(0),
            config,
            metrics,
        }
    }

    /// The limits.
    pub fn config(&self) -> &ShedConfig {
        &self.config
    }

    /// Whether one more long-poll may be held.
    pub(crate) fn may_hold(&self) -> bool {
        let held = usize::try_from(self.metrics.held_long_polls.get()).unwrap_or(0);
        if held < self.config.max_held_long_polls {
            return true;
        }
        self.metrics.long_polls_not_held.inc();
        false
    }

    /// Waits for a token-check slot, then looks the device's token up; 503
    /// when no slot frees up in time.
    pub(crate) async fn authenticate(
        &self,
        state: &AppState,
        token_hash: ApiResult<String>,
        address: Option<std::net::IpAddr>,
    ) -> ApiResult<SyncingDevice> {
        // A request without a token costs nothing to refuse, and a device the
        // sync cache holds costs no device read: only its tenant's version
        // read, of which one runs at a time per tenant, shared by all waiting.
        let cheap = match &token_hash {
            Err(_) => true,
            Ok(hash) => state.sync_cache.device(hash).is_some(),
        };
        if cheap {
            return authenticate_sync(state, token_hash, address).await;
        }
        let slot = self
            .wait_for(&self.token_checks, Reason::TokenChecks, None)
            .await?;
        let device = authenticate_sync(state, token_hash, address).await;
        drop(slot);
        device
    }

    /// Waits for a slot of the device's tenant, then one of the node's; the
    /// returned value holds both until it is dropped. 503 when either stays
    /// taken for the whole wait, or when too many syncs already wait.
    pub(crate) async fn admit(&self, tenant: &str) -> ApiResult<Admitted<'_>> {
        let gate = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.tenant_slots)))
                .clone()
        };
        let mut admitted = Admitted {
            shed: self,
            tenant: tenant.to_owned(),
            tenant_slot: None,
            node_slot: None,
        };
        let tenant_slot = self
            .wait_for(&gate, Reason::TenantShare, Some(tenant))
            .await;
        // Before `admitted` can be dropped, which forgets a tenant only when
        // nothing else refers to its slots.
        drop(gate);
        admitted.tenant_slot = Some(tenant_slot?);
        admitted.node_slot = Some(
            self.wait_for(&self.node, Reason::NodeBusy, Some(tenant))
                .await?,
        );
        self.metrics.syncs_in_flight.inc();
        Ok(admitted)
    }

    async fn wait_for(
        &self,
        gate: &Arc<Semaphore>,
        reason: Reason,
        tenant: Option<&str>,
    ) -> ApiResult<OwnedSemaphorePermit> {
        if let Ok(slot) = gate.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let queued = Queued::enter(&self.queued);
        if queued.0 > self.config.max_queued {
            return Err(self.shed(Reason::QueueFull, tenant));
        }
        match tokio::time::timeout(self.config.queue_wait, gate.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(self.shed(reason, tenant)),
        }
    }

    /// The answer to a connection past the node's cap: 503 with a spread
    /// `Retry-After`, like a shed sync's, and counted with them.
    pub(crate) fn refuse_connection(&self) -> ApiError {
        self.shed(Reason::Connections, None)
    }

    fn shed(&self, reason: Reason, tenant: Option<&str>) -> ApiError {
        self.metrics
            .sync_shed(reason.label(), tenant.map(tenant_bucket));
        let seconds = retry_after(self.config.retry_after_max_s, rand::random::<u64>());
        let busy_with = match reason {
            Reason::Connections => "connections",
            _ => "other syncs",
        };
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            format!("the server is busy with {busy_with}; try again in {seconds} s"),
        )
        .with_retry_after(seconds)
    }

    fn forget_if_idle(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        // Clones are only made under this lock: one reference is the map's own.
        if tenants
            .get(tenant)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            tenants.remove(tenant);
        }
    }

    /// Tenants with a sync waiting or in flight (for tests).
    #[cfg(test)]
    fn tenants_tracked(&self) -> usize {
        self.tenants.lock().map(|t| t.len()).unwrap_or(0)
    }
}

/// A sync's place in the node's and its tenant's slots, given back on drop.
pub(crate) struct Admitted<'a> {
    shed: &'a Shed,
    tenant: String,
    tenant_slot: Option<OwnedSemaphorePermit>,
    node_slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        if self.node_slot.take().is_some() {
            self.shed.metrics.syncs_in_flight.dec();
        }
        self.tenant_slot.take();
        self.shed.forget_if_idle(&self.tenant);
    }
}

/// Counts a waiting sync for as long as it waits.
struct Queued<'a>(usize, &'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        Self(counter.fetch_add(1, Ordering::Relaxed) + 1, counter)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A `Retry-After` in `1..=max` seconds from a random sample, so that the
/// agents shed together come back spread out.
fn retry_after(max_s: u64, sample: u64) -> u64 {
    1 + sample % max_s.max(1)
}

/// The tenant's bucket (of 16) in the shed counter's label: enough to see
/// whether one tenant is shed more than the others, without a label per tenant.
pub(crate) fn tenant_bucket(tenant: &str) -> &'static str {
    const BUCKETS: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    BUCKETS[(fnv1a(tenant) % 16) as usize]
}

/// FNV-1a over a string's bytes: stable across runs and nodes, unlike the
/// standard library's hasher, for spreading things by id.
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shed(config: ShedConfig) -> Shed {
        Shed::new(config, Arc::new(Metrics::new()))
    }

    fn tiny() -> ShedConfig {
        ShedConfig {
            max_syncs_in_flight: 4,
            max_token_checks_in_flight: 2,
            tenant_share_percent: 50,
            queue_wait: Duration::from_millis(20),
            max_queued: 8,
            max_held_long_polls: 10,
            retry_after_max_s: 10,
        }
    }

    #[test]
    fn a_tenant_gets_its_share_and_at_least_one_slot() {
        assert_eq!(tiny().tenant_slots(), 2);
        let one = ShedConfig {
            max_syncs_in_flight: 3,
            tenant_share_percent: 1,
            ..tiny()
        };
        assert_eq!(one.tenant_slots(), 1);
        let all = ShedConfig {
            tenant_share_percent: 100,
            ..tiny()
        };
        assert_eq!(all.tenant_slots(), 4);
        assert!(ShedConfig::default().tenant_slots() < ShedConfig::default().max_syncs_in_flight);
    }

    #[test]
    fn retry_after_is_spread_within_its_bounds() {
        let seen: std::collections::BTreeSet<u64> = (0..1000).map(|s| retry_after(10, s)).collect();
        assert_eq!(seen, (1..=10).collect());
        assert_eq!(retry_after(0, 12345), 1);
    }

    #[tokio::test]
    async fn a_storming_tenant_leaves_the_other_tenants_their_slots() {
        let shed = shed(tiny());
        let first = shed.admit("storm").await.expect("first");
        let second = shed.admit("storm").await.expect("second");
        // The storm's share (2 of 4) is taken: the third waits, then is shed.
        let refused = shed.admit("storm").await.err().expect("shed");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.body()["error"]["code"], "server_busy");
        let seconds = refused.retry_after().expect("Retry-After");
        assert!((1..=10).contains(&seconds));
        // Another tenant is admitted at once, twice.
        let quiet = shed.admit("quiet").await.expect("quiet");
        let quiet_again = shed.admit("quiet").await.expect("quiet again");
        // The node is full now: a third tenant waits, then is shed.
        let third = shed.admit("third").await.err().expect("node full");
        assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop((first, second, quiet, quiet_again));
        assert!(shed.admit("third").await.is_ok());
        // Tenants with nothing in flight are forgotten.
        assert_eq!(shed.tenants_tracked(), 0);
        let metrics = shed.metrics.render();
        assert!(
            metrics.contains("entitle_sync_shed_total{reason=\"tenant_share\""),
            "{metrics}"
        );
        assert!(metrics.contains("reason=\"node_busy\""), "{metrics}");
        assert!(metrics.contains("entitle_syncs_in_flight 0"), "{metrics}");
    }

    #[tokio::test]
    async fn a_waiting_sync_gets_a_slot_that_frees_up_within_the_wait() {
        let shed = Arc::new(shed(ShedConfig {
            queue_wait: Duration::from_secs(30),
            ..tiny()
        }));
        let first = shed.admit("t").await.expect("first");
        let _second = shed.admit("t").await.expect("second");
        let waiting = {
            let shed = shed.clone();
            tokio::spawn(async move { shed.admit("t").await.map(|_| ()).map_err(|e| e.status()) })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(waiting.await.expect("task"), Ok(()));
    }

    #[tokio::test]
    async fn a_full_queue_sheds_at_once() {
        let shed = Arc::new(shed(ShedConfig {
            max_syncs_in_flight: 1,
            tenant_share_percent: 100,
            queue_wait: Duration::from_secs(30),
            max_queued: 2,
            ..tiny()
        }));
        let _held = shed.admit("t").await.expect("first");
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let shed = shed.clone();
            waiting.push(tokio::spawn(async move {
                shed.admit("t").await.map(|_| ()).map_err(|e| e.status())
            }));
        }
        while shed.queued.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = shed.admit("t").await.err().expect("queue full");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            shed.metrics
                .render()
                .contains("entitle_sync_shed_total{reason=\"queue_full\"")
        );
        for task in waiting {
            task.abort();
        }
    }

    #[test]
    fn tenant_buckets_are_stable_and_bounded() {
        assert_eq!(tenant_bucket("acme"), tenant_bucket("acme"));
        let buckets: std::collections::BTreeSet<&str> = (0..200)
            .map(|i| tenant_bucket(&format!("tenant-{i}")))
            .collect();
        assert!(buckets.len() > 8 && buckets.len() <= 16);
    }
}
