//! The SCIM 2.0 service provider at `/scim/v2/{tenant}/`, authenticated by the
//! tenant's SCIM token. It writes the same users, groups and memberships the
//! rest of entitle reads; every write bumps the tenant's data version, so the
//! next decision sees it, and wakes held long-polls.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, LOCATION, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use entitle_scim_protocol::{
    Filter, Group, Lookup, PatchOp, PatchRequest, ScimError, User, list_response, project,
};
use entitle_store::{
    LAST_USED_RESOLUTION, MemberKind, ScimGroup, ScimGroupWrite, ScimLookup, ScimTokenState,
    ScimUser, ScimUserWrite, StoreError, Tenant, secrets,
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::directory::{LastRequest, SyncError};
use crate::extract::{QueryParams, client_address, first_control_string};
use crate::state::AppState;
use crate::wire::rfc3339;

/// Most resources one list answers (`filter.maxResults`).
const MAX_RESULTS: usize = 200;

/// The SCIM routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/scim/v2/{tenant}/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/scim/v2/{tenant}/ResourceTypes", get(resource_types))
        .route("/scim/v2/{tenant}/ResourceTypes/{name}", get(resource_type))
        .route("/scim/v2/{tenant}/Schemas", get(schemas))
        .route("/scim/v2/{tenant}/Schemas/{id}", get(schema))
        .route("/scim/v2/{tenant}/Users", get(list_users).post(create_user))
        .route(
            "/scim/v2/{tenant}/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route(
            "/scim/v2/{tenant}/Groups",
            get(list_groups).post(create_group),
        )
        .route(
            "/scim/v2/{tenant}/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/scim/v2/{tenant}/.search", post(search_all))
        .route("/scim/v2/{tenant}/Users/.search", post(search_users))
        .route("/scim/v2/{tenant}/Groups/.search", post(search_groups))
        .route("/scim/v2/{tenant}/{*rest}", any(unknown_endpoint))
}

type ScimResult = Result<Response, Failure>;

/// A SCIM failure, remembered for the directory's sync status once the tenant is known.
struct Failure(ScimError);

impl From<ScimError> for Failure {
    fn from(error: ScimError) -> Self {
        Failure(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure(match error {
            StoreError::NotFound { what } => ScimError::not_found(format!("{what} not found")),
            StoreError::Duplicate { what, name } => {
                ScimError::uniqueness(format!("a {what} named {name:?} already exists"))
            }
            StoreError::Stale { expected, current } => ScimError::new(
                412,
                None,
                format!("the resource is at version {current}, not {expected}; read it again"),
            ),
            StoreError::UnknownMembers { ids } => {
                ScimError::invalid_value(format!("unknown members: {}", ids.join(", ")))
            }
            too_many @ StoreError::TooManyMembers { .. } => {
                ScimError::new(413, None, too_many.to_string())
            }
            StoreError::Cycle { container, member } => ScimError::invalid_value(format!(
                "group {member} cannot be a member of {container}: {container} is already inside it"
            )),
            other => {
                tracing::error!(error = %other, "SCIM storage failure");
                ScimError::new(
                    500,
                    None,
                    "the server could not complete the request; it has been logged",
                )
            }
        })
    }
}

/// The SCIM error for an address under `/scim/` that no route answers.
pub(crate) fn unrouted() -> Response {
    Failure(ScimError::not_found("no such SCIM endpoint")).into_response()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        scim_response(
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST),
            self.0.to_json(),
        )
    }
}

fn scim_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/scim+json"),
    );
    response
}

/// The authenticated tenant of a SCIM request, and what it needs to answer.
struct Scim {
    state: AppState,
    tenant: Tenant,
    base_url: String,
    request: String,
    method: String,
    path: String,
    user_agent: Option<String>,
    /// The request's `If-Match`, read by the writes that honour it.
    if_match: Option<HeaderValue>,
}

