//! The one place where SQLite and PostgreSQL differ.
//!
//! Every store operation is written once, in `sql.rs` and `sql_scim.rs`, as SQL
//! that both back ends accept (`$1` placeholders, `RETURNING`, `ON CONFLICT`)
//! run through this module. What differs lives here and nowhere else:
//!
//! - **connecting and migrating**: one file with WAL and `FULL` sync, or a pool
//!   on a shared server; each back end keeps its own migrations, the truth of
//!   its schema;
//! - **column types**: ids are `text` on SQLite and `uuid` on PostgreSQL, times
//!   milliseconds since the epoch or `timestamptz`, JSON `text` or `jsonb`.
//!   Queries bind and read them through [`Query::id`], [`Query::time`],
//!   [`Query::json`] and [`Row::id`], [`Row::time`], [`Row::json`], which
//!   convert to the back end's type;
//! - **a set of ids in one parameter** ([`Query::ids`], [`id_set`]): a JSON
//!   array read with `json_each`, or a `uuid[]`;
//! - **the write lock**: SQLite allows one writer, so writes queue on an
//!   in-process lock and begin `IMMEDIATE` (a second process on the file waits
//!   for the busy timeout instead of failing when a read turns into a write);
//!   PostgreSQL serialises writes per tenant by locking the tenant's row
//!   ([`Conn::lock_tenant`]), so saves from any node are race-free;
//! - **the change feed**: PostgreSQL announces committed changes to the other
//!   nodes with `NOTIFY` ([`Conn::announce`], [`Db::changes`]); one SQLite
//!   node has nobody to tell.
//!
//! Why not generic code over `sqlx::Database`: every function would repeat a
//! where-clause per bound type (Rust does not imply `i64: Encode<DB>` from a
//! trait bound), and sqlx's `Any` driver erases `uuid`, `timestamptz` and
//! `jsonb`. A query's parameters are collected as [`Param`]s and bound at
//! execution to the back end the connection belongs to, so a query cannot be
//! bound for one back end and run on the other.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow,
    PgTypeInfo, PgValueFormat, PgValueRef, Postgres,
};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{
    Arguments, AssertSqlSafe, ColumnIndex, Decode, Encode, PgConnection, Row as _,
    SqliteConnection, Transaction, Type,
};
use time::OffsetDateTime;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use uuid::Uuid;

use crate::{Change, ChangeFeed, Device, StoreError, StoreResult};

/// The channel on which PostgreSQL announces committed changes, with the tenant id.
const CHANGES_CHANNEL: &str = "entitle_changes";

/// How a PostgreSQL node connects.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Apply pending migrations before use.
    pub migrate: bool,
    /// Connections in this node's pool.
    pub max_connections: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            migrate: true,
            max_connections: 16,
        }
    }
}

/// The database of either back end.
pub(crate) enum Db {
    Sqlite {
        pool: SqlitePool,
        /// Held by every write, so that writers queue here instead of failing
        /// with `SQLITE_BUSY`.
        write_lock: Mutex<()>,
    },
    Postgres {
        pool: PgPool,
    },
}

