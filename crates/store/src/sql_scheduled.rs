//! Scheduled changes, written once for both back ends. The rules are in
//! `scheduled.rs`: checked when scheduled, applied once under the tenant's
//! write lock with the claim, the save and the outcome in one transaction.

use async_trait::async_trait;
use entitle_core::service;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Audit, SqlStore, check_save, new_id, save_in, tenant_row};
use crate::codec::{settings_from_json, settings_to_json};
use crate::dialect::{Row, query, query_built};
use crate::scheduled::{
    DueChange, MAX_PENDING_CHANGES, NewScheduledChange, SCHEDULED_CHANGES_LISTED, ScheduledChange,
    ScheduledChangeStore, ScheduledStatus,
};
use crate::{Actor, ActorKind, SaveRequest, StoreError, StoreResult};

const COLUMNS: &str = "id, tenant_id, service, settings_json, expected_version, apply_at, status,
    created_at, created_by, created_by_kind, created_by_id, outcome_at, outcome_message,
    config_version, outcome_by";

/// A change applied this much after its time is reported as late.
const LATE_AFTER: time::Duration = time::Duration::seconds(2);

fn change_from_row(row: &Row) -> StoreResult<ScheduledChange> {
    let status: String = row.get("status")?;
    Ok(ScheduledChange {
        id: row.id("id")?,
        tenant_id: row.id("tenant_id")?,
        service: row.get("service")?,
        settings: settings_from_json(&row.json("settings_json")?)?,
        expected_version: row.get("expected_version")?,
        apply_at: row.time("apply_at")?,
        status: ScheduledStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("scheduled change status {status:?}")))?,
        created_at: row.time("created_at")?,
        created_by: Actor::new(
            ActorKind::parse(&row.get::<String>("created_by_kind")?),
            row.get::<String>("created_by_id")?,
            row.get::<String>("created_by")?,
        ),
        outcome_at: row.opt_time("outcome_at")?,
        outcome_message: row.get("outcome_message")?,
        config_version: row.get("config_version")?,
        outcome_by: row.get("outcome_by")?,
    })
}

/// What the audit log keeps of a scheduled change.
fn change_audit(change: &ScheduledChange) -> Value {
    let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
    json!({
        "id": change.id,
        "service": change.service,
        "apply_at": time(Some(change.apply_at)),
        "expected_version": change.expected_version,
        "settings": settings_to_json(&change.settings),
        "status": change.status.as_str(),
        "scheduled_by": change.created_by.display(),
        "outcome_at": time(change.outcome_at),
        "outcome_message": change.outcome_message,
        "config_version": change.config_version,
    })
}

