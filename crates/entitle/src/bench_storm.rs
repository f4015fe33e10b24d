//! `entitle bench --storm`: does the server stay up when overloaded?
//!
//! 1. **Reconnect storm.** A real `entitle serve` child process on a fresh
//!    SQLite file; as many simulated agents as this process's open-file limit
//!    allows hold long-polls (spread over loopback source addresses); the
//!    server is killed and started again on the same database, and a save
//!    that concerns every device is made as soon as it answers. Measured: the
//!    503s it sent, the time until every agent holds the new policy (from the
//!    kill), its peak RSS, admin and SCIM p99 of the storming tenant and of
//!    another one against the same calls just before, and the other tenant's
//!    syncs during the storm.
//! 2. **Ten times the sustainable rate.** The sustainable sync rate is
//!    measured first (closed loop), then an open-loop generator offers ten
//!    times that for a while: the share shed, p99 of the admitted syncs,
//!    admin p99, RSS.
//!
//! Both processes run on this machine: the figures include the load
//! generator's own CPU.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use entitle_device_agent::fleet::{
    Fleet, FleetPlan, agents_for_open_files, enroll_fleet, loopback_sources, raise_open_file_limit,
};
use entitle_device_agent::runtime::Timing;
use entitle_server::ProcessFigures;
use serde_json::{Value, json};

use super::{BenchArgs, report};
use crate::demo;
use crate::serve::Database;

/// Sockets this process keeps beside the fleet's: probes, the generator, metrics.
const PROBE_FILES: u64 = 600;

/// The other tenant, whose syncs and admin calls must not suffer.
const OTHER: &str = "globex";

/// The server as a child process, killed when dropped.
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn start(database: &std::path::Path, port: u16, extra: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("the path of this program")?;
        let log = std::fs::File::create(database.with_extension(format!("serve-{port}.log")))?;
        let child = Command::new(exe)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", database.display()))
            .arg("--enrollments-per-minute")
            .arg(u32::MAX.to_string())
            .args(extra)
            .env("ENTITLE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start `entitle serve`")?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until the server answers `/healthz`.
async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the server did not answer /healthz within 60 s")
}

/// A tenant's credentials, as the bench uses them.
struct TenantKeys {
    name: String,
    admin: String,
    scim: String,
    enrollment_key: String,
    users: Vec<String>,
}

