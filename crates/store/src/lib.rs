//! Storage for entitle: the records the server keeps, the traits it reads and
//! writes them through, and their one implementation, `SqlStore`, for SQLite and PostgreSQL.
//!
//! The traits are split by capability so that a handler's signature shows what it
//! may touch. Every write that the spec calls "a save" is one transaction.

mod account_admin;
mod codec;
mod dialect;
mod grants;
mod scheduled;
mod scim_tokens;
pub mod secrets;
mod sql;
pub mod testing;

use std::collections::BTreeMap;

use async_trait::async_trait;
use entitle_core::{DeviceGroup, DeviceReport, Ownership, SaveError, ServiceDef, Settings};
use time::OffsetDateTime;

pub use account_admin::{
    AccountAdminStore, AccountStatus, AccountSummary, InvitationLookup, InvitationState, Invited,
    LAST_SEEN_RESOLUTION, MAX_SESSIONS_LISTED, NewInvitation, NewSession, SessionClient,
    SessionInfo,
};
pub use codec::{device_group_to_json, report_to_json, settings_to_json};
pub use dialect::PostgresOptions;
pub use grants::{
    GRANTS_LISTED, Grant, GrantStore, MAX_GRANT_DURATION, MAX_GRANT_START_AHEAD, MAX_JUSTIFICATION,
    MAX_LIVE_GRANTS, NewGrant,
};
pub use scheduled::{
    DueChange, MAX_PENDING_CHANGES, MAX_SCHEDULE_AHEAD, NewScheduledChange,
    SCHEDULED_CHANGES_LISTED, ScheduledChange, ScheduledChangeStore, ScheduledStatus,
};
pub use scim_tokens::{
    MAX_SCIM_GRACE, SCIM_TOKENS_LISTED, ScimGrant, ScimRotation, ScimToken, ScimTokenState,
    ScimTokenStore,
};
pub use sql::{Enrollment, SqlStore};

/// Everything the server needs from storage.
pub trait Store:
    TenantStore
    + DirectoryStore
    + DirectoryViewStore
    + DeviceStore
    + ConfigStore
    + AccountStore
    + AccountAdminStore
    + ScimStore
    + ScimTokenStore
    + ScheduledChangeStore
    + GrantStore
    + Send
    + Sync
{
}
impl<T> Store for T where
    T: TenantStore
        + DirectoryStore
        + DirectoryViewStore
        + DeviceStore
        + ConfigStore
        + AccountStore
        + AccountAdminStore
        + ScimStore
        + ScimTokenStore
        + ScheduledChangeStore
        + GrantStore
        + Send
        + Sync
{
}

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record does not exist (or belongs to another tenant).
    #[error("{what} not found")]
    NotFound {
        /// What kind of record.
        what: &'static str,
    },
    /// A unique name is taken.
    #[error("{what} {name:?} already exists")]
    Duplicate {
        /// What kind of record.
        what: &'static str,
        /// The name that is taken.
        name: String,
    },
    /// `If-Match` named a version that is no longer current.
    #[error(
        "the settings were changed by someone else (you had version {expected}, current is {current}); reload and apply your change again"
    )]
    Stale {
        /// The version the caller had.
        expected: i64,
        /// The version stored now.
        current: i64,
    },
    /// The save breaks a rule of the spec.
    #[error(transparent)]
    Invalid(#[from] SaveError),
    /// A group that entitlements still select cannot be deleted without `force`.
    #[error("{what} {name:?} is still selected by {}", .services.join(", "))]
    InUse {
        /// What kind of group.
        what: &'static str,
        /// Its name.
        name: String,
        /// The services whose settings select it.
        services: Vec<String>,
    },
    /// A group nested inside a group that entitlements exclude cannot be
    /// deleted without `force`: its members would leave the exclusion.
    #[error("group {name:?} is inside {} excluded by {}", .containers.join(", "), .services.join(", "))]
    InsideExcluded {
        /// Its name.
        name: String,
        /// The excluded groups it is nested in (directly or deeper).
        containers: Vec<String>,
        /// The services whose settings exclude them.
        services: Vec<String>,
    },
    /// A scheduled change whose creator's credential was revoked, expired,
    /// disabled or demoted before its time.
    #[error("{0}")]
    CreatorRevoked(String),
    /// A group would end up containing itself.
    #[error(
        "group {member} cannot be nested in {container}: {container} is already inside {member}"
    )]
    Cycle {
        /// The would-be container.
        container: String,
        /// The would-be member.
        member: String,
    },
    /// Ids given as group members are neither users nor groups of the tenant.
    #[error("unknown members: {}", .ids.join(", "))]
    UnknownMembers {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// The enrollment key is expired, used up or revoked.
    #[error("the enrollment key {reason}; ask your administrator for a new one")]
    KeyUnusable {
        /// Why, as words that follow "the enrollment key".
        reason: &'static str,
    },
    /// One request names more group members than a write may carry.
    #[error(
        "a request may name at most {max} group members, not {count}; send the rest in further requests"
    )]
    TooManyMembers {
        /// How many the request named.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A group id given as a member does not exist in the tenant.
    #[error("unknown groups: {}", .ids.join(", "))]
    UnknownGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// A change that would break a rule about accounts (the last admin, a used
    /// invitation); `code` is the API's stable error code.
    #[error("{message}")]
    Refused {
        /// Stable code, e.g. `last_admin`.
        code: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A listing's cursor was not made by this listing in this order.
    #[error("the cursor is not one this listing gave in this order; start again without it")]
    BadCursor,
    /// Data in the database could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The most members one directory write may name. Resolving them holds the
/// tenant's write lock, so an unbounded list would stall every other write.
pub const MAX_MEMBERS_PER_WRITE: usize = 10_000;

/// Refuses a write naming more members than [`MAX_MEMBERS_PER_WRITE`].
pub(crate) fn check_member_count(ids: &[String]) -> StoreResult<()> {
    if ids.len() > MAX_MEMBERS_PER_WRITE {
        return Err(StoreError::TooManyMembers {
            count: ids.len(),
            max: MAX_MEMBERS_PER_WRITE,
        });
    }
    Ok(())
}

/// Sorts member ids, in their order, into users and groups by the kinds the
/// database found (`user` or `group`); ids it did not find are an error.
pub(crate) fn split_members(
    ids: &[String],
    kinds: &std::collections::HashMap<String, String>,
) -> StoreResult<(Vec<String>, Vec<String>)> {
    let (mut users, mut groups, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        match kinds.get(id).map(String::as_str) {
            Some("user") => users.push(id.clone()),
            Some(_) => groups.push(id.clone()),
            None => unknown.push(id.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(StoreError::UnknownMembers { ids: unknown });
    }
    Ok((users, groups))
}

/// The audit entry of a directory update of a user: the action (activation
/// first, since it decides every service) and the fields that changed, before
/// and after; `None` when none of them changed.
pub(crate) fn user_update_audit(
    before: (&str, Option<&str>, bool),
    after: &ScimUserWrite,
) -> Option<(&'static str, serde_json::Value, serde_json::Value)> {
    let (old_name, old_display, old_active) = before;
    let mut was = serde_json::Map::new();
    let mut now = serde_json::Map::new();
    if old_name != after.user_name {
        was.insert("user_name".into(), old_name.into());
        now.insert("user_name".into(), after.user_name.clone().into());
    }
    if old_display != after.display_name.as_deref() {
        was.insert("display_name".into(), old_display.into());
        now.insert("display_name".into(), after.display_name.clone().into());
    }
    if old_active != after.active {
        was.insert("active".into(), old_active.into());
        now.insert("active".into(), after.active.into());
    }
    if now.is_empty() {
        return None;
    }
    let action = match (old_active, after.active) {
        (false, true) => "user.activate",
        (true, false) => "user.deactivate",
        _ => "user.update",
    };
    Some((action, was.into(), now.into()))
}

/// Members added and removed between two member lists, for the audit log.
pub(crate) fn member_changes(before: &[String], after: &[String]) -> serde_json::Value {
    let old: std::collections::BTreeSet<&String> = before.iter().collect();
    let new: std::collections::BTreeSet<&String> = after.iter().collect();
    serde_json::json!({
        "added": new.difference(&old).collect::<Vec<_>>(),
        "removed": old.difference(&new).collect::<Vec<_>>(),
    })
}

/// The audit action of an administrator's change to a device.
pub(crate) fn device_change_action(change: &DeviceChange) -> &'static str {
    match (change.ownership.is_some(), change.approve == Some(true)) {
        (true, true) => "device.approve_and_attest",
        (false, true) => "device.approve",
        _ => "device.attest_ownership",
    }
}

/// What the audit log shows of a device's trust before and after a change.
pub(crate) fn device_trust_json(device: &Device) -> serde_json::Value {
    serde_json::json!({
        "reported_ownership": device.report.ownership.as_str(),
        "attested_ownership": device.attested_ownership.as_ref().map(|a| a.ownership.as_str()),
        "attested_by": device.attested_ownership.as_ref().map(|a| a.by.as_str()),
        "pending_approval": device.pending_approval,
    })
}

/// What the audit log shows of a scoped enrollment key.
pub(crate) fn enrollment_key_audit(key: &EnrollmentKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "ownership": key.ownership.map(|o| o.as_str()),
        "max_uses": key.max_uses,
        "uses": key.uses,
        "expires_at": key.expires_at.map(|t| t.unix_timestamp()),
        "revoked": key.revoked_at.is_some(),
    })
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Who did something, as the audit log records it: a kind and a stable id that
/// no caller can choose, and a display name that is only ever shown beside them.
///
/// A token named `system` or after a colleague is still recorded as
/// `api_token` with its own id, so the log cannot be forged by naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of principal acted.
    pub kind: ActorKind,
    /// Its stable id (token id, account id, device id; empty for the system).
    pub id: String,
    /// Its display name when it acted (token name, email, host name).
    pub name: String,
}

/// The kinds of principal that change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// An API token.
    ApiToken,
    /// A person signed in to the portal.
    Account,
    /// An enrolled device (its reports).
    Device,
    /// The identity provider over SCIM.
    Directory,
    /// entitle itself (bootstrap, scheduled work).
    System,
    /// Someone signing in who is not (yet) authenticated.
    Anonymous,
    /// Recorded before actors were principals: only a name, not trustworthy.
    Unverified,
}

