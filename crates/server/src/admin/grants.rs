//! Time-bound grants: `POST` one (a user, optionally one device, a service,
//! from a start to an end, with a justification), list them, revoke one
//! early. Both ends reach held long-polls without a poll: the snapshot is
//! built as of a time and expires at the next grant boundary, and the
//! scheduler task refreshes it then.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use entitle_store::{
    Grant, MAX_GRANT_DURATION, MAX_GRANT_START_AHEAD, MAX_JUSTIFICATION, NewGrant,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryParams};
use crate::state::AppState;
use crate::wire::{PrincipalJson, rfc3339};

/// The grant routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant}/grants",
            get(list_grants).post(create_grant),
        )
        .route("/api/v1/tenants/{tenant}/grants/{id}", delete(revoke_grant))
}

/// A grant to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGrantJson {
    /// The user: id or login name.
    pub user: String,
    /// Only this device of the user's (its id); absent: every device of theirs.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The service id.
    pub service: String,
    /// From, RFC 3339; absent: now.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// Until, RFC 3339; or give `duration`.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// How long from the start: a number and a unit, `90m`, `8h`, `2d` (at most 30 days).
    #[serde(default)]
    pub duration: Option<String>,
    /// Why (required, at most 500 characters, no control characters).
    pub justification: String,
    /// Give the service even if an exclusion group excludes the user or device.
    #[serde(default)]
    pub overrides_exclusions: bool,
}

/// One grant.
#[derive(Serialize, ToSchema)]
pub struct GrantJson {
    /// Its id.
    pub id: String,
    /// The user's id.
    pub user_id: String,
    /// The user's login name.
    pub user_name: String,
    /// The one device it is for, if any.
    pub device_id: Option<String>,
    /// The service id.
    pub service: String,
    /// From, RFC 3339.
    pub starts_at: String,
    /// Until, RFC 3339.
    pub ends_at: String,
    /// Why.
    pub justification: String,
    /// Whether exclusion groups give way to it.
    pub overrides_exclusions: bool,
    /// `active`, `upcoming`, `ended` or `revoked`, now.
    pub state: &'static str,
    /// When it was created.
    pub created_at: String,
    /// Who created it.
    pub created_by: PrincipalJson,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<PrincipalJson>,
}

impl GrantJson {
    pub(crate) fn new(grant: &Grant, now: OffsetDateTime) -> Self {
        GrantJson {
            id: grant.id.clone(),
            user_id: grant.user_id.clone(),
            user_name: grant.user_name.clone(),
            device_id: grant.device_id.clone(),
            service: grant.service.clone(),
            starts_at: rfc3339(grant.starts_at),
            ends_at: rfc3339(grant.ends_at),
            justification: grant.justification.clone(),
            overrides_exclusions: grant.overrides_exclusions,
            state: grant.state_at(now),
            created_at: rfc3339(grant.created_at),
            created_by: PrincipalJson::from(&grant.created_by),
            revoked_at: grant.revoked_at.map(rfc3339),
            revoked_by: grant.revoked_by.as_ref().map(PrincipalJson::from),
        }
    }
}

/// Grants.
#[derive(Serialize, ToSchema)]
pub struct GrantsJson {
    /// Newest first.
    pub items: Vec<GrantJson>,
}

/// List parameters.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantsQuery {
    /// Only grants in this state now: `active`, `upcoming`, `ended` or `revoked`.
    pub state: Option<String>,
}

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, message).with_field(field)
}

fn parse_time(text: &str, field: &'static str) -> ApiResult<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        invalid(
            "invalid_time",
            field,
            format!("{field} must be a time as RFC 3339 text, e.g. 2026-12-01T06:00:00Z"),
        )
    })
}

/// Parses `90s`, `30m`, `8h`, `2d`.
pub(crate) fn parse_duration(text: &str) -> Option<time::Duration> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: i64 = text
        .get(..text.len() - unit.len_utf8())?
        .trim()
        .parse()
        .ok()?;
    if number <= 0 {
        return None;
    }
    match unit {
        's' => Some(time::Duration::seconds(number)),
        'm' => Some(time::Duration::minutes(number.min(1 << 40))),
        'h' => Some(time::Duration::hours(number.min(1 << 30))),
        'd' => Some(time::Duration::days(number.min(1 << 20))),
        _ => None,
    }
}

/// How far in the past a start may be given (a clock a little behind); it
/// is then counted from now: grants are never backdated.
const START_SLACK: time::Duration = time::Duration::minutes(5);

