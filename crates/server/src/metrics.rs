//! Prometheus metrics: request counts and latencies, held long-polls, syncs and
//! policy changes pushed.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// Durations of snapshot rebuilds (the store read and the build), process-wide
/// because `Snapshots` holds no registry; every registry exposes it.
static SNAPSHOT_REBUILD: std::sync::LazyLock<Histogram> =
    std::sync::LazyLock::new(|| Histogram::new(exponential_buckets(0.001, 2.0, 16)));

/// Records one snapshot rebuild that took `elapsed`.
pub fn snapshot_rebuilt(elapsed: std::time::Duration) {
    SNAPSHOT_REBUILD.observe(elapsed.as_secs_f64());
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    reason: &'static str,
    tenant_bucket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncWriteLabels {
    what: &'static str,
}

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// Long-polls held right now.
    pub held_long_polls: Gauge<i64, AtomicI64Compat>,
    syncs: Family<SyncLabels, Counter>,
    sync_writes: Family<SyncWriteLabels, Counter>,
    /// Held long-polls answered with a changed policy.
    pub policy_changes_pushed: Counter,
    /// Held long-polls that decided again because a change concerned their
    /// user (or every user): the work a save costs the held fleet.
    pub held_rechecks: Counter,
    /// Devices the sync path read from the store, because its cache did not
    /// know them or one of the tenant's devices was changed since.
    pub sync_device_reads: Counter,
    /// Reads of a tenant's versions by the sync path, each shared by the
    /// syncs of the tenant that arrived before it began.
    pub sync_version_reads: Counter,
    resident_memory_bytes: Gauge<i64, AtomicI64Compat>,
    cpu_seconds: Gauge<f64, AtomicU64>,
    sync_shed: Family<ShedLabels, Counter>,
    /// Syncs doing work right now (admitted by [`crate::shed`]).
    pub syncs_in_flight: Gauge<i64, AtomicI64Compat>,
    /// Syncs answered at once because the node held its most long-polls.
    pub long_polls_not_held: Counter,
}

/// Gauge storage type.
pub type AtomicI64Compat = std::sync::atomic::AtomicI64;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("entitle");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        let held_long_polls = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "held_long_polls",
            "Agent syncs held waiting for a change",
            held_long_polls.clone(),
        );
        let syncs = Family::<SyncLabels, Counter>::default();
        registry.register("syncs", "Agent syncs answered, by outcome", syncs.clone());
        let sync_writes = Family::<SyncWriteLabels, Counter>::default();
        registry.register(
            "sync_writes",
            "Database writes of agent syncs, by what changed (report, applied, last_seen)",
            sync_writes.clone(),
        );
        let held_rechecks = Counter::<u64, AtomicU64>::default();
        registry.register(
            "held_long_poll_rechecks",
            "Held long-polls that decided again because a change concerned their user",
            held_rechecks.clone(),
        );
        let sync_device_reads = Counter::<u64, AtomicU64>::default();
        registry.register(
            "sync_device_reads",
            "Devices the sync path read from the store (not known to its cache, or changed since)",
            sync_device_reads.clone(),
        );
        let sync_version_reads = Counter::<u64, AtomicU64>::default();
        registry.register(
            "sync_version_reads",
            "Reads of a tenant's versions by the sync path, each shared by the syncs that arrived before it began",
            sync_version_reads.clone(),
        );
        let policy_changes_pushed = Counter::<u64, AtomicU64>::default();
        registry.register(
            "policy_changes_pushed",
            "Held long-polls answered with a changed policy",
            policy_changes_pushed.clone(),
        );
        // Read from /proc at each scrape, so that a load generator on another
        // machine (`entitle fleet`) can see what held connections cost.
        let resident_memory_bytes = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the server process (Linux)",
            resident_memory_bytes.clone(),
        );
        registry.register(
            "snapshot_rebuild_seconds",
            "Time to read a tenant's data and rebuild its snapshot",
            SNAPSHOT_REBUILD.clone(),
        );
        let cpu_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the server process (Linux)",
            cpu_seconds.clone(),
        );
        let sync_shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "sync_shed",
            "Agent syncs answered 503 with Retry-After, by reason and tenant bucket (of 16)",
            sync_shed.clone(),
        );
        let syncs_in_flight = Gauge::<i64, AtomicI64Compat>::default();
        registry.register(
            "syncs_in_flight",
            "Agent syncs doing work right now (not held long-polls)",
            syncs_in_flight.clone(),
        );
        let long_polls_not_held = Counter::<u64, AtomicU64>::default();
        registry.register(
            "long_polls_not_held",
            "Syncs answered at once because the node held its most long-polls",
            long_polls_not_held.clone(),
        );
        Self {
            sync_shed,
            syncs_in_flight,
            long_polls_not_held,
            registry,
            requests,
            latency,
            held_long_polls,
            syncs,
            sync_writes,
            policy_changes_pushed,
            held_rechecks,
            sync_device_reads,
            sync_version_reads,
            resident_memory_bytes,
            cpu_seconds,
        }
    }

    /// Counts a sync answered with `outcome` (`policy`, `not_modified`).
    pub fn sync(&self, outcome: &'static str) {
        self.syncs.get_or_create(&SyncLabels { outcome }).inc();
    }

    /// Counts a sync shed for `reason`, of a tenant's bucket (`none` before authentication).
    pub fn sync_shed(&self, reason: &'static str, tenant_bucket: Option<&'static str>) {
        self.sync_shed
            .get_or_create(&ShedLabels {
                reason,
                tenant_bucket: tenant_bucket.unwrap_or("none"),
            })
            .inc();
    }

    /// Counts a sync's database write of `what` (`report`, `applied`, `last_seen`).
    pub fn sync_write(&self, what: &'static str) {
        self.sync_writes(what, 1);
    }

    /// Counts `n` devices' database writes of `what`, written as one batch.
    pub fn sync_writes(&self, what: &'static str, n: u64) {
        self.sync_writes
            .get_or_create(&SyncWriteLabels { what })
            .inc_by(n);
    }

    /// Counts and times one answered request by its route template.
    pub fn record_request(&self, method: &'static str, route: String, status: u16, elapsed: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(process) = ProcessFigures::read() {
            self.resident_memory_bytes
                .set(i64::try_from(process.resident_bytes).unwrap_or(i64::MAX));
            self.cpu_seconds.set(process.cpu_seconds);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics could not be encoded");
        }
        out
    }
}