impl Scim {
    async fn authenticate(
        state: &AppState,
        tenant_path: &str,
        method: &Method,
        uri: &str,
        headers: &HeaderMap,
        address: Option<std::net::IpAddr>,
    ) -> Result<Self, Failure> {
        // The token is checked first: only a caller whose token fails is
        // counted, and only such a caller is ever refused with 429.
        let request = format!("{method} {uri}");
        let refused = |refusal: Refusal, tenant_id: Option<String>| {
            refuse(state, tenant_path, tenant_id, &request, address, refusal)
        };
        let Some(token) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
        else {
            return Err(refused(Refusal::NoBearer, None).await);
        };
        let grant = match state.store.scim_grant(&secrets::hash_secret(token)).await {
            Ok(grant) => grant,
            Err(StoreError::NotFound { .. }) => return Err(refused(Refusal::Unknown, None).await),
            Err(other) => return Err(other.into()),
        };
        // Another tenant's token opens nothing here, and says nothing about this tenant.
        if grant.tenant.name != tenant_path && grant.tenant.id != tenant_path {
            return Err(refused(Refusal::Unknown, None).await);
        }
        let now = OffsetDateTime::now_utc();
        match grant.token.state(now) {
            ScimTokenState::Expired(at) => {
                return Err(refused(Refusal::Expired(at), Some(grant.tenant.id)).await);
            }
            ScimTokenState::Revoked(at) => {
                return Err(refused(Refusal::Revoked(at), Some(grant.tenant.id)).await);
            }
            ScimTokenState::Current | ScimTokenState::Grace(_) => {}
        }
        let tenant = grant.tenant;
        // The token's last use is written at most once a minute, so that
        // ordinary requests read the token and write nothing.
        let stale = grant
            .token
            .last_used_at
            .is_none_or(|last| now - last >= LAST_USED_RESOLUTION);
        if stale && let Err(error) = state.store.touch_scim_token(&grant.token.id, now).await {
            tracing::warn!(%error, "could not record the SCIM token's last use");
        }
        if state.directory.should_touch(&tenant.id)
            && let Err(error) = state
                .store
                .touch_scim(&tenant.id, OffsetDateTime::now_utc())
                .await
        {
            tracing::warn!(%error, "could not record the SCIM request time");
        }
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("http");
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let base_url = format!("{scheme}://{host}/scim/v2/{}", tenant.name);
        Ok(Self {
            state: state.clone(),
            tenant,
            base_url,
            request,
            method: method.to_string(),
            path: uri.to_owned(),
            user_agent: headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            if_match: headers.get(IF_MATCH).cloned(),
        })
    }

    /// Remembers the request and its answer as the tenant's last one.
    fn seen(&self, status: StatusCode) {
        self.state.directory.record_request(
            &self.tenant.id,
            LastRequest::new(
                &self.method,
                &self.path,
                status.as_u16(),
                self.user_agent.as_deref(),
            ),
        );
    }

    /// The version the request's `If-Match` names, if any.
    fn if_match(&self) -> Result<Option<i64>, Failure> {
        expected_version(self.if_match.as_ref())
    }

    fn remember(&self, failure: &Failure) {
        self.state.directory.record_error(
            &self.tenant.id,
            SyncError {
                at: OffsetDateTime::now_utc(),
                request: self.request.clone(),
                status: failure.0.status,
                detail: failure.0.detail.clone(),
            },
        );
    }

    /// Wakes held long-polls soon; decisions already follow through the data version.
    fn changed(&self) {
        self.state.snapshots.invalidate(&self.tenant.id);
    }

    fn meta(
        &self,
        kind: &str,
        id: &str,
        created: OffsetDateTime,
        modified: OffsetDateTime,
        version: i64,
    ) -> Value {
        json!({
            "resourceType": kind,
            "created": rfc3339(created),
            "lastModified": rfc3339(modified),
            "location": format!("{}/{kind}s/{id}", self.base_url),
            "version": etag(version),
        })
    }

    fn user_json(&self, user: &ScimUser) -> Value {
        let resource = User {
            user_name: user.user_name.clone(),
            external_id: user.external_id.clone(),
            display_name: user.display_name.clone(),
            active: user.active,
            attributes: user.attributes.clone(),
        };
        resource.to_json(
            &user.id,
            self.meta(
                "User",
                &user.id,
                user.created_at,
                user.updated_at,
                user.version,
            ),
        )
    }

    fn group_json(&self, group: &ScimGroup, with_members: bool) -> Value {
        let members = with_members.then(|| {
            group
                .members
                .iter()
                .map(|m| {
                    let kind = match m.kind {
                        MemberKind::User => "User",
                        MemberKind::Group => "Group",
                    };
                    json!({"value": m.id, "$ref": format!("{}/{kind}s/{}", self.base_url, m.id)})
                })
                .collect()
        });
        let resource = Group {
            display_name: group.display_name.clone(),
            external_id: group.external_id.clone(),
            members: Vec::new(),
        };
        resource.to_json(
            &group.id,
            members,
            self.meta(
                "Group",
                &group.id,
                group.created_at,
                group.updated_at,
                group.version,
            ),
        )
    }
}

/// Why a SCIM token was refused.
#[derive(Clone, Copy)]
enum Refusal {
    NoBearer,
    Unknown,
    Expired(OffsetDateTime),
    Revoked(OffsetDateTime),
}

