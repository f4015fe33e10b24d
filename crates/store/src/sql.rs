//! The store's one implementation, for SQLite and PostgreSQL alike.
//!
//! Every operation is written once here (and in `sql_scim.rs`) against
//! `dialect.rs`, the one place where the back ends differ: column types, the
//! write lock, the change feed.
//!
//! Writes that touch a tenant serialise with the tenant's other writes
//! (`Db::write_tenant`), so the `If-Match` check, the next config version and
//! the audit entry are race-free, whichever node took the write. Every write
//! that can change a decision bumps the tenant's `data_version` in its
//! transaction and announces it (`Conn::announce`), which other PostgreSQL
//! nodes turn into a snapshot refresh and long-poll wake-ups.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use entitle_core::{
    DeviceGroup, DeviceGroupId, DeviceReport, GroupGraph, GroupId, SERVICES, ServiceDef, Settings,
    validate_save,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::codec::{
    attested_from_columns, device_group_from_row, id_list_from_json, id_list_to_json,
    ownership_from_column, report_from_json, report_to_json, rule_to_json,
    service_states_from_json, service_states_to_json, settings_from_json, settings_to_json,
};
use crate::dialect::{Conn, Db, PostgresOptions, Query, Row, query, query_built};
use crate::{
    Account, AccountChange, AccountStore, Actor, ActorKind, ApiToken, Applied, AppliedSync,
    Attested, AttestedBy, AuditEntry, AuditFilter, AuthenticatedDevice, ChangeFeed, ConfigStore,
    ConfigVersion, Device, DeviceChange, DeviceChanges, DeviceFilter, DeviceIds, DeviceMove,
    DeviceSort, DeviceStore, DirectoryCounts, DirectoryStore, DirectoryUser, EnrollmentGrant,
    EnrollmentKey, Group, LAST_USED_RESOLUTION, NewAccount, NewEnrollmentKey, NewTenant, NewUser,
    Page, Role, SaveRequest, Saved, Session, StoreError, StoreResult, StoredSettings, Tenant,
    TenantData, TenantStore, TenantVersions, TokenGrant, User, device_change_action,
    device_trust_json, enrollment_key_audit,
};

#[path = "sql_scim.rs"]
mod scim;

#[path = "sql_audit.rs"]
mod audit_log;

#[path = "sql_accounts.rs"]
mod accounts;
#[path = "bench_seed.rs"]
mod bench_seed;
#[path = "sql_directory_views.rs"]
mod directory_views;
#[path = "sql_grants.rs"]
mod grants;
#[path = "sql_scheduled.rs"]
mod scheduled;
#[path = "sql_scim_setup.rs"]
mod scim_setup;
#[path = "test_seed.rs"]
mod test_seed;

/// Storage in one SQLite file, or in a PostgreSQL database shared by every node.
pub struct SqlStore {
    db: Db,
}

impl SqlStore {
    /// Records a token's use at most once per [`LAST_USED_RESOLUTION`], so that
    /// ordinary calls write nothing. `table` is one of this crate's token tables.
    async fn touch_last_used(
        &self,
        table: &'static str,
        token_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let _turn = self.db.single_write().await;
        query_built(format!(
            "UPDATE {table} SET last_used_at = $2
             WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)"
        ))
        .id(token_id)
        .time(at)
        .time(at - LAST_USED_RESOLUTION)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

impl SqlStore {
    /// Opens (creating if needed) a SQLite database file and applies migrations.
    pub async fn open_sqlite(path: &Path) -> StoreResult<Self> {
        Self::open_sqlite_with(path, true).await
    }

    /// Opens a SQLite database file; `migrate` applies pending migrations first.
    pub async fn open_sqlite_with(path: &Path, migrate: bool) -> StoreResult<Self> {
        Ok(Self {
            db: Db::open_sqlite(path, migrate).await?,
        })
    }

    /// Connects to a PostgreSQL database and, if asked, applies migrations.
    /// Migrations take an advisory lock, so nodes starting together do not race.
    pub async fn connect_postgres(url: &str, options: PostgresOptions) -> StoreResult<Self> {
        Ok(Self {
            db: Db::connect_postgres(url, &options).await?,
        })
    }

    /// For `entitle bench` only: enrolls `count` synthetic devices (numbered
    /// from `first`, spread over the users `user0@bench.test` to
    /// `user{users - 1}@bench.test`, which must exist; a third each Windows,
    /// macOS and Linux) with one statement per 100,000, then refreshes the
    /// planner's statistics. No audit entries and no data-version bump: this
    /// is seeding a measurement, not an administrator's change.
    pub async fn seed_bench_devices(
        &self,
        tenant_id: &str,
        users: i64,
        first: i64,
        count: i64,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let (new_id, json_type) = self.db.bench_sql();
        let sql = format!(
            "WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $3)
             INSERT INTO devices (id, tenant_id, user_id, token_hash, hostname_key, report_json,
                                  enrolled_at, last_sync_at, pending_approval, revision)
             SELECT {new_id}, $1,
                    (SELECT id FROM users WHERE tenant_id = $1 AND deleted_at IS NULL
                        AND user_name_key = 'user' || (n.i % $5) || '@bench.test'),
                    'bench-token-' || n.i, 'bench-' || n.i,
                    CAST('{{\"hostname\":\"bench-' || n.i || '\",\"os\":\"'
                         || CASE n.i % 3 WHEN 0 THEN 'windows' WHEN 1 THEN 'macos' ELSE 'linux' END
                         || '\",\"client_version\":\"4.' || (n.i % 5) || '.0\",\"ownership\":\"'
                         || CASE WHEN n.i % 4 = 0 THEN 'personal' ELSE 'corporate' END
                         || '\",\"posture\":{{}}}}' AS {json_type}),
                    $4, $4, FALSE, $6
             FROM n"
        );
        let mut start = first;
        let end = first + count;
        while start < end {
            let stop = (start + 100_000).min(end);
            let mut tx = self.db.write().await?;
            let revision = next_device_revision(&mut tx, tenant_id).await?;
            query_built(sql.clone())
                .id(tenant_id)
                .bind(start)
                .bind(stop)
                .time(at)
                .bind(users)
                .bind(revision)
                .execute(&mut tx)
                .await?;
            tx.commit().await?;
            start = stop;
        }
        query("ANALYZE").execute(&self.db).await?;
        Ok(())
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        self.db.migrate().await
    }

    /// SQLite's `PRAGMA integrity_check`: a healthy database answers `ok`.
    pub async fn integrity_check(&self) -> StoreResult<String> {
        self.db.integrity_check().await
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn duplicate(error: StoreError, what: &'static str, name: &str) -> StoreError {
    match &error {
        StoreError::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
            StoreError::Duplicate {
                what,
                name: name.to_owned(),
            }
        }
        _ => error,
    }
}

pub(crate) fn not_found(what: &'static str) -> impl FnOnce(StoreError) -> StoreError {
    move |error| match error {
        StoreError::Database(sqlx::Error::RowNotFound) => StoreError::NotFound { what },
        other => other,
    }
}

fn tenant_from_row(row: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.id("id")?,
        name: row.get("name")?,
        created_at: row.time("created_at")?,
        config_version: row.get("config_version")?,
        data_version: row.get("data_version")?,
        last_scim_request_at: row.opt_time("last_scim_request_at")?,
        device_approval: row.get("device_approval")?,
    })
}

/// `SELECT` of a tenant's columns followed by the given clause, as one static string.
macro_rules! tenant_select {
    ($clause:literal) => {
        concat!(
            "SELECT id, name, created_at, config_version, data_version, last_scim_request_at, device_approval FROM tenants ",
            $clause
        )
    };
}

/// An audit entry, written in the transaction of the change it records so
/// that both land or neither does.
struct Audit<'a> {
    tenant_id: Option<&'a str>,
    actor: &'a Actor,
    action: &'a str,
    target: &'a str,
    before: Option<&'a Value>,
    after: Option<&'a Value>,
}

impl<'a> Audit<'a> {
    fn new(tenant_id: Option<&'a str>, actor: &'a Actor, action: &'a str, target: &'a str) -> Self {
        Self {
            tenant_id,
            actor,
            action,
            target,
            before: None,
            after: None,
        }
    }

    /// What the change replaced.
    fn before(mut self, before: impl Into<Option<&'a Value>>) -> Self {
        self.before = before.into();
        self
    }

    /// What the change left.
    fn after(mut self, after: impl Into<Option<&'a Value>>) -> Self {
        self.after = after.into();
        self
    }

    /// Writes the entry and commits the change.
    async fn commit(self, mut tx: Conn<'_>) -> StoreResult<()> {
        self.write(&mut tx).await?;
        tx.commit().await
    }

    /// Commits a change that decisions depend on: with the entry, the
    /// tenant's data version moves on, so that every node rebuilds.
    async fn commit_bumping(self, mut tx: Conn<'_>, tenant_id: &str) -> StoreResult<()> {
        bump_data_version(&mut tx, tenant_id, None).await?;
        self.commit(tx).await
    }

    /// Like [`Audit::commit_bumping`], for a change to one device, which every
    /// node answers at once if it holds the device's long-poll.
    async fn commit_bumping_device(
        self,
        mut tx: Conn<'_>,
        tenant_id: &str,
        device: &Device,
    ) -> StoreResult<()> {
        bump_data_version(&mut tx, tenant_id, Some(device)).await?;
        self.commit(tx).await
    }

