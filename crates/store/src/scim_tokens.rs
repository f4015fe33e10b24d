//! The lifecycle of a tenant's SCIM tokens: the records and the trait. The
//! one implementation is `sql_scim_setup.rs`.
//!
//! A tenant has one current token (the newest) and at most one previous token
//! in its grace period. A rotation keeps, of the tokens that worked until then,
//! the one the identity provider used last (the newer one if neither was
//! ever used) working for the grace period chosen, and ends every other one at
//! once: so a second rotation during a grace period never strands a
//! provider that still uses the older token, and never leaves more than two
//! tokens working.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Actor, StoreResult, Tenant};

/// A stored SCIM token, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimToken {
    /// Stable id, to name the token without its secret.
    pub id: String,
    /// The tenant it opens.
    pub tenant_id: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When the identity provider last presented it (recorded at most once a
    /// minute, see [`crate::LAST_USED_RESOLUTION`]).
    pub last_used_at: Option<OffsetDateTime>,
    /// The end of its grace period, once a newer token replaced it.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Where a token stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimTokenState {
    /// The newest token, with no end.
    Current,
    /// Replaced, still working until the time given.
    Grace(OffsetDateTime),
    /// Replaced, and its grace period ended at the time given.
    Expired(OffsetDateTime),
    /// Ended by hand or by a rotation, at the time given.
    Revoked(OffsetDateTime),
}

impl ScimTokenState {
    /// Whether a token in this state opens SCIM.
    pub fn works(self) -> bool {
        matches!(self, ScimTokenState::Current | ScimTokenState::Grace(_))
    }

    /// `current`, `grace`, `expired` or `revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimTokenState::Current => "current",
            ScimTokenState::Grace(_) => "grace",
            ScimTokenState::Expired(_) => "expired",
            ScimTokenState::Revoked(_) => "revoked",
        }
    }
}

impl ScimToken {
    /// Where the token stands at `now`; a revocation wins over an expiry.
    pub fn state(&self, now: OffsetDateTime) -> ScimTokenState {
        match (self.revoked_at, self.expires_at) {
            (Some(at), _) => ScimTokenState::Revoked(at),
            (None, Some(at)) if at <= now => ScimTokenState::Expired(at),
            (None, Some(at)) => ScimTokenState::Grace(at),
            (None, None) => ScimTokenState::Current,
        }
    }
}

/// A presented SCIM token and the tenant it belongs to.
#[derive(Debug, Clone)]
pub struct ScimGrant {
    /// The tenant.
    pub tenant: Tenant,
    /// The token, even if expired or revoked: the caller decides, so that it
    /// can say why the token no longer works.
    pub token: ScimToken,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct ScimRotation {
    /// The new current token.
    pub token: ScimToken,
    /// The previous token that keeps working until its `expires_at`, if any.
    pub kept: Option<ScimToken>,
    /// The tokens that stopped working at once.
    pub ended: Vec<ScimToken>,
}

/// Tokens a listing shows at most: every working one and the latest ended ones.
pub const SCIM_TOKENS_LISTED: u32 = 10;

/// Longest grace period a rotation may give the previous token.
pub const MAX_SCIM_GRACE: time::Duration = time::Duration::hours(168);

/// The tenant's SCIM tokens.
#[async_trait]
pub trait ScimTokenStore {
    /// The token with this hash and its tenant, whatever its state.
    async fn scim_grant(&self, token_hash: &str) -> StoreResult<ScimGrant>;
    /// The tenant's newest tokens, newest first, at most [`SCIM_TOKENS_LISTED`].
    async fn scim_tokens(&self, tenant_id: &str) -> StoreResult<Vec<ScimToken>>;
    /// Makes the token with this hash the current one; of the tokens that
    /// worked until now, the one used last keeps working for `grace` (none
    /// for a zero grace) and every other one ends now. Audited as
    /// `scim_token.rotate`, plus a `scim_token.revoke` per ended token.
    async fn rotate_scim_token_with_grace(
        &self,
        tenant_id: &str,
        token_hash: &str,
        grace: time::Duration,
        actor: &Actor,
    ) -> StoreResult<ScimRotation>;
    /// Ends a replaced token's grace period now. The current token is not
    /// found here (a rotation replaces it; a tenant always has one), and
    /// revoking an ended token changes nothing.
    async fn revoke_scim_token(
        &self,
        tenant_id: &str,
        token_id: &str,
        actor: &Actor,
    ) -> StoreResult<ScimToken>;
    /// Records that a token was used at `at`, unless its last use is less than
    /// [`crate::LAST_USED_RESOLUTION`] older.
    async fn touch_scim_token(&self, token_id: &str, at: OffsetDateTime) -> StoreResult<()>;
}