impl Refusal {
    /// What the caller is told, which never says whether another tenant's
    /// token was presented.
    fn answer(self) -> String {
        match self {
            Refusal::NoBearer | Refusal::Unknown => {
                "send the tenant's SCIM token as 'Authorization: Bearer <token>'".to_owned()
            }
            Refusal::Expired(at) => format!(
                "this SCIM token was replaced and its grace period ended at {}; use the tenant's current SCIM token",
                rfc3339(at)
            ),
            Refusal::Revoked(at) => format!(
                "this SCIM token was revoked at {}; use the tenant's current SCIM token",
                rfc3339(at)
            ),
        }
    }

    /// What the tenant's administrators see in the recent errors.
    fn detail(self) -> String {
        match self {
            Refusal::NoBearer => {
                "no bearer token: the request had no 'Authorization: Bearer …' header".to_owned()
            }
            Refusal::Unknown => {
                "unknown token: not a SCIM token of this tenant (mistyped, or replaced long ago)"
                    .to_owned()
            }
            Refusal::Expired(at) => format!(
                "expired old token: replaced, and its grace period ended at {}",
                rfc3339(at)
            ),
            Refusal::Revoked(at) => format!("revoked token: revoked at {}", rfc3339(at)),
        }
    }
}

/// Answers a refused SCIM token (401, or 429 once the address failed too
/// often) and remembers it among the recent errors of the tenant named in the
/// URL, if it exists: at most once a second per tenant, and never the token.
async fn refuse(
    state: &AppState,
    tenant_path: &str,
    tenant_id: Option<String>,
    request: &str,
    address: Option<std::net::IpAddr>,
    refusal: Refusal,
) -> Failure {
    let limited = state.failures.fail(
        address,
        crate::error::ApiError::unauthorized("bad SCIM token"),
    );
    let (failure, detail) = if limited.status() == StatusCode::TOO_MANY_REQUESTS {
        (
            Failure(ScimError::new(
                429,
                None,
                "too many failed attempts from this address; try again in a minute",
            )),
            format!(
                "too many failed attempts from this address; the last one: {}",
                refusal.detail()
            ),
        )
    } else {
        (
            Failure(ScimError::new(401, None, refusal.answer())),
            refusal.detail(),
        )
    };
    if !state.directory.should_record_auth_failure(tenant_path) {
        return failure;
    }
    let tenant_id = match tenant_id {
        Some(id) => Some(id),
        None => match state.store.tenant(tenant_path).await {
            Ok(tenant) => Some(tenant.id),
            Err(StoreError::NotFound { .. }) => None,
            Err(error) => {
                tracing::warn!(%error, "could not find the tenant of a refused SCIM token");
                None
            }
        },
    };
    if let Some(tenant_id) = tenant_id {
        state.directory.record_error(
            &tenant_id,
            SyncError {
                at: OffsetDateTime::now_utc(),
                request: request.chars().take(200).collect(),
                status: failure.0.status,
                detail,
            },
        );
    }
    failure
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// The answer to a creation: 201 with the resource, its ETag and its `Location`.
fn created_answer(body: Value, version: i64) -> Response {
    let location = body["meta"]["location"]
        .as_str()
        .and_then(|l| HeaderValue::from_str(l).ok());
    let mut response = with_etag(scim_response(StatusCode::CREATED, body), version);
    if let Some(location) = location {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// The version an `If-Match` names; `*` or none means any. A tag this server
/// never issued is stale.
fn expected_version(if_match: Option<&HeaderValue>) -> Result<Option<i64>, Failure> {
    let Some(value) = if_match.and_then(|v| v.to_str().ok()).map(str::trim) else {
        return Ok(None);
    };
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| {
            Failure(ScimError::new(
                412,
                None,
                format!("If-Match {value} does not name a version of this resource"),
            ))
        })
}

/// A request's body, up to 1 MiB; a larger body is a SCIM 413. Read only
/// once the SCIM token has been checked.
async fn read_body(body: axum::body::Body) -> Result<Bytes, Failure> {
    axum::body::to_bytes(body, crate::edge::MAX_BODY)
        .await
        .map_err(|_| {
            Failure(ScimError::new(
                413,
                None,
                "the request body is larger than 1 MiB",
            ))
        })
}

/// The body as JSON. A control character in any string is refused (NUL
/// above all, which PostgreSQL cannot store), and so is a bidirectional
/// override (a name that displays as another's); tabs and line breaks remain
/// for multi-line attributes such as addresses.
fn body_json(bytes: &Bytes) -> Result<Value, Failure> {
    let document: Value = serde_json::from_slice(bytes).map_err(|e| {
        Failure(ScimError::invalid_syntax(format!(
            "the body is not valid JSON: {e}"
        )))
    })?;
    if let Some(text) = first_control_string(&document) {
        let shown: String = text.chars().take(40).collect();
        return Err(Failure(ScimError::invalid_value(format!(
            "{shown:?} contains a control character (such as NUL) or a bidirectional override (such as U+202E); SCIM attributes may not"
        ))));
    }
    Ok(document)
}

/// Refuses a user or group name that could pass for another
/// ([`entitle_core::name_refusal`]: a control character, a bidirectional
/// override, an invisible character, a form other than NFC) or that is longer
/// than [`crate::wire::MAX_NAME`] characters.
fn check_name(attribute: &str, value: &str) -> Result<(), Failure> {
    if let Some(refusal) = entitle_core::name_refusal(value) {
        return Err(Failure(ScimError::invalid_value(format!(
            "{attribute} {refusal}"
        ))));
    }
    check_length(attribute, value)
}

/// Refuses an identifier the directory keeps for its own matching (such as
/// `externalId`) that holds a control character or a bidirectional override,
/// or is longer than [`crate::wire::MAX_NAME`]. It is opaque to us and shown
/// only beside the name, so the look-alike rules of names do not apply.
fn check_identifier(attribute: &str, value: &str) -> Result<(), Failure> {
    if !value.chars().all(entitle_core::is_name_char) {
        return Err(Failure(ScimError::invalid_value(format!(
            "{attribute} may not contain control characters or bidirectional overrides"
        ))));
    }
    check_length(attribute, value)
}

fn check_length(attribute: &str, value: &str) -> Result<(), Failure> {
    if value.chars().count() > crate::wire::MAX_NAME {
        return Err(Failure(ScimError::invalid_value(format!(
            "{attribute} may be at most {} characters",
            crate::wire::MAX_NAME
        ))));
    }
    Ok(())
}

/// Runs a SCIM handler body with authentication, error form and error memory.
/// The form with a body reads it only after the token has been checked.
macro_rules! scim {
    ($state:expr, $tenant:expr, $request:expr, |$scim:ident, $bytes:ident| $body:expr) => {{
        let (parts, body) = Request::into_parts($request);
        scim!(@parts $state, $tenant, parts, |$scim| {
            let $bytes = read_body(body).await?;
            $body
        })
    }};
    ($state:expr, $tenant:expr, $request:expr, |$scim:ident| $body:expr) => {{
        let (parts, _) = Request::into_parts($request);
        scim!(@parts $state, $tenant, parts, |$scim| $body)
    }};
    (@parts $state:expr, $tenant:expr, $parts:expr, |$scim:ident| $body:expr) => {{
        let parts = $parts;
        let address = client_address(&parts);
        let uri = parts.uri.path().to_owned();
        match Scim::authenticate(
            &$state,
            &$tenant,
            &parts.method,
            &uri,
            &parts.headers,
            address,
        )
        .await
        {
            Err(failure) => failure.into_response(),
            Ok($scim) => {
                let result: ScimResult = async { $body }.await;
                let response = match result {
                    Ok(response) => response,
                    Err(failure) => {
                        $scim.remember(&failure);
                        failure.into_response()
                    }
                };
                $scim.seen(response.status());
                response
            }
        }
    }};
}

#[derive(Deserialize, Default)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

impl ListQuery {
    /// The filter, if the query has one that is not blank.
    fn filter(&self) -> Result<Option<Filter>, Failure> {
        Ok(self
            .filter
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(Filter::parse)
            .transpose()?)
    }

    /// (offset, count, start index) from `startIndex` and `count`; values that are
    /// not numbers are read as the defaults, as RFC 7644 §3.4.2.4 allows.
    fn paging(&self) -> (usize, usize, usize) {
        let start = self
            .start_index
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(1)
            .max(1) as usize;
        let count = self
            .count
            .as_deref()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(100)
            .clamp(0, MAX_RESULTS as i64) as usize;
        (start - 1, count, start)
    }

    fn projection(&self) -> Projection<'_> {
        Projection {
            attributes: self.attributes.as_deref(),
            excluded: self.excluded_attributes.as_deref(),
        }
    }
}

#[derive(Deserialize, Default)]
struct ShowQuery {
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

impl ShowQuery {
    fn projection(&self) -> Projection<'_> {
        Projection {
            attributes: self.attributes.as_deref(),
            excluded: self.excluded_attributes.as_deref(),
        }
    }
}

/// The `attributes` and `excludedAttributes` of a read (RFC 7644 §3.9).
struct Projection<'a> {
    attributes: Option<&'a str>,
    excluded: Option<&'a str>,
}