    async fn write(self, conn: &mut Conn<'_>) -> StoreResult<()> {
        query(
            "INSERT INTO audit_log (tenant_id, at, actor, actor_kind, actor_id, action, target, before_json, after_json)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .opt_id(self.tenant_id)
        .time(conn.now())
        .bind(&self.actor.name)
        .bind(self.actor.kind.as_str())
        .bind(&self.actor.id)
        .bind(self.action)
        .bind(self.target)
        .opt_json(self.before.map(Value::to_string))
        .opt_json(self.after.map(Value::to_string))
        .execute(conn)
        .await?;
        Ok(())
    }
}

async fn tenant_row(conn: &mut Conn<'_>, tenant_id: &str) -> StoreResult<Tenant> {
    let row = query(tenant_select!("WHERE id = $1"))
        .id(tenant_id)
        .find(conn, "tenant")
        .await?;
    tenant_from_row(&row)
}

async fn load_settings(
    conn: &mut Conn<'_>,
    tenant: &Tenant,
    service: &ServiceDef,
) -> StoreResult<StoredSettings> {
    let row = query(
        "SELECT enabled_by_default, user_groups_json, device_groups_json, logout_on_enable,
                exclude_user_groups_json, exclude_device_groups_json, rollout_percent, version
         FROM settings WHERE tenant_id = $1 AND service = $2",
    )
    .id(&tenant.id)
    .bind(service.id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        // A service added to the table after the tenant was created starts at its defaults.
        return Ok(StoredSettings {
            settings: Settings::new_tenant_default(service, tenant.created_at.unix_timestamp()),
            version: 0,
        });
    };
    settings_from_row(&row)
}

fn settings_from_row(row: &Row) -> StoreResult<StoredSettings> {
    let user_groups = id_list_from_json(&row.json("user_groups_json")?)?;
    let device_groups = id_list_from_json(&row.json("device_groups_json")?)?;
    let exclude_user_groups = id_list_from_json(&row.json("exclude_user_groups_json")?)?;
    let exclude_device_groups = id_list_from_json(&row.json("exclude_device_groups_json")?)?;
    let rollout_percent: i64 = row.get("rollout_percent")?;
    Ok(StoredSettings {
        settings: Settings {
            enabled_by_default: row.get("enabled_by_default")?,
            user_groups: user_groups.into_iter().map(GroupId).collect(),
            device_groups: device_groups.into_iter().map(DeviceGroupId).collect(),
            logout_on_enable: row.get("logout_on_enable")?,
            exclude_user_groups: exclude_user_groups.into_iter().map(GroupId).collect(),
            exclude_device_groups: exclude_device_groups
                .into_iter()
                .map(DeviceGroupId)
                .collect(),
            // The column's CHECK keeps it in 1..=100; anything else reads as
            // the smallest rollout rather than everyone.
            rollout_percent: u8::try_from(rollout_percent.clamp(1, 100)).unwrap_or(1),
        },
        version: row.get("version")?,
    })
}

fn tenant_versions_from_row(row: &Row) -> StoreResult<TenantVersions> {
    Ok(TenantVersions {
        data: row.get("data_version")?,
        device_trust: row.get("device_trust_version")?,
    })
}

/// Records that something decisions depend on changed in the tenant. (A
/// change to a device's trust also moves [`TenantVersions::device_trust`]:
/// the database's triggers do that, see migration 0014.)
async fn bump_data_version(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    device: Option<&Device>,
) -> StoreResult<()> {
    let version: i64 = query(
        "UPDATE tenants SET data_version = data_version + 1 WHERE id = $1 RETURNING data_version",
    )
    .id(tenant_id)
    .fetch_scalar(&mut *conn)
    .await?;
    conn.announce(tenant_id, version, device).await
}

/// Takes the tenant's next device revision. The counter's row stays locked
/// until commit, so revisions become visible in the order they were taken.
async fn next_device_revision(conn: &mut Conn<'_>, tenant_id: &str) -> StoreResult<i64> {
    query(
        "INSERT INTO device_revisions (tenant_id, revision) VALUES ($1, 1)
         ON CONFLICT (tenant_id) DO UPDATE SET revision = device_revisions.revision + 1
         RETURNING revision",
    )
    .id(tenant_id)
    .fetch_scalar(&mut *conn)
    .await
}

/// Marks a device changed, for a write that changes what a decision reads of
/// it: the next reader of [`DeviceStore::device_changes`] stamps it. Writers
/// only mark, so that a tenant's enrollments and reports never queue on its
/// revision counter.
async fn mark_device_changed(conn: &mut Conn<'_>, device_id: &str) -> StoreResult<()> {
    query("UPDATE devices SET revision = NULL WHERE id = $1")
        .id(device_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stamps the tenant's devices and removals marked changed since the last
/// stamping with its next revision, in one transaction that holds the
/// counter's row until commit. Rows are locked in id order, as the sync
/// path's batches lock them, so that a stamping and a batch queue instead of
/// deadlocking on PostgreSQL.
async fn stamp_changed_devices(db: &Db, tenant_id: &str) -> StoreResult<()> {
    let marked: bool = query(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE tenant_id = $1 AND revision IS NULL)
             OR EXISTS (SELECT 1 FROM device_removals WHERE tenant_id = $1 AND revision IS NULL)",
    )
    .id(tenant_id)
    .fetch_scalar(db)
    .await?;
    if !marked {
        return Ok(());
    }
    let mut tx = db.write().await?;
    let revision = next_device_revision(&mut tx, tenant_id).await?;
    let sql = format!(
        "UPDATE devices SET revision = $1 WHERE id IN
             (SELECT id FROM devices WHERE tenant_id = $2 AND revision IS NULL ORDER BY id{})",
        db.for_update()
    );
    query_built(sql)
        .bind(revision)
        .id(tenant_id)
        .execute(&mut tx)
        .await?;
    query("UPDATE device_removals SET revision = $1 WHERE tenant_id = $2 AND revision IS NULL")
        .bind(revision)
        .id(tenant_id)
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

/// Writes new settings as the next config version, with its history row and audit entry.
#[allow(clippy::too_many_arguments)]
async fn write_settings_version(
    conn: &mut Conn<'_>,
    tenant: &Tenant,
    service: &ServiceDef,
    before: &Settings,
    after: &Settings,
    actor: &Actor,
    action: &str,
    restored_from: Option<i64>,
) -> StoreResult<i64> {
    let version = tenant.config_version + 1;
    let at = conn.now();
    query("UPDATE tenants SET config_version = $1, data_version = data_version + 1 WHERE id = $2")
        .bind(version)
        .id(&tenant.id)
        .execute(&mut *conn)
        .await?;
    conn.announce(&tenant.id, tenant.data_version + 1, None)
        .await?;
    query(
        "INSERT INTO settings (tenant_id, service, enabled_by_default, user_groups_json,
                               device_groups_json, logout_on_enable, version,
                               exclude_user_groups_json, exclude_device_groups_json, rollout_percent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant_id, service) DO UPDATE SET
            enabled_by_default = excluded.enabled_by_default,
            user_groups_json = excluded.user_groups_json,
            device_groups_json = excluded.device_groups_json,
            logout_on_enable = excluded.logout_on_enable,
            version = excluded.version,
            exclude_user_groups_json = excluded.exclude_user_groups_json,
            exclude_device_groups_json = excluded.exclude_device_groups_json,
            rollout_percent = excluded.rollout_percent",
    )
    .id(&tenant.id)
    .bind(service.id)
    .bind(after.enabled_by_default)
    .json(id_list_to_json(
        after.user_groups.iter().map(GroupId::as_str),
    ))
    .json(id_list_to_json(
        after.device_groups.iter().map(DeviceGroupId::as_str),
    ))
    .bind(after.logout_on_enable)
    .bind(version)
    .json(id_list_to_json(
        after.exclude_user_groups.iter().map(GroupId::as_str),
    ))
    .json(id_list_to_json(
        after.exclude_device_groups.iter().map(DeviceGroupId::as_str),
    ))
    .bind(i64::from(after.rollout_percent))
    .execute(&mut *conn)
    .await?;
    let before_json = settings_to_json(before);
    let after_json = settings_to_json(after);
    query(
        "INSERT INTO config_versions (tenant_id, version, service, actor, actor_kind, actor_id, at, before_json, after_json, restored_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .id(&tenant.id)
    .bind(version)
    .bind(service.id)
    .bind(&actor.name)
    .bind(actor.kind.as_str())
    .bind(&actor.id)
    .time(at)
    .json(before_json.to_string())
    .json(after_json.to_string())
    .bind(restored_from)
    .execute(&mut *conn)
    .await?;
    // The audit entry of a rollback names the version it restored.
    let mut audit_after = after_json;
    if let (Some(from), Some(fields)) = (restored_from, audit_after.as_object_mut()) {
        fields.insert("restored_from".to_owned(), json!(from));
    }
    Audit::new(Some(&tenant.id), actor, action, service.id)
        .before(&before_json)
        .after(&audit_after)
        .write(conn)
        .await?;
    Ok(version)
}

/// The checks of a save, in the save's transaction (which holds the tenant's
/// write lock): `If-Match` and the spec's rules. Answers the tenant and the
/// stored settings the save would replace. A scheduled change runs them when
/// it is scheduled and again when it is applied.
pub(crate) async fn check_save(
    tx: &mut Conn<'_>,
    tenant_id: &str,
    request: &SaveRequest,
) -> StoreResult<(Tenant, StoredSettings)> {
    let tenant = tenant_row(tx, tenant_id).await?;
    let current = load_settings(tx, &tenant, request.service).await?;
    if let Some(expected) = request.expected_version
        && expected != current.version
    {
        return Err(StoreError::Stale {
            expected,
            current: current.version,
        });
    }
    let proposed = &request.settings;
    let known_users = existing_ids(
        tx,
        IdTable::Groups,
        tenant_id,
        proposed
            .user_groups
            .iter()
            .chain(&proposed.exclude_user_groups)
            .map(GroupId::as_str),
    )
    .await?;
    let known_devices = existing_ids(
        tx,
        IdTable::DeviceGroups,
        tenant_id,
        proposed
            .device_groups
            .iter()
            .chain(&proposed.exclude_device_groups)
            .map(DeviceGroupId::as_str),
    )
    .await?;
    let baseline = if request.check_default_rule {
        current.settings.clone()
    } else {
        Settings {
            user_groups: proposed.user_groups.clone(),
            device_groups: proposed.device_groups.clone(),
            ..current.settings.clone()
        }
    };
    validate_save(
        request.service,
        &baseline,
        proposed,
        |id| known_users.contains(id.as_str()),
        |id| known_devices.contains(id.as_str()),
    )?;
    Ok((tenant, current))
}

/// A save in the caller's transaction: the checks, then the new version with
/// its history row and audit entry. The caller commits.
pub(crate) async fn save_in(
    tx: &mut Conn<'_>,
    tenant_id: &str,
    request: &SaveRequest,
) -> StoreResult<Saved> {
    let (tenant, current) = check_save(tx, tenant_id, request).await?;
    let proposed = &request.settings;
    // A save that changes nothing is answered with the current version: a new
    // version, audit entry and data-version bump would only be noise that
    // wakes every held long-poll for nothing.
    if *proposed == current.settings {
        return Ok(Saved {
            config_version: tenant.config_version,
            stored: current,
        });
    }
    let version = write_settings_version(
        tx,
        &tenant,
        request.service,
        &current.settings,
        proposed,
        &request.actor,
        request.action,
        request.restored_from,
    )
    .await?;
    Ok(Saved {
        stored: StoredSettings {
            settings: proposed.clone(),
            version,
        },
        config_version: version,
    })
}

impl SqlStore {
    /// Deletes a user or device group and removes it from every entitlement
    /// that selected it, one transaction.
    async fn delete_selectable_group(
        &self,
        tenant_id: &str,
        kind: GroupKind,
        group_id: &str,
        actor: &Actor,
        force: bool,
    ) -> StoreResult<Vec<String>> {
        let (select_name, delete, what, action, name_key) = match kind {
            GroupKind::User => (
                "SELECT display_name FROM groups WHERE tenant_id = $1 AND id = $2",
                "DELETE FROM groups WHERE id = $1",
                "group",
                "group.delete",
                "display_name",
            ),
            GroupKind::Device => (
                "SELECT name FROM device_groups WHERE tenant_id = $1 AND id = $2",
                "DELETE FROM device_groups WHERE id = $1",
                "device group",
                "device_group.delete",
                "name",
            ),
        };
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let name: String = query(select_name)
            .id(tenant_id)
            .id(group_id)
            .fetch_scalar(&mut tx)
            .await
            .map_err(not_found(what))?;
        // Access fails closed: the group stays in every entitlement that selects
        // it, as a tombstone that matches nothing, so deleting "Temp laptops"
        // never turns "Engineering on Temp laptops" into "Engineering anywhere".
        let selected_by = services_selecting(&mut tx, tenant_id, kind, group_id).await?;
        if !selected_by.is_empty() && !force {
            return Err(StoreError::InUse {
                what,
                name,
                services: selected_by,
            });
        }
        // Nor does an exclusion shrink unasked: the members of a group nested
        // in "Contractors" would get what "Contractors" is excluded from.
        if matches!(kind, GroupKind::User) && !force {
            let (containers, services) = excluding_ancestors(&mut tx, tenant_id, group_id).await?;
            if !containers.is_empty() {
                return Err(StoreError::InsideExcluded {
                    name,
                    containers,
                    services,
                });
            }
        }
        query(INSERT_TOMBSTONE)
            .id(tenant_id)
            .bind(kind.as_str())
            .id(group_id)
            .bind(&name)
            .time(self.db.now())
            .execute(&mut tx)
            .await?;
        query(delete).id(group_id).execute(&mut tx).await?;
        let before = json!({"id": group_id, name_key: name});
        let after = (!selected_by.is_empty()).then(|| json!({"tombstone_in": selected_by}));
        Audit::new(Some(tenant_id), actor, action, &name)
            .before(&before)
            .after(after.as_ref())
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(selected_by)
    }
}

impl SqlStore {
    /// The tenant a secret's hash opens.
    async fn tenant_by_secret(&self, sql: &'static str, hash: &str) -> StoreResult<Tenant> {
        let row = query(sql).bind(hash).find(&self.db, "tenant").await?;
        tenant_from_row(&row)
    }
}

/// Which list of the settings a group belongs in.
#[derive(Clone, Copy)]
enum GroupKind {
    User,
    Device,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::User => "user",
            GroupKind::Device => "device",
        }
    }
}

/// Records a deleted group's name, so that entitlements still selecting it can
/// say which group it was.
const INSERT_TOMBSTONE: &str = "INSERT INTO deleted_groups (tenant_id, kind, id, name, deleted_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";

/// The services whose settings select the group.
async fn services_selecting(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    kind: GroupKind,
    group_id: &str,
) -> StoreResult<Vec<String>> {
    let tenant = tenant_row(conn, tenant_id).await?;
    let mut selecting = Vec::new();
    for service in SERVICES {
        let current = load_settings(conn, &tenant, service).await?;
        // An excluded group counts too: deleting it must not widen access
        // (its tombstone keeps the service off, see `entitle_core::evaluate`).
        let selected = match kind {
            GroupKind::User => {
                let id = GroupId(group_id.to_owned());
                current.settings.user_groups.contains(&id)
                    || current.settings.exclude_user_groups.contains(&id)
            }
            GroupKind::Device => {
                let id = DeviceGroupId(group_id.to_owned());
                current.settings.device_groups.contains(&id)
                    || current.settings.exclude_device_groups.contains(&id)
            }
        };
        if selected {
            selecting.push(service.id.to_owned());
        }
    }
    Ok(selecting)
}

/// The groups that contain `group_id` through nesting (at any depth, not the
/// group itself) and that some service's settings exclude, by name, with
/// those services.
async fn excluding_ancestors(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    group_id: &str,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let group = GroupId(group_id.to_owned());
    // Every group containing it at any depth, itself left out (a cycle
    // written before cycles were refused may contain it too).
    let mut ancestors = group_graph(conn, tenant_id)
        .await?
        .effective_groups([&group]);
    ancestors.remove(&group);
    if ancestors.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let tenant = tenant_row(conn, tenant_id).await?;
    let (mut excluded, mut services) = (std::collections::BTreeSet::new(), Vec::new());
    for service in SERVICES {
        let current = load_settings(conn, &tenant, service).await?;
        let inside: Vec<&GroupId> = current
            .settings
            .exclude_user_groups
            .iter()
            .filter(|id| ancestors.contains(*id))
            .collect();
        if !inside.is_empty() {
            services.push(service.id.to_owned());
            excluded.extend(inside.into_iter().map(|id| id.0.clone()));
        }
    }
    let mut names = Vec::with_capacity(excluded.len());
    for id in excluded {
        let name: Option<String> =
            query("SELECT display_name FROM groups WHERE tenant_id = $1 AND id = $2")
                .id(tenant_id)
                .id(&id)
                .fetch_optional_scalar(&mut *conn)
                .await?;
        names.push(name.unwrap_or(id));
    }
    Ok((names, services))
}

/// The tenant's group nesting as a graph, read in one query.
pub(crate) async fn group_graph(conn: &mut Conn<'_>, tenant_id: &str) -> StoreResult<GroupGraph> {
    let mut graph = GroupGraph::new();
    for row in query(
        "SELECT n.container_id, n.member_id FROM group_nesting n JOIN groups g ON g.id = n.container_id
         WHERE g.tenant_id = $1",
    )
    .id(tenant_id)
    .fetch_all(&mut *conn)
    .await?
    {
        graph.add_nesting(
            GroupId(row.id("container_id")?),
            GroupId(row.id("member_id")?),
        );
    }
    Ok(graph)
}

/// Tables whose ids `existing_ids` can check.
#[derive(Clone, Copy)]
enum IdTable {
    Groups,
    DeviceGroups,
}

/// The subset of `ids` that exist in the tenant.
async fn existing_ids(
    conn: &mut Conn<'_>,
    table: IdTable,
    tenant_id: &str,
    ids: impl Iterator<Item = &str>,
) -> StoreResult<std::collections::HashSet<String>> {
    let mut found = std::collections::HashSet::new();
    let sql = match table {
        IdTable::Groups => "SELECT 1 FROM groups WHERE tenant_id = $1 AND id = $2",
        IdTable::DeviceGroups => "SELECT 1 FROM device_groups WHERE tenant_id = $1 AND id = $2",
    };
    for id in ids {
        let hit = query(sql)
            .id(tenant_id)
            .id(id)
            .fetch_optional(&mut *conn)
            .await?;
        if hit.is_some() {
            found.insert(id.to_owned());
        }
    }
    Ok(found)
}

/// Fails with `UnknownGroups` naming every id that is not a group of the tenant.
async fn require_groups(conn: &mut Conn<'_>, tenant_id: &str, ids: &[String]) -> StoreResult<()> {
    let found = existing_ids(
        conn,
        IdTable::Groups,
        tenant_id,
        ids.iter().map(String::as_str),
    )
    .await?;
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(*id))
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(StoreError::UnknownGroups { ids: unknown })
    }
}

