//! `entitle bench --soak --minutes N`: the real server as a child process
//! under a steady mixed load for N minutes — syncs on the 200 and the 304
//! path, `--agents` held long-polls, a settings save every few seconds that
//! concerns every device, and SCIM writes — sampled every 10 s: resident
//! memory, open file descriptors, held long-polls (from `/metrics`), p99 of
//! the syncs and 5xx answers in the interval. Writes `soak.csv` and
//! `summary.txt` into `--out` (default `target/bench-soak`); `bench/plot-soak.py`
//! draws the CSV.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use entitle_server::ProcessFigures;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::target::{ChildServer, Enrolled, enroll, prepare};
use super::{BenchArgs, report};
use crate::demo;

/// Time between samples.
const SAMPLE: Duration = Duration::from_secs(10);
/// Each plain-sync client (`--soak-sync-clients`) syncs at most once per `SYNC_PERIOD`.
const SYNC_PERIOD: Duration = Duration::from_millis(20);
/// Time between settings saves.
const SAVE_PERIOD: Duration = Duration::from_secs(5);
/// Time between SCIM writes.
const SCIM_PERIOD: Duration = Duration::from_millis(200);
/// SCIM users created before the soak, whose later writes keep the directory's size.
const SCIM_USERS: usize = 200;

/// What the load generator saw since the last sample.
#[derive(Default)]
struct Counters {
    syncs: AtomicU64,
    held_answers: AtomicU64,
    saves: AtomicU64,
    scim_writes: AtomicU64,
    server_errors: AtomicU64,
    /// Transport errors and unexpected 4xx.
    other_errors: AtomicU64,
}

impl Counters {
    fn take(&self) -> [u64; 6] {
        [
            self.syncs.swap(0, Ordering::Relaxed),
            self.held_answers.swap(0, Ordering::Relaxed),
            self.saves.swap(0, Ordering::Relaxed),
            self.scim_writes.swap(0, Ordering::Relaxed),
            self.server_errors.swap(0, Ordering::Relaxed),
            self.other_errors.swap(0, Ordering::Relaxed),
        ]
    }

