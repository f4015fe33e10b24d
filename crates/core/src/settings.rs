//! Entitlement settings of one service in one tenant, and the rules of a save.

use std::collections::BTreeSet;

use crate::{DeviceGroupId, GroupId, ServiceDef};

/// What an administrator configures for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// On for every user, groups ignored.
    pub enabled_by_default: bool,
    /// Directory groups whose members get the service.
    pub user_groups: BTreeSet<GroupId>,
    /// Device groups whose devices get the service.
    pub device_groups: BTreeSet<DeviceGroupId>,
    /// Log the user out when the service becomes entitled on a device.
    pub logout_on_enable: bool,
    /// Directory groups whose members never get the service through groups or
    /// "Enabled by Default" (nested membership applies; see [`crate::evaluate`]).
    pub exclude_user_groups: BTreeSet<GroupId>,
    /// Device groups whose devices never get the service through groups or
    /// "Enabled by Default".
    pub exclude_device_groups: BTreeSet<DeviceGroupId>,
    /// The share of the devices that would get the service through groups or
    /// "Enabled by Default" that do get it, 1..=100 (100: all of them), chosen
    /// by [`crate::rollout_bucket`].
    pub rollout_percent: u8,
}

/// `rollout_percent` of settings that say nothing about a rollout: everyone.
pub const FULL_ROLLOUT: u8 = 100;

impl Default for Settings {
    /// Off, no groups, no exclusions, rolled out to everyone.
    fn default() -> Self {
        Self {
            enabled_by_default: false,
            user_groups: BTreeSet::new(),
            device_groups: BTreeSet::new(),
            logout_on_enable: false,
            exclude_user_groups: BTreeSet::new(),
            exclude_device_groups: BTreeSet::new(),
            rollout_percent: FULL_ROLLOUT,
        }
    }
}

impl Settings {
    /// The settings of a brand-new tenant created at `tenant_created_unix`.
    pub fn new_tenant_default(service: &ServiceDef, tenant_created_unix: i64) -> Self {
        Self {
            enabled_by_default: service.default_enabled_for(tenant_created_unix),
            ..Self::default()
        }
    }
}

/// Why a save is refused; each maps to 422 at the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    /// Group lists changed while "Enabled by Default" is (or stays) on.
    #[error(
        "groups cannot be assigned while \"{label}\" is on; turn \"Enabled by Default\" off first, then choose groups"
    )]
    GroupsWhileEnabledByDefault {
        /// The toggle's label for this service.
        label: &'static str,
    },
    /// Some user group ids do not exist in the tenant.
    #[error("unknown user groups: {}", join(ids))]
    UnknownUserGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// Some device group ids do not exist in the tenant.
    #[error("unknown device groups: {}", join(ids))]
    UnknownDeviceGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// Some excluded user group ids do not exist in the tenant.
    #[error("unknown excluded user groups: {}", join(ids))]
    UnknownExcludedUserGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// Some excluded device group ids do not exist in the tenant.
    #[error("unknown excluded device groups: {}", join(ids))]
    UnknownExcludedDeviceGroups {
        /// The ids that were not found.
        ids: Vec<String>,
    },
    /// `rollout_percent` outside 1..=100 (the refused value, 0 for one
    /// too large to hold).
    #[error("rollout_percent must be a whole number from 1 to 100")]
    RolloutPercent {
        /// The refused value.
        percent: u8,
    },
}

fn join(ids: &[String]) -> String {
    ids.join(", ")
}

/// Checks a save of `proposed` over `current` against the spec's rules.
///
/// An id that `current` already selects may stay even when its group no longer
/// exists: a deleted group is kept as a tombstone that matches nothing, and
/// saving another field must not be refused because of it. Only ids a save
/// adds must name existing groups.
pub fn validate_save(
    service: &ServiceDef,
    current: &Settings,
    proposed: &Settings,
    user_group_exists: impl Fn(&GroupId) -> bool,
    device_group_exists: impl Fn(&DeviceGroupId) -> bool,
) -> Result<(), SaveError> {
    let groups_changed = proposed.user_groups != current.user_groups
        || proposed.device_groups != current.device_groups;
    if proposed.enabled_by_default && groups_changed {
        return Err(SaveError::GroupsWhileEnabledByDefault {
            label: service.enabled_by_default_label,
        });
    }
    // Exclusions may change while "Enabled by Default" is on: they narrow it.
    if !(1..=FULL_ROLLOUT).contains(&proposed.rollout_percent) {
        return Err(SaveError::RolloutPercent {
            percent: proposed.rollout_percent,
        });
    }
    check_group_ids(current, proposed, user_group_exists, device_group_exists)
}

