//! Per-tenant in-memory snapshots of everything a decision needs, and the
//! held long-polls by user, woken when a new snapshot may change their
//! devices' decisions.
//!
//! A device sync reads the device row once and decides from the snapshot, so the
//! hot path does at most one indexed read. Every write that can change a decision
//! calls [`Snapshots::refresh`] before it answers, so a caller who got a 200 never
//! sees an older decision from this node afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use entitle_core::{
    ActiveGrant, Decision, DeviceGroup, DeviceGroupId, DeviceReport, GroupGraph, GroupId,
    GroupNames, SERVICES, ServiceDef, Subject, effective_device_groups, evaluate,
};
use entitle_store::{
    Change, Device, Grant, Store, StoreResult, StoredSettings, Tenant, TenantData,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify, futures::Notified};

use crate::wire::{DecisionJson, PolicyJson, ServicePolicyJson};

/// A user as decisions see them: effective groups already closed over nesting.
///
/// The closure is shared by every user with the same direct groups: a large
/// directory has far fewer distinct closures than users (a million users in a
/// few hundred groups), so the snapshot keeps one set per closure, not per user.
#[derive(Debug, Clone)]
struct SnapshotUser {
    user_name: Box<str>,
    active: bool,
    effective_groups: Arc<BTreeSet<GroupId>>,
}

/// Everything about one tenant that decisions depend on, at one config version.
#[derive(Debug)]
pub struct TenantSnapshot {
    /// The tenant (its config version is the snapshot's version).
    pub tenant: Tenant,
    /// Unique to this build, in every tenant: a policy prepared from this
    /// snapshot may be reused while the id is the current snapshot's.
    pub build_id: u64,
    settings: BTreeMap<&'static str, StoredSettings>,
    /// Users, found by id through `user_positions`: a caller deciding over a
    /// million devices looks each user up once per snapshot
    /// ([`TenantSnapshot::user_position`]), not once per decision.
    users: Vec<SnapshotUser>,
    user_positions: HashMap<String, u32, foldhash::fast::RandomState>,
    group_names: HashMap<GroupId, String>,
    device_groups: Vec<DeviceGroup>,
    device_group_names: HashMap<DeviceGroupId, String>,
    deleted_group_names: HashMap<GroupId, String>,
    deleted_device_group_names: HashMap<DeviceGroupId, String>,
    /// Nesting, for the paths through which a user belongs to a group.
    graph: GroupGraph,
    /// Per group, the active users in it directly or through nesting.
    active_members: HashMap<GroupId, usize>,
    /// Per user id, the grants active when the snapshot was read.
    grants: HashMap<String, Vec<ActiveGrant>>,
    /// The next grant boundary (a start or an end) after the snapshot was
    /// read: past it, the snapshot must be rebuilt before it decides.
    pub valid_until: Option<OffsetDateTime>,
}

/// Where a user is in one snapshot ([`TenantSnapshot::user_position`]).
#[derive(Debug, Clone, Copy)]
pub struct UserPosition {
    build_id: u64,
    at: Option<u32>,
}

/// What a decision needs of a device besides its device groups.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// The device's id (its rollout bucket, one-device grants).
    pub device_id: &'a str,
    /// Its user's id.
    pub user_id: &'a str,
    /// Its user's name as enrolled (used if the user left the directory).
    pub user_name: &'a str,
    /// The client version it reported.
    pub client_version: entitle_core::ClientVersion,
    /// Whether it waits for an administrator's approval.
    pub pending_approval: bool,
}

/// Every service's decision for one device.
#[derive(Debug, Clone)]
pub struct DeviceDecisions {
    /// The device groups the device belongs to.
    pub device_groups: BTreeSet<DeviceGroupId>,
    /// Per service, in table order.
    pub services: Vec<(&'static ServiceDef, Decision)>,
}

impl TenantSnapshot {
    /// Builds a snapshot from the stored data.
    pub fn build(data: TenantData) -> Self {
        let mut graph = GroupGraph::new();
        for (container, member) in &data.nesting {
            graph.add_nesting(GroupId(container.clone()), GroupId(member.clone()));
        }
        // Closures by direct groups (sorted, so that order does not split
        // one closure in two), each with the number of active users holding it.
        let mut closures: HashMap<Vec<String>, (Arc<BTreeSet<GroupId>>, usize)> = HashMap::new();
        let mut users = Vec::with_capacity(data.users.len());
        let mut user_positions =
            HashMap::with_capacity_and_hasher(data.users.len(), Default::default());
        for user in data.users {
            let mut direct = user.groups;
            direct.sort_unstable();
            direct.dedup();
            let (closure, active_count) = closures.entry(direct).or_insert_with_key(|direct| {
                let direct: Vec<GroupId> = direct.iter().cloned().map(GroupId).collect();
                (Arc::new(graph.effective_groups(&direct)), 0)
            });
            *active_count += usize::from(user.active);
            let entry = SnapshotUser {
                user_name: user.user_name.into_boxed_str(),
                active: user.active,
                effective_groups: Arc::clone(closure),
            };
            // A second row for one id (none is expected) replaces the first,
            // as a map would.
            match user_positions.get(&user.id) {
                Some(&at) => {
                    if let Some(slot) = users.get_mut(at as usize) {
                        *slot = entry;
                    }
                }
                None => {
                    let at = u32::try_from(users.len()).unwrap_or(u32::MAX);
                    users.push(entry);
                    user_positions.insert(user.id, at);
                }
            }
        }
        // What the group pickers count: each active user once per group it
        // belongs to, however deep, exactly as decisions see membership.
        let mut active_members: HashMap<GroupId, usize> = HashMap::new();
        for (closure, active_count) in closures.values() {
            for group in closure.iter() {
                *active_members.entry(group.clone()).or_default() += active_count;
            }
        }
        let settings = SERVICES
            .iter()
            .map(|service| {
                let stored =
                    data.settings
                        .get(service.id)
                        .cloned()
                        .unwrap_or_else(|| StoredSettings {
                            settings: entitle_core::Settings::new_tenant_default(
                                service,
                                data.tenant.created_at.unix_timestamp(),
                            ),
                            version: 0,
                        });
                (service.id, stored)
            })
            .collect();
        static BUILDS: AtomicU64 = AtomicU64::new(1);
        Self {
            tenant: data.tenant,
            build_id: BUILDS.fetch_add(1, Ordering::Relaxed),
            settings,
            users,
            user_positions,
            group_names: data
                .groups
                .into_iter()
                .map(|(id, name)| (GroupId(id), name))
                .collect(),
            device_group_names: data
                .device_groups
                .iter()
                .map(|g| (g.id.clone(), g.name.clone()))
                .collect(),
            device_groups: data.device_groups,
            deleted_group_names: data
                .deleted_user_groups
                .into_iter()
                .map(|(id, name)| (GroupId(id), name))
                .collect(),
            deleted_device_group_names: data
                .deleted_device_groups
                .into_iter()
                .map(|(id, name)| (DeviceGroupId(id), name))
                .collect(),
            graph,
            active_members,
            grants: active_grants(&data.grants, data.as_of),
            valid_until: next_boundary(&data.grants, data.as_of),
        }
    }

