//! Table tests of exclusions, temporary grants and staged rollout (issue 15)
//! against "Enabled by Default", legacy clients and pending approval.

use std::collections::BTreeSet;

use crate::{
    ActiveGrant, DeviceGroupId, GroupId, GroupNames, Reason, ServiceDef, Settings, Subject,
    Verdict, evaluate, rollout_bucket, service,
};

struct Names;
impl GroupNames for Names {
    fn user_group(&self, id: &GroupId) -> Option<&str> {
        match id.as_str() {
            "g-eng" => Some("Engineering"),
            "g-contractors" => Some("Contractors"),
            _ => None,
        }
    }
    fn device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        match id.as_str() {
            "dg-laptops" => Some("Corporate laptops"),
            "dg-kiosks" => Some("Kiosks"),
            _ => None,
        }
    }
    fn deleted_user_group(&self, id: &GroupId) -> Option<&str> {
        (id.as_str() == "g-gone").then_some("Interns")
    }
    fn deleted_device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        (id.as_str() == "dg-gone").then_some("Loaners")
    }
}

#[derive(Clone, Copy, Debug)]
enum Excl {
    None,
    /// Excludes a group the user is not in.
    Other,
    /// The user is in an excluded user group (through nesting: the subject's
    /// effective groups hold it, as `GroupGraph` closes them).
    User,
    /// The device is in an excluded device group.
    Device,
    /// An excluded user group was deleted.
    DeletedUser,
    /// An excluded device group was deleted.
    DeletedDevice,
}

#[derive(Clone, Copy, Debug)]
enum Grant {
    None,
    /// Every device of the user, not overriding exclusions.
    Plain,
    /// This device only, overriding exclusions.
    Overriding,
    /// Another device of the user: does not apply here.
    OtherDevice,
    /// Another service: does not apply here.
    OtherService,
}

#[derive(Clone, Copy, Debug)]
enum Roll {
    Full,
    /// The device's bucket is below the percentage.
    In,
    /// The device's bucket is at or above it.
    Out,
}

const TENANT: &str = "acme";

/// A device whose ZPA bucket is neither 0 nor 99, so that "in" and "out"
/// percentages both exist and differ from 100.
fn device_id() -> String {
    (0..)
        .map(|i| format!("device-{i}"))
        .find(|d| (1..99).contains(&rollout_bucket(TENANT, "private_access", d)))
        .unwrap_or_default()
}

fn decide(
    excl: Excl,
    ebd: bool,
    legacy: bool,
    grant: Grant,
    roll: Roll,
    pending: bool,
) -> crate::Decision {
    with_case(
        excl,
        ebd,
        legacy,
        grant,
        roll,
        pending,
        |zpa, settings, subject| evaluate(zpa, settings, subject, &Names),
    )
}

