//! Who is calling the admin API, and what they may see.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use entitle_store::{Role, StoreError, Tenant, secrets};

use crate::error::ApiError;
use crate::extract::client_address;
use crate::state::AppState;

/// An authenticated API caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's role.
    pub role: Role,
    /// The caller's tenant (`None` for a super admin).
    pub tenant_id: Option<String>,
    /// The token's name, recorded as the actor of changes.
    pub name: String,
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let address = client_address(parts);
        state.failures.check(address)?;
        let Some(token) = bearer(parts) else {
            return Err(ApiError::unauthorized(
                "send an API token as 'Authorization: Bearer <token>'",
            ));
        };
        match state.store.api_token(&secrets::hash_secret(token)).await {
            Ok(grant) => Ok(Caller {
                role: grant.role,
                tenant_id: grant.tenant_id,
                name: grant.name,
            }),
            Err(StoreError::NotFound { .. }) => {
                state.failures.record_failure(address);
                Err(ApiError::unauthorized("the API token is not valid"))
            }
            Err(other) => Err(other.into()),
        }
    }
}

impl Caller {
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