    /// Whether the snapshot is past its `valid_until` at `now`.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.valid_until.is_some_and(|until| until <= now)
    }

    /// Active users in a group directly or through groups nested inside it,
    /// each counted once (the number the group pickers show).
    pub fn active_members(&self, group: &GroupId) -> usize {
        self.active_members.get(group).copied().unwrap_or(0)
    }

    /// Every group a user with these direct groups is in, with the shortest
    /// path from a direct group up to it.
    pub fn group_paths(&self, direct: &[GroupId]) -> BTreeMap<GroupId, Vec<GroupId>> {
        self.graph.effective_paths(direct)
    }

    /// Every group nested inside `group` (itself included), with its path down.
    pub fn nested_inside(&self, group: &GroupId) -> BTreeMap<GroupId, Vec<GroupId>> {
        self.graph.nested_inside(group)
    }

    /// What a device of this user would get from each service if it ran a
    /// client recent enough for group entitlement and met the rule of every
    /// device group the service selects: the user's side of each decision.
    /// `None` for a user this snapshot does not hold.
    pub fn user_side(&self, user_id: &str) -> Option<Vec<(&'static ServiceDef, Decision)>> {
        let user = self.user(user_id)?;
        let services = SERVICES
            .iter()
            .filter_map(|service| {
                let stored = self.settings.get(service.id)?;
                let device_groups: BTreeSet<DeviceGroupId> = stored
                    .settings
                    .device_groups
                    .iter()
                    .filter(|id| self.device_group_names.contains_key(id))
                    .cloned()
                    .collect();
                let subject = Subject {
                    user_name: &user.user_name,
                    user_id,
                    device_id: "",
                    tenant_id: &self.tenant.id,
                    user_active: user.active,
                    user_groups: &user.effective_groups,
                    device_groups: &device_groups,
                    client_version: service.min_version,
                    pending_approval: false,
                    grants: self.grants_of(user_id),
                };
                // No device: as if the device were in the rollout (it is
                // per device; the device's own page says which).
                let settings = entitle_core::Settings {
                    rollout_percent: entitle_core::FULL_ROLLOUT,
                    ..stored.settings.clone()
                };
                Some((service, evaluate(service, &settings, &subject, self)))
            })
            .collect();
        Some(services)
    }

    /// The stored settings of a service.
    pub fn settings(&self, service: &ServiceDef) -> Option<&StoredSettings> {
        self.settings.get(service.id)
    }

    /// The device groups of the tenant.
    pub fn device_groups(&self) -> &[DeviceGroup] {
        &self.device_groups
    }

    /// Decides every service for a device: with its attested ownership in
    /// place of the reported one, and its approval state.
    pub fn decide(&self, device: &Device) -> DeviceDecisions {
        let report = device.decision_report();
        let device_groups = effective_device_groups(&self.device_groups, &report);
        let services = SERVICES
            .iter()
            .filter_map(|service| {
                let stored = self.settings.get(service.id)?;
                let decision = evaluate(
                    service,
                    &stored.settings,
                    &self.subject(device, &device_groups),
                    self,
                );
                Some((service, decision))
            })
            .collect();
        DeviceDecisions {
            device_groups,
            services,
        }
    }

    /// The device groups a device belongs to, by its decision report.
    pub fn device_groups_of(&self, device: &Device) -> BTreeSet<DeviceGroupId> {
        effective_device_groups(&self.device_groups, &device.decision_report())
    }

    /// The device groups of a device that reports `report` (with its
    /// effective ownership).
    pub fn device_groups_for(&self, report: &DeviceReport) -> BTreeSet<DeviceGroupId> {
        effective_device_groups(&self.device_groups, report)
    }