impl Db {
    /// Opens (creating if needed) a SQLite file; `migrate` applies pending migrations.
    pub(crate) async fn open_sqlite(path: &Path, migrate: bool) -> StoreResult<Self> {
        // FULL synchronous in WAL mode makes every acknowledged commit durable
        // across power loss, which a save's 200 promises.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let db = Db::Sqlite {
            pool,
            write_lock: Mutex::new(()),
        };
        if migrate {
            db.migrate().await?;
        }
        Ok(db)
    }

    /// Connects to a PostgreSQL server and, if asked, applies migrations.
    pub(crate) async fn connect_postgres(
        url: &str,
        options: &PostgresOptions,
    ) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        let db = Db::Postgres { pool };
        if options.migrate {
            db.migrate().await?;
        }
        Ok(db)
    }

    /// Applies pending migrations. On PostgreSQL they take an advisory lock, so
    /// nodes starting together do not race.
    pub(crate) async fn migrate(&self) -> StoreResult<()> {
        match self {
            Db::Sqlite { pool, .. } => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Db::Postgres { pool } => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite { pool, .. } => pool.close().await,
            Db::Postgres { pool } => pool.close().await,
        }
    }

    /// SQLite's `PRAGMA integrity_check` (`ok` when healthy). PostgreSQL keeps
    /// its own consistency and has nothing to check here.
    pub(crate) async fn integrity_check(&self) -> StoreResult<String> {
        match self {
            Db::Sqlite { pool, .. } => {
                let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(pool)
                    .await?;
                Ok(rows.join("; "))
            }
            Db::Postgres { .. } => Ok("ok".to_owned()),
        }
    }

    /// A pooled connection for reads that take several queries.
    pub(crate) async fn read(&self) -> StoreResult<Conn<'_>> {
        Ok(Conn {
            inner: match self {
                Db::Sqlite { pool, .. } => Inner::SqlitePooled(pool.acquire().await?),
                Db::Postgres { pool } => Inner::PostgresPooled(pool.acquire().await?),
            },
            _write_guard: None,
        })
    }

    /// Begins a write transaction. Writes that touch a tenant also call
    /// [`Conn::lock_tenant`].
    pub(crate) async fn write(&self) -> StoreResult<Conn<'_>> {
        Ok(match self {
            Db::Sqlite { pool, write_lock } => {
                let guard = write_lock.lock().await;
                Conn {
                    inner: Inner::SqliteTx(pool.begin_with("BEGIN IMMEDIATE").await?),
                    _write_guard: Some(guard),
                }
            }
            Db::Postgres { pool } => Conn {
                inner: Inner::PostgresTx(pool.begin().await?),
                _write_guard: None,
            },
        })
    }

    /// The SQL of a JSON column's top-level text field (both names are
    /// static SQL, never input).
    pub(crate) fn json_text(&self, column: &'static str, key: &'static str) -> String {
        match self {
            Db::Sqlite { .. } => format!("json_extract({column}, '$.{key}')"),
            Db::Postgres { .. } => format!("({column} ->> '{key}')"),
        }
    }

    /// The SQL of a JSON array (as text) of `expr` over a group of rows
    /// (`expr` is static SQL, never input).
    pub(crate) fn json_array_agg(&self, expr: &str) -> String {
        match self {
            Db::Sqlite { .. } => format!("json_group_array({expr})"),
            // json_agg of no rows is NULL, json_group_array's is `[]`.
            Db::Postgres { .. } => format!("coalesce(json_agg({expr})::text, '[]')"),
        }
    }

    /// [`Conn::id_set`], for a statement run on the pool.
    pub(crate) fn id_set(&self, n: u8) -> String {
        id_set_sql(matches!(self, Db::Postgres { .. }), n)
    }

    /// [`Conn::for_update`], for a statement run on the pool.
    pub(crate) fn for_update(&self) -> &'static str {
        for_update_sql(matches!(self, Db::Postgres { .. }))
    }

    /// The SQL of a JSON array of these columns of one row (static SQL,
    /// never input).
    pub(crate) fn json_tuple(&self, columns: &[&'static str]) -> String {
        let columns = columns.join(", ");
        match self {
            Db::Sqlite { .. } => format!("json_array({columns})"),
            Db::Postgres { .. } => format!("json_build_array({columns})"),
        }
    }

    /// For the bench's bulk seeding: the SQL of a new row id, and the type of
    /// a JSON column.
    pub(crate) fn bench_sql(&self) -> (&'static str, &'static str) {
        match self {
            Db::Sqlite { .. } => ("lower(hex(randomblob(16)))", "TEXT"),
            Db::Postgres { .. } => ("gen_random_uuid()", "jsonb"),
        }
    }

    /// Begins a read transaction, one consistent view of the data; it waits
    /// for no writer.
    pub(crate) async fn read_transaction(&self) -> StoreResult<Conn<'_>> {
        Ok(Conn {
            inner: match self {
                Db::Sqlite { pool, .. } => Inner::SqliteTx(pool.begin().await?),
                Db::Postgres { pool } => Inner::PostgresTx(pool.begin().await?),
            },
            _write_guard: None,
        })
    }

    /// Begins a write transaction on the tenant's data, serialised with every
    /// other write of the tenant.
    pub(crate) async fn write_tenant(&self, tenant_id: &str) -> StoreResult<Conn<'_>> {
        let mut conn = self.write().await?;
        conn.lock_tenant(tenant_id).await?;
        Ok(conn)
    }

    /// Waits for the turn to write one statement outside a transaction: SQLite's
    /// writers queue on the process's lock; a PostgreSQL statement needs none.
    pub(crate) async fn single_write(&self) -> Option<MutexGuard<'_, ()>> {
        match self {
            Db::Sqlite { write_lock, .. } => Some(write_lock.lock().await),
            Db::Postgres { .. } => None,
        }
    }

    /// The changes other nodes commit; `None` where there are no other nodes.
    pub(crate) async fn changes(&self) -> StoreResult<Option<ChangeFeed>> {
        let Db::Postgres { pool } = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        let (sender, feed) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(notification)) => parse_change(notification.payload()),
                    // The connection was lost and re-established: notifications
                    // sent meanwhile are gone, so every snapshot must be checked.
                    Ok(None) => Change::Resync,
                    Err(error) => {
                        tracing::warn!(%error, "lost the change feed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Change::Resync
                    }
                };
                if sender.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(feed))
    }

    /// The current time at the precision the back end stores, so that a value
    /// returned by a write equals the one read back later.
    pub(crate) fn now(&self) -> OffsetDateTime {
        now_at_precision(matches!(self, Db::Postgres { .. }))
    }
}

