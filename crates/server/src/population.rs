//! Each tenant's devices as decisions read them, kept in memory beside the
//! snapshot and patched from the store's device revisions: a preview over
//! every device, or a listing filtered by service state, reads only the
//! devices changed since the last one instead of a million from the store.
//!
//! A tenant's devices are read whole on the first use after the server
//! starts; every later use first asks the store what changed since the
//! revision it holds (a few indexed reads when nothing did), so what it
//! decides over is as current as the store, on every node. Each device's user
//! is found in the snapshot once per snapshot build and revision, and each
//! device's service states computed once, for the passes that follow. Memory
//! is about 200 bytes a device, for the tenants used since start.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use entitle_core::{
    ClientVersion, DeviceGroup, DeviceGroupId, DeviceReport, SERVICES, ServiceDef, Subject,
};
use entitle_store::{Device, DeviceIds, Store, StoreResult};

use crate::error::{ApiError, ApiResult};
use crate::snapshot::{DeviceFacts, TenantSnapshot, UserPosition};

/// One device as a decision reads it.
#[derive(Debug, Clone)]
pub(crate) struct PopulationDevice {
    pub id: Box<str>,
    pub user_id: Box<str>,
    /// Its user's name as enrolled (the snapshot's wins while the user is in it).
    pub user_name: Box<str>,
    pub hostname: Box<str>,
    pub client_version: ClientVersion,
    pub pending_approval: bool,
    /// What its device groups depend on, in [`Devices::profiles`].
    profile: u32,
}

impl PopulationDevice {
    /// What a decision needs of it besides its device groups.
    pub(crate) fn facts(&self) -> DeviceFacts<'_> {
        DeviceFacts {
            device_id: &self.id,
            user_id: &self.user_id,
            user_name: &self.user_name,
            client_version: self.client_version,
            pending_approval: self.pending_approval,
        }
    }
}

/// A tenant's devices at one revision, sorted by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Devices {
    revision: i64,
    devices: Vec<PopulationDevice>,
    /// What device-group rules read of a device (OS, effective ownership,
    /// posture), once per distinct value: a fleet has a few hundred, so each
    /// rule runs once per profile instead of once per device. Kept as reports
    /// with an empty host name and a zero client version, which no rule reads.
    profiles: Vec<DeviceReport>,
    profile_ids: HashMap<String, u32>,
    /// How many devices have each profile.
    per_profile: Vec<usize>,
}

/// The device groups of `device` among each profile's `groups`.
pub(crate) fn groups_of<'a>(
    groups: &'a [BTreeSet<DeviceGroupId>],
    device: &PopulationDevice,
) -> &'a BTreeSet<DeviceGroupId> {
    // Every device's profile is in the list; none is the empty set.
    static NONE: BTreeSet<DeviceGroupId> = BTreeSet::new();
    groups.get(device.profile as usize).unwrap_or(&NONE)
}