/// Inserts a user, its direct memberships and the audit entry of its
/// creation; the caller bumps the data version and commits.
async fn insert_user(
    tx: &mut Conn<'_>,
    tenant_id: &str,
    user: &NewUser,
    actor: &Actor,
) -> StoreResult<String> {
    require_groups(tx, tenant_id, &user.groups).await?;
    let id = new_id();
    let at = tx.now();
    query(
        "INSERT INTO users (id, tenant_id, user_name, user_name_key, display_name, active, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, true, $6, $7)",
    )
    .id(&id)
    .id(tenant_id)
    .bind(&user.user_name)
    .bind(user.user_name.to_lowercase())
    .bind(&user.display_name)
    .time(at)
    .time(at)
    .execute(&mut *tx)
    .await
    .map_err(|e| duplicate(e, "user", &user.user_name))?;
    for group in &user.groups {
        query("INSERT INTO user_memberships (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .id(group)
            .id(&id)
            .execute(&mut *tx)
            .await?;
    }
    let after = json!({"id": id, "user_name": user.user_name, "groups": user.groups});
    Audit::new(Some(tenant_id), actor, "user.create", &user.user_name)
        .after(&after)
        .write(tx)
        .await?;
    Ok(id)
}

/// A device to enroll: its user, token, first report and when.
pub struct Enrollment<'a> {
    /// The device's user.
    pub user: &'a User,
    /// The hash of the device's token.
    pub token_hash: &'a str,
    /// The device's first report.
    pub report: &'a DeviceReport,
    /// When it enrolled (and last synced).
    pub at: OffsetDateTime,
}

/// Inserts an enrolled device and the audit entry of its enrollment; the
/// caller commits.
async fn insert_device(
    tx: &mut Conn<'_>,
    tenant_id: &str,
    enrolled: &Enrollment<'_>,
    attested: Option<Attested>,
    key_name: Option<&str>,
    pending_approval: bool,
) -> StoreResult<Device> {
    let Enrollment {
        user,
        token_hash,
        report,
        at,
    } = *enrolled;
    let id = new_id();
    let report_json = report_to_json(report);
    // Marked changed (revision NULL): see `mark_device_changed`.
    query(
        "INSERT INTO devices (id, tenant_id, user_id, token_hash, hostname_key, report_json, enrolled_at, last_sync_at,
                              attested_ownership, attested_by, pending_approval, revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL)",
    )
    .id(&id)
    .id(tenant_id)
    .id(&user.id)
    .bind(token_hash)
    .bind(report.hostname.to_lowercase())
    .json(report_json.to_string())
    .time(at)
    .time(at)
    .bind(attested.as_ref().map(|a| a.ownership.as_str()))
    .bind(attested.as_ref().map(|a| a.by.as_str()))
    .bind(pending_approval)
    .execute(&mut *tx)
    .await?;
    let after = json!({"id": id, "user_name": user.user_name, "device": report_json,
                       "enrollment_key": key_name, "pending_approval": pending_approval});
    Audit::new(
        Some(tenant_id),
        &Actor::new(ActorKind::Device, id.as_str(), report.hostname.as_str()),
        "device.enroll",
        &report.hostname,
    )
    .after(&after)
    .write(tx)
    .await?;
    Ok(Device {
        id,
        tenant_id: tenant_id.to_owned(),
        user_id: user.id.clone(),
        user_name: user.user_name.clone(),
        report: report.clone(),
        enrolled_at: at,
        last_sync_at: at,
        attested_ownership: attested,
        pending_approval,
        applied: None,
    })
}

async fn user_groups(conn: &mut Conn<'_>, user_id: &str) -> StoreResult<Vec<String>> {
    query("SELECT group_id FROM user_memberships WHERE user_id = $1 ORDER BY group_id")
        .id(user_id)
        .fetch_ids(conn)
        .await
}

async fn user_from_row(conn: &mut Conn<'_>, row: &Row) -> StoreResult<User> {
    let id: String = row.id("id")?;
    let groups = user_groups(conn, &id).await?;
    Ok(User {
        id,
        user_name: row.get("user_name")?,
        display_name: row.get("display_name")?,
        active: row.get("active")?,
        groups,
    })
}

async fn group_from_row(conn: &mut Conn<'_>, row: &Row) -> StoreResult<Group> {
    let id: String = row.id("id")?;
    let member_groups =
        query("SELECT member_id FROM group_nesting WHERE container_id = $1 ORDER BY member_id")
            .id(&id)
            .fetch_ids(&mut *conn)
            .await?;
    let users: i64 = query("SELECT COUNT(*) FROM user_memberships WHERE group_id = $1")
        .id(&id)
        .fetch_scalar(&mut *conn)
        .await?;
    Ok(Group {
        id,
        display_name: row.get("display_name")?,
        source: row.get("source")?,
        member_count: users + member_groups.len() as i64,
        member_groups,
    })
}

fn device_from_row(row: &Row) -> StoreResult<Device> {
    Ok(Device {
        id: row.id("id")?,
        tenant_id: row.id("tenant_id")?,
        user_id: row.id("user_id")?,
        user_name: row.get("user_name")?,
        report: report_from_json(&row.json("report_json")?)?,
        enrolled_at: row.time("enrolled_at")?,
        last_sync_at: row.time("last_sync_at")?,
        attested_ownership: attested_from_columns(
            row.get("attested_ownership")?,
            row.get("attested_by")?,
        )?,
        pending_approval: row.get("pending_approval")?,
        applied: applied_from_row(row)?,
    })
}

fn applied_from_row(row: &Row) -> StoreResult<Option<Applied>> {
    let Some(config_version) = row.get::<Option<i64>>("applied_config_version")? else {
        return Ok(None);
    };
    let Some(at) = row.opt_time("applied_at")? else {
        return Ok(None);
    };
    let services = match row.opt_json("service_states")? {
        Some(text) => service_states_from_json(&text)?,
        None => BTreeMap::new(),
    };
    Ok(Some(Applied {
        config_version,
        at,
        saved_at: row.opt_time("applied_saved_at")?,
        services,
    }))
}

