//! The decision: does this user's device get this service, and why.

use std::collections::BTreeSet;

use crate::rollout::{in_rollout, rollout_bucket};
use crate::settings::FULL_ROLLOUT;
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
    /// The user is in an excluded user group (or one was deleted): off.
    ExcludedUserGroup,
    /// The device is in an excluded device group (or one was deleted): off.
    ExcludedDeviceGroup,
    /// A temporary grant gives the user the service until its end.
    TemporaryGrant,
    /// On through groups or "Enabled by Default", but outside the rollout's percentage.
    RolloutHeldBack,
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
        Reason::ExcludedUserGroup,
        Reason::ExcludedDeviceGroup,
        Reason::TemporaryGrant,
        Reason::RolloutHeldBack,
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
            Reason::ExcludedUserGroup => "excluded_user_group",
            Reason::ExcludedDeviceGroup => "excluded_device_group",
            Reason::TemporaryGrant => "temporary_grant",
            Reason::RolloutHeldBack => "rollout_held_back",
        }
    }
}

/// A temporary grant of one service to one user (optionally one device) that
/// is active at the caller's "now": core knows no time, so the caller keeps
/// only grants whose start has passed and whose end has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    /// The grant's id.
    pub id: String,
    /// The service granted (`ServiceDef::id`).
    pub service_id: String,
    /// The only device the grant applies to; `None`: every device of the user.
    pub device_id: Option<String>,
    /// When it ends, for explanations (RFC 3339, UTC).
    pub ends_at: String,
    /// Whether the grant wins over the service's exclusion groups.
    pub overrides_exclusions: bool,
}

/// What the decision is about: one user on one device.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The user's `userName`, for explanations.
    pub user_name: &'a str,
    /// The user's id.
    pub user_id: &'a str,
    /// The device's id (the rollout's bucket and device-bound grants).
    pub device_id: &'a str,
    /// The tenant's id (the rollout's bucket).
    pub tenant_id: &'a str,
    /// The user's temporary grants active now (of any service; `evaluate`
    /// picks those of the service and this device).
    pub grants: &'a [ActiveGrant],
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

/// The outcome of [`decide`]: whether the service runs and why, without the
/// words of a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the service runs on the device.
    pub enabled: bool,
    /// Why.
    pub reason: Reason,
}

/// Decides whether `subject` gets `service` under `settings` (SPEC §3).
///
/// The rules exist once, in the private `rule`: `evaluate` puts its ruling
/// into words, [`decide`] returns only its verdict. Agent policies, device
/// pages, explain and reports call `evaluate`; the impact and rollout
/// previews call `decide`.
///
/// Rule order, first match wins:
/// 1. the user is inactive: off (`user_inactive`);
/// 2. the client is older than the service's minimum version: the legacy rule
///    (`legacy_client`); such a client cannot honour exclusions, grants or a
///    rollout, and the preview lists these clients;
/// 3. the user is in an excluded user group, or the device in an excluded
///    device group (nested membership applies), or an excluded group was
///    deleted (fails closed for everyone): off (`excluded_user_group` /
///    `excluded_device_group`), even with "Enabled by Default" on, unless a
///    temporary grant for this device overrides exclusions (`temporary_grant`);
/// 4. a temporary grant of this service for this device: on (`temporary_grant`,
///    until its end); not subject to the rollout;
/// 5. "Enabled by Default", no groups, pending approval and the group rule as
///    before (a device pending approval gets no grant either: it falls through
///    to this step);
/// 6. a result that is on through step 5 is held back (`rollout_held_back`)
///    unless the device's [`crate::rollout_bucket`] is below `rollout_percent`.
pub fn evaluate(
    service: &ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
    names: &dyn GroupNames,
) -> Decision {
    let ruling = rule(service, settings, subject, names);
    words(ruling, service, settings, subject, names)
}

/// Decides like [`evaluate`] (same rules, same order), without the
/// explanation or the matched groups, for callers that decide over a whole
/// population. It allocates nothing.
pub fn decide(
    service: &ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
    names: &dyn GroupNames,
) -> Verdict {
    rule(service, settings, subject, names).verdict()
}