impl ActorKind {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiToken => "api_token",
            ActorKind::Account => "account",
            ActorKind::Device => "device",
            ActorKind::Directory => "directory",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
            ActorKind::Unverified => "unverified",
        }
    }

    /// Parses the stored name; anything unknown reads as unverified.
    pub fn parse(text: &str) -> ActorKind {
        match text {
            "api_token" => ActorKind::ApiToken,
            "account" => ActorKind::Account,
            "device" => ActorKind::Device,
            "directory" => ActorKind::Directory,
            "system" => ActorKind::System,
            "anonymous" => ActorKind::Anonymous,
            _ => ActorKind::Unverified,
        }
    }
}

impl Actor {
    /// entitle itself.
    pub fn system() -> Actor {
        Actor::new(ActorKind::System, "", "system")
    }

    /// The tenant's identity provider.
    pub fn directory() -> Actor {
        Actor::new(ActorKind::Directory, "", "directory")
    }

    /// How the portal and CLI show it: the kind is part of the text, so a token
    /// named `system` reads "token system", never "system".
    pub fn display(&self) -> String {
        match self.kind {
            ActorKind::ApiToken => format!("token {}", self.name),
            ActorKind::Account => self.name.clone(),
            ActorKind::Device => format!("device {}", self.name),
            ActorKind::Directory => "directory".to_owned(),
            ActorKind::System => "system".to_owned(),
            ActorKind::Anonymous => format!("anonymous ({})", self.name),
            ActorKind::Unverified => format!("{} (unverified)", self.name),
        }
    }

    /// Any principal.
    pub fn new(kind: ActorKind, id: impl Into<String>, name: impl Into<String>) -> Actor {
        Actor {
            kind,
            id: id.into(),
            name: name.into(),
        }
    }
}

/// What a token or account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every tenant, read and write.
    SuperAdmin,
    /// One tenant, read and write.
    Admin,
    /// One tenant, read only.
    Viewer,
}

impl Role {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// Parses the stored and wire name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "super_admin" => Some(Role::SuperAdmin),
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A tenant, without its secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    /// Stable id.
    pub id: String,
    /// Unique short name used in URLs.
    pub name: String,
    /// When the tenant was created (decides ZPA's default).
    pub created_at: OffsetDateTime,
    /// The tenant-wide config version counter.
    pub config_version: i64,
    /// Counter bumped by every write that can change a decision.
    pub data_version: i64,
    /// When the identity provider last called the SCIM endpoint.
    pub last_scim_request_at: Option<OffsetDateTime>,
    /// New devices wait for an administrator's approval before any
    /// group-based service.
    pub device_approval: bool,
}