/// `SELECT` of a device with its user's name, followed by the given clause.
macro_rules! device_select {
    ($clause:literal) => {
        concat!(
            "SELECT d.id, d.tenant_id, d.user_id, u.user_name, d.report_json, d.enrolled_at, d.last_sync_at,
                    d.attested_ownership, d.attested_by, d.pending_approval,
                    d.applied_config_version, d.applied_at, d.service_states, cv.at AS applied_saved_at
             FROM devices d JOIN users u ON u.id = d.user_id
             LEFT JOIN config_versions cv ON cv.tenant_id = d.tenant_id AND cv.version = d.applied_config_version ",
            $clause
        )
    };
}

/// `SELECT` of a scoped enrollment key's columns, followed by the given clause.
macro_rules! enrollment_key_select {
    ($clause:literal) => {
        concat!(
            "SELECT id, tenant_id, name, ownership, expires_at, max_uses, uses, revoked_at, created_at
             FROM enrollment_keys ",
            $clause
        )
    };
}

fn enrollment_key_from_row(row: &Row) -> StoreResult<EnrollmentKey> {
    Ok(EnrollmentKey {
        id: row.id("id")?,
        tenant_id: row.id("tenant_id")?,
        name: row.get("name")?,
        ownership: ownership_from_column(row.get("ownership")?)?,
        expires_at: row.opt_time("expires_at")?,
        max_uses: row.get("max_uses")?,
        uses: row.get("uses")?,
        revoked_at: row.opt_time("revoked_at")?,
        created_at: row.time("created_at")?,
    })
}

async fn device_row(conn: &mut Conn<'_>, tenant_id: &str, device_id: &str) -> StoreResult<Device> {
    let row = query(device_select!("WHERE d.tenant_id = $1 AND d.id = $2"))
        .id(tenant_id)
        .id(device_id)
        .find(conn, "device")
        .await?;
    device_from_row(&row)
}

fn encode_cursor(parts: &[&str]) -> String {
    hex::encode(parts.join("\u{1f}"))
}

fn decode_cursor(cursor: &str, expected_parts: usize) -> Option<Vec<String>> {
    let bytes = hex::decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    (parts.len() == expected_parts).then_some(parts)
}

/// The filter of a device listing, parameters `$1`–`$10` (see
/// [`bind_device_filter`]); each is skipped when NULL. A set of ids is
/// parameter `$ids_param`, bound last with [`bind_device_ids`]: present only
/// when the filter has one, since PostgreSQL refuses a parameter no clause uses.
fn device_where(db: &Db, filter: &DeviceFilter, ids_param: u8) -> String {
    let os = db.json_text("d.report_json", "os");
    let reported = db.json_text("d.report_json", "ownership");
    let ids = match &filter.ids {
        None => String::new(),
        Some(DeviceIds::Only(_)) => format!(" AND d.id IN {}", db.id_set(ids_param)),
        Some(DeviceIds::Except(_)) => format!(" AND d.id NOT IN {}", db.id_set(ids_param)),
    };
    format!(
        "WHERE d.tenant_id = $1
           AND ($2 IS NULL OR u.user_name_key = $2)
           AND ($3 IS NULL OR d.hostname_key = $3)
           AND ($4 IS NULL OR u.user_name_key LIKE $4 ESCAPE '\\' OR d.hostname_key LIKE $4 ESCAPE '\\')
           AND ($5 IS NULL OR {os} = $5)
           AND ($6 IS NULL OR COALESCE(d.attested_ownership, {reported}) = $6)
           AND ($7 IS NULL OR d.last_sync_at < $7)
           AND ($8 IS NULL OR d.last_sync_at >= $8)
           AND ($9 IS NULL OR d.pending_approval = $9)
           AND ($10 IS NULL OR (COALESCE(d.applied_config_version, -1)
                                >= (SELECT t.config_version FROM tenants t WHERE t.id = $1)) = $10){ids}"
    )
}

/// Binds the filter's set of ids, if it has one (see [`device_where`]).
fn bind_device_ids(q: Query, filter: &DeviceFilter) -> Query {
    match &filter.ids {
        None => q,
        Some(DeviceIds::Only(ids) | DeviceIds::Except(ids)) => q.ids(ids),
    }
}

fn bind_device_filter(q: Query, tenant_id: &str, filter: &DeviceFilter) -> Query {
    let lower = |text: &Option<String>| text.as_deref().map(str::to_lowercase);
    q.id(tenant_id)
        .bind(lower(&filter.user_name))
        .bind(lower(&filter.hostname))
        .bind(filter.search.as_deref().map(like_pattern))
        .bind(filter.os.map(|o| o.as_str()))
        .bind(filter.ownership.map(|o| o.as_str()))
        .opt_time(filter.last_seen_before)
        .opt_time(filter.last_seen_after)
        .bind(filter.pending)
        .bind(filter.applied_current)
}

/// The SQL of a device listing's sort key, as `DeviceSort::cursor_after` writes it.
fn device_sort_key(db: &Db, sort: DeviceSort) -> String {
    match sort {
        DeviceSort::Hostname => "d.hostname_key".to_owned(),
        DeviceSort::UserName => "u.user_name_key".to_owned(),
        DeviceSort::LastSeen => "d.last_sync_at".to_owned(),
        DeviceSort::Os => db.json_text("d.report_json", "os"),
    }
}

/// A device cursor's sort key, typed as its column.
enum DeviceKey {
    Text(String),
    Time(OffsetDateTime),
}

fn decode_device_cursor(cursor: &str, filter: &DeviceFilter) -> StoreResult<(DeviceKey, String)> {
    let mut parts = decode_cursor(cursor, 4).ok_or(StoreError::BadCursor)?;
    let id = parts.pop().unwrap_or_default();
    let key = parts.pop().unwrap_or_default();
    let direction = if filter.descending { "desc" } else { "asc" };
    if parts[0] != filter.sort.as_str() || parts[1] != direction || id.len() > 64 {
        return Err(StoreError::BadCursor);
    }
    let key = match filter.sort {
        DeviceSort::LastSeen => {
            let nanos: i128 = key.parse().map_err(|_| StoreError::BadCursor)?;
            let time = OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .map_err(|_| StoreError::BadCursor)?;
            // The cursor is the caller's text: a time PostgreSQL's timestamptz
            // cannot hold (before 4713 BC) would fail the query, not the cursor.
            if !(1..=9999).contains(&time.year()) {
                return Err(StoreError::BadCursor);
            }
            DeviceKey::Time(time)
        }
        _ => DeviceKey::Text(key),
    };
    Ok((key, id))
}

/// The (key, id) a list's keyset cursor resumes after; no cursor starts at
/// the beginning, and one this store did not issue is refused.
fn keyset_after(cursor: Option<&str>) -> StoreResult<(String, String)> {
    match cursor {
        Some(c) => {
            let mut parts = decode_cursor(c, 2).ok_or(StoreError::BadCursor)?;
            let id = parts.pop().unwrap_or_default();
            let key = parts.pop().unwrap_or_default();
            Ok((key, id))
        }
        None => Ok((String::new(), String::new())),
    }
}

/// The cursor after a page read with one row more than `limit`, if there is
/// more: the last shown row's `key_column` and id.
fn keyset_next(rows: &[Row], limit: u32, key_column: &str) -> StoreResult<Option<String>> {
    let shown = (limit as usize).min(rows.len());
    let Some(last) = shown.checked_sub(1).and_then(|i| rows.get(i)) else {
        return Ok(None);
    };
    if rows.len() <= limit as usize {
        return Ok(None);
    }
    Ok(Some(encode_cursor(&[
        &last.get::<String>(key_column)?,
        &last.id("id")?,
    ])))
}