impl Projection<'_> {
    /// The resource with only the attributes asked for.
    fn apply(&self, resource: &Value) -> Value {
        project(resource, self.attributes, self.excluded)
    }

    /// Whether a group's members are part of the answer: reading them is the
    /// costly part of a large group, so they are read only when asked for.
    fn wants_members(&self) -> bool {
        let names = |text: &str| {
            text.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let mentions = |list: &[String]| {
            list.iter()
                .any(|a| a == "members" || a.starts_with("members.") || a.ends_with(":members"))
        };
        match (self.attributes, self.excluded) {
            (Some(a), _) if !a.trim().is_empty() => mentions(&names(a)),
            (_, Some(e)) => !mentions(&names(e)),
            _ => true,
        }
    }
}

fn to_store_lookup(lookup: Lookup) -> ScimLookup {
    match lookup {
        Lookup::Id(id) => ScimLookup::Id(id),
        Lookup::Name(name) => ScimLookup::Name(name),
        Lookup::ExternalId(id) => ScimLookup::ExternalId(id),
        Lookup::Member(id) => ScimLookup::Member(id),
    }
}

async fn service_provider_config(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| Ok(scim_response(
        StatusCode::OK,
        entitle_scim_protocol::service_provider_config(&scim.base_url)
    )))
}

