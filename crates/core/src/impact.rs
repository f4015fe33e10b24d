//! The impact of a settings change over a population, for the preview before Save.

use crate::{GroupNames, Reason, ServiceDef, Settings, Subject, decide};
use std::collections::HashSet;

/// How many names a preview shows per side.
pub const IMPACT_SAMPLE_SIZE: usize = 10;

/// One side of an impact: how many users and devices, and some of their names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpactSide {
    /// Distinct users concerned.
    pub users: usize,
    /// Devices concerned.
    pub devices: usize,
    /// Up to [`IMPACT_SAMPLE_SIZE`] entries of "user on host": the first
    /// devices concerned in (user name, host name) order, whatever order the
    /// population came in.
    pub sample: Vec<String>,
}

/// Who gains and who loses a service when `before` becomes `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Impact {
    /// Devices that get the service and did not have it.
    pub gaining: ImpactSide,
    /// Devices that lose the service.
    pub losing: ImpactSide,
    /// Devices whose client is too old to honour group settings for this service.
    pub legacy_clients: ImpactSide,
}

/// One device of the population, with its owner.
#[derive(Debug, Clone)]
pub struct PopulationEntry<'a> {
    /// The device's host name, for the sample.
    pub hostname: &'a str,
    /// The user and device being decided about.
    pub subject: Subject<'a>,
}

/// Compares `before` and `after` over every device of `population` with [`decide`]
/// (the rules of [`crate::evaluate`], without explanations).
///
/// The population may come in any order: each side's sample is the first
/// devices in (user name, host name) order, so callers need not sort.
pub fn impact<'a>(
    service: &ServiceDef,
    before: &Settings,
    after: &Settings,
    population: impl IntoIterator<Item = PopulationEntry<'a>>,
    names: &dyn GroupNames,
) -> Impact {
    compare(
        service,
        (before, after),
        population
            .into_iter()
            .map(|entry| (entry.hostname, entry.subject.clone(), entry.subject)),
        (names, names),
    )
}

/// One device as it is and as a proposed change would make it: a device
/// group's rule edited or deleted moves devices in or out of the group.
#[derive(Debug, Clone)]
pub struct MovedEntry<'a> {
    /// The device's host name, for the sample.
    pub hostname: &'a str,
    /// The user and device as they are.
    pub before: Subject<'a>,
    /// The same with the device groups the change gives the device.
    pub after: Subject<'a>,
}

/// Who gains and who loses the service under unchanged `settings` when the
/// devices of `population` change as described, with [`decide`].
pub fn impact_of_moves<'a>(
    service: &ServiceDef,
    settings: &Settings,
    population: impl IntoIterator<Item = MovedEntry<'a>>,
    names: &dyn GroupNames,
) -> Impact {
    compare(
        service,
        (settings, settings),
        population
            .into_iter()
            .map(|entry| (entry.hostname, entry.before, entry.after)),
        (names, names),
    )
}

/// Like [`impact_of_moves`], when the change also renames or removes groups:
/// `names_after` is what explanations and exclusions see afterwards (a group
/// it knows only as deleted is a tombstone: an excluded one turns the service
/// off for everyone it would reach).
pub fn impact_of_moves_with_names<'a>(
    service: &ServiceDef,
    settings: &Settings,
    population: impl IntoIterator<Item = MovedEntry<'a>>,
    names_before: &dyn GroupNames,
    names_after: &dyn GroupNames,
) -> Impact {
    compare(
        service,
        (settings, settings),
        population
            .into_iter()
            .map(|entry| (entry.hostname, entry.before, entry.after)),
        (names_before, names_after),
    )
}

/// The one comparison behind both previews: each device decided before and after.
fn compare<'a>(
    service: &ServiceDef,
    (before, after): (&Settings, &Settings),
    population: impl Iterator<Item = (&'a str, Subject<'a>, Subject<'a>)>,
    (names_before, names_after): (&dyn GroupNames, &dyn GroupNames),
) -> Impact {
    let mut gaining = Tally::default();
    let mut losing = Tally::default();
    let mut legacy = Tally::default();
    for (hostname, old_subject, new_subject) in population {
        let old = decide(service, before, &old_subject, names_before);
        let new = decide(service, after, &new_subject, names_after);
        let user_name = new_subject.user_name;
        if !old.enabled && new.enabled {
            gaining.add(user_name, hostname);
        } else if old.enabled && !new.enabled {
            losing.add(user_name, hostname);
        }
        if new.reason == Reason::LegacyClient {
            legacy.add(user_name, hostname);
        }
    }
    Impact {
        gaining: gaining.finish(),
        losing: losing.finish(),
        legacy_clients: legacy.finish(),
    }
}

