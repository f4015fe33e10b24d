//! Storage for entitle: the records the server keeps, the traits it reads and
//! writes them through, and the SQLite implementation.
//!
//! The traits are split by capability so that a handler's signature shows what it
//! may touch. Every write that the spec calls "a save" is one transaction.

mod codec;
mod postgres;
pub mod secrets;
mod sqlite;
pub mod testing;

use std::collections::BTreeMap;

use async_trait::async_trait;
use entitle_core::{DeviceGroup, DeviceReport, SaveError, ServiceDef, Settings};
use time::OffsetDateTime;

pub use codec::{device_group_to_json, report_to_json, settings_to_json};
pub use postgres::{PostgresOptions, PostgresStore};
pub use sqlite::SqliteStore;

/// Everything the server needs from storage.
pub trait Store:
    TenantStore + DirectoryStore + DeviceStore + ConfigStore + AccountStore + ScimStore + Send + Sync
{
}
impl<T> Store for T where
    T: TenantStore
        + DirectoryStore
        + DeviceStore
        + ConfigStore
        + AccountStore
        + ScimStore
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
    /// A group id given as a member does not exist in the tenant.
    #[error("unknown groups: {}", .ids.join(", "))]
    UnknownGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
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

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

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
    /// The token's name, used as the actor in the audit log.
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
}

/// A device found by its token, with its tenant's current data version, so that
/// a node can tell whether its snapshot is behind without a second read.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatedDevice {
    /// The device.
    pub device: Device,
    /// The tenant's `data_version` at the time of the read.
    pub tenant_data_version: i64,
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
    pub actor: String,
    /// What the audit log calls it (`entitlement.save`, `entitlement.rollback`).
    pub action: &'static str,
    /// Rollbacks restore a version verbatim, even group lists stored while
    /// "Enabled by Default" was on, so they skip that one rule.
    pub check_default_rule: bool,
}