/// Which rule of [`evaluate`]'s order applied, with what its explanation
/// names. Only references and flags, so that [`decide`] allocates nothing.
#[derive(Clone, Copy)]
enum Ruling<'a> {
    /// Rule 1.
    UserInactive,
    /// Rule 2, on or off by the service's legacy behaviour.
    LegacyClient { enabled: bool },
    /// Rule 3; `grant_ignored`: a grant applies but does not override exclusions.
    Excluded {
        excluded: Excluded<'a>,
        grant_ignored: bool,
    },
    /// Rule 3, overridden by a grant.
    ExclusionOverridden {
        excluded: Excluded<'a>,
        grant: &'a ActiveGrant,
    },
    /// Rule 4.
    Granted(&'a ActiveGrant),
    /// Rule 5: "Enabled by Default".
    EnabledByDefault,
    /// Rule 5: default off and no group selected.
    NoGroupsSelected,
    /// Rule 5: the device waits for approval and only groups could grant it.
    PendingApproval,
    /// Rule 5: the group rule; a side with no group selected is ok.
    Groups { user_ok: bool, device_ok: bool },
    /// Rule 6: on through rule 5, outside the rollout.
    HeldBack(Through),
}

/// How a device held back by the rollout would have got the service.
#[derive(Clone, Copy)]
enum Through {
    EnabledByDefault,
    Groups,
}

impl Ruling<'_> {
    fn verdict(self) -> Verdict {
        let (enabled, reason) = match self {
            Ruling::UserInactive => (false, Reason::UserInactive),
            Ruling::LegacyClient { enabled } => (enabled, Reason::LegacyClient),
            Ruling::Excluded { excluded, .. } => (false, excluded.reason()),
            Ruling::ExclusionOverridden { .. } | Ruling::Granted(_) => {
                (true, Reason::TemporaryGrant)
            }
            Ruling::EnabledByDefault => (true, Reason::EnabledByDefault),
            Ruling::NoGroupsSelected => (false, Reason::NoGroupsSelected),
            Ruling::PendingApproval => (false, Reason::PendingApproval),
            Ruling::Groups {
                user_ok: true,
                device_ok: true,
            } => (true, Reason::GroupMatch),
            Ruling::Groups { user_ok: false, .. } => (false, Reason::NotInUserGroups),
            Ruling::Groups {
                user_ok: true,
                device_ok: false,
            } => (false, Reason::NotInDeviceGroups),
            Ruling::HeldBack(_) => (false, Reason::RolloutHeldBack),
        };
        Verdict { enabled, reason }
    }

    /// How a ruling of rule 5 turns the service on, if it does.
    fn through(self) -> Option<Through> {
        match self {
            Ruling::EnabledByDefault => Some(Through::EnabledByDefault),
            Ruling::Groups {
                user_ok: true,
                device_ok: true,
            } => Some(Through::Groups),
            _ => None,
        }
    }
}