/// Calls `f` with ZPA, the settings and the subject of one combination.
fn with_case<R>(
    excl: Excl,
    ebd: bool,
    legacy: bool,
    grant: Grant,
    roll: Roll,
    pending: bool,
    f: impl FnOnce(&ServiceDef, &Settings, &Subject<'_>) -> R,
) -> R {
    let device = device_id();
    let bucket = rollout_bucket(TENANT, "private_access", &device);
    let gid = |s: &str| GroupId(s.to_owned());
    let did = |s: &str| DeviceGroupId(s.to_owned());
    // The user is in Engineering, and Contractors is nested in it for this
    // user (effective groups hold both); the device is a corporate laptop
    // and a kiosk.
    let user_in: BTreeSet<GroupId> = [gid("g-eng"), gid("g-contractors")].into();
    let device_in: BTreeSet<DeviceGroupId> = [did("dg-laptops"), did("dg-kiosks")].into();
    let (exclude_user_groups, exclude_device_groups): (BTreeSet<GroupId>, BTreeSet<DeviceGroupId>) =
        match excl {
            Excl::None => (BTreeSet::new(), BTreeSet::new()),
            Excl::Other => ([gid("g-sales")].into(), [did("dg-phones")].into()),
            Excl::User => ([gid("g-contractors")].into(), BTreeSet::new()),
            Excl::Device => (BTreeSet::new(), [did("dg-kiosks")].into()),
            Excl::DeletedUser => ([gid("g-gone")].into(), BTreeSet::new()),
            Excl::DeletedDevice => (BTreeSet::new(), [did("dg-gone")].into()),
        };
    let settings = Settings {
        enabled_by_default: ebd,
        user_groups: if ebd {
            BTreeSet::new()
        } else {
            [gid("g-eng")].into()
        },
        exclude_user_groups,
        exclude_device_groups,
        rollout_percent: match roll {
            Roll::Full => 100,
            Roll::In => bucket + 1,
            Roll::Out => bucket,
        },
        ..Settings::default()
    };
    let one = |service_id: &str, device_id: Option<String>, overrides_exclusions| ActiveGrant {
        id: "grant-1".into(),
        service_id: service_id.into(),
        device_id,
        ends_at: "2026-12-01T18:00:00Z".into(),
        overrides_exclusions,
    };
    let grants: Vec<ActiveGrant> = match grant {
        Grant::None => vec![],
        Grant::Plain => vec![one("private_access", None, false)],
        Grant::Overriding => vec![one("private_access", Some(device.clone()), true)],
        Grant::OtherDevice => vec![one("private_access", Some("elsewhere".into()), true)],
        Grant::OtherService => vec![one("internet_access", None, true)],
    };
    let subject = Subject {
        user_name: "ana",
        user_id: "u-ana",
        device_id: &device,
        tenant_id: TENANT,
        user_active: true,
        user_groups: &user_in,
        device_groups: &device_in,
        client_version: crate::ClientVersion::parse(if legacy { "1.0" } else { "9.9" })
            .expect("version"),
        pending_approval: pending,
        grants: &grants,
    };
    let zpa = service("private_access").expect("zpa");
    f(zpa, &settings, &subject)
}

impl Excl {
    const ALL: [Excl; 6] = [
        Excl::None,
        Excl::Other,
        Excl::User,
        Excl::Device,
        Excl::DeletedUser,
        Excl::DeletedDevice,
    ];
}

impl Grant {
    const ALL: [Grant; 5] = [
        Grant::None,
        Grant::Plain,
        Grant::Overriding,
        Grant::OtherDevice,
        Grant::OtherService,
    ];
}

impl Roll {
    const ALL: [Roll; 3] = [Roll::Full, Roll::In, Roll::Out];
}

/// (exclusion, enabled by default, legacy client, grant, rollout, pending) → (on, reason)
type Row = (Excl, bool, bool, Grant, Roll, bool, (bool, Reason));

#[test]
fn every_combination_that_matters() {
    use Excl as E;
    use Grant as G;
    use Reason::*;
    use Roll as R;
    // (exclusion, enabled by default, legacy client, grant, rollout, pending) → (on, reason)
    let table: &[Row] = &[
        // Nothing new: as before.
        (
            E::None,
            true,
            false,
            G::None,
            R::Full,
            false,
            (true, EnabledByDefault),
        ),
        (
            E::None,
            false,
            false,
            G::None,
            R::Full,
            false,
            (true, GroupMatch),
        ),
        (
            E::Other,
            false,
            false,
            G::None,
            R::Full,
            false,
            (true, GroupMatch),
        ),
        (
            E::Other,
            true,
            false,
            G::None,
            R::Full,
            false,
            (true, EnabledByDefault),
        ),
        // Exclusions beat a group match and "Enabled by Default".
        (
            E::User,
            false,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::User,
            true,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::Device,
            false,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedDeviceGroup),
        ),
        (
            E::Device,
            true,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedDeviceGroup),
        ),
        // A deleted excluded group fails closed for everyone.
        (
            E::DeletedUser,
            true,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::DeletedUser,
            false,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::DeletedDevice,
            true,
            false,
            G::None,
            R::Full,
            false,
            (false, ExcludedDeviceGroup),
        ),
        // A legacy client cannot honour exclusions, grants or rollout (ZPA: always on).
        (
            E::User,
            false,
            true,
            G::None,
            R::Full,
            false,
            (true, LegacyClient),
        ),
        (
            E::DeletedUser,
            true,
            true,
            G::None,
            R::Out,
            false,
            (true, LegacyClient),
        ),
        (
            E::None,
            false,
            true,
            G::Plain,
            R::Out,
            false,
            (true, LegacyClient),
        ),
        // A grant gives the service, and is not subject to the rollout.
        (
            E::None,
            false,
            false,
            G::Plain,
            R::Full,
            false,
            (true, TemporaryGrant),
        ),
        (
            E::None,
            false,
            false,
            G::Plain,
            R::Out,
            false,
            (true, TemporaryGrant),
        ),
        (
            E::None,
            true,
            false,
            G::Plain,
            R::Out,
            false,
            (true, TemporaryGrant),
        ),
        // Exclusions win over a grant unless the grant overrides them.
        (
            E::User,
            false,
            false,
            G::Plain,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::User,
            false,
            false,
            G::Overriding,
            R::Full,
            false,
            (true, TemporaryGrant),
        ),
        (
            E::Device,
            true,
            false,
            G::Overriding,
            R::Out,
            false,
            (true, TemporaryGrant),
        ),
        (
            E::DeletedDevice,
            false,
            false,
            G::Overriding,
            R::Full,
            false,
            (true, TemporaryGrant),
        ),
        // A grant for another device or service does not apply.
        (
            E::User,
            false,
            false,
            G::OtherDevice,
            R::Full,
            false,
            (false, ExcludedUserGroup),
        ),
        (
            E::None,
            false,
            false,
            G::OtherDevice,
            R::Out,
            false,
            (false, RolloutHeldBack),
        ),
        (
            E::None,
            false,
            false,
            G::OtherService,
            R::Full,
            false,
            (true, GroupMatch),
        ),
        // Rollout: in or out by the device's bucket, for EBD and group matches.
        (
            E::None,
            false,
            false,
            G::None,
            R::In,
            false,
            (true, GroupMatch),
        ),
        (
            E::None,
            false,
            false,
            G::None,
            R::Out,
            false,
            (false, RolloutHeldBack),
        ),
        (
            E::None,
            true,
            false,
            G::None,
            R::In,
            false,
            (true, EnabledByDefault),
        ),
        (
            E::None,
            true,
            false,
            G::None,
            R::Out,
            false,
            (false, RolloutHeldBack),
        ),
        (
            E::User,
            true,
            false,
            G::None,
            R::In,
            false,
            (false, ExcludedUserGroup),
        ),
        // Pending approval: no group service and no grant (fail closed); EBD still on.
        (
            E::None,
            false,
            false,
            G::None,
            R::Full,
            true,
            (false, PendingApproval),
        ),
        (
            E::None,
            false,
            false,
            G::Plain,
            R::Full,
            true,
            (false, PendingApproval),
        ),
        (
            E::User,
            false,
            false,
            G::Overriding,
            R::Full,
            true,
            (false, ExcludedUserGroup),
        ),
        (
            E::None,
            true,
            false,
            G::Plain,
            R::Full,
            true,
            (true, EnabledByDefault),
        ),
        (
            E::None,
            true,
            false,
            G::None,
            R::Out,
            true,
            (false, RolloutHeldBack),
        ),
        (
            E::User,
            true,
            false,
            G::None,
            R::Full,
            true,
            (false, ExcludedUserGroup),
        ),
        (
            E::None,
            false,
            true,
            G::None,
            R::Full,
            true,
            (true, LegacyClient),
        ),
    ];
    for &(excl, ebd, legacy, grant, roll, pending, expected) in table {
        let decision = decide(excl, ebd, legacy, grant, roll, pending);
        assert_eq!(
            (decision.enabled, decision.reason),
            expected,
            "{excl:?} ebd={ebd} legacy={legacy} {grant:?} {roll:?} pending={pending}: {}",
            decision.explanation
        );
    }
}

