//! Staged rollout: which devices are in the first N % of a service, and the
//! preview of how many devices each step of the slider adds.

use crate::{GroupNames, PopulationEntry, Reason, ServiceDef, Settings, decide};

/// The bucket of a device in a service's rollout, 0..=99: the device is in a
/// rollout of `p` % when its bucket is below `p`.
///
/// The hash is FNV-1a (64 bits) over the three ids, each preceded by its
/// length so that ("ab", "c") and ("a", "bc") differ, then MurmurHash3's
/// 64-bit finaliser so that the low digits that `% 100` keeps are well mixed.
/// It is written out here rather than taken from `std` (`DefaultHasher` may
/// change between Rust releases and is seeded per process) or from a crate:
/// **a bucket must never change** between versions, processes or nodes,
/// otherwise a device would flap in and out of a rollout on an upgrade. The
/// test `buckets_are_pinned` pins known values. Because a device's bucket is
/// fixed, raising the percentage only adds devices.
pub fn rollout_bucket(tenant_id: &str, service_id: &str, device_id: &str) -> u8 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in [tenant_id, service_id, device_id] {
        let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
        for byte in len.to_le_bytes().iter().chain(part.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    // MurmurHash3 fmix64.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    // `% 100` is below 100, so the conversion cannot fail.
    u8::try_from(hash % 100).unwrap_or(99)
}

/// Whether a device with `bucket` is in a rollout of `percent` %.
pub fn in_rollout(bucket: u8, percent: u8) -> bool {
    bucket < percent
}

/// The steps the rollout preview shows by default.
pub const ROLLOUT_STEPS: &[u8] = &[1, 5, 10, 25, 50, 75, 100];

/// One step of the rollout preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStep {
    /// The percentage of this step.
    pub percent: u8,
    /// Devices that get the service at this step (grants and legacy clients
    /// included: a rollout does not hold them back).
    pub devices: usize,
    /// Devices this step adds to the previous one (to nothing for the first).
    pub added: usize,
}

/// How many devices of `population` get the service under `settings` with
/// its `rollout_percent` set to each of `steps` (ascending, 1..=100), and how
/// many each step adds.
///
/// Every device is decided once with [`decide`] at 100 %; a device on
/// through "Enabled by Default" or a group match is counted from the first
/// step above its [`rollout_bucket`], every other device that is on (a
/// temporary grant, a legacy client) at every step. This is exactly what
/// `evaluate` decides at each step (the test `preview_equals_evaluate_at_each_step`
/// checks it), at the cost of one decision per device and no explanation.
pub fn rollout_preview<'a>(
    service: &ServiceDef,
    settings: &Settings,
    population: impl IntoIterator<Item = PopulationEntry<'a>>,
    names: &dyn GroupNames,
    steps: &[u8],
) -> Vec<RolloutStep> {
    let everyone = Settings {
        rollout_percent: crate::settings::FULL_ROLLOUT,
        ..settings.clone()
    };
    let mut always = 0usize;
    // Devices subject to the rollout, per bucket.
    let mut per_bucket = [0usize; 100];
    for entry in population {
        let verdict = decide(service, &everyone, &entry.subject, names);
        if !verdict.enabled {
            continue;
        }
        if matches!(
            verdict.reason,
            Reason::EnabledByDefault | Reason::GroupMatch
        ) {
            let bucket =
                rollout_bucket(entry.subject.tenant_id, service.id, entry.subject.device_id);
            if let Some(slot) = per_bucket.get_mut(usize::from(bucket)) {
                *slot += 1;
            }
        } else {
            always += 1;
        }
    }
    let mut previous: Option<usize> = None;
    steps
        .iter()
        .map(|&percent| {
            let devices = always
                + per_bucket
                    .iter()
                    .take(usize::from(percent.min(100)))
                    .sum::<usize>();
            let added = devices.saturating_sub(previous.unwrap_or(0));
            previous = Some(devices);
            RolloutStep {
                percent,
                devices,
                added,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientVersion, DeviceGroupId, GroupId, NoNames, Subject, evaluate, service};
    use std::collections::BTreeSet;

    #[test]
    fn buckets_are_pinned() {
        // These values must never change: a device's bucket decides whether it
        // is in a rollout, on every node and after every upgrade.
        assert_eq!(
            rollout_bucket("acme", "private_access", "device-1"),
            PINNED_1
        );
        assert_eq!(
            rollout_bucket(
                "0b9f0c3e-5d0a-4f4e-9d63-0c1f6f0d7a11",
                "internet_access",
                "7c0e2f9a-1b7d-4c55-8e0e-3a3b9f1c2d44"
            ),
            PINNED_2
        );
        // Length prefixes keep the parts apart.
        assert_ne!(
            rollout_bucket("ab", "c", "d"),
            rollout_bucket("a", "bc", "d")
        );
    }

    const PINNED_1: u8 = 38;
    const PINNED_2: u8 = 91;

    #[test]
    fn buckets_spread_evenly() {
        let mut counts = [0u32; 100];
        for i in 0..100_000 {
            let bucket = rollout_bucket("tenant", "private_access", &format!("device-{i}"));
            counts[usize::from(bucket)] += 1;
        }
        // 1,000 expected per bucket; a fair hash stays well within ±20 %.
        for (bucket, count) in counts.iter().enumerate() {
            assert!((800..=1200).contains(count), "bucket {bucket}: {count}");
        }
    }

    #[test]
    fn preview_equals_evaluate_at_each_step() {
        let eng: BTreeSet<GroupId> = [GroupId("eng".into())].into();
        let none_d: BTreeSet<DeviceGroupId> = BTreeSet::new();
        let new = ClientVersion::parse("4.0").expect("version");
        let old = ClientVersion::parse("1.0").expect("version");
        let ids: Vec<String> = (0..400).map(|i| format!("device-{i}")).collect();
        let population: Vec<PopulationEntry<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| PopulationEntry {
                hostname: id,
                subject: Subject {
                    user_name: "ada",
                    user_id: "u1",
                    device_id: id,
                    tenant_id: "acme",
                    user_active: true,
                    user_groups: &eng,
                    device_groups: &none_d,
                    client_version: if i % 10 == 0 { old } else { new },
                    pending_approval: false,
                    grants: &[],
                },
            })
            .collect();
        let zpa = service("private_access").expect("zpa");
        let settings = Settings {
            user_groups: eng.clone(),
            rollout_percent: 30,
            ..Settings::default()
        };
        let steps = rollout_preview(zpa, &settings, population.clone(), &NoNames, ROLLOUT_STEPS);
        let mut previous = 0;
        for step in &steps {
            let at_step = Settings {
                rollout_percent: step.percent,
                ..settings.clone()
            };
            let on = population
                .iter()
                .filter(|e| evaluate(zpa, &at_step, &e.subject, &NoNames).enabled)
                .count();
            assert_eq!(step.devices, on, "step {}", step.percent);
            assert_eq!(step.added, on - previous);
            previous = on;
        }
        let last = steps.last().expect("steps");
        assert_eq!(last.devices, 400);
        // Legacy clients (40 of them, ZPA always on) count at every step.
        assert!(steps[0].devices >= 40);
    }
}