fn like_pattern(search: &str) -> String {
    let escaped = search
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The columns `token_from_row` reads.
const TOKEN_COLUMNS: &str =
    "id, tenant_id, role, name, created_at, created_by, expires_at, last_used_at, revoked_at";

fn token_from_row(row: &Row) -> StoreResult<ApiToken> {
    let role: String = row.get("role")?;
    Ok(ApiToken {
        id: row.id("id")?,
        grant: TokenGrant {
            role: Role::parse(&role)
                .ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
            tenant_id: row.opt_id("tenant_id")?,
            name: row.get("name")?,
        },
        created_at: row.time("created_at")?,
        created_by: row.get("created_by")?,
        expires_at: row.opt_time("expires_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        revoked_at: row.opt_time("revoked_at")?,
    })
}

/// What the audit log keeps of a token: never its secret.
fn token_audit_json(token: &ApiToken) -> Value {
    let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
    json!({
        "id": token.id,
        "name": token.grant.name,
        "role": token.grant.role.as_str(),
        "expires_at": time(token.expires_at),
        "revoked_at": time(token.revoked_at),
    })
}

#[async_trait]
impl TenantStore for SqlStore {
    async fn changes(&self) -> StoreResult<Option<ChangeFeed>> {
        self.db.changes().await
    }

    async fn ping(&self) -> StoreResult<()> {
        query("SELECT 1").execute(&self.db).await?;
        Ok(())
    }

    async fn versions(&self, tenant_id: &str) -> StoreResult<TenantVersions> {
        let row = query("SELECT data_version, device_trust_version FROM tenants WHERE id = $1")
            .id(tenant_id)
            .find(&self.db, "tenant")
            .await?;
        tenant_versions_from_row(&row)
    }

    async fn create_tenant(&self, new: NewTenant, actor: &Actor) -> StoreResult<Tenant> {
        let mut tx = self.db.write().await?;
        let tenant = Tenant {
            id: new_id(),
            name: new.name.clone(),
            created_at: new.created_at,
            config_version: 0,
            data_version: 0,
            last_scim_request_at: None,
            device_approval: false,
        };
        query(
            "INSERT INTO tenants (id, name, created_at, enrollment_key_hash, scim_token_hash)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .id(&tenant.id)
        .bind(&tenant.name)
        .time(tenant.created_at)
        .bind(&new.enrollment_key_hash)
        .bind(&new.scim_token_hash)
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate(e, "tenant", &new.name))?;
        let token_at = tx.now();
        scim_setup::insert_scim_token(&mut tx, &tenant.id, &new.scim_token_hash, token_at).await?;
        for service in SERVICES {
            let defaults =
                Settings::new_tenant_default(service, tenant.created_at.unix_timestamp());
            query(
                "INSERT INTO settings (tenant_id, service, enabled_by_default, user_groups_json,
                                       device_groups_json, logout_on_enable, version)
                 VALUES ($1, $2, $3, '[]', '[]', $4, 0)",
            )
            .id(&tenant.id)
            .bind(service.id)
            .bind(defaults.enabled_by_default)
            .bind(defaults.logout_on_enable)
            .execute(&mut tx)
            .await?;
        }
        let after = json!({"id": tenant.id, "name": tenant.name});
        Audit::new(Some(&tenant.id), actor, "tenant.create", &tenant.name)
            .after(&after)
            .commit(tx)
            .await?;
        Ok(tenant)
    }

    async fn tenant(&self, id_or_name: &str) -> StoreResult<Tenant> {
        let row = query(tenant_select!("WHERE id = $1 OR name = $2"))
            .id(id_or_name)
            .bind(id_or_name)
            .find(&self.db, "tenant")
            .await?;
        tenant_from_row(&row)
    }

    async fn tenants(&self) -> StoreResult<Vec<Tenant>> {
        query(tenant_select!("ORDER BY name"))
            .fetch_all_as(&self.db, tenant_from_row)
            .await
    }

    async fn tenant_by_enrollment_key(&self, key_hash: &str) -> StoreResult<Tenant> {
        self.tenant_by_secret(tenant_select!("WHERE enrollment_key_hash = $1"), key_hash)
            .await
    }

    async fn tenant_by_scim_token(&self, token_hash: &str) -> StoreResult<Tenant> {
        self.tenant_by_working_scim_token(token_hash).await
    }

    async fn enrollment_grant(&self, key_hash: &str) -> StoreResult<EnrollmentGrant> {
        if let Ok(tenant) = self.tenant_by_enrollment_key(key_hash).await {
            return Ok(EnrollmentGrant { tenant, key: None });
        }
        let row = query(enrollment_key_select!("WHERE key_hash = $1"))
            .bind(key_hash)
            .find(&self.db, "enrollment key")
            .await?;
        let key = enrollment_key_from_row(&row)?;
        let mut conn = self.db.read().await?;
        let tenant = tenant_row(&mut conn, &key.tenant_id).await?;
        Ok(EnrollmentGrant {
            tenant,
            key: Some(key),
        })
    }

    async fn create_enrollment_key(
        &self,
        tenant_id: &str,
        new: NewEnrollmentKey,
        actor: &Actor,
    ) -> StoreResult<EnrollmentKey> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let id = new_id();
        let created_at = self.db.now();
        query(
            "INSERT INTO enrollment_keys (id, tenant_id, name, key_hash, ownership, expires_at, max_uses, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .id(&id)
        .id(tenant_id)
        .bind(&new.name)
        .bind(&new.key_hash)
        .bind(new.ownership.map(|o| o.as_str()))
        .opt_time(new.expires_at)
        .bind(new.max_uses)
        .time(created_at)
        .execute(&mut tx)
        .await?;
        let key = EnrollmentKey {
            id,
            tenant_id: tenant_id.to_owned(),
            name: new.name,
            ownership: new.ownership,
            expires_at: new.expires_at,
            max_uses: new.max_uses,
            uses: 0,
            revoked_at: None,
            created_at,
        };
        Audit::new(Some(tenant_id), actor, "enrollment_key.create", &key.name)
            .after(&enrollment_key_audit(&key))
            .commit(tx)
            .await?;
        Ok(key)
    }

    async fn enrollment_keys(&self, tenant_id: &str) -> StoreResult<Vec<EnrollmentKey>> {
        query(enrollment_key_select!(
            "WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        ))
        .id(tenant_id)
        .fetch_all_as(&self.db, enrollment_key_from_row)
        .await
    }

    async fn revoke_enrollment_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        actor: &Actor,
    ) -> StoreResult<EnrollmentKey> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        query(
            "UPDATE enrollment_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
        )
        .time(self.db.now())
        .id(tenant_id)
        .id(key_id)
        .execute(&mut tx)
        .await?;
        let row = query(enrollment_key_select!("WHERE tenant_id = $1 AND id = $2"))
            .id(tenant_id)
            .id(key_id)
            .find(&mut tx, "enrollment key")
            .await?;
        let key = enrollment_key_from_row(&row)?;
        Audit::new(Some(tenant_id), actor, "enrollment_key.revoke", &key.name)
            .after(&enrollment_key_audit(&key))
            .commit(tx)
            .await?;
        Ok(key)
    }

    async fn rotate_enrollment_key(
        &self,
        tenant_id: &str,
        key_hash: &str,
        actor: &Actor,
    ) -> StoreResult<Tenant> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let tenant = tenant_row(&mut tx, tenant_id).await?;
        query("UPDATE tenants SET enrollment_key_hash = $1 WHERE id = $2")
            .bind(key_hash)
            .id(tenant_id)
            .execute(&mut tx)
            .await?;
        // The audit says that it happened, never the key or its hash.
        Audit::new(
            Some(tenant_id),
            actor,
            "tenant.enrollment_key.rotate",
            &tenant.name,
        )
        .commit(tx)
        .await?;
        Ok(tenant)
    }

    async fn set_device_approval(
        &self,
        tenant_id: &str,
        on: bool,
        actor: &Actor,
    ) -> StoreResult<Tenant> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let before = tenant_row(&mut tx, tenant_id).await?;
        query("UPDATE tenants SET device_approval = $1 WHERE id = $2")
            .bind(on)
            .id(tenant_id)
            .execute(&mut tx)
            .await?;
        Audit::new(
            Some(tenant_id),
            actor,
            "tenant.device_approval",
            &before.name,
        )
        .before(&json!({"device_approval": before.device_approval}))
        .after(&json!({"device_approval": on}))
        .write(&mut tx)
        .await?;
        let after = tenant_row(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn rotate_scim_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        actor: &Actor,
    ) -> StoreResult<()> {
        use crate::ScimTokenStore;
        self.rotate_scim_token_with_grace(tenant_id, token_hash, time::Duration::ZERO, actor)
            .await
            .map(|_| ())
    }

    async fn issue_api_token(
        &self,
        token_hash: &str,
        grant: &TokenGrant,
        expires_at: Option<OffsetDateTime>,
        actor: &Actor,
    ) -> StoreResult<ApiToken> {
        let mut tx = self.db.write().await?;
        let id = new_id();
        let sql = format!(
            "INSERT INTO api_tokens (token_hash, id, tenant_id, role, name, created_at, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {TOKEN_COLUMNS}"
        );
        let row = query_built(sql)
            .bind(token_hash)
            .id(&id)
            .opt_id(grant.tenant_id.as_deref())
            .bind(grant.role.as_str())
            .bind(&grant.name)
            .time(self.db.now())
            .bind(actor.display())
            .opt_time(expires_at)
            .fetch_one(&mut tx)
            .await?;
        let token = token_from_row(&row)?;
        let after = token_audit_json(&token);
        Audit::new(
            grant.tenant_id.as_deref(),
            actor,
            "token.create",
            &grant.name,
        )
        .after(&after)
        .commit(tx)
        .await?;
        Ok(token)
    }

    async fn api_token(&self, token_hash: &str) -> StoreResult<ApiToken> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1");
        let row = query_built(sql)
            .bind(token_hash)
            .find(&self.db, "token")
            .await?;
        token_from_row(&row)
    }

    async fn api_tokens(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens
             WHERE tenant_id IS NOT DISTINCT FROM $1 ORDER BY created_at, id"
        );
        query_built(sql)
            .opt_id(tenant_id)
            .fetch_all_as(&self.db, token_from_row)
            .await
    }

    async fn revoke_api_token(
        &self,
        tenant_id: Option<&str>,
        token_id: &str,
        actor: &Actor,
    ) -> StoreResult<ApiToken> {
        let mut tx = self.db.write().await?;
        // Revoking sets the time once, in one statement, so that two revokes
        // racing on different nodes audit one revocation.
        let sql = format!(
            "UPDATE api_tokens SET revoked_at = $1
             WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $3 AND revoked_at IS NULL
             RETURNING {TOKEN_COLUMNS}"
        );
        let revoked = query_built(sql)
            .time(tx.now())
            .id(token_id)
            .opt_id(tenant_id)
            .fetch_optional(&mut tx)
            .await?;
        let Some(row) = revoked else {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens
                 WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2"
            );
            let row = query_built(sql)
                .id(token_id)
                .opt_id(tenant_id)
                .find(&mut tx, "token")
                .await?;
            return token_from_row(&row);
        };
        let after = token_from_row(&row)?;
        let before = ApiToken {
            revoked_at: None,
            ..after.clone()
        };
        Audit::new(tenant_id, actor, "token.revoke", &after.grant.name)
            .before(&token_audit_json(&before))
            .after(&token_audit_json(&after))
            .commit(tx)
            .await?;
        Ok(after)
    }

    async fn touch_api_token(&self, token_id: &str, at: OffsetDateTime) -> StoreResult<()> {
        self.touch_last_used("api_tokens", token_id, at).await
    }

    async fn has_super_admin(&self) -> StoreResult<bool> {
        let count: i64 = query("SELECT COUNT(*) FROM api_tokens WHERE role = 'super_admin'")
            .fetch_scalar(&self.db)
            .await?;
        Ok(count > 0)
    }
}

#[async_trait]
impl DirectoryStore for SqlStore {
    async fn create_group(
        &self,
        tenant_id: &str,
        display_name: &str,
        member_groups: &[String],
        actor: &Actor,
    ) -> StoreResult<Group> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let name_key = display_name.to_lowercase();
        let taken: Option<i64> =
            query("SELECT CAST(1 AS BIGINT) FROM groups WHERE tenant_id = $1 AND name_key = $2")
                .id(tenant_id)
                .bind(&name_key)
                .fetch_optional_scalar(&mut tx)
                .await?;
        if taken.is_some() {
            return Err(StoreError::Duplicate {
                what: "group",
                name: display_name.to_owned(),
            });
        }
        require_groups(&mut tx, tenant_id, member_groups).await?;
        let id = new_id();
        let at = self.db.now();
        query(
            "INSERT INTO groups (id, tenant_id, display_name, name_key, source, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'local', $5, $6)",
        )
        .id(&id)
        .id(tenant_id)
        .bind(display_name)
        .bind(&name_key)
        .time(at)
        .time(at)
        .execute(&mut tx)
        .await?;
        // A brand-new group contains nothing yet, so nesting groups inside it cannot close a cycle.
        for member in member_groups {
            query(
                "INSERT INTO group_nesting (container_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .id(&id)
            .id(member)
            .execute(&mut tx)
            .await?;
        }
        let after = json!({"id": id, "display_name": display_name, "member_groups": member_groups});
        Audit::new(Some(tenant_id), actor, "group.create", display_name)
            .after(&after)
            .commit_bumping(tx, tenant_id)
            .await?;
        self.group(tenant_id, &id).await
    }

