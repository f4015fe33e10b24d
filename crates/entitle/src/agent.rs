//! `entitle agent …` (a real agent on this machine) and `entitle fleet` (many
//! simulated agents, for load and propagation measurements).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use entitle_device_agent::driver::{self, AgentConfig};
use entitle_device_agent::fleet::{Fleet, FleetPlan, enroll_fleet};
use entitle_device_agent::machine::Backoff;
use entitle_device_agent::runtime::Timing;
use entitle_server::ProcessFigures;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::tls_args::CaArgs;

/// `entitle agent …`.
#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Run the agent: enroll once, sync, hold a long-poll, answer the control socket.
    Run(Box<RunArgs>),
    /// Show the running agent's state (JSON).
    Status(StateDirArg),
    /// Press "Update Policy".
    UpdatePolicy(StateDirArg),
    /// The user signs in.
    Login(StateDirArg),
    /// The user signs out.
    Logout(StateDirArg),
    /// The user re-authenticates.
    Reauth(StateDirArg),
}

/// Where the agent keeps its state.
#[derive(Args, Debug)]
pub struct StateDirArg {
    /// The agent's state directory.
    #[arg(
        long,
        env = "ENTITLE_AGENT_STATE_DIR",
        default_value = "./entitle-agent"
    )]
    state_dir: PathBuf,
}

/// Flags of `entitle agent run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The server.
    #[arg(long, env = "ENTITLE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The tenant's enrollment key (first run only).
    #[arg(long, env = "ENTITLE_ENROLLMENT_KEY", hide_env_values = true)]
    enrollment_key: Option<String>,
    /// The user's login name in the directory (first run only).
    #[arg(long, env = "ENTITLE_USER_NAME")]
    user_name: Option<String>,
    /// The agent's state directory (enrollment, last-known-good policy, control socket).
    #[arg(
        long,
        env = "ENTITLE_AGENT_STATE_DIR",
        default_value = "./entitle-agent"
    )]
    state_dir: PathBuf,
    /// Host name reported.
    #[arg(long, default_value = "this-device")]
    hostname: String,
    /// windows, macos, linux, ios or android.
    #[arg(long, default_value = "linux")]
    os: String,
    /// Client version reported.
    #[arg(long, default_value = "4.3.0.120")]
    client_version: String,
    /// corporate or personal.
    #[arg(long, default_value = "corporate")]
    ownership: String,
    /// A posture fact, `key=value` (true, false, a number or text); repeatable.
    #[arg(long)]
    posture: Vec<String>,
    /// Seconds the server may hold a sync (0: poll on the policy's interval only).
    #[arg(long, default_value_t = 30)]
    long_poll: u64,
    #[command(flatten)]
    pacing: PacingArgs,
    #[command(flatten)]
    ca: CaArgs,
    /// Allow a plain `http://` server other than this machine: the device's
    /// token and the enrollment key then cross the network in clear.
    #[arg(long, env = "ENTITLE_INSECURE_HTTP")]
    insecure_http: bool,
}

/// Retries and timeouts, shared by `agent run` and `fleet`.
#[derive(Args, Debug)]
pub struct PacingArgs {
    /// Milliseconds before the first retry after a failure; each further failure doubles the wait (±20 % jitter).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    backoff_initial_ms: u64,
    /// Longest wait between retries, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    backoff_max_s: u64,
    /// Seconds the server may take to answer a request, on top of a long-poll's wait.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_s: u64,
}

impl PacingArgs {
    fn timing(&self, long_poll_s: u64) -> anyhow::Result<Timing> {
        let backoff = Backoff::new(
            self.backoff_initial_ms,
            self.backoff_max_s.saturating_mul(1000),
        )
        .context("--backoff-initial-ms and --backoff-max-s")?;
        Ok(Timing {
            long_poll_s,
            backoff,
            request_timeout: Duration::from_secs(self.request_timeout_s),
        })
    }
}

fn posture(facts: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for fact in facts {
        let Some((key, value)) = fact.split_once('=') else {
            bail!("posture fact {fact:?} must be key=value")
        };
        let value = match value.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            text => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or_else(|| Value::String(text.to_owned()), Value::Number),
        };
        map.insert(key.trim().to_owned(), value);
    }
    Ok(Value::Object(map))
}