/// Words for a duration, as an audit message says how late a change was.
fn words(late: time::Duration) -> String {
    let seconds = late.whole_seconds();
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[async_trait]
impl ScheduledChangeStore for SqlStore {
    async fn schedule_change(
        &self,
        tenant_id: &str,
        change: NewScheduledChange,
    ) -> StoreResult<ScheduledChange> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let pending: i64 = query(
            "SELECT COUNT(*) FROM scheduled_changes WHERE tenant_id = $1 AND status = 'pending'",
        )
        .id(tenant_id)
        .fetch_scalar(&mut tx)
        .await?;
        if pending >= i64::from(MAX_PENDING_CHANGES) {
            return Err(StoreError::Refused {
                code: "too_many_pending",
                message: format!(
                    "a tenant may have at most {MAX_PENDING_CHANGES} pending changes; cancel some or wait until they are applied"
                ),
            });
        }
        let request = SaveRequest {
            service: change.service,
            expected_version: change.expected_version,
            settings: change.settings.clone(),
            actor: change.actor.clone(),
            action: "entitlement.save",
            check_default_rule: true,
            restored_from: None,
        };
        let (_, current) = check_save(&mut tx, tenant_id, &request).await?;
        let now = tx.now();
        let stored = ScheduledChange {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            service: change.service.id.to_owned(),
            settings: change.settings,
            // Without If-Match, the change is made on top of what is stored now:
            // a save in between is a conflict at apply time, not overwritten.
            expected_version: change.expected_version.unwrap_or(current.version),
            apply_at: change.apply_at,
            status: ScheduledStatus::Pending,
            created_at: now,
            created_by: change.actor,
            outcome_at: None,
            outcome_message: None,
            config_version: None,
            outcome_by: None,
        };
        query(
            "INSERT INTO scheduled_changes (id, tenant_id, service, settings_json, expected_version,
                apply_at, status, created_at, created_by, created_by_kind, created_by_id)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10)",
        )
        .id(&stored.id)
        .id(tenant_id)
        .bind(&stored.service)
        .json(settings_to_json(&stored.settings).to_string())
        .bind(stored.expected_version)
        .time(stored.apply_at)
        .time(now)
        .bind(&stored.created_by.name)
        .bind(stored.created_by.kind.as_str())
        .bind(&stored.created_by.id)
        .execute(&mut tx)
        .await?;
        let after = change_audit(&stored);
        Audit::new(
            Some(tenant_id),
            &stored.created_by,
            "scheduled_change.create",
            &stored.service,
        )
        .after(&after)
        .commit(tx)
        .await?;
        Ok(stored)
    }

    async fn scheduled_changes(
        &self,
        tenant_id: &str,
        service: Option<&str>,
    ) -> StoreResult<Vec<ScheduledChange>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM scheduled_changes
              WHERE tenant_id = $1 AND status = 'pending' AND ($2 IS NULL OR service = $3)
              ORDER BY apply_at, id LIMIT $4"
        );
        let mut changes = query_built(sql)
            .id(tenant_id)
            .bind(service)
            .bind(service)
            .bind(MAX_PENDING_CHANGES)
            .fetch_all_as(&self.db, change_from_row)
            .await?;
        let rest = SCHEDULED_CHANGES_LISTED.saturating_sub(changes.len() as u32);
        let sql = format!(
            "SELECT {COLUMNS} FROM scheduled_changes
              WHERE tenant_id = $1 AND status <> 'pending' AND ($2 IS NULL OR service = $3)
              ORDER BY outcome_at DESC, id LIMIT $4"
        );
        changes.extend(
            query_built(sql)
                .id(tenant_id)
                .bind(service)
                .bind(service)
                .bind(rest)
                .fetch_all_as(&self.db, change_from_row)
                .await?,
        );
        Ok(changes)
    }

    async fn scheduled_change(&self, tenant_id: &str, id: &str) -> StoreResult<ScheduledChange> {
        let sql =
            format!("SELECT {COLUMNS} FROM scheduled_changes WHERE tenant_id = $1 AND id = $2");
        let row = query_built(sql)
            .id(tenant_id)
            .id(id)
            .find(&self.db, "scheduled change")
            .await?;
        change_from_row(&row)
    }

    async fn cancel_scheduled_change(
        &self,
        tenant_id: &str,
        id: &str,
        actor: &Actor,
    ) -> StoreResult<ScheduledChange> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM scheduled_changes WHERE tenant_id = $1 AND id = $2 {}",
            tx.for_update()
        );
        let row = query_built(sql)
            .id(tenant_id)
            .id(id)
            .find(&mut tx, "scheduled change")
            .await?;
        let mut change = change_from_row(&row)?;
        if change.status != ScheduledStatus::Pending {
            return Err(StoreError::Refused {
                code: "not_pending",
                message: format!(
                    "the change is {} already; only a pending change can be cancelled",
                    change.status.as_str()
                ),
            });
        }
        let now = tx.now();
        let by = actor.display();
        query(
            "UPDATE scheduled_changes SET status = 'cancelled', outcome_at = $1, outcome_by = $2
              WHERE id = $3 AND status = 'pending'",
        )
        .time(now)
        .bind(&by)
        .id(id)
        .execute(&mut tx)
        .await?;
        let before = change_audit(&change);
        change.status = ScheduledStatus::Cancelled;
        change.outcome_at = Some(now);
        change.outcome_by = Some(by);
        let after = change_audit(&change);
        Audit::new(
            Some(tenant_id),
            actor,
            "scheduled_change.cancel",
            &change.service,
        )
        .before(&before)
        .after(&after)
        .commit(tx)
        .await?;
        Ok(change)
    }

    async fn due_changes(&self, now: OffsetDateTime, limit: u32) -> StoreResult<Vec<DueChange>> {
        query(
            "SELECT tenant_id, id FROM scheduled_changes
              WHERE status = 'pending' AND apply_at <= $1 ORDER BY apply_at, id LIMIT $2",
        )
        .time(now)
        .bind(limit)
        .fetch_all_as(&self.db, |row| {
            Ok(DueChange {
                tenant_id: row.id("tenant_id")?,
                id: row.id("id")?,
            })
        })
        .await
    }

    async fn next_change_at(&self) -> StoreResult<Option<OffsetDateTime>> {
        let row = query(
            "SELECT apply_at FROM scheduled_changes WHERE status = 'pending'
              ORDER BY apply_at LIMIT 1",
        )
        .fetch_optional(&self.db)
        .await?;
        row.map(|row| row.time("apply_at")).transpose()
    }

    async fn apply_scheduled_change(
        &self,
        tenant_id: &str,
        id: &str,
        node: &str,
    ) -> StoreResult<Option<ScheduledChange>> {
        // The tenant's write lock serialises this with every other node's
        // attempt and with cancels: whoever comes second finds it no longer
        // pending. The claim commits with the save, so a crash before the
        // commit leaves it pending.
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM scheduled_changes WHERE tenant_id = $1 AND id = $2 {}",
            tx.for_update()
        );
        let Some(row) = query_built(sql)
            .id(tenant_id)
            .id(id)
            .fetch_optional(&mut tx)
            .await?
        else {
            return Ok(None);
        };
        let mut change = change_from_row(&row)?;
        let now = tx.now();
        if change.status != ScheduledStatus::Pending || change.apply_at > now {
            return Ok(None);
        }
        let late_by = now - change.apply_at;
        let late = late_by >= LATE_AFTER;
        let config_before = tenant_row(&mut tx, tenant_id).await?.config_version;
        let revoked = creator_cannot_save(&mut tx, tenant_id, &change.created_by, now).await?;
        let outcome = match (revoked, service(&change.service)) {
            (Some(reason), _) => Err(StoreError::CreatorRevoked(reason)),
            (None, Ok(def)) => {
                let request = SaveRequest {
                    service: def,
                    expected_version: Some(change.expected_version),
                    settings: change.settings.clone(),
                    actor: change.created_by.clone(),
                    action: "entitlement.save",
                    check_default_rule: true,
                    restored_from: None,
                };
                save_in(&mut tx, tenant_id, &request).await
            }
            (None, Err(error)) => Err(StoreError::Corrupt(error.to_string())),
        };
        let lateness = late.then(|| {
            format!(
                "applied {} late: no node was running at its time",
                words(late_by)
            )
        });
        let (status, message, version) = match outcome {
            Ok(saved) => {
                let changed = saved.config_version != config_before;
                let message = match (changed, lateness) {
                    (true, late) => late,
                    (false, None) => {
                        Some("the settings already were these; nothing changed".to_owned())
                    }
                    (false, Some(late)) => Some(format!(
                        "{late}; the settings already were these, nothing changed"
                    )),
                };
                (
                    ScheduledStatus::Applied,
                    message,
                    changed.then_some(saved.config_version),
                )
            }
            Err(error @ StoreError::Stale { .. }) => (
                ScheduledStatus::Conflict,
                Some(format!(
                    "not applied: the settings were saved again after this change was scheduled (it was made on version {}); {error}",
                    change.expected_version
                )),
                None,
            ),
            Err(
                error @ (StoreError::Invalid(_)
                | StoreError::Corrupt(_)
                | StoreError::CreatorRevoked(_)),
            ) => (
                ScheduledStatus::Failed,
                Some(format!("not applied: {error}")),
                None,
            ),
            Err(other) => return Err(other),
        };
        let claimed = query(
            "UPDATE scheduled_changes
                SET status = $1, outcome_at = $2, outcome_message = $3, config_version = $4, outcome_by = $5
              WHERE id = $6 AND status = 'pending'",
        )
        .bind(status.as_str())
        .time(now)
        .bind(message.clone())
        .bind(version)
        .bind(node)
        .id(id)
        .execute(&mut tx)
        .await?;
        if claimed != 1 {
            // Unreachable under the lock; never apply twice if it were not.
            return Ok(None);
        }
        let before = change_audit(&change);
        change.status = status;
        change.outcome_at = Some(now);
        change.outcome_message = message;
        change.config_version = version;
        change.outcome_by = Some(node.to_owned());
        let mut after = change_audit(&change);
        if let Some(fields) = after.as_object_mut() {
            fields.insert("late".to_owned(), json!(late));
            fields.insert(
                "late_by_seconds".to_owned(),
                json!(late_by.whole_milliseconds() as f64 / 1000.0),
            );
            fields.insert("node".to_owned(), json!(node));
        }
        let action = match status {
            ScheduledStatus::Applied => "scheduled_change.apply",
            ScheduledStatus::Conflict => "scheduled_change.conflict",
            _ => "scheduled_change.fail",
        };
        Audit::new(Some(tenant_id), &change.created_by, action, &change.service)
            .before(&before)
            .after(&after)
            .commit(tx)
            .await?;
        Ok(Some(change))
    }
}