    /// Counts an answer's status outside the expected ones.
    fn unexpected(&self, status: u16) {
        if status >= 500 {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Load {
    base: String,
    /// The agents' connections: held long-polls and plain syncs.
    client: reqwest::Client,
    /// The administrator's and the directory's (saves, SCIM writes): in a
    /// company they come from other machines, never over an agent's connection.
    admin: reqwest::Client,
    counters: Counters,
    /// Latencies of the plain syncs since the last sample.
    latencies: Mutex<Vec<Duration>>,
    deadline: Instant,
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-soak"));
    std::fs::create_dir_all(&out)?;
    let dir = tempfile::tempdir()?;
    let users = (args.users as i64).max(1);
    let prepared = prepare(
        args.database_url.as_deref(),
        dir.path(),
        users,
        args.devices as i64,
    )
    .await?;
    let server = ChildServer::start(
        &prepared.url,
        &["--enrollments-per-minute", "100000000"],
        Some(&out.join("server.log")),
    )
    .await?;
    report("server", format!("pid {}, {}", server.pid(), server.base));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.agents + 64)
        .timeout(Duration::from_secs(60))
        .build()?;

    let started = Instant::now();
    let mut agents = Vec::with_capacity(args.agents);
    for index in 0..args.agents {
        let user = format!("user{}@bench.test", index as i64 % users);
        agents.push(Arc::new(enroll(&client, &server.base, &user, index).await?));
    }
    report(
        "agents enrolled over HTTP",
        format!(
            "{} in {:.1} s",
            agents.len(),
            started.elapsed().as_secs_f64()
        ),
    );
    let admin = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let scim = scim_setup(&admin, &server.base).await?;
    report("SCIM users created", scim.0.len().to_string());

    let minutes = args.minutes.max(1);
    let load = Arc::new(Load {
        base: server.base.clone(),
        client,
        admin,
        counters: Counters::default(),
        latencies: Mutex::new(Vec::new()),
        deadline: Instant::now() + Duration::from_secs(minutes * 60),
    });
    let mut tasks = Vec::new();
    for agent in &agents {
        tasks.push(tokio::spawn(hold(load.clone(), agent.clone())));
    }
    for worker in 0..args.soak_sync_clients {
        tasks.push(tokio::spawn(syncs(
            load.clone(),
            agents.clone(),
            worker,
            args.soak_sync_clients,
        )));
    }
    tasks.push(tokio::spawn(saves(load.clone())));
    tasks.push(tokio::spawn(scim_writes(load.clone(), scim)));

    let csv_path = out.join("soak.csv");
    let mut csv = std::fs::File::create(&csv_path)?;
    writeln!(
        csv,
        "seconds,rss_mib,open_fds,held_long_polls,sync_p99_ms,syncs,held_answers,saves,scim_writes,server_errors,other_errors,cpu_seconds,rss_anon_mib,rss_file_mib"
    )?;
    let metrics_client = reqwest::Client::new();
    let soak_started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next = soak_started + SAMPLE;
    while Instant::now() < load.deadline {
        tokio::time::sleep_until(next.into()).await;
        next += SAMPLE;
        let latencies = std::mem::take(&mut *load.latencies.lock().await);
        let [syncs, held, saves, scim_writes, server_errors, other_errors] = load.counters.take();
        // One reading of the server's figures, so that RSS, its anonymous
        // (heap) and file-backed parts and the CPU time agree with each other.
        let figures = ProcessFigures::of_process(server.pid());
        let mib = |bytes: fn(&ProcessFigures) -> u64| {
            figures
                .as_ref()
                .map_or(0.0, |f| bytes(f) as f64 / (1024.0 * 1024.0))
        };
        let sample = Sample {
            seconds: soak_started.elapsed().as_secs_f64(),
            rss_mib: mib(|f| f.resident_bytes),
            fds: server.open_fds(),
            held: held_long_polls(&metrics_client, &server.base).await,
            p99_ms: percentile(latencies, 0.99).as_secs_f64() * 1e3,
            server_errors,
        };
        writeln!(
            csv,
            "{:.0},{:.1},{},{},{:.2},{syncs},{held},{saves},{scim_writes},{server_errors},{other_errors},{:.1},{:.1},{:.1}",
            sample.seconds,
            sample.rss_mib,
            sample.fds,
            sample.held,
            sample.p99_ms,
            figures.as_ref().map_or(0.0, |f| f.cpu_seconds),
            mib(|f| f.anonymous_bytes),
            mib(|f| f.file_bytes),
        )?;
        csv.flush()?;
        report(
            &format!("t={:>5.0} s", sample.seconds),
            format!(
                "RSS {:.1} MiB, {} fds, {} held, sync p99 {:.2} ms, {syncs} syncs, {held} held answers, {saves} saves, {scim_writes} SCIM, {server_errors} 5xx, {other_errors} other errors",
                sample.rss_mib, sample.fds, sample.held, sample.p99_ms
            ),
        );
        samples.push(sample);
    }
    for task in tasks {
        task.abort();
    }
    let mut summary = summarise(&samples, minutes, &server);
    // The server's own count of what it answered 5xx and why (shed syncs
    // by gate), and of its snapshot rebuilds.
    summary.push_str(
        &metric_lines(&metrics_client, &server.base, |line| {
            line.starts_with("entitle_sync_shed_total")
                || line.starts_with("entitle_snapshot_rebuild_seconds_sum")
                || line.starts_with("entitle_snapshot_rebuild_seconds_count")
                || (line.starts_with("entitle_http_requests_total") && line.contains("status=\"5"))
        })
        .await,
    );
    std::fs::write(out.join("summary.txt"), &summary)?;
    #[allow(clippy::print_stdout)]
    {
        println!("{summary}");
    }
    report("CSV", csv_path.display().to_string());
    drop(server);
    Ok(())
}

struct Sample {
    seconds: f64,
    rss_mib: f64,
    fds: usize,
    held: i64,
    p99_ms: f64,
    server_errors: u64,
}

/// The verdict: zero 5xx, RSS growth after warm-up under 10 %, no fd growth.
/// Warm-up is the first fifth of the run, at most 5 minutes.
fn summarise(samples: &[Sample], minutes: u64, server: &ChildServer) -> String {
    let Some(last) = samples.last() else {
        return "no sample taken".to_owned();
    };
    let warm_up = (minutes as f64 * 60.0 / 5.0).min(300.0);
    let warm = samples
        .iter()
        .find(|s| s.seconds >= warm_up)
        .unwrap_or(&samples[0]);
    let errors: u64 = samples.iter().map(|s| s.server_errors).sum();
    let growth = (last.rss_mib / warm.rss_mib.max(1e-9) - 1.0) * 100.0;
    let peak = samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let mut p99s: Vec<f64> = samples.iter().map(|s| s.p99_ms).collect();
    p99s.sort_by(f64::total_cmp);
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    format!(
        "soak of {minutes} min, {} samples\n\
         5xx answers: {errors} [{}]\n\
         RSS after warm-up (t={:.0} s): {:.1} MiB; at the end: {:.1} MiB; growth {growth:+.1} % [{}]; peak {peak:.1} MiB\n\
         open fds after warm-up: {}; at the end: {} [{}]\n\
         held long-polls at the end: {}\n\
         sync p99 per 10 s interval: median {:.2} ms, worst {:.2} ms\n\
         server CPU: {:.0} s over the run\n",
        samples.len(),
        verdict(errors == 0),
        warm.seconds,
        warm.rss_mib,
        last.rss_mib,
        verdict(growth < 10.0),
        warm.fds,
        last.fds,
        verdict(last.fds <= warm.fds + 16),
        last.held,
        p99s[p99s.len() / 2],
        p99s[p99s.len() - 1],
        server.cpu_seconds(),
    )
}

fn percentile(mut latencies: Vec<Duration>, p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
    latencies[index]
}

/// The lines of the server's `/metrics` that `wanted` picks.
async fn metric_lines(
    client: &reqwest::Client,
    base: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    metrics_text(client, base)
        .await
        .unwrap_or_default()
        .lines()
        .filter(|line| wanted(line))
        .map(|line| format!("{line}\n"))
        .collect()
}

async fn held_long_polls(client: &reqwest::Client, base: &str) -> i64 {
    let Some(text) = metrics_text(client, base).await else {
        return -1;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("entitle_held_long_polls "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// The server's `/metrics` page, if it answered.
async fn metrics_text(client: &reqwest::Client, base: &str) -> Option<String> {
    let response = client.get(format!("{base}/metrics")).send().await.ok()?;
    Some(response.text().await.unwrap_or_default())
}

/// One agent's held long-poll loop: wait up to 30 s for a change to the
/// policy it holds, take the new ETag from a 200, ask again reporting the
/// config version it applied, as a real agent does (so every save brings a
/// fleet's worth of applied-state writes).
async fn hold(load: Arc<Load>, agent: Arc<Enrolled>) {
    let mut etag = agent.etag.clone();
    let mut body = agent.report.clone();
    let url = format!("{}/agent/v1/sync?wait=30", load.base);
    while Instant::now() < load.deadline {
        let answer = load
            .client
            .post(&url)
            .bearer_auth(&agent.token)
            .header("If-None-Match", &etag)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                match status {
                    200 => {
                        if let Some(tag) =
                            response.headers().get("etag").and_then(|v| v.to_str().ok())
                        {
                            etag = tag.to_owned();
                        }
                        let policy: Value = response.json().await.unwrap_or_default();
                        if let Some(version) = policy["config_version"].as_i64() {
                            body["applied"] = json!({"config_version": version, "services": {}});
                        }
                        load.counters.held_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    304 => {
                        load.counters.held_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        load.counters.unexpected(status);
                        // A shed sync says when to come back, read as the agent reads it.
                        let retry_after_ms = response
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| {
                                entitle_device_agent::protocol::retry_after_ms(
                                    v,
                                    std::time::SystemTime::now(),
                                )
                            })
                            .unwrap_or(1000);
                        tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
                    }
                }
            }
            Err(_) => {
                load.counters.other_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Plain syncs at a steady rate, alternating the 200 path (no
/// `If-None-Match`) and the 304 path (the ETag the last answer gave), by
/// client `worker` of `clients`, each taking every `clients`-th agent in turn.
async fn syncs(load: Arc<Load>, agents: Vec<Arc<Enrolled>>, worker: usize, clients: usize) {
    let url = format!("{}/agent/v1/sync", load.base);
    let mut etags: Vec<String> = agents.iter().map(|a| a.etag.clone()).collect();
    let mut ticks = tokio::time::interval(SYNC_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut index = worker;
    let mut round = 0u64;
    while Instant::now() < load.deadline {
        ticks.tick().await;
        index = (index + clients) % agents.len().max(1);
        round += 1;
        let Some(agent) = agents.get(index) else {
            return;
        };
        let mut request = load
            .client
            .post(&url)
            .bearer_auth(&agent.token)
            .json(&agent.report);
        if round.is_multiple_of(2) {
            request = request.header("If-None-Match", &etags[index]);
        }
        let sent = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if let Some(tag) = response.headers().get("etag").and_then(|v| v.to_str().ok()) {
                    etags[index] = tag.to_owned();
                }
                let _ = response.bytes().await;
                if status == 200 || status == 304 {
                    load.latencies.lock().await.push(sent.elapsed());
                    load.counters.syncs.fetch_add(1, Ordering::Relaxed);
                } else {
                    load.counters.unexpected(status);
                }
            }
            Err(_) => {
                load.counters.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A settings save every `SAVE_PERIOD` that concerns every device: Digital
/// Experience Monitoring on for everyone, then off again.
async fn saves(load: Arc<Load>) {
    let url = format!(
        "{}/api/v1/tenants/acme/entitlements/digital_experience",
        load.base
    );
    let mut on = true;
    let mut ticks = tokio::time::interval(SAVE_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < load.deadline {
        ticks.tick().await;
        let body = json!({"enabled_by_default": on, "user_groups": [], "device_groups": [], "logout_on_enable": false});
        on = !on;
        match load
            .admin
            .put(&url)
            .bearer_auth(demo::ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                load.counters.saves.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => load.counters.unexpected(response.status().as_u16()),
            Err(_) => {
                load.counters.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// SCIM users and a SCIM group made before the soak: (user ids, group id).
type ScimFixture = (Vec<String>, String);

async fn scim_setup(client: &reqwest::Client, base: &str) -> anyhow::Result<ScimFixture> {
    let scim = format!("{base}/scim/v2/acme");
    let mut users = Vec::with_capacity(SCIM_USERS);
    for index in 0..SCIM_USERS {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("soak{index}@bench.test"), "externalId": format!("soak-{index}"),
            "active": true,
        });
        users.push(scim_post(client, &format!("{scim}/Users"), &body).await?);
    }
    let group = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Soak", "externalId": "soak-group",
    });
    let group = scim_post(client, &format!("{scim}/Groups"), &group).await?;
    Ok((users, group))
}

async fn scim_post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<String> {
    let response = client
        .post(url)
        .bearer_auth(demo::SCIM_TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("SCIM POST {url} answered {status}: {answer}");
    }
    answer["id"]
        .as_str()
        .map(str::to_owned)
        .context("SCIM answer without id")
}

/// One SCIM write every `SCIM_PERIOD`, over a fixed set of users so that the
/// directory keeps its size: deactivate or reactivate a user, add a user to
/// the group or remove one.
async fn scim_writes(load: Arc<Load>, (users, group): ScimFixture) {
    let scim = format!("{}/scim/v2/acme", load.base);
    let mut ticks = tokio::time::interval(SCIM_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0usize;
    while Instant::now() < load.deadline {
        ticks.tick().await;
        let user = &users[(step / 4) % users.len()];
        let (url, operation) = match step % 4 {
            0 => (
                format!("{scim}/Users/{user}"),
                json!({"op": "replace", "path": "active", "value": false}),
            ),
            1 => (
                format!("{scim}/Users/{user}"),
                json!({"op": "replace", "path": "active", "value": true}),
            ),
            2 => (
                format!("{scim}/Groups/{group}"),
                json!({"op": "add", "path": "members", "value": [{"value": user}]}),
            ),
            _ => (
                format!("{scim}/Groups/{group}"),
                json!({"op": "remove", "path": format!("members[value eq \"{user}\"]")}),
            ),
        };
        step += 1;
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [operation],
        });
        match load
            .admin
            .patch(&url)
            .bearer_auth(demo::SCIM_TOKEN)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                load.counters.scim_writes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(response) => load.counters.unexpected(response.status().as_u16()),
            Err(_) => {
                load.counters.other_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