/// One side of an impact while the population is read. It borrows the
/// population's names, so that counting a device allocates nothing.
#[derive(Default)]
struct Tally<'a> {
    /// Distinct users. foldhash, not std's SipHash: hashing a million names
    /// was most of a preview's time; its seed is random per process.
    users: HashSet<&'a str, foldhash::fast::RandomState>,
    devices: usize,
    /// The least (user name, host name) pairs so far, sorted, at most
    /// [`IMPACT_SAMPLE_SIZE`] of them.
    sample: Vec<(&'a str, &'a str)>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, user_name: &'a str, hostname: &'a str) {
        self.users.insert(user_name);
        self.devices += 1;
        let entry = (user_name, hostname);
        // Once the sample is full, most devices sort after its last entry
        // and are rejected by one comparison.
        if self.sample.len() >= IMPACT_SAMPLE_SIZE {
            match self.sample.last() {
                Some(last) if entry < *last => {
                    self.sample.pop();
                }
                _ => return,
            }
        }
        let at = self.sample.partition_point(|kept| *kept <= entry);
        self.sample.insert(at, entry);
    }

    fn finish(self) -> ImpactSide {
        ImpactSide {
            users: self.users.len(),
            devices: self.devices,
            sample: self
                .sample
                .into_iter()
                .map(|(user_name, hostname)| format!("{user_name} on {hostname}"))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientVersion, DeviceGroupId, GroupId, NoNames, service};
    use std::collections::BTreeSet;

    #[test]
    fn counts_gainers_losers_and_legacy_clients() {
        let eng: BTreeSet<GroupId> = [GroupId("eng".into())].into();
        let none_g: BTreeSet<GroupId> = BTreeSet::new();
        let none_d: BTreeSet<DeviceGroupId> = BTreeSet::new();
        let new = ClientVersion::parse("4.0").expect("version");
        let old = ClientVersion::parse("1.0").expect("version");
        let person = |user_name, groups, version| Subject {
            user_name,
            user_active: true,
            user_groups: groups,
            device_groups: &none_d,
            client_version: version,
            pending_approval: false,
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
        };
        let population = vec![
            PopulationEntry {
                hostname: "ada-mac",
                subject: person("ada", &eng, new),
            },
            PopulationEntry {
                hostname: "ada-phone",
                subject: person("ada", &eng, new),
            },
            PopulationEntry {
                hostname: "bob-pc",
                subject: person("bob", &none_g, new),
            },
            PopulationEntry {
                hostname: "old-pc",
                subject: person("cy", &none_g, old),
            },
        ];
        let zpa = service("private_access").expect("zpa");
        let before = Settings {
            enabled_by_default: true,
            ..Settings::default()
        };
        let after = Settings {
            user_groups: eng.clone(),
            ..Settings::default()
        };

        let result = impact(zpa, &before, &after, population.clone(), &NoNames);
        assert_eq!(result.gaining, ImpactSide::default());
        assert_eq!(result.losing.users, 1);
        assert_eq!(result.losing.devices, 1);
        assert_eq!(result.losing.sample, vec!["bob on bob-pc".to_owned()]);
        assert_eq!(result.legacy_clients.devices, 1);

        let reverse = impact(zpa, &after, &before, population, &NoNames);
        assert_eq!(reverse.gaining.devices, 1);
        assert_eq!(reverse.losing.devices, 0);
    }

    #[test]
    fn moves_out_of_a_selected_device_group_lose_the_service() {
        let none_g: BTreeSet<GroupId> = BTreeSet::new();
        let managed: BTreeSet<DeviceGroupId> = [DeviceGroupId("managed".into())].into();
        let outside: BTreeSet<DeviceGroupId> = BTreeSet::new();
        let new = ClientVersion::parse("4.0").expect("version");
        let subject = |device_groups| Subject {
            user_name: "ada",
            user_active: true,
            user_groups: &none_g,
            device_groups,
            client_version: new,
            pending_approval: false,
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
        };
        let settings = Settings {
            device_groups: managed.clone(),
            ..Settings::default()
        };
        let zpa = service("private_access").expect("zpa");
        let moves = vec![
            MovedEntry {
                hostname: "ada-mac",
                before: subject(&managed),
                after: subject(&outside),
            },
            MovedEntry {
                hostname: "ada-pc",
                before: subject(&managed),
                after: subject(&managed),
            },
            MovedEntry {
                hostname: "ada-phone",
                before: subject(&outside),
                after: subject(&managed),
            },
        ];
        let result = impact_of_moves(zpa, &settings, moves, &NoNames);
        assert_eq!(result.losing.devices, 1);
        assert_eq!(result.losing.sample, vec!["ada on ada-mac".to_owned()]);
        assert_eq!(result.gaining.sample, vec!["ada on ada-phone".to_owned()]);
    }

    #[test]
    fn the_sample_is_the_first_devices_by_user_and_host_in_any_order() {
        let none_g: BTreeSet<GroupId> = BTreeSet::new();
        let none_d: BTreeSet<DeviceGroupId> = BTreeSet::new();
        let new = ClientVersion::parse("4.0").expect("version");
        let users: Vec<String> = (0..7).map(|i| format!("user-{}", (i * 3) % 7)).collect();
        let hosts: Vec<String> = (0..4).map(|i| format!("host-{}", (i * 3) % 4)).collect();
        let mut population: Vec<PopulationEntry<'_>> = Vec::new();
        for user in &users {
            for host in &hosts {
                population.push(PopulationEntry {
                    hostname: host,
                    subject: Subject {
                        user_name: user,
                        user_active: true,
                        user_groups: &none_g,
                        device_groups: &none_d,
                        client_version: new,
                        pending_approval: false,
                        user_id: user,
                        device_id: host,
                        tenant_id: "t1",
                        grants: &[],
                    },
                });
            }
        }
        let zpa = service("private_access").expect("zpa");
        let off = Settings::default();
        let on = Settings {
            enabled_by_default: true,
            ..Settings::default()
        };
        let forward = impact(zpa, &off, &on, population.clone(), &NoNames);
        let reversed = impact(zpa, &off, &on, population.iter().rev().cloned(), &NoNames);
        assert_eq!(forward, reversed);
        assert_eq!(forward.gaining.users, 7);
        assert_eq!(forward.gaining.devices, 28);
        let mut expected: Vec<(&str, &str)> = population
            .iter()
            .map(|e| (e.subject.user_name, e.hostname))
            .collect();
        expected.sort_unstable();
        let expected: Vec<String> = expected
            .iter()
            .take(IMPACT_SAMPLE_SIZE)
            .map(|(user, host)| format!("{user} on {host}"))
            .collect();
        assert_eq!(forward.gaining.sample, expected);
        assert_eq!(forward.gaining.sample[0], "user-0 on host-0");
    }
}
