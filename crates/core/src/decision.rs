//! The decision: does this user's device get this service, and why.

use std::collections::BTreeSet;

use crate::{ClientVersion, DeviceGroupId, GroupId, LegacyBehaviour, ServiceDef, Settings};

/// Why a service is on or off for a device; the wire codes are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The user is deactivated in the directory: every service is off.
    UserInactive,
    /// The client predates selective entitlement for this service.
    LegacyClient,
    /// "Enabled by Default" is on.
    EnabledByDefault,
    /// Default off and no group selected: off for everyone.
    NoGroupsSelected,
    /// The user and the device are in the selected groups.
    GroupMatch,
    /// The user is in none of the selected user groups.
    NotInUserGroups,
    /// The device is in none of the selected device groups.
    NotInDeviceGroups,
    /// The device waits for an administrator's approval: no group-based service.
    PendingApproval,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: &'static [Reason] = &[
        Reason::UserInactive,
        Reason::LegacyClient,
        Reason::EnabledByDefault,
        Reason::NoGroupsSelected,
        Reason::GroupMatch,
        Reason::NotInUserGroups,
        Reason::NotInDeviceGroups,
        Reason::PendingApproval,
    ];

    /// The stable wire code.
    pub fn code(self) -> &'static str {
        match self {
            Reason::UserInactive => "user_inactive",
            Reason::LegacyClient => "legacy_client",
            Reason::EnabledByDefault => "enabled_by_default",
            Reason::NoGroupsSelected => "no_groups_selected",
            Reason::GroupMatch => "group_match",
            Reason::NotInUserGroups => "not_in_user_groups",
            Reason::NotInDeviceGroups => "not_in_device_groups",
            Reason::PendingApproval => "pending_approval",
        }
    }
}

/// What the decision is about: one user on one device.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The user's `userName`, for explanations.
    pub user_name: &'a str,
    /// Whether the directory still has the user active.
    pub user_active: bool,
    /// The user's effective groups (direct and nested).
    pub user_groups: &'a BTreeSet<GroupId>,
    /// The device's effective device groups.
    pub device_groups: &'a BTreeSet<DeviceGroupId>,
    /// The client version the device runs.
    pub client_version: ClientVersion,
    /// The device waits for an administrator's approval.
    pub pending_approval: bool,
}

/// Display names of groups, so that explanations speak of "Engineering", not ids.
pub trait GroupNames {
    /// The name of a user group, if known.
    fn user_group(&self, id: &GroupId) -> Option<&str>;
    /// The name of a device group, if known.
    fn device_group(&self, id: &DeviceGroupId) -> Option<&str>;
    /// The name a deleted user group had, when settings still select it.
    fn deleted_user_group(&self, _id: &GroupId) -> Option<&str> {
        None
    }
    /// The name a deleted device group had, when settings still select it.
    fn deleted_device_group(&self, _id: &DeviceGroupId) -> Option<&str> {
        None
    }
}

/// Explanations that show ids, for callers with no names at hand.
pub struct NoNames;

impl GroupNames for NoNames {
    fn user_group(&self, _: &GroupId) -> Option<&str> {
        None
    }
    fn device_group(&self, _: &DeviceGroupId) -> Option<&str> {
        None
    }
}

/// The outcome of [`evaluate`], with the reasons behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the service runs on the device.
    pub enabled: bool,
    /// Why.
    pub reason: Reason,
    /// One line a person can read.
    pub explanation: String,
    /// Selected user groups the user is in.
    pub matched_user_groups: Vec<GroupId>,
    /// Selected device groups the device is in.
    pub matched_device_groups: Vec<DeviceGroupId>,
}

