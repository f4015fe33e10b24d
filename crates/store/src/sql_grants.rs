//! Time-bound grants, written once for both back ends. The rules are in
//! `grants.rs`.

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Audit, SqlStore, new_id};
use crate::dialect::{Conn, Row, query, query_built};
use crate::grants::{GRANTS_LISTED, Grant, GrantStore, MAX_LIVE_GRANTS, NewGrant};
use crate::{Actor, ActorKind, StoreError, StoreResult};

const COLUMNS: &str = "g.id, g.tenant_id, g.user_id, u.user_name, g.device_id, g.service,
    g.starts_at, g.ends_at, g.justification, g.overrides_exclusions, g.created_at,
    g.created_by, g.created_by_kind, g.created_by_id, g.revoked_at, g.revoked_by,
    g.revoked_by_kind, g.revoked_by_id";

fn grant_from_row(row: &Row) -> StoreResult<Grant> {
    let revoked_by = match row.get::<Option<String>>("revoked_by_kind")? {
        Some(kind) => Some(Actor::new(
            ActorKind::parse(&kind),
            row.get::<Option<String>>("revoked_by_id")?
                .unwrap_or_default(),
            row.get::<Option<String>>("revoked_by")?.unwrap_or_default(),
        )),
        None => None,
    };
    Ok(Grant {
        id: row.id("id")?,
        tenant_id: row.id("tenant_id")?,
        user_id: row.id("user_id")?,
        user_name: row.get("user_name")?,
        device_id: row.opt_id("device_id")?,
        service: row.get("service")?,
        starts_at: row.time("starts_at")?,
        ends_at: row.time("ends_at")?,
        justification: row.get("justification")?,
        overrides_exclusions: row.get("overrides_exclusions")?,
        created_at: row.time("created_at")?,
        created_by: Actor::new(
            ActorKind::parse(&row.get::<String>("created_by_kind")?),
            row.get::<String>("created_by_id")?,
            row.get::<String>("created_by")?,
        ),
        revoked_at: row.opt_time("revoked_at")?,
        revoked_by,
    })
}

/// What the audit log keeps of a grant.
fn grant_audit(grant: &Grant) -> Value {
    let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
    json!({
        "id": grant.id,
        "user_id": grant.user_id,
        "user_name": grant.user_name,
        "device_id": grant.device_id,
        "service": grant.service,
        "starts_at": time(Some(grant.starts_at)),
        "ends_at": time(Some(grant.ends_at)),
        "justification": grant.justification,
        "overrides_exclusions": grant.overrides_exclusions,
        "revoked_at": time(grant.revoked_at),
    })
}

/// The tenant's grants that have not ended at `now` and are not revoked: what
/// a snapshot built at `now` needs (the active ones and the next boundaries).
pub(super) async fn live_grants(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    now: OffsetDateTime,
) -> StoreResult<Vec<Grant>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM grants g JOIN users u ON u.id = g.user_id
          WHERE g.tenant_id = $1 AND g.ends_at > $2 AND g.revoked_at IS NULL
          ORDER BY g.starts_at, g.id"
    );
    query_built(sql)
        .id(tenant_id)
        .time(now)
        .fetch_all_as(conn, grant_from_row)
        .await
}

async fn grant_by_id(conn: &mut Conn<'_>, tenant_id: &str, id: &str) -> StoreResult<Grant> {
    let sql = format!(
        "SELECT {COLUMNS} FROM grants g JOIN users u ON u.id = g.user_id
          WHERE g.tenant_id = $1 AND g.id = $2"
    );
    let row = query_built(sql)
        .id(tenant_id)
        .id(id)
        .find(conn, "grant")
        .await?;
    grant_from_row(&row)
}