#[test]
fn explanations_name_the_group_the_grant_and_the_percentage() {
    let d = decide(Excl::User, true, false, Grant::None, Roll::Full, false);
    assert_eq!(
        d.explanation,
        "User ana is in \"Contractors\", an excluded user group, so Private Applications is disabled."
    );
    let d = decide(Excl::Device, false, false, Grant::None, Roll::Full, false);
    assert!(d.explanation.contains("\"Kiosks\""), "{}", d.explanation);
    let d = decide(
        Excl::DeletedUser,
        true,
        false,
        Grant::None,
        Roll::Full,
        false,
    );
    assert_eq!(
        d.explanation,
        "Excluded user group \"Interns\" was deleted, so who is in it cannot be known, so Private Applications is disabled. Remove it from the exclusions to turn the service back on."
    );
    let d = decide(
        Excl::DeletedDevice,
        false,
        false,
        Grant::None,
        Roll::Full,
        false,
    );
    assert!(
        d.explanation.contains("\"Loaners\" was deleted") && d.explanation.contains("Remove it"),
        "{}",
        d.explanation
    );
    let d = decide(Excl::None, false, false, Grant::Plain, Roll::Full, false);
    assert_eq!(
        d.explanation,
        "ana has a temporary grant of Private Applications until 2026-12-01T18:00:00Z, so Private Applications is enabled until then."
    );
    let d = decide(
        Excl::User,
        false,
        false,
        Grant::Overriding,
        Roll::Full,
        false,
    );
    assert!(
        d.explanation.contains("Contractors")
            && d.explanation.contains("overrides the exclusion")
            && d.explanation.contains("2026-12-01T18:00:00Z"),
        "{}",
        d.explanation
    );
    let d = decide(Excl::User, false, false, Grant::Plain, Roll::Full, false);
    assert!(
        d.explanation.contains("does not override exclusions"),
        "{}",
        d.explanation
    );
    let d = decide(Excl::None, false, false, Grant::None, Roll::Out, false);
    let percent = rollout_bucket(TENANT, "private_access", &device_id());
    assert!(
        d.explanation
            .contains(&format!("rolled out to {percent} %"))
            && d.explanation.contains("through its groups"),
        "{}",
        d.explanation
    );
    // A held-back group match still says which groups matched.
    assert_eq!(d.matched_user_groups, vec![GroupId("g-eng".into())]);
    for reason in [
        Reason::ExcludedUserGroup,
        Reason::ExcludedDeviceGroup,
        Reason::TemporaryGrant,
        Reason::RolloutHeldBack,
    ] {
        assert!(Reason::ALL.contains(&reason));
    }
    assert_eq!(Reason::ExcludedUserGroup.code(), "excluded_user_group");
    assert_eq!(Reason::ExcludedDeviceGroup.code(), "excluded_device_group");
    assert_eq!(Reason::TemporaryGrant.code(), "temporary_grant");
    assert_eq!(Reason::RolloutHeldBack.code(), "rollout_held_back");
}