/// Decides whether `subject` gets `service` under `settings` (SPEC §3).
///
/// This is the only implementation of the rule: agent policies, device pages,
/// explain, the impact preview and reports all call it.
pub fn evaluate(
    service: &ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
    names: &dyn GroupNames,
) -> Decision {
    let name = service.display_name;
    if !subject.user_active {
        return plain(
            false,
            Reason::UserInactive,
            format!(
                "{} is deactivated in the directory, so {name} is disabled.",
                subject.user_name
            ),
        );
    }
    if subject.client_version < service.min_version {
        let (enabled, rule) = match service.legacy {
            LegacyBehaviour::AlwaysEnabled => (true, "always runs it".to_owned()),
            LegacyBehaviour::FollowsEnabledByDefault => (
                settings.enabled_by_default,
                format!(
                    "follows only \"{}\", which is {}",
                    service.enabled_by_default_label,
                    on_off(settings.enabled_by_default)
                ),
            ),
        };
        return plain(
            enabled,
            Reason::LegacyClient,
            format!(
                "Client {} is older than {}, the first version that honours group entitlement for {name}; it {rule}, so {name} is {}.",
                subject.client_version,
                service.min_version,
                enabled_word(enabled)
            ),
        );
    }
    if settings.enabled_by_default {
        return plain(
            true,
            Reason::EnabledByDefault,
            format!(
                "\"{}\" is on, so {name} is enabled for every user.",
                service.enabled_by_default_label
            ),
        );
    }
    if settings.user_groups.is_empty() && settings.device_groups.is_empty() {
        return plain(
            false,
            Reason::NoGroupsSelected,
            format!(
                "\"Enabled by Default\" is off and no group is selected, so {name} is disabled for everyone."
            ),
        );
    }

    // Approval gates only what groups grant: a service on for everyone is on
    // for an unapproved device too, as it would be for any user.
    if subject.pending_approval {
        return plain(
            false,
            Reason::PendingApproval,
            format!(
                "The device waits for an administrator's approval, so {name} (granted by groups) is disabled until then."
            ),
        );
    }

    let matched_user_groups: Vec<GroupId> = settings
        .user_groups
        .intersection(subject.user_groups)
        .cloned()
        .collect();
    let matched_device_groups: Vec<DeviceGroupId> = settings
        .device_groups
        .intersection(subject.device_groups)
        .cloned()
        .collect();
    let user_ok = settings.user_groups.is_empty() || !matched_user_groups.is_empty();
    let device_ok = settings.device_groups.is_empty() || !matched_device_groups.is_empty();

    let user_part = (!settings.user_groups.is_empty()).then(|| {
        if user_ok {
            format!(
                "user {} is in {}",
                subject.user_name,
                list(
                    matched_user_groups
                        .iter()
                        .map(|id| names.user_group(id).unwrap_or(id.as_str()))
                )
            )
        } else {
            format!(
                "user {} is in none of the selected user groups ({})",
                subject.user_name,
                list(settings.user_groups.iter().map(|id| {
                    match (names.user_group(id), names.deleted_user_group(id)) {
                        (Some(name), _) => name.to_owned(),
                        (None, Some(deleted)) => format!("{deleted} (deleted)"),
                        (None, None) => id.as_str().to_owned(),
                    }
                }))
            )
        }
    });
    let device_part = (!settings.device_groups.is_empty()).then(|| {
        let show = |id: &DeviceGroupId| names.device_group(id).unwrap_or(id.as_str()).to_owned();
        if device_ok {
            format!(
                "the device is in {}",
                list(matched_device_groups.iter().map(show))
            )
        } else {
            let show_or_deleted = |id: &DeviceGroupId| match names.deleted_device_group(id) {
                Some(deleted) if names.device_group(id).is_none() => format!("{deleted} (deleted)"),
                _ => show(id),
            };
            format!(
                "the device is in none of the selected device groups ({})",
                list(settings.device_groups.iter().map(show_or_deleted))
            )
        }
    });
    let (enabled, reason) = match (user_ok, device_ok) {
        (true, true) => (true, Reason::GroupMatch),
        (false, _) => (false, Reason::NotInUserGroups),
        (true, false) => (false, Reason::NotInDeviceGroups),
    };
    let facts: Vec<String> = [user_part, device_part].into_iter().flatten().collect();
    let mut explanation = capitalise(&facts.join(" and "));
    explanation.push_str(&format!(", so {name} is {}.", enabled_word(enabled)));
    // A selected group that was deleted fails closed; say so, since that is the
    // change an administrator is most likely not to expect.
    if !enabled {
        let deleted_users = settings
            .user_groups
            .iter()
            .filter(|id| names.user_group(id).is_none())
            .filter_map(|id| names.deleted_user_group(id))
            .map(|n| format!(" User group \"{n}\" was deleted and matches no user."));
        let deleted_devices = settings
            .device_groups
            .iter()
            .filter(|id| names.device_group(id).is_none())
            .filter_map(|id| names.deleted_device_group(id))
            .map(|n| format!(" Device group \"{n}\" was deleted and matches no device."));
        explanation.extend(deleted_users.chain(deleted_devices));
    }
    Decision {
        enabled,
        reason,
        explanation,
        matched_user_groups,
        matched_device_groups,
    }
}

