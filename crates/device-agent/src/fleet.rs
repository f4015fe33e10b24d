//! Thousands of simulated agents in one process: each device runs the same
//! [`runtime`](crate::runtime) and state machine as the real agent, as one
//! tokio task over one shared HTTP client (no thread, file or socket per
//! device). Used to measure how fast a change reaches a fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::driver::AgentError;
use crate::lkg::Enrollment;
use crate::machine::{Action, Agent, Policy};
use crate::protocol::{EnrollError, EnrollRequest, SyncOutcome, enroll_retrying};
use crate::runtime::{self, Device, Host, Timing, now_ms};

/// Enrollment attempts per device before the fleet gives up.
const ENROLL_ATTEMPTS: u32 = 5;

/// One enrolled simulated device.
#[derive(Debug, Clone)]
pub struct FleetDevice {
    /// Its enrollment.
    pub enrollment: Enrollment,
    /// What it reports.
    pub report: Value,
    /// Its first policy.
    pub policy: Policy,
}

/// Which devices to enroll.
#[derive(Debug, Clone, Copy)]
pub struct FleetPlan<'a> {
    /// The server's base URL.
    pub server: &'a str,
    /// The tenant's enrollment key.
    pub enrollment_key: &'a str,
    /// The users the devices belong to, in turn.
    pub users: &'a [String],
    /// How many devices.
    pub count: usize,
    /// Enrollments in flight at once.
    pub parallel: usize,
}

/// The report of simulated device number `index`: a mix of systems, owners and
/// client versions, some too old for selective entitlement.
pub fn device_report(index: usize) -> Value {
    let os = ["windows", "macos", "linux", "ios", "android"][index % 5];
    let ownership = if index % 4 == 3 {
        "personal"
    } else {
        "corporate"
    };
    let version = match index % 20 {
        0 => "1.2.3",
        1 => "2.2.0",
        2 => "3.8.9",
        _ => "4.3.0.120",
    };
    json!({
        "hostname": format!("fleet-{index:05}"),
        "os": os,
        "client_version": version,
        "ownership": ownership,
        "posture": {"disk_encrypted": !index.is_multiple_of(7), "os_version": "14.5"},
    })
}

/// Enrolls the devices of `plan`, retrying failures with `timing`'s backoff a
/// few times; `progress` is called after each one.
pub async fn enroll_fleet(
    client: &reqwest::Client,
    plan: FleetPlan<'_>,
    timing: Timing,
    progress: impl Fn() + Send + Sync + 'static,
) -> Result<Vec<FleetDevice>, AgentError> {
    if plan.users.is_empty() {
        return Err(AgentError::NoUsers);
    }
    let count = plan.count;
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(progress);
    let users: Arc<[String]> = plan.users.into();
    let mut workers = Vec::new();
    for _ in 0..plan.parallel.max(1) {
        let (client, next, progress, users) = (
            client.clone(),
            next.clone(),
            progress.clone(),
            users.clone(),
        );
        let (server, key) = (plan.server.to_owned(), plan.enrollment_key.to_owned());
        workers.push(tokio::spawn(async move {
            let mut devices = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, AgentError>(devices);
                }
                let Some(user) = users.get(index % users.len()) else {
                    return Err(AgentError::NoUsers);
                };
                let report = device_report(index);
                let request = EnrollRequest {
                    server: &server,
                    enrollment_key: &key,
                    user_name: user,
                    report: &report,
                };
                let (enrollment, policy) = enroll_retrying(
                    &client,
                    request,
                    timing.request_timeout,
                    timing.backoff,
                    Some(ENROLL_ATTEMPTS),
                    |error, _| tracing::warn!(%error, "enrollment failed; retrying"),
                )
                .await?;
                progress();
                devices.push((
                    index,
                    FleetDevice {
                        enrollment,
                        report,
                        policy,
                    },
                ));
            }
        }));
    }
    let mut devices = Vec::with_capacity(count);
    let mut errors = Vec::new();
    for worker in workers {
        match worker.await {
            Ok(Ok(enrolled)) => devices.extend(enrolled),
            Ok(Err(error)) => errors.push(error),
            Err(error) => errors.push(AgentError::Task(error.to_string())),
        }
    }
    if let Some(error) = root_cause(errors) {
        return Err(error);
    }
    devices.sort_by_key(|(index, _)| *index);
    Ok(devices.into_iter().map(|(_, device)| device).collect())
}

