//! Each tenant's devices as decisions read them, kept in memory beside the
//! snapshot and patched from the store's device revisions: a preview over
//! every device, or a listing filtered by service state, reads only the
//! devices changed since the last one instead of a million from the store.
//!
//! A tenant's devices are read whole on the first use after the server
//! starts; every later use first asks the store what changed since the
//! revision it holds (two indexed reads when nothing did), so what it decides
//! over is as current as the store, on every node. Memory is about 250 bytes
//! a device, for the tenants someone previewed or filtered since start.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use entitle_core::{ClientVersion, DeviceGroupId, DeviceReport, SERVICES, ServiceDef, Subject};
use entitle_store::{Device, DeviceIds, Store, StoreResult};

use crate::error::{ApiError, ApiResult};

use crate::snapshot::{DeviceFacts, TenantSnapshot};

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
}

impl Devices {
    /// How many devices.
    pub(crate) fn len(&self) -> usize {
        self.devices.len()
    }

    /// Every device with the subject of its decisions under `snapshot`.
    pub(crate) fn subjects<'a>(
        &'a self,
        snapshot: &'a TenantSnapshot,
        groups: &'a ProfileGroups,
    ) -> impl Iterator<Item = (&'a PopulationDevice, Subject<'a>)> + 'a {
        self.devices.iter().map(move |device| {
            let device_groups = groups.0.get(device.profile as usize).unwrap_or(&groups.1);
            (device, snapshot.subject_of(device.facts(), device_groups))
        })
    }

    /// Each profile's device groups under `snapshot`'s rules.
    pub(crate) fn groups(&self, snapshot: &TenantSnapshot) -> ProfileGroups {
        ProfileGroups(
            self.profiles
                .iter()
                .map(|report| snapshot.device_groups_for(report))
                .collect(),
            BTreeSet::new(),
        )
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

/// Each profile's device groups, by profile (see [`Devices::groups`]), and
/// the empty set for a device whose profile is unknown (none is).
pub(crate) struct ProfileGroups(Vec<BTreeSet<DeviceGroupId>>, BTreeSet<DeviceGroupId>);

/// Each device's decisions for one snapshot, as bits: bit `i` set when
/// `SERVICES[i]` is on. Computed once per snapshot and revision, then kept,
/// so that the pages of a listing filtered by state do not decide again.
struct States {
    build_id: u64,
    revision: i64,
    /// Services the snapshot has settings for (the others have no state).
    decided: u32,
    on: Vec<u32>,
}

const _: () = assert!(
    SERVICES.len() <= 32,
    "a service's state is one bit of a u32"
);

impl States {
    fn compute(devices: &Devices, snapshot: &TenantSnapshot) -> Self {
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
        let groups = devices.groups(snapshot);
        let on = devices
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
        States {
            build_id: snapshot.build_id,
            revision: devices.revision,
            decided,
            on,
        }
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

/// One tenant's devices and the states last computed over them.
#[derive(Default)]
struct Population {
    devices: Option<Arc<Devices>>,
    states: Option<Arc<States>>,
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
        let devices = self.refresh(tenant_id, &mut population).await?;
        let states = match &population.states {
            Some(states)
                if states.build_id == snapshot.build_id && states.revision == devices.revision =>
            {
                Arc::clone(states)
            }
            _ => {
                let (for_devices, for_snapshot) = (Arc::clone(&devices), Arc::clone(snapshot));
                let states = tokio::task::spawn_blocking(move || {
                    States::compute(&for_devices, &for_snapshot)
                })
                .await
                .map_err(|error| {
                    tracing::error!(%error, "deciding device states");
                    ApiError::internal()
                })?;
                let states = Arc::new(states);
                population.states = Some(Arc::clone(&states));
                states
            }
        };
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
