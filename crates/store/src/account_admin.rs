//! Administering portal accounts: invitations, what the Admins page lists of
//! each account, the sessions of a tenant, and the rule that a tenant keeps an
//! administrator who can sign in.
//!
//! An invitation creates an account in the state "invited": its password hash
//! is a placeholder no password verifies, and a one-time link (random secret,
//! stored as a SHA-256 hash, expiring) lets the invitee choose a password.
//! Re-inviting replaces the secret; accepting keeps the row, so that the same
//! link opened again says "already used" rather than "unknown".

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{Account, AccountChange, Actor, Role, StoreError, StoreResult};

/// The most sessions one listing returns, newest first: a bound on the answer
/// whatever the number of sessions.
pub const MAX_SESSIONS_LISTED: u32 = 1000;

/// How long a session's last use stays fresh enough not to be written again,
/// so that a portal request writes at most once a minute per session.
pub const LAST_SEEN_RESOLUTION: time::Duration = time::Duration::minutes(1);

/// Where a sign-in came from, as display text (bounded by the caller).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionClient {
    /// The client's address.
    pub address: Option<String>,
    /// The browser's `User-Agent`.
    pub user_agent: Option<String>,
}

/// A session to start.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Hash of the session cookie's secret.
    pub token_hash: String,
    /// Whose session.
    pub account_id: String,
    /// The token state-changing requests must echo.
    pub csrf_token: String,
    /// When it ends.
    pub expires_at: OffsetDateTime,
    /// Where the sign-in came from.
    pub client: SessionClient,
}

/// An account's invitation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvitationState {
    /// When the current link was made.
    pub created_at: OffsetDateTime,
    /// Who made it, as the audit log shows them.
    pub created_by: String,
    /// When the link stops working.
    pub expires_at: OffsetDateTime,
    /// When it was used; `None` while the account waits for its invitee.
    pub accepted_at: Option<OffsetDateTime>,
}

/// What the Admins page shows of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSummary {
    /// The account.
    pub account: Account,
    /// When it last signed in.
    pub last_sign_in_at: Option<OffsetDateTime>,
    /// Its invitation, if it was invited.
    pub invitation: Option<InvitationState>,
    /// How many unexpired sessions it has.
    pub sessions: i64,
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    /// Can sign in.
    Active,
    /// Cannot sign in and has no sessions.
    Disabled,
    /// Waits for its invitee to choose a password (or sign in through the
    /// identity provider).
    Invited,
}

impl AccountStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Disabled => "disabled",
            AccountStatus::Invited => "invited",
        }
    }
}

impl AccountSummary {
    /// Disabled wins over invited: a disabled account's link does not work.
    pub fn status(&self) -> AccountStatus {
        if self.account.disabled_at.is_some() {
            AccountStatus::Disabled
        } else if self.pending_invitation().is_some() {
            AccountStatus::Invited
        } else {
            AccountStatus::Active
        }
    }

    /// The invitation while it has not been accepted.
    pub fn pending_invitation(&self) -> Option<&InvitationState> {
        self.invitation
            .as_ref()
            .filter(|invitation| invitation.accepted_at.is_none())
    }
}

/// An invitation to make or renew.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// The tenant.
    pub tenant_id: String,
    /// The invitee's email.
    pub email: String,
    /// The role the account gets.
    pub role: Role,
    /// Hash of the link's secret.
    pub token_hash: String,
    /// When the link stops working.
    pub expires_at: OffsetDateTime,
    /// The password hash of a new account: a placeholder that no password verifies.
    pub placeholder_hash: String,
}

/// The account an invitation made or renewed.
#[derive(Debug, Clone)]
pub struct Invited {
    /// The account, as the Admins page shows it.
    pub summary: AccountSummary,
    /// Whether an earlier link of the same account was replaced.
    pub replaced: bool,
}

/// The invitation a link's secret opens.
#[derive(Debug, Clone)]
pub struct InvitationLookup {
    /// The invited account.
    pub account: Account,
    /// Its tenant's name.
    pub tenant_name: String,
    /// The invitation.
    pub invitation: InvitationState,
}

impl InvitationLookup {
    /// Why the link cannot be used at `now` (used, withdrawn, expired), if it cannot.
    pub fn refusal(&self, now: OffsetDateTime) -> Option<StoreError> {
        invitation_refusal(&self.account, &self.invitation, now)
    }
}