/// The result of a save.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// The stored settings and their new version.
    pub stored: StoredSettings,
    /// The new tenant-wide config version.
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
    pub actor: String,
    /// When.
    pub at: OffsetDateTime,
    /// Settings before.
    pub before: Settings,
    /// Settings after.
    pub after: Settings,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When.
    pub at: OffsetDateTime,
    /// Who (a token name, an admin, or `directory` / `system`).
    pub actor: String,
    /// What kind of change, e.g. `entitlement.save`.
    pub action: String,
    /// What it changed, e.g. `private_access`.
    pub target: String,
    /// State before, if any.
    pub before: Option<serde_json::Value>,
    /// State after, if any.
    pub after: Option<serde_json::Value>,
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
    /// Creates a tenant with its default settings.
    async fn create_tenant(&self, new: NewTenant, actor: &str) -> StoreResult<Tenant>;
    /// Finds a tenant by id or by name.
    async fn tenant(&self, id_or_name: &str) -> StoreResult<Tenant>;
    /// Every tenant, by name.
    async fn tenants(&self) -> StoreResult<Vec<Tenant>>;
    /// The tenant whose enrollment key has this hash.
    async fn tenant_by_enrollment_key(&self, key_hash: &str) -> StoreResult<Tenant>;
    /// The tenant whose SCIM token has this hash.
    async fn tenant_by_scim_token(&self, token_hash: &str) -> StoreResult<Tenant>;
    /// Replaces the SCIM token hash.
    async fn rotate_scim_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        actor: &str,
    ) -> StoreResult<()>;
    /// Stores an API token by its hash, without an expiry.
    async fn create_api_token(
        &self,
        token_hash: &str,
        grant: &TokenGrant,
        actor: &str,
    ) -> StoreResult<ApiToken> {
        self.issue_api_token(token_hash, grant, None, actor).await
    }
    /// Stores an API token by its hash, with an optional expiry.
    async fn issue_api_token(
        &self,
        token_hash: &str,
        grant: &TokenGrant,
        expires_at: Option<OffsetDateTime>,
        actor: &str,
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
        actor: &str,
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
        actor: &str,
    ) -> StoreResult<Group>;
    /// Deletes a group, removing it from every entitlement that selected it.
    async fn delete_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &str,
    ) -> StoreResult<Vec<String>>;
    /// Groups whose name contains `search`, by name.
    async fn search_groups(
        &self,
        tenant_id: &str,
        search: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Group>>;
    /// One group.
    async fn group(&self, tenant_id: &str, group_id: &str) -> StoreResult<Group>;
    /// Creates a local user with direct memberships.
    async fn create_user(&self, tenant_id: &str, user: NewUser, actor: &str) -> StoreResult<User>;
    /// Finds a user by login name (case-insensitive).
    async fn user_by_name(&self, tenant_id: &str, user_name: &str) -> StoreResult<User>;
    /// Sets a user's active flag.
    async fn set_user_active(
        &self,
        tenant_id: &str,
        user_id: &str,
        active: bool,
        actor: &str,
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
        actor: &str,
    ) -> StoreResult<DeviceGroup>;
    /// Replaces a device group's name and rule.
    async fn update_device_group(
        &self,
        tenant_id: &str,
        group: DeviceGroup,
        actor: &str,
    ) -> StoreResult<DeviceGroup>;
    /// Deletes a device group, removing it from every entitlement that selected it.
    async fn delete_device_group(
        &self,
        tenant_id: &str,
        group_id: &str,
        actor: &str,
    ) -> StoreResult<Vec<String>>;
    /// Every device group of the tenant, by name.
    async fn device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>>;
    /// Enrolls a device for a user; its token arrives hashed.
    async fn enroll_device(
        &self,
        tenant_id: &str,
        user: &User,
        token_hash: &str,
        report: &DeviceReport,
        at: OffsetDateTime,
    ) -> StoreResult<Device>;
    /// The device holding the token with this hash.
    async fn device_by_token(&self, token_hash: &str) -> StoreResult<AuthenticatedDevice>;
    /// One device.
    async fn device(&self, tenant_id: &str, device_id: &str) -> StoreResult<Device>;
    /// Records a sync: the new report (if it changed) and the time.
    async fn record_sync(
        &self,
        device_id: &str,
        report: Option<&DeviceReport>,
        at: OffsetDateTime,
    ) -> StoreResult<()>;
    /// Devices of a tenant by id, narrowed by the filter.
    async fn devices(
        &self,
        tenant_id: &str,
        filter: &DeviceFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<Device>>;
    /// Every device of a tenant (for previews and reports).
    async fn all_devices(&self, tenant_id: &str) -> StoreResult<Vec<Device>>;
    /// Removes a device, revoking its token.
    async fn delete_device(&self, tenant_id: &str, device_id: &str, actor: &str)
    -> StoreResult<()>;
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
    /// Audit entries, newest first.
    async fn audit(
        &self,
        tenant_id: &str,
        limit: u32,
        before_id: Option<i64>,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
    /// Notes that the identity provider called the SCIM endpoint.
    async fn touch_scim(&self, tenant_id: &str, at: OffsetDateTime) -> StoreResult<()>;
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
    /// Wrong passwords in a row.
    pub failed_logins: i64,
    /// Sign-in refused until then, after too many wrong passwords.
    pub locked_until: Option<OffsetDateTime>,
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
    async fn create_account(&self, new: NewAccount, actor: &str) -> StoreResult<Account>;
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
        actor: &str,
    ) -> StoreResult<Account>;
    /// Replaces an account's password hash; `end_sessions` also ends its sessions.
    async fn set_account_password(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        password_hash: &str,
        end_sessions: bool,
        actor: &str,
    ) -> StoreResult<()>;
    /// Ends every session of an account; returns how many there were.
    async fn end_sessions(
        &self,
        tenant_id: Option<&str>,
        account_id: &str,
        actor: &str,
    ) -> StoreResult<u64>;
    /// Records a sign-in attempt: success resets the failure count, failure
    /// increments it and sets `locked_until`.
    async fn record_sign_in(
        &self,
        account_id: &str,
        success: bool,
        locked_until: Option<OffsetDateTime>,
    ) -> StoreResult<()>;
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
