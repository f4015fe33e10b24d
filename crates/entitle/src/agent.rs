//! `entitle agent …` (a real agent on this machine) and `entitle fleet` (many
//! simulated agents, for load and propagation measurements).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use entitle_device_agent::driver::{self, AgentConfig};
use entitle_device_agent::facts::{DeviceFacts, PostureCommand};
use entitle_device_agent::fleet::{
    Fleet, FleetPlan, agents_for_open_files, enroll_fleet, loopback_sources, raise_open_file_limit,
};
use entitle_device_agent::hooks::{Hooks, ServiceHook};
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
    /// Write a systemd unit that runs the agent as a service.
    Install(crate::agent_install::InstallArgs),
}

/// Where the agent keeps its state.
#[derive(Args, Debug)]
pub struct StateDirArg {
    /// The agent's state directory (default: systemd's $STATE_DIRECTORY, else ./entitle-agent).
    #[arg(long, env = "ENTITLE_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// The state directory: the flag, else the one systemd made for the service
/// (`StateDirectory=`), else `./entitle-agent`.
fn state_dir(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| {
            // systemd lists one path per StateDirectory= entry, colon-separated.
            std::env::var("STATE_DIRECTORY")
                .ok()
                .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
                .filter(|dir| !dir.as_os_str().is_empty())
        })
        .unwrap_or_else(|| PathBuf::from("./entitle-agent"))
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
    /// The agent's state directory (enrollment, last-known-good policy, control socket;
    /// default: systemd's $STATE_DIRECTORY, else ./entitle-agent).
    #[arg(long, env = "ENTITLE_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Host name reported (default: this machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// windows, macos, linux, ios or android (default: this machine's).
    #[arg(long)]
    os: Option<String>,
    /// Client version reported.
    #[arg(long, default_value = "4.3.0.120")]
    client_version: String,
    /// corporate or personal.
    #[arg(long, default_value = "corporate")]
    ownership: String,
    /// A posture fact, `key=value` (true, false, a number or text); repeatable.
    /// It wins over a detected or command fact of the same key.
    #[arg(long)]
    posture: Vec<String>,
    /// A posture fact read by a command, `KEY=COMMAND`: its trimmed output
    /// (true, false, a number or text); re-run every long-poll wait; repeatable.
    #[arg(long)]
    posture_command: Vec<PostureCommand>,
    /// Seconds each posture command may run before it is killed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    posture_timeout_s: u64,
    /// Seconds between runs of the posture commands (default: the long-poll's wait, or 60).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86400))]
    posture_interval_s: Option<u64>,
    /// Start a service: `SERVICE=COMMAND`; the service runs once it exits 0; repeatable.
    #[arg(long)]
    on_start: Vec<ServiceHook>,
    /// Stop a service: `SERVICE=COMMAND`; repeatable.
    #[arg(long)]
    on_stop: Vec<ServiceHook>,
    /// Run when a newly entitled service signs the user out.
    #[arg(long)]
    on_logout: Option<String>,
    /// Run when a service waits for the user to re-authenticate (e.g. to show a notification).
    #[arg(long)]
    on_reauth_required: Option<String>,
    /// Seconds each hook may run before it is killed (and counts as failed).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    hook_timeout_s: u64,
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

fn posture(facts: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
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
    Ok(map)
}

/// Runs an agent command.
#[allow(clippy::print_stdout)]
pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    let (state_dir, name) = match command {
        AgentCommand::Run(args) => return run_agent(*args).await,
        AgentCommand::Install(args) => return crate::agent_install::install(args),
        AgentCommand::Status(a) => (a.state_dir, "status"),
        AgentCommand::UpdatePolicy(a) => (a.state_dir, "update-policy"),
        AgentCommand::Login(a) => (a.state_dir, "login"),
        AgentCommand::Logout(a) => (a.state_dir, "logout"),
        AgentCommand::Reauth(a) => (a.state_dir, "reauth"),
    };
    let answer = driver::control(&self::state_dir(state_dir), name).await?;
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
    let facts = DeviceFacts::detect();
    let Some(os) = args.os.clone().or(facts.os.map(str::to_owned)) else {
        bail!(
            "this machine's OS ({}) is not one the server knows; say which to report with --os windows|macos|linux|ios|android",
            std::env::consts::OS
        )
    };
    let Some(hostname) = args.hostname.clone().or(facts.hostname.clone()) else {
        bail!("this machine's host name cannot be read; give --hostname")
    };
    let mut detected = serde_json::Map::new();
    if let Some(version) = &facts.os_version {
        detected.insert("os_version".into(), Value::String(version.clone()));
    }
    if let Some(encrypted) = facts.disk_encrypted {
        detected.insert("disk_encrypted".into(), Value::Bool(encrypted));
    }
    let overrides = posture(&args.posture)?;
    // The given facts win over detected ones from the very first report.
    detected.extend(overrides.clone());
    let report = json!({
        "hostname": hostname, "os": os, "client_version": args.client_version,
        "ownership": args.ownership, "posture": detected,
    });
    let long_poll = args.long_poll.min(60);
    let mut hooks = Hooks::new(
        args.on_start,
        args.on_stop,
        Duration::from_secs(args.hook_timeout_s),
    );
    hooks.on_logout = args.on_logout;
    hooks.on_reauth_required = args.on_reauth_required;
    let config = AgentConfig {
        server: args.server.trim_end_matches('/').to_owned(),
        enrollment_key: args.enrollment_key,
        user_name: args.user_name,
        report,
        posture_commands: args.posture_command,
        posture_timeout: Duration::from_secs(args.posture_timeout_s),
        posture_interval: Duration::from_secs(
            args.posture_interval_s
                .unwrap_or(if long_poll > 0 { long_poll } else { 60 }),
        ),
        posture_overrides: overrides,
        hooks,
        timing: args.pacing.timing(long_poll)?,
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
        &state_dir(args.state_dir),
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
    /// Loopback source addresses (127.0.0.1, .2, …) to spread the connections
    /// over when the server is on this machine, each with its own ephemeral
    /// ports (about 28,000 per source and server). Default: 8 for a loopback
    /// server, else 1 (the system picks the source).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=254))]
    source_addresses: Option<u64>,
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
    // One socket per agent: raise the open-file limit as far as allowed.
    match raise_open_file_limit() {
        Ok(limit) => {
            let room = agents_for_open_files(limit);
            report(
                "open-file limit",
                format!("{limit} (room for about {room} agents)"),
            );
            if agents > room {
                tracing::warn!(
                    agents,
                    room,
                    "more agents than open files allow: run several fleet processes"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let sources = match args.source_addresses {
        Some(count) => usize::try_from(count).unwrap_or(1),
        None if is_loopback_server(&server) => 8,
        None => 1,
    };
    let per_client = agents.div_ceil(sources) + 16;
    let clients = if sources > 1 || args.source_addresses.is_some() {
        loopback_sources(sources)
            .into_iter()
            .map(|source| {
                args.ca.client(|builder| {
                    builder
                        .pool_max_idle_per_host(per_client)
                        .local_address(source)
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        vec![
            args.ca
                .client(|builder| builder.pool_max_idle_per_host(per_client))?,
        ]
    };
    let client = args
        .ca
        .client(|builder| builder.pool_max_idle_per_host(64))?;
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
    let fleet = Fleet::start_spread(&clients, devices, timing);
    report(
        "source addresses",
        format!(
            "{} ({} agents each)",
            clients.len(),
            agents.div_ceil(clients.len().max(1))
        ),
    );
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
        report_counts(&fleet);
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
    report_counts(&fleet);
    fleet.stop();
    Ok(())
}

/// Whether the server's URL names this machine (`127.x`, `localhost`, `[::1]`).
fn is_loopback_server(server: &str) -> bool {
    let host = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What the fleet's agents heard: policies, 304s, busy answers (429/503), failures.
fn report_counts(fleet: &Fleet) {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = fleet.counts();
    report(
        "answers: policies / unchanged",
        format!(
            "{} / {}",
            counts.policies.load(Relaxed),
            counts.unchanged.load(Relaxed)
        ),
    );
    report(
        "answers: busy (429/503), with Retry-After",
        format!(
            "{}, {}",
            counts.busy.load(Relaxed),
            counts.busy_with_retry_after.load(Relaxed)
        ),
    );
    report("syncs failed", counts.failed.load(Relaxed).to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_servers_are_recognised() {
        for server in [
            "http://127.0.0.1:8080",
            "http://127.0.0.9",
            "https://localhost:443/x",
            "http://[::1]:80",
        ] {
            assert!(is_loopback_server(server), "{server}");
        }
        for server in ["https://entitle.example.com", "http://10.0.0.1:8080"] {
            assert!(!is_loopback_server(server), "{server}");
        }
    }
}
