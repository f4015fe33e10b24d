//! `entitle bench`: measures the decision function and the sync endpoint on
//! this machine, against a real server on a loopback port and a fresh SQLite file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use entitle_core::{
    ActiveGrant, ClientVersion, DeviceGroupId, GroupId, NoNames, Settings, Subject, evaluate,
    rollout_bucket, service,
};
use entitle_server::{Server, ServerConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::demo;
use crate::serve::Database;

#[path = "bench_audit.rs"]
mod audit_export;
#[path = "bench_scale.rs"]
mod scale;
#[path = "bench_soak.rs"]
mod soak;
#[path = "bench_storm.rs"]
mod storm;
#[path = "bench_target.rs"]
mod target;

/// Flags of `entitle bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Seconds each HTTP measurement runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Devices enrolled for the sync measurements.
    #[arg(long, default_value_t = 200)]
    devices: usize,
    /// Measure against a fresh database on this PostgreSQL server instead of SQLite.
    #[arg(long, env = "ENTITLE_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Server nodes sharing the database (PostgreSQL only).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Measure SCIM provisioning instead: users, groups and memberships over HTTP.
    #[arg(long)]
    scim: bool,
    /// Users provisioned by `--scim`.
    #[arg(long, default_value_t = 100_000)]
    users: usize,
    /// Groups provisioned by `--scim`.
    #[arg(long, default_value_t = 10_000)]
    groups: usize,
    /// Memberships provisioned by `--scim`, as PATCH batches of `--batch` members.
    #[arg(long, default_value_t = 1_000_000)]
    memberships: usize,
    /// Members added per PATCH.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent SCIM clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Measure one page of the device list instead, filtered by service
    /// state, with this many devices enrolled (seeded in bulk).
    #[arg(long, default_value_t = 0)]
    device_list: i64,
    /// Decisions evaluated for the evaluate() measurement.
    #[arg(long, default_value_t = 2_000_000)]
    decisions: u64,
    /// Measure the audit export instead: seed `--rows` audit entries through
    /// the store, then stream them as CSV and JSON over HTTP.
    #[arg(long)]
    audit_export: bool,
    /// Audit entries seeded by `--audit-export`.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Serve the sync measurements over HTTPS with this certificate (its
    /// names must include `localhost`); needs --tls-key and --ca-file.
    #[arg(long, requires_all = ["tls_key", "ca_file"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    #[command(flatten)]
    ca: crate::tls_args::CaArgs,
    /// Measure overload instead: a reconnect storm of simulated agents after
    /// a restart of a real `entitle serve` child, then ten times the
    /// sustainable sync rate.
    #[arg(long)]
    storm: bool,
    /// Agents in the storm (default: as many as the open-file limit allows).
    #[arg(long)]
    storm_agents: Option<usize>,
    /// Devices of the second tenant, whose syncs must not starve.
    #[arg(long, default_value_t = 20)]
    other_devices: usize,
    /// Loopback source addresses the storm's connections are spread over.
    #[arg(long, default_value_t = 8)]
    source_addresses: usize,
    /// A flag passed to the `entitle serve` child (repeatable), e.g.
    /// `--serve-arg=--max-syncs-in-flight=4`.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Seconds of open-loop load at --overload-factor × the sustainable rate.
    #[arg(long, default_value_t = 20)]
    overload_seconds: u64,
    /// The open-loop load as a multiple of the sustainable rate.
    #[arg(long, default_value_t = 10)]
    overload_factor: u32,
    /// Serve a sync target for an outside load generator (wrk): a fresh
    /// SQLite tenant with `--devices` devices and `--users` users seeded in
    /// bulk, one device enrolled over HTTP whose token, sync body and ETag
    /// are written to `--out`; serves until killed.
    #[arg(long)]
    sync_target: bool,
    /// Address `--sync-target` listens on (loopback, any free port by default).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory of `--sync-target`'s files and `--soak`'s CSV.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Measure a tenant of `--devices` devices and `--users` users:
    /// enrollment rate over HTTP, server memory, snapshot rebuild after a
    /// SCIM burst, the entitlement preview and a filtered device page.
    #[arg(long)]
    scale: bool,
    /// Devices `--scale` enrolls over HTTP (the rest are seeded in bulk).
    #[arg(long, default_value_t = 100_000)]
    http_enrollments: usize,
    /// SCIM writes of `--scale`'s burst.
    #[arg(long, default_value_t = 1_000)]
    scim_burst: usize,
    /// Run a steady mixed load for `--minutes` and sample the server every 10 s.
    #[arg(long)]
    soak: bool,
    /// Length of `--soak`.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Agents holding long-polls during `--soak`.
    #[arg(long, default_value_t = 2_000)]
    agents: usize,
    /// Clients doing plain (not held) syncs during `--soak`, each at most
    /// every 20 ms; 0 leaves them out, to tell what they add.
    #[arg(long, default_value_t = 4)]
    soak_sync_clients: usize,
}

