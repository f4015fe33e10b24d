//! Reading the audit log through a filter, written once for both back ends,
//! and the bulk append that seeds it for benchmarks.
//!
//! Pages are keyset pages by id, newest first: a page is the first `limit`
//! matching rows below the previous page's last id, so paging never skips or
//! repeats an entry however many are appended meanwhile.

use serde_json::Value;

use super::{SqlStore, actor_from_row};
use crate::dialect::{Param, Row, query_built};
use crate::{AuditEntry, AuditFilter, StoreError, StoreResult};

const COLUMNS: &str =
    "id, at, actor, actor_kind, actor_id, action, target, before_json, after_json";

impl SqlStore {
    /// Appends audit entries as given (time and actor included), in one
    /// transaction per call. Only for seeding a store in benchmarks and
    /// tests: no server route reaches it, since entries written through a
    /// route take their actor from the caller's credential.
    pub async fn append_audit_entries(
        &self,
        tenant_id: &str,
        entries: &[AuditEntry],
    ) -> StoreResult<()> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        for entry in entries {
            crate::dialect::query(
                "INSERT INTO audit_log (tenant_id, at, actor, actor_kind, actor_id, action, target, before_json, after_json)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .id(tenant_id)
            .time(entry.at)
            .bind(&entry.actor.name)
            .bind(entry.actor.kind.as_str())
            .bind(&entry.actor.id)
            .bind(&entry.action)
            .bind(&entry.target)
            .opt_json(entry.before.as_ref().map(Value::to_string))
            .opt_json(entry.after.as_ref().map(Value::to_string))
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await
    }

    pub(super) async fn audit_page(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log WHERE tenant_id = $1 AND id < $2");
        let mut params: Vec<Param> = Vec::new();
        push_filter(&mut sql, &mut params, filter);
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", params.len() + 3));
        let mut query = query_built(sql)
            .id(tenant_id)
            .bind(before_id.unwrap_or(i64::MAX));
        for param in &params {
            query = query.bind(param);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.db).await?;
        rows.iter().map(entry_from_row).collect()
    }
}

/// Appends the filter's conditions to a query whose first two parameters are
/// taken. Values are always parameters; only placeholders are formatted in.
fn push_filter(sql: &mut String, params: &mut Vec<Param>, filter: &AuditFilter) {
    if let Some(actor) = &filter.actor {
        let id = next(params, Param::from(actor.as_str()));
        let name = next(params, Param::from(contains(actor)));
        sql.push_str(&format!(
            " AND (actor_id = {id} OR lower(actor) LIKE {name} ESCAPE '\\')"
        ));
    }
    if let Some(action) = &filter.action {
        match action.strip_suffix('*') {
            Some(prefix) => {
                let p = next(params, Param::from(format!("{}%", escape_like(prefix))));
                sql.push_str(&format!(" AND action LIKE {p} ESCAPE '\\'"));
            }
            None if action.ends_with('.') => {
                let p = next(params, Param::from(format!("{}%", escape_like(action))));
                sql.push_str(&format!(" AND action LIKE {p} ESCAPE '\\'"));
            }
            None => {
                let p = next(params, Param::from(action.as_str()));
                sql.push_str(&format!(" AND action = {p}"));
            }
        }
    }
    if let Some(target) = &filter.target {
        let p = next(params, Param::from(target.as_str()));
        sql.push_str(&format!(" AND target = {p}"));
    }
    if let Some(service) = &filter.service {
        let p = next(params, Param::from(service.as_str()));
        sql.push_str(&format!(
            " AND action LIKE 'entitlement.%' AND target = {p}"
        ));
    }
    if let Some(from) = filter.from {
        let p = next(params, Param::Time(Some(from)));
        sql.push_str(&format!(" AND at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = next(params, Param::Time(Some(to)));
        sql.push_str(&format!(" AND at < {p}"));
    }
    if let Some(text) = &filter.text {
        // Each column gets its own parameter: the same text bound five times
        // keeps placeholder numbering simple on both back ends.
        let pattern = contains(text);
        let mut any = Vec::new();
        for column in [
            "target",
            "action",
            "actor",
            "CAST(before_json AS TEXT)",
            "CAST(after_json AS TEXT)",
        ] {
            let p = next(params, Param::from(pattern.clone()));
            any.push(format!("lower({column}) LIKE {p} ESCAPE '\\'"));
        }
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
}

/// Adds a parameter and answers its placeholder (after the tenant and the cursor).
fn next(params: &mut Vec<Param>, value: Param) -> String {
    params.push(value);
    format!("${}", params.len() + 2)
}

/// A LIKE pattern that finds `text` anywhere, lower-cased to match `lower(column)`.
fn contains(text: &str) -> String {
    format!("%{}%", escape_like(&text.to_lowercase()))
}

/// Escapes LIKE's wildcards so that input matches only itself.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn entry_from_row(row: &Row) -> StoreResult<(i64, AuditEntry)> {
    let parse = |column: &str| -> StoreResult<Option<Value>> {
        let text = row.opt_json(column)?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("audit {column}: {e}")))
        })
        .transpose()
    };
    Ok((
        row.get("id")?,
        AuditEntry {
            at: row.time("at")?,
            actor: actor_from_row(row)?,
            action: row.get("action")?,
            target: row.get("target")?,
            before: parse("before_json")?,
            after: parse("after_json")?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn wildcards_match_only_themselves() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
        assert_eq!(escape_like("device."), "device.");
    }
}