/// The rule order of [`evaluate`], and the only place it is written.
fn rule<'a>(
    service: &ServiceDef,
    settings: &'a Settings,
    subject: &Subject<'a>,
    names: &'a dyn GroupNames,
) -> Ruling<'a> {
    if !subject.user_active {
        return Ruling::UserInactive;
    }
    if subject.client_version < service.min_version {
        let enabled = match service.legacy {
            LegacyBehaviour::AlwaysEnabled => true,
            LegacyBehaviour::FollowsEnabledByDefault => settings.enabled_by_default,
        };
        return Ruling::LegacyClient { enabled };
    }
    // A grant applies to this service on every device of the user, or on the
    // one device it names. Of several, one that overrides exclusions first,
    // then the one that ends last: the explanation names the best.
    let grant = subject
        .grants
        .iter()
        .filter(|g| {
            g.service_id == service.id
                && g.device_id
                    .as_deref()
                    .is_none_or(|d| d == subject.device_id)
        })
        .max_by(|a, b| {
            (a.overrides_exclusions, &a.ends_at, &b.id).cmp(&(
                b.overrides_exclusions,
                &b.ends_at,
                &a.id,
            ))
        });
    // A device waiting for approval gets no grant (fail closed): it falls
    // through to the rules below, where only "Enabled by Default" reaches it.
    let grant = grant.filter(|_| !subject.pending_approval);

    if let Some(excluded) = exclusion(settings, subject, names) {
        return match grant {
            Some(grant) if grant.overrides_exclusions => {
                Ruling::ExclusionOverridden { excluded, grant }
            }
            _ => Ruling::Excluded {
                excluded,
                grant_ignored: grant.is_some(),
            },
        };
    }
    if let Some(grant) = grant {
        return Ruling::Granted(grant);
    }

    let by_groups = by_groups(settings, subject);
    // A device outside the rollout that groups or the toggle would give the
    // service is held back. The bucket is hashed only for such a device.
    if settings.rollout_percent < FULL_ROLLOUT
        && let Some(through) = by_groups.through()
        && !in_rollout(
            rollout_bucket(subject.tenant_id, service.id, subject.device_id),
            settings.rollout_percent,
        )
    {
        return Ruling::HeldBack(through);
    }
    by_groups
}

/// "Enabled by Default", then the group rule, as before exclusions, grants
/// and rollouts existed (SPEC §3).
fn by_groups<'a>(settings: &Settings, subject: &Subject<'_>) -> Ruling<'a> {
    if settings.enabled_by_default {
        return Ruling::EnabledByDefault;
    }
    if settings.user_groups.is_empty() && settings.device_groups.is_empty() {
        return Ruling::NoGroupsSelected;
    }
    // Approval gates only what groups grant: a service on for everyone is on
    // for an unapproved device too, as it would be for any user.
    if subject.pending_approval {
        return Ruling::PendingApproval;
    }
    Ruling::Groups {
        user_ok: settings.user_groups.is_empty()
            || intersects(&settings.user_groups, subject.user_groups),
        device_ok: settings.device_groups.is_empty()
            || intersects(&settings.device_groups, subject.device_groups),
    }
}

/// Whether two sets share an element, without collecting the intersection:
/// walks the smaller and looks each up in the larger.
fn intersects<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().any(|item| large.contains(item))
}