/// A tenant to create; secrets arrive hashed.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Unique short name.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Hash of the enrollment key agents present.
    pub enrollment_key_hash: String,
    /// Hash of the SCIM bearer token.
    pub scim_token_hash: String,
}

/// What a presented API token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenGrant {
    /// The role.
    pub role: Role,
    /// The tenant, or `None` for a super admin.
    pub tenant_id: Option<String>,
    /// The token's name, shown beside its id in the audit log.
    pub name: String,
}

/// A stored API token, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Stable id, used to list and revoke the token.
    pub id: String,
    /// What the token grants.
    pub grant: TokenGrant,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// Who created it (`None` for tokens older than this record).
    pub created_by: Option<String>,
    /// When it stops working, if ever.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was last presented (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

/// How long a token's last use stays fresh enough not to be written again, so
/// that the hot path writes at most once a minute per token.
pub const LAST_USED_RESOLUTION: time::Duration = time::Duration::minutes(1);

/// A directory user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// The login name, unique per tenant regardless of case.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Whether the directory has the user active.
    pub active: bool,
    /// Direct group memberships.
    pub groups: Vec<String>,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The login name.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Direct group memberships.
    pub groups: Vec<String>,
}

/// A directory group with its size.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// `local` (API) or `scim` (identity provider).
    pub source: String,
    /// Direct members (users and nested groups).
    pub member_count: i64,
    /// Groups directly nested inside this one.
    pub member_groups: Vec<String>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// Stable id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its user.
    pub user_id: String,
    /// Its user's login name.
    pub user_name: String,
    /// The latest report.
    pub report: DeviceReport,
    /// When it enrolled.
    pub enrolled_at: OffsetDateTime,
    /// When it last synced.
    pub last_sync_at: OffsetDateTime,
    /// Ownership vouched for by its enrollment key or an administrator; it
    /// overrides what the device reports.
    pub attested_ownership: Option<Attested>,
    /// Waiting for an administrator's approval (no group-based service).
    pub pending_approval: bool,
    /// What the agent last said it applied; `None` until it reports it.
    pub applied: Option<Applied>,
}

/// What a device's agent applied: the config version of the policy it acts on
/// and each service's state. Device telemetry like the last sync time, so it is
/// written only when it changes and never audited.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The tenant config version of the policy the agent applied.
    pub config_version: i64,
    /// Server time of the first sync that reported this version.
    pub at: OffsetDateTime,
    /// When the tenant saved that version, if its history has it (read only).
    pub saved_at: Option<OffsetDateTime>,
    /// Each reported service's state, by service id.
    pub services: BTreeMap<String, ServiceState>,
}

/// What [`DeviceStore::device_changes`] read besides the devices it handed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChanges {
    /// The tenant's device revision the answer brings the caller to: ask
    /// from it next time.
    pub revision: i64,
    /// Every device was handed over (no `since`, or a `since` beyond the
    /// store's revision, as after a restore from a backup): the caller's copy
    /// is replaced, not patched.
    pub everything: bool,
    /// Devices removed since `since`.
    pub removed: Vec<String>,
}

/// A sync that reports a new applied state and nothing else new, for
/// [`DeviceStore::record_applied`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedSync {
    /// The device.
    pub device_id: String,
    /// What its agent applied.
    pub applied: Applied,
    /// When it synced.
    pub at: OffsetDateTime,
}

/// One service's state on a device, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    /// Whether it runs, and if not, why.
    pub state: RunState,
    /// The failed start's exit status.
    pub exit_status: Option<i64>,
    /// The last lines of the failed hook's output.
    pub output: Option<String>,
}

/// A service's state on a device (SPEC §6, plus `failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Running,
    /// Stopped (not entitled).
    Stopped,
    /// Entitled, waiting for the next login.
    PendingLogin,
    /// Entitled, waiting for the user to re-authenticate.
    PendingReauth,
    /// Its start failed.
    Failed,
}

impl RunState {
    /// Every state, by wire name.
    pub const ALL: &'static [RunState] = &[
        RunState::Running,
        RunState::Stopped,
        RunState::PendingLogin,
        RunState::PendingReauth,
        RunState::Failed,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
            RunState::PendingLogin => "pending_login",
            RunState::PendingReauth => "pending_reauth",
            RunState::Failed => "failed",
        }
    }

    /// The state of a wire name.
    pub fn parse(name: &str) -> Option<RunState> {
        RunState::ALL.iter().copied().find(|s| s.as_str() == name)
    }
}

impl Device {
    /// The report decisions use: the reported one, with attested ownership in
    /// place of what the device claims.
    pub fn decision_report(&self) -> std::borrow::Cow<'_, DeviceReport> {
        match &self.attested_ownership {
            Some(attested) if attested.ownership != self.report.ownership => {
                std::borrow::Cow::Owned(DeviceReport {
                    ownership: attested.ownership,
                    ..self.report.clone()
                })
            }
            _ => std::borrow::Cow::Borrowed(&self.report),
        }
    }

    /// Whether the device reports an ownership that contradicts the attested one.
    pub fn ownership_conflict(&self) -> bool {
        self.attested_ownership
            .as_ref()
            .is_some_and(|a| a.ownership != self.report.ownership)
    }
}

/// Ownership that someone other than the device vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// The ownership.
    pub ownership: Ownership,
    /// Who vouched: `enrollment_key` or `admin`.
    pub by: AttestedBy,
}

/// Who vouched for a device's ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestedBy {
    /// The scoped enrollment key it enrolled with.
    EnrollmentKey,
    /// An administrator.
    Admin,
}

impl AttestedBy {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttestedBy::EnrollmentKey => "enrollment_key",
            AttestedBy::Admin => "admin",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<AttestedBy> {
        match text {
            "enrollment_key" => Some(AttestedBy::EnrollmentKey),
            "admin" => Some(AttestedBy::Admin),
            _ => None,
        }
    }
}

/// A scoped enrollment key, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentKey {
    /// Stable id.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// What administrators call it.
    pub name: String,
    /// Ownership every device enrolled with it gets, whatever it reports.
    pub ownership: Option<Ownership>,
    /// Refused after this time.
    pub expires_at: Option<OffsetDateTime>,
    /// Refused after this many enrollments.
    pub max_uses: Option<i64>,
    /// Enrollments so far.
    pub uses: i64,
    /// Refused since then.
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was created.
    pub created_at: OffsetDateTime,
}