#[allow(clippy::print_stdout)]
fn report(name: &str, value: String) {
    println!("{name:<44} {value}");
}

/// Runs every measurement and prints one line each.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.scim {
        return bench_scim(&args).await;
    }
    if args.audit_export {
        return audit_export::run(&args).await;
    }
    if args.storm {
        return storm::run(&args).await;
    }
    if args.sync_target {
        return target::run(&args).await;
    }
    if args.scale {
        return scale::run(&args).await;
    }
    if args.soak {
        return soak::run(&args).await;
    }
    if args.device_list > 0 {
        return bench_device_list(&args).await;
    }
    report(
        "machine",
        format!(
            "{} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    );
    bench_evaluate(args.decisions);
    bench_http(&args).await
}

fn bench_evaluate(decisions: u64) {
    let zpa = service("private_access").map_err(|e| e.to_string());
    let Ok(zpa) = zpa else { return };
    let user_groups: BTreeSet<GroupId> = (0..8).map(|i| GroupId(format!("group-{i}"))).collect();
    let device_groups: BTreeSet<DeviceGroupId> =
        (0..3).map(|i| DeviceGroupId(format!("dg-{i}"))).collect();
    let settings = Settings {
        enabled_by_default: false,
        user_groups: [GroupId("group-7".into()), GroupId("other".into())].into(),
        device_groups: [DeviceGroupId("dg-2".into())].into(),
        ..Settings::default()
    };
    let subject = Subject {
        user_name: "ada@acme.example",
        user_id: "3f1c7a52-0d55-4c8e-9a57-6c2b8e1f4d10",
        device_id: "9b0e4f6a-2c71-4d3b-8f5e-1a7d2c9e6b42",
        tenant_id: "5e2d8c1b-7a94-4f06-b3c8-0d1e6f2a9b57",
        user_active: true,
        user_groups: &user_groups,
        device_groups: &device_groups,
        client_version: ClientVersion::new([4, 3, 0, 120], 4),
        pending_approval: false,
        grants: &[],
    };
    time_decisions(
        "evaluate() per decision (group match)",
        decisions,
        zpa,
        &settings,
        &subject,
    );

    // Issue 15: two excluded user groups and one device group the subject is
    // not in (so every list is searched), a 50 % rollout (so the bucket is
    // hashed), and 10 active grants, none of them for this service and device
    // (so every grant is looked at).
    let with_rules = Settings {
        exclude_user_groups: [GroupId("contractors".into()), GroupId("interns".into())].into(),
        exclude_device_groups: [DeviceGroupId("kiosks".into())].into(),
        rollout_percent: 50,
        ..settings
    };
    let grants: Vec<ActiveGrant> = (0..10)
        .map(|i| ActiveGrant {
            id: format!("grant-{i}"),
            service_id: if i % 2 == 0 {
                "internet_access"
            } else {
                "private_access"
            }
            .to_owned(),
            device_id: Some(format!("other-device-{i}")),
            ends_at: "2026-12-01T18:00:00Z".to_owned(),
            overrides_exclusions: false,
        })
        .collect();
    // One device inside the rollout (the full group explanation is built)
    // and one held back.
    let device = |inside: bool| {
        (0..)
            .map(|i| format!("9b0e4f6a-2c71-4d3b-8f5e-{i:012}"))
            .find(|d| (rollout_bucket(subject.tenant_id, zpa.id, d) < 50) == inside)
            .unwrap_or_default()
    };
    for (inside, label) in [
        (
            true,
            "evaluate() per decision (exclusions, 10 grants, inside a 50 % rollout)",
        ),
        (
            false,
            "evaluate() per decision (exclusions, 10 grants, held back by a 50 % rollout)",
        ),
    ] {
        let device_id = device(inside);
        let busy = Subject {
            grants: &grants,
            device_id: &device_id,
            ..subject.clone()
        };
        time_decisions(label, decisions, zpa, &with_rules, &busy);
    }
}

fn time_decisions(
    label: &str,
    decisions: u64,
    service: &entitle_core::ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
) {
    let started = Instant::now();
    let mut enabled = 0u64;
    for _ in 0..decisions {
        let decision = evaluate(
            service,
            std::hint::black_box(settings),
            std::hint::black_box(subject),
            &NoNames,
        );
        enabled += u64::from(decision.enabled);
    }
    let elapsed = started.elapsed();
    std::hint::black_box(enabled);
    report(
        label,
        format!(
            "{:.0} ns  ({} decisions in {:.2} s)",
            elapsed.as_nanos() as f64 / decisions as f64,
            decisions,
            elapsed.as_secs_f64()
        ),
    );
}

async fn bench_http(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = match &args.database_url {
        Some(url) => {
            let fresh = entitle_store::testing::fresh_postgres_database(url).await?;
            Database::Postgres(fresh)
        }
        None if args.nodes > 1 => {
            bail!("several nodes share a PostgreSQL database: add --database-url postgres://…")
        }
        None => Database::Sqlite(dir.path().join("entitle.db")),
    };
    report(
        "database",
        match &database {
            Database::Postgres(_) => format!("PostgreSQL, {} node(s)", args.nodes),
            Database::Sqlite(_) => "SQLite, 1 node".to_owned(),
        },
    );
    let seed_store = database.open(true).await?;
    crate::serve::bootstrap(&*seed_store, Some(demo::SUPER_ADMIN_TOKEN)).await?;
    demo::seed(&*seed_store).await?;
    drop(seed_store);

    let mut bases = Vec::new();
    let mut stops = Vec::new();
    let mut servers = Vec::new();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            entitle_server::ServerTls::load(cert, key).context("--tls-cert and --tls-key")?,
        )),
        _ => None,
    };
    report(
        "transport",
        if tls.is_some() {
            "HTTPS (rustls, TLS 1.3)"
        } else {
            "plain HTTP"
        }
        .to_owned(),
    );
    for _ in 0..args.nodes.max(1) {
        let store = database.open(false).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        // Over TLS the name must be one the certificate lists.
        bases.push(match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        // The whole simulated fleet enrolls from one loopback address.
        let config = ServerConfig {
            enrollments_per_minute: u32::MAX,
            ..ServerConfig::default()
        };
        let mut server = Server::new(store, config);
        if let Some(tls) = &tls {
            server = server.with_tls(tls.clone());
        }
        servers.push(tokio::spawn(server.run(listener, async {
            let _ = stop_rx.await;
        })));
    }
    let concurrency = args.concurrency;
    let client = args
        .ca
        .client(|builder| builder.pool_max_idle_per_host(concurrency * 2))?;

    let devices = enroll(&client, &bases[0], args.devices).await?;
    report("devices enrolled", devices.len().to_string());

    let fresh = measure(&client, &bases, &devices, args, false).await?;
    report("sync, policy answered (200)", fresh);
    let unchanged = measure(&client, &bases, &devices, args, true).await?;
    report("sync, unchanged policy (304)", unchanged);
    let wake = wake_latency(&client, &bases, &devices).await?;
    report("save on node 1 to wake of held long-polls", wake);

    for stop in stops {
        let _ = stop.send(());
    }
    for server in servers {
        server.await.context("server task")??;
    }
    Ok(())
}