/// Checks a new grant's fields; the times it runs between.
fn check(body: &NewGrantJson, now: OffsetDateTime) -> ApiResult<(OffsetDateTime, OffsetDateTime)> {
    if body.user.trim().is_empty() || body.user.len() > 256 {
        return Err(invalid(
            "invalid_user",
            "user",
            "user must be a user's id or login name",
        ));
    }
    let justification = body.justification.trim();
    if justification.is_empty()
        || justification.chars().count() > MAX_JUSTIFICATION
        || justification.chars().any(char::is_control)
    {
        return Err(invalid(
            "invalid_justification",
            "justification",
            format!(
                "justification is required: at most {MAX_JUSTIFICATION} characters on one line, saying why"
            ),
        ));
    }
    let starts_at = match &body.starts_at {
        None => now,
        Some(text) => {
            let at = parse_time(text, "starts_at")?;
            if at < now - START_SLACK {
                return Err(invalid(
                    "starts_at_in_past",
                    "starts_at",
                    "starts_at is in the past; grants cannot be backdated (leave it out to start now)",
                ));
            }
            if at - now > MAX_GRANT_START_AHEAD {
                return Err(invalid(
                    "starts_at_too_far",
                    "starts_at",
                    "starts_at may be at most 366 days ahead",
                ));
            }
            at.max(now)
        }
    };
    let ends_at = match (&body.ends_at, &body.duration) {
        (Some(text), None) => parse_time(text, "ends_at")?,
        (None, Some(text)) => {
            let duration = parse_duration(text).ok_or_else(|| {
                invalid(
                    "invalid_duration",
                    "duration",
                    "duration must be a number and a unit: 90m, 8h, 2d",
                )
            })?;
            if duration > MAX_GRANT_DURATION {
                return Err(invalid(
                    "grant_too_long",
                    "duration",
                    "a grant may last at most 30 days",
                ));
            }
            starts_at + duration
        }
        _ => {
            return Err(invalid(
                "ends_at_or_duration",
                "ends_at",
                "give the end as ends_at or as a duration, one of the two",
            ));
        }
    };
    if ends_at <= starts_at {
        return Err(invalid(
            "ends_before_start",
            "ends_at",
            "ends_at must be after the start",
        ));
    }
    if ends_at - starts_at > MAX_GRANT_DURATION {
        return Err(invalid(
            "grant_too_long",
            "ends_at",
            "a grant may last at most 30 days",
        ));
    }
    Ok((starts_at, ends_at))
}

/// Grants one user (optionally one device) a service for a while.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/grants", tag = "grants", request_body = NewGrantJson,
    params(("tenant" = String, Path)),
    responses((status = 201, body = GrantJson), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub(crate) async fn create_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<NewGrantJson>,
) -> ApiResult<(StatusCode, Json<GrantJson>)> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let service = entitle_core::service(&body.service)
        .map_err(|e| invalid("unknown_service", "service", e.to_string()))?;
    // Whole milliseconds: what both back ends store, so the answer shows
    // the times the grant keeps.
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() - now.nanosecond() % 1_000_000)
        .unwrap_or(now);
    let (starts_at, ends_at) = check(&body, now)?;
    let grant = state
        .store
        .create_grant(
            &tenant.id,
            NewGrant {
                user: body.user.trim().to_owned(),
                device_id: body.device_id,
                service,
                starts_at,
                ends_at,
                justification: body.justification.trim().to_owned(),
                overrides_exclusions: body.overrides_exclusions,
                actor: caller.actor.clone(),
            },
        )
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    tracing::info!(tenant = %tenant.id, id = %grant.id, user = %grant.user_name, service = %grant.service, ends_at = %rfc3339(grant.ends_at), actor = %caller.name, "grant created");
    Ok((
        StatusCode::CREATED,
        Json(GrantJson::new(&grant, OffsetDateTime::now_utc())),
    ))
}

/// Lists grants, newest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant}/grants", tag = "grants",
    params(("tenant" = String, Path), GrantsQuery), responses((status = 200, body = GrantsJson), (status = 404), (status = 422)))]
pub(crate) async fn list_grants(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<GrantsQuery>,
) -> ApiResult<Json<GrantsJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    if let Some(wanted) = &query.state
        && !["active", "upcoming", "ended", "revoked"].contains(&wanted.as_str())
    {
        return Err(invalid(
            "invalid_state",
            "state",
            "state must be active, upcoming, ended or revoked",
        ));
    }
    let now = OffsetDateTime::now_utc();
    let items = state
        .store
        .grants(&tenant.id)
        .await?
        .iter()
        .filter(|g| query.state.as_deref().is_none_or(|s| g.state_at(now) == s))
        .map(|g| GrantJson::new(g, now))
        .collect();
    Ok(Json(GrantsJson { items }))
}

/// Ends a grant now; 409 once it has ended or was revoked.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant}/grants/{id}", tag = "grants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = GrantJson), (status = 403), (status = 404), (status = 409)))]
pub(crate) async fn revoke_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> ApiResult<Json<GrantJson>> {
    let tenant = caller.tenant_for_write(&state, &tenant).await?;
    let grant = state
        .store
        .revoke_grant(&tenant.id, &id, &caller.actor)
        .await?;
    state.snapshots.refresh(&tenant.id).await?;
    tracing::info!(tenant = %tenant.id, id = %grant.id, actor = %caller.name, "grant revoked");
    Ok(Json(GrantJson::new(&grant, OffsetDateTime::now_utc())))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_with_their_unit() {
        assert_eq!(parse_duration("8h"), Some(time::Duration::hours(8)));
        assert_eq!(parse_duration("90m"), Some(time::Duration::minutes(90)));
        assert_eq!(parse_duration("2d"), Some(time::Duration::days(2)));
        assert_eq!(parse_duration("45s"), Some(time::Duration::seconds(45)));
        for bad in [
            "",
            "h",
            "8",
            "-1h",
            "0h",
            "8w",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