impl EnrollmentKey {
    /// Why the key cannot enroll at `now` (words that follow "the enrollment
    /// key"), or `None` when it can.
    pub fn unusable(&self, now: OffsetDateTime) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("was revoked")
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some("has expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("has been used as often as it may")
        } else {
            None
        }
    }
}

/// A scoped enrollment key to create; the secret arrives hashed.
#[derive(Debug, Clone)]
pub struct NewEnrollmentKey {
    /// What administrators call it.
    pub name: String,
    /// Hash of the key.
    pub key_hash: String,
    /// Ownership it attests.
    pub ownership: Option<Ownership>,
    /// Refused after this time.
    pub expires_at: Option<OffsetDateTime>,
    /// Refused after this many enrollments.
    pub max_uses: Option<i64>,
}

/// The tenant an enrollment key opens, and its scope when it is a scoped key.
#[derive(Debug, Clone)]
pub struct EnrollmentGrant {
    /// The tenant.
    pub tenant: Tenant,
    /// The scoped key, or `None` for the tenant's own key.
    pub key: Option<EnrollmentKey>,
}

/// A device whose new report moves it between device groups, for the audit log.
#[derive(Debug, Clone)]
pub struct DeviceMove {
    /// The device's tenant.
    pub tenant_id: String,
    /// The device, as the actor.
    pub actor: Actor,
    /// Device groups before, by name.
    pub before: Vec<String>,
    /// Device groups after, by name.
    pub after: Vec<String>,
}

/// What an administrator changes about a device.
#[derive(Debug, Clone, Default)]
pub struct DeviceChange {
    /// `Some(Some(o))` attests ownership `o`; `Some(None)` goes back to the
    /// reported ownership; `None` leaves it.
    pub ownership: Option<Option<Ownership>>,
    /// `Some(true)` approves a pending device.
    pub approve: Option<bool>,
}

/// Which devices a listing shows; every field narrows it, all case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    /// Only this user's devices.
    pub user_name: Option<String>,
    /// Only devices with this host name.
    pub hostname: Option<String>,
    /// Only devices whose user name or host name contains this text.
    pub search: Option<String>,
    /// Only devices that report this operating system.
    pub os: Option<entitle_core::Os>,
    /// Only devices with this effective ownership (attested, else reported).
    pub ownership: Option<Ownership>,
    /// Only devices last seen before this time.
    pub last_seen_before: Option<OffsetDateTime>,
    /// Only devices last seen at or after this time.
    pub last_seen_after: Option<OffsetDateTime>,
    /// `Some(true)`: only devices pending approval; `Some(false)`: only approved ones.
    pub pending: Option<bool>,
    /// `Some(true)`: only devices that applied the tenant's current config
    /// version; `Some(false)`: only those behind it or that never reported one.
    pub applied_current: Option<bool>,
    /// Only, or all but, these devices: a listing filtered by service state
    /// finds them in memory (see the server's device population).
    pub ids: Option<DeviceIds>,
    /// The order of the listing; the cursor carries its key.
    pub sort: DeviceSort,
    /// Newest, or last, first.
    pub descending: bool,
}

/// A set of devices by id, for [`DeviceFilter::ids`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceIds {
    /// Only these devices.
    Only(Vec<String>),
    /// Every device but these.
    Except(Vec<String>),
}

/// What a device listing is ordered by; ties are broken by id, so that the
/// keyset cursor (sort key + id) is total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceSort {
    /// Host name (case-insensitive).
    #[default]
    Hostname,
    /// User name (case-insensitive).
    UserName,
    /// Time of the last sync.
    LastSeen,
    /// Operating system.
    Os,
}

impl DeviceSort {
    /// Every order, by wire name.
    pub const ALL: &'static [(&'static str, DeviceSort)] = &[
        ("hostname", DeviceSort::Hostname),
        ("user_name", DeviceSort::UserName),
        ("last_seen", DeviceSort::LastSeen),
        ("os", DeviceSort::Os),
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        DeviceSort::ALL
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("hostname", |(name, _)| name)
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<DeviceSort> {
        DeviceSort::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    /// The cursor of the page that starts after `device` in this order: the
    /// order, its direction, the sort key and the id, so a cursor is never
    /// read in another order than the one it was made for.
    pub fn cursor_after(self, descending: bool, device: &Device) -> String {
        let key = match self {
            DeviceSort::Hostname => device.report.hostname.to_lowercase(),
            DeviceSort::UserName => device.user_name.to_lowercase(),
            DeviceSort::LastSeen => device.last_sync_at.unix_timestamp_nanos().to_string(),
            DeviceSort::Os => device.report.os.as_str().to_owned(),
        };
        let direction = if descending { "desc" } else { "asc" };
        hex::encode([self.as_str(), direction, &key, &device.id].join("\u{1f}"))
    }
}

/// A device found by its token, with its tenant's current versions, so that
/// a node can tell whether its snapshot is behind without a second read.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatedDevice {
    /// The device.
    pub device: Device,
    /// The tenant's versions at the time of the read.
    pub tenant_versions: TenantVersions,
}

/// What tells a node whether what it keeps of a tenant is still current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantVersions {
    /// Moves on with every change that decisions depend on (settings, the
    /// directory, grants, and every change counted by `device_trust`):
    /// a snapshot read at an older one is behind.
    pub data: i64,
    /// Moves on with every change made to one of the tenant's devices by
    /// anyone but the device's own syncs (approval, attested ownership,
    /// removal): a device read at an older one may be stale or revoked.
    pub device_trust: i64,
}

/// Settings of one service with the config version of their last change.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSettings {
    /// The settings.
    pub settings: Settings,
    /// Config version of their last change (0: never saved, tenant defaults).
    pub version: i64,
}

/// A request to save one service's settings.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    /// The service.
    pub service: &'static ServiceDef,
    /// The version the caller read (`If-Match`); `None` means last writer wins.
    pub expected_version: Option<i64>,
    /// The new settings.
    pub settings: Settings,
    /// Who saves, for the audit log.
    pub actor: Actor,
    /// What the audit log calls it (`entitlement.save`, `entitlement.rollback`).
    pub action: &'static str,
    /// Rollbacks restore a version verbatim, even group lists stored while
    /// "Enabled by Default" was on, so they skip that one rule.
    pub check_default_rule: bool,
    /// The version a rollback restores, recorded with the new version.
    pub restored_from: Option<i64>,
}