/// What the kernel says of a process: its resident memory and CPU time.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFigures {
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// The part of it that is anonymous memory (the heap), in bytes; 0 where
    /// the kernel does not say.
    pub anonymous_bytes: u64,
    /// The part of it that maps files (the binary, libraries), in bytes; 0
    /// where the kernel does not say.
    pub file_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
}

impl ProcessFigures {
    /// This process's figures, from `/proc/self` (Linux only; elsewhere `None`).
    pub fn read() -> Option<Self> {
        Self::read_from("/proc/self")
    }

    /// Another process's figures, from `/proc/{pid}` (Linux only).
    pub fn of_process(pid: u32) -> Option<Self> {
        Self::read_from(&format!("/proc/{pid}"))
    }

    fn read_from(dir: &str) -> Option<Self> {
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        // A field of `status` such as `VmRSS:   1234 kB`, in bytes.
        let bytes = |field: &str| -> Option<u64> {
            let kib: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix(field))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib.saturating_mul(1024))
        };
        let resident_bytes = bytes("VmRSS:")?;
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        // Fields after the parenthesised name; utime and stime are the 12th and
        // 13th, in clock ticks of 1/100 s (USER_HZ on every Linux architecture).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(Self {
            resident_bytes,
            anonymous_bytes: bytes("RssAnon:").unwrap_or(0),
            file_bytes: bytes("RssFile:").unwrap_or(0),
            cpu_seconds: ticks / 100.0,
        })
    }
}

/// Middleware that counts and times every request by its route template.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.record_request(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The label of a request's method. Anyone can send any token as a method
/// before authenticating, so a label per token would let a stranger grow the
/// counters (and every scrape) without bound: methods outside the standard
/// set share one label.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::ProcessFigures;

    #[test]
    fn this_process_has_its_resident_memory_read_and_split_into_kinds() {
        let figures = ProcessFigures::read().expect("Linux has /proc/self");
        assert!(figures.anonymous_bytes > 0, "{figures:?}");
        assert!(figures.file_bytes > 0, "{figures:?}");
        // VmRSS is RssAnon + RssFile + RssShmem, all read from one snapshot.
        assert!(
            figures.anonymous_bytes + figures.file_bytes <= figures.resident_bytes,
            "{figures:?}"
        );
    }
}