    /// The subject of a decision for a device in `device_groups`.
    pub fn subject<'a>(
        &'a self,
        device: &'a Device,
        device_groups: &'a BTreeSet<DeviceGroupId>,
    ) -> Subject<'a> {
        self.subject_at(
            self.user_position(&device.user_id),
            DeviceFacts {
                device_id: &device.id,
                user_id: &device.user_id,
                user_name: &device.user_name,
                client_version: device.report.client_version,
                pending_approval: device.pending_approval,
            },
            device_groups,
        )
    }

    /// Where a user is in this snapshot, for [`TenantSnapshot::subject_at`].
    pub fn user_position(&self, user_id: &str) -> UserPosition {
        UserPosition {
            build_id: self.build_id,
            at: self.user_positions.get(user_id).copied(),
        }
    }

    fn user(&self, user_id: &str) -> Option<&SnapshotUser> {
        let at = *self.user_positions.get(user_id)?;
        self.users.get(at as usize)
    }

    /// The subject of a decision for a device known by its facts alone (the
    /// device population keeps these, not whole devices), whose user was
    /// found beforehand with [`TenantSnapshot::user_position`]. A position from
    /// another snapshot is not trusted: the user is looked up again.
    pub fn subject_at<'a>(
        &'a self,
        position: UserPosition,
        device: DeviceFacts<'a>,
        device_groups: &'a BTreeSet<DeviceGroupId>,
    ) -> Subject<'a> {
        static NO_GROUPS: BTreeSet<GroupId> = BTreeSet::new();
        let user = if position.build_id == self.build_id {
            position.at.and_then(|at| self.users.get(at as usize))
        } else {
            self.user(device.user_id)
        };
        // A user missing from the snapshot was deleted a moment ago: treat as inactive.
        Subject {
            user_name: user.map_or(device.user_name, |u| &u.user_name),
            user_id: device.user_id,
            device_id: device.device_id,
            tenant_id: &self.tenant.id,
            user_active: user.is_some_and(|u| u.active),
            user_groups: user.map_or(&NO_GROUPS, |u| u.effective_groups.as_ref()),
            device_groups,
            client_version: device.client_version,
            pending_approval: device.pending_approval,
            grants: self.grants_of(device.user_id),
        }
    }

    /// The grants of a user active when the snapshot was read.
    fn grants_of(&self, user_id: &str) -> &[ActiveGrant] {
        self.grants.get(user_id).map_or(&[], Vec::as_slice)
    }

    /// The ETag of the policy a device gets, without building the policy:
    /// what a woken long-poll compares before it serialises anything.
    pub fn policy_etag(&self, device: &Device, poll_interval_s: u64) -> String {
        let decisions = self.decide(device);
        let parts = decisions
            .services
            .iter()
            .map(|(service, decision)| EtagPart {
                id: service.id,
                enabled: decision.enabled,
                logout_on_enable: self
                    .settings
                    .get(service.id)
                    .is_some_and(|s| s.settings.logout_on_enable),
                reason: decision.reason.code(),
                explanation: &decision.explanation,
            })
            .collect();
        etag_of(parts, poll_interval_s)
    }

    /// The policy a device gets.
    pub fn policy(&self, device: &Device, poll_interval_s: u64) -> PolicyJson {
        let decisions = self.decide(device);
        let services: BTreeMap<String, ServicePolicyJson> = decisions
            .services
            .iter()
            .map(|(service, decision)| {
                let logout_on_enable = self
                    .settings
                    .get(service.id)
                    .is_some_and(|s| s.settings.logout_on_enable);
                (
                    service.id.to_owned(),
                    ServicePolicyJson {
                        decision: DecisionJson::from(decision),
                        logout_on_enable,
                    },
                )
            })
            .collect();
        let parts = services
            .iter()
            .map(|(id, policy)| EtagPart {
                id,
                enabled: policy.decision.enabled,
                logout_on_enable: policy.logout_on_enable,
                reason: &policy.decision.reason,
                explanation: &policy.decision.explanation,
            })
            .collect();
        PolicyJson {
            etag: etag_of(parts, poll_interval_s),
            config_version: self.tenant.config_version,
            poll_interval_s,
            tenant: self.tenant.id.clone(),
            device_id: device.id.clone(),
            services,
        }
    }
}

impl TenantSnapshot {
    /// Whether a change from `self` to `newer` may decide every device
    /// differently: settings, device groups, or the name of a user group that
    /// settings select. Otherwise only the users [`TenantSnapshot::concerns`]
    /// names are concerned.
    pub fn concerns_everyone(&self, newer: &TenantSnapshot) -> bool {
        // Every field named, so that one added to the snapshot is weighed
        // here or in `concerns`.
        let TenantSnapshot {
            tenant,
            build_id: _,
            settings,
            // Compared user by user, in `concerns`.
            users: _,
            user_positions: _,
            group_names,
            device_groups,
            device_group_names,
            deleted_group_names,
            deleted_device_group_names,
            // Nesting shows in each user's closure.
            graph: _,
            // What the group pickers count, not what decisions read.
            active_members: _,
            // Compared user by user, in `concerns`.
            grants: _,
            // When to rebuild, not what to decide.
            valid_until: _,
        } = self;
        // Explanations name the user groups settings select (or exclude),
        // deleted ones too; other groups' names reach no device.
        let selected_group_renamed = || {
            settings
                .values()
                .flat_map(|s| {
                    s.settings
                        .user_groups
                        .iter()
                        .chain(&s.settings.exclude_user_groups)
                })
                .any(|id| {
                    group_names.get(id) != newer.group_names.get(id)
                        || deleted_group_names.get(id) != newer.deleted_group_names.get(id)
                })
        };
        tenant.id != newer.tenant.id
            || *settings != newer.settings
            || *device_groups != newer.device_groups
            || *device_group_names != newer.device_group_names
            || *deleted_device_group_names != newer.deleted_device_group_names
            || selected_group_renamed()
    }

    /// Whether a change from `self` to `newer` that does not concern everyone
    /// may decide this user's devices differently: the user's name, activity,
    /// groups (through nesting too) or active grants changed, or the user
    /// came or went. What lets a rebuild wake only the held long-polls it
    /// concerns; a device it wrongly left out would keep its old policy until
    /// its hold ends, which a property test guards against.
    pub fn concerns(&self, newer: &TenantSnapshot, user_id: &str) -> bool {
        let same_user = match (self.user(user_id), newer.user(user_id)) {
            (Some(before), Some(now)) => {
                before.active == now.active
                    && before.user_name == now.user_name
                    && before.effective_groups == now.effective_groups
            }
            (None, None) => true,
            _ => false,
        };
        !same_user || self.grants.get(user_id) != newer.grants.get(user_id)
    }
}

/// A policy ready to send: its ETag and its JSON, shared by every answer that
/// repeats it.
#[derive(Debug, Clone)]
pub struct PreparedPolicy {
    /// What the device acts on, hashed (see [`TenantSnapshot::policy_etag`]).
    pub etag: Arc<str>,
    /// The policy document.
    pub json: axum::body::Bytes,
}

impl PreparedPolicy {
    /// Serialises a policy once.
    pub fn new(policy: &PolicyJson) -> Result<Self, serde_json::Error> {
        Ok(Self {
            etag: Arc::from(policy.etag.as_str()),
            json: axum::body::Bytes::from(serde_json::to_vec(policy)?),
        })
    }
}