/// The result of a save.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The stored settings and their new version.
    pub stored: StoredSettings,
    /// The tenant-wide config version after the save; unchanged when the save
    /// changed nothing.
    pub config_version: i64,
}

/// One immutable config version.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVersion {
    /// The tenant-wide version number.
    pub version: i64,
    /// The service it changed.
    pub service: String,
    /// Who made it.
    pub actor: Actor,
    /// When.
    pub at: OffsetDateTime,
    /// Settings before.
    pub before: Settings,
    /// Settings after.
    pub after: Settings,
    /// The version this one restored, when it is a rollback.
    pub restored_from: Option<i64>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When.
    pub at: OffsetDateTime,
    /// Who.
    pub actor: Actor,
    /// What kind of change, e.g. `entitlement.save`.
    pub action: String,
    /// What it changed, e.g. `private_access`.
    pub target: String,
    /// State before, if any.
    pub before: Option<serde_json::Value>,
    /// State after, if any.
    pub after: Option<serde_json::Value>,
}

/// Which audit entries to read. Every field that is set narrows the log; an
/// empty filter reads all of it. Text matches are case-insensitive for ASCII
/// letters on both back ends (`lower(…) LIKE`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// The actor's principal id, exactly, or text found in its display name.
    pub actor: Option<String>,
    /// The action: exact (`device.delete`), or every action under a prefix
    /// when it ends with `.` or `*` (`device.`, `entitlement*`).
    pub action: Option<String>,
    /// The target, exactly (a service id, a host name, an email).
    pub target: Option<String>,
    /// Changes to one service's entitlement settings (`entitlement.*` with
    /// that service as target).
    pub service: Option<String>,
    /// Entries at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Entries strictly before this time.
    pub to: Option<OffsetDateTime>,
    /// Text found in the target, action, actor name or the before/after states.
    pub text: Option<String>,
}

/// A user as the decision needs it.
#[derive(Debug, Clone)]
pub struct DirectoryUser {
    /// Stable id.
    pub id: String,
    /// Login name.
    pub user_name: String,
    /// Active in the directory.
    pub active: bool,
    /// Direct group memberships.
    pub groups: Vec<String>,
}

/// Everything about a tenant that decisions depend on, loaded at once for the
/// server's in-memory snapshot.
#[derive(Debug, Clone)]
pub struct TenantData {
    /// The tenant.
    pub tenant: Tenant,
    /// Settings per service id; services never saved have their defaults.
    pub settings: BTreeMap<String, StoredSettings>,
    /// Every user.
    pub users: Vec<DirectoryUser>,
    /// Every group as (id, display name).
    pub groups: Vec<(String, String)>,
    /// Nesting as (container, member).
    pub nesting: Vec<(String, String)>,
    /// Every device group.
    pub device_groups: Vec<DeviceGroup>,
    /// Deleted groups as (id, name), which settings may still select.
    pub deleted_user_groups: Vec<(String, String)>,
    /// Deleted device groups as (id, name), which settings may still select.
    pub deleted_device_groups: Vec<(String, String)>,
    /// Grants that had not ended at `as_of` and are not revoked (active or upcoming).
    pub grants: Vec<Grant>,
    /// When it was read: the time the grants were chosen at.
    pub as_of: OffsetDateTime,
}

/// Counts shown as the directory's sync status.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectoryCounts {
    /// Users in the tenant.
    pub users: i64,
    /// Groups in the tenant.
    pub groups: i64,
}

/// A change committed by some node, as announced to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something decisions depend on changed in this tenant.
    Tenant {
        /// The tenant.
        tenant_id: String,
        /// Its `data_version` after the change.
        data_version: i64,
        /// The one device the change was about (removed, approved, attested),
        /// so that a node holding its long-poll answers it at once.
        device_id: Option<String>,
        /// That device's user, so that only that user's held long-polls
        /// wake to look (absent from nodes of an earlier release).
        user_id: Option<String>,
    },
    /// Announcements may have been lost: check every tenant.
    Resync,
}

/// The stream of changes committed by every node.
pub type ChangeFeed = tokio::sync::mpsc::Receiver<Change>;

/// Tenants and the credentials that open them.
#[async_trait]
pub trait TenantStore {
    /// Changes committed by other nodes, for back ends shared by several nodes;
    /// `None` where this node is the only writer.
    async fn changes(&self) -> StoreResult<Option<ChangeFeed>> {
        Ok(None)
    }
    /// Checks that the database answers (for readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// The tenant's current versions: one small indexed read, which the sync
    /// path shares between the syncs that arrived before it started.
    async fn versions(&self, tenant_id: &str) -> StoreResult<TenantVersions>;
    /// Creates a tenant with its default settings.
    async fn create_tenant(&self, new: NewTenant, actor: &Actor) -> StoreResult<Tenant>;
    /// Finds a tenant by id or by name.
    async fn tenant(&self, id_or_name: &str) -> StoreResult<Tenant>;
    /// Every tenant, by name.
    async fn tenants(&self) -> StoreResult<Vec<Tenant>>;
    /// The tenant whose enrollment key has this hash.
    async fn tenant_by_enrollment_key(&self, key_hash: &str) -> StoreResult<Tenant>;
    /// The tenant and scope of an enrollment key: the tenant's own key or a
    /// scoped one (usable or not; enrollment checks it).
    async fn enrollment_grant(&self, key_hash: &str) -> StoreResult<EnrollmentGrant>;
    /// Creates a scoped enrollment key.
    async fn create_enrollment_key(
        &self,
        tenant_id: &str,
        new: NewEnrollmentKey,
        actor: &Actor,
    ) -> StoreResult<EnrollmentKey>;
    /// The tenant's scoped enrollment keys, newest first.
    async fn enrollment_keys(&self, tenant_id: &str) -> StoreResult<Vec<EnrollmentKey>>;
    /// Revokes a scoped enrollment key at once.
    async fn revoke_enrollment_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        actor: &Actor,
    ) -> StoreResult<EnrollmentKey>;
    /// Replaces the tenant's own enrollment key (the one made with the
    /// tenant) by the key with this hash: the old one stops enrolling at once.
    /// Enrolled devices keep their own tokens.
    async fn rotate_enrollment_key(
        &self,
        tenant_id: &str,
        key_hash: &str,
        actor: &Actor,
    ) -> StoreResult<Tenant>;
    /// Turns the device approval mode on or off.
    async fn set_device_approval(
        &self,
        tenant_id: &str,
        on: bool,
        actor: &Actor,
    ) -> StoreResult<Tenant>;
    /// The tenant whose working (current, or replaced but in its grace
    /// period) SCIM token has this hash.
    async fn tenant_by_scim_token(&self, token_hash: &str) -> StoreResult<Tenant>;
    /// Replaces the SCIM tokens with this one at once, with no grace period
    /// (see [`ScimTokenStore::rotate_scim_token_with_grace`]).
    async fn rotate_scim_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Stores an API token by its hash, without an expiry.
    async fn create_api_token(
        &self,
        token_hash: &str,
        grant: &TokenGrant,
        actor: &Actor,
    ) -> StoreResult<ApiToken> {
        self.issue_api_token(token_hash, grant, None, actor).await
    }
    /// Stores an API token by its hash, with an optional expiry.
    async fn issue_api_token(
        &self,
        token_hash: &str,
        grant: &TokenGrant,
        expires_at: Option<OffsetDateTime>,
        actor: &Actor,
    ) -> StoreResult<ApiToken>;
    /// The token with this hash, even if expired or revoked: the caller decides,
    /// so that it can say why a token no longer works.
    async fn api_token(&self, token_hash: &str) -> StoreResult<ApiToken>;
    /// The tokens of a tenant, or the super admin tokens for `None`, oldest first.
    async fn api_tokens(&self, tenant_id: Option<&str>) -> StoreResult<Vec<ApiToken>>;
    /// Revokes a token of a tenant (or a super admin token for `None`) at once;
    /// revoking it again keeps the first revocation time.
    async fn revoke_api_token(
        &self,
        tenant_id: Option<&str>,
        token_id: &str,
        actor: &Actor,
    ) -> StoreResult<ApiToken>;
    /// Records that a token was used at `at`, unless its last use is less than
    /// [`LAST_USED_RESOLUTION`] older.
    async fn touch_api_token(&self, token_id: &str, at: OffsetDateTime) -> StoreResult<()>;
    /// Whether any super admin token exists (for bootstrap).
    async fn has_super_admin(&self) -> StoreResult<bool>;
}

