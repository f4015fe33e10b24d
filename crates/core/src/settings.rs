//! Entitlement settings of one service in one tenant, and the rules of a save.

use std::collections::BTreeSet;

use crate::{DeviceGroupId, GroupId, ServiceDef};

/// What an administrator configures for one service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// On for every user, groups ignored.
    pub enabled_by_default: bool,
    /// Directory groups whose members get the service.
    pub user_groups: BTreeSet<GroupId>,
    /// Device groups whose devices get the service.
    pub device_groups: BTreeSet<DeviceGroupId>,
    /// Log the user out when the service becomes entitled on a device.
    pub logout_on_enable: bool,
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
            logout_on_enable: false,
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
