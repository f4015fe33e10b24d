//! Administering portal accounts, written once for both back ends:
//! invitations, the Admins page's summaries, sessions by public id, and the
//! rule that a tenant keeps an admin who can sign in.

use async_trait::async_trait;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    ACCOUNT_COLUMNS, Audit, SqlStore, account_audit_json, account_from_row, account_row, duplicate,
    new_id, update_account_in,
};
use crate::account_admin::invitation_refusal;
use crate::dialect::{Conn, Row, query, query_built};
use crate::{
    Account, AccountAdminStore, AccountChange, AccountSummary, Actor, ActorKind, InvitationLookup,
    InvitationState, Invited, LAST_SEEN_RESOLUTION, MAX_SESSIONS_LISTED, NewInvitation, NewSession,
    Role, SessionClient, SessionInfo, StoreError, StoreResult,
};

/// The invitation's columns, named so that they do not clash with the account's.
const INVITATION_COLUMNS: &str = "i.created_at AS invited_at, i.created_by AS invited_by,
     i.expires_at AS invitation_expires_at, i.accepted_at AS invitation_accepted_at";

const SESSION_COLUMNS: &str = "s.id, s.account_id, a.email, a.role, s.created_at, s.expires_at,
     s.last_seen_at, s.address, s.user_agent";

fn invitation_from_row(row: &Row) -> StoreResult<Option<InvitationState>> {
    let Some(expires_at) = row.opt_time("invitation_expires_at")? else {
        return Ok(None);
    };
    Ok(Some(InvitationState {
        created_at: row.time("invited_at")?,
        created_by: row.get("invited_by")?,
        expires_at,
        accepted_at: row.opt_time("invitation_accepted_at")?,
    }))
}

fn summary_from_row(row: &Row) -> StoreResult<AccountSummary> {
    Ok(AccountSummary {
        account: account_from_row(row)?,
        last_sign_in_at: row.opt_time("last_sign_in_at")?,
        invitation: invitation_from_row(row)?,
        sessions: row.get("session_count")?,
    })
}

fn session_from_row(row: &Row) -> StoreResult<SessionInfo> {
    let role: String = row.get("role")?;
    let created_at = row.time("created_at")?;
    Ok(SessionInfo {
        id: row.id("id")?,
        account_id: row.id("account_id")?,
        email: row.get("email")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        created_at,
        expires_at: row.time("expires_at")?,
        last_seen_at: row.opt_time("last_seen_at")?.unwrap_or(created_at),
        client: SessionClient {
            address: row.get("address")?,
            user_agent: row.get("user_agent")?,
        },
    })
}

/// Accounts of a tenant with what the Admins page shows of them; `$1` is the
/// tenant, `$2` the time sessions must outlive, and `clause` narrows further.
fn summary_sql(clause: &str) -> String {
    format!(
        "SELECT {ACCOUNT_COLUMNS}, a.last_sign_in_at, {INVITATION_COLUMNS},
                (SELECT COUNT(*) FROM sessions s
                  WHERE s.account_id = a.id AND s.expires_at > $2) AS session_count
         FROM accounts a LEFT JOIN account_invitations i ON i.account_id = a.id
         WHERE a.tenant_id = $1{clause}
         ORDER BY a.email_key, a.id"
    )
}

async fn summary_row(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    account_id: &str,
) -> StoreResult<AccountSummary> {
    let now = conn.now();
    let row = query_built(summary_sql(" AND a.id = $3"))
        .id(tenant_id)
        .time(now)
        .id(account_id)
        .find(conn, "account")
        .await?;
    summary_from_row(&row)
}

/// Whether the account waits for its invitee.
async fn pending_invitation(conn: &mut Conn<'_>, account_id: &str) -> StoreResult<bool> {
    let pending: i64 = query(
        "SELECT COUNT(*) FROM account_invitations WHERE account_id = $1 AND accepted_at IS NULL",
    )
    .id(account_id)
    .fetch_scalar(conn)
    .await?;
    Ok(pending > 0)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Sets an invited account's password (or the identity provider's marker),