/// Users, groups and memberships.
#[async_trait]
pub trait DirectoryStore {
    /// Creates a local group, optionally containing other groups.
    async fn create_group(
        &self,
        tenant_id: &str,
        display_name: &str,
        member_groups: &[String],
        actor: &Actor,
    ) -> StoreResult<Group>;
    /// Deletes a group. Entitlements that select it keep it as a tombstone that
    /// matches nothing; unless `force`, a group still selected is refused with
    /// [`StoreError::InUse`]. Returns the services that still select it.
    async fn delete_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &Actor,
        force: bool,
    ) -> StoreResult<Vec<String>>;
    /// Groups whose name contains `search`, by name.
    async fn search_groups(
        &self,
        tenant_id: &str,
        search: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Group>>;
    /// How many groups' names contain `search`.
    async fn count_groups(&self, tenant_id: &str, search: &str) -> StoreResult<u64>;
    /// Users (not deleted) whose login or display name contains `search`, by
    /// login name, a keyset page at a time.
    async fn search_users(
        &self,
        tenant_id: &str,
        search: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<User>>;
    /// How many users `search_users` finds in all.
    async fn count_users(&self, tenant_id: &str, search: &str) -> StoreResult<u64>;
    /// One group.
    async fn group(&self, tenant_id: &str, group_id: &str) -> StoreResult<Group>;
    /// Creates a local user with direct memberships.
    async fn create_user(&self, tenant_id: &str, user: NewUser, actor: &Actor)
    -> StoreResult<User>;
    /// Finds a user by login name (case-insensitive).
    async fn user_by_name(&self, tenant_id: &str, user_name: &str) -> StoreResult<User>;
    /// Sets a user's active flag.
    async fn set_user_active(
        &self,
        tenant_id: &str,
        user_id: &str,
        active: bool,
        actor: &Actor,
    ) -> StoreResult<User>;
    /// Counts for the sync status.
    async fn directory_counts(&self, tenant_id: &str) -> StoreResult<DirectoryCounts>;
    /// Everything decisions depend on, for the in-memory snapshot.
    async fn tenant_data(&self, tenant_id: &str) -> StoreResult<TenantData>;
}

/// Device groups and devices.
#[async_trait]
pub trait DeviceStore {
    /// Creates a device group (the id inside `group` is ignored).
    async fn create_device_group(
        &self,
        tenant_id: &str,
        group: DeviceGroup,
        actor: &Actor,
    ) -> StoreResult<DeviceGroup>;
    /// Replaces a device group's name and rule.
    async fn update_device_group(
        &self,
        tenant_id: &str,
        group: DeviceGroup,
        actor: &Actor,
    ) -> StoreResult<DeviceGroup>;
    /// Deletes a device group, like [`DirectoryStore::delete_group`].
    async fn delete_device_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &Actor,
        force: bool,
    ) -> StoreResult<Vec<String>>;
    /// Every device group of the tenant, by name.
    async fn device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>>;
    /// Enrolls a device for a user; its token arrives hashed. With a scoped
    /// key, the key is checked and counted in the same transaction, and its
    /// ownership attested; in approval mode the device starts pending.
    async fn enroll_device(
        &self,
        tenant_id: &str,
        user: &User,
        token_hash: &str,
        report: &DeviceReport,
        at: OffsetDateTime,
        key: Option<&EnrollmentKey>,
    ) -> StoreResult<Device>;
    /// Attests a device's ownership or approves it.
    async fn change_device(
        &self,
        tenant_id: &str,
        device_id: &str,
        change: &DeviceChange,
        actor: &Actor,
    ) -> StoreResult<Device>;
    /// The device holding the token with this hash.
    async fn device_by_token(&self, token_hash: &str) -> StoreResult<AuthenticatedDevice>;
    /// One device.
    async fn device(&self, tenant_id: &str, device_id: &str) -> StoreResult<Device>;
    /// Records a sync: the new report and applied state (each if it changed)
    /// and the time; a report that moves the device between device groups is
    /// audited with it. A report the store already holds (another node wrote
    /// it for the same device) is neither written nor audited again.
    async fn record_sync(
        &self,
        device_id: &str,
        report: Option<&DeviceReport>,
        applied: Option<&Applied>,
        at: OffsetDateTime,
        moved: Option<&DeviceMove>,
    ) -> StoreResult<()>;
    /// Records what the agents of these devices applied (each sync's time as
    /// their last seen), in one transaction: the sync path gathers the syncs
    /// that report a new applied state while one such write runs.
    async fn record_applied(&self, syncs: &[AppliedSync]) -> StoreResult<()>;
    /// Sets the "last seen" time of these devices, in one statement: the
    /// sync path collects them and writes a batch a second, off the request.
    /// Ids of devices since removed are ignored. Returns the rows written.
    async fn record_last_seen(&self, device_ids: &[String], at: OffsetDateTime)
    -> StoreResult<u64>;
    /// Devices of a tenant by id, narrowed by the filter.
    async fn devices(
        &self,
        tenant_id: &str,
        filter: &DeviceFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Device>>;
    /// How many devices of a tenant the filter keeps (its order is ignored).
    async fn count_devices(&self, tenant_id: &str, filter: &DeviceFilter) -> StoreResult<u64>;
    /// The tenant's devices changed since revision `since` (every device
    /// when `None`), handed to `each` as they are read, with the ids of those
    /// removed since: what keeps a copy of a tenant's devices in memory
    /// current. Enrolling, a new report, approval, attested ownership and
    /// removal change a device; its applied state and last-seen time do not.
    /// A device may be handed over again after it changed since `revision`.
    /// Writers only mark a device changed; this call first stamps what was
    /// marked with the tenant's next revision (a short write, when anything
    /// was), so that writers never queue on a tenant-wide counter.
    /// Devices are handed over as they are read, so a caller that keeps only
    /// part of each never holds a million whole devices.
    async fn device_changes(
        &self,
        tenant_id: &str,
        since: Option<i64>,
        each: &mut (dyn FnMut(Device) -> StoreResult<()> + Send),
    ) -> StoreResult<DeviceChanges>;
    /// Removes a device, revoking its token; answers the device removed.
    async fn delete_device(
        &self,
        tenant_id: &str,
        device_id: &str,
        actor: &Actor,
    ) -> StoreResult<Device>;
}

/// Entitlement settings, config versions and the audit log.
#[async_trait]
pub trait ConfigStore {
    /// Settings of one service.
    async fn settings(
        &self,
        tenant_id: &str,
        service: &'static ServiceDef,
    ) -> StoreResult<StoredSettings>;
    /// Saves one service's settings: settings, version and audit entry in one transaction.
    /// Settings equal to the stored ones write nothing and answer the stored version.
    async fn save_settings(&self, tenant_id: &str, request: SaveRequest) -> StoreResult<Saved>;
    /// One config version.
    async fn config_version(&self, tenant_id: &str, version: i64) -> StoreResult<ConfigVersion>;
    /// Config versions, newest first, optionally of one service.
    async fn history(
        &self,
        tenant_id: &str,
        service: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ConfigVersion>>;
    /// Config versions older than `before` (all when `None`), newest first,
    /// optionally of one service: one page of the history, by keyset.
    async fn history_before(
        &self,
        tenant_id: &str,
        service: Option<&str>,
        limit: u32,
        before: Option<i64>,
    ) -> StoreResult<Vec<ConfigVersion>>;
    /// Audit entries, newest first.
    async fn audit(
        &self,
        tenant_id: &str,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
    /// Audit entries that match a filter, newest first, with ids below
    /// `before_id` (keyset paging: pass the last id of the previous page).
    async fn audit_filtered(
        &self,
        tenant_id: &str,
        filter: &AuditFilter,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
    /// Notes that the identity provider called the SCIM endpoint.
    async fn touch_scim(&self, tenant_id: &str, at: OffsetDateTime) -> StoreResult<()>;
    /// Records an event that changes no other row (a sign-in, a sign-out).
    async fn append_audit(
        &self,
        tenant_id: Option<&str>,
        actor: &Actor,
        action: &str,
        target: &str,
        before: Option<&serde_json::Value>,
        after: Option<&serde_json::Value>,
    ) -> StoreResult<()>;
}

/// A person who signs in to the portal.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Stable id.
    pub id: String,
    /// The tenant, or `None` for a super admin.
    pub tenant_id: Option<String>,
    /// Sign-in email, unique in its tenant regardless of case.
    pub email: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// The role.
    pub role: Role,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was disabled; a disabled account cannot sign in and has no sessions.
    pub disabled_at: Option<OffsetDateTime>,
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountChange {
    /// Disable (`true`) or enable (`false`).
    pub disabled: Option<bool>,
    /// A new role.
    pub role: Option<Role>,
}

/// An account to create; the password arrives hashed.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The tenant, or `None` for a super admin.
    pub tenant_id: Option<String>,
    /// Sign-in email.
    pub email: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// The role.
    pub role: Role,
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Public id, to list and end it without its secret.
    pub id: String,
    /// When it was last used, to the minute.
    pub last_seen_at: OffsetDateTime,
    /// Whose session.
    pub account: Account,
    /// The token state-changing requests must echo.
    pub csrf_token: String,
    /// When it ends.
    pub expires_at: OffsetDateTime,
}

/// Portal accounts and sessions.
#[async_trait]
pub trait AccountStore {
    /// Creates an account.
    async fn create_account(&self, new: NewAccount, actor: &Actor) -> StoreResult<Account>;
    /// Every account with this email (case-insensitive), in any tenant, oldest
    /// first: emails are unique per tenant only, so sign-in may find several.
    async fn accounts_by_email(&self, email: &str) -> StoreResult<Vec<Account>>;
    /// The accounts of a tenant, by email.
    async fn accounts(&self, tenant_id: &str) -> StoreResult<Vec<Account>>;
    /// One account of a tenant (or a super admin account for `None`).
    async fn account(&self, tenant_id: Option<&str>, account_id: &str) -> StoreResult<Account>;
    /// Disables, enables or changes the role of an account; disabling ends its sessions.
    async fn update_account(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        change: AccountChange,
        actor: &Actor,
    ) -> StoreResult<Account>;
    /// Replaces an account's password hash; `end_sessions` also ends its sessions.
    async fn set_account_password(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        password_hash: &str,
        end_sessions: bool,
        actor: &Actor,
    ) -> StoreResult<()>;
    /// Ends every session of an account; returns how many there were.
    async fn end_sessions(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        actor: &Actor,
    ) -> StoreResult<u64>;
    /// Stores a session by its token hash.
    async fn create_session(
        &self,
        token_hash: &str,
        account_id: &str,
        csrf_token: &str,
        expires_at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// The session with this token hash, if it has not expired and its account
    /// is not disabled.
    async fn session(&self, token_hash: &str) -> StoreResult<Session>;
    /// Ends a session.
    async fn delete_session(&self, token_hash: &str) -> StoreResult<()>;
}

/// Whether a group member is a user or a nested group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A user.
    User,
    /// A group nested inside.
    Group,
}

/// One member of a directory group.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimMember {
    /// The member's id.
    pub id: String,
    /// User or group.
    pub kind: MemberKind,
    /// Its userName or displayName.
    pub display: String,
}

/// A directory user as the identity provider manages it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimUser {
    /// Stable id.
    pub id: String,
    /// Login name.
    pub user_name: String,
    /// The identity provider's own id.
    pub external_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Active in the directory.
    pub active: bool,
    /// Every other attribute, as SCIM JSON.
    pub attributes: serde_json::Value,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
    /// Bumped on every change (the ETag).
    pub version: i64,
}

/// What a create or replace of a user writes.
#[derive(Debug, Clone)]
pub struct ScimUserWrite {
    /// Login name.
    pub user_name: String,
    /// The identity provider's own id.
    pub external_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Active in the directory.
    pub active: bool,
    /// Every other attribute, as SCIM JSON.
    pub attributes: serde_json::Value,
}

/// A directory group as the identity provider manages it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimGroup {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The identity provider's own id.
    pub external_id: Option<String>,
    /// Every other attribute, as SCIM JSON.
    pub attributes: serde_json::Value,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
    /// Bumped on every change (the ETag).
    pub version: i64,
    /// Direct members, when asked for.
    pub members: Vec<ScimMember>,
}