/// `ruling` put into words: [`evaluate`]'s explanation and matched groups.
fn words(
    ruling: Ruling<'_>,
    service: &ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
    names: &dyn GroupNames,
) -> Decision {
    let Verdict { enabled, reason } = ruling.verdict();
    let name = service.display_name;
    // A group match, or the lack of one, names the selected groups it found;
    // so does a device held back from what its groups would give it.
    let (matched_user_groups, matched_device_groups): (Vec<GroupId>, Vec<DeviceGroupId>) =
        match ruling {
            Ruling::Groups { .. } | Ruling::HeldBack(Through::Groups) => (
                settings
                    .user_groups
                    .intersection(subject.user_groups)
                    .cloned()
                    .collect(),
                settings
                    .device_groups
                    .intersection(subject.device_groups)
                    .cloned()
                    .collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
    let explanation = match ruling {
        Ruling::UserInactive => format!(
            "{} is deactivated in the directory, so {name} is disabled.",
            subject.user_name
        ),
        Ruling::LegacyClient { .. } => {
            let rule = match service.legacy {
                LegacyBehaviour::AlwaysEnabled => "always runs it".to_owned(),
                LegacyBehaviour::FollowsEnabledByDefault => format!(
                    "follows only \"{}\", which is {}",
                    service.enabled_by_default_label,
                    on_off(settings.enabled_by_default)
                ),
            };
            format!(
                "Client {} is older than {}, the first version that honours group entitlement for {name}; it {rule}, so {name} is {}.",
                subject.client_version,
                service.min_version,
                enabled_word(enabled)
            )
        }
        Ruling::Excluded {
            excluded,
            grant_ignored,
        } => format!(
            "{}, so {name} is disabled{}.{}",
            excluded.fact(subject.user_name),
            if grant_ignored {
                " (a temporary grant does not override exclusions)"
            } else {
                ""
            },
            excluded.advice()
        ),
        Ruling::ExclusionOverridden { excluded, grant } => format!(
            "{}, but a temporary grant until {} overrides the exclusion, so {name} is enabled until then.",
            excluded.fact(subject.user_name),
            grant.ends_at
        ),
        Ruling::Granted(grant) => format!(
            "{} has a temporary grant of {name} until {}, so {name} is enabled until then.",
            subject.user_name, grant.ends_at
        ),
        Ruling::EnabledByDefault => format!(
            "\"{}\" is on, so {name} is enabled for every user.",
            service.enabled_by_default_label
        ),
        Ruling::NoGroupsSelected => format!(
            "\"Enabled by Default\" is off and no group is selected, so {name} is disabled for everyone."
        ),
        Ruling::PendingApproval => format!(
            "The device waits for an administrator's approval, so {name} (granted by groups) is disabled until then."
        ),
        Ruling::Groups { user_ok, device_ok } => group_explanation(
            service,
            settings,
            subject,
            names,
            (user_ok, device_ok),
            (&matched_user_groups, &matched_device_groups),
        ),
        // The group explanation the device would have had is not built: it
        // is most of the cost and nobody reads it.
        Ruling::HeldBack(through) => format!(
            "{name} is rolled out to {} % of the devices that would get it, and this device (which would get it {}) is not among them yet, so {name} is disabled.",
            settings.rollout_percent,
            match through {
                Through::EnabledByDefault => "through \"Enabled by Default\"",
                Through::Groups => "through its groups",
            }
        ),
    };
    Decision {
        enabled,
        reason,
        explanation,
        matched_user_groups,
        matched_device_groups,
    }
}

/// The explanation of the group rule: which selected groups the user and the
/// device are in, or which they are in none of.
fn group_explanation(
    service: &ServiceDef,
    settings: &Settings,
    subject: &Subject<'_>,
    names: &dyn GroupNames,
    (user_ok, device_ok): (bool, bool),
    (matched_user_groups, matched_device_groups): (&[GroupId], &[DeviceGroupId]),
) -> String {
    let name = service.display_name;
    let enabled = user_ok && device_ok;
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
    explanation
}

/// Why a subject is excluded: the first excluded group it is in, or an
/// excluded group that was deleted (whose members cannot be known).
#[derive(Clone, Copy)]
enum Excluded<'n> {
    User { group: &'n str, deleted: bool },
    Device { group: &'n str, deleted: bool },
}

impl Excluded<'_> {
    fn reason(&self) -> Reason {
        match self {
            Excluded::User { .. } => Reason::ExcludedUserGroup,
            Excluded::Device { .. } => Reason::ExcludedDeviceGroup,
        }
    }

    fn fact(&self, user_name: &str) -> String {
        match self {
            Excluded::User {
                group,
                deleted: false,
            } => format!("User {user_name} is in \"{group}\", an excluded user group"),
            Excluded::Device {
                group,
                deleted: false,
            } => format!("The device is in \"{group}\", an excluded device group"),
            Excluded::User {
                group,
                deleted: true,
            } => format!(
                "Excluded user group \"{group}\" was deleted, so who is in it cannot be known"
            ),
            Excluded::Device {
                group,
                deleted: true,
            } => format!(
                "Excluded device group \"{group}\" was deleted, so which devices are in it cannot be known"
            ),
        }
    }

    fn advice(&self) -> &'static str {
        match self {
            Excluded::User { deleted: true, .. } | Excluded::Device { deleted: true, .. } => {
                " Remove it from the exclusions to turn the service back on."
            }
            _ => "",
        }
    }
}

/// The exclusion that applies to `subject`, if any. Membership is checked
/// first (it names the group the person is in); a deleted excluded group
/// fails closed for everyone.
fn exclusion<'n>(
    settings: &'n Settings,
    subject: &Subject<'_>,
    names: &'n dyn GroupNames,
) -> Option<Excluded<'n>> {
    if settings.exclude_user_groups.is_empty() && settings.exclude_device_groups.is_empty() {
        return None;
    }
    if let Some(id) = settings
        .exclude_user_groups
        .iter()
        .find(|id| subject.user_groups.contains(*id))
    {
        return Some(Excluded::User {
            group: names.user_group(id).unwrap_or(id.as_str()),
            deleted: false,
        });
    }
    if let Some(id) = settings
        .exclude_device_groups
        .iter()
        .find(|id| subject.device_groups.contains(*id))
    {
        return Some(Excluded::Device {
            group: names.device_group(id).unwrap_or(id.as_str()),
            deleted: false,
        });
    }
    let deleted_user = settings.exclude_user_groups.iter().find_map(|id| {
        names
            .user_group(id)
            .is_none()
            .then(|| names.deleted_user_group(id))
            .flatten()
    });
    if let Some(group) = deleted_user {
        return Some(Excluded::User {
            group,
            deleted: true,
        });
    }
    let deleted_device = settings.exclude_device_groups.iter().find_map(|id| {
        names
            .device_group(id)
            .is_none()
            .then(|| names.deleted_device_group(id))
            .flatten()
    });
    deleted_device.map(|group| Excluded::Device {
        group,
        deleted: true,
    })
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
            ..Settings::default()
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
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
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
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
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
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
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
            ..Settings::default()
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
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
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
            ..Settings::default()
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
            user_id: "u1",
            device_id: "d1",
            tenant_id: "t1",
            grants: &[],
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

    /// Everything the reference model looks at.
    struct Model<'a> {
        legacy_always: Option<bool>,
        old_client: bool,
        active: bool,
        pending: bool,
        on: bool,
        selected_users: &'a BTreeSet<GroupId>,
        selected_devices: &'a BTreeSet<DeviceGroupId>,
        excluded_users: &'a BTreeSet<GroupId>,
        excluded_devices: &'a BTreeSet<DeviceGroupId>,
        /// Excluded ids that name deleted groups.
        excluded_deleted: bool,
        user_in: &'a BTreeSet<GroupId>,
        device_in: &'a BTreeSet<DeviceGroupId>,
        /// (service, device or every device, overrides exclusions)
        grants: &'a [(&'a str, Option<&'a str>, bool)],
        service: &'a str,
        device: &'a str,
        /// The device's rollout bucket and the percentage.
        bucket: u8,
        percent: u8,
    }

    /// The rules of SPEC §3 and issue 15 written as plainly as possible, to
    /// check `evaluate` against.
    fn reference(m: &Model<'_>) -> bool {
        if !m.active {
            return false;
        }
        if m.old_client {
            return m.legacy_always.unwrap_or(m.on);
        }
        let mine: Vec<bool> = m
            .grants
            .iter()
            .filter(|(service, device, _)| {
                *service == m.service && (device.is_none() || *device == Some(m.device))
            })
            .map(|(_, _, overrides)| *overrides)
            .collect();
        let has_grant = !m.pending && !mine.is_empty();
        let has_overriding_grant = !m.pending && mine.contains(&true);
        let excluded = m.excluded_deleted
            || m.excluded_users.iter().any(|g| m.user_in.contains(g))
            || m.excluded_devices.iter().any(|g| m.device_in.contains(g));
        if excluded {
            return has_overriding_grant;
        }
        if has_grant {
            return true;
        }
        let by_groups = if m.on {
            true
        } else if m.pending || (m.selected_users.is_empty() && m.selected_devices.is_empty()) {
            false
        } else {
            let user_ok = m.selected_users.is_empty()
                || m.selected_users.iter().any(|g| m.user_in.contains(g));
            let device_ok = m.selected_devices.is_empty()
                || m.selected_devices.iter().any(|g| m.device_in.contains(g));
            user_ok && device_ok
        };
        by_groups && (m.percent == 100 || m.bucket < m.percent)
    }

    /// g0..g3 exist; g4 is a deleted group kept as a tombstone.
    struct ModelNames;
    impl GroupNames for ModelNames {
        fn user_group(&self, id: &GroupId) -> Option<&str> {
            (id.as_str() != "g4").then_some("live")
        }
        fn device_group(&self, id: &DeviceGroupId) -> Option<&str> {
            (id.as_str() != "g4").then_some("live")
        }
        fn deleted_user_group(&self, id: &GroupId) -> Option<&str> {
            (id.as_str() == "g4").then_some("gone")
        }
        fn deleted_device_group(&self, id: &DeviceGroupId) -> Option<&str> {
            (id.as_str() == "g4").then_some("gone")
        }
    }

    fn group_set<T: From<String> + Ord + std::fmt::Debug>() -> impl Strategy<Value = BTreeSet<T>> {
        proptest::collection::btree_set(0u8..5, 0..4)
            .prop_map(|set| set.into_iter().map(|n| T::from(format!("g{n}"))).collect())
    }

    /// Memberships: live groups only (no one is in a deleted group).
    fn member_of<T: From<String> + Ord + std::fmt::Debug>() -> impl Strategy<Value = BTreeSet<T>> {
        proptest::collection::btree_set(0u8..4, 0..4)
            .prop_map(|set| set.into_iter().map(|n| T::from(format!("g{n}"))).collect())
    }

    /// Excluded groups: rarely any, and rarely the deleted one.
    fn excluded<T: From<String> + Ord + Clone + std::fmt::Debug + 'static>()
    -> impl Strategy<Value = BTreeSet<T>> {
        prop_oneof![
            3 => Just(BTreeSet::new()),
            2 => proptest::collection::btree_set(0u8..4, 1..3)
                .prop_map(|set| set.into_iter().map(|n| T::from(format!("g{n}"))).collect()),
            1 => group_set::<T>(),
        ]
    }

    const DEVICES: [&str; 3] = ["d1", "d2", "d3"];

    /// The grants a generated list describes: (service, device or every
    /// device, overrides exclusions), each ending a day after the last.
    fn active_grants(specs: &[(usize, Option<usize>, bool)]) -> Vec<ActiveGrant> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (s, d, o))| ActiveGrant {
                id: format!("grant-{i}"),
                service_id: crate::SERVICES[*s].id.to_owned(),
                device_id: d.map(|d| DEVICES[d].to_owned()),
                ends_at: format!("2026-12-0{}T00:00:00Z", i + 1),
                overrides_exclusions: *o,
            })
            .collect()
    }

    fn grant_list() -> impl Strategy<Value = Vec<(usize, Option<usize>, bool)>> {
        proptest::collection::vec(
            (
                0..crate::SERVICES.len(),
                proptest::option::of(0..DEVICES.len()),
                any::<bool>(),
            ),
            0..3,
        )
    }

    /// Everything `evaluate` looks at, drawn from the strategies above.
    #[derive(Debug, Clone)]
    struct Inputs {
        service_index: usize,
        version: Vec<u32>,
        on: bool,
        active: bool,
        pending: bool,
        selected_users: BTreeSet<GroupId>,
        selected_devices: BTreeSet<DeviceGroupId>,
        excluded_users: BTreeSet<GroupId>,
        excluded_devices: BTreeSet<DeviceGroupId>,
        user_in: BTreeSet<GroupId>,
        device_in: BTreeSet<DeviceGroupId>,
        grant_specs: Vec<(usize, Option<usize>, bool)>,
        device_index: usize,
        tenant: String,
        percent: u8,
    }

    fn inputs() -> impl Strategy<Value = Inputs> {
        (
            (
                0..crate::SERVICES.len(),
                proptest::collection::vec(0u32..5, 1..=4),
                any::<bool>(),
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.2),
            ),
            (
                group_set::<GroupId>(),
                group_set::<DeviceGroupId>(),
                excluded::<GroupId>(),
                excluded::<DeviceGroupId>(),
                member_of::<GroupId>(),
                member_of::<DeviceGroupId>(),
            ),
            (
                grant_list(),
                0..DEVICES.len(),
                "[a-z]{1,3}",
                prop_oneof![1 => Just(100u8), 2 => 1u8..=100],
            ),
        )
            .prop_map(
                |(
                    (service_index, version, on, active, pending),
                    (
                        selected_users,
                        selected_devices,
                        excluded_users,
                        excluded_devices,
                        user_in,
                        device_in,
                    ),
                    (grant_specs, device_index, tenant, percent),
                )| Inputs {
                    service_index,
                    version,
                    on,
                    active,
                    pending,
                    selected_users,
                    selected_devices,
                    excluded_users,
                    excluded_devices,
                    user_in,
                    device_in,
                    grant_specs,
                    device_index,
                    tenant,
                    percent,
                },
            )
    }

    impl Inputs {
        /// Calls `f` with the service, settings and subject these inputs describe.
        fn with<R>(&self, f: impl FnOnce(&ServiceDef, &Settings, &Subject<'_>) -> R) -> R {
            let text = self
                .version
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(".");
            let settings = Settings {
                enabled_by_default: self.on,
                user_groups: self.selected_users.clone(),
                device_groups: self.selected_devices.clone(),
                logout_on_enable: false,
                exclude_user_groups: self.excluded_users.clone(),
                exclude_device_groups: self.excluded_devices.clone(),
                rollout_percent: self.percent,
            };
            let grants = active_grants(&self.grant_specs);
            let subject = Subject {
                user_name: "u",
                user_active: self.active,
                user_groups: &self.user_in,
                device_groups: &self.device_in,
                client_version: v(&text),
                pending_approval: self.pending,
                user_id: "u1",
                device_id: DEVICES[self.device_index],
                tenant_id: &self.tenant,
                grants: &grants,
            };
            f(&crate::SERVICES[self.service_index], &settings, &subject)
        }
    }

    /// `decide` answers what `evaluate` answers, without the words.
    fn decide_matches_evaluate(inputs: &Inputs) -> Result<Verdict, TestCaseError> {
        inputs.with(|def, settings, subject| {
            let decision = evaluate(def, settings, subject, &ModelNames);
            let verdict = decide(def, settings, subject, &ModelNames);
            prop_assert_eq!(
                verdict,
                Verdict {
                    enabled: decision.enabled,
                    reason: decision.reason
                },
                "{}",
                decision.explanation
            );
            Ok(verdict)
        })
    }

    #[test]
    fn the_inputs_reach_every_reason() {
        // A fixed seed, so that whether every reason is reached does not
        // depend on the run; the proptest below draws fresh inputs each time.
        let config = proptest::test_runner::Config {
            cases: 4096,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        };
        let rng = proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        );
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(config, rng);
        let reached = std::cell::RefCell::new(BTreeSet::new());
        let result = runner.run(&inputs(), |inputs| {
            let verdict = decide_matches_evaluate(&inputs)?;
            reached
                .borrow_mut()
                .insert((verdict.reason, verdict.enabled));
            Ok(())
        });
        if let Err(failure) = result {
            panic!("{failure}");
        }
        let reached = reached.into_inner();
        let missed: Vec<&Reason> = Reason::ALL
            .iter()
            .filter(|r| !reached.iter().any(|(reason, _)| reason == *r))
            .collect();
        assert!(missed.is_empty(), "the inputs never reach {missed:?}");
        // A legacy client is on or off by its service's behaviour: both occur.
        assert!(reached.contains(&(Reason::LegacyClient, true)));
        assert!(reached.contains(&(Reason::LegacyClient, false)));
    }

    proptest! {
        #[test]
        fn evaluate_agrees_with_the_reference_model(
            service_index in 0..crate::SERVICES.len(),
            version in proptest::collection::vec(0u32..5, 1..=4),
            on: bool,
            active in prop::bool::weighted(0.9),
            pending in prop::bool::weighted(0.2),
            selected_users in group_set::<GroupId>(),
            selected_devices in group_set::<DeviceGroupId>(),
            excluded_users in excluded::<GroupId>(),
            excluded_devices in excluded::<DeviceGroupId>(),
            user_in in member_of::<GroupId>(),
            device_in in member_of::<DeviceGroupId>(),
            grant_specs in grant_list(),
            device_index in 0..DEVICES.len(),
            tenant in "[a-z]{1,3}",
            percent in prop_oneof![1 => Just(100u8), 2 => 1u8..=100],
        ) {
            let def = &crate::SERVICES[service_index];
            let text = version.iter().map(u32::to_string).collect::<Vec<_>>().join(".");
            let client_version = v(&text);
            let device = DEVICES[device_index];
            let settings = Settings {
                enabled_by_default: on,
                user_groups: selected_users.clone(),
                device_groups: selected_devices.clone(),
                logout_on_enable: false,
                exclude_user_groups: excluded_users.clone(),
                exclude_device_groups: excluded_devices.clone(),
                rollout_percent: percent,
            };
            let grants = active_grants(&grant_specs);
            let model_grants: Vec<(&str, Option<&str>, bool)> = grant_specs
                .iter()
                .map(|(s, d, o)| (crate::SERVICES[*s].id, d.map(|d| DEVICES[d]), *o))
                .collect();
            let subject = Subject {
                user_name: "u",
                user_active: active,
                user_groups: &user_in,
                device_groups: &device_in,
                client_version,
                pending_approval: pending,
                user_id: "u1",
                device_id: device,
                tenant_id: &tenant,
                grants: &grants,
            };
            let decision = evaluate(def, &settings, &subject, &ModelNames);
            let legacy_always = match def.legacy {
                LegacyBehaviour::AlwaysEnabled => Some(true),
                LegacyBehaviour::FollowsEnabledByDefault => None,
            };
            let deleted = GroupId("g4".into());
            let deleted_device = DeviceGroupId("g4".into());
            let expected = reference(&Model {
                legacy_always,
                old_client: client_version < def.min_version,
                active,
                pending,
                on,
                selected_users: &selected_users,
                selected_devices: &selected_devices,
                excluded_users: &excluded_users,
                excluded_devices: &excluded_devices,
                excluded_deleted: excluded_users.contains(&deleted)
                    || excluded_devices.contains(&deleted_device),
                user_in: &user_in,
                device_in: &device_in,
                grants: &model_grants,
                service: def.id,
                device,
                bucket: crate::rollout_bucket(&tenant, def.id, device),
                percent,
            });
            prop_assert_eq!(decision.enabled, expected, "{}", decision.explanation);
            prop_assert_eq!(
                decision.enabled,
                matches!(
                    decision.reason,
                    Reason::GroupMatch | Reason::EnabledByDefault | Reason::TemporaryGrant
                ) || (decision.reason == Reason::LegacyClient && decision.enabled)
            );
            prop_assert!(!decision.explanation.is_empty());
        }

        #[test]
        fn decide_agrees_with_evaluate(inputs in inputs()) {
            decide_matches_evaluate(&inputs)?;
        }

        #[test]
        fn raising_the_rollout_never_removes_a_device(
            tenant in "[a-z0-9-]{1,12}",
            devices in proptest::collection::vec("[a-z0-9-]{1,16}", 1..40),
            service_index in 0..crate::SERVICES.len(),
            on: bool,
            low in 1u8..=100,
            raise in 0u8..=99,
        ) {
            let def = &crate::SERVICES[service_index];
            let high = low.saturating_add(raise).min(100);
            let eng: BTreeSet<GroupId> = [GroupId("eng".into())].into();
            let none_d: BTreeSet<DeviceGroupId> = BTreeSet::new();
            let at = |percent| Settings {
                enabled_by_default: on,
                user_groups: if on { BTreeSet::new() } else { eng.clone() },
                rollout_percent: percent,
                ..Settings::default()
            };
            for device in &devices {
                let subject = Subject {
                    user_name: "u",
                    user_id: "u1",
                    device_id: device,
                    tenant_id: &tenant,
                    user_active: true,
                    user_groups: &eng,
                    device_groups: &none_d,
                    client_version: v("99"),
                    pending_approval: false,
                    grants: &[],
                };
                let before = evaluate(def, &at(low), &subject, &NoNames).enabled;
                let after = evaluate(def, &at(high), &subject, &NoNames).enabled;
                prop_assert!(!before || after, "{device}: on at {low} %, off at {high} %");
            }
        }
    }
}
