//! SCIM tokens, written once for both back ends: looked up by hash, rotated
//! with a grace period for the previous token, revoked, and touched on use.
//! The rules are in `scim_tokens.rs`.

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Audit, SqlStore, new_id, tenant_from_row};
use crate::dialect::{Conn, Row, query, query_built};
use crate::{
    Actor, SCIM_TOKENS_LISTED, ScimGrant, ScimRotation, ScimToken, ScimTokenStore, StoreError,
    StoreResult,
};

const TOKEN_COLUMNS: &str = "id, tenant_id, created_at, last_used_at, expires_at, revoked_at";

fn token_from_row(row: &Row) -> StoreResult<ScimToken> {
    Ok(ScimToken {
        id: row.id("id")?,
        tenant_id: row.id("tenant_id")?,
        created_at: row.time("created_at")?,
        last_used_at: row.opt_time("last_used_at")?,
        expires_at: row.opt_time("expires_at")?,
        revoked_at: row.opt_time("revoked_at")?,
    })
}

/// What the audit log keeps of a SCIM token: never its secret or hash.
fn token_audit(token: &ScimToken) -> Value {
    let time = |at: Option<OffsetDateTime>| at.and_then(|at| at.format(&Rfc3339).ok());
    json!({
        "id": token.id,
        "created_at": time(Some(token.created_at)),
        "last_used_at": time(token.last_used_at),
        "expires_at": time(token.expires_at),
        "revoked_at": time(token.revoked_at),
    })
}