async fn create_other_tenant(client: &reqwest::Client, base: &str) -> anyhow::Result<TenantKeys> {
    let root = demo::SUPER_ADMIN_TOKEN;
    let created: Value = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(root)
        .json(&json!({"name": OTHER}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token: Value = client
        .post(format!("{base}/api/v1/tenants/{OTHER}/tokens"))
        .bearer_auth(root)
        .json(&json!({"name": "bench", "role": "admin"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let admin = token["token"].as_str().unwrap_or_default().to_owned();
    let user = "wile@globex.example".to_owned();
    client
        .post(format!("{base}/api/v1/tenants/{OTHER}/users"))
        .bearer_auth(&admin)
        .json(&json!({"user_name": user}))
        .send()
        .await?
        .error_for_status()?;
    Ok(TenantKeys {
        name: OTHER.to_owned(),
        admin,
        scim: created["scim_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        enrollment_key: created["enrollment_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        users: vec![user],
    })
}

fn acme() -> TenantKeys {
    TenantKeys {
        name: "acme".to_owned(),
        admin: demo::ADMIN_TOKEN.to_owned(),
        scim: demo::SCIM_TOKEN.to_owned(),
        enrollment_key: demo::ENROLLMENT_KEY.to_owned(),
        users: ["ada", "hedy", "frances", "peter", "guido", "ursula"]
            .iter()
            .map(|u| format!("{u}@acme.example"))
            .collect(),
    }
}

/// Latencies of one kind of call, and how many failed.
#[derive(Default, Clone)]
struct Latencies {
    ok: Vec<Duration>,
    failed: u64,
    statuses: BTreeMap<u16, u64>,
    /// Calls that got no answer, by the innermost cause (a refused
    /// connection, a timeout, or this process out of descriptors).
    errors: BTreeMap<String, u64>,
}

impl Latencies {
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.ok.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
        sorted.get(index).copied()
    }

    fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        };
        let errors = if self.errors.is_empty() {
            String::new()
        } else {
            format!(", no answer: {:?}", self.errors)
        };
        format!(
            "p50 {} ms, p99 {} ms ({} calls, {} failed{errors})",
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            self.ok.len(),
            self.failed
        )
    }

    /// Counts a call that got no answer.
    fn no_answer(&mut self, error: &reqwest::Error) {
        let mut cause: &dyn std::error::Error = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        let kind = if error.is_timeout() {
            "timeout".to_owned()
        } else {
            cause.to_string()
        };
        self.failed += 1;
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// Calls `url` one after the other until `stop` is set, timing the answers.
async fn probe(
    client: reqwest::Client,
    url: String,
    token: String,
    stop: Arc<AtomicBool>,
) -> Latencies {
    let mut latencies = Latencies::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.get(&url).bearer_auth(&token).send().await {
            Ok(response) if response.status().is_success() => {
                let _ = response.bytes().await;
                latencies.ok.push(started.elapsed());
            }
            Ok(response) => {
                *latencies
                    .statuses
                    .entry(response.status().as_u16())
                    .or_default() += 1;
                latencies.failed += 1;
            }
            Err(error) => {
                latencies.no_answer(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies
}

/// Admin and SCIM calls of both tenants, each in its own loop, until stopped.
struct Probes {
    stop: Arc<AtomicBool>,
    tasks: Vec<(String, tokio::task::JoinHandle<Latencies>)>,
}

impl Probes {
    fn start(client: &reqwest::Client, base: &str, tenants: &[&TenantKeys]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for tenant in tenants {
            let calls = [
                (
                    format!("admin GET devices?limit=50 ({})", tenant.name),
                    format!("{base}/api/v1/tenants/{}/devices?limit=50", tenant.name),
                    tenant.admin.clone(),
                ),
                (
                    format!("SCIM GET Users?count=10 ({})", tenant.name),
                    format!("{base}/scim/v2/{}/Users?count=10", tenant.name),
                    tenant.scim.clone(),
                ),
            ];
            for (name, url, token) in calls {
                tasks.push((
                    name,
                    tokio::spawn(probe(client.clone(), url, token, stop.clone())),
                ));
            }
        }
        Self { stop, tasks }
    }

    async fn finish(self) -> Vec<(String, Latencies)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for (name, task) in self.tasks {
            results.push((name, task.await.unwrap_or_default()));
        }
        results
    }
}

fn compare(unloaded: &[(String, Latencies)], loaded: &[(String, Latencies)]) {
    for ((name, before), (_, during)) in unloaded.iter().zip(loaded) {
        let ratio = match (before.percentile(0.99), during.percentile(0.99)) {
            (Some(b), Some(d)) if b > Duration::ZERO => {
                format!("{:.2}×", d.as_secs_f64() / b.as_secs_f64())
            }
            _ => "-".to_owned(),
        };
        report(&format!("{name}, unloaded"), before.summary());
        report(
            &format!("{name}, loaded"),
            format!("{}; p99 {ratio} unloaded", during.summary()),
        );
    }
}

/// Samples the server's RSS until stopped; returns the peak in KiB.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Some(figures) = ProcessFigures::of_process(pid) {
                peak = peak.max(figures.resident_bytes / 1024);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    })
}

/// The sum of a labelled counter's series on the server's /metrics.
async fn counter_sum(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// One device of the other tenant, syncing on its own during the storm.
struct ProbeDevice {
    token: String,
    report: Value,
}

/// The other tenant's devices sync one after the other until stopped.
async fn other_tenant_syncs(
    client: reqwest::Client,
    base: String,
    devices: Vec<ProbeDevice>,
    stop: Arc<AtomicBool>,
) -> Latencies {
    let mut latencies = Latencies::default();
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        let Some(device) = devices.get(index % devices.len().max(1)) else {
            break;
        };
        index += 1;
        let started = Instant::now();
        match client
            .post(format!("{base}/agent/v1/sync"))
            .bearer_auth(&device.token)
            .json(&device.report)
            .send()
            .await
        {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                if status == 200 {
                    latencies.ok.push(started.elapsed());
                } else {
                    latencies.failed += 1;
                }
                *latencies.statuses.entry(status).or_default() += 1;
            }
            Err(error) => {
                latencies.no_answer(&error);
                *latencies.statuses.entry(0).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies
}

fn clients(sources: usize, per_client: usize) -> anyhow::Result<Vec<reqwest::Client>> {
    loopback_sources(sources)
        .into_iter()
        .map(|source| {
            crate::tls_args::client(None, |builder| {
                builder
                    .pool_max_idle_per_host(per_client)
                    .local_address(source)
            })
        })
        .collect()
}

/// Toggles a setting of acme's that is part of every device's policy; returns the new config version.
async fn save_for_everyone(client: &reqwest::Client, base: &str) -> anyhow::Result<i64> {
    let path = format!("{base}/api/v1/tenants/acme/entitlements/internet_access");
    let current = client
        .get(&path)
        .bearer_auth(demo::ADMIN_TOKEN)
        .send()
        .await?;
    let etag = current
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut settings: Value = current.json().await?;
    settings["logout_on_enable"] =
        Value::Bool(!settings["logout_on_enable"].as_bool().unwrap_or(false));
    let saved = client
        .put(&path)
        .bearer_auth(demo::ADMIN_TOKEN)
        .header("If-Match", etag)
        .json(&settings)
        .send()
        .await?;
    if !saved.status().is_success() {
        bail!("the save answered {}", saved.status());
    }
    saved
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .context("no ETag on the save")
}

/// Runs the storm and the overload measurements.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let limit = raise_open_file_limit().context("reading the open-file limit")?;
    let room = agents_for_open_files(limit.saturating_sub(PROBE_FILES));
    let agents = args.storm_agents.unwrap_or(room).min(room);
    report(
        "machine",
        format!(
            "{} cores; open-file limit {limit} per process",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("entitle.db");
    let seed = Database::Sqlite(path.clone()).open(true).await?;
    crate::serve::bootstrap(&*seed, Some(demo::SUPER_ADMIN_TOKEN)).await?;
    demo::seed(&*seed).await?;
    drop(seed);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = ServerProcess::start(&path, port, &args.serve_arg)?;
    let admin_client = crate::tls_args::client(None, |b| b.pool_max_idle_per_host(64))?;
    wait_ready(&admin_client, &base).await?;
    let other = create_other_tenant(&admin_client, &base).await?;
    let acme = acme();

    // Enrolment, over the source addresses like the fleet's syncs.
    let sources = args.source_addresses.max(1);
    let fleet_clients = clients(sources, agents.div_ceil(sources) + 16)?;
    let timing = Timing {
        long_poll_s: 60,
        ..Timing::default()
    };
    let started = Instant::now();
    let plan = FleetPlan {
        server: &base,
        enrollment_key: &acme.enrollment_key,
        users: &acme.users,
        count: agents,
        parallel: 64,
    };
    let devices = enroll_fleet(&fleet_clients[0], plan, timing, || {}).await?;
    report(
        "agents enrolled (acme)",
        format!(
            "{} in {:.1} s",
            devices.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    let other_plan = FleetPlan {
        server: &base,
        enrollment_key: &other.enrollment_key,
        users: &other.users,
        count: args.other_devices.max(1),
        parallel: 8,
    };
    let other_devices: Vec<ProbeDevice> = enroll_fleet(&admin_client, other_plan, timing, || {})
        .await?
        .into_iter()
        .map(|d| ProbeDevice {
            token: d.enrollment.device_token,
            report: d.report,
        })
        .collect();

    let fleet = Fleet::start_spread(&fleet_clients, devices, timing);
    let started = Instant::now();
    let mut held = 0.0;
    while started.elapsed() < Duration::from_secs(120) {
        held = counter_sum(&admin_client, &base, "entitle_held_long_polls ").await;
        if held as usize >= fleet.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report(
        "agents holding a long-poll",
        format!(
            "{held} of {} ({} source addresses)",
            fleet.len(),
            fleet_clients.len()
        ),
    );

    // Unloaded: the same probes, just before the storm.
    let probes = Probes::start(&admin_client, &base, &[&acme, &other]);
    let stop_other = Arc::new(AtomicBool::new(false));
    let other_task = tokio::spawn(other_tenant_syncs(
        admin_client.clone(),
        base.clone(),
        other_devices
            .iter()
            .map(|d| ProbeDevice {
                token: d.token.clone(),
                report: d.report.clone(),
            })
            .collect(),
        stop_other.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(args.seconds.max(3))).await;
    let unloaded = probes.finish().await;
    stop_other.store(true, Ordering::Relaxed);
    let other_unloaded = other_task.await.unwrap_or_default();
    let busy_before = fleet.counts().busy.load(Ordering::Relaxed);

    // The storm: kill the server, start it again, save for everyone.
    let storm_start = Instant::now();
    server.kill();
    server = ServerProcess::start(&path, port, &args.serve_arg)?;
    wait_ready(&admin_client, &base).await?;
    let down_for = storm_start.elapsed();
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss = sample_rss(server.pid(), stop_rss.clone());
    let probes = Probes::start(&admin_client, &base, &[&acme, &other]);
    let stop_other = Arc::new(AtomicBool::new(false));
    let other_task = tokio::spawn(other_tenant_syncs(
        admin_client.clone(),
        base.clone(),
        other_devices
            .iter()
            .map(|d| ProbeDevice {
                token: d.token.clone(),
                report: d.report.clone(),
            })
            .collect(),
        stop_other.clone(),
    ));
    let version = save_for_everyone(&admin_client, &base).await?;
    let shares = [0.5, 0.9, 0.99, 1.0];
    let reached = fleet
        .propagation(version, storm_start, &shares, Duration::from_secs(90))
        .await;
    let loaded = probes.finish().await;
    stop_other.store(true, Ordering::Relaxed);
    let other_loaded = other_task.await.unwrap_or_default();
    stop_rss.store(true, Ordering::Relaxed);
    let peak_rss = rss.await.unwrap_or_default();
    let shed = counter_sum(&admin_client, &base, "entitle_sync_shed_total").await;

    report(
        "server down (kill to /healthz answering)",
        format!("{:.0} ms", down_for.as_secs_f64() * 1e3),
    );
    for (share, time) in shares.iter().zip(&reached) {
        report(
            &format!("{:.0} % of agents hold the new policy", share * 100.0),
            time.map_or_else(
                || "not within 90 s of the kill".to_owned(),
                |t| format!("{:.1} s after the kill", t.as_secs_f64()),
            ),
        );
    }
    report(
        "503s sent by the server (entitle_sync_shed_total)",
        format!("{shed}"),
    );
    report(
        "busy answers seen by the agents (429/503)",
        format!(
            "{} (with Retry-After: {})",
            fleet.counts().busy.load(Ordering::Relaxed) - busy_before,
            fleet.counts().busy_with_retry_after.load(Ordering::Relaxed)
        ),
    );
    report(
        "server peak RSS during the storm",
        format!("{} MiB", peak_rss / 1024),
    );
    compare(&unloaded, &loaded);
    report(
        "other tenant's syncs, unloaded",
        format!(
            "{}; {:?}",
            other_unloaded.summary(),
            other_unloaded.statuses
        ),
    );
    report(
        "other tenant's syncs, during the storm",
        format!("{}; {:?}", other_loaded.summary(), other_loaded.statuses),
    );
    fleet.stop();
    drop(fleet);
    // Let the fleet's connections close before the overload phase.
    tokio::time::sleep(Duration::from_secs(3)).await;

    overload(
        args,
        &base,
        &server,
        &fleet_clients,
        &other_devices,
        &acme,
        &other,
    )
    .await
}

/// Measures the sustainable sync rate, then offers ten times it.
async fn overload(
    args: &BenchArgs,
    base: &str,
    server: &ServerProcess,
    clients: &[reqwest::Client],
    other_devices: &[ProbeDevice],
    acme: &TenantKeys,
    other: &TenantKeys,
) -> anyhow::Result<()> {
    // acme devices for the load: enrolled afresh (the fleet's tokens went with it).
    let admin_client = crate::tls_args::client(None, |b| b.pool_max_idle_per_host(64))?;
    let plan = FleetPlan {
        server: base,
        enrollment_key: &acme.enrollment_key,
        users: &acme.users,
        count: 1000,
        parallel: 32,
    };
    let devices: Arc<Vec<ProbeDevice>> = Arc::new(
        enroll_fleet(&admin_client, plan, Timing::default(), || {})
            .await?
            .into_iter()
            .map(|d| ProbeDevice {
                token: d.enrollment.device_token,
                report: d.report,
            })
            .collect(),
    );
    // Sustainable: a closed loop of 64 clients, every sync a 200.
    let seconds = Duration::from_secs(args.seconds.max(3));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds;
    let mut workers = Vec::new();
    for worker in 0..64 {
        let (client, devices, done) = (
            clients[worker % clients.len()].clone(),
            devices.clone(),
            done.clone(),
        );
        let url = format!("{base}/agent/v1/sync");
        workers.push(tokio::spawn(async move {
            let mut index = worker;
            while Instant::now() < deadline {
                let Some(device) = devices.get(index % devices.len()) else {
                    break;
                };
                index += 64;
                if let Ok(response) = client
                    .post(&url)
                    .bearer_auth(&device.token)
                    .json(&device.report)
                    .send()
                    .await
                    && response.status().is_success()
                {
                    let _ = response.bytes().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    let sustainable = done.load(Ordering::Relaxed) as f64 / seconds.as_secs_f64();
    report(
        "sustainable sync rate (closed loop, 64 clients, 200s)",
        format!("{sustainable:.0}/s"),
    );

    // Unloaded admin p99, then the same under 10× load.
    let probes = Probes::start(&admin_client, base, &[acme, other]);
    tokio::time::sleep(seconds).await;
    let unloaded = probes.finish().await;

    let target = sustainable * f64::from(args.overload_factor);
    let stop_rss = Arc::new(AtomicBool::new(false));
    let rss = sample_rss(server.pid(), stop_rss.clone());
    let probes = Probes::start(&admin_client, base, &[acme, other]);
    let stop_other = Arc::new(AtomicBool::new(false));
    let other_task = tokio::spawn(other_tenant_syncs(
        admin_client.clone(),
        base.to_owned(),
        other_devices
            .iter()
            .map(|d| ProbeDevice {
                token: d.token.clone(),
                report: d.report.clone(),
            })
            .collect(),
        stop_other.clone(),
    ));
    // Open loop: requests leave on schedule whether or not earlier ones were
    // answered, up to a cap on those outstanding (this process's sockets).
    let outstanding = Arc::new(tokio::sync::Semaphore::new(8_000));
    let results = Arc::new(std::sync::Mutex::new(Latencies::default()));
    let not_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let length = Duration::from_secs(args.overload_seconds);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < length {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * target) as u64;
        while sent < due {
            sent += 1;
            let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                not_sent.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let index = sent as usize;
            let (client, devices, results) = (
                clients[index % clients.len()].clone(),
                devices.clone(),
                results.clone(),
            );
            let url = format!("{base}/agent/v1/sync");
            tokio::spawn(async move {
                let _permit = permit;
                let Some(device) = devices.get(index % devices.len()) else {
                    return;
                };
                let begun = Instant::now();
                let answer = client
                    .post(&url)
                    .bearer_auth(&device.token)
                    .json(&device.report)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                let answer = match answer {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        Ok(status)
                    }
                    Err(error) => Err(error),
                };
                let elapsed = begun.elapsed();
                let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                let status = match answer {
                    Ok(200) => {
                        results.ok.push(elapsed);
                        200
                    }
                    Ok(status) => {
                        results.failed += 1;
                        status
                    }
                    Err(error) => {
                        results.no_answer(&error);
                        0
                    }
                };
                *results.statuses.entry(status).or_default() += 1;
            });
        }
    }
    let offered = started.elapsed();
    // Wait for the requests still out.
    let _ = tokio::time::timeout(Duration::from_secs(35), outstanding.acquire_many(8_000)).await;
    let loaded = probes.finish().await;
    stop_other.store(true, Ordering::Relaxed);
    let other_loaded = other_task.await.unwrap_or_default();
    stop_rss.store(true, Ordering::Relaxed);
    let peak_rss = rss.await.unwrap_or_default();
    let results = results.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let answered: u64 = results.statuses.values().sum();
    let shed = results.statuses.get(&503).copied().unwrap_or(0)
        + results.statuses.get(&429).copied().unwrap_or(0);
    report(
        &format!("offered ({}× sustainable, open loop)", args.overload_factor),
        format!(
            "target {target:.0}/s; sent {:.0}/s for {:.0} s; {} not sent (generator at 8,000 outstanding)",
            (sent - not_sent.load(Ordering::Relaxed)) as f64 / offered.as_secs_f64(),
            offered.as_secs_f64(),
            not_sent.load(Ordering::Relaxed)
        ),
    );
    report(
        "answers by status (0: no answer)",
        format!("{:?}", results.statuses),
    );
    report(
        "shed (503/429)",
        format!(
            "{shed} of {answered} ({:.1} %)",
            shed as f64 * 100.0 / answered.max(1) as f64
        ),
    );
    report("admitted syncs (200)", results.summary());
    report(
        "server peak RSS under 10× load",
        format!("{} MiB", peak_rss / 1024),
    );
    compare(&unloaded, &loaded);
    report(
        "other tenant's syncs under 10× load",
        format!("{}; {:?}", other_loaded.summary(), other_loaded.statuses),
    );
    Ok(())
}
