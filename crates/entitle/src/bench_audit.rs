//! `entitle bench --audit-export --rows N`: seeds N audit entries through the
//! store, starts the real server as a child process on that database, and
//! streams the whole log out as CSV and as JSON, sampling the server's
//! resident memory throughout: the export must run in flat memory.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use entitle_server::ProcessFigures;
use entitle_store::{Actor, ActorKind, AuditEntry, PostgresOptions, SqlStore};
use serde_json::json;
use time::OffsetDateTime;

use super::{BenchArgs, report};
use crate::demo;
use crate::serve::Database;

/// Entries written per store call while seeding.
const SEED_BATCH: usize = 10_000;

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (database, url) = match &args.database_url {
        Some(url) => {
            let fresh = entitle_store::testing::fresh_postgres_database(url).await?;
            (Database::Postgres(fresh.clone()), fresh)
        }
        None => {
            let path = dir.path().join("entitle.db");
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
    drop(seed_store);
    let seeded = seed(&database, &tenant.id, args.rows).await?;
    report("audit entries seeded", seeded);

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = ChildServer(
        std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &url, "--log-format", "json"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the server")?,
    );
    let pid = server.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await?;

    for (format, filter) in [("csv", ""), ("json", ""), ("csv", "&action=device.")] {
        let figures = export(&client, &base, pid, format, filter).await?;
        report(
            &format!(
                "audit export {format}{}",
                if filter.is_empty() { "" } else { " (filtered)" }
            ),
            figures,
        );
    }
    for filter in [
        "action=device.delete",
        "q=needle",
        "actor=ci&action=entitlement.",
    ] {
        let started = Instant::now();
        let page = client
            .get(format!(
                "{base}/api/v1/tenants/acme/audit?limit=50&{filter}"
            ))
            .bearer_auth(demo::ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await?;
        let found = page["items"].as_array().map_or(0, Vec::len);
        report(
            &format!("audit page of 50, {filter}"),
            format!("{} ms ({found} rows)", started.elapsed().as_millis()),
        );
    }
    drop(server);
    Ok(())
}

/// The server process, stopped however the bench ends.
struct ChildServer(std::process::Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seeds `rows` entries a second apart, ending now, in the shapes the log
/// holds (device, directory, entitlement and sign-in events).
async fn seed(database: &Database, tenant_id: &str, rows: usize) -> anyhow::Result<String> {
    let store = match database {
        Database::Sqlite(path) => SqlStore::open_sqlite(path).await?,
        Database::Postgres(url) => {
            SqlStore::connect_postgres(url, PostgresOptions::default()).await?
        }
    };
    let started = Instant::now();
    let actors = [
        Actor::new(ActorKind::Account, "acc-1", "admin@acme.example"),
        Actor::new(ActorKind::ApiToken, "tok-1", "ci"),
        Actor::directory(),
        Actor::new(ActorKind::Device, "dev-1", "ada-laptop"),
    ];
    let first = OffsetDateTime::now_utc() - Duration::from_secs(rows as u64);
    let mut batch = Vec::with_capacity(SEED_BATCH);
    for i in 0..rows {
        let (action, target) = match i % 5 {
            0 => ("device.enroll", format!("host-{}", i % 5000)),
            1 => ("user.update", format!("user{}@acme.example", i % 5000)),
            2 => ("entitlement.save", "private_access".to_owned()),
            3 => ("device.delete", format!("host-{}", i % 5000)),
            _ => ("group.members", format!("Group {}", i % 300)),
        };
        batch.push(AuditEntry {
            at: first + Duration::from_secs(i as u64),
            actor: actors[i % actors.len()].clone(),
            action: action.to_owned(),
            target,
            before: Some(
                json!({"device_groups": ["11111111-2222-3333-4444-555555555555"], "n": i}),
            ),
            after: Some(
                json!({"device_groups": [], "note": if i == 7 { "the needle" } else { "routine" }}),
            ),
        });
        if batch.len() == SEED_BATCH || i + 1 == rows {
            store.append_audit_entries(tenant_id, &batch).await?;
            batch.clear();
        }
    }
    store.close().await;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "{rows} in {elapsed:.1} s ({:.0} rows/s)",
        rows as f64 / elapsed.max(1e-9)
    ))
}

async fn wait_ready(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        if let Ok(answer) = client.get(format!("{base}/readyz")).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the server did not become ready")
}

/// Streams one export, counting rows as they arrive, while a task samples
/// the server's resident memory every 10 ms.
async fn export(
    client: &reqwest::Client,
    base: &str,
    pid: u32,
    format: &str,
    filter: &str,
) -> anyhow::Result<String> {
    let rss = || ProcessFigures::of_process(pid).map_or(0, |p| p.resident_bytes);
    let before = rss();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(ProcessFigures::of_process(pid).map_or(0, |p| p.resident_bytes));
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    });
    let started = Instant::now();
    let mut response = client
        .get(format!(
            "{base}/api/v1/tenants/acme/audit/export?format={format}{filter}"
        ))
        .bearer_auth(demo::ADMIN_TOKEN)
        .send()
        .await?
        .error_for_status()?;
    let first_byte = started.elapsed();
    let (mut bytes, mut newlines) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let peak = sampler.await?;
    let after = rss();
    // CSV: one line per row plus the header; JSON: one line per row.
    let rows = if format == "csv" {
        newlines.saturating_sub(1)
    } else {
        newlines
    };
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(format!(
        "{rows} rows, {:.1} MiB in {elapsed:.1} s: {:.0} rows/s, first byte {} ms; server RSS {:.1} MiB before, peak {:.1} MiB during (+{:.1}), {:.1} MiB after",
        mib(bytes as u64),
        rows as f64 / elapsed.max(1e-9),
        first_byte.as_millis(),
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after),
    ))
}
