//! The audit log, read-only and newest first: filtered in the store over the
//! whole log, paged by id, and exported as CSV or JSON streamed a batch at a
//! time so that a million rows cost the server no more memory than one batch.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use entitle_core::service;
use entitle_store::{AuditEntry, AuditFilter, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::page_limit;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::state::AppState;
use crate::wire::{PrincipalJson, rfc3339};

/// The longest text a filter parameter may hold.
const MAX_FILTER_CHARS: usize = 200;

/// Rows read from the store per export batch: large enough that the
/// per-query cost vanishes, small enough that memory stays flat.
const EXPORT_BATCH: u32 = 1000;

/// The audit routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants/{tenant}/audit", get(audit))
        .route("/api/v1/tenants/{tenant}/audit/export", get(export))
}

/// Audit parameters: a page of the filtered log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size (1–200, default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// The actor's principal id, exactly, or text in its display name (case-insensitive).
    pub actor: Option<String>,
    /// The action, exactly (`device.delete`), or a prefix ending with `.` or `*` (`device.`).
    pub action: Option<String>,
    /// The target, exactly (a service id, a host name, an email).
    pub target: Option<String>,
    /// Changes to this service's entitlement settings (`entitlement.*` on that service).
    pub service: Option<String>,
    /// Entries at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Entries before this RFC 3339 time.
    pub to: Option<String>,
    /// Text in the target, action, actor or the before/after states (case-insensitive).
    pub q: Option<String>,
}

/// Export parameters: the same filters as the list, and a format.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `csv` (default) or `json` (an array of the list's items).
    pub format: Option<String>,
    /// The actor's principal id, exactly, or text in its display name (case-insensitive).
    pub actor: Option<String>,
    /// The action, exactly (`device.delete`), or a prefix ending with `.` or `*` (`device.`).
    pub action: Option<String>,
    /// The target, exactly (a service id, a host name, an email).
    pub target: Option<String>,
    /// Changes to this service's entitlement settings (`entitlement.*` on that service).
    pub service: Option<String>,
    /// Entries at or after this RFC 3339 time.
    pub from: Option<String>,
    /// Entries before this RFC 3339 time.
    pub to: Option<String>,
    /// Text in the target, action, actor or the before/after states (case-insensitive).
    pub q: Option<String>,
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    /// When.
    pub at: String,
    /// Who, as text that names the kind (`token ci`, `ada@acme.example`, `directory`).
    pub actor: String,
    /// Who, as a principal.
    pub principal: PrincipalJson,
    /// What kind of change.
    pub action: String,
    /// What it changed.
    pub target: String,
    /// State before.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// State after.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

impl From<AuditEntry> for AuditItem {
    fn from(e: AuditEntry) -> Self {
        AuditItem {
            at: rfc3339(e.at),
            actor: e.actor.display(),
            principal: PrincipalJson::from(&e.actor),
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditItem>,
    /// Cursor of the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Reads the audit log, newest first, filtered over the whole log.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path), AuditQuery), responses((status = 200, body = AuditPage)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let before =
        match &query.cursor {
            Some(cursor) => Some(cursor.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                || ApiError::bad_request("invalid_cursor", "cursor is not one this server issued"),
            )?),
            None => None,
        };
    let filter = FilterParams {
        actor: &query.actor,
        action: &query.action,
        target: &query.target,
        service: &query.service,
        from: &query.from,
        to: &query.to,
        q: &query.q,
    }
    .parse()?;
    let limit = page_limit(query.limit);
    let entries = state
        .store
        .audit_filtered(&tenant.id, &filter, limit, before)
        .await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|(id, _)| id.to_string()))
        .flatten();
    let items = entries.into_iter().map(|(_, e)| e.into()).collect();
    Ok(Json(AuditPage { items, next_cursor }))
}

