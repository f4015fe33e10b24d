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
/// its URL. Each call also drops the oldest few of the databases that earlier
/// runs left behind for over an hour ([`STALE_DROPS_PER_CALL`]).
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
    for row in oldest {
        let name: String = row.try_get("datname")?;
        let created = name
            .split('_')
            .nth(2)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(now);
        if now - created > 3600 {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
    }
    let name = format!("entitle_test_{now}_{}", uuid::Uuid::new_v4().simple());
    // The name is made here from digits and hex, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(options.database(&name).to_url_lossy().to_string())
}

/// How many stale databases one call drops at most. A test run creates about
/// a hundred and leaves them. When whichever call first found them an hour
/// old dropped them all, that one test waited for every `DROP DATABASE`: 70 ms
/// each on a quiet machine, 1.1 s beside a cargo build (measured), so 27 s to
/// two minutes in CI, seen as a slow `agent_hooks`. Two per call still drops
/// them twice as fast as runs create them.
pub const STALE_DROPS_PER_CALL: i64 = 2;