#[test]
fn of_several_grants_an_overriding_one_and_then_the_latest_is_named() {
    let none_g: BTreeSet<GroupId> = BTreeSet::new();
    let none_d: BTreeSet<DeviceGroupId> = BTreeSet::new();
    let grant = |id: &str, ends: &str| ActiveGrant {
        id: id.into(),
        service_id: "private_access".into(),
        device_id: None,
        ends_at: ends.into(),
        overrides_exclusions: false,
    };
    let grants = [
        grant("a", "2026-12-01T10:00:00Z"),
        grant("b", "2026-12-03T10:00:00Z"),
        grant("c", "2026-12-02T10:00:00Z"),
    ];
    let subject = Subject {
        user_name: "ana",
        user_id: "u-ana",
        device_id: "d",
        tenant_id: TENANT,
        user_active: true,
        user_groups: &none_g,
        device_groups: &none_d,
        client_version: crate::ClientVersion::parse("9.9").expect("version"),
        pending_approval: false,
        grants: &grants,
    };
    let zpa = service("private_access").expect("zpa");
    let d = evaluate(zpa, &Settings::default(), &subject, &Names);
    assert_eq!(d.reason, Reason::TemporaryGrant);
    assert!(d.explanation.contains("2026-12-03"), "{}", d.explanation);
    // An inactive user gets nothing, grant or not.
    let inactive = Subject {
        user_active: false,
        ..subject
    };
    let d = evaluate(zpa, &Settings::default(), &inactive, &Names);
    assert_eq!((d.enabled, d.reason), (false, Reason::UserInactive));
}

#[test]
fn decide_agrees_with_evaluate_in_every_combination() {
    for excl in Excl::ALL {
        for grant in Grant::ALL {
            for roll in Roll::ALL {
                for (ebd, legacy, pending) in (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0)) {
                    with_case(
                        excl,
                        ebd,
                        legacy,
                        grant,
                        roll,
                        pending,
                        |zpa, settings, subject| {
                            let decision = evaluate(zpa, settings, subject, &Names);
                            assert_eq!(
                                crate::decide(zpa, settings, subject, &Names),
                                Verdict {
                                    enabled: decision.enabled,
                                    reason: decision.reason
                                },
                                "{excl:?} ebd={ebd} legacy={legacy} {grant:?} {roll:?} pending={pending}: {}",
                                decision.explanation
                            );
                        },
                    );
                }
            }
        }
    }
}