/// Exports the filtered audit log, newest first, as a download. The rows are
/// those present when the export starts: entries appended meanwhile have
/// higher ids and are not read. The export itself is audited (`audit.export`,
/// with its filter), as reading the whole log out is worth knowing about.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/audit/export", tag = "audit",
    params(("tenant" = String, Path), ExportQuery),
    responses((status = 200, description = "the filtered log as an attachment, streamed",
        content((String = "text/csv"), (Vec<AuditItem> = "application/json")))))]
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ExportQuery>,
) -> ApiResult<Response> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let format = match query.format.as_deref().map(str::trim) {
        None | Some("" | "csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_format",
                "format must be \"csv\" or \"json\"",
            ));
        }
    };
    let filter = FilterParams {
        actor: &query.actor,
        action: &query.action,
        target: &query.target,
        service: &query.service,
        from: &query.from,
        to: &query.to,
        q: &query.q,
    }
    .parse()?;
    // The first batch is read before the export is audited, so that the
    // export holds the log as it was when asked, and a failing store
    // answers a proper error rather than a cut download.
    let first = state
        .store
        .audit_filtered(&tenant.id, &filter, EXPORT_BATCH, None)
        .await?;
    state
        .store
        .append_audit(
            Some(&tenant.id),
            &caller.actor,
            "audit.export",
            format.name(),
            None,
            Some(&filter_json(&filter)),
        )
        .await?;
    let date = OffsetDateTime::now_utc().date();
    let filename = format!(
        "audit-{}-{date}.{}",
        safe_filename(&tenant.name),
        format.name()
    );
    let export = Export {
        store: state.store.clone(),
        tenant_id: tenant.id.clone(),
        filter,
        format,
        pending: Some(first),
        cursor: None,
        opened: false,
        done: false,
    };
    let stream = futures_util::stream::unfold(export, |export| export.next_chunk());
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The filter parameters, shared by the list and the export.
struct FilterParams<'a> {
    actor: &'a Option<String>,
    action: &'a Option<String>,
    target: &'a Option<String>,
    service: &'a Option<String>,
    from: &'a Option<String>,
    to: &'a Option<String>,
    q: &'a Option<String>,
}

impl FilterParams<'_> {
    /// Parses the parameters once, at the edge: blank means absent, text is
    /// bounded, times are RFC 3339 and services exist.
    fn parse(&self) -> ApiResult<AuditFilter> {
        let service = text("service", self.service)?;
        if let Some(id) = &service {
            service_exists(id)?;
        }
        let from = time_param("from", self.from)?;
        let to = time_param("to", self.to)?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(ApiError::bad_request(
                "invalid_time_range",
                "from is later than to",
            ));
        }
        Ok(AuditFilter {
            actor: text("actor", self.actor)?,
            action: text("action", self.action)?,
            target: text("target", self.target)?,
            service,
            from,
            to,
            text: text("q", self.q)?,
        })
    }
}

fn service_exists(id: &str) -> ApiResult<()> {
    service(id)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request("unknown_service", e.to_string()))
}

/// A filter's text, trimmed; blank is absent, too long is a 400.
fn text(name: &str, value: &Option<String>) -> ApiResult<Option<String>> {
    let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().count() > MAX_FILTER_CHARS {
        return Err(ApiError::bad_request(
            "filter_too_long",
            format!("{name} is longer than {MAX_FILTER_CHARS} characters"),
        ));
    }
    Ok(Some(value.to_owned()))
}

fn time_param(name: &str, value: &Option<String>) -> ApiResult<Option<OffsetDateTime>> {
    let Some(value) = text(name, value)? else {
        return Ok(None);
    };
    OffsetDateTime::parse(&value, &Rfc3339)
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_time",
                format!("{name} is not an RFC 3339 time such as 2026-01-31T09:00:00Z: {value:?}"),
            )
        })
}

/// What the audit entry of an export records of its filter.
fn filter_json(filter: &AuditFilter) -> Value {
    json!({
        "actor": filter.actor, "action": filter.action, "target": filter.target,
        "service": filter.service, "from": filter.from.map(rfc3339),
        "to": filter.to.map(rfc3339), "q": filter.text,
    })
}

