//! The portal's half of sign-in through the identity provider: the redirect
//! to the provider and the callback that ends in the same session as a
//! password sign-in. What the provider is and how its tokens are checked is in
//! `crate::oidc`.
//!
//! A person signing in through the provider gets an account in the tenant the
//! mapping names, created at the first sign-in and bound to the provider's
//! subject (its password hash is `oidc::account_marker`, which no password
//! verifies). Its role follows the mapping at each sign-in; an administrator
//! can disable it like any account. A local account with the same email is
//! never taken over: local accounts stay the break-glass way in.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use entitle_store::{Account, AccountChange, Actor, ActorKind, NewAccount, StoreError, Tenant};
use serde::Deserialize;
use serde_json::json;

use super::{render, secure_attribute};
use crate::admin::invitations::is_invitation_placeholder;
use crate::auth::{Caller, cookie};
use crate::extract::{ClientAddress, QueryParams};
use crate::oidc::{Identity, Oidc, OidcError, Pending, account_marker, is_account_marker};
use crate::state::AppState;

/// The cookie that carries a sign-in under way (state, nonce, PKCE verifier).
const PENDING_COOKIE: &str = "entitle_oidc";
/// The cookie that carries the portal page to return to after the sign-in.
const NEXT_COOKIE: &str = "entitle_oidc_next";
/// Seconds a person has to finish signing in at the provider.
const PENDING_SECONDS: u32 = 600;
/// Longest authorization code or provider error text accepted.
const MAX_PARAM: usize = 4096;

/// The sign-in routes; they answer 404 when no provider is configured.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/portal/oidc/start", get(start))
        .route("/portal/oidc/callback", get(callback))
}

#[derive(Template)]
#[template(path = "sso_refused.html")]
struct RefusedPage {
    reason: String,
}

#[derive(Template)]
#[template(path = "sso_continue.html")]
struct ContinuePage {
    target: String,
}

/// A page saying why the sign-in was refused.
fn refused(status: StatusCode, reason: impl Into<String>) -> Response {
    let mut response = render(&RefusedPage {
        reason: reason.into(),
    });
    *response.status_mut() = status;
    response
}

fn not_configured() -> Response {
    refused(
        StatusCode::NOT_FOUND,
        "Sign-in through an identity provider is not configured on this server.",
    )
}