impl Devices {
    /// How many devices.
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// Every device, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &PopulationDevice> {
        self.devices.iter()
    }

    /// Each profile's device groups under `snapshot`'s rules.
    pub(crate) fn groups(&self, snapshot: &TenantSnapshot) -> Vec<BTreeSet<DeviceGroupId>> {
        self.groups_by(|report| snapshot.device_groups_for(report))
    }

    /// Each profile's device groups as `groups_of` works them out from its
    /// report (a proposed rule change, say).
    pub(crate) fn groups_by(
        &self,
        groups_of: impl Fn(&DeviceReport) -> BTreeSet<DeviceGroupId>,
    ) -> Vec<BTreeSet<DeviceGroupId>> {
        self.profiles.iter().map(groups_of).collect()
    }

    /// How many devices meet `rule`: counted per profile, not per device.
    pub(crate) fn held_by(&self, rule: &DeviceGroup) -> usize {
        self.profiles
            .iter()
            .zip(&self.per_profile)
            .filter(|(report, _)| rule.matches(report))
            .map(|(_, &count)| count)
            .sum()
    }

    /// The devices that meet `rule`.
    pub(crate) fn meeting<'a>(
        &'a self,
        rule: &'a DeviceGroup,
    ) -> impl Iterator<Item = &'a PopulationDevice> + 'a {
        let meets: Vec<bool> = self.profiles.iter().map(|r| rule.matches(r)).collect();
        self.devices
            .iter()
            .filter(move |d| meets.get(d.profile as usize).copied().unwrap_or(false))
    }

    /// Applies what the store handed over.
    fn apply(
        &mut self,
        revision: i64,
        everything: bool,
        changed: Vec<PopulationDevice>,
        removed: &[String],
        (profiles, profile_ids): (Vec<DeviceReport>, HashMap<String, u32>),
    ) {
        self.profiles.extend(profiles);
        self.profile_ids.extend(profile_ids);
        if everything {
            self.devices = changed;
        } else {
            let mut added = Vec::new();
            for device in changed {
                match self.devices.binary_search_by(|d| d.id.cmp(&device.id)) {
                    Ok(at) => self.devices[at] = device,
                    Err(_) => added.push(device),
                }
            }
            self.devices.extend(added);
        }
        // Nearly sorted after a patch: the sort is close to one pass.
        self.devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        self.devices.dedup_by(|a, b| a.id == b.id);
        if !removed.is_empty() {
            let removed: HashSet<&str> = removed.iter().map(String::as_str).collect();
            self.devices.retain(|d| !removed.contains(&*d.id));
        }
        self.per_profile = vec![0; self.profiles.len()];
        for device in &self.devices {
            if let Some(count) = self.per_profile.get_mut(device.profile as usize) {
                *count += 1;
            }
        }
        self.revision = revision;
    }
}

/// Profiles met while reading changed devices that the population does not
/// have yet, numbered after its own: reading never changes the population,
/// so a failed read, or one that finds nothing new, leaves it as it was.
struct Interned<'a> {
    held: Option<&'a Devices>,
    list: Vec<DeviceReport>,
    ids: HashMap<String, u32>,
}

impl Interned<'_> {
    /// The device as the population keeps it, its profile interned.
    fn entry(&mut self, device: &Device) -> PopulationDevice {
        let report = device.decision_report();
        // Debug output of these types is stable and total (posture values
        // include floats, which have no `Hash`), so it serves as the key.
        let key = format!(
            "{:?}|{:?}|{:?}",
            report.os, report.ownership, report.posture
        );
        let held = self
            .held
            .and_then(|held| held.profile_ids.get(&key))
            .copied();
        let profile = held.unwrap_or_else(|| {
            let next = self.held.map_or(0, |held| held.profiles.len()) + self.list.len();
            let next = u32::try_from(next).unwrap_or(u32::MAX);
            *self.ids.entry(key).or_insert_with(|| {
                self.list.push(DeviceReport {
                    hostname: String::new(),
                    os: report.os,
                    client_version: ClientVersion::new([0, 0, 0, 0], 1),
                    ownership: report.ownership,
                    posture: report.posture.clone(),
                });
                next
            })
        });
        PopulationDevice {
            id: device.id.as_str().into(),
            user_id: device.user_id.as_str().into(),
            user_name: device.user_name.as_str().into(),
            hostname: device.report.hostname.as_str().into(),
            client_version: device.report.client_version,
            pending_approval: device.pending_approval,
            profile,
        }
    }
}

/// Each device's decisions for one snapshot, as bits: bit `i` set when
/// `SERVICES[i]` is on. Computed once per snapshot and revision, then kept,
/// so that the pages of a listing filtered by state do not decide again.
struct States {
    /// Services the snapshot has settings for (the others have no state).
    decided: u32,
    on: Vec<u32>,
}

const _: () = assert!(
    SERVICES.len() <= 32,
    "a service's state is one bit of a u32"
);

impl States {
    fn compute(decidable: &Decidable, snapshot: &TenantSnapshot) -> Self {
        let mut decided = 0u32;
        let settings: Vec<_> = SERVICES
            .iter()
            .enumerate()
            .filter_map(|(i, service)| {
                let stored = snapshot.settings(service)?;
                decided |= 1 << i;
                Some((1u32 << i, service, &stored.settings))
            })
            .collect();
        let groups = decidable.devices.groups(snapshot);
        let on = decidable
            .subjects(snapshot, &groups)
            .map(|(_, subject)| {
                settings
                    .iter()
                    .filter(|(_, service, settings)| {
                        entitle_core::decide(service, settings, &subject, snapshot).enabled
                    })
                    .fold(0, |bits, (bit, _, _)| bits | bit)
            })
            .collect();
        States { decided, on }
    }