struct BenchDevice {
    token: String,
    etag: String,
    report: Value,
}

async fn enroll(
    client: &reqwest::Client,
    base: &str,
    count: usize,
) -> anyhow::Result<Vec<Arc<BenchDevice>>> {
    let mut devices = Vec::with_capacity(count);
    for index in 0..count {
        let os = ["windows", "macos", "linux", "ios"][index % 4];
        let version = ["4.3.0.120", "1.2.3", "3.8.9", "2.2.0"][index % 7 % 4];
        let report = json!({
            "hostname": format!("bench-{index}"),
            "os": os,
            "client_version": version,
            "ownership": if index % 3 == 0 { "personal" } else { "corporate" },
            "posture": {"disk_encrypted": index % 5 != 0, "os_version": "14.5"},
        });
        let user = ["ada", "hedy", "frances", "peter", "guido", "ursula"][index % 6];
        let response = client
            .post(format!("{base}/agent/v1/enroll"))
            .json(&json!({"enrollment_key": demo::ENROLLMENT_KEY, "user_name": format!("{user}@acme.example"), "device": report}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("enrollment failed with {}", response.status());
        }
        let body: Value = response.json().await?;
        devices.push(Arc::new(BenchDevice {
            token: body["device_token"].as_str().unwrap_or_default().to_owned(),
            etag: body["policy"]["etag"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            report,
        }));
    }
    Ok(devices)
}

async fn measure(
    client: &reqwest::Client,
    bases: &[String],
    devices: &[Arc<BenchDevice>],
    args: &BenchArgs,
    conditional: bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let client = client.clone();
        let url = format!("{}/agent/v1/sync", bases[worker % bases.len()]);
        let devices: Vec<Arc<BenchDevice>> = devices.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut index = worker;
            while Instant::now() < deadline {
                let device = &devices[index % devices.len()];
                index += 7;
                let mut request = client
                    .post(&url)
                    .bearer_auth(&device.token)
                    .json(&device.report);
                if conditional {
                    request = request.header("If-None-Match", &device.etag);
                }
                let started = Instant::now();
                match request.send().await {
                    Ok(response)
                        if response.status().is_success()
                            || response.status() == reqwest::StatusCode::NOT_MODIFIED =>
                    {
                        let _ = response.bytes().await;
                        latencies.push(started.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (mut part, failed) = task.await?;
        latencies.append(&mut part);
        errors += failed;
    }
    latencies.sort();
    let count = latencies.len();
    if count == 0 {
        bail!("no sync succeeded ({errors} errors)");
    }
    let percentile = |p: f64| latencies[((count as f64 * p) as usize).min(count - 1)];
    Ok(format!(
        "{:.0} req/s  (p50 {:.2} ms, p99 {:.2} ms, {} clients, {} errors)",
        count as f64 / args.seconds as f64,
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        args.concurrency,
        errors
    ))
}

/// Holds a long-poll per device, toggles a setting that changes all of them, and
/// reports when the last one answered.
async fn wake_latency(
    client: &reqwest::Client,
    bases: &[String],
    devices: &[Arc<BenchDevice>],
) -> anyhow::Result<String> {
    // Current etags first, so that every held request waits.
    let mut held = Vec::new();
    for device in devices {
        let response = client
            .post(format!("{}/agent/v1/sync", bases[0]))
            .bearer_auth(&device.token)
            .json(&device.report)
            .send()
            .await?;
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        held.push((device.clone(), etag));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (held_index, (device, etag)) in held.into_iter().enumerate() {
        let client = client.clone();
        // Devices hold their long-polls on every node; the save goes to the first.
        let url = format!("{}/agent/v1/sync?wait=30", bases[held_index % bases.len()]);
        let tx = tx.clone();
        tokio::spawn(async move {
            let response = client
                .post(&url)
                .bearer_auth(&device.token)
                .header("If-None-Match", etag)
                .json(&device.report)
                .send()
                .await;
            let _ = tx.send((
                Instant::now(),
                response.map(|r| r.status().as_u16()).unwrap_or(0),
            ));
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settings_url = format!(
        "{}/api/v1/tenants/acme/entitlements/internet_access",
        bases[0]
    );
    let saved_at = Instant::now();
    let response = client
        .put(&settings_url)
        .bearer_auth(demo::ADMIN_TOKEN)
        .json(&json!({"enabled_by_default": true, "user_groups": [], "device_groups": [], "logout_on_enable": true}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("save failed with {}", response.status());
    }
    let mut woken = Vec::new();
    while let Some((at, status)) = rx.recv().await {
        if status == 200 {
            woken.push(at.saturating_duration_since(saved_at));
        }
    }
    woken.sort();
    let Some(last) = woken.last() else {
        bail!("no long-poll woke")
    };
    Ok(format!(
        "{} of {} woken; p50 {:.1} ms, last {:.1} ms after the save was sent",
        woken.len(),
        devices.len(),
        woken[woken.len() / 2].as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e3
    ))
}

/// Provisions users, groups and memberships over SCIM with concurrent clients,
/// as an identity provider's first sync would, and reports each phase.
async fn bench_scim(args: &BenchArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(crate::serve::LogFormat::Text);
    let dir = tempfile::tempdir()?;
    let database = match &args.database_url {
        Some(url) => {
            Database::Postgres(entitle_store::testing::fresh_postgres_database(url).await?)
        }
        None => Database::Sqlite(dir.path().join("entitle.db")),
    };
    let store = database.open(true).await?;
    let scim_token = "bench-scim-token";
    store
        .create_tenant(
            entitle_store::NewTenant {
                name: "bench".into(),
                created_at: time::OffsetDateTime::now_utc(),
                enrollment_key_hash: entitle_store::secrets::hash_secret("bench-enroll"),
                scim_token_hash: entitle_store::secrets::hash_secret(scim_token),
            },
            &entitle_store::Actor::system(),
        )
        .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/scim/v2/bench", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(store, ServerConfig::default()).run(listener, async {
            let _ = stop_rx.await;
        }),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    report(
        "database",
        if args.database_url.is_some() {
            "PostgreSQL".to_owned()
        } else {
            "SQLite".to_owned()
        },
    );
    report("clients", args.clients.to_string());
    report("slowest SCIM filter or PATCH path parse", slowest_parse());
    let started = Instant::now();
    let mut requests = 0usize;

    let users_url = format!("{base}/Users");
    let users = scim_phase(&client, args.clients, args.users, move |index| {
        (reqwest::Method::POST, users_url.clone(), json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("user{index}@bench.example"), "externalId": format!("ext-{index}"),
            "name": {"givenName": "User", "familyName": format!("{index}")}, "active": true,
            "emails": [{"value": format!("user{index}@bench.example"), "type": "work", "primary": true}],
        }))
    }, scim_token).await?;
    report("users created", users.summary(args.users));
    requests += args.users;

    let groups_url = format!("{base}/Groups");
    let groups = scim_phase(&client, args.clients, args.groups, move |index| {
        (reqwest::Method::POST, groups_url.clone(), json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": format!("Group {index}"), "externalId": format!("g-{index}"),
        }))
    }, scim_token).await?;
    report("groups created", groups.summary(args.groups));
    requests += args.groups;

    let batches = args.memberships.div_ceil(args.batch.max(1));
    let (user_ids, group_ids) = (Arc::new(users.ids), Arc::new(groups.ids));
    let patches = {
        let (user_ids, group_ids, batch, base) = (
            user_ids.clone(),
            group_ids.clone(),
            args.batch.max(1),
            base.clone(),
        );
        scim_phase(
            &client,
            args.clients,
            batches,
            move |index| {
                let group = &group_ids[index % group_ids.len()];
                let members: Vec<Value> = (0..batch)
                .map(|offset| json!({"value": user_ids[(index * batch + offset) % user_ids.len()]}))
                .collect();
                (
                    reqwest::Method::PATCH,
                    format!("{base}/Groups/{group}"),
                    json!({
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                        "Operations": [{"op": "Add", "path": "members", "value": members}],
                    }),
                )
            },
            scim_token,
        )
        .await?
    };
    report(
        &format!("memberships added ({} per PATCH)", args.batch),
        patches.summary(batches),
    );
    requests += batches;

    let elapsed = started.elapsed();
    report(
        "total",
        format!(
            "{requests} requests in {:.1} s, {:.0} req/s",
            elapsed.as_secs_f64(),
            requests as f64 / elapsed.as_secs_f64()
        ),
    );
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    Ok(())
}

struct Phase {
    ids: Vec<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Phase {
    fn summary(&self, count: usize) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let p99 = sorted
            .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default();
        format!(
            "{count} in {:.1} s, {:.0} req/s, p99 {:.1} ms",
            self.elapsed.as_secs_f64(),
            count as f64 / self.elapsed.as_secs_f64(),
            p99.as_secs_f64() * 1e3
        )
    }
}

async fn scim_phase(
    client: &reqwest::Client,
    clients: usize,
    count: usize,
    request: impl Fn(usize) -> (reqwest::Method, String, Value) + Send + Sync + 'static,
    token: &str,
) -> anyhow::Result<Phase> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let request = Arc::new(request);
    let mut workers = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, next, request, token) = (
            client.clone(),
            next.clone(),
            request.clone(),
            token.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut done: Vec<(usize, String, Duration)> = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, anyhow::Error>(done);
                }
                let (method, url, body) = request(index);
                let sent = Instant::now();
                let response = client
                    .request(method, url)
                    .bearer_auth(&token)
                    .header("content-type", "application/scim+json")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
                    Value::Null
                } else {
                    response.json().await.unwrap_or(Value::Null)
                };
                if !status.is_success() {
                    bail!("request {index} answered {status}: {body}");
                }
                done.push((
                    index,
                    body["id"].as_str().unwrap_or_default().to_owned(),
                    sent.elapsed(),
                ));
            }
        }));
    }
    let mut results = Vec::with_capacity(count);
    for worker in workers {
        results.extend(worker.await??);
    }
    results.sort_by_key(|(index, _, _)| *index);
    Ok(Phase {
        ids: results.iter().map(|(_, id, _)| id.clone()).collect(),
        latencies: results.iter().map(|(_, _, latency)| *latency).collect(),
        elapsed: started.elapsed(),
    })
}