#[async_trait]
impl GrantStore for SqlStore {
    async fn create_grant(&self, tenant_id: &str, new: NewGrant) -> StoreResult<Grant> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let now = tx.now();
        let user = query(
            "SELECT id, user_name FROM users
              WHERE tenant_id = $1 AND deleted_at IS NULL AND (id = $2 OR user_name_key = $3)",
        )
        .id(tenant_id)
        .id(&new.user)
        .bind(new.user.to_lowercase())
        .find(&mut tx, "user")
        .await?;
        let user_id = user.id("id")?;
        let user_name: String = user.get("user_name")?;
        if let Some(device_id) = &new.device_id {
            let found =
                query("SELECT 1 FROM devices WHERE tenant_id = $1 AND id = $2 AND user_id = $3")
                    .id(tenant_id)
                    .id(device_id)
                    .id(&user_id)
                    .fetch_optional(&mut tx)
                    .await?;
            if found.is_none() {
                return Err(StoreError::NotFound {
                    what: "device of that user",
                });
            }
        }
        let live: i64 = query(
            "SELECT COUNT(*) FROM grants WHERE tenant_id = $1 AND ends_at > $2 AND revoked_at IS NULL",
        )
        .id(tenant_id)
        .time(now)
        .fetch_scalar(&mut tx)
        .await?;
        if live >= i64::from(MAX_LIVE_GRANTS) {
            return Err(StoreError::Refused {
                code: "too_many_grants",
                message: format!(
                    "a tenant may have at most {MAX_LIVE_GRANTS} grants that have not ended; revoke some first"
                ),
            });
        }
        let grant = Grant {
            id: new_id(),
            tenant_id: tenant_id.to_owned(),
            user_id,
            user_name,
            device_id: new.device_id,
            service: new.service.id.to_owned(),
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            justification: new.justification,
            overrides_exclusions: new.overrides_exclusions,
            created_at: now,
            created_by: new.actor,
            revoked_at: None,
            revoked_by: None,
        };
        query(
            "INSERT INTO grants (id, tenant_id, user_id, device_id, service, starts_at, ends_at,
                justification, overrides_exclusions, created_at, created_by, created_by_kind, created_by_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .id(&grant.id)
        .id(tenant_id)
        .id(&grant.user_id)
        .opt_id(grant.device_id.as_deref())
        .bind(&grant.service)
        .time(grant.starts_at)
        .time(grant.ends_at)
        .bind(&grant.justification)
        .bind(grant.overrides_exclusions)
        .time(now)
        .bind(&grant.created_by.name)
        .bind(grant.created_by.kind.as_str())
        .bind(&grant.created_by.id)
        .execute(&mut tx)
        .await?;
        let after = grant_audit(&grant);
        Audit::new(
            Some(tenant_id),
            &grant.created_by,
            "grant.create",
            &grant.service,
        )
        .after(&after)
        .commit_bumping(tx, tenant_id)
        .await?;
        Ok(grant)
    }

    async fn grants(&self, tenant_id: &str) -> StoreResult<Vec<Grant>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM grants g JOIN users u ON u.id = g.user_id
              WHERE g.tenant_id = $1 ORDER BY g.created_at DESC, g.id LIMIT $2"
        );
        query_built(sql)
            .id(tenant_id)
            .bind(GRANTS_LISTED)
            .fetch_all_as(&self.db, grant_from_row)
            .await
    }

    async fn revoke_grant(&self, tenant_id: &str, id: &str, actor: &Actor) -> StoreResult<Grant> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let now = tx.now();
        let mut grant = grant_by_id(&mut tx, tenant_id, id).await?;
        if grant.revoked_at.is_some() || grant.ends_at <= now {
            return Err(StoreError::Refused {
                code: "grant_over",
                message: format!(
                    "the grant is {} already; only an active or upcoming grant can be revoked",
                    grant.state_at(now)
                ),
            });
        }
        query(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2, revoked_by_kind = $3, revoked_by_id = $4
              WHERE id = $5 AND revoked_at IS NULL",
        )
        .time(now)
        .bind(&actor.name)
        .bind(actor.kind.as_str())
        .bind(&actor.id)
        .id(id)
        .execute(&mut tx)
        .await?;
        let before = grant_audit(&grant);
        grant.revoked_at = Some(now);
        grant.revoked_by = Some(actor.clone());
        let after = grant_audit(&grant);
        Audit::new(Some(tenant_id), actor, "grant.revoke", &grant.service)
            .before(&before)
            .after(&after)
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(grant)
    }
}