/// Runs an agent command.
#[allow(clippy::print_stdout)]
pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    let (state_dir, name) = match command {
        AgentCommand::Run(args) => return run_agent(*args).await,
        AgentCommand::Status(a) => (a.state_dir, "status"),
        AgentCommand::UpdatePolicy(a) => (a.state_dir, "update-policy"),
        AgentCommand::Login(a) => (a.state_dir, "login"),
        AgentCommand::Logout(a) => (a.state_dir, "logout"),
        AgentCommand::Reauth(a) => (a.state_dir, "reauth"),
    };
    let answer = driver::control(&state_dir, name).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    if answer.get("error").is_some() {
        bail!("the agent refused {name}");
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn run_agent(args: RunArgs) -> anyhow::Result<()> {
    let report = json!({
        "hostname": args.hostname, "os": args.os, "client_version": args.client_version,
        "ownership": args.ownership, "posture": posture(&args.posture)?,
    });
    let config = AgentConfig {
        server: args.server.trim_end_matches('/').to_owned(),
        enrollment_key: args.enrollment_key,
        user_name: args.user_name,
        report,
        timing: args.pacing.timing(args.long_poll.min(60))?,
        ca_file: args.ca.ca_file,
        insecure_http: args.insecure_http,
    };
    let (out, mut lines) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let printer = tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            let mut line = line;
            if let Some(object) = line.as_object_mut() {
                object.insert(
                    "at".into(),
                    Value::String(
                        time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default(),
                    ),
                );
            }
            println!("{line}");
        }
    });
    let result = driver::run(
        config,
        &args.state_dir,
        out,
        crate::serve::shutdown_signal(),
    )
    .await;
    let _ = printer.await;
    result.context("the agent stopped")
}

/// Flags of `entitle fleet`.
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// The server.
    #[arg(long, env = "ENTITLE_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The tenant's enrollment key.
    #[arg(long, env = "ENTITLE_ENROLLMENT_KEY", hide_env_values = true)]
    enrollment_key: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Users the devices belong to (comma-separated login names).
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Create this many users (fleet-user-N@fleet.example) through the admin API first.
    #[arg(long)]
    create_users: Option<usize>,
    /// Admin token (for --create-users and --measure).
    #[arg(long, env = "ENTITLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tenant (for --create-users and --measure).
    #[arg(long, env = "ENTITLE_TENANT")]
    tenant: Option<String>,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Seconds each long-poll is held.
    #[arg(long, default_value_t = 60)]
    long_poll: u64,
    /// Make a save that affects every device and report how fast it propagates.
    #[arg(long)]
    measure: bool,
    /// The server's process id, to read its memory and CPU time from /proc when
    /// it runs on this machine (default: from the server's /metrics).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Without --measure: seconds to keep the fleet connected.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    #[command(flatten)]
    pacing: PacingArgs,
    #[command(flatten)]
    ca: CaArgs,
    /// Allow a plain `http://` server other than this machine (enrollment
    /// keys and device tokens then cross the network in clear).
    #[arg(long, env = "ENTITLE_INSECURE_HTTP")]
    insecure_http: bool,
}

fn progress(length: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message.to_owned());
    bar
}

/// Where the fleet reads the server's memory and CPU time: its /proc entry
/// when its pid is given, else the figures the server publishes on /metrics.
struct ServerProbe<'a> {
    client: &'a reqwest::Client,
    server: &'a str,
    pid: Option<u32>,
}

impl ServerProbe<'_> {
    async fn rss_kib(&self) -> Option<u64> {
        match self.pid {
            Some(pid) => ProcessFigures::of_process(pid).map(|p| p.resident_bytes / 1024),
            None => metric(
                self.client,
                self.server,
                "entitle_process_resident_memory_bytes",
            )
            .await
            .filter(|bytes| *bytes > 0.0)
            .map(|bytes| (bytes / 1024.0) as u64),
        }
    }

    async fn cpu_seconds(&self) -> Option<f64> {
        match self.pid {
            Some(pid) => ProcessFigures::of_process(pid).map(|p| p.cpu_seconds),
            None => metric(self.client, self.server, "entitle_process_cpu_seconds")
                .await
                .filter(|seconds| *seconds > 0.0),
        }
    }
}