async fn resource_types(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| discovery_list(
        entitle_scim_protocol::resource_types(&scim.base_url)
    ))
}

async fn resource_type(
    State(state): State<AppState>,
    Path((tenant, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        discovery_item(
            entitle_scim_protocol::resource_types(&scim.base_url),
            &name,
            "resource type",
        )
    })
}

async fn schemas(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| discovery_list(
        entitle_scim_protocol::schemas(&scim.base_url)
    ))
}

async fn schema(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        discovery_item(
            entitle_scim_protocol::schemas(&scim.base_url),
            &id,
            "schema",
        )
    })
}

/// A discovery listing (all of it: there are only a few documents).
fn discovery_list(documents: Vec<Value>) -> ScimResult {
    let total = documents.len();
    Ok(scim_response(
        StatusCode::OK,
        list_response(documents, total, 1),
    ))
}

/// One discovery document by its id (case-insensitive).
fn discovery_item(documents: Vec<Value>, id: &str, what: &str) -> ScimResult {
    documents
        .into_iter()
        .find(|d| {
            d["id"]
                .as_str()
                .is_some_and(|found| found.eq_ignore_ascii_case(id))
        })
        .map(|d| scim_response(StatusCode::OK, d))
        .ok_or_else(|| Failure(ScimError::not_found(format!("no {what} {id:?}"))))
}

async fn list_users(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| users_page(&scim, query)
        .await)
}

async fn users_page(scim: &Scim, query: ListQuery) -> ScimResult {
    let listing = Listing::indexed(&query, "userName")?;
    let users = scim
        .state
        .store
        .scim_users(&scim.tenant.id, listing.lookup(), listing.page())
        .await?;
    let resources = users.items.iter().map(|u| scim.user_json(u)).collect();
    listing.answer(resources, users.total)
}

/// How a listing reads its resources: a page the store finds by an index, or
/// every resource with the filter evaluated here.
struct Listing<'q> {
    query: &'q ListQuery,
    reading: Reading,
    offset: usize,
    count: usize,
    start: usize,
}

enum Reading {
    /// The store finds the page itself: by an index, or unfiltered.
    Indexed(ScimLookup),
    /// The store reads every resource; the filter, if any, is evaluated here.
    Here(Option<Filter>),
}

impl<'q> Listing<'q> {
    /// A listing of one resource type, whose name attribute the store finds by
    /// an index, like `id`, `externalId` and a group's member.
    fn indexed(query: &'q ListQuery, name_attribute: &str) -> Result<Self, Failure> {
        let filter = query.filter()?;
        let reading = match filter.as_ref().map(|f| f.lookup(name_attribute)) {
            None => Reading::Indexed(ScimLookup::All),
            Some(Some(lookup)) => Reading::Indexed(to_store_lookup(lookup)),
            Some(None) => Reading::Here(filter),
        };
        Ok(Self::new(query, reading))
    }

    /// A listing no index serves: every filter is evaluated here.
    fn unindexed(query: &'q ListQuery) -> Result<Self, Failure> {
        Ok(Self::new(query, Reading::Here(query.filter()?)))
    }

    fn new(query: &'q ListQuery, reading: Reading) -> Self {
        let (offset, count, start) = query.paging();
        Self {
            query,
            reading,
            offset,
            count,
            start,
        }
    }

    /// What the store is asked to find.
    fn lookup(&self) -> &ScimLookup {
        match &self.reading {
            Reading::Indexed(lookup) => lookup,
            Reading::Here(_) => &ScimLookup::All,
        }
    }

    /// The page the store is asked for; none when it reads every resource.
    fn page(&self) -> Option<(usize, usize)> {
        match self.reading {
            Reading::Indexed(_) => Some((self.offset, self.count)),
            Reading::Here(_) => None,
        }
    }