/// Sends the browser to the provider, remembering the sign-in in a cookie.
async fn start(State(state): State<AppState>, parts: Parts) -> Response {
    let Some(oidc) = state.config.oidc.clone() else {
        return not_configured();
    };
    let pending = Pending::new();
    let url = match oidc.authorization_url(&pending).await {
        Ok(url) => url,
        Err(error) => {
            tracing::warn!(%error, "cannot start a sign-in through the identity provider");
            return refused(StatusCode::BAD_GATEWAY, error.to_string());
        }
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    // Lax, not Strict: the provider sends the browser back with a cross-site
    // top-level GET, which must carry this cookie.
    let cookie = format!(
        "{PENDING_COOKIE}={}; Path=/portal/oidc; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECONDS}{}",
        pending.to_cookie(),
        secure_attribute(&state),
    );
    // The page the person opened while signed out, checked again at the end.
    let next = super::next_from_query(&parts).unwrap_or_default();
    let next_cookie = format!(
        "{NEXT_COOKIE}={}; Path=/portal/oidc; HttpOnly; SameSite=Lax; Max-Age={PENDING_SECONDS}{}",
        super::encode_component(&next),
        secure_attribute(&state),
    );
    match (
        HeaderValue::from_str(&url),
        HeaderValue::from_str(&cookie),
        HeaderValue::from_str(&next_cookie),
    ) {
        (Ok(location), Ok(cookie), Ok(next_cookie)) => {
            response.headers_mut().insert(LOCATION, location);
            response.headers_mut().insert(SET_COOKIE, cookie);
            response.headers_mut().append(SET_COOKIE, next_cookie);
            response
        }
        _ => refused(
            StatusCode::BAD_GATEWAY,
            "The identity provider's sign-in address cannot be used.",
        ),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the provider sends the browser back: checks everything, then signs in.
async fn callback(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    parts: Parts,
    query: Result<QueryParams<CallbackQuery>, crate::error::ApiError>,
) -> Response {
    let Some(oidc) = state.config.oidc.clone() else {
        return not_configured();
    };
    let Ok(QueryParams(query)) = query else {
        return refused(StatusCode::BAD_REQUEST, "The sign-in answer is malformed.");
    };
    // The sign-in must have been started in this browser, recently, and the
    // answer must be for that sign-in: otherwise someone else's code could
    // sign this browser in to their account.
    let Some(pending) = cookie(&parts, PENDING_COOKIE).and_then(Pending::from_cookie) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started in this browser, or it took more than 10 minutes. Start again.",
        );
    };
    if query.state.as_deref() != Some(pending.state.as_str()) {
        return refused(
            StatusCode::BAD_REQUEST,
            "The identity provider's answer does not belong to the sign-in started in this browser. Start again.",
        );
    }
    let next = cookie(&parts, NEXT_COOKIE).and_then(super::decode_return_path);
    let client = super::admins::session_client(address, &parts.headers);
    let sign_in = SignIn {
        address,
        client,
        next,
    };
    let mut response = match finish(&state, &oidc, &pending, &query, sign_in).await {
        Ok(response) => response,
        Err((status, error)) => {
            tracing::warn!(%error, "sign-in through the identity provider refused");
            refused(status, error.to_string())
        }
    };
    // The pending sign-in is used up either way.
    for name in [PENDING_COOKIE, NEXT_COOKIE] {
        let cleared = format!(
            "{name}=; Path=/portal/oidc; HttpOnly; SameSite=Lax; Max-Age=0{}",
            secure_attribute(&state)
        );
        if let Ok(value) = HeaderValue::from_str(&cleared) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
    response
}

type Refusal = (StatusCode, OidcError);

/// Where a sign-in comes from and where it goes back to.
struct SignIn {
    address: Option<std::net::IpAddr>,
    client: entitle_store::SessionClient,
    /// The portal page opened while signed out, already checked.
    next: Option<String>,
}

async fn finish(
    state: &AppState,
    oidc: &Oidc,
    pending: &Pending,
    query: &CallbackQuery,
    SignIn {
        address,
        client,
        next,
    }: SignIn,
) -> Result<Response, Refusal> {
    if let Some(error) = &query.error {
        let description = query.error_description.as_deref().unwrap_or("");
        let text: String = format!("{error}: {description}")
            .chars()
            .take(300)
            .collect();
        return Err((StatusCode::FORBIDDEN, OidcError::Refused(text)));
    }
    let code = query
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= MAX_PARAM)
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                OidcError::Refused("the answer has no usable code".into()),
            )
        })?;
    let identity = oidc.finish(code, pending).await.map_err(|e| {
        let status = match e {
            OidcError::Token(_) => StatusCode::UNAUTHORIZED,
            OidcError::Refused(_) | OidcError::Unmapped(_) => StatusCode::FORBIDDEN,
            OidcError::Provider(_) | OidcError::Config(_) => StatusCode::BAD_GATEWAY,
        };
        (status, e)
    })?;
    let outcome = sign_in(state, oidc, &identity).await;
    let (tenant, account) = match outcome {
        Ok(found) => found,
        Err((status, error)) => {
            audit_failure(state, &identity, &error, address).await;
            return Err((status, error));
        }
    };
    let actor = Caller::signed_in(&account).actor;
    let store_error = |e: StoreError| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            OidcError::Provider(format!("entitle could not record the sign-in: {e}")),
        )
    };
    state
        .store
        .append_audit(
            Some(&tenant.id),
            &actor,
            "sign_in.success",
            &account.email,
            None,
            Some(&json!({
                "address": address.map(|a| a.to_string()),
                "method": "oidc", "issuer": identity.issuer, "subject": identity.subject,
            })),
        )
        .await
        .map_err(store_error)?;
    let cookie = super::start_session(state, &account.id, client)
        .await
        .map_err(store_error)?;
    tracing::info!(account = %account.email, "signed in through the identity provider");
    // Back to the page opened while signed out, when it is one of this tenant's.
    let home = format!("/t/{}/", tenant.name);
    let target = next
        .filter(|next| next.starts_with(&home))
        .unwrap_or_else(|| format!("/t/{}/entitlements/private_access", tenant.name));
    Ok(super::with_session(
        render(&ContinuePage { target }),
        cookie,
    ))
}