fn now_at_precision(postgres: bool) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let nanos = now.nanosecond();
    // PostgreSQL keeps microseconds; SQLite's columns hold milliseconds.
    let unit = if postgres { 1_000 } else { 1_000_000 };
    now.replace_nanosecond(nanos - nanos % unit).unwrap_or(now)
}

/// Parses a notification payload, `<tenant id> <data version> [<device id>
/// [<user id>]]`.
fn parse_change(payload: &str) -> Change {
    let mut parts = payload.split(' ');
    match (parts.next(), parts.next().and_then(|v| v.parse().ok())) {
        (Some(tenant_id), Some(data_version)) => Change::Tenant {
            tenant_id: tenant_id.to_owned(),
            data_version,
            device_id: parts.next().map(str::to_owned),
            user_id: parts.next().map(str::to_owned),
        },
        _ => Change::Resync,
    }
}

/// A connection: pooled for reads, or a write transaction holding the back
/// end's write lock. Dropped without [`Conn::commit`], a transaction rolls back.
pub(crate) struct Conn<'db> {
    inner: Inner,
    _write_guard: Option<MutexGuard<'db, ()>>,
}

enum Inner {
    SqlitePooled(PoolConnection<Sqlite>),
    SqliteTx(Transaction<'static, Sqlite>),
    PostgresPooled(PoolConnection<Postgres>),
    PostgresTx(Transaction<'static, Postgres>),
}

impl Conn<'_> {
    /// Commits a write transaction (a read has nothing to commit).
    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self.inner {
            Inner::SqliteTx(tx) => tx.commit().await?,
            Inner::PostgresTx(tx) => tx.commit().await?,
            Inner::SqlitePooled(_) | Inner::PostgresPooled(_) => {}
        }
        Ok(())
    }

    /// The current time at the precision the back end stores.
    pub(crate) fn now(&self) -> OffsetDateTime {
        now_at_precision(self.is_postgres())
    }

    fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::PostgresTx(_) | Inner::PostgresPooled(_))
    }

    /// Serialises this transaction with every other write of the tenant, and
    /// fails with "tenant not found" when it does not exist. SQLite's writes
    /// already queue on one lock.
    pub(crate) async fn lock_tenant(&mut self, tenant_id: &str) -> StoreResult<()> {
        let sql = if self.is_postgres() {
            "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE"
        } else {
            "SELECT 1 FROM tenants WHERE id = $1"
        };
        query(sql).id(tenant_id).find(self, "tenant").await?;
        Ok(())
    }

    /// The clause that locks the rows a `SELECT` reads until commit:
    /// PostgreSQL's `FOR UPDATE`; on SQLite the writer already holds the one
    /// write lock.
    pub(crate) fn for_update(&self) -> &'static str {
        for_update_sql(self.is_postgres())
    }

    /// Tells every node, at commit, that the tenant's data changed.
    pub(crate) async fn announce(
        &mut self,
        tenant_id: &str,
        data_version: i64,
        device: Option<&Device>,
    ) -> StoreResult<()> {
        if self.is_postgres() {
            // Ids hold no spaces: uuids on PostgreSQL.
            let payload = match device {
                Some(device) => format!(
                    "{tenant_id} {data_version} {} {}",
                    device.id, device.user_id
                ),
                None => format!("{tenant_id} {data_version}"),
            };
            query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(payload)
                .execute(self)
                .await?;
        }
        Ok(())
    }

    /// The SQL of a set of ids bound with [`Query::ids`] as parameter `$n`, to
    /// use as `column IN <id_set>`.
    pub(crate) fn id_set(&self, n: u8) -> String {
        id_set_sql(self.is_postgres(), n)
    }
}