/// A portal session as administrators see it: never its secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Public id.
    pub id: String,
    /// Whose session.
    pub account_id: String,
    /// The account's email.
    pub email: String,
    /// The account's role.
    pub role: Role,
    /// When it started.
    pub created_at: OffsetDateTime,
    /// When it ends.
    pub expires_at: OffsetDateTime,
    /// When it was last used, to the minute.
    pub last_seen_at: OffsetDateTime,
    /// Where the sign-in came from.
    pub client: SessionClient,
}

/// What an administrator does to accounts and sessions, beyond `AccountStore`.
#[async_trait]
pub trait AccountAdminStore {
    /// Every account of a tenant with its status, last sign-in and sessions, by email.
    async fn account_summaries(&self, tenant_id: &str) -> StoreResult<Vec<AccountSummary>>;
    /// One account of a tenant, as [`AccountAdminStore::account_summaries`] shows it.
    async fn account_summary(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> StoreResult<AccountSummary>;
    /// Like `AccountStore::update_account`, but refuses (`StoreError::Refused`,
    /// `last_admin`) a change that leaves the tenant without an enabled admin
    /// account that can sign in; checked under the tenant's write lock, so two
    /// admins demoting each other at once cannot both succeed.
    async fn change_account(
        &self,
        tenant_id: &str,
        account_id: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> StoreResult<Account>;
    /// Invites an email: a new account without a usable password, or, for an
    /// account still waiting for its invitee, a new link (the old one stops
    /// working) and the given role. Any other account with the email is a
    /// `Refused` conflict.
    async fn invite_account(&self, new: NewInvitation, actor: &Actor) -> StoreResult<Invited>;
    /// The invitation whose link has this secret hash, whatever its state.
    async fn invitation(&self, token_hash: &str) -> StoreResult<InvitationLookup>;
    /// Uses an invitation link once: sets the password and marks it accepted.
    /// A used, expired or withdrawn (account disabled) link is `Refused`.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        password_hash: &str,
    ) -> StoreResult<Account>;
    /// An invited account signing in through the identity provider: bound to
    /// it (`password_hash` is the provider's marker) and the invitation accepted.
    async fn claim_invitation(
        &self,
        tenant_id: &str,
        account_id: &str,
        password_hash: &str,
        actor: &Actor,
    ) -> StoreResult<Account>;
    /// Starts a session and notes the account's sign-in; returns the session's public id.
    async fn start_session(&self, new: NewSession) -> StoreResult<String>;
    /// Unexpired sessions of a tenant's accounts (only `account_id`'s when
    /// given), newest first, at most [`MAX_SESSIONS_LISTED`].
    async fn tenant_sessions(
        &self,
        tenant_id: &str,
        account_id: Option<&str>,
    ) -> StoreResult<Vec<SessionInfo>>;
    /// Ends one session of a tenant's account (only of `account_id` when given).
    async fn end_session(
        &self,
        tenant_id: &str,
        session_id: &str,
        account_id: Option<&str>,
        actor: &Actor,
    ) -> StoreResult<SessionInfo>;
    /// Notes that a session was used at `at`, unless its last use is less than
    /// [`LAST_SEEN_RESOLUTION`] older.
    async fn touch_session(&self, session_id: &str, at: OffsetDateTime) -> StoreResult<()>;
}

/// Why an invitation link cannot be used now, if it cannot.
pub(crate) fn invitation_refusal(
    account: &Account,
    invitation: &InvitationState,
    now: OffsetDateTime,
) -> Option<StoreError> {
    let (code, message) = if invitation.accepted_at.is_some() {
        (
            "invitation_used",
            "this invitation link was already used; sign in with the password chosen then, or ask an administrator for a new link".to_owned(),
        )
    } else if account.disabled_at.is_some() {
        (
            "invitation_withdrawn",
            "this invitation was withdrawn (the account is disabled); ask an administrator"
                .to_owned(),
        )
    } else if invitation.expires_at <= now {
        (
            "invitation_expired",
            format!(
                "this invitation link expired at {}; ask an administrator to invite you again",
                invitation
                    .expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
        )
    } else {
        return None;
    };
    Some(StoreError::Refused { code, message })
}