impl GroupNames for TenantSnapshot {
    fn user_group(&self, id: &GroupId) -> Option<&str> {
        self.group_names.get(id).map(String::as_str)
    }
    fn device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        self.device_group_names.get(id).map(String::as_str)
    }
    fn deleted_user_group(&self, id: &GroupId) -> Option<&str> {
        self.deleted_group_names.get(id).map(String::as_str)
    }
    fn deleted_device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        self.deleted_device_group_names.get(id).map(String::as_str)
    }
}

/// What a policy's ETag covers for one service.
struct EtagPart<'a> {
    id: &'a str,
    enabled: bool,
    logout_on_enable: bool,
    reason: &'a str,
    explanation: &'a str,
}

/// The grants active at `as_of`, as core's `ActiveGrant`s per user id.
fn active_grants(grants: &[Grant], as_of: OffsetDateTime) -> HashMap<String, Vec<ActiveGrant>> {
    let mut by_user: HashMap<String, Vec<ActiveGrant>> = HashMap::new();
    for grant in grants.iter().filter(|g| g.active_at(as_of)) {
        by_user
            .entry(grant.user_id.clone())
            .or_default()
            .push(ActiveGrant {
                id: grant.id.clone(),
                service_id: grant.service.clone(),
                device_id: grant.device_id.clone(),
                ends_at: crate::wire::rfc3339(grant.ends_at),
                overrides_exclusions: grant.overrides_exclusions,
            });
    }
    by_user
}

/// The earliest grant start or end after `as_of`.
fn next_boundary(grants: &[Grant], as_of: OffsetDateTime) -> Option<OffsetDateTime> {
    grants
        .iter()
        .flat_map(|g| [g.starts_at, g.ends_at])
        .filter(|at| *at > as_of)
        .min()
}

/// The ETag of a policy covers what the device acts on, not the config version,
/// so that changes that do not concern a device answer 304.
fn etag_of(mut parts: Vec<EtagPart<'_>>, poll_interval_s: u64) -> String {
    parts.sort_by(|a, b| a.id.cmp(b.id));
    let mut hasher = Sha256::new();
    hasher.update(poll_interval_s.to_le_bytes());
    for part in parts {
        hasher.update(part.id.as_bytes());
        hasher.update([u8::from(part.enabled), u8::from(part.logout_on_enable)]);
        hasher.update(part.reason.as_bytes());
        hasher.update(part.explanation.as_bytes());
        hasher.update([0]);
    }
    format!("\"p-{}\"", &hex::encode(hasher.finalize())[..20])
}

struct TenantEntry {
    refresh_pending: std::sync::atomic::AtomicBool,
    current: RwLock<Arc<TenantSnapshot>>,
    held: HeldByUser,
    rebuild: Mutex<()>,
    requested: AtomicU64,
    built: AtomicU64,
}

/// A tenant's held long-polls by user, so that a rebuild wakes the devices
/// whose decisions it may change and no others: a directory change that
/// concerns one user costs that user's devices, not the tenant's whole fleet,
/// and a rebuild compares the two snapshots for the users held, not for the
/// whole directory.
#[derive(Default)]
struct HeldByUser {
    users: std::sync::Mutex<HeldUsers>,
    count: AtomicUsize,
}

/// Each user holding long-polls, by id.
type HeldUsers = HashMap<Arc<str>, Arc<UserChanges>, foldhash::fast::RandomState>;

/// What a user's held long-polls wait on.
struct UserChanges {
    /// The user's id (also the key in [`HeldByUser`]).
    user_id: Arc<str>,
    /// Moves on every rebuild that concerns the user.
    generation: AtomicU64,
    /// Wakes the holds when `generation` moves, and when every hold should
    /// look (a "sync now", the shutdown) without it.
    notify: Notify,
}

impl UserChanges {
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

impl HeldByUser {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldUsers> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes, with a change, the holds whose decisions may differ from
    /// `previous` to `current`, which is already installed: a hold that
    /// registers after the users are listed here reads `current`.
    fn changed(&self, previous: &TenantSnapshot, current: &TenantSnapshot) {
        if previous.concerns_everyone(current) {
            self.lock().values().for_each(|c| c.changed());
            return;
        }
        // Compared outside the lock, which syncs take to register.
        let held: Vec<Arc<str>> = self.lock().keys().cloned().collect();
        let concerned: Vec<Arc<str>> = held
            .into_iter()
            .filter(|user_id| previous.concerns(current, user_id))
            .collect();
        if concerned.is_empty() {
            return;
        }
        let users = self.lock();
        for user_id in concerned {
            if let Some(changes) = users.get(&user_id) {
                changes.changed();
            }
        }
    }

    /// Wakes every hold without a change, so that each looks at what else
    /// it waits for: a "sync now" for its device, the shutdown.
    fn look(&self) {
        self.lock().values().for_each(|c| c.notify.notify_waiters());
    }

    /// Wakes one user's holds without a change.
    fn look_at(&self, user_id: &str) {
        if let Some(changes) = self.lock().get(user_id) {
            changes.notify.notify_waiters();
        }
    }
}

/// A held long-poll's place among its tenant's: what tells it that a change
/// may concern its device. Leaves when dropped.
pub struct HeldWatch {
    entry: Arc<TenantEntry>,
    changes: Arc<UserChanges>,
}

impl HeldWatch {
    /// How many rebuilds concerned the user so far: read before the
    /// snapshot the hold decides from, and again on each wake-up.
    pub fn generation(&self) -> u64 {
        self.changes.generation.load(Ordering::SeqCst)
    }

    /// Completes at the next change that concerns the user, or when every
    /// hold should look. Enable it before reading what it guards.
    pub fn notified(&self) -> Notified<'_> {
        self.changes.notify.notified()
    }
}