/// The slowest parse among hostile and random filters and PATCH paths: the
/// parser must stay fast (well under 100 ms) whatever a client sends.
fn slowest_parse() -> String {
    let mut inputs: Vec<String> = vec![
        "(".repeat(4000),
        format!("{}userName pr{}", "(".repeat(49), ")".repeat(49)),
        (0..1000)
            .map(|i| format!("userName eq \"u{i}\""))
            .collect::<Vec<_>>()
            .join(" and "),
        (0..1000)
            .map(|i| format!("emails[type eq \"t{i}\"]"))
            .collect::<Vec<_>>()
            .join(" or "),
        format!("displayName eq \"{}\"", "\\u00e9".repeat(600)),
        "not (".repeat(800),
        "a".repeat(4096),
        format!("members[value eq \"{}\"]", "x".repeat(4000)),
    ];
    // A fixed linear congruential sequence: the same random inputs on every run.
    let alphabet: Vec<char> = "abcUN.:[]()\"\\ eqorandtpr0123456789".chars().collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20_000 {
        let length = (seed % 200) as usize;
        let text: String = (0..length)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                alphabet[(seed >> 33) as usize % alphabet.len()]
            })
            .collect();
        inputs.push(text);
    }
    let mut slowest = Duration::ZERO;
    for input in &inputs {
        let started = Instant::now();
        let _ = std::hint::black_box(entitle_scim_protocol::Filter::parse(input));
        let patch = json!({"Operations": [{"op": "remove", "path": input}]});
        let _ = std::hint::black_box(entitle_scim_protocol::PatchRequest::from_json(&patch));
        slowest = slowest.max(started.elapsed());
    }
    format!(
        "{:.2} ms over {} inputs",
        slowest.as_secs_f64() * 1e3,
        inputs.len()
    )
}