/// The tenant and account this identity signs in to, creating the account at
/// the first sign-in and keeping its role in line with the mapping.
async fn sign_in(
    state: &AppState,
    oidc: &Oidc,
    identity: &Identity,
) -> Result<(Tenant, Account), Refusal> {
    let forbidden = |text: String| (StatusCode::FORBIDDEN, OidcError::Unmapped(text));
    let rule = identity
        .map(&oidc.settings.rules)
        .map_err(|e| (StatusCode::FORBIDDEN, e))?;
    let email = identity.email.clone().ok_or_else(|| {
        forbidden(
            "The identity provider gave no verified email for this account; entitle needs one (add the email scope or claim).".into(),
        )
    })?;
    let internal = |e: StoreError| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            OidcError::Provider(format!("entitle could not complete the sign-in: {e}")),
        )
    };
    let tenant = match state.store.tenant(&rule.tenant).await {
        Ok(tenant) => tenant,
        Err(StoreError::NotFound { .. }) => {
            return Err(forbidden(format!(
                "{email} is mapped to the tenant {:?}, which does not exist. Ask an entitle administrator to fix the mapping.",
                rule.tenant
            )));
        }
        Err(other) => return Err(internal(other)),
    };
    let marker = account_marker(&identity.issuer, &identity.subject);
    // Created and updated in the identity provider's name.
    let provider = Actor::new(
        ActorKind::System,
        "oidc",
        oidc.settings.display_name.as_str(),
    );
    let existing = state
        .store
        .accounts_by_email(&email)
        .await
        .map_err(internal)?
        .into_iter()
        .find(|a| a.tenant_id.as_deref() == Some(tenant.id.as_str()));
    let account = match existing {
        None => state
            .store
            .create_account(
                NewAccount {
                    tenant_id: Some(tenant.id.clone()),
                    email: email.clone(),
                    password_hash: marker,
                    role: rule.role,
                },
                &provider,
            )
            .await
            .map_err(internal)?,
        // An invitee may sign in through the provider instead of opening the
        // link: the invited account is bound to this subject, and its role
        // then follows the mapping like any account of the provider.
        Some(account) if is_invitation_placeholder(&account.password_hash) => {
            if account.disabled_at.is_some() {
                return Err(forbidden(format!(
                    "The entitle account {email} is disabled. Ask an entitle administrator."
                )));
            }
            let claimed = state
                .store
                .claim_invitation(&tenant.id, &account.id, &marker, &provider)
                .await
                .map_err(internal)?;
            if claimed.role == rule.role {
                claimed
            } else {
                state
                    .store
                    .update_account(
                        Some(&tenant.id),
                        &claimed.id,
                        AccountChange {
                            role: Some(rule.role),
                            ..AccountChange::default()
                        },
                        &provider,
                    )
                    .await
                    .map_err(internal)?
            }
        }
        Some(account) if account.password_hash != marker => {
            return Err(forbidden(if is_account_marker(&account.password_hash) {
                format!(
                    "The entitle account {email} belongs to another person at the identity provider. Ask an entitle administrator."
                )
            } else {
                format!(
                    "{email} is a local entitle account, which signs in with its password; it is not taken over by the identity provider."
                )
            }));
        }
        Some(account) if account.disabled_at.is_some() => {
            return Err(forbidden(format!(
                "The entitle account {email} is disabled. Ask an entitle administrator."
            )));
        }
        Some(account) if account.role != rule.role => state
            .store
            .update_account(
                Some(&tenant.id),
                &account.id,
                AccountChange {
                    role: Some(rule.role),
                    ..AccountChange::default()
                },
                &provider,
            )
            .await
            .map_err(internal)?,
        Some(account) => account,
    };
    Ok((tenant, account))
}

/// A refused sign-in by a person the provider vouched for is audited with the
/// provider's subject, in the tenant the mapping named if any.
async fn audit_failure(
    state: &AppState,
    identity: &Identity,
    error: &OidcError,
    address: Option<std::net::IpAddr>,
) {
    let name = identity.email.as_deref().unwrap_or(&identity.subject);
    let result = state
        .store
        .append_audit(
            None,
            &Actor::new(ActorKind::Anonymous, "", name),
            "sign_in.failure",
            name,
            None,
            Some(&json!({
                "address": address.map(|a| a.to_string()),
                "method": "oidc", "issuer": identity.issuer, "subject": identity.subject,
                "reason": error.to_string(),
            })),
        )
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "cannot audit a refused sign-in");
    }
}