/// Where a query runs: a pool (one statement) or a connection.
pub(crate) enum On<'c> {
    SqlitePool(&'c SqlitePool),
    Sqlite(&'c mut SqliteConnection),
    PostgresPool(&'c PgPool),
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c Db> for On<'c> {
    fn from(db: &'c Db) -> Self {
        match db {
            Db::Sqlite { pool, .. } => On::SqlitePool(pool),
            Db::Postgres { pool } => On::PostgresPool(pool),
        }
    }
}

impl<'c> From<&'c mut Conn<'_>> for On<'c> {
    fn from(conn: &'c mut Conn<'_>) -> Self {
        match &mut conn.inner {
            Inner::SqlitePooled(c) => On::Sqlite(c),
            Inner::SqliteTx(tx) => On::Sqlite(tx),
            Inner::PostgresPooled(c) => On::Postgres(c),
            Inner::PostgresTx(tx) => On::Postgres(tx),
        }
    }
}

/// A query parameter, typed by what it means so that each back end can bind it
/// as the column's type.
#[derive(Clone)]
pub(crate) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Id(Option<String>),
    Ids(Vec<String>),
    Time(Option<OffsetDateTime>),
    Json(Option<String>),
}

impl From<&Param> for Param {
    fn from(value: &Param) -> Self {
        value.clone()
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(Some(value.to_owned()))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(Some(value))
    }
}

impl From<&String> for Param {
    fn from(value: &String) -> Self {
        Param::Text(Some(value.clone()))
    }
}

impl From<Option<&str>> for Param {
    fn from(value: Option<&str>) -> Self {
        Param::Text(value.map(str::to_owned))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Param::Text(value)
    }
}

impl From<&Option<String>> for Param {
    fn from(value: &Option<String>) -> Self {
        Param::Text(value.clone())
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl From<u32> for Param {
    fn from(value: u32) -> Self {
        Param::Int(Some(i64::from(value)))
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Self {
        Param::Bool(Some(value))
    }
}

impl From<Option<bool>> for Param {
    fn from(value: Option<bool>) -> Self {
        Param::Bool(value)
    }
}

/// Room for the parameters of most queries, so that binding them does not
/// grow the list several times on the sync path.
const PARAMS_USUALLY: usize = 8;

fn for_update_sql(postgres: bool) -> &'static str {
    if postgres { " FOR UPDATE" } else { "" }
}

fn id_set_sql(postgres: bool, n: u8) -> String {
    if postgres {
        format!("(SELECT unnest(${n}))")
    } else {
        format!("(SELECT value FROM json_each(${n}))")
    }
}

/// Starts a query from static SQL.
pub(crate) fn query(sql: &'static str) -> Query {
    Query {
        sql: Sql::Static(sql),
        params: Vec::with_capacity(PARAMS_USUALLY),
    }
}

/// Starts a query from SQL assembled at run time from static pieces only
/// (never from input: values are always parameters).
pub(crate) fn query_built(sql: String) -> Query {
    Query {
        sql: Sql::Built(sql),
        params: Vec::with_capacity(PARAMS_USUALLY),
    }
}

enum Sql {
    Static(&'static str),
    Built(String),
}

/// A query and its parameters, bound when it runs.
pub(crate) struct Query {
    sql: Sql,
    params: Vec<Param>,
}

impl Query {
    /// Binds a plain value (text, integer, boolean, or none of them).
    pub(crate) fn bind(mut self, value: impl Into<Param>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Binds a row id.
    pub(crate) fn id(mut self, id: &str) -> Self {
        self.params.push(Param::Id(Some(id.to_owned())));
        self
    }

    /// Binds a row id or NULL.
    pub(crate) fn opt_id(mut self, id: Option<&str>) -> Self {
        self.params.push(Param::Id(id.map(str::to_owned)));
        self
    }

    /// Binds a set of ids, used in the SQL through [`Conn::id_set`].
    pub(crate) fn ids(mut self, ids: &[String]) -> Self {
        self.params.push(Param::Ids(ids.to_vec()));
        self
    }

    /// Binds a time.
    pub(crate) fn time(mut self, at: OffsetDateTime) -> Self {
        self.params.push(Param::Time(Some(at)));
        self
    }

    /// Binds a time or NULL.
    pub(crate) fn opt_time(mut self, at: Option<OffsetDateTime>) -> Self {
        self.params.push(Param::Time(at));
        self
    }

    /// Binds a JSON document, given as its text.
    pub(crate) fn json(mut self, text: impl Into<String>) -> Self {
        self.params.push(Param::Json(Some(text.into())));
        self
    }

    /// Binds a JSON document or NULL.
    pub(crate) fn opt_json(mut self, text: Option<String>) -> Self {
        self.params.push(Param::Json(text));
        self
    }

    pub(crate) async fn fetch_one<'c>(self, on: impl Into<On<'c>>) -> StoreResult<Row> {
        Ok(match on.into() {
            On::SqlitePool(pool) => Row::Sqlite(self.sqlite()?.fetch_one(pool).await?),
            On::Sqlite(conn) => Row::Sqlite(self.sqlite()?.fetch_one(conn).await?),
            On::PostgresPool(pool) => Row::Postgres(self.postgres()?.fetch_one(pool).await?),
            On::Postgres(conn) => Row::Postgres(self.postgres()?.fetch_one(conn).await?),
        })
    }

    pub(crate) async fn fetch_optional<'c>(
        self,
        on: impl Into<On<'c>>,
    ) -> StoreResult<Option<Row>> {
        Ok(match on.into() {
            On::SqlitePool(pool) => self.sqlite()?.fetch_optional(pool).await?.map(Row::Sqlite),
            On::Sqlite(conn) => self.sqlite()?.fetch_optional(conn).await?.map(Row::Sqlite),
            On::PostgresPool(pool) => {
                (self.postgres()?.fetch_optional(pool).await?).map(Row::Postgres)
            }
            On::Postgres(conn) => (self.postgres()?.fetch_optional(conn).await?).map(Row::Postgres),
        })
    }

    pub(crate) async fn fetch_all<'c>(self, on: impl Into<On<'c>>) -> StoreResult<Vec<Row>> {
        Ok(match on.into() {
            On::SqlitePool(pool) => rows(self.sqlite()?.fetch_all(pool).await?, Row::Sqlite),
            On::Sqlite(conn) => rows(self.sqlite()?.fetch_all(conn).await?, Row::Sqlite),
            On::PostgresPool(pool) => rows(self.postgres()?.fetch_all(pool).await?, Row::Postgres),
            On::Postgres(conn) => rows(self.postgres()?.fetch_all(conn).await?, Row::Postgres),
        })
    }

    /// Every row in order, each handed to `each` as it arrives: a read of a
    /// million rows holds one decoded row at a time, not all of them.
    pub(crate) async fn fetch_each<'c>(
        self,
        on: impl Into<On<'c>>,
        mut each: impl FnMut(Row) -> StoreResult<()>,
    ) -> StoreResult<()> {
        match on.into() {
            On::SqlitePool(pool) => drain(self.sqlite()?.fetch(pool), Row::Sqlite, &mut each).await,
            On::Sqlite(conn) => drain(self.sqlite()?.fetch(conn), Row::Sqlite, &mut each).await,
            On::PostgresPool(pool) => {
                drain(self.postgres()?.fetch(pool), Row::Postgres, &mut each).await
            }
            On::Postgres(conn) => {
                drain(self.postgres()?.fetch(conn), Row::Postgres, &mut each).await
            }
        }
    }

    /// The one row the query selects, or `NotFound { what }` when there is none.
    pub(crate) async fn find<'c>(
        self,
        on: impl Into<On<'c>>,
        what: &'static str,
    ) -> StoreResult<Row> {
        self.fetch_one(on)
            .await
            .map_err(crate::sql::not_found(what))
    }

    /// Every row, each read by `read`.
    pub(crate) async fn fetch_all_as<'c, T>(
        self,
        on: impl Into<On<'c>>,
        read: impl Fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.fetch_all(on).await?.iter().map(read).collect()
    }

    /// The first column of the one row.
    pub(crate) async fn fetch_scalar<'c, T: Value>(self, on: impl Into<On<'c>>) -> StoreResult<T> {
        self.fetch_one(on).await?.get(0)
    }

    /// The first column of the row, if there is one.
    pub(crate) async fn fetch_optional_scalar<'c, T: Value>(
        self,
        on: impl Into<On<'c>>,
    ) -> StoreResult<Option<T>> {
        self.fetch_optional(on)
            .await?
            .map(|row| row.get(0))
            .transpose()
    }

    /// The first column of every row, read as ids.
    pub(crate) async fn fetch_ids<'c>(self, on: impl Into<On<'c>>) -> StoreResult<Vec<String>> {
        self.fetch_all(on)
            .await?
            .iter()
            .map(|row| row.id(0))
            .collect()
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute<'c>(self, on: impl Into<On<'c>>) -> StoreResult<u64> {
        Ok(match on.into() {
            On::SqlitePool(pool) => self.sqlite()?.execute(pool).await?.rows_affected(),
            On::Sqlite(conn) => self.sqlite()?.execute(conn).await?.rows_affected(),
            On::PostgresPool(pool) => self.postgres()?.execute(pool).await?.rows_affected(),
            On::Postgres(conn) => self.postgres()?.execute(conn).await?.rows_affected(),
        })
    }

    fn sqlite(self) -> Result<sqlx::query::Query<'static, Sqlite, SqliteArguments>, sqlx::Error> {
        let mut arguments = SqliteArguments::default();
        for param in self.params {
            let added = match param {
                Param::Text(value) | Param::Id(value) | Param::Json(value) => arguments.add(value),
                Param::Int(value) => arguments.add(value),
                Param::Bool(value) => arguments.add(value),
                Param::Ids(ids) => arguments.add(serde_json::Value::from(ids).to_string()),
                Param::Time(at) => arguments.add(at.map(millis)),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
        Ok(match self.sql {
            Sql::Static(sql) => sqlx::query_with(sql, arguments),
            Sql::Built(sql) => sqlx::query_with(AssertSqlSafe(sql), arguments),
        })
    }

    fn postgres(self) -> Result<sqlx::query::Query<'static, Postgres, PgArguments>, sqlx::Error> {
        let mut arguments = PgArguments::default();
        for param in self.params {
            let added = match param {
                Param::Text(value) => arguments.add(value),
                Param::Int(value) => arguments.add(value),
                Param::Bool(value) => arguments.add(value),
                Param::Id(value) => arguments.add(value.as_deref().map(uuid_or_nil)),
                Param::Ids(ids) => {
                    arguments.add(ids.iter().map(|id| uuid_or_nil(id)).collect::<Vec<_>>())
                }
                Param::Time(at) => arguments.add(at),
                Param::Json(value) => arguments.add(value.map(Jsonb)),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
        Ok(match self.sql {
            Sql::Static(sql) => sqlx::query_with(sql, arguments),
            Sql::Built(sql) => sqlx::query_with(AssertSqlSafe(sql), arguments),
        })
    }
}

/// Hands every row of a driver's stream to `each`, wrapped, as it arrives.
async fn drain<R>(
    mut rows: impl futures_util::Stream<Item = Result<R, sqlx::Error>> + Unpin,
    wrap: fn(R) -> Row,
    each: &mut impl FnMut(Row) -> StoreResult<()>,
) -> StoreResult<()> {
    use futures_util::TryStreamExt;
    while let Some(row) = rows.try_next().await? {
        each(wrap(row))?;
    }
    Ok(())
}

fn rows<R>(rows: Vec<R>, wrap: fn(R) -> Row) -> Vec<Row> {
    rows.into_iter().map(wrap).collect()
}

/// Ids arrive as text from URLs and bodies; one that is not a UUID cannot name
/// a row, so it becomes the nil UUID, which no row has, and lookups find nothing.
fn uuid_or_nil(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or(Uuid::nil())
}

fn millis(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(value: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000_000)
        .map_err(|e| StoreError::Corrupt(format!("timestamp {value}: {e}")))
}

/// A row of either back end.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A column, by name or position.
pub(crate) trait Column: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + Copy {}

impl Column for &str {}
impl Column for usize {}

/// A plain Rust type both back ends read the same way. Ids, times and JSON
/// are not: they have their own getters on [`Row`].
pub(crate) trait Value:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl Value for String {}
impl Value for i64 {}
impl Value for bool {}
impl Value for Option<String> {}
impl Value for Option<i64> {}
impl Value for Option<bool> {}

impl Row {
    /// A plain value (text, integer, boolean, or an `Option` of them).
    pub(crate) fn get<T: Value>(&self, column: impl Column) -> StoreResult<T> {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get(column)?,
        })
    }

    /// A row id, as text.
    pub(crate) fn id(&self, column: impl Column) -> StoreResult<String> {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get::<Uuid, _>(column)?.to_string(),
        })
    }

    /// A row id or NULL.
    pub(crate) fn opt_id(&self, column: impl Column) -> StoreResult<Option<String>> {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row
                .try_get::<Option<Uuid>, _>(column)?
                .map(|id| id.to_string()),
        })
    }

    pub(crate) fn time(&self, column: impl Column) -> StoreResult<OffsetDateTime> {
        match self {
            Row::Sqlite(row) => from_millis(row.try_get(column)?),
            Row::Postgres(row) => Ok(row.try_get(column)?),
        }
    }

    pub(crate) fn opt_time(&self, column: impl Column) -> StoreResult<Option<OffsetDateTime>> {
        match self {
            Row::Sqlite(row) => row
                .try_get::<Option<i64>, _>(column)?
                .map(from_millis)
                .transpose(),
            Row::Postgres(row) => Ok(row.try_get(column)?),
        }
    }

    /// A JSON document, as its text.
    pub(crate) fn json(&self, column: impl Column) -> StoreResult<String> {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get::<Jsonb, _>(column)?.0,
        })
    }

    /// A JSON document or NULL.
    pub(crate) fn opt_json(&self, column: impl Column) -> StoreResult<Option<String>> {
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get::<Option<Jsonb>, _>(column)?.map(|j| j.0),
        })
    }
}