    /// A ListResponse of the resources the store read (`total` matching in
    /// all), with `attributes` / `excludedAttributes` applied.
    fn answer(self, resources: Vec<Value>, total: usize) -> ScimResult {
        let (items, total) = match &self.reading {
            Reading::Indexed(_) => (resources, total),
            Reading::Here(filter) => {
                filtered_page(resources, filter.as_ref(), self.offset, self.count)
            }
        };
        let projection = self.query.projection();
        let projected = items.iter().map(|r| projection.apply(r)).collect();
        Ok(scim_response(
            StatusCode::OK,
            list_response(projected, total, self.start),
        ))
    }
}

/// Resources that meet the filter (all of them without one), and one page of them,
/// for filters the store cannot answer with an index.
fn filtered_page(
    resources: Vec<Value>,
    filter: Option<&Filter>,
    offset: usize,
    count: usize,
) -> (Vec<Value>, usize) {
    let matching: Vec<Value> = resources
        .into_iter()
        .filter(|r| filter.is_none_or(|f| f.matches(r)))
        .collect();
    let total = matching.len();
    (
        matching.into_iter().skip(offset).take(count).collect(),
        total,
    )
}

/// The body of `POST …/.search` (RFC 7644 §3.4.3), read as list parameters.
fn search_query(body: &Value) -> Result<ListQuery, Failure> {
    let text = |key: &str| -> Option<String> {
        match entitle_scim_protocol::get_ci(body, key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Array(items) => Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        }
    };
    if !body.is_object() {
        return Err(Failure(ScimError::invalid_syntax(
            "a search request must be a JSON object",
        )));
    }
    Ok(ListQuery {
        filter: text("filter"),
        start_index: text("startIndex"),
        count: text("count"),
        attributes: text("attributes"),
        excluded_attributes: text("excludedAttributes"),
    })
}

async fn search_users(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    search(state, tenant, request, Searched::Users).await
}

async fn search_groups(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    search(state, tenant, request, Searched::Groups).await
}

/// `POST /.search` at the root: users and groups together (RFC 7644 §3.4.3).
async fn search_all(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    search(state, tenant, request, Searched::Everything).await
}

/// The resources a search lists.
enum Searched {
    Users,
    Groups,
    Everything,
}

/// A search: a listing whose parameters come in the body (RFC 7644 §3.4.3).
async fn search(state: AppState, tenant: String, request: Request, searched: Searched) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let query = search_query(&body_json(&bytes)?)?;
        match searched {
            Searched::Users => users_page(&scim, query).await,
            Searched::Groups => groups_page(&scim, query).await,
            Searched::Everything => everything_page(&scim, query).await,
        }
    })
}

/// A page of users and groups together, which no index serves.
async fn everything_page(scim: &Scim, query: ListQuery) -> ScimResult {
    let listing = Listing::unindexed(&query)?;
    let store = &scim.state.store;
    let users = store
        .scim_users(&scim.tenant.id, &ScimLookup::All, None)
        .await?;
    let groups = store
        .scim_groups(&scim.tenant.id, &ScimLookup::All, None, true)
        .await?;
    let resources = users
        .items
        .iter()
        .map(|u| scim.user_json(u))
        .chain(groups.items.iter().map(|g| scim.group_json(g, true)))
        .collect();
    listing.answer(resources, users.total + groups.total)
}

/// Anything else under a tenant's SCIM base: a SCIM 404 (recorded, since it
/// usually means a misconfigured base URL at the identity provider).
async fn unknown_endpoint(
    State(state): State<AppState>,
    Path((tenant, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        let _ = &scim;
        Err(Failure(ScimError::not_found(format!(
            "no SCIM endpoint at /{rest}; the base URL ends in /scim/v2/{tenant}"
        ))))
    })
}

async fn create_user(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let user = User::from_json(&body_json(&bytes)?)?;
        let created = scim
            .state
            .store
            .scim_create_user(&scim.tenant.id, write_user(user)?)
            .await?;
        scim.changed();
        Ok(created_answer(scim.user_json(&created), created.version))
    })
}

/// A user to store, once its names are within the limits.
fn write_user(user: User) -> Result<ScimUserWrite, Failure> {
    check_name("userName", &user.user_name)?;
    check_optional_name("displayName", user.display_name.as_deref())?;
    if let Some(external_id) = &user.external_id {
        check_identifier("externalId", external_id)?;
    }
    Ok(ScimUserWrite {
        user_name: user.user_name,
        external_id: user.external_id,
        display_name: user.display_name,
        active: user.active,
        attributes: user.attributes,
    })
}