/// The group-id part of [`validate_save`], for callers (the preview) that apply
/// no other rule: ids `current` already selects may stay, ids added must exist.
pub fn check_group_ids(
    current: &Settings,
    proposed: &Settings,
    user_group_exists: impl Fn(&GroupId) -> bool,
    device_group_exists: impl Fn(&DeviceGroupId) -> bool,
) -> Result<(), SaveError> {
    let unknown_users: Vec<String> = proposed
        .user_groups
        .iter()
        .filter(|id| !current.user_groups.contains(id) && !user_group_exists(id))
        .map(|id| id.0.clone())
        .collect();
    if !unknown_users.is_empty() {
        return Err(SaveError::UnknownUserGroups { ids: unknown_users });
    }
    let unknown_devices: Vec<String> = proposed
        .device_groups
        .iter()
        .filter(|id| !current.device_groups.contains(id) && !device_group_exists(id))
        .map(|id| id.0.clone())
        .collect();
    if !unknown_devices.is_empty() {
        return Err(SaveError::UnknownDeviceGroups {
            ids: unknown_devices,
        });
    }
    // The same for exclusions: a deleted excluded group stays as a tombstone
    // (and keeps the service off, see `evaluate`), a new one must exist.
    let unknown_excluded_users: Vec<String> = proposed
        .exclude_user_groups
        .iter()
        .filter(|id| !current.exclude_user_groups.contains(id) && !user_group_exists(id))
        .map(|id| id.0.clone())
        .collect();
    if !unknown_excluded_users.is_empty() {
        return Err(SaveError::UnknownExcludedUserGroups {
            ids: unknown_excluded_users,
        });
    }
    let unknown_excluded_devices: Vec<String> = proposed
        .exclude_device_groups
        .iter()
        .filter(|id| !current.exclude_device_groups.contains(id) && !device_group_exists(id))
        .map(|id| id.0.clone())
        .collect();
    if !unknown_excluded_devices.is_empty() {
        return Err(SaveError::UnknownExcludedDeviceGroups {
            ids: unknown_excluded_devices,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service;

    fn settings(on: bool, users: &[&str], devices: &[&str]) -> Settings {
        Settings {
            enabled_by_default: on,
            user_groups: users.iter().map(|u| GroupId((*u).into())).collect(),
            device_groups: devices.iter().map(|d| DeviceGroupId((*d).into())).collect(),
            ..Settings::default()
        }
    }

    fn check(current: Settings, proposed: Settings, expected: Result<(), &str>) {
        let zpa = service("private_access").expect("zpa exists");
        let known = ["eng", "finance", "laptops"];
        let result = validate_save(
            zpa,
            &current,
            &proposed,
            |id| known.contains(&id.as_str()),
            |id| known.contains(&id.as_str()),
        );
        let kind = result.map_err(|e| match e {
            SaveError::GroupsWhileEnabledByDefault { .. } => "enabled_by_default",
            SaveError::UnknownUserGroups { .. } => "unknown_user_groups",
            SaveError::UnknownDeviceGroups { .. } => "unknown_device_groups",
            SaveError::UnknownExcludedUserGroups { .. } => "unknown_excluded_user_groups",
            SaveError::UnknownExcludedDeviceGroups { .. } => "unknown_excluded_device_groups",
            SaveError::RolloutPercent { .. } => "rollout_percent",
        });
        assert_eq!(kind, expected, "{current:?} -> {proposed:?}");
    }

    #[test]
    fn save_rules() {
        // Turning the toggle off while choosing groups is the normal flow.
        check(
            settings(true, &[], &[]),
            settings(false, &["eng"], &["laptops"]),
            Ok(()),
        );
        // Keeping it on with the stored lists unchanged is allowed (they stay greyed out).
        check(
            settings(true, &["eng"], &[]),
            settings(true, &["eng"], &[]),
            Ok(()),
        );
        // Turning it on and keeping the lists is allowed.
        check(
            settings(false, &["eng"], &[]),
            settings(true, &["eng"], &[]),
            Ok(()),
        );
        // Turning it on and changing groups is refused.
        check(
            settings(false, &[], &[]),
            settings(true, &["eng"], &[]),
            Err("enabled_by_default"),
        );
        check(
            settings(true, &[], &[]),
            settings(true, &[], &["laptops"]),
            Err("enabled_by_default"),
        );
        check(
            settings(true, &["eng"], &[]),
            settings(true, &[], &[]),
            Err("enabled_by_default"),
        );
        check(
            settings(false, &[], &[]),
            settings(false, &["nope"], &[]),
            Err("unknown_user_groups"),
        );
        check(
            settings(false, &[], &[]),
            settings(false, &[], &["nope"]),
            Err("unknown_device_groups"),
        );
        check(settings(false, &[], &[]), settings(false, &[], &[]), Ok(()));
        // A deleted group the settings already select stays (a tombstone) while
        // another field changes; adding it again is refused like any unknown id.
        check(
            settings(false, &["eng"], &["deleted"]),
            settings(false, &["eng", "finance"], &["deleted"]),
            Ok(()),
        );
        check(
            settings(false, &["eng"], &[]),
            settings(false, &["eng"], &["deleted"]),
            Err("unknown_device_groups"),
        );
        check(
            settings(false, &["gone"], &[]),
            settings(false, &["gone", "ghost"], &[]),
            Err("unknown_user_groups"),
        );
    }

    fn excluding(on: bool, users: &[&str], devices: &[&str], percent: u8) -> Settings {
        Settings {
            enabled_by_default: on,
            exclude_user_groups: users.iter().map(|u| GroupId((*u).into())).collect(),
            exclude_device_groups: devices.iter().map(|d| DeviceGroupId((*d).into())).collect(),
            rollout_percent: percent,
            ..Settings::default()
        }
    }

    #[test]
    fn exclusion_and_rollout_save_rules() {
        // Exclusions narrow "Enabled by Default", so they may change while it is on.
        check(
            excluding(true, &[], &[], 100),
            excluding(true, &["eng"], &["laptops"], 100),
            Ok(()),
        );
        check(
            excluding(false, &[], &[], 100),
            excluding(false, &["nope"], &[], 100),
            Err("unknown_excluded_user_groups"),
        );
        check(
            excluding(false, &[], &[], 100),
            excluding(false, &[], &["nope"], 100),
            Err("unknown_excluded_device_groups"),
        );
        // A deleted excluded group stays as a tombstone while another field changes.
        check(
            excluding(false, &["gone"], &["deleted"], 100),
            excluding(false, &["gone", "eng"], &["deleted"], 50),
            Ok(()),
        );
        for percent in [1, 10, 99, 100] {
            check(
                Settings::default(),
                excluding(false, &[], &[], percent),
                Ok(()),
            );
        }
        for percent in [0, 101, 255] {
            check(
                Settings::default(),
                excluding(false, &[], &[], percent),
                Err("rollout_percent"),
            );
        }
        assert_eq!(Settings::default().rollout_percent, 100);
    }

    #[test]
    fn unknown_ids_are_named_in_the_message() {
        let zpa = service("private_access").expect("zpa exists");
        let err = validate_save(
            zpa,
            &Settings::default(),
            &settings(false, &["ghost", "phantom"], &[]),
            |_| false,
            |_| true,
        );
        let message = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            message.contains("ghost") && message.contains("phantom"),
            "{message}"
        );
    }

    #[test]
    fn new_tenant_defaults() {
        let zpa = service("private_access").expect("zpa exists");
        assert!(Settings::new_tenant_default(zpa, 0).enabled_by_default);
        let new = Settings::new_tenant_default(zpa, 1_700_000_000);
        assert_eq!(new, Settings::default());
    }
}