/// One page (50 rows) of `GET /devices` filtered by service state, over
/// `--device-list` devices: Digital Experience is on for the Windows third of
/// the fleet, so "on" keeps one device in three and "off" two in three.
async fn bench_device_list(args: &BenchArgs) -> anyhow::Result<()> {
    use entitle_store::{
        Actor, ConfigStore, DeviceStore, DirectoryStore, NewTenant, NewUser, Role, SaveRequest,
        SqlStore, TenantStore, TokenGrant, secrets,
    };
    let dir = tempfile::tempdir()?;
    let store = match &args.database_url {
        Some(url) => {
            let fresh = entitle_store::testing::fresh_postgres_database(url).await?;
            SqlStore::connect_postgres(&fresh, entitle_store::PostgresOptions::default()).await?
        }
        None => SqlStore::open_sqlite(&dir.path().join("entitle.db")).await?,
    };
    let store = Arc::new(store);
    let actor = Actor::system();
    let now = time::OffsetDateTime::now_utc();
    let tenant = store
        .create_tenant(
            NewTenant {
                name: "bench".into(),
                created_at: now,
                enrollment_key_hash: secrets::hash_secret("bench-enroll"),
                scim_token_hash: secrets::hash_secret("bench-scim"),
            },
            &actor,
        )
        .await?;
    let grant = TokenGrant {
        role: Role::Admin,
        tenant_id: Some(tenant.id.clone()),
        name: "bench".into(),
    };
    store
        .create_api_token(&secrets::hash_secret("bench-admin"), &grant, &actor)
        .await?;
    for i in 0..1000 {
        let user = NewUser {
            user_name: format!("user{i}@bench.test"),
            display_name: None,
            groups: Vec::new(),
        };
        store.create_user(&tenant.id, user, &actor).await?;
    }
    let rule = entitle_core::DeviceGroup {
        id: DeviceGroupId(String::new()),
        name: "Windows".into(),
        os: [entitle_core::Os::Windows].into(),
        ownership: BTreeSet::new(),
        posture: Vec::new(),
    };
    let windows = store.create_device_group(&tenant.id, rule, &actor).await?;
    let zdx = service("digital_experience").map_err(|e| anyhow::anyhow!(e.to_string()))?;
    store
        .save_settings(
            &tenant.id,
            SaveRequest {
                service: zdx,
                expected_version: None,
                settings: Settings {
                    enabled_by_default: false,
                    user_groups: BTreeSet::new(),
                    device_groups: [windows.id.clone()].into(),
                    ..Settings::default()
                },
                actor: actor.clone(),
                action: "entitlement.save",
                check_default_rule: false,
                restored_from: None,
            },
        )
        .await?;
    let seeding = Instant::now();
    store
        .seed_bench_devices(&tenant.id, 1000, 0, args.device_list, now)
        .await?;
    report(
        "devices seeded",
        format!(
            "{} in {:.1} s",
            args.device_list,
            seeding.elapsed().as_secs_f64()
        ),
    );

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::new(store, ServerConfig::default()).run(listener, async {
            let _ = stop_rx.await;
        }),
    );
    let client = reqwest::Client::new();
    let list = format!("{base}/api/v1/tenants/bench/devices?limit=50");
    // The first request builds the tenant's snapshot; it is not measured.
    client
        .get(&list)
        .bearer_auth("bench-admin")
        .send()
        .await?
        .error_for_status()?;
    for (name, query) in [
        ("ZDX on", "&service=digital_experience&state=on"),
        ("ZDX off", "&service=digital_experience&state=off"),
        ("state on (any service)", "&state=on"),
        ("no filter (first page counts the total)", ""),
    ] {
        let mut times = Vec::new();
        let mut cursor: Option<String> = None;
        // Twenty pages in a row, each from the previous page's cursor.
        for _ in 0..20 {
            let url = match &cursor {
                Some(c) => format!("{list}{query}&cursor={c}"),
                None => format!("{list}{query}"),
            };
            let started = Instant::now();
            let page: Value = client
                .get(&url)
                .bearer_auth("bench-admin")
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            times.push(started.elapsed());
            anyhow::ensure!(
                page["items"].as_array().map(Vec::len) == Some(50),
                "a page of 50 devices: {page}"
            );
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        times.sort_unstable();
        report(
            &format!("devices page of 50: {name}"),
            format!(
                "median {:.1} ms, max {:.1} ms (20 consecutive pages)",
                times[times.len() / 2].as_secs_f64() * 1000.0,
                times[times.len() - 1].as_secs_f64() * 1000.0
            ),
        );
    }
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    Ok(())
}