fn plain(enabled: bool, reason: Reason, explanation: String) -> Decision {
    Decision {
        enabled,
        reason,
        explanation,
        matched_user_groups: Vec::new(),
        matched_device_groups: Vec::new(),
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn enabled_word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn list<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    items
        .map(|s| s.as_ref().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service;
    use proptest::prelude::*;

    fn v(text: &str) -> ClientVersion {
        ClientVersion::parse(text).expect("valid version")
    }

    fn ids<T: From<String> + Ord>(items: &[&str]) -> BTreeSet<T> {
        items.iter().map(|s| T::from((*s).to_owned())).collect()
    }

    impl From<String> for GroupId {
        fn from(s: String) -> Self {
            GroupId(s)
        }
    }
    impl From<String> for DeviceGroupId {
        fn from(s: String) -> Self {
            DeviceGroupId(s)
        }
    }

    struct Case {
        service: &'static str,
        version: &'static str,
        on: bool,
        selected_users: &'static [&'static str],
        selected_devices: &'static [&'static str],
        user_in: &'static [&'static str],
        device_in: &'static [&'static str],
        expected: (bool, Reason),
    }

    fn check(case: &Case) {
        let settings = Settings {
            enabled_by_default: case.on,
            user_groups: ids(case.selected_users),
            device_groups: ids(case.selected_devices),
            logout_on_enable: false,
        };
        let user_groups = ids(case.user_in);
        let device_groups = ids(case.device_in);
        let subject = Subject {
            user_name: "ada",
            user_active: true,
            user_groups: &user_groups,
            device_groups: &device_groups,
            client_version: v(case.version),
            pending_approval: false,
        };
        let def = service(case.service).expect("known service");
        let decision = evaluate(def, &settings, &subject, &NoNames);
        assert_eq!(
            (decision.enabled, decision.reason),
            case.expected,
            "{} {} on={} users={:?} devices={:?} user_in={:?} device_in={:?}: {}",
            case.service,
            case.version,
            case.on,
            case.selected_users,
            case.selected_devices,
            case.user_in,
            case.device_in,
            decision.explanation
        );
    }

    const NEW: &str = "9.9";

    #[test]
    fn the_three_cases_and_the_group_rule() {
        use Reason::*;
        let cases = [
            // Enabled by default: everyone, groups ignored.
            Case {
                service: "private_access",
                version: NEW,
                on: true,
                selected_users: &[],
                selected_devices: &[],
                user_in: &[],
                device_in: &[],
                expected: (true, EnabledByDefault),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: true,
                selected_users: &["eng"],
                selected_devices: &["laptops"],
                user_in: &[],
                device_in: &[],
                expected: (true, EnabledByDefault),
            },
            // Off with no groups: no one.
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &[],
                selected_devices: &[],
                user_in: &["eng"],
                device_in: &["laptops"],
                expected: (false, NoGroupsSelected),
            },
            // User groups only.
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &[],
                user_in: &["eng"],
                device_in: &[],
                expected: (true, GroupMatch),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &[],
                user_in: &["sales"],
                device_in: &["laptops"],
                expected: (false, NotInUserGroups),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng", "finance"],
                selected_devices: &[],
                user_in: &["finance"],
                device_in: &[],
                expected: (true, GroupMatch),
            },
            // Device groups only.
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &[],
                selected_devices: &["laptops"],
                user_in: &[],
                device_in: &["laptops"],
                expected: (true, GroupMatch),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &[],
                selected_devices: &["laptops"],
                user_in: &["eng"],
                device_in: &["phones"],
                expected: (false, NotInDeviceGroups),
            },
            // Both: the user must be in a user group AND the device in a device group.
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &["laptops"],
                user_in: &["eng"],
                device_in: &["laptops"],
                expected: (true, GroupMatch),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &["laptops"],
                user_in: &["eng"],
                device_in: &[],
                expected: (false, NotInDeviceGroups),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &["laptops"],
                user_in: &[],
                device_in: &["laptops"],
                expected: (false, NotInUserGroups),
            },
            Case {
                service: "private_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &["laptops"],
                user_in: &[],
                device_in: &[],
                expected: (false, NotInUserGroups),
            },
            // The same rules hold for the other services on a new client.
            Case {
                service: "internet_access",
                version: NEW,
                on: false,
                selected_users: &["eng"],
                selected_devices: &[],
                user_in: &[],
                device_in: &[],
                expected: (false, NotInUserGroups),
            },
            Case {
                service: "digital_experience",
                version: NEW,
                on: false,
                selected_users: &[],
                selected_devices: &[],
                user_in: &[],
                device_in: &[],
                expected: (false, NoGroupsSelected),
            },
        ];
        for case in &cases {
            check(case);
        }
    }

    #[test]
    fn version_gates_at_each_boundary() {
        use Reason::*;
        let off_no_groups = |service, version, expected| Case {
            service,
            version,
            on: false,
            selected_users: &["eng"],
            selected_devices: &[],
            user_in: &[],
            device_in: &[],
            expected,
        };
        for case in [
            // ZPA: older clients always run it.
            off_no_groups("private_access", "1.2.3", (true, LegacyClient)),
            off_no_groups("private_access", "1.2.3.999", (true, LegacyClient)),
            off_no_groups("private_access", "1.2.4", (false, NotInUserGroups)),
            off_no_groups("private_access", "1.2.4.0", (false, NotInUserGroups)),
            // ZDX: older clients follow only the default toggle.
            off_no_groups("digital_experience", "2.2.0", (false, LegacyClient)),
            off_no_groups("digital_experience", "2.2.1", (false, NotInUserGroups)),
            // ZIA: older clients always run it.
            off_no_groups("internet_access", "3.8.9", (true, LegacyClient)),
            off_no_groups("internet_access", "3.8.9.9999", (true, LegacyClient)),
            off_no_groups("internet_access", "3.9", (false, NotInUserGroups)),
            off_no_groups("internet_access", "3.9.0.221", (false, NotInUserGroups)),
        ] {
            check(&case);
        }
        check(&Case {
            service: "digital_experience",
            version: "2.2.0",
            on: true,
            selected_users: &[],
            selected_devices: &[],
            user_in: &[],
            device_in: &[],
            expected: (true, LegacyClient),
        });
    }

    #[test]
    fn inactive_users_get_nothing() {
        let groups = ids::<GroupId>(&["eng"]);
        let devices = BTreeSet::new();
        let subject = Subject {
            user_name: "gone",
            user_active: false,
            user_groups: &groups,
            device_groups: &devices,
            client_version: v("1.0"),
            pending_approval: false,
        };
        for def in crate::SERVICES {
            let settings = Settings {
                enabled_by_default: true,
                ..Settings::default()
            };
            let decision = evaluate(def, &settings, &subject, &NoNames);
            assert_eq!(
                (decision.enabled, decision.reason),
                (false, Reason::UserInactive)
            );
        }
    }

    struct Names;
    impl GroupNames for Names {
        fn user_group(&self, id: &GroupId) -> Option<&str> {
            (id.as_str() == "g-eng").then_some("Engineering")
        }
        fn device_group(&self, id: &DeviceGroupId) -> Option<&str> {
            (id.as_str() == "dg-laptops").then_some("Corporate laptops")
        }
        fn deleted_user_group(&self, id: &GroupId) -> Option<&str> {
            (id.as_str() == "g-gone").then_some("Contractors")
        }
        fn deleted_device_group(&self, id: &DeviceGroupId) -> Option<&str> {
            (id.as_str() == "dg-temp").then_some("Temp laptops")
        }
    }

    #[test]
    fn a_pending_device_gets_only_what_is_on_for_everyone() {
        let groups = ids::<GroupId>(&["eng"]);
        let devices = ids::<DeviceGroupId>(&["laptops"]);
        let pending = Subject {
            user_name: "ada",
            user_active: true,
            user_groups: &groups,
            device_groups: &devices,
            client_version: v("4.0"),
            pending_approval: true,
        };
        let zpa = service("private_access").expect("zpa");
        let by_groups = Settings {
            user_groups: groups.clone(),
            device_groups: devices.clone(),
            ..Settings::default()
        };
        let decision = evaluate(zpa, &by_groups, &pending, &NoNames);
        assert_eq!(
            (decision.enabled, decision.reason),
            (false, Reason::PendingApproval)
        );
        let for_everyone = Settings {
            enabled_by_default: true,
            ..Settings::default()
        };
        let decision = evaluate(zpa, &for_everyone, &pending, &NoNames);
        assert_eq!(
            (decision.enabled, decision.reason),
            (true, Reason::EnabledByDefault)
        );
        let approved = Subject {
            pending_approval: false,
            ..pending
        };
        let decision = evaluate(zpa, &by_groups, &approved, &NoNames);
        assert_eq!(
            (decision.enabled, decision.reason),
            (true, Reason::GroupMatch)
        );
    }

    #[test]
    fn a_deleted_group_matches_nothing_and_is_named() {
        let settings = Settings {
            enabled_by_default: false,
            user_groups: ids(&["g-eng"]),
            device_groups: ids(&["dg-temp"]),
            logout_on_enable: false,
        };
        // Even a device that once was in the deleted group is in no live group.
        let user_in = ids(&["g-eng"]);
        let device_in = ids(&["dg-laptops"]);
        let subject = Subject {
            user_name: "ada",
            user_active: true,
            user_groups: &user_in,
            device_groups: &device_in,
            client_version: v("4.0"),
            pending_approval: false,
        };
        let zpa = service("private_access").expect("zpa");
        let decision = evaluate(zpa, &settings, &subject, &Names);
        assert_eq!(
            (decision.enabled, decision.reason),
            (false, Reason::NotInDeviceGroups)
        );
        assert_eq!(
            decision.explanation,
            "User ada is in Engineering and the device is in none of the selected device groups (Temp laptops (deleted)), so Private Applications is disabled. Device group \"Temp laptops\" was deleted and matches no device."
        );

        let only_deleted_users = Settings {
            user_groups: ids(&["g-gone"]),
            device_groups: BTreeSet::new(),
            ..settings
        };
        let decision = evaluate(zpa, &only_deleted_users, &subject, &Names);
        assert_eq!(
            (decision.enabled, decision.reason),
            (false, Reason::NotInUserGroups)
        );
        assert!(
            decision
                .explanation
                .ends_with("User group \"Contractors\" was deleted and matches no user."),
            "{}",
            decision.explanation
        );
    }

    #[test]
    fn explanations_name_groups_and_matches() {
        let settings = Settings {
            enabled_by_default: false,
            user_groups: ids(&["g-eng"]),
            device_groups: ids(&["dg-laptops"]),
            logout_on_enable: false,
        };
        let user_in = ids(&["g-eng", "g-other"]);
        let device_in = BTreeSet::new();
        let subject = Subject {
            user_name: "ada",
            user_active: true,
            user_groups: &user_in,
            device_groups: &device_in,
            client_version: v("4.0"),
            pending_approval: false,
        };
        let zpa = service("private_access").expect("zpa");
        let decision = evaluate(zpa, &settings, &subject, &Names);
        assert_eq!(decision.reason, Reason::NotInDeviceGroups);
        assert_eq!(decision.matched_user_groups, vec![GroupId("g-eng".into())]);
        assert!(decision.matched_device_groups.is_empty());
        assert_eq!(
            decision.explanation,
            "User ada is in Engineering and the device is in none of the selected device groups (Corporate laptops), so Private Applications is disabled."
        );

        let legacy = Subject {
            client_version: v("1.2.3"),
            ..subject.clone()
        };
        let decision = evaluate(zpa, &settings, &legacy, &Names);
        assert!(decision.explanation.contains("1.2.3") && decision.explanation.contains("1.2.4"));
    }

    /// The rules of SPEC §3 written as plainly as possible, to check `evaluate` against.
    fn reference(
        legacy_always: Option<bool>,
        old_client: bool,
        on: bool,
        selected_users: &BTreeSet<GroupId>,
        selected_devices: &BTreeSet<DeviceGroupId>,
        user_in: &BTreeSet<GroupId>,
        device_in: &BTreeSet<DeviceGroupId>,
    ) -> bool {
        if old_client {
            return legacy_always.unwrap_or(on);
        }
        if on {
            return true;
        }
        if selected_users.is_empty() && selected_devices.is_empty() {
            return false;
        }
        let user_ok =
            selected_users.is_empty() || selected_users.iter().any(|g| user_in.contains(g));
        let device_ok =
            selected_devices.is_empty() || selected_devices.iter().any(|g| device_in.contains(g));
        user_ok && device_ok
    }

    fn group_set<T: From<String> + Ord + std::fmt::Debug>() -> impl Strategy<Value = BTreeSet<T>> {
        proptest::collection::btree_set(0u8..5, 0..4)
            .prop_map(|set| set.into_iter().map(|n| T::from(format!("g{n}"))).collect())
    }

    proptest! {
        #[test]
        fn evaluate_agrees_with_the_reference_model(
            service_index in 0..crate::SERVICES.len(),
            version in proptest::collection::vec(0u32..5, 1..=4),
            on: bool,
            selected_users in group_set::<GroupId>(),
            selected_devices in group_set::<DeviceGroupId>(),
            user_in in group_set::<GroupId>(),
            device_in in group_set::<DeviceGroupId>(),
        ) {
            let def = &crate::SERVICES[service_index];
            let text = version.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let client_version = v(&text);
            let settings = Settings {
                enabled_by_default: on,
                user_groups: selected_users.clone(),
                device_groups: selected_devices.clone(),
                logout_on_enable: false,
            };
            let subject = Subject {
                user_name: "u",
                user_active: true,
                user_groups: &user_in,
                device_groups: &device_in,
                client_version,
                pending_approval: false,
            };
            let decision = evaluate(def, &settings, &subject, &NoNames);
            let legacy_always = match def.legacy {
                LegacyBehaviour::AlwaysEnabled => Some(true),
                LegacyBehaviour::FollowsEnabledByDefault => None,
            };
            let expected = reference(
                legacy_always,
                client_version < def.min_version,
                on,
                &selected_users,
                &selected_devices,
                &user_in,
                &device_in,
            );
            prop_assert_eq!(decision.enabled, expected, "{}", decision.explanation);
            prop_assert_eq!(decision.enabled, matches!(decision.reason, Reason::GroupMatch | Reason::EnabledByDefault) || (decision.reason == Reason::LegacyClient && decision.enabled));
            prop_assert!(!decision.explanation.is_empty());
        }
    }
}