/// Why the principal that scheduled a change may no longer save it, if so:
/// a change runs with its creator's authority, so a token revoked or expired
/// since, an account disabled since, or either demoted to viewer, takes the
/// change with it. Principals without such a credential (the system) keep it.
async fn creator_cannot_save(
    conn: &mut crate::dialect::Conn<'_>,
    tenant_id: &str,
    creator: &Actor,
    now: OffsetDateTime,
) -> StoreResult<Option<String>> {
    let (what, sql, ended, ended_how) = match creator.kind {
        ActorKind::ApiToken => (
            format!("the token {:?}", creator.name),
            "SELECT role, tenant_id, revoked_at, expires_at FROM api_tokens WHERE id = $1",
            "revoked_at",
            "was revoked since",
        ),
        ActorKind::Account => (
            format!("the account {}", creator.name),
            "SELECT role, tenant_id, disabled_at FROM accounts WHERE id = $1",
            "disabled_at",
            "was disabled since",
        ),
        _ => return Ok(None),
    };
    let Some(row) = query(sql)
        .id(&creator.id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(Some(format!("{what} that scheduled it no longer exists")));
    };
    let role: String = row.get("role")?;
    let tenant = row.opt_id("tenant_id")?;
    let expired = match creator.kind {
        ActorKind::ApiToken => row.opt_time("expires_at")?.is_some_and(|at| at <= now),
        _ => false,
    };
    let reason = if row.opt_time(ended)?.is_some() {
        Some(ended_how)
    } else if expired {
        Some("has expired since")
    } else if role == "viewer" || (role == "admin" && tenant.as_deref() != Some(tenant_id)) {
        Some("may no longer change this tenant")
    } else {
        None
    };
    Ok(reason.map(|reason| format!("{what} that scheduled it {reason}")))
}