    /// Whether device `at` is `wanted` (on or off) for `service`, or for any
    /// service when `None`.
    fn is(&self, at: usize, service: Option<usize>, wanted: bool) -> bool {
        let on = self.on.get(at).copied().unwrap_or(0);
        let services = match service {
            Some(i) => self.decided & (1 << i),
            None => self.decided,
        };
        let matching = if wanted { on } else { !on };
        matching & services != 0
    }
}

/// One tenant's devices and what was last worked out over them.
#[derive(Default)]
struct Population {
    devices: Option<Arc<Devices>>,
    /// Each device's user in one snapshot.
    users: Option<ForSnapshot<Vec<UserPosition>>>,
    states: Option<ForSnapshot<States>>,
}

/// Something worked out over a tenant's devices at one revision under one
/// snapshot build: kept while both stand.
struct ForSnapshot<T> {
    build_id: u64,
    revision: i64,
    value: Arc<T>,
}

impl<T: Send + Sync + 'static> ForSnapshot<T> {
    /// The kept value if it is for `snapshot` and `devices`, else `work`'s,
    /// run off the async workers and kept in `slot`.
    async fn get_or_work(
        slot: &mut Option<Self>,
        snapshot: &TenantSnapshot,
        devices: &Devices,
        what: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<Arc<T>> {
        if let Some(kept) = slot.as_ref()
            && kept.build_id == snapshot.build_id
            && kept.revision == devices.revision
        {
            return Ok(Arc::clone(&kept.value));
        }
        let value = Arc::new(blocking(what, work).await?);
        *slot = Some(ForSnapshot {
            build_id: snapshot.build_id,
            revision: devices.revision,
            value: Arc::clone(&value),
        });
        Ok(value)
    }
}

/// A tenant's devices with each one's user found in one snapshot: what a
/// pass that decides over every device needs. Finding a user among a million
/// is most of the cost of a decision, so it is done once per snapshot and
/// device revision, not once per pass.
pub(crate) struct Decidable {
    pub devices: Arc<Devices>,
    users: Arc<Vec<UserPosition>>,
}