impl Drop for HeldWatch {
    fn drop(&mut self) {
        let mut users = self.entry.held.lock();
        // Only the map and this watch hold it: the user's last hold leaves.
        // (Watches are made under this lock, so none can appear meanwhile.)
        if Arc::strong_count(&self.changes) == 2 {
            users.remove(&self.changes.user_id);
        }
        self.entry.held.count.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The snapshots of every tenant this node has seen, and their held long-polls.
pub struct Snapshots {
    store: Arc<dyn Store>,
    tenants: RwLock<HashMap<String, Arc<TenantEntry>>>,
    /// Devices an administrator asked to sync now, with when they asked.
    nudged: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Whether `nudged` may hold anything, so that syncs skip its lock when
    /// nobody asked for anything.
    any_nudged: std::sync::atomic::AtomicBool,
}

/// The most outstanding "sync now" requests kept; older ones are dropped first.
const MAX_NUDGES: usize = 100_000;
/// How long a "sync now" waits for a device that holds no long-poll.
const NUDGE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl Snapshots {
    /// An empty set of snapshots over a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            tenants: RwLock::new(HashMap::new()),
            nudged: std::sync::Mutex::new(HashMap::new()),
            any_nudged: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Asks one device to sync now: wakes the held long-polls of its user
    /// (of the whole tenant when the user is not known), and the device's own
    /// answers at once (the others see no change and wait on).
    pub fn nudge(&self, tenant_id: &str, device_id: &str, user_id: Option<&str>) {
        {
            let mut nudged = self.nudged.lock().unwrap_or_else(|e| e.into_inner());
            if nudged.len() >= MAX_NUDGES {
                nudged.retain(|_, at| at.elapsed() < NUDGE_TTL);
            }
            if nudged.len() < MAX_NUDGES {
                nudged.insert(device_id.to_owned(), std::time::Instant::now());
                self.any_nudged.store(true, Ordering::SeqCst);
            }
        }
        // No generation moves: the holds woken see no change, and only the
        // nudged device answers. A tenant whose snapshot this node has not
        // loaded holds nothing here: the device takes the nudge when it syncs.
        let Some(entry) = self.loaded(tenant_id) else {
            return;
        };
        match user_id {
            Some(user_id) => entry.held.look_at(user_id),
            None => entry.held.look(),
        }
    }

    /// Wakes every held long-poll of every tenant without a change, so that
    /// each reads the server's shutdown flag (set before this call) and answers.
    pub fn wake_all(&self) {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        for entry in tenants.values() {
            entry.held.look();
        }
    }

    /// Whether the device was asked to sync now (and forgets the request).
    pub fn take_nudge(&self, device_id: &str) -> bool {
        if !self.any_nudged.load(Ordering::SeqCst) {
            return false;
        }
        let mut nudged = self.nudged.lock().unwrap_or_else(|e| e.into_inner());
        let taken = nudged
            .remove(device_id)
            .is_some_and(|at| at.elapsed() < NUDGE_TTL);
        if nudged.is_empty() {
            self.any_nudged.store(false, Ordering::SeqCst);
        }
        taken
    }

    /// Rebuilds a tenant's snapshot after a change to one device (removed,
    /// approved, attested) and answers that device's held long-poll, which
    /// then reads the device again.
    pub async fn refresh_for_device(&self, tenant_id: &str, device: &Device) -> StoreResult<()> {
        self.refresh(tenant_id).await?;
        self.nudge(tenant_id, &device.id, Some(&device.user_id));
        Ok(())
    }

    /// The current snapshot of a tenant, loading it on first use, and
    /// rebuilding it first when a grant started or ended since it was built.
    pub async fn get(&self, tenant_id: &str) -> StoreResult<Arc<TenantSnapshot>> {
        let entry = self.entry(tenant_id).await?;
        let snapshot = read(&entry.current);
        if !snapshot.expired(OffsetDateTime::now_utc()) {
            return Ok(snapshot);
        }
        self.refresh(tenant_id).await?;
        Ok(read(&entry.current))
    }

    /// The earliest `valid_until` of the snapshots this node holds.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants
            .values()
            .filter_map(|entry| read(&entry.current).valid_until)
            .min()
    }

    /// Rebuilds every snapshot past its `valid_until`, waking its held
    /// long-polls: how a grant's start and end reach devices without a poll.
    pub async fn refresh_expired(&self, now: OffsetDateTime) {
        let expired: Vec<String> = self
            .tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, entry)| read(&entry.current).expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        for tenant_id in expired {
            if let Err(error) = self.refresh(&tenant_id).await {
                tracing::warn!(%error, tenant = %tenant_id, "could not refresh a snapshot at a grant boundary");
            }
        }
    }

    /// The snapshot of a tenant, rebuilt first if the database has seen a newer
    /// `data_version` (a write through another node) than the snapshot holds.
    pub async fn at_least(
        &self,
        tenant_id: &str,
        data_version: i64,
    ) -> StoreResult<Arc<TenantSnapshot>> {
        let snapshot = self.get(tenant_id).await?;
        if snapshot.tenant.data_version >= data_version {
            return Ok(snapshot);
        }
        // A rebuild that finished while this one waited for its turn may
        // already hold the version: then there is nothing to rebuild.
        self.rebuild_unless(tenant_id, |current| {
            current.tenant.data_version >= data_version
        })
        .await?;
        self.get(tenant_id).await
    }

    /// Registers a long-poll held for a device of `user_id`: the watch tells
    /// it when a rebuild may change its decisions.
    pub async fn watch(&self, tenant_id: &str, user_id: &str) -> StoreResult<HeldWatch> {
        let entry = self.entry(tenant_id).await?;
        let changes = {
            let mut users = entry.held.lock();
            entry.held.count.fetch_add(1, Ordering::SeqCst);
            match users.get(user_id) {
                Some(changes) => Arc::clone(changes),
                None => {
                    let user_id: Arc<str> = Arc::from(user_id);
                    let changes = Arc::new(UserChanges {
                        user_id: Arc::clone(&user_id),
                        generation: AtomicU64::new(0),
                        notify: Notify::new(),
                    });
                    users.insert(user_id, Arc::clone(&changes));
                    changes
                }
            }
        };
        Ok(HeldWatch { entry, changes })
    }

    /// Number of long-polls held on this node.
    pub fn waiting(&self) -> usize {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants
            .values()
            .map(|e| e.held.count.load(Ordering::SeqCst))
            .sum()
    }