/// Stores a new current token of a tenant, in the caller's transaction.
pub(super) async fn insert_scim_token(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    token_hash: &str,
    at: OffsetDateTime,
) -> StoreResult<ScimToken> {
    let token = ScimToken {
        id: new_id(),
        tenant_id: tenant_id.to_owned(),
        created_at: at,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
    };
    query(
        "INSERT INTO scim_tokens (id, tenant_id, token_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .id(&token.id)
    .id(tenant_id)
    .bind(token_hash)
    .time(at)
    .execute(conn)
    .await?;
    Ok(token)
}

#[async_trait]
impl ScimTokenStore for SqlStore {
    async fn scim_grant(&self, token_hash: &str) -> StoreResult<ScimGrant> {
        // One indexed read per SCIM request: the token and its tenant together.
        let row = query(
            "SELECT t.id, t.name, t.created_at, t.config_version, t.data_version,
                    t.last_scim_request_at, t.device_approval,
                    k.id AS token_id, k.created_at AS token_created_at,
                    k.last_used_at AS token_last_used_at, k.expires_at AS token_expires_at,
                    k.revoked_at AS token_revoked_at
               FROM scim_tokens k JOIN tenants t ON t.id = k.tenant_id
              WHERE k.token_hash = $1",
        )
        .bind(token_hash)
        .find(&self.db, "SCIM token")
        .await?;
        let tenant = tenant_from_row(&row)?;
        let token = ScimToken {
            id: row.id("token_id")?,
            tenant_id: tenant.id.clone(),
            created_at: row.time("token_created_at")?,
            last_used_at: row.opt_time("token_last_used_at")?,
            expires_at: row.opt_time("token_expires_at")?,
            revoked_at: row.opt_time("token_revoked_at")?,
        };
        Ok(ScimGrant { tenant, token })
    }

    async fn scim_tokens(&self, tenant_id: &str) -> StoreResult<Vec<ScimToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM scim_tokens WHERE tenant_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        query_built(sql)
            .id(tenant_id)
            .bind(SCIM_TOKENS_LISTED)
            .fetch_all_as(&self.db, token_from_row)
            .await
    }

    async fn rotate_scim_token_with_grace(
        &self,
        tenant_id: &str,
        token_hash: &str,
        grace: time::Duration,
        actor: &Actor,
    ) -> StoreResult<ScimRotation> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let now = tx.now();
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM scim_tokens
             WHERE tenant_id = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"
        );
        let working = query_built(sql)
            .id(tenant_id)
            .time(now)
            .fetch_all_as(&mut tx, token_from_row)
            .await?;
        // The token the identity provider used last is the one it most likely
        // still holds; never-used tokens rank by age, so the newer one wins.
        let keep = (grace > time::Duration::ZERO)
            .then(|| {
                working
                    .iter()
                    .max_by_key(|t| (t.last_used_at, t.created_at, t.id.clone()))
                    .map(|t| t.id.clone())
            })
            .flatten();
        let mut kept = None;
        let mut ended = Vec::new();
        for token in working {
            if keep.as_deref() == Some(token.id.as_str()) {
                let expires_at = now + grace;
                query("UPDATE scim_tokens SET expires_at = $1 WHERE id = $2")
                    .time(expires_at)
                    .id(&token.id)
                    .execute(&mut tx)
                    .await?;
                kept = Some(ScimToken {
                    expires_at: Some(expires_at),
                    ..token
                });
            } else {
                query("UPDATE scim_tokens SET revoked_at = $1 WHERE id = $2")
                    .time(now)
                    .id(&token.id)
                    .execute(&mut tx)
                    .await?;
                let revoked = ScimToken {
                    revoked_at: Some(now),
                    ..token
                };
                Audit::new(Some(tenant_id), actor, "scim_token.revoke", &revoked.id)
                    .before(&token_audit(&ScimToken {
                        revoked_at: None,
                        ..revoked.clone()
                    }))
                    .after(&token_audit(&revoked))
                    .write(&mut tx)
                    .await?;
                ended.push(revoked);
            }
        }
        let token = insert_scim_token(&mut tx, tenant_id, token_hash, now).await?;
        // Ended tokens beyond the newest few are forgotten, so rotations
        // cannot grow the table without bound; a forgotten token is then
        // refused as unknown rather than as expired.
        query(
            "DELETE FROM scim_tokens
             WHERE tenant_id = $1
               AND (revoked_at IS NOT NULL OR expires_at <= $3)
               AND id NOT IN (SELECT id FROM scim_tokens WHERE tenant_id = $1
                              ORDER BY created_at DESC, id DESC LIMIT $2)",
        )
        .id(tenant_id)
        .bind(SCIM_TOKENS_LISTED)
        .time(now)
        .execute(&mut tx)
        .await?;
        // Kept equal to the newest token for the schema's sake; nothing reads it.
        query("UPDATE tenants SET scim_token_hash = $1 WHERE id = $2")
            .bind(token_hash)
            .id(tenant_id)
            .execute(&mut tx)
            .await?;
        let after = json!({
            "token": token_audit(&token),
            "grace_period_seconds": grace.whole_seconds(),
            "kept": kept.as_ref().map(token_audit),
            "ended": ended.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        });
        Audit::new(Some(tenant_id), actor, "scim_token.rotate", tenant_id)
            .after(&after)
            .commit(tx)
            .await?;
        Ok(ScimRotation { token, kept, ended })
    }

    async fn revoke_scim_token(
        &self,
        tenant_id: &str,
        token_id: &str,
        actor: &Actor,
    ) -> StoreResult<ScimToken> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let now = tx.now();
        // Only a replaced token still in its grace period changes, in one
        // statement, so that two racing revocations audit one.
        let sql = format!(
            "UPDATE scim_tokens SET revoked_at = $1
             WHERE tenant_id = $2 AND id = $3 AND expires_at IS NOT NULL AND expires_at > $1
               AND revoked_at IS NULL
             RETURNING {TOKEN_COLUMNS}"
        );
        let revoked = query_built(sql)
            .time(now)
            .id(tenant_id)
            .id(token_id)
            .fetch_optional(&mut tx)
            .await?;
        let Some(row) = revoked else {
            let sql = format!(
                "SELECT {TOKEN_COLUMNS} FROM scim_tokens
                 WHERE tenant_id = $1 AND id = $2 AND expires_at IS NOT NULL"
            );
            let row = query_built(sql)
                .id(tenant_id)
                .id(token_id)
                .find(&mut tx, "replaced SCIM token")
                .await?;
            return token_from_row(&row);
        };
        let after = token_from_row(&row)?;
        let before = ScimToken {
            revoked_at: None,
            ..after.clone()
        };
        Audit::new(Some(tenant_id), actor, "scim_token.revoke", &after.id)
            .before(&token_audit(&before))
            .after(&token_audit(&after))
            .commit(tx)
            .await?;
        Ok(after)
    }

    async fn touch_scim_token(&self, token_id: &str, at: OffsetDateTime) -> StoreResult<()> {
        self.touch_last_used("scim_tokens", token_id, at).await
    }
}

impl SqlStore {
    /// The tenant a working SCIM token opens (for `TenantStore`).
    pub(super) async fn tenant_by_working_scim_token(
        &self,
        token_hash: &str,
    ) -> StoreResult<crate::Tenant> {
        let grant = self.scim_grant(token_hash).await?;
        if !grant.token.state(self.db.now()).works() {
            return Err(StoreError::NotFound { what: "tenant" });
        }
        Ok(grant.tenant)
    }
}