/// A group to store, once its names are within the limits.
fn write_group(group: Group) -> Result<ScimGroupWrite, Failure> {
    check_name("displayName", &group.display_name)?;
    if let Some(external_id) = &group.external_id {
        check_identifier("externalId", external_id)?;
    }
    Ok(ScimGroupWrite {
        display_name: group.display_name,
        external_id: group.external_id,
        attributes: json!({}),
        members: group.members,
    })
}

fn check_optional_name(attribute: &str, value: Option<&str>) -> Result<(), Failure> {
    value.map_or(Ok(()), |value| check_name(attribute, value))
}

async fn get_user(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<ShowQuery>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        let user = scim.state.store.scim_user(&scim.tenant.id, &id).await?;
        let body = query.projection().apply(&scim.user_json(&user));
        Ok(with_etag(scim_response(StatusCode::OK, body), user.version))
    })
}

async fn replace_user(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let expected = scim.if_match()?;
        let user = User::from_json(&body_json(&bytes)?)?;
        let replaced = scim
            .state
            .store
            .scim_replace_user(&scim.tenant.id, &id, write_user(user)?, expected)
            .await?;
        scim.changed();
        Ok(with_etag(
            scim_response(StatusCode::OK, scim.user_json(&replaced)),
            replaced.version,
        ))
    })
}

async fn patch_user(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let patch = PatchRequest::from_json(&body_json(&bytes)?)?;
        let store = &scim.state.store;
        let current = store.scim_user(&scim.tenant.id, &id).await?;
        let expected = scim.if_match()?.unwrap_or(current.version);
        let mut resource = scim.user_json(&current);
        patch.apply(&mut resource)?;
        let user = User::from_json(&resource)?;
        // The version read above guards against a change made meanwhile.
        let patched = store
            .scim_replace_user(&scim.tenant.id, &id, write_user(user)?, Some(expected))
            .await?;
        scim.changed();
        Ok(with_etag(
            scim_response(StatusCode::OK, scim.user_json(&patched)),
            patched.version,
        ))
    })
}

async fn delete_user(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        scim.state
            .store
            .scim_delete_user(&scim.tenant.id, &id, scim.if_match()?)
            .await?;
        scim.changed();
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

async fn list_groups(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    QueryParams(query): QueryParams<ListQuery>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| groups_page(&scim, query)
        .await)
}

async fn groups_page(scim: &Scim, query: ListQuery) -> ScimResult {
    let listing = Listing::indexed(&query, "displayName")?;
    // A filter evaluated here may name members, so every group is then read
    // with its members.
    let members = query.projection().wants_members() || listing.page().is_none();
    let groups = scim
        .state
        .store
        .scim_groups(&scim.tenant.id, listing.lookup(), listing.page(), members)
        .await?;
    let resources = groups
        .items
        .iter()
        .map(|g| scim.group_json(g, members))
        .collect();
    listing.answer(resources, groups.total)
}

async fn create_group(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let group = Group::from_json(&body_json(&bytes)?)?;
        let created = scim
            .state
            .store
            .scim_create_group(&scim.tenant.id, write_group(group)?)
            .await?;
        scim.changed();
        Ok(created_answer(
            scim.group_json(&created, true),
            created.version,
        ))
    })
}

async fn get_group(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    QueryParams(query): QueryParams<ShowQuery>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        let projection = query.projection();
        let members = projection.wants_members();
        let group = scim
            .state
            .store
            .scim_group(&scim.tenant.id, &id, members)
            .await?;
        let body = projection.apply(&scim.group_json(&group, members));
        Ok(with_etag(
            scim_response(StatusCode::OK, body),
            group.version,
        ))
    })
}

async fn replace_group(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let expected = scim.if_match()?;
        let group = Group::from_json(&body_json(&bytes)?)?;
        let replaced = scim
            .state
            .store
            .scim_replace_group(&scim.tenant.id, &id, write_group(group)?, expected)
            .await?;
        scim.changed();
        Ok(with_etag(
            scim_response(StatusCode::OK, scim.group_json(&replaced, true)),
            replaced.version,
        ))
    })
}