impl Decidable {
    /// Every device with the subject of its decisions under `snapshot` (the
    /// one its users were found in), its device groups taken from `groups`
    /// (by profile, see [`Devices::groups`]).
    pub(crate) fn subjects<'a>(
        &'a self,
        snapshot: &'a TenantSnapshot,
        groups: &'a [BTreeSet<DeviceGroupId>],
    ) -> impl Iterator<Item = (&'a PopulationDevice, Subject<'a>)> + 'a {
        self.devices
            .devices
            .iter()
            .zip(self.users.iter())
            .map(move |(device, &user)| {
                let device_groups = groups_of(groups, device);
                (
                    device,
                    snapshot.subject_at(user, device.facts(), device_groups),
                )
            })
    }

    /// Finds every device's user in `snapshot`, over the machine's cores.
    fn find_users(devices: &Devices, snapshot: &TenantSnapshot) -> Vec<UserPosition> {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = devices.devices.len().div_ceil(threads.clamp(1, 4)).max(1);
        std::thread::scope(|scope| {
            let parts: Vec<_> = devices
                .devices
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|device| snapshot.user_position(&device.user_id))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|part| {
                    // A panic in a part is a bug: passed on, never a short list.
                    part.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }
}

/// Every tenant's device population, read on first use.
pub(crate) struct Populations {
    store: Arc<dyn Store>,
    tenants: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Population>>>>,
}

impl Populations {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            tenants: Mutex::default(),
        }
    }

    fn slot(&self, tenant_id: &str) -> Arc<tokio::sync::Mutex<Population>> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tenants.entry(tenant_id.to_owned()).or_default())
    }

    /// The tenant's devices as the store has them now.
    pub(crate) async fn current(&self, tenant_id: &str) -> StoreResult<Arc<Devices>> {
        let slot = self.slot(tenant_id);
        let mut population = slot.lock().await;
        self.refresh(tenant_id, &mut population).await
    }

    /// Brings the population to the store's revision.
    async fn refresh(
        &self,
        tenant_id: &str,
        population: &mut Population,
    ) -> StoreResult<Arc<Devices>> {
        let held = population.devices.as_deref();
        let since = held.map(|held| held.revision);
        let mut interned = Interned {
            held,
            list: Vec::new(),
            ids: HashMap::new(),
        };
        let mut changed = Vec::new();
        let answer = self
            .store
            .device_changes(tenant_id, since, &mut |device| {
                changed.push(interned.entry(&device));
                Ok(())
            })
            .await?;
        let unchanged = changed.is_empty() && answer.removed.is_empty() && !answer.everything;
        let new_profiles = (interned.list, interned.ids);
        let held = population.devices.get_or_insert_default();
        if unchanged && held.revision == answer.revision {
            return Ok(Arc::clone(held));
        }
        // Patched in place, unless a preview still reads the old one.
        Arc::make_mut(held).apply(
            answer.revision,
            answer.everything,
            changed,
            &answer.removed,
            new_profiles,
        );
        Ok(Arc::clone(held))
    }

    /// The tenant's devices as the store has them now, each with its user
    /// found in `snapshot`.
    pub(crate) async fn decidable(
        &self,
        tenant_id: &str,
        snapshot: &Arc<TenantSnapshot>,
    ) -> ApiResult<Decidable> {
        let slot = self.slot(tenant_id);
        let mut population = slot.lock().await;
        self.decidable_in(tenant_id, snapshot, &mut population)
            .await
    }

    async fn decidable_in(
        &self,
        tenant_id: &str,
        snapshot: &Arc<TenantSnapshot>,
        population: &mut Population,
    ) -> ApiResult<Decidable> {
        let devices = self.refresh(tenant_id, population).await?;
        let (for_devices, for_snapshot) = (Arc::clone(&devices), Arc::clone(snapshot));
        let users = ForSnapshot::get_or_work(
            &mut population.users,
            snapshot,
            &devices,
            "finding the devices' users",
            move || Decidable::find_users(&for_devices, &for_snapshot),
        )
        .await?;
        Ok(Decidable { devices, users })
    }

    /// The devices `wanted` (on or off) for `service`, or for any service,
    /// under `snapshot`, as a set of ids a listing can narrow to: the
    /// devices themselves, or all but the others, whichever is smaller, and
    /// `None` when both are larger than `limit` (then matching devices are
    /// common enough for a listing to find them by looking).
    pub(crate) async fn in_state(
        &self,
        tenant_id: &str,
        snapshot: &Arc<TenantSnapshot>,
        service: Option<&'static ServiceDef>,
        wanted: bool,
        limit: usize,
    ) -> ApiResult<Option<DeviceIds>> {
        let slot = self.slot(tenant_id);
        let mut population = slot.lock().await;
        let decidable = self
            .decidable_in(tenant_id, snapshot, &mut population)
            .await?;
        let devices = Arc::clone(&decidable.devices);
        let for_snapshot = Arc::clone(snapshot);
        let states = ForSnapshot::get_or_work(
            &mut population.states,
            snapshot,
            &devices,
            "deciding device states",
            move || States::compute(&decidable, &for_snapshot),
        )
        .await?;
        drop(population);
        let service = service.and_then(|wanted| SERVICES.iter().position(|s| s.id == wanted.id));
        let matching = (0..devices.len())
            .filter(|&at| states.is(at, service, wanted))
            .count();
        let others = devices.len() - matching;
        if matching.min(others) > limit {
            return Ok(None);
        }
        let (keep, ids_of): (bool, fn(Vec<String>) -> DeviceIds) = if matching <= others {
            (true, DeviceIds::Only)
        } else {
            (false, DeviceIds::Except)
        };
        let ids = devices
            .devices
            .iter()
            .enumerate()
            .filter(|&(at, _)| states.is(at, service, wanted) == keep)
            .map(|(_, device)| device.id.to_string())
            .collect();
        Ok(Some(ids_of(ids)))
    }
}

/// Runs `work` off the async workers; a panic in it is a 500, logged.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "{what}");
        ApiError::internal()
    })
}
