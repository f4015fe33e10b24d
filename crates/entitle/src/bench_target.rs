//! `entitle bench --sync-target`: a real server over a demo-like tenant with
//! `--devices` devices and `--users` users seeded in bulk, for an outside load
//! generator (`bench/edge-compare.sh` runs wrk against it). It enrolls one
//! device over HTTP, writes its token, its sync body and its current ETag
//! into `--out`, and serves until killed.
//!
//! Also the helpers the other scale benchmarks share: preparing that tenant,
//! the server as a child process, and what `/proc` says about it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use entitle_server::{ProcessFigures, Server, ServerConfig};
use entitle_store::{PostgresOptions, SqlStore};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{BenchArgs, report};
use crate::demo;
use crate::serve::Database;

/// The demo tenant plus bulk-seeded users and devices, on a fresh database.
pub(super) struct Prepared {
    pub database: Database,
    /// `sqlite://…` or `postgres://…`, for `entitle serve --database-url`.
    pub url: String,
    pub tenant_id: String,
}

/// Makes a fresh database (a SQLite file in `dir`, or a fresh database on the
/// PostgreSQL server of `database_url`), seeds the demo tenant `acme`, then
/// `users` users (`user{i}@bench.test`, each in one of the demo groups) and
/// `devices` devices spread over them, reporting the seeding times.
pub(super) async fn prepare(
    database_url: Option<&str>,
    dir: &Path,
    users: i64,
    devices: i64,
) -> anyhow::Result<Prepared> {
    let (database, url) = match database_url {
        Some(url) => {
            let fresh = entitle_store::testing::fresh_postgres_database(url).await?;
            (Database::Postgres(fresh.clone()), fresh)
        }
        None => {
            let path = dir.join("entitle.db");
            (
                Database::Sqlite(path.clone()),
                format!("sqlite://{}", path.display()),
            )
        }
    };
    report(
        "database",
        match &database {
            Database::Postgres(_) => "PostgreSQL".to_owned(),
            Database::Sqlite(_) => "SQLite".to_owned(),
        },
    );
    let seed_store = database.open(true).await?;
    crate::serve::bootstrap(&*seed_store, Some(demo::SUPER_ADMIN_TOKEN)).await?;
    demo::seed(&*seed_store).await?;
    let tenant = seed_store.tenant("acme").await?;
    let groups: Vec<String> = seed_store
        .search_groups(&tenant.id, "", 100, None)
        .await?
        .items
        .into_iter()
        .map(|g| g.id)
        .collect();
    drop(seed_store);
    let store = match &database {
        Database::Sqlite(path) => SqlStore::open_sqlite(path).await?,
        Database::Postgres(url) => {
            SqlStore::connect_postgres(url, PostgresOptions::default()).await?
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    store
        .seed_bench_users(&tenant.id, 0, users, &groups, now)
        .await?;
    report(
        "users seeded (bulk, one demo group each)",
        format!("{users} in {:.1} s", started.elapsed().as_secs_f64()),
    );
    let started = Instant::now();
    store
        .seed_bench_devices(&tenant.id, users.max(1), 0, devices, now)
        .await?;
    report(
        "devices seeded (bulk)",
        format!("{devices} in {:.1} s", started.elapsed().as_secs_f64()),
    );
    store.close().await;
    Ok(Prepared {
        database,
        url,
        tenant_id: tenant.id,
    })
}

/// The real server as a child process (`entitle serve`), stopped however
/// the bench ends.
pub(super) struct ChildServer {
    child: std::process::Child,
    pub base: String,
}

impl ChildServer {
    /// Starts `entitle serve` on a free loopback port over `url`, with
    /// `extra` flags, and waits until it is ready.
    pub async fn start(url: &str, extra: &[&str], log: Option<&Path>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        };
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", url, "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting the server")?;
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_ready(&reqwest::Client::new(), &server.base).await?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> u64 {
        ProcessFigures::of_process(self.pid()).map_or(0, |p| p.resident_bytes)
    }

    /// Open file descriptors now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// User plus system CPU seconds so far.
    pub fn cpu_seconds(&self) -> f64 {
        ProcessFigures::of_process(self.pid()).map_or(0.0, |p| p.cpu_seconds)
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..3000 {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become ready")
}

/// A device enrolled over HTTP: its token, the report it syncs with, and the
/// ETag of its current policy.
pub(super) struct Enrolled {
    pub token: String,
    pub report: Value,
    pub etag: String,
}

/// The report of synthetic device `index`: a Windows, macOS or Linux laptop,
/// mostly corporate and encrypted, on a current or an old client.
pub(super) fn device_report(index: usize) -> Value {
    let os = ["windows", "macos", "linux"][index % 3];
    let version = ["4.3.0.120", "4.1.0", "3.8.9"][index % 7 % 3];
    json!({
        "hostname": format!("agent-{index}"),
        "os": os,
        "client_version": version,
        "ownership": if index.is_multiple_of(4) { "personal" } else { "corporate" },
        "posture": {"disk_encrypted": !index.is_multiple_of(5), "os_version": "14.5"},
    })
}

/// Enrolls device `index` for `user_name` with the demo enrollment key, then
/// syncs once for its ETag.
pub(super) async fn enroll(
    client: &reqwest::Client,
    base: &str,
    user_name: &str,
    index: usize,
) -> anyhow::Result<Enrolled> {
    let report = device_report(index);
    let response = client
        .post(format!("{base}/agent/v1/enroll"))
        .json(&json!({"enrollment_key": demo::ENROLLMENT_KEY, "user_name": user_name, "device": report}))
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "enrollment answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let body: Value = response.json().await?;
    let token = body["device_token"]
        .as_str()
        .context("enrollment answer without device_token")?
        .to_owned();
    let etag = sync_etag(client, base, &token, &report).await?;
    Ok(Enrolled {
        token,
        report,
        etag,
    })
}

/// One sync without `If-None-Match`: the ETag header of the answer.
pub(super) async fn sync_etag(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    report: &Value,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/agent/v1/sync"))
        .bearer_auth(token)
        .json(report)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("sync answered {}", response.status());
    }
    Ok(response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("sync answer without ETag")?
        .to_owned())
}

/// `--sync-target`: prepare, serve in this process, enroll, write the files
/// for wrk, serve until SIGINT or SIGTERM.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-sync"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let listen = args.listen.unwrap_or(([127, 0, 0, 1], 0).into());
    // The database lives in --out, so that it can be inspected afterwards; a
    // previous run's is replaced.
    for stale in ["entitle.db", "entitle.db-wal", "entitle.db-shm"] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    let prepared = prepare(
        args.database_url.as_deref(),
        &out,
        args.users as i64,
        args.devices as i64,
    )
    .await?;
    let store = prepared.database.open(false).await?;
    let listener = TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let base = format!("http://{address}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = ServerConfig {
        enrollments_per_minute: u32::MAX,
        ..ServerConfig::default()
    };
    let server = tokio::spawn(Server::new(store, config).run(listener, async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await?;
    // ada is in Platform (nested in Engineering): Private Applications on
    // her corporate encrypted macOS laptop, like the demo's ada-laptop.
    let device = enroll(&client, &base, "ada@acme.example", 1).await?;
    std::fs::write(out.join("token"), &device.token)?;
    std::fs::write(out.join("body.json"), device.report.to_string())?;
    std::fs::write(out.join("etag"), &device.etag)?;
    std::fs::write(out.join("url"), &base)?;
    // The first sync built the snapshot; the figures below are what wrk hits.
    report("listening", base.clone());
    report("files for wrk", out.display().to_string());
    report("tenant", prepared.tenant_id.clone());
    std::fs::write(out.join("ready"), "")?;
    crate::serve::shutdown_signal().await;
    let _ = stop_tx.send(());
    server.await.context("server task")??;
    Ok(())
}