    async fn delete_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &Actor,
        force: bool,
    ) -> StoreResult<Vec<String>> {
        self.delete_selectable_group(tenant_id, GroupKind::User, group_id, actor, force)
            .await
    }

    async fn search_groups(
        &self,
        tenant_id: &str,
        search: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Group>> {
        let (after_key, after_id) = keyset_after(cursor)?;
        let rows = query(
            "SELECT id, display_name, name_key, source FROM groups
             WHERE tenant_id = $1 AND name_key LIKE $2 ESCAPE '\\'
               AND (name_key > $3 OR (name_key = $4 AND id > $5))
             ORDER BY name_key, id LIMIT $6",
        )
        .id(tenant_id)
        .bind(like_pattern(search))
        .bind(&after_key)
        .bind(&after_key)
        .id(&after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.db)
        .await?;
        let mut conn = self.db.read().await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            items.push(group_from_row(&mut conn, row).await?);
        }
        let next_cursor = keyset_next(&rows, limit, "name_key")?;
        Ok(Page { items, next_cursor })
    }

    async fn count_groups(&self, tenant_id: &str, search: &str) -> StoreResult<u64> {
        let row = query(
            "SELECT COUNT(*) AS n FROM groups WHERE tenant_id = $1 AND name_key LIKE $2 ESCAPE '\\'",
        )
        .id(tenant_id)
        .bind(like_pattern(search))
        .find(&self.db, "group count")
        .await?;
        Ok(u64::try_from(row.get::<i64>("n")?).unwrap_or(0))
    }

    async fn search_users(
        &self,
        tenant_id: &str,
        search: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<User>> {
        // Login names are unique per tenant (case-insensitively), so the key
        // alone orders the keyset; the id is kept as a tie-break all the same.
        let (after_key, after_id) = keyset_after(cursor)?;
        let rows = query(
            "SELECT id, user_name, user_name_key, display_name, active FROM users
             WHERE tenant_id = $1 AND deleted_at IS NULL
               AND (user_name_key LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(display_name, '')) LIKE $2 ESCAPE '\\')
               AND (user_name_key > $3 OR (user_name_key = $3 AND id > $4))
             ORDER BY user_name_key, id LIMIT $5",
        )
        .id(tenant_id)
        .bind(like_pattern(search))
        .bind(&after_key)
        .id(&after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.db)
        .await?;
        let mut conn = self.db.read().await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            items.push(user_from_row(&mut conn, row).await?);
        }
        let next_cursor = keyset_next(&rows, limit, "user_name_key")?;
        Ok(Page { items, next_cursor })
    }

    async fn count_users(&self, tenant_id: &str, search: &str) -> StoreResult<u64> {
        let row = query(
            "SELECT COUNT(*) AS n FROM users
             WHERE tenant_id = $1 AND deleted_at IS NULL
               AND (user_name_key LIKE $2 ESCAPE '\\' OR LOWER(COALESCE(display_name, '')) LIKE $2 ESCAPE '\\')",
        )
        .id(tenant_id)
        .bind(like_pattern(search))
        .find(&self.db, "user count")
        .await?;
        Ok(u64::try_from(row.get::<i64>("n")?).unwrap_or(0))
    }

    async fn group(&self, tenant_id: &str, group_id: &str) -> StoreResult<Group> {
        let mut conn = self.db.read().await?;
        let row =
            query("SELECT id, display_name, source FROM groups WHERE tenant_id = $1 AND id = $2")
                .id(tenant_id)
                .id(group_id)
                .find(&mut conn, "group")
                .await?;
        group_from_row(&mut conn, &row).await
    }

    async fn create_user(
        &self,
        tenant_id: &str,
        user: NewUser,
        actor: &Actor,
    ) -> StoreResult<User> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        insert_user(&mut tx, tenant_id, &user, actor).await?;
        bump_data_version(&mut tx, tenant_id, None).await?;
        tx.commit().await?;
        self.user_by_name(tenant_id, &user.user_name).await
    }

    async fn user_by_name(&self, tenant_id: &str, user_name: &str) -> StoreResult<User> {
        let mut conn = self.db.read().await?;
        let row = query(
            "SELECT id, user_name, display_name, active FROM users WHERE tenant_id = $1 AND user_name_key = $2 AND deleted_at IS NULL",
        )
        .id(tenant_id)
        .bind(user_name.to_lowercase())
        .find(&mut conn, "user").await?;
        user_from_row(&mut conn, &row).await
    }

    async fn set_user_active(
        &self,
        tenant_id: &str,
        user_id: &str,
        active: bool,
        actor: &Actor,
    ) -> StoreResult<User> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let done =
            query("UPDATE users SET active = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
                .bind(active)
                .time(self.db.now())
                .id(tenant_id)
                .id(user_id)
                .execute(&mut tx)
                .await?;
        if done == 0 {
            return Err(StoreError::NotFound { what: "user" });
        }
        let row = query("SELECT id, user_name, display_name, active FROM users WHERE id = $1")
            .id(user_id)
            .fetch_one(&mut tx)
            .await?;
        let user = user_from_row(&mut tx, &row).await?;
        let action = if active {
            "user.activate"
        } else {
            "user.deactivate"
        };
        Audit::new(Some(tenant_id), actor, action, &user.user_name)
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(user)
    }

    async fn directory_counts(&self, tenant_id: &str) -> StoreResult<DirectoryCounts> {
        let users: i64 =
            query("SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND deleted_at IS NULL")
                .id(tenant_id)
                .fetch_scalar(&self.db)
                .await?;
        let groups: i64 = query("SELECT COUNT(*) FROM groups WHERE tenant_id = $1")
            .id(tenant_id)
            .fetch_scalar(&self.db)
            .await?;
        Ok(DirectoryCounts { users, groups })
    }

    async fn tenant_data(&self, tenant_id: &str) -> StoreResult<TenantData> {
        // One read transaction so that the snapshot is consistent.
        let mut tx = self.db.read_transaction().await?;
        let tenant = tenant_row(&mut tx, tenant_id).await?;
        let mut settings = std::collections::BTreeMap::new();
        for service in SERVICES {
            settings.insert(
                service.id.to_owned(),
                load_settings(&mut tx, &tenant, service).await?,
            );
        }
        // Users in one scan of the table, as one JSON array: the driver hands
        // rows over one at a time at several microseconds each, which at a
        // million users cost more than the read itself. No ORDER BY: in SQLite
        // an ordered read walks the id index and looks every row up; the
        // users are sorted here instead.
        let users_sql = format!(
            "SELECT {} AS users FROM users WHERE tenant_id = $1 AND deleted_at IS NULL",
            self.db
                .json_array_agg(&self.db.json_tuple(&["id", "user_name", "active"]))
        );
        let users_json: String = query_built(users_sql)
            .id(tenant_id)
            .fetch_one(&mut tx)
            .await?
            .get("users")?;
        let mut users: Vec<DirectoryUser> = serde_json::from_str::<Vec<UserTuple>>(&users_json)
            .map_err(|e| StoreError::Corrupt(format!("users of tenant {tenant_id}: {e}")))?
            .into_iter()
            .map(|UserTuple(id, user_name, active)| DirectoryUser {
                id,
                user_name,
                active: active.is_true(),
                groups: Vec::new(),
            })
            .collect();
        drop(users_json);
        users.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        // Memberships one row per group, its members as one JSON array: the
        // read walks the (group, user) key and crosses the driver a few
        // times, not once per membership.
        let members = self.db.json_array_agg("m.user_id");
        let membership_sql = format!(
            "SELECT g.id, {members} AS members FROM groups g
             JOIN user_memberships m ON m.group_id = g.id
             WHERE g.tenant_id = $1 GROUP BY g.id"
        );
        query_built(membership_sql)
            .id(tenant_id)
            .fetch_each(&mut tx, |row| {
                let group: String = row.id("id")?;
                let members: Vec<String> = serde_json::from_str(&row.get::<String>("members")?)
                    .map_err(|e| StoreError::Corrupt(format!("members of group {group}: {e}")))?;
                for member in members {
                    // A member that is not a live user (deleted) is no one's group.
                    let at = users.binary_search_by(|u| u.id.as_str().cmp(&member));
                    if let Some(user) = at.ok().and_then(|at| users.get_mut(at)) {
                        user.groups.push(group.clone());
                    }
                }
                Ok(())
            })
            .await?;
        let groups = query("SELECT id, display_name FROM groups WHERE tenant_id = $1")
            .id(tenant_id)
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| Ok((r.id("id")?, r.get("display_name")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let nesting = query(
            "SELECT n.container_id, n.member_id FROM group_nesting n JOIN groups g ON g.id = n.container_id
             WHERE g.tenant_id = $1",
        )
        .id(tenant_id)
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(|r| Ok((r.id("container_id")?, r.id("member_id")?)))
        .collect::<StoreResult<Vec<_>>>()?;
        let device_groups = load_device_groups(&mut tx, tenant_id).await?;
        let mut deleted_user_groups = Vec::new();
        let mut deleted_device_groups = Vec::new();
        for row in query("SELECT kind, id, name FROM deleted_groups WHERE tenant_id = $1")
            .id(tenant_id)
            .fetch_all(&mut tx)
            .await?
        {
            let kind: String = row.get("kind")?;
            let entry = (row.id("id")?, row.get("name")?);
            match kind.as_str() {
                "user" => deleted_user_groups.push(entry),
                _ => deleted_device_groups.push(entry),
            }
        }
        let as_of = tx.now();
        let grants = grants::live_grants(&mut tx, tenant_id, as_of).await?;
        tx.commit().await?;
        Ok(TenantData {
            tenant,
            settings,
            users,
            groups,
            nesting,
            device_groups,
            deleted_user_groups,
            deleted_device_groups,
            grants,
            as_of,
        })
    }
}

/// One user as `tenant_data` reads it: id, login name, active.
#[derive(serde::Deserialize)]
struct UserTuple(String, String, ActiveFlag);

/// `active` as each back end writes it in JSON: a boolean in PostgreSQL, 0 or
/// 1 in SQLite.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ActiveFlag {
    Bool(bool),
    Int(i64),
}

impl ActiveFlag {
    fn is_true(&self) -> bool {
        match self {
            ActiveFlag::Bool(active) => *active,
            ActiveFlag::Int(active) => *active != 0,
        }
    }
}

async fn load_device_groups(conn: &mut Conn<'_>, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>> {
    let rows = query(
        "SELECT id, name, rule_json FROM device_groups WHERE tenant_id = $1 ORDER BY name_key",
    )
    .id(tenant_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| device_group_from_row(r.id("id")?, r.get("name")?, &r.json("rule_json")?))
        .collect()
}