    /// Rebuilds a tenant's snapshot from the store and wakes its long-polls.
    ///
    /// Concurrent refreshes coalesce: a caller whose request is covered by a
    /// rebuild that started after it asked does not rebuild again.
    pub async fn refresh(&self, tenant_id: &str) -> StoreResult<()> {
        self.rebuild_unless(tenant_id, |_| false).await
    }

    /// Rebuilds, unless a rebuild that started after this call covers it, or
    /// `enough` says the snapshot current when its turn comes will do.
    async fn rebuild_unless(
        &self,
        tenant_id: &str,
        enough: impl Fn(&TenantSnapshot) -> bool,
    ) -> StoreResult<()> {
        let entry = self.entry(tenant_id).await?;
        let ticket = entry.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = entry.rebuild.lock().await;
        if entry.built.load(Ordering::SeqCst) >= ticket || enough(&read(&entry.current)) {
            return Ok(());
        }
        let covered = entry.requested.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        let data = self.store.tenant_data(tenant_id).await?;
        let snapshot = Arc::new(TenantSnapshot::build(data));
        crate::metrics::snapshot_rebuilt(started.elapsed());
        let previous = std::mem::replace(
            &mut *entry.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::clone(&snapshot),
        );
        entry.built.store(covered, Ordering::SeqCst);
        entry.held.changed(&previous, &snapshot);
        Ok(())
    }

    /// Notes a change written without waiting for the snapshot (directory
    /// writes come in bursts): held long-polls are woken by one refresh shortly
    /// after, and syncs meanwhile rebuild through the data version check.
    pub fn invalidate(self: &Arc<Self>, tenant_id: &str) {
        let Some(entry) = self.loaded(tenant_id) else {
            return;
        };
        if entry.held.count.load(Ordering::SeqCst) == 0
            || entry.refresh_pending.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let snapshots = self.clone();
        let tenant_id = tenant_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            entry.refresh_pending.store(false, Ordering::SeqCst);
            // Usually a sync that arrived after the change has rebuilt the
            // snapshot (and woken the held long-polls) already: then this
            // reads one version number and rebuilds nothing.
            let stored = snapshots.store.versions(&tenant_id).await;
            let refreshed = match stored {
                Ok(stored) => snapshots.at_least(&tenant_id, stored.data).await.map(drop),
                Err(error) => Err(error),
            };
            if let Err(error) = refreshed {
                tracing::warn!(%error, tenant = %tenant_id, "could not refresh a snapshot after a directory change");
            }
        });
    }

    /// Applies a change announced by another node: rebuilds the tenant's snapshot
    /// if this node holds one older than the change; tenants not loaded here
    /// load fresh on first use anyway.
    pub async fn apply(&self, change: &Change) -> StoreResult<()> {
        match change {
            Change::Tenant {
                tenant_id,
                data_version,
                device_id,
                user_id,
            } => {
                if let Some(entry) = self.loaded(tenant_id) {
                    if read(&entry.current).tenant.data_version < *data_version {
                        self.refresh(tenant_id).await?;
                    }
                    if let Some(device_id) = device_id {
                        self.nudge(tenant_id, device_id, user_id.as_deref());
                    }
                }
            }
            Change::Resync => {
                let known: Vec<String> = self
                    .tenants
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                for tenant_id in known {
                    self.refresh(&tenant_id).await?;
                }
            }
        }
        Ok(())
    }

    /// The tenant's entry if this node holds one, without loading it.
    fn loaded(&self, tenant_id: &str) -> Option<Arc<TenantEntry>> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant_id)
            .cloned()
    }

    async fn entry(&self, tenant_id: &str) -> StoreResult<Arc<TenantEntry>> {
        if let Some(entry) = self.loaded(tenant_id) {
            return Ok(entry);
        }
        let data = self.store.tenant_data(tenant_id).await?;
        let fresh = Arc::new(TenantEntry {
            refresh_pending: std::sync::atomic::AtomicBool::new(false),
            current: RwLock::new(Arc::new(TenantSnapshot::build(data))),
            held: HeldByUser::default(),
            rebuild: Mutex::new(()),
            requested: AtomicU64::new(0),
            built: AtomicU64::new(0),
        });
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        Ok(tenants.entry(tenant_id.to_owned()).or_insert(fresh).clone())
    }
}