/// One unlabelled value from the server's /metrics.
async fn metric(client: &reqwest::Client, server: &str, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{server}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[allow(clippy::print_stdout)]
fn report(name: &str, value: String) {
    println!("{name:<48} {value}");
}

/// Runs `entitle fleet`.
pub async fn fleet(args: FleetArgs) -> anyhow::Result<()> {
    let server = args.server.trim_end_matches('/').to_owned();
    let timing = args.pacing.timing(args.long_poll.min(60))?;
    entitle_device_agent::transport::check_plain_http(&server, args.insecure_http)
        .map_err(anyhow::Error::msg)?;
    let agents = args.agents;
    let client = args
        .ca
        .client(|builder| builder.pool_max_idle_per_host(agents + 16))?;
    let admin = |path: &str| {
        format!(
            "{server}/api/v1/tenants/{}{path}",
            args.tenant.as_deref().unwrap_or_default()
        )
    };
    let mut users = args.users.clone();
    if let Some(count) = args.create_users {
        let (Some(token), Some(_)) = (&args.token, &args.tenant) else {
            bail!("--create-users needs --token and --tenant")
        };
        let bar = progress(count as u64, "users");
        for index in 0..count {
            let user_name = format!("fleet-user-{index}@fleet.example");
            let response = client
                .post(admin("/users"))
                .bearer_auth(token)
                .json(&json!({"user_name": user_name}))
                .send()
                .await?;
            if !response.status().is_success() && response.status() != reqwest::StatusCode::CONFLICT
            {
                bail!("creating {user_name} answered {}", response.status());
            }
            users.push(user_name);
            bar.inc(1);
        }
        bar.finish();
    }
    if users.is_empty() {
        bail!("say whose devices these are: --users a@x,b@x or --create-users N");
    }
    let probe = ServerProbe {
        client: &client,
        server: &server,
        pid: args.server_pid,
    };
    let baseline = probe.rss_kib().await;
    let bar = progress(args.agents as u64, "enrolling");
    let counter = bar.clone();
    let plan = FleetPlan {
        server: &server,
        enrollment_key: &args.enrollment_key,
        users: &users,
        count: args.agents,
        parallel: args.parallel,
    };
    let devices = enroll_fleet(&client, plan, timing, move || counter.inc(1)).await?;
    bar.finish();
    let rss_enrolled = probe.rss_kib().await;
    let fleet = Fleet::start(&client, devices, timing);
    let connected = wait_for_held(&client, &server, fleet.len()).await;
    report(
        "agents holding a long-poll",
        format!("{connected} of {}", fleet.len()),
    );
    if let (Some(before), Some(after)) = (rss_enrolled, probe.rss_kib().await) {
        report(
            "server RSS before enrolling",
            format!("{} MiB", baseline.unwrap_or(before) / 1024),
        );
        report(
            "server RSS, fleet enrolled, idle",
            format!("{} MiB", before / 1024),
        );
        report(
            "server RSS, every agent holding a long-poll",
            format!("{} MiB", after / 1024),
        );
        report(
            "server memory per held long-poll",
            format!(
                "{:.1} KiB",
                after.saturating_sub(before) as f64 / connected.max(1) as f64
            ),
        );
    }
    if !args.measure {
        tokio::time::sleep(Duration::from_secs(args.duration)).await;
        fleet.stop();
        return Ok(());
    }
    let Some(token) = &args.token else {
        bail!("--measure needs --token and --tenant")
    };
    // A change that concerns every device: the logout option of Internet & SaaS is part of every policy.
    let path = admin("/entitlements/internet_access");
    let current = client.get(&path).bearer_auth(token).send().await?;
    let etag = current
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut settings: Value = current.json().await?;
    settings["logout_on_enable"] =
        Value::Bool(!settings["logout_on_enable"].as_bool().unwrap_or(false));
    let cpu_before = probe.cpu_seconds().await;
    let saved_at = Instant::now();
    let saved = client
        .put(&path)
        .bearer_auth(token)
        .header("If-Match", etag)
        .json(&settings)
        .send()
        .await?;
    if !saved.status().is_success() {
        bail!("the save answered {}", saved.status());
    }
    let version: i64 = saved
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse().ok())
        .context("no ETag on the save")?;
    let shares = [0.5, 0.9, 0.99, 1.0];
    let reached = fleet
        .propagation(version, saved_at, &shares, Duration::from_secs(60))
        .await;
    let cpu_after = probe.cpu_seconds().await;
    for (share, time) in shares.iter().zip(&reached) {
        report(
            &format!("{:.0} % of agents hold the new policy", share * 100.0),
            time.map_or_else(
                || "not within 60 s".to_owned(),
                |t| format!("{:.0} ms after the save", t.as_secs_f64() * 1e3),
            ),
        );
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        report(
            "server CPU time for the propagated change",
            format!(
                "{:.2} s ({:.0} µs per agent)",
                after - before,
                (after - before) * 1e6 / fleet.len().max(1) as f64
            ),
        );
    }
    fleet.stop();
    Ok(())
}

/// Waits until the server reports `count` held long-polls (from /metrics), up to 60 s.
async fn wait_for_held(client: &reqwest::Client, server: &str, count: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = 0;
    while Instant::now() < deadline {
        if let Some(value) = metric(client, server, "entitle_held_long_polls").await {
            held = value as usize;
            if held >= count {
                return held;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    held
}