#[async_trait]
impl DeviceStore for SqlStore {
    async fn create_device_group(
        &self,
        tenant_id: &str,
        mut group: DeviceGroup,
        actor: &Actor,
    ) -> StoreResult<DeviceGroup> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        group.id = DeviceGroupId(new_id());
        let at = self.db.now();
        query(
            "INSERT INTO device_groups (id, tenant_id, name, name_key, rule_json, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .id(group.id.as_str())
        .id(tenant_id)
        .bind(&group.name)
        .bind(group.name.to_lowercase())
        .json(rule_to_json(&group))
        .time(at)
        .time(at)
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate(e, "device group", &group.name))?;
        let after = crate::device_group_to_json(&group);
        Audit::new(Some(tenant_id), actor, "device_group.create", &group.name)
            .after(&after)
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(group)
    }

    async fn update_device_group(
        &self,
        tenant_id: &str,
        group: DeviceGroup,
        actor: &Actor,
    ) -> StoreResult<DeviceGroup> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let before = load_device_groups(&mut tx, tenant_id)
            .await?
            .into_iter()
            .find(|g| g.id == group.id)
            .ok_or(StoreError::NotFound {
                what: "device group",
            })?;
        query("UPDATE device_groups SET name = $1, name_key = $2, rule_json = $3, updated_at = $4 WHERE id = $5")
            .bind(&group.name)
            .bind(group.name.to_lowercase())
            .json(rule_to_json(&group))
            .time(self.db.now())
            .id(group.id.as_str())
            .execute(&mut tx)
            .await
            .map_err(|e| duplicate(e, "device group", &group.name))?;
        let (before, after) = (
            crate::device_group_to_json(&before),
            crate::device_group_to_json(&group),
        );
        Audit::new(Some(tenant_id), actor, "device_group.update", &group.name)
            .before(&before)
            .after(&after)
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(group)
    }

    async fn delete_device_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &Actor,
        force: bool,
    ) -> StoreResult<Vec<String>> {
        self.delete_selectable_group(tenant_id, GroupKind::Device, group_id, actor, force)
            .await
    }

    async fn device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>> {
        let mut conn = self.db.read().await?;
        load_device_groups(&mut conn, tenant_id).await
    }

    async fn enroll_device(
        &self,
        tenant_id: &str,
        user: &User,
        token_hash: &str,
        report: &DeviceReport,
        at: OffsetDateTime,
        key: Option<&EnrollmentKey>,
    ) -> StoreResult<Device> {
        let mut tx = self.db.write().await?;
        let attested = match key {
            Some(key) => {
                // Counting the use first locks the key's row until commit, so a
                // key with one use left enrolls one device, not two racing
                // ones; a refused key rolls the count back.
                let row = query(
                    "UPDATE enrollment_keys SET uses = uses + 1 WHERE id = $1
                     RETURNING id, tenant_id, name, ownership, expires_at, max_uses, uses, revoked_at, created_at",
                )
                .id(&key.id)
                .find(&mut tx, "enrollment key").await?;
                let mut current = enrollment_key_from_row(&row)?;
                current.uses -= 1;
                if let Some(reason) = current.unusable(at) {
                    return Err(StoreError::KeyUnusable { reason });
                }
                current.ownership.map(|ownership| Attested {
                    ownership,
                    by: AttestedBy::EnrollmentKey,
                })
            }
            None => None,
        };
        let pending_approval = tenant_row(&mut tx, tenant_id).await?.device_approval;
        let enrolled = Enrollment {
            user,
            token_hash,
            report,
            at,
        };
        let device = insert_device(
            &mut tx,
            tenant_id,
            &enrolled,
            attested,
            key.map(|k| k.name.as_str()),
            pending_approval,
        )
        .await?;
        tx.commit().await?;
        Ok(device)
    }

    async fn device_by_token(&self, token_hash: &str) -> StoreResult<AuthenticatedDevice> {
        // One indexed read answers both who the device is and whether this
        // node's snapshot of its tenant is current.
        let row = query(
            "SELECT d.id, d.tenant_id, d.user_id, u.user_name, d.report_json, d.enrolled_at,
                    d.last_sync_at, d.attested_ownership, d.attested_by, d.pending_approval,
                    d.applied_config_version, d.applied_at, d.service_states, cv.at AS applied_saved_at,
                    t.data_version, t.device_trust_version
             FROM devices d JOIN users u ON u.id = d.user_id JOIN tenants t ON t.id = d.tenant_id
             LEFT JOIN config_versions cv ON cv.tenant_id = d.tenant_id AND cv.version = d.applied_config_version
             WHERE d.token_hash = $1",
        )
        .bind(token_hash)
        .find(&self.db, "device").await?;
        Ok(AuthenticatedDevice {
            device: device_from_row(&row)?,
            tenant_versions: tenant_versions_from_row(&row)?,
        })
    }

    async fn device(&self, tenant_id: &str, device_id: &str) -> StoreResult<Device> {
        let row = query(device_select!("WHERE d.tenant_id = $1 AND d.id = $2"))
            .id(tenant_id)
            .id(device_id)
            .find(&self.db, "device")
            .await?;
        device_from_row(&row)
    }

    async fn record_sync(
        &self,
        device_id: &str,
        report: Option<&DeviceReport>,
        applied: Option<&Applied>,
        at: OffsetDateTime,
        moved: Option<&DeviceMove>,
    ) -> StoreResult<()> {
        if report.is_none() && applied.is_none() {
            self.record_last_seen(&[device_id.to_owned()], at).await?;
            return Ok(());
        }
        let mut tx = self.db.write().await?;
        if let Some(applied) = applied {
            write_applied(&mut tx, device_id, applied, at).await?;
        }
        let Some(report) = report else {
            tx.commit().await?;
            return Ok(());
        };
        // The report is what decisions read: marked changed (see
        // `mark_device_changed`). A report the store holds already was
        // written by a sync of the device on another node, whose cache was
        // newer than this one's: neither written nor audited again.
        let written = query(
            "UPDATE devices SET report_json = $1, hostname_key = $2, last_sync_at = $3, revision = NULL
             WHERE id = $4 AND report_json <> $1",
        )
        .json(report_to_json(report).to_string())
        .bind(report.hostname.to_lowercase())
        .time(at)
        .id(device_id)
        .execute(&mut tx)
        .await?;
        if let Some(moved) = moved.filter(|_| written > 0) {
            Audit::new(
                Some(&moved.tenant_id),
                &moved.actor,
                "device.groups_changed",
                &report.hostname,
            )
            .before(&json!({"device_groups": moved.before}))
            .after(&json!({"device_groups": moved.after}))
            .write(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_applied(&self, syncs: &[AppliedSync]) -> StoreResult<()> {
        if syncs.is_empty() {
            return Ok(());
        }
        // Rows locked in id order, as `record_last_seen` locks them, so that
        // two batches sharing devices (on PostgreSQL, from two nodes) queue
        // instead of deadlocking.
        let mut in_order: Vec<&AppliedSync> = syncs.iter().collect();
        in_order.sort_unstable_by(|a, b| a.device_id.cmp(&b.device_id));
        let mut tx = self.db.write().await?;
        for sync in in_order {
            write_applied(&mut tx, &sync.device_id, &sync.applied, sync.at).await?;
        }
        tx.commit().await
    }

    async fn record_last_seen(
        &self,
        device_ids: &[String],
        at: OffsetDateTime,
    ) -> StoreResult<u64> {
        if device_ids.is_empty() {
            return Ok(0);
        }
        let _turn = self.db.single_write().await;
        // The rows are locked in id order (see `record_applied`).
        let sql = format!(
            "UPDATE devices SET last_sync_at = $1 WHERE id IN
                 (SELECT id FROM devices WHERE id IN {} ORDER BY id{})",
            self.db.id_set(2),
            self.db.for_update()
        );
        query_built(sql)
            .time(at)
            .ids(device_ids)
            .execute(&self.db)
            .await
    }

    async fn change_device(
        &self,
        tenant_id: &str,
        device_id: &str,
        change: &DeviceChange,
        actor: &Actor,
    ) -> StoreResult<Device> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let before = device_row(&mut tx, tenant_id, device_id).await?;
        if let Some(ownership) = change.ownership {
            query("UPDATE devices SET attested_ownership = $1, attested_by = $2 WHERE id = $3")
                .bind(ownership.map(|o| o.as_str()))
                .bind(ownership.map(|_| AttestedBy::Admin.as_str()))
                .id(device_id)
                .execute(&mut tx)
                .await?;
        }
        if change.approve == Some(true) {
            query("UPDATE devices SET pending_approval = FALSE WHERE id = $1")
                .id(device_id)
                .execute(&mut tx)
                .await?;
        }
        let after = device_row(&mut tx, tenant_id, device_id).await?;
        // Approving an approved device, or attesting what is attested, changes
        // nothing and is not recorded.
        if device_trust_json(&before) == device_trust_json(&after) {
            tx.commit().await?;
            return Ok(after);
        }
        mark_device_changed(&mut tx, device_id).await?;
        // Decisions depend on both, so every node's snapshot must notice.
        Audit::new(
            Some(tenant_id),
            actor,
            device_change_action(change),
            &after.report.hostname,
        )
        .before(&device_trust_json(&before))
        .after(&device_trust_json(&after))
        .commit_bumping_device(tx, tenant_id, &after)
        .await?;
        Ok(after)
    }

    async fn devices(
        &self,
        tenant_id: &str,
        filter: &DeviceFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Device>> {
        let key = device_sort_key(&self.db, filter.sort);
        let after = match cursor {
            Some(cursor) => Some(decode_device_cursor(cursor, filter)?),
            None => None,
        };
        let (compare, order) = if filter.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        // Keyset: rows strictly after (key, id) in the listing's order, so that
        // inserts and deletes between pages neither repeat nor skip a row.
        let (keyset, limit_at, ids_param) = if after.is_some() {
            (
                // A row value, which both back ends match to the (key, id) index.
                format!(" AND ({key}, d.id) {compare} ($11, $12)"),
                "$13",
                14,
            )
        } else {
            (String::new(), "$11", 12)
        };
        let sql = format!(
            "{}{}{keyset} ORDER BY {key} {order}, d.id {order} LIMIT {limit_at}",
            device_select!(""),
            device_where(&self.db, filter, ids_param)
        );
        let mut q = bind_device_filter(query_built(sql), tenant_id, filter);
        q = match &after {
            Some((DeviceKey::Text(text), id)) => q.bind(text.as_str()).id(id),
            Some((DeviceKey::Time(at), id)) => q.time(*at).id(id),
            None => q,
        };
        let rows = bind_device_ids(q.bind(i64::from(limit) + 1), filter)
            .fetch_all(&self.db)
            .await?;
        let items: Vec<Device> = rows
            .iter()
            .take(limit as usize)
            .map(device_from_row)
            .collect::<StoreResult<_>>()?;
        let next_cursor = (rows.len() > limit as usize)
            .then(|| {
                items
                    .last()
                    .map(|d| filter.sort.cursor_after(filter.descending, d))
            })
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn count_devices(&self, tenant_id: &str, filter: &DeviceFilter) -> StoreResult<u64> {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM devices d JOIN users u ON u.id = d.user_id {}",
            device_where(&self.db, filter, 11)
        );
        let row = bind_device_ids(
            bind_device_filter(query_built(sql), tenant_id, filter),
            filter,
        )
        .find(&self.db, "device count")
        .await?;
        let n: i64 = row.get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn device_changes(
        &self,
        tenant_id: &str,
        since: Option<i64>,
        each: &mut (dyn FnMut(Device) -> StoreResult<()> + Send),
    ) -> StoreResult<DeviceChanges> {
        stamp_changed_devices(&self.db, tenant_id).await?;
        let mut conn = self.db.read().await?;
        // The revision first: every stamp up to it has committed (see
        // `stamp_changed_devices`), so the reads below see all of them; a
        // row marked after the stamping is handed over by the next call.
        let revision = query("SELECT revision FROM device_revisions WHERE tenant_id = $1")
            .id(tenant_id)
            .fetch_optional_scalar::<i64>(&mut conn)
            .await?
            .unwrap_or(0);
        // A counter behind the caller's (a database restored from a backup)
        // means its copy cannot be patched: it gets every device again.
        let since = since.filter(|&since| since <= revision);
        let Some(since) = since else {
            query(device_select!("WHERE d.tenant_id = $1"))
                .id(tenant_id)
                .fetch_each(&mut conn, |row| each(device_from_row(&row)?))
                .await?;
            return Ok(DeviceChanges {
                revision,
                everything: true,
                removed: Vec::new(),
            });
        };
        query(device_select!("WHERE d.tenant_id = $1 AND d.revision > $2"))
            .id(tenant_id)
            .bind(since)
            .fetch_each(&mut conn, |row| each(device_from_row(&row)?))
            .await?;
        let removed = query(
            "SELECT device_id AS id FROM device_removals WHERE tenant_id = $1 AND revision > $2",
        )
        .id(tenant_id)
        .bind(since)
        .fetch_ids(&mut conn)
        .await?;
        Ok(DeviceChanges {
            revision,
            everything: false,
            removed,
        })
    }

    async fn delete_device(
        &self,
        tenant_id: &str,
        device_id: &str,
        actor: &Actor,
    ) -> StoreResult<Device> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let row = query(device_select!("WHERE d.tenant_id = $1 AND d.id = $2"))
            .id(tenant_id)
            .id(device_id)
            .find(&mut tx, "device")
            .await?;
        let device = device_from_row(&row)?;
        query("DELETE FROM devices WHERE id = $1")
            .id(device_id)
            .execute(&mut tx)
            .await?;
        query("INSERT INTO device_removals (tenant_id, device_id, revision) VALUES ($1, $2, NULL)")
            .id(tenant_id)
            .id(device_id)
            .execute(&mut tx)
            .await?;
        let before = json!({"id": device.id, "user_name": device.user_name, "device": report_to_json(&device.report)});
        Audit::new(
            Some(tenant_id),
            actor,
            "device.delete",
            &device.report.hostname,
        )
        .before(&before)
        .commit_bumping_device(tx, tenant_id, &device)
        .await?;
        Ok(device)
    }
}

#[async_trait]
impl ConfigStore for SqlStore {
    async fn settings(
        &self,
        tenant_id: &str,
        service: &'static ServiceDef,
    ) -> StoreResult<StoredSettings> {
        let mut conn = self.db.read().await?;
        let tenant = tenant_row(&mut conn, tenant_id).await?;
        load_settings(&mut conn, &tenant, service).await
    }

    async fn save_settings(&self, tenant_id: &str, request: SaveRequest) -> StoreResult<Saved> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let saved = save_in(&mut tx, tenant_id, &request).await?;
        tx.commit().await?;
        Ok(saved)
    }

    async fn config_version(&self, tenant_id: &str, version: i64) -> StoreResult<ConfigVersion> {
        let row = query(
            "SELECT version, service, actor, actor_kind, actor_id, at, before_json, after_json, restored_from FROM config_versions
             WHERE tenant_id = $1 AND version = $2",
        )
        .id(tenant_id)
        .bind(version)
        .find(&self.db, "config version").await?;
        config_version_from_row(&row)
    }

    async fn history(
        &self,
        tenant_id: &str,
        service: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ConfigVersion>> {
        query(
            "SELECT version, service, actor, actor_kind, actor_id, at, before_json, after_json, restored_from FROM config_versions
             WHERE tenant_id = $1 AND ($2 IS NULL OR service = $3) ORDER BY version DESC LIMIT $4",
        )
        .id(tenant_id)
        .bind(service)
        .bind(service)
        .bind(i64::from(limit))
        .fetch_all_as(&self.db, config_version_from_row).await
    }

    async fn history_before(
        &self,
        tenant_id: &str,
        service: Option<&str>,
        limit: u32,
        before: Option<i64>,
    ) -> StoreResult<Vec<ConfigVersion>> {
        query(
            "SELECT version, service, actor, actor_kind, actor_id, at, before_json, after_json, restored_from FROM config_versions
             WHERE tenant_id = $1 AND ($2 IS NULL OR service = $3) AND version < $4
             ORDER BY version DESC LIMIT $5",
        )
        .id(tenant_id)
        .bind(service)
        .bind(service)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all_as(&self.db, config_version_from_row).await
    }

    async fn audit(
        &self,
        tenant_id: &str,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        self.audit_page(tenant_id, &AuditFilter::default(), limit, before_id)
            .await
    }

    async fn audit_filtered(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        self.audit_page(tenant_id, filter, limit, before_id).await
    }

    async fn append_audit(
        &self,
        tenant_id: Option<&str>,
        actor: &Actor,
        action: &str,
        target: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> StoreResult<()> {
        Audit::new(tenant_id, actor, action, target)
            .before(before)
            .after(after)
            .commit(self.db.write().await?)
            .await
    }

    async fn touch_scim(&self, tenant_id: &str, at: OffsetDateTime) -> StoreResult<()> {
        let _turn = self.db.single_write().await;
        query("UPDATE tenants SET last_scim_request_at = $1 WHERE id = $2")
            .time(at)
            .id(tenant_id)
            .execute(&self.db)
            .await?;
        Ok(())
    }
}

fn actor_from_row(row: &Row) -> StoreResult<Actor> {
    let kind: String = row.get("actor_kind")?;
    Ok(Actor::new(
        ActorKind::parse(&kind),
        row.get::<String>("actor_id")?,
        row.get::<String>("actor")?,
    ))
}

fn config_version_from_row(row: &Row) -> StoreResult<ConfigVersion> {
    Ok(ConfigVersion {
        version: row.get("version")?,
        service: row.get("service")?,
        actor: actor_from_row(row)?,
        at: row.time("at")?,
        before: settings_from_json(&row.json("before_json")?)?,
        after: settings_from_json(&row.json("after_json")?)?,
        restored_from: row.get("restored_from")?,
    })
}

fn account_from_row(row: &Row) -> StoreResult<Account> {
    let role: String = row.get("role")?;
    Ok(Account {
        id: row.id("id")?,
        tenant_id: row.opt_id("tenant_id")?,
        email: row.get("email")?,
        password_hash: row.get("password_hash")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        created_at: row.time("created_at")?,
        disabled_at: row.opt_time("disabled_at")?,
    })
}

const ACCOUNT_COLUMNS: &str =
    "a.id, a.tenant_id, a.email, a.password_hash, a.role, a.created_at, a.disabled_at";

/// What the audit log keeps of an account: never its password hash.
fn account_audit_json(account: &Account) -> Value {
    json!({
        "id": account.id,
        "email": account.email,
        "role": account.role.as_str(),
        "disabled": account.disabled_at.is_some(),
    })
}

/// One account of a tenant (or a super admin for `None`); `for_update` locks its row.
async fn account_row(
    conn: &mut Conn<'_>,
    tenant_id: Option<&str>,
    account_id: &str,
    for_update: bool,
) -> StoreResult<Account> {
    let sql = format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts a
         WHERE a.id = $1 AND a.tenant_id IS NOT DISTINCT FROM $2{}",
        if for_update { conn.for_update() } else { "" }
    );
    let row = query_built(sql)
        .id(account_id)
        .opt_id(tenant_id)
        .find(conn, "account")
        .await?;
    account_from_row(&row)
}

/// What a device's agent applied, with the sync's time. Telemetry, not a
/// change of anyone's access: not audited, and no data-version bump, since no
/// decision depends on it.
async fn write_applied(
    tx: &mut Conn<'_>,
    device_id: &str,
    applied: &Applied,
    at: OffsetDateTime,
) -> StoreResult<()> {
    query(
        "UPDATE devices SET applied_config_version = $1, applied_at = $2, service_states = $3,
                            last_sync_at = $4 WHERE id = $5",
    )
    .bind(applied.config_version)
    .time(applied.at)
    .json(service_states_to_json(&applied.services))
    .time(at)
    .id(device_id)
    .execute(tx)
    .await?;
    Ok(())
}

async fn delete_sessions(conn: &mut Conn<'_>, account_id: &str) -> StoreResult<u64> {
    let done = query("DELETE FROM sessions WHERE account_id = $1")
        .id(account_id)
        .execute(conn)
        .await?;
    Ok(done)
}

/// Applies an account change in a write transaction and audits each part of
/// it; `before` is the account as locked by the caller.
async fn update_account_in(
    tx: &mut Conn<'_>,
    tenant_id: Option<&str>,
    before: Account,
    change: AccountChange,
    actor: &Actor,
) -> StoreResult<Account> {
    let account_id = before.id.as_str();
    let mut actions = Vec::new();
    if let Some(role) = change.role
        && role != before.role
    {
        query("UPDATE accounts SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .id(account_id)
            .execute(&mut *tx)
            .await?;
        actions.push("account.role");
    }
    match change.disabled {
        Some(true) if before.disabled_at.is_none() => {
            query("UPDATE accounts SET disabled_at = $1 WHERE id = $2")
                .time(tx.now())
                .id(account_id)
                .execute(&mut *tx)
                .await?;
            delete_sessions(tx, account_id).await?;
            actions.push("account.disable");
        }
        Some(false) if before.disabled_at.is_some() => {
            query(
                "UPDATE accounts SET disabled_at = NULL
                     WHERE id = $1",
            )
            .id(account_id)
            .execute(&mut *tx)
            .await?;
            actions.push("account.enable");
        }
        _ => {}
    }
    let after = account_row(tx, tenant_id, account_id, false).await?;
    for action in actions {
        Audit::new(tenant_id, actor, action, &after.email)
            .before(&account_audit_json(&before))
            .after(&account_audit_json(&after))
            .write(tx)
            .await?;
    }
    Ok(after)
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, new: NewAccount, actor: &Actor) -> StoreResult<Account> {
        let mut tx = self.db.write().await?;
        let id = new_id();
        query(
            "INSERT INTO accounts (id, tenant_id, email, email_key, password_hash, role, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .id(&id)
        .opt_id(new.tenant_id.as_deref())
        .bind(&new.email)
        .bind(new.email.trim().to_lowercase())
        .bind(&new.password_hash)
        .bind(new.role.as_str())
        .time(self.db.now())
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate(e, "account", &new.email))?;
        let account = account_row(&mut tx, new.tenant_id.as_deref(), &id, false).await?;
        Audit::new(
            new.tenant_id.as_deref(),
            actor,
            "account.create",
            &new.email,
        )
        .after(&account_audit_json(&account))
        .commit(tx)
        .await?;
        Ok(account)
    }

    async fn accounts_by_email(&self, email: &str) -> StoreResult<Vec<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.email_key = $1
             ORDER BY a.created_at, a.id"
        );
        query_built(sql)
            .bind(email.trim().to_lowercase())
            .fetch_all_as(&self.db, account_from_row)
            .await
    }

    async fn accounts(&self, tenant_id: &str) -> StoreResult<Vec<Account>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.tenant_id = $1
             ORDER BY a.email_key, a.id"
        );
        query_built(sql)
            .id(tenant_id)
            .fetch_all_as(&self.db, account_from_row)
            .await
    }

    async fn account(&self, tenant_id: Option<&str>, account_id: &str) -> StoreResult<Account> {
        let mut conn = self.db.read().await?;
        account_row(&mut conn, tenant_id, account_id, false).await
    }

    async fn update_account(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> StoreResult<Account> {
        let mut tx = self.db.write().await?;
        let before = account_row(&mut tx, tenant_id, account_id, true).await?;
        let after = update_account_in(&mut tx, tenant_id, before, change, actor).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn set_account_password(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        password_hash: &str,
        end_sessions: bool,
        actor: &Actor,
    ) -> StoreResult<()> {
        let mut tx = self.db.write().await?;
        let account = account_row(&mut tx, tenant_id, account_id, true).await?;
        query(
            "UPDATE accounts SET password_hash = $1
             WHERE id = $2",
        )
        .bind(password_hash)
        .id(account_id)
        .execute(&mut tx)
        .await?;
        let ended = if end_sessions {
            delete_sessions(&mut tx, account_id).await?
        } else {
            0
        };
        Audit::new(tenant_id, actor, "account.password", &account.email)
            .after(&json!({"id": account.id, "sessions_ended": ended}))
            .commit(tx)
            .await?;
        Ok(())
    }

    async fn end_sessions(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        actor: &Actor,
    ) -> StoreResult<u64> {
        let mut tx = self.db.write().await?;
        let account = account_row(&mut tx, tenant_id, account_id, true).await?;
        let ended = delete_sessions(&mut tx, account_id).await?;
        Audit::new(tenant_id, actor, "account.sessions_end", &account.email)
            .after(&json!({"id": account.id, "sessions_ended": ended}))
            .commit(tx)
            .await?;
        Ok(ended)
    }

    async fn create_session(
        &self,
        token_hash: &str,
        account_id: &str,
        csrf_token: &str,
        expires_at: OffsetDateTime,
    ) -> StoreResult<()> {
        use crate::AccountAdminStore;
        let new = crate::NewSession {
            token_hash: token_hash.to_owned(),
            account_id: account_id.to_owned(),
            csrf_token: csrf_token.to_owned(),
            expires_at,
            client: crate::SessionClient::default(),
        };
        self.start_session(new).await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> StoreResult<Session> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, s.id AS session_id, s.csrf_token, s.expires_at,
                    s.created_at AS session_created_at, s.last_seen_at
             FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.token_hash = $1 AND s.expires_at > $2 AND a.disabled_at IS NULL"
        );
        let row = query_built(sql)
            .bind(token_hash)
            .time(self.db.now())
            .find(&self.db, "session")
            .await?;
        Ok(Session {
            id: row.id("session_id")?,
            last_seen_at: match row.opt_time("last_seen_at")? {
                Some(at) => at,
                None => row.time("session_created_at")?,
            },
            account: account_from_row(&row)?,
            csrf_token: row.get("csrf_token")?,
            expires_at: row.time("expires_at")?,
        })
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        let _turn = self.db.single_write().await;
        query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.db)
            .await?;
        Ok(())
    }
}