/// The error that explains the others: a refusal says what is wrong (an
/// unknown user, a bad key), while the 429s that repeated refusals bring on
/// the other workers only hide it.
fn root_cause(mut errors: Vec<AgentError>) -> Option<AgentError> {
    let chosen = errors
        .iter()
        .position(|e| matches!(e, AgentError::Enroll(EnrollError::Refused { .. })))
        .unwrap_or(0);
    (chosen < errors.len()).then(|| errors.swap_remove(chosen))
}

/// Open files the fleet keeps for itself (the runtime, the log, the
/// metrics calls) beyond one socket per agent.
const RESERVED_FILES: u64 = 64;

/// Raises this process's open-file soft limit to its hard limit, where the
/// system allows it, and returns the soft limit now in force. Each held
/// long-poll is a socket, and a default soft limit of 1,024 would cap a
/// fleet (or a server) at about a thousand agents.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    // `rlimit`'s safe wrapper over getrlimit/setrlimit: the workspace forbids
    // `unsafe`, which calling libc directly would need.
    rlimit::increase_nofile_limit(u64::MAX)
}

/// How many agents a fleet can hold with `open_files` file descriptors: one
/// socket each, plus a few for the fleet itself.
pub fn agents_for_open_files(open_files: u64) -> usize {
    usize::try_from(open_files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX)
}

/// The loopback source addresses a fleet spreads its connections over
/// (127.0.0.1, 127.0.0.2, …): each (source, destination) pair has its own
/// 28,000 or so ephemeral ports, so `count` addresses hold `count` times as
/// many connections to one server. At most 254.
pub fn loopback_sources(count: usize) -> Vec<std::net::IpAddr> {
    (1..=count.clamp(1, 254))
        .map(|n| std::net::IpAddr::from([127, 0, 0, u8::try_from(n).unwrap_or(u8::MAX)]))
        .collect()
}

/// What a running fleet's devices heard from the server, over every device.
#[derive(Debug, Default)]
pub struct FleetCounts {
    /// Answers 429 or 503 (a busy server shedding load).
    pub busy: AtomicU64,
    /// Of those, answers with a `Retry-After`.
    pub busy_with_retry_after: AtomicU64,
    /// Syncs that failed otherwise (connection refused or dropped, timeouts, 5xx).
    pub failed: AtomicU64,
    /// Policies received (200).
    pub policies: AtomicU64,
    /// Answers 304.
    pub unchanged: AtomicU64,
}

/// A running fleet: every device runs the agent runtime and records the
/// config version of the policy it holds.
pub struct Fleet {
    held: Arc<[AtomicI64]>,
    counts: Arc<FleetCounts>,
    stop: watch::Sender<bool>,
}

/// What a device holds when it holds no policy (revoked).
const NO_POLICY: i64 = -1;

impl Fleet {
    /// Starts one task per device, each with its own state machine, paced by `timing`.
    pub fn start(client: &reqwest::Client, devices: Vec<FleetDevice>, timing: Timing) -> Self {
        Self::start_spread(std::slice::from_ref(client), devices, timing)
    }

