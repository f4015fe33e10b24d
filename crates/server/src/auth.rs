//! Who is calling the admin API, and what they may see.

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use entitle_store::{
    Account, Actor, ActorKind, LAST_SEEN_RESOLUTION, LAST_USED_RESOLUTION, Role, Session,
    StoreError, Tenant, secrets,
};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::extract::client_address;
use crate::state::AppState;
use crate::wire::rfc3339;

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's role.
    pub role: Role,
    /// The caller's tenant (`None` for a super admin).
    pub tenant_id: Option<String>,
    /// The token's name or the account's email, for logs.
    pub name: String,
    /// Who the caller is, recorded as the actor of its changes.
    pub actor: Actor,
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The name of the portal's session cookie.
pub const SESSION_COOKIE: &str = "entitle_session";
/// The header in which the portal echoes its CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of a cookie, if the request carries it.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The signed-in session of a portal request, if any.
pub async fn session(parts: &Parts, state: &AppState) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie(parts, SESSION_COOKIE) else {
        return Ok(None);
    };
    match state.store.session(&secrets::hash_secret(token)).await {
        Ok(session) => {
            // Like a token's last use: written at most once a minute, so that
            // ordinary page loads read the session and write nothing.
            let now = OffsetDateTime::now_utc();
            if now - session.last_seen_at >= LAST_SEEN_RESOLUTION
                && let Err(error) = state.store.touch_session(&session.id, now).await
            {
                tracing::warn!(error = %error, "could not record the session's last use");
            }
            Ok(Some(session))
        }
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

/// The id of the account whose session authenticates the request, or `None`
/// when a bearer token does (a token speaks for no account) or nobody is signed in.
pub async fn session_account_id(
    parts: &Parts,
    state: &AppState,
) -> Result<Option<String>, ApiError> {
    if bearer(parts).is_some() {
        return Ok(None);
    }
    Ok(session(parts, state).await?.map(|s| s.account.id))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The credential is checked first: only a caller whose own credential
        // fails is counted, and only such a caller is ever refused with 429.
        let address = client_address(parts);
        let Some(token) = bearer(parts) else {
            return portal_caller(parts, state, address).await;
        };
        let token = match state.store.api_token(&secrets::hash_secret(token)).await {
            Ok(token) => token,
            Err(StoreError::NotFound { .. }) => {
                return Err(state.failures.fail(
                    address,
                    ApiError::unauthorized("the API token is not valid"),
                ));
            }
            Err(other) => return Err(other.into()),
        };
        let now = OffsetDateTime::now_utc();
        if let Some(at) = token.revoked_at {
            return Err(state.failures.fail(
                address,
                ApiError::unauthorized(format!(
                    "the API token was revoked at {}; ask an admin for a new one",
                    rfc3339(at)
                )),
            ));
        }
        if let Some(at) = token.expires_at
            && at <= now
        {
            return Err(state.failures.fail(
                address,
                ApiError::unauthorized(format!(
                    "the API token expired at {}; ask an admin for a new one",
                    rfc3339(at)
                )),
            ));
        }
        // The last use is written at most once a minute per token, so that
        // ordinary calls read the token and write nothing.
        let stale = token
            .last_used_at
            .is_none_or(|last| now - last >= LAST_USED_RESOLUTION);
        if stale && let Err(error) = state.store.touch_api_token(&token.id, now).await {
            // Failing to note the last use must not refuse a valid token.
            tracing::warn!(token_id = %token.id, error = %error, "could not record the token's last use");
        }
        Ok(Caller {
            role: token.grant.role,
            tenant_id: token.grant.tenant_id,
            actor: Actor::new(ActorKind::ApiToken, token.id, token.grant.name.as_str()),
            name: token.grant.name,
        })
    }
}

/// A portal request authenticates with its session cookie; anything that is not
/// a read must also echo the session's CSRF token in a header, which a page of
/// another site cannot read or set.
async fn portal_caller(
    parts: &Parts,
    state: &AppState,
    address: Option<std::net::IpAddr>,
) -> Result<Caller, ApiError> {
    let Some(session) = session(parts, state).await? else {
        let refused = ApiError::unauthorized(
            "send an API token as 'Authorization: Bearer <token>', or sign in to the portal",
        );
        // A session cookie that opens nothing is a failed credential, like a bad token.
        return Err(if cookie(parts, SESSION_COOKIE).is_some() {
            state.failures.fail(address, refused)
        } else {
            refused
        });
    };
    let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let echoed = parts.headers.get(CSRF_HEADER).map(|v| v.as_bytes());
    if !safe && !echoes_secret(echoed, &session.csrf_token) {
        return Err(ApiError::forbidden(
            "this change did not come from an entitle page (CSRF token missing or wrong); reload the page and try again",
        ));
    }
    Ok(Caller::signed_in(&session.account))
}

/// Whether a caller echoed `secret`, compared in constant time so that the
/// answer's timing does not reveal how much of a guess was right.
fn echoes_secret(echoed: Option<&[u8]>, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    echoed.is_some_and(|echoed| bool::from(echoed.ct_eq(secret.as_bytes())))
}

impl Caller {
    /// A person signed in to the portal with this account.
    pub fn signed_in(account: &Account) -> Caller {
        Caller {
            role: account.role,
            tenant_id: account.tenant_id.clone(),
            actor: Actor::new(
                ActorKind::Account,
                account.id.as_str(),
                account.email.as_str(),
            ),
            name: account.email.clone(),
        }
    }

    /// The tenant named in the path, if the caller may see it; another tenant's
    /// answers 404 exactly like a tenant that does not exist.
    pub async fn tenant(&self, state: &AppState, id_or_name: &str) -> Result<Tenant, ApiError> {
        let tenant = state.store.tenant(id_or_name).await.map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::not_found("tenant"),
            other => other.into(),
        })?;
        let allowed =
            self.role == Role::SuperAdmin || self.tenant_id.as_deref() == Some(tenant.id.as_str());
        if !allowed {
            return Err(ApiError::not_found("tenant"));
        }
        Ok(tenant)
    }

    /// Like [`Caller::tenant`], for calls that change something: viewers get 403.
    pub async fn tenant_for_write(
        &self,
        state: &AppState,
        id_or_name: &str,
    ) -> Result<Tenant, ApiError> {
        let tenant = self.tenant(state, id_or_name).await?;
        self.require_writer()?;
        Ok(tenant)
    }

    /// Refuses viewers.
    pub fn require_writer(&self) -> Result<(), ApiError> {
        if self.role == Role::Viewer {
            return Err(ApiError::forbidden(
                "a viewer token can read but not change anything",
            ));
        }
        Ok(())
    }

    /// Refuses everyone but super admins.
    pub fn require_super_admin(&self) -> Result<(), ApiError> {
        if self.role != Role::SuperAdmin {
            return Err(ApiError::forbidden("only a super_admin token can do this"));
        }
        Ok(())
    }
}