/// A `jsonb` value as its text. Written by hand because sqlx's `Json<T>` goes
/// through a Rust value, and the store keeps JSON as text that its codecs
/// parse once.
struct Jsonb(String);

/// `jsonb`'s type OID (`pg_type.oid`, the same on every server).
const JSONB_OID: u32 = 3802;

/// `jsonb`'s binary form: a version byte, then the document's text.
const JSONB_VERSION: u8 = 1;

impl Type<Postgres> for Jsonb {
    fn type_info() -> PgTypeInfo {
        // By OID, which PostgreSQL fixes for its built-in types: by name, each
        // new connection would look the type up before its first write.
        PgTypeInfo::with_oid(Oid(JSONB_OID))
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        use sqlx::TypeInfo;
        ty.name().eq_ignore_ascii_case("jsonb") || ty.name().eq_ignore_ascii_case("json")
    }
}

impl Encode<'_, Postgres> for Jsonb {
    fn encode_by_ref(
        &self,
        buf: &mut PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, BoxDynError> {
        buf.push(JSONB_VERSION);
        buf.extend_from_slice(self.0.as_bytes());
        Ok(sqlx::encode::IsNull::No)
    }
}

impl Decode<'_, Postgres> for Jsonb {
    fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
        let is_jsonb = {
            use sqlx::{TypeInfo, ValueRef};
            value.type_info().name().eq_ignore_ascii_case("jsonb")
        };
        let bytes = value.as_bytes()?;
        let text = match (value.format(), bytes.split_first()) {
            (PgValueFormat::Binary, Some((&JSONB_VERSION, rest))) if is_jsonb => rest,
            (PgValueFormat::Binary, Some((version, _))) if is_jsonb => {
                return Err(format!("unknown jsonb version {version}").into());
            }
            _ => bytes,
        };
        Ok(Jsonb(std::str::from_utf8(text)?.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_its_device_and_user_when_it_has_them() {
        let tenant = |device: Option<&str>, user: Option<&str>| Change::Tenant {
            tenant_id: "t".to_owned(),
            data_version: 7,
            device_id: device.map(str::to_owned),
            user_id: user.map(str::to_owned),
        };
        assert_eq!(parse_change("t 7"), tenant(None, None));
        assert_eq!(parse_change("t 7 d u"), tenant(Some("d"), Some("u")));
        // From a node of an earlier release, which named the device alone.
        assert_eq!(parse_change("t 7 d"), tenant(Some("d"), None));
        assert_eq!(parse_change("t seven"), Change::Resync);
        assert_eq!(parse_change(""), Change::Resync);
    }
}