/// marks its invitation accepted and audits it in the account's own name, or
/// the provider's.
async fn accept_in(
    mut tx: Conn<'_>,
    account: &Account,
    password_hash: &str,
    actor: &Actor,
    method: &str,
) -> StoreResult<()> {
    let now = tx.now();
    query("UPDATE accounts SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .id(&account.id)
        .execute(&mut tx)
        .await?;
    query("UPDATE account_invitations SET accepted_at = $1 WHERE account_id = $2")
        .time(now)
        .id(&account.id)
        .execute(&mut tx)
        .await?;
    Audit::new(
        account.tenant_id.as_deref(),
        actor,
        "account.invite_accept",
        &account.email,
    )
    .after(&json!({"id": account.id, "method": method}))
    .commit(tx)
    .await
}

#[async_trait]
impl AccountAdminStore for SqlStore {
    async fn account_summaries(&self, tenant_id: &str) -> StoreResult<Vec<AccountSummary>> {
        query_built(summary_sql(""))
            .id(tenant_id)
            .time(self.db.now())
            .fetch_all_as(&self.db, summary_from_row)
            .await
    }

    async fn account_summary(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> StoreResult<AccountSummary> {
        let mut conn = self.db.read().await?;
        summary_row(&mut conn, tenant_id, account_id).await
    }

    async fn change_account(
        &self,
        tenant_id: &str,
        account_id: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> StoreResult<Account> {
        // The tenant's lock serialises this with every other change of its
        // accounts, so the count below cannot go stale before the commit.
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let before = account_row(&mut tx, Some(tenant_id), account_id, true).await?;
        let demoted = change.role.is_some_and(|role| role != Role::Admin);
        let disabled = change.disabled == Some(true);
        let counts_as_admin = before.role == Role::Admin
            && before.disabled_at.is_none()
            && !pending_invitation(&mut tx, account_id).await?;
        if counts_as_admin && (demoted || disabled) {
            let others: i64 = query(
                "SELECT COUNT(*) FROM accounts a
                 WHERE a.tenant_id = $1 AND a.id <> $2 AND a.role = 'admin'
                   AND a.disabled_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM account_invitations i
                                    WHERE i.account_id = a.id AND i.accepted_at IS NULL)",
            )
            .id(tenant_id)
            .id(account_id)
            .fetch_scalar(&mut tx)
            .await?;
            if others == 0 {
                return Err(StoreError::Refused {
                    code: "last_admin",
                    message: format!(
                        "{} is the last active admin account of this tenant; make another account an admin first (an invited admin counts once the invitation is accepted), then {} this one",
                        before.email,
                        if disabled { "disable" } else { "demote" }
                    ),
                });
            }
        }
        let after = update_account_in(&mut tx, Some(tenant_id), before, change, actor).await?;
        tx.commit().await?;
        Ok(after)
    }

    async fn invite_account(&self, new: NewInvitation, actor: &Actor) -> StoreResult<Invited> {
        let mut tx = self.db.write_tenant(&new.tenant_id).await?;
        let now = tx.now();
        let email_key = new.email.trim().to_lowercase();
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, {INVITATION_COLUMNS}
             FROM accounts a LEFT JOIN account_invitations i ON i.account_id = a.id
             WHERE a.tenant_id = $1 AND a.email_key = $2"
        );
        let existing = query_built(sql)
            .id(&new.tenant_id)
            .bind(&email_key)
            .fetch_optional(&mut tx)
            .await?;
        let (account_id, replaced) = match existing {
            None => {
                let id = new_id();
                query(
                    "INSERT INTO accounts (id, tenant_id, email, email_key, password_hash, role, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .id(&id)
                .id(&new.tenant_id)
                .bind(&new.email)
                .bind(&email_key)
                .bind(&new.placeholder_hash)
                .bind(new.role.as_str())
                .time(now)
                .execute(&mut tx)
                .await
                .map_err(|e| duplicate(e, "account", &new.email))?;
                query(
                    "INSERT INTO account_invitations (account_id, token_hash, created_at, created_by, expires_at)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .id(&id)
                .bind(&new.token_hash)
                .time(now)
                .bind(actor.display())
                .time(new.expires_at)
                .execute(&mut tx)
                .await?;
                (id, false)
            }
            Some(row) => {
                let account = account_from_row(&row)?;
                let waiting = invitation_from_row(&row)?.is_some_and(|i| i.accepted_at.is_none());
                if !waiting {
                    return Err(StoreError::Refused {
                        code: "account_exists",
                        message: format!(
                            "{} already has an account in this tenant; change its role or enable it instead",
                            account.email
                        ),
                    });
                }
                if account.disabled_at.is_some() {
                    return Err(StoreError::Refused {
                        code: "account_disabled",
                        message: format!(
                            "{} was invited but the account is disabled; enable it first, then invite again",
                            account.email
                        ),
                    });
                }
                query("UPDATE accounts SET role = $1 WHERE id = $2")
                    .bind(new.role.as_str())
                    .id(&account.id)
                    .execute(&mut tx)
                    .await?;
                // The old link stops working: only the newest secret is kept.
                query(
                    "UPDATE account_invitations
                        SET token_hash = $1, created_at = $2, created_by = $3, expires_at = $4
                      WHERE account_id = $5",
                )
                .bind(&new.token_hash)
                .time(now)
                .bind(actor.display())
                .time(new.expires_at)
                .id(&account.id)
                .execute(&mut tx)
                .await?;
                (account.id, true)
            }
        };
        let summary = summary_row(&mut tx, &new.tenant_id, &account_id).await?;
        let mut after = account_audit_json(&summary.account);
        if let Some(fields) = after.as_object_mut() {
            fields.insert("expires_at".into(), rfc3339(new.expires_at).into());
            fields.insert("replaced".into(), replaced.into());
        }
        Audit::new(
            Some(&new.tenant_id),
            actor,
            "account.invite",
            &summary.account.email,
        )
        .after(&after)
        .commit(tx)
        .await?;
        Ok(Invited { summary, replaced })
    }

    async fn invitation(&self, token_hash: &str) -> StoreResult<InvitationLookup> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, t.name AS tenant_name, {INVITATION_COLUMNS}
             FROM account_invitations i
             JOIN accounts a ON a.id = i.account_id
             JOIN tenants t ON t.id = a.tenant_id
             WHERE i.token_hash = $1"
        );
        let row = query_built(sql)
            .bind(token_hash)
            .find(&self.db, "invitation")
            .await?;
        let invitation = invitation_from_row(&row)?
            .ok_or_else(|| StoreError::Corrupt("invitation without expiry".into()))?;
        Ok(InvitationLookup {
            account: account_from_row(&row)?,
            tenant_name: row.get("tenant_name")?,
            invitation,
        })
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
    ) -> StoreResult<Account> {
        let found = self.invitation(token_hash).await?;
        let tenant_id = found
            .account
            .tenant_id
            .clone()
            .ok_or(StoreError::NotFound { what: "invitation" })?;
        let mut tx = self.db.write_tenant(&tenant_id).await?;
        // Read again under the lock: of two uses of one link, one wins.
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS}, {INVITATION_COLUMNS}
             FROM account_invitations i JOIN accounts a ON a.id = i.account_id
             WHERE i.token_hash = $1"
        );
        let row = query_built(sql)
            .bind(token_hash)
            .find(&mut tx, "invitation")
            .await?;
        let account = account_from_row(&row)?;
        let invitation = invitation_from_row(&row)?
            .ok_or_else(|| StoreError::Corrupt("invitation without expiry".into()))?;
        if let Some(reason) = invitation_refusal(&account, &invitation, tx.now()) {
            return Err(reason);
        }
        let actor = Actor::new(
            ActorKind::Account,
            account.id.as_str(),
            account.email.as_str(),
        );
        accept_in(tx, &account, password_hash, &actor, "password").await?;
        Ok(account)
    }

    async fn claim_invitation(
        &self,
        tenant_id: &str,
        account_id: &str,
        password_hash: &str,
        actor: &Actor,
    ) -> StoreResult<Account> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let account = account_row(&mut tx, Some(tenant_id), account_id, true).await?;
        if account.disabled_at.is_some() || !pending_invitation(&mut tx, account_id).await? {
            return Err(StoreError::Refused {
                code: "not_invited",
                message: format!("{} is not waiting for an invitation", account.email),
            });
        }
        accept_in(tx, &account, password_hash, actor, "oidc").await?;
        let mut conn = self.db.read().await?;
        account_row(&mut conn, Some(tenant_id), account_id, false).await
    }

    async fn start_session(&self, new: NewSession) -> StoreResult<String> {
        let _turn = self.db.single_write().await;
        let now = self.db.now();
        // Expired sessions are swept whenever a new one starts.
        query("DELETE FROM sessions WHERE expires_at < $1")
            .time(now)
            .execute(&self.db)
            .await?;
        let id = new_id();
        query(
            "INSERT INTO sessions (token_hash, id, account_id, csrf_token, created_at, expires_at,
                                   last_seen_at, address, user_agent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&new.token_hash)
        .id(&id)
        .id(&new.account_id)
        .bind(&new.csrf_token)
        .time(now)
        .time(new.expires_at)
        .time(now)
        .bind(&new.client.address)
        .bind(&new.client.user_agent)
        .execute(&self.db)
        .await?;
        query("UPDATE accounts SET last_sign_in_at = $1 WHERE id = $2")
            .time(now)
            .id(&new.account_id)
            .execute(&self.db)
            .await?;
        Ok(id)
    }

    async fn tenant_sessions(
        &self,
        tenant_id: &str,
        account_id: Option<&str>,
    ) -> StoreResult<Vec<SessionInfo>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS}
             FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE a.tenant_id = $1 AND s.expires_at > $2 AND a.disabled_at IS NULL
               AND ($3 IS NULL OR s.account_id = $4)
             ORDER BY s.created_at DESC, s.id
             LIMIT {MAX_SESSIONS_LISTED}"
        );
        query_built(sql)
            .id(tenant_id)
            .time(self.db.now())
            .opt_id(account_id)
            .opt_id(account_id)
            .fetch_all_as(&self.db, session_from_row)
            .await
    }

    async fn end_session(
        &self,
        tenant_id: &str,
        session_id: &str,
        account_id: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<SessionInfo> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS}
             FROM sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.id = $1 AND a.tenant_id = $2 AND ($3 IS NULL OR s.account_id = $4)"
        );
        let row = query_built(sql)
            .id(session_id)
            .id(tenant_id)
            .opt_id(account_id)
            .opt_id(account_id)
            .find(&mut tx, "session")
            .await?;
        let session = session_from_row(&row)?;
        query("DELETE FROM sessions WHERE id = $1")
            .id(&session.id)
            .execute(&mut tx)
            .await?;
        Audit::new(Some(tenant_id), actor, "session.revoke", &session.email)
            .after(&json!({
                "session_id": session.id,
                "account_id": session.account_id,
                "created_at": rfc3339(session.created_at),
            }))
            .commit(tx)
            .await?;
        Ok(session)
    }

    async fn touch_session(&self, session_id: &str, at: OffsetDateTime) -> StoreResult<()> {
        let _turn = self.db.single_write().await;
        query(
            "UPDATE sessions SET last_seen_at = $2
             WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at <= $3)",
        )
        .id(session_id)
        .time(at)
        .time(at - LAST_SEEN_RESOLUTION)
        .execute(&self.db)
        .await?;
        Ok(())
    }
}