    /// Like [`Fleet::start`], the devices taking the clients in turn (one
    /// client per source address, so that the fleet does not run out of
    /// ephemeral ports). With no client, no device starts.
    pub fn start_spread(
        clients: &[reqwest::Client],
        devices: Vec<FleetDevice>,
        timing: Timing,
    ) -> Self {
        let held: Arc<[AtomicI64]> = devices
            .iter()
            .map(|d| AtomicI64::new(d.policy.config_version))
            .collect();
        let counts = Arc::new(FleetCounts::default());
        let (stop, stopped) = watch::channel(false);
        for (index, device) in devices.into_iter().enumerate() {
            let Some(client) = clients.get(index % clients.len().max(1)) else {
                break;
            };
            let (client, mut stopped) = (client.clone(), stopped.clone());
            let mut counter = Counter {
                held: held.clone(),
                counts: counts.clone(),
                index,
            };
            tokio::spawn(async move {
                let FleetDevice {
                    enrollment,
                    report,
                    policy,
                } = device;
                let (agent, actions) = Agent::enrolled(
                    &enrollment.tenant,
                    &enrollment.device_id,
                    policy,
                    timing.backoff,
                    now_ms(),
                    runtime::jitter(),
                );
                let device = Device {
                    client: &client,
                    enrollment: &enrollment,
                    report: &report,
                    timing,
                };
                let shutdown = async move {
                    // Also ends when the fleet is dropped.
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                runtime::run(device, agent, actions, &mut counter, None, None, shutdown).await;
            });
        }
        Self { held, counts, stop }
    }

    /// What the devices heard from the server so far.
    pub fn counts(&self) -> &FleetCounts {
        &self.counts
    }

    /// Devices that hold a policy of at least this config version.
    pub fn holding(&self, config_version: i64) -> usize {
        self.held
            .iter()
            .filter(|v| v.load(Ordering::Relaxed) >= config_version)
            .count()
    }

    /// How many devices the fleet has.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether the fleet is empty.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Waits until the given shares of the fleet hold `config_version`, up to
    /// `timeout`; returns the time each share was reached, measured from `since`.
    pub async fn propagation(
        &self,
        config_version: i64,
        since: Instant,
        shares: &[f64],
        timeout: Duration,
    ) -> Vec<Option<Duration>> {
        let mut reached: Vec<Option<Duration>> = vec![None; shares.len()];
        let total = self.len().max(1) as f64;
        while since.elapsed() < timeout {
            let holding = self.holding(config_version) as f64 / total;
            for (slot, share) in reached.iter_mut().zip(shares) {
                if slot.is_none() && holding >= *share {
                    *slot = Some(since.elapsed());
                }
            }
            if reached.iter().all(Option::is_some) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reached
    }

    /// Stops every device.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// A simulated device's host: it has no services to start and keeps its
/// policy in memory (the machine holds it); it only reports which it holds.
struct Counter {
    held: Arc<[AtomicI64]>,
    counts: Arc<FleetCounts>,
    index: usize,
}

impl Host for Counter {
    type Wake = ();

    fn act(&mut self, _action: Action, _agent: &Agent) {}

    fn answered(&mut self, outcome: &SyncOutcome) {
        let counts = &self.counts;
        let counter = match outcome {
            SyncOutcome::Busy { retry_after_ms, .. } => {
                if retry_after_ms.is_some() {
                    counts.busy_with_retry_after.fetch_add(1, Ordering::Relaxed);
                }
                &counts.busy
            }
            SyncOutcome::Failed(_) | SyncOutcome::Revoked => &counts.failed,
            SyncOutcome::Policy(_) => &counts.policies,
            SyncOutcome::Unchanged => &counts.unchanged,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn settled(&mut self, agent: &Agent, _now_ms: u64) {
        let version = agent.policy().map_or(NO_POLICY, |p| p.config_version);
        if let Some(slot) = self.held.get(self.index) {
            slot.store(version, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy() -> AgentError {
        AgentError::Enroll(EnrollError::Unavailable(
            "the server answered 429 Too Many Requests".into(),
        ))
    }

    fn refused(user: &str) -> AgentError {
        AgentError::Enroll(EnrollError::Refused {
            status: 403,
            code: "user_not_provisioned".into(),
            message: format!("user {user:?} is not in the directory"),
        })
    }

    #[test]
    fn sources_are_distinct_loopback_addresses() {
        let sources = loopback_sources(8);
        assert_eq!(sources.len(), 8);
        assert!(sources.iter().all(std::net::IpAddr::is_loopback));
        assert_eq!(sources[0], std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!(sources[7], std::net::IpAddr::from([127, 0, 0, 8]));
        assert_eq!(loopback_sources(0).len(), 1);
        assert_eq!(loopback_sources(1000).len(), 254);
        assert_eq!(agents_for_open_files(20_000), 19_936);
        assert_eq!(agents_for_open_files(10), 0);
    }

    #[test]
    fn the_open_file_limit_is_raised_to_what_the_system_allows() {
        let soft = raise_open_file_limit().expect("getrlimit");
        let (now, hard) = rlimit::Resource::NOFILE.get().expect("getrlimit");
        assert_eq!(soft, now);
        assert!(soft == hard || hard == rlimit::INFINITY, "{soft} of {hard}");
    }

    #[test]
    fn a_refusal_explains_the_fleet_failure_better_than_the_429s_it_caused() {
        let chosen = root_cause(vec![busy(), busy(), refused("nobody"), refused("other")])
            .expect("an error");
        assert!(chosen.to_string().contains("\"nobody\""), "{chosen}");
        let chosen = root_cause(vec![busy(), AgentError::NoUsers]).expect("an error");
        assert!(chosen.to_string().contains("429"), "{chosen}");
        assert!(root_cause(Vec::new()).is_none());
    }
}
