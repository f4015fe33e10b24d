//! Thousands of simulated agents in one process: the same state machine per
//! device, one shared HTTP client, one task per device (no thread per agent).
//! Used to measure how fast a change reaches a fleet.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::driver::{AgentConfig, AgentError, SyncOutcome, enroll, sync_once};
use crate::lkg::Enrollment;
use crate::machine::{Agent, Backoff, HeldPolicy, Policy};

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

/// Enrolls `count` devices, spread over `users`, `parallel` at a time;
/// `progress` is called after each one.
pub async fn enroll_fleet(
    client: &reqwest::Client,
    server: &str,
    enrollment_key: &str,
    users: &[String],
    count: usize,
    parallel: usize,
    progress: impl Fn() + Send + Sync + 'static,
) -> Result<Vec<FleetDevice>, AgentError> {
    let next = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(progress);
    let users = Arc::new(users.to_vec());
    let mut workers = Vec::new();
    for _ in 0..parallel.max(1) {
        let (client, next, progress, users) = (
            client.clone(),
            next.clone(),
            progress.clone(),
            users.clone(),
        );
        let (server, key) = (server.to_owned(), enrollment_key.to_owned());
        workers.push(tokio::spawn(async move {
            let mut devices = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, AgentError>(devices);
                }
                let config = AgentConfig {
                    server: server.clone(),
                    enrollment_key: Some(key.clone()),
                    user_name: Some(users[index % users.len().max(1)].clone()),
                    report: device_report(index),
                    long_poll_s: 30,
                };
                let mut attempts = 0;
                let (enrollment, policy) = loop {
                    match enroll(&client, &config).await? {
                        Ok(enrolled) => break enrolled,
                        Err(detail) if attempts < 5 => {
                            attempts += 1;
                            tracing::warn!(%detail, "enrollment failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * attempts)).await;
                        }
                        Err(detail) => return Err(AgentError::Enrollment(detail)),
                    }
                };
                progress();
                devices.push((
                    index,
                    FleetDevice {
                        enrollment,
                        report: config.report,
                        policy,
                    },
                ));
            }
        }));
    }
    let mut devices = Vec::with_capacity(count);
    for worker in workers {
        devices.extend(
            worker
                .await
                .map_err(|e| AgentError::Enrollment(e.to_string()))??,
        );
    }
    devices.sort_by_key(|(index, _)| *index);
    Ok(devices.into_iter().map(|(_, device)| device).collect())
}

/// A running fleet: every device holds a long-poll and records the config
/// version of the policy it holds.
pub struct Fleet {
    held: Arc<Vec<AtomicI64>>,
    stop: watch::Sender<bool>,
}

impl Fleet {
    /// Starts one task per device, each with its own state machine.
    pub fn start(client: &reqwest::Client, devices: Vec<FleetDevice>, long_poll_s: u64) -> Self {
        let held: Arc<Vec<AtomicI64>> = Arc::new(
            devices
                .iter()
                .map(|d| AtomicI64::new(d.policy.config_version))
                .collect(),
        );
        let (stop, stopped) = watch::channel(false);
        for (index, device) in devices.into_iter().enumerate() {
            let (client, held, mut stopped) = (client.clone(), held.clone(), stopped.clone());
            tokio::spawn(async move {
                let now = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |since| {
                            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                        })
                };
                let (mut agent, _) = Agent::new(
                    &device.enrollment.tenant,
                    &device.enrollment.device_id,
                    Some(HeldPolicy {
                        policy: device.policy.clone(),
                        received_at_ms: Some(now()),
                    }),
                    Backoff::default(),
                );
                let mut failures = 0u32;
                loop {
                    let etag = agent.policy().map(|p| p.etag.clone());
                    let outcome = tokio::select! {
                        outcome = sync_once(&client, &device.enrollment.server, &device.enrollment.device_token, &device.report, etag.as_deref(), long_poll_s) => outcome,
                        _ = stopped.changed() => return,
                    };
                    let failed = matches!(outcome, SyncOutcome::Failed(_));
                    agent.handle(outcome.event(false), now(), 0.0);
                    if let Some(policy) = agent.policy() {
                        held[index].store(policy.config_version, Ordering::Relaxed);
                    }
                    if *stopped.borrow() {
                        return;
                    }
                    if failed {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(
                            (100u64 << failures.min(6)).min(5_000),
                        ))
                        .await;
                    } else {
                        failures = 0;
                    }
                }
            });
        }
        Self { held, stop }
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