fn read(lock: &RwLock<Arc<TenantSnapshot>>) -> Arc<TenantSnapshot> {
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use entitle_store::DirectoryUser;

    fn user(id: &str, active: bool, groups: &[&str]) -> DirectoryUser {
        DirectoryUser {
            id: id.to_owned(),
            user_name: format!("{id}@example.com"),
            active,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn data(users: Vec<DirectoryUser>) -> TenantData {
        let at = OffsetDateTime::UNIX_EPOCH;
        TenantData {
            tenant: Tenant {
                id: "t".to_owned(),
                name: "t".to_owned(),
                created_at: at,
                config_version: 1,
                data_version: 1,
                last_scim_request_at: None,
                device_approval: false,
            },
            settings: BTreeMap::new(),
            users,
            groups: ["eng", "backend", "sales"]
                .iter()
                .map(|g| ((*g).to_owned(), g.to_uppercase()))
                .collect(),
            // backend is nested inside eng.
            nesting: vec![("eng".to_owned(), "backend".to_owned())],
            device_groups: Vec::new(),
            deleted_user_groups: Vec::new(),
            deleted_device_groups: Vec::new(),
            grants: Vec::new(),
            as_of: at,
        }
    }

    #[test]
    fn users_with_the_same_direct_groups_share_one_closure_whatever_their_order() {
        let snapshot = TenantSnapshot::build(data(vec![
            user("a", true, &["backend", "sales"]),
            user("b", true, &["sales", "backend"]),
            user("c", true, &["sales"]),
        ]));
        let closure = |id: &str| {
            Arc::clone(
                &snapshot
                    .user(id)
                    .expect("user in the snapshot")
                    .effective_groups,
            )
        };
        assert!(Arc::ptr_eq(&closure("a"), &closure("b")));
        assert!(!Arc::ptr_eq(&closure("a"), &closure("c")));
        let expected: BTreeSet<GroupId> = ["backend", "eng", "sales"]
            .iter()
            .map(|g| GroupId((*g).to_owned()))
            .collect();
        assert_eq!(*closure("a"), expected);
    }

    #[test]
    fn active_members_count_each_active_user_once_through_nesting() {
        let snapshot = TenantSnapshot::build(data(vec![
            user("a", true, &["backend", "eng"]),
            user("b", true, &["backend"]),
            user("c", false, &["backend"]),
            user("d", true, &["sales"]),
        ]));
        let count = |g: &str| snapshot.active_members(&GroupId(g.to_owned()));
        assert_eq!(
            count("eng"),
            2,
            "a once although direct and nested; c inactive"
        );
        assert_eq!(count("backend"), 2);
        assert_eq!(count("sales"), 1);
    }

    mod concerned {
        use super::*;
        use entitle_core::{ClientVersion, Os, Ownership, Settings};
        use entitle_store::{Actor, ActorKind};
        use proptest::prelude::*;

        const GROUPS: [&str; 4] = ["g0", "g1", "g2", "g3"];
        const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];

        /// A user as the directory may hold it: present or not, active,
        /// one of two names, direct groups by bit.
        type UserShape = Option<(bool, bool, u8)>;
        /// A group: absent, named one of two ways, or deleted.
        type GroupShape = u8;
        /// A service's settings: by default, groups and exclusions by bit,
        /// device groups by bit, rollout, logout.
        type SettingsShape = (bool, u8, u8, u8, bool, bool);

        #[derive(Debug, Clone)]
        struct Shape {
            users: Vec<UserShape>,
            groups: Vec<GroupShape>,
            nesting: u8,
            settings: Vec<SettingsShape>,
            grants: u8,
        }

        fn bits<'a>(mask: u8, of: &'a [&'a str]) -> impl Iterator<Item = &'a str> + 'a {
            of.iter()
                .enumerate()
                .filter(move |(i, _)| mask & (1 << i) != 0)
                .map(|(_, name)| *name)
        }

        fn at() -> OffsetDateTime {
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
        }

        fn tenant_data(shape: &Shape) -> TenantData {
            let mut data = data(Vec::new());
            data.as_of = at();
            data.users = USERS
                .iter()
                .zip(&shape.users)
                .filter_map(|(id, user)| {
                    let (active, renamed, groups) = (*user)?;
                    Some(DirectoryUser {
                        id: (*id).to_owned(),
                        user_name: format!("{id}{}@example.com", if renamed { "x" } else { "" }),
                        active,
                        groups: bits(groups, &GROUPS).map(str::to_owned).collect(),
                    })
                })
                .collect();
            data.groups = GROUPS
                .iter()
                .zip(&shape.groups)
                .filter(|(_, g)| **g % 4 == 1 || **g % 4 == 2)
                .map(|(id, g)| ((*id).to_owned(), format!("{id}-name{g}")))
                .collect();
            data.deleted_user_groups = GROUPS
                .iter()
                .zip(&shape.groups)
                .filter(|(_, g)| **g % 4 == 3)
                .map(|(id, _)| ((*id).to_owned(), format!("{id}-gone")))
                .collect();
            let pairs = [("g0", "g1"), ("g1", "g2"), ("g2", "g3"), ("g3", "g0")];
            data.nesting = pairs
                .iter()
                .enumerate()
                .filter(|(i, _)| shape.nesting & (1 << i) != 0)
                .map(|(_, (a, b))| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            data.device_groups = vec![
                DeviceGroup {
                    id: DeviceGroupId("d0".to_owned()),
                    name: "Windows".to_owned(),
                    os: [Os::Windows].into(),
                    ownership: BTreeSet::new(),
                    posture: Vec::new(),
                },
                DeviceGroup {
                    id: DeviceGroupId("d1".to_owned()),
                    name: "Corporate".to_owned(),
                    os: BTreeSet::new(),
                    ownership: [Ownership::Corporate].into(),
                    posture: Vec::new(),
                },
            ];
            data.settings = SERVICES
                .iter()
                .zip(&shape.settings)
                .map(|(service, s)| {
                    let (by_default, users, excluded, devices, half, logout) = *s;
                    let user_groups =
                        |mask| bits(mask, &GROUPS).map(|g| GroupId(g.to_owned())).collect();
                    let settings = Settings {
                        enabled_by_default: by_default,
                        user_groups: user_groups(users),
                        device_groups: bits(devices, &["d0", "d1"])
                            .map(|g| DeviceGroupId(g.to_owned()))
                            .collect(),
                        logout_on_enable: logout,
                        exclude_user_groups: user_groups(excluded),
                        exclude_device_groups: BTreeSet::new(),
                        rollout_percent: if half { 50 } else { 100 },
                    };
                    (
                        service.id.to_owned(),
                        StoredSettings {
                            settings,
                            version: 1,
                        },
                    )
                })
                .collect();
            let actor = Actor {
                kind: ActorKind::System,
                id: String::new(),
                name: String::new(),
            };
            data.grants = bits(shape.grants, &USERS)
                .map(|user| Grant {
                    id: format!("grant-{user}"),
                    tenant_id: "t".to_owned(),
                    user_id: user.to_owned(),
                    user_name: user.to_owned(),
                    device_id: None,
                    service: "private_access".to_owned(),
                    starts_at: at() - time::Duration::hours(1),
                    ends_at: at() + time::Duration::hours(1),
                    justification: String::new(),
                    overrides_exclusions: true,
                    created_at: at(),
                    created_by: actor.clone(),
                    revoked_at: None,
                    revoked_by: None,
                })
                .collect();
            data
        }

        /// Two devices per user, one in both device groups and one in none;
        /// one of them runs a client too old for group entitlement.
        fn devices() -> Vec<Device> {
            USERS
                .iter()
                .chain(&["someone-else"])
                .flat_map(|user| {
                    [
                        (Os::Windows, Ownership::Corporate, "9.9"),
                        (Os::Macos, Ownership::Personal, "1.0"),
                    ]
                    .into_iter()
                    .enumerate()
                    .map(move |(n, (os, ownership, version))| Device {
                        id: format!("{user}-device-{n}"),
                        tenant_id: "t".to_owned(),
                        user_id: (*user).to_owned(),
                        user_name: format!("{user}@example.com"),
                        report: DeviceReport {
                            hostname: format!("{user}-{n}"),
                            os,
                            client_version: ClientVersion::parse(version).expect("a version"),
                            ownership,
                            posture: BTreeMap::new(),
                        },
                        enrolled_at: at(),
                        last_sync_at: at(),
                        attested_ownership: None,
                        pending_approval: false,
                        applied: None,
                    })
                })
                .collect()
        }

        fn user_shape() -> impl Strategy<Value = UserShape> {
            proptest::option::weighted(0.8, (any::<bool>(), any::<bool>(), 0u8..16))
        }

        fn shape() -> impl Strategy<Value = Shape> {
            (
                proptest::collection::vec(user_shape(), USERS.len()),
                proptest::collection::vec(0u8..4, GROUPS.len()),
                0u8..16,
                proptest::collection::vec(
                    (
                        any::<bool>(),
                        0u8..16,
                        0u8..16,
                        0u8..4,
                        any::<bool>(),
                        any::<bool>(),
                    ),
                    SERVICES.len(),
                ),
                0u8..16,
            )
                .prop_map(|(users, groups, nesting, settings, grants)| Shape {
                    users,
                    groups,
                    nesting,
                    settings,
                    grants,
                })
        }

        /// A second shape that mostly keeps the first's settings and changes
        /// some of its directory, so that most pairs exercise the per-user side.
        fn changed(before: Shape) -> impl Strategy<Value = Shape> {
            (
                proptest::collection::vec(proptest::option::of(user_shape()), USERS.len()),
                proptest::collection::vec(proptest::option::of(0u8..4), GROUPS.len()),
                proptest::option::of(0u8..16),
                proptest::option::weighted(0.1, shape()),
                proptest::option::of(0u8..16),
            )
                .prop_map(move |(users, groups, nesting, other, grants)| {
                    let mut after = before.clone();
                    for (user, new) in after.users.iter_mut().zip(users) {
                        *user = new.unwrap_or(*user);
                    }
                    for (group, new) in after.groups.iter_mut().zip(groups) {
                        *group = new.unwrap_or(*group);
                    }
                    after.nesting = nesting.unwrap_or(after.nesting);
                    after.grants = grants.unwrap_or(after.grants);
                    if let Some(other) = other {
                        after.settings = other.settings;
                    }
                    after
                })
        }

        /// Whom a change concerns, among the users devices() has.
        #[derive(Debug, PartialEq, Eq)]
        enum Concerned {
            Everyone,
            Users(Vec<&'static str>),
        }

        fn between(before: &Shape, after: &Shape) -> Concerned {
            let old = TenantSnapshot::build(tenant_data(before));
            let new = TenantSnapshot::build(tenant_data(after));
            if old.concerns_everyone(&new) {
                return Concerned::Everyone;
            }
            Concerned::Users(
                USERS
                    .iter()
                    .chain(&["someone-else"])
                    .filter(|user| old.concerns(&new, user))
                    .copied()
                    .collect(),
            )
        }

        proptest! {
            /// The promise a targeted wake-up rests on: no device whose
            /// policy changes is left out.
            #[test]
            fn every_device_whose_policy_changes_is_concerned(
                (before, after) in shape().prop_flat_map(|before| (Just(before.clone()), changed(before)))
            ) {
                let old = TenantSnapshot::build(tenant_data(&before));
                let new = TenantSnapshot::build(tenant_data(&after));
                let everyone = old.concerns_everyone(&new);
                for device in devices() {
                    if old.policy_etag(&device, 60) != new.policy_etag(&device, 60) {
                        prop_assert!(
                            everyone || old.concerns(&new, &device.user_id),
                            "{} changed but is left out", device.id
                        );
                    }
                }
            }
        }

        fn base() -> Shape {
            Shape {
                users: vec![Some((true, false, 0b0001)); USERS.len()],
                groups: vec![1; GROUPS.len()],
                nesting: 0,
                settings: vec![(false, 0b0001, 0, 0, false, false); SERVICES.len()],
                grants: 0,
            }
        }

        #[test]
        fn a_change_to_one_user_concerns_that_user_alone() {
            let mut after = base();
            after.users[2] = Some((true, false, 0b0010));
            assert_eq!(between(&base(), &after), Concerned::Users(vec!["u2"]));
            after.users[2] = None;
            assert_eq!(between(&base(), &after), Concerned::Users(vec!["u2"]));
            let mut granted = base();
            granted.grants = 0b0010;
            assert_eq!(between(&base(), &granted), Concerned::Users(vec!["u1"]));
        }

        #[test]
        fn nothing_that_decisions_read_concerns_nobody() {
            assert_eq!(between(&base(), &base()), Concerned::Users(Vec::new()));
            // g3 is selected by no service: its name reaches no device.
            let mut renamed = base();
            renamed.groups[3] = 2;
            assert_eq!(between(&base(), &renamed), Concerned::Users(Vec::new()));
        }

        #[test]
        fn settings_and_selected_group_names_concern_everyone() {
            let mut saved = base();
            saved.settings[0].0 = true;
            assert_eq!(between(&base(), &saved), Concerned::Everyone);
            let mut renamed = base();
            renamed.groups[0] = 2;
            assert_eq!(between(&base(), &renamed), Concerned::Everyone);
        }

        #[test]
        fn nesting_concerns_the_users_whose_closure_it_changes() {
            let mut nested = base();
            // g0 now contains g1: u3 (in g1) gains g0; the others are in g0 already.
            nested.users[3] = Some((true, false, 0b0010));
            let mut after = nested.clone();
            after.nesting = 0b0001;
            assert_eq!(between(&nested, &after), Concerned::Users(vec!["u3"]));
        }
    }
}