/// What a create or replace of a group writes.
#[derive(Debug, Clone)]
pub struct ScimGroupWrite {
    /// Display name.
    pub display_name: String,
    /// The identity provider's own id.
    pub external_id: Option<String>,
    /// Every other attribute, as SCIM JSON.
    pub attributes: serde_json::Value,
    /// The complete member list (user and group ids).
    pub members: Vec<String>,
}

/// How a SCIM listing narrows its rows in the database; anything else is
/// filtered by the caller over `All`.
#[derive(Debug, Clone, PartialEq)]
pub enum ScimLookup {
    /// Every row.
    All,
    /// By id.
    Id(String),
    /// Users by userName, groups by displayName (case-insensitive).
    Name(String),
    /// By externalId.
    ExternalId(String),
    /// Groups that have this direct member.
    Member(String),
}

/// A page of a listing: the rows and how many match in all.
#[derive(Debug, Clone)]
pub struct Counted<T> {
    /// The rows of the page.
    pub items: Vec<T>,
    /// Rows matching in all.
    pub total: usize,
}

/// Users, groups and memberships as the identity provider manages them over SCIM.
///
/// Every write bumps the tenant's `data_version`, so decisions follow at once.
#[async_trait]
pub trait ScimStore {
    /// Creates a user (409 on a taken userName).
    async fn scim_create_user(&self, tenant_id: &str, user: ScimUserWrite)
    -> StoreResult<ScimUser>;
    /// One user.
    async fn scim_user(&self, tenant_id: &str, id: &str) -> StoreResult<ScimUser>;
    /// Replaces a user; `expected_version` is `If-Match`.
    async fn scim_replace_user(
        &self,
        tenant_id: &str,
        id: &str,
        user: ScimUserWrite,
        expected_version: Option<i64>,
    ) -> StoreResult<ScimUser>;
    /// Deletes a user: memberships go, devices stay and lose every service.
    async fn scim_delete_user(
        &self,
        tenant_id: &str,
        id: &str,
        expected_version: Option<i64>,
    ) -> StoreResult<()>;
    /// Users by lookup, oldest first; `page` is (offset, limit).
    async fn scim_users(
        &self,
        tenant_id: &str,
        lookup: &ScimLookup,
        page: Option<(usize, usize)>,
    ) -> StoreResult<Counted<ScimUser>>;
    /// Creates a group with members.
    async fn scim_create_group(
        &self,
        tenant_id: &str,
        group: ScimGroupWrite,
    ) -> StoreResult<ScimGroup>;
    /// One group, with its members if asked.
    async fn scim_group(
        &self,
        tenant_id: &str,
        id: &str,
        with_members: bool,
    ) -> StoreResult<ScimGroup>;
    /// Replaces a group, members included.
    async fn scim_replace_group(
        &self,
        tenant_id: &str,
        id: &str,
        group: ScimGroupWrite,
        expected_version: Option<i64>,
    ) -> StoreResult<ScimGroup>;
    /// Adds and removes direct members without rewriting the others.
    async fn scim_change_members(
        &self,
        tenant_id: &str,
        id: &str,
        add: &[String],
        remove: &[String],
        expected_version: Option<i64>,
    ) -> StoreResult<()>;
    /// Deletes a group; returns the services whose entitlements no longer select it.
    async fn scim_delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        expected_version: Option<i64>,
    ) -> StoreResult<Vec<String>>;
    /// Groups by lookup, oldest first; `page` is (offset, limit).
    async fn scim_groups(
        &self,
        tenant_id: &str,
        lookup: &ScimLookup,
        page: Option<(usize, usize)>,
        with_members: bool,
    ) -> StoreResult<Counted<ScimGroup>>;
}

/// A user in a group's effective membership.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    /// The user's id.
    pub user_id: String,
    /// Login name.
    pub user_name: String,
    /// Display name.
    pub display_name: Option<String>,
    /// Active in the directory.
    pub active: bool,
    /// Ids of the groups through which the user belongs, from the user's own
    /// group up to the one directly inside the group listed; empty for a
    /// direct member.
    pub via: Vec<String>,
}

/// The size of a group's effective membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberCounts {
    /// Users (not deleted) in the group directly or through nested groups, each once.
    pub members: u64,
    /// Those of them the directory has active.
    pub active: u64,
    /// Groups nested inside, directly or deeper.
    pub nested_groups: u64,
}

/// Read-only views of the directory for people: who is in a group, however deep.
#[async_trait]
pub trait DirectoryViewStore {
    /// Users (not deleted) in a group directly or through groups nested inside
    /// it, each once, by login name, a keyset page at a time.
    async fn group_members(
        &self,
        tenant_id: &str,
        group_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<GroupMember>>;
    /// How many users `group_members` lists in all, and how many are active.
    async fn count_group_members(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> StoreResult<MemberCounts>;
}