/// Tenant names are already lower-case letters, digits and dashes; anything
/// else is replaced so that the header cannot be broken out of.
fn safe_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// An export in progress: the keyset loop that feeds the response body.
struct Export {
    store: Arc<dyn Store>,
    tenant_id: String,
    filter: AuditFilter,
    format: Format,
    /// A batch read but not yet written (the first one, read before answering).
    pending: Option<Vec<(i64, AuditEntry)>>,
    cursor: Option<i64>,
    opened: bool,
    done: bool,
}

impl Export {
    /// The next piece of the body: the header, then one batch at a time,
    /// then the closing bracket of a JSON array. A store failure midway cuts
    /// the download (the status was already sent), and is logged.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, StoreError>, Self)> {
        if self.done {
            return None;
        }
        let batch = match self.pending.take() {
            Some(batch) => batch,
            None => match self
                .store
                .audit_filtered(&self.tenant_id, &self.filter, EXPORT_BATCH, self.cursor)
                .await
            {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, tenant = %self.tenant_id, "audit export stopped");
                    self.done = true;
                    return Some((Err(error), self));
                }
            },
        };
        let mut out = String::with_capacity(batch.len() * 256 + 128);
        if !self.opened {
            out.push_str(match self.format {
                Format::Csv => CSV_HEADER,
                Format::Json => "[",
            });
        }
        let last = batch.len() < EXPORT_BATCH as usize;
        self.cursor = batch.last().map(|(id, _)| *id).or(self.cursor);
        for (_, entry) in batch {
            match self.format {
                Format::Csv => csv_row(&mut out, &entry),
                Format::Json => {
                    if self.opened {
                        out.push(',');
                    }
                    out.push_str(
                        &serde_json::to_string(&AuditItem::from(entry))
                            .unwrap_or_else(|_| "null".into()),
                    );
                    out.push('\n');
                }
            }
            self.opened = true;
        }
        self.opened = true;
        if last {
            self.done = true;
            if let Format::Json = self.format {
                out.push(']');
            }
        }
        Some((Ok(Bytes::from(out)), self))
    }
}

const CSV_HEADER: &str =
    "\"at\",\"actor\",\"actor_kind\",\"actor_id\",\"action\",\"target\",\"before\",\"after\"\r\n";

/// One CSV record (RFC 4180: every field quoted, quotes doubled, CRLF).
fn csv_row(out: &mut String, entry: &AuditEntry) {
    let json = |value: &Option<Value>| value.as_ref().map(Value::to_string).unwrap_or_default();
    let fields = [
        rfc3339(entry.at),
        entry.actor.name.clone(),
        entry.actor.kind.as_str().to_owned(),
        entry.actor.id.clone(),
        entry.action.clone(),
        entry.target.clone(),
        json(&entry.before),
        json(&entry.after),
    ];
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, field);
    }
    out.push_str("\r\n");
}

/// A quoted CSV field. A cell a spreadsheet would read as a formula (starting
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`,
/// so that an actor or host name cannot run code on an auditor's machine.
fn csv_field(out: &mut String, field: &str) {
    out.push('"');
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    fn check(input: &str, expected: &str) {
        let mut out = String::new();
        csv_field(&mut out, input);
        assert_eq!(out, expected, "{input:?}");
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        check("plain", "\"plain\"");
        check("a,b", "\"a,b\"");
        check("say \"hi\"", "\"say \"\"hi\"\"\"");
        check("two\r\nlines", "\"two\r\nlines\"");
        check("=1+1", "\"'=1+1\"");
        check("+cmd", "\"'+cmd\"");
        check("-2", "\"'-2\"");
        check("@SUM(A1)", "\"'@SUM(A1)\"");
        check("\tx", "\"'\tx\"");
        check("", "\"\"");
        check("a=b", "\"a=b\"");
    }
}
