//! Helpers for tests that run against a real PostgreSQL server.

use std::io::Write;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use crate::StoreResult;

/// The environment variable naming the PostgreSQL server tests may use.
pub const POSTGRES_URL_VAR: &str = "ENTITLE_TEST_POSTGRES_URL";

/// The server tests may use, or `None` after saying loudly (on the real stderr,
/// past the test harness's capture) that PostgreSQL tests are skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test} on PostgreSQL: set {POSTGRES_URL_VAR}=postgres://USER@HOST:PORT/DB to run it"
            );
            None
        }
    }
}

/// Creates a fresh, empty database on the server `base_url` names and returns
/// its URL. Each call also has the oldest few of the databases that earlier
/// runs left behind for over an hour dropped, without waiting for it
/// ([`STALE_DROPS_PER_CALL`]).
pub async fn fresh_postgres_database(base_url: &str) -> StoreResult<String> {
    let options = PgConnectOptions::from_str(base_url)?;
    let mut admin = options.connect().await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Oldest first: the name carries its creation time in ten digits.
    let oldest = sqlx::query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'entitle_test_%' ORDER BY datname LIMIT $1",
    )
    .bind(STALE_DROPS_PER_CALL)
    .fetch_all(&mut admin)
    .await?;
    let mut stale = Vec::new();
    for row in oldest {
        let name: String = row.try_get("datname")?;
        let created = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(now);
        if now - created > 3600 {
            stale.push(name);
        }
    }
    let name = format!("entitle_test_{now}_{}", uuid::Uuid::new_v4().simple());
    // The name is made here from digits and hex, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    if !stale.is_empty() {
        drop_in_background(options.clone(), stale);
    }
    Ok(options.database(&name).to_url_lossy().to_string())
}

/// How many stale databases one call has dropped at most. A test run creates
/// about a hundred and leaves them. `DROP DATABASE` forces a checkpoint: 70 ms
/// on a quiet machine, 1.1 s and up to several seconds beside a cargo build
/// (measured), which is what CI runs beside its tests. When the first call to
/// find them an hour old dropped them all and waited, that test took 27 s to
/// two minutes (seen in CI as a slow `agent_hooks`); waiting even for two took
/// up to 18 s. So the drops run on a thread of their own that nobody waits
/// for (a drop the server has begun completes even if the process exits), and
/// two per call still drop them twice as fast as runs create them.
pub const STALE_DROPS_PER_CALL: i64 = 2;

/// Drops `names` on a thread with its own runtime, outliving the caller's.
fn drop_in_background(options: PgConnectOptions, names: Vec<String>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(mut admin) = options.connect().await else {
                return;
            };
            for name in names {
                // A name from pg_database, quoted as an identifier.
                let quoted = name.replace('"', "\"\"");
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            }
            let _ = admin.close().await;
        });
    });
}