/// Member additions and removals a PATCH amounts to, when it touches nothing
/// else; such a PATCH never needs the whole member list. The last operation
/// on an id decides whether it is added or removed.
fn member_changes(patch: &PatchRequest) -> Option<(Vec<String>, Vec<String>)> {
    // Ids in the order first named, with whether each ends added: a map, so
    // that tens of thousands of ids in one body cost linear time, not a scan
    // of the lists per id.
    let mut order: Vec<String> = Vec::new();
    let mut added: HashMap<String, bool> = HashMap::new();
    let mut decide = |id: String, add: bool| match added.entry(id) {
        std::collections::hash_map::Entry::Occupied(mut seen) => {
            seen.insert(add);
        }
        std::collections::hash_map::Entry::Vacant(new) => {
            order.push(new.key().clone());
            new.insert(add);
        }
    };
    let ids = |value: &Value| -> Option<Vec<String>> {
        let items = match value {
            Value::Array(items) => items.as_slice(),
            object @ Value::Object(_) => std::slice::from_ref(object),
            _ => return None,
        };
        items
            .iter()
            .map(|item| {
                item.get("value")
                    .or_else(|| item.get("Value"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    };
    for operation in &patch.operations {
        let path = operation.path.as_ref()?;
        if !path.attr.eq_ignore_ascii_case("members") || path.sub.is_some() || path.urn.is_some() {
            return None;
        }
        match (operation.op, &path.filter, &operation.value) {
            (PatchOp::Add, None, Some(value)) => {
                for id in ids(value)? {
                    decide(id, true);
                }
            }
            (PatchOp::Remove, Some(filter), _) => {
                let Filter::Compare(
                    sub,
                    entitle_scim_protocol::CompareOp::Eq,
                    entitle_scim_protocol::CompValue::Str(id),
                ) = filter.as_ref()
                else {
                    return None;
                };
                if !sub.is("value", None) {
                    return None;
                }
                decide(id.clone(), false);
            }
            (PatchOp::Remove, None, Some(value)) => {
                for id in ids(value)? {
                    decide(id, false);
                }
            }
            _ => return None,
        }
    }
    let (add, remove): (Vec<String>, Vec<String>) = order
        .into_iter()
        .partition(|id| added.get(id).copied().unwrap_or(false));
    Some((add, remove))
}

async fn patch_group(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim, bytes| {
        let patch = PatchRequest::from_json(&body_json(&bytes)?)?;
        let store = &scim.state.store;
        let expected = scim.if_match()?;
        if let Some((add, remove)) = member_changes(&patch) {
            store
                .scim_change_members(&scim.tenant.id, &id, &add, &remove, expected)
                .await?;
            scim.changed();
            let group = store.scim_group(&scim.tenant.id, &id, false).await?;
            // Entra ID and Okta ignore the body of a PATCH answer; 204 spares sending every member.
            return Ok(with_etag(
                StatusCode::NO_CONTENT.into_response(),
                group.version,
            ));
        }
        let current = store.scim_group(&scim.tenant.id, &id, true).await?;
        let mut resource = scim.group_json(&current, true);
        patch.apply(&mut resource)?;
        let group = Group::from_json(&resource)?;
        let patched = store
            .scim_replace_group(
                &scim.tenant.id,
                &id,
                write_group(group)?,
                Some(expected.unwrap_or(current.version)),
            )
            .await?;
        scim.changed();
        Ok(with_etag(
            scim_response(StatusCode::OK, scim.group_json(&patched, true)),
            patched.version,
        ))
    })
}

async fn delete_group(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    request: Request,
) -> Response {
    scim!(state, tenant, request, |scim| {
        let removed = scim
            .state
            .store
            .scim_delete_group(&scim.tenant.id, &id, scim.if_match()?)
            .await?;
        if !removed.is_empty() {
            tracing::info!(tenant = %scim.tenant.id, services = ?removed, "deleted group removed from entitlements");
        }
        // Entitlements changed: refresh now, as an admin save would.
        scim.state.snapshots.refresh(&scim.tenant.id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(operations: Value) -> Option<(Vec<String>, Vec<String>)> {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations});
        member_changes(&PatchRequest::from_json(&body).expect("a patch"))
    }

    #[test]
    fn the_last_operation_on_a_member_decides() {
        let (add, remove) = changes(json!([
            {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "remove", "path": "members", "value": [{"value": "u3"}, {"value": "u2"}]},
            {"op": "Add", "path": "members", "value": {"value": "u1"}},
        ]))
        .expect("members only");
        assert_eq!(
            (add, remove),
            (
                vec!["u1".to_owned()],
                vec!["u2".to_owned(), "u3".to_owned()]
            )
        );
        // Anything but members, or a value without an id, takes the full path.
        assert!(changes(json!([{"op": "replace", "path": "displayName", "value": "x"}])).is_none());
        assert!(
            changes(json!([{"op": "add", "path": "members", "value": [{"value": 7}]}])).is_none()
        );
    }

    #[test]
    fn many_member_changes_stay_linear() {
        let ids: Vec<Value> = (0..60_000)
            .map(|i| json!({"value": format!("u{i}")}))
            .collect();
        let (add, remove) = changes(json!([
            {"op": "add", "path": "members", "value": ids},
            {"op": "remove", "path": "members", "value": ids},
            {"op": "add", "path": "members", "value": ids[..10]},
        ]))
        .expect("members only");
        assert_eq!((add.len(), remove.len()), (10, 59_990));
    }
}
