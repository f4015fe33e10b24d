//! Devices as they report themselves, and device groups as rules over those reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::ClientVersion;

/// The id of a device group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceGroupId(pub String);

impl DeviceGroupId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a device report or a device-group rule is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// An operating system entitle does not know.
    #[error("unknown os {0:?}; expected one of windows, macos, linux, ios, android")]
    UnknownOs(String),
    /// An ownership other than corporate or personal.
    #[error("unknown ownership {0:?}; expected corporate or personal")]
    UnknownOwnership(String),
    /// A posture requirement without a key.
    #[error("a posture requirement needs a non-empty key")]
    EmptyPostureKey,
    /// A `gte` requirement whose value is not a version.
    #[error(
        "posture requirement {key:?} uses gte, which needs a version such as \"14.5\", not {value:?}"
    )]
    GteNeedsVersion {
        /// The posture key.
        key: String,
        /// The value given.
        value: String,
    },
    /// An unknown comparison operator.
    #[error("unknown posture operator {0:?}; expected eq or gte")]
    UnknownOperator(String),
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $error:ident, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $(#[doc = $text] $variant),+ }

        impl $name {
            /// Every value, in display order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the wire name (case-insensitive).
            pub fn parse(input: &str) -> Result<Self, RuleError> {
                let lower = input.trim().to_ascii_lowercase();
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == lower)
                    .ok_or_else(|| RuleError::$error(input.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A device's operating system.
    Os, UnknownOs, {
        Windows => "windows",
        Macos => "macos",
        Linux => "linux",
        Ios => "ios",
        Android => "android",
    }
);

text_enum!(
    /// Who owns a device.
    Ownership, UnknownOwnership, {
        Corporate => "corporate",
        Personal => "personal",
    }
);

/// One posture fact's value, as reported by a device or required by a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum PostureValue {
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// Any text, including versions such as `"14.5"`.
    Text(String),
}

impl PostureValue {
    /// Text used to compare values of different kinds (`true` equals `"true"`).
    fn canonical(&self) -> String {
        match self {
            PostureValue::Bool(b) => b.to_string(),
            PostureValue::Number(n) => n.to_string(),
            PostureValue::Text(t) => t.trim().to_ascii_lowercase(),
        }
    }

    fn as_version(&self) -> Option<ClientVersion> {
        match self {
            PostureValue::Bool(_) => None,
            PostureValue::Number(n) => ClientVersion::parse(&n.to_string()).ok(),
            PostureValue::Text(t) => ClientVersion::parse(t).ok(),
        }
    }
}

impl fmt::Display for PostureValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostureValue::Bool(b) => write!(f, "{b}"),
            PostureValue::Number(n) => write!(f, "{n}"),
            PostureValue::Text(t) => f.write_str(t),
        }
    }
}

/// What a device reports about itself at enrollment and on every sync.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    /// The device's host name.
    pub hostname: String,
    /// Its operating system.
    pub os: Os,
    /// The version of the client it runs.
    pub client_version: ClientVersion,
    /// Corporate or personal.
    pub ownership: Ownership,
    /// Posture facts such as `disk_encrypted` or `os_version`.
    pub posture: BTreeMap<String, PostureValue>,
}

/// How a posture requirement compares the device's fact with the rule's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostureOp {
    /// Same value (case-insensitive for text, `true` equals `"true"`).
    Eq,
    /// Version at least the rule's value.
    Gte,
}

impl PostureOp {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PostureOp::Eq => "eq",
            PostureOp::Gte => "gte",
        }
    }

    /// Parses `eq` or `gte`.
    pub fn parse(input: &str) -> Result<Self, RuleError> {
        match input.trim().to_ascii_lowercase().as_str() {
            "eq" => Ok(PostureOp::Eq),
            "gte" => Ok(PostureOp::Gte),
            _ => Err(RuleError::UnknownOperator(input.to_owned())),
        }
    }
}

/// One required posture fact of a device-group rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PostureRequirement {
    key: String,
    op: PostureOp,
    value: PostureValue,
    version: Option<ClientVersion>,
}

impl PostureRequirement {
    /// A requirement; `gte` needs a value that is a version.
    pub fn new(key: &str, op: PostureOp, value: PostureValue) -> Result<Self, RuleError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(RuleError::EmptyPostureKey);
        }
        let version = value.as_version();
        if op == PostureOp::Gte && version.is_none() {
            return Err(RuleError::GteNeedsVersion {
                key: key.to_owned(),
                value: value.to_string(),
            });
        }
        Ok(Self {
            key: key.to_owned(),
            op,
            value,
            version,
        })
    }

    /// The posture key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The comparison.
    pub fn op(&self) -> PostureOp {
        self.op
    }
    /// The required value.
    pub fn value(&self) -> &PostureValue {
        &self.value
    }

    fn is_met_by(&self, posture: &BTreeMap<String, PostureValue>) -> bool {
        let Some(fact) = posture.get(&self.key) else {
            return false;
        };
        match self.op {
            PostureOp::Eq => fact.canonical() == self.value.canonical(),
            PostureOp::Gte => match (fact.as_version(), self.version) {
                (Some(have), Some(need)) => have >= need,
                _ => false,
            },
        }
    }
}

/// A named rule over device reports; a device belongs to every group whose rule it meets.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceGroup {
    /// Its id.
    pub id: DeviceGroupId,
    /// Its unique name within the tenant.
    pub name: String,
    /// Allowed operating systems; empty means any.
    pub os: BTreeSet<Os>,
    /// Allowed ownerships; empty means any.
    pub ownership: BTreeSet<Ownership>,
    /// Facts that must all hold.
    pub posture: Vec<PostureRequirement>,
}

impl DeviceGroup {
    /// Whether a device with this report belongs to the group.
    pub fn matches(&self, report: &DeviceReport) -> bool {
        (self.os.is_empty() || self.os.contains(&report.os))
            && (self.ownership.is_empty() || self.ownership.contains(&report.ownership))
            && self
                .posture
                .iter()
                .all(|req| req.is_met_by(&report.posture))
    }
}

/// The ids of every group in `groups` whose rule the device meets.
pub fn effective_device_groups<'a>(
    groups: impl IntoIterator<Item = &'a DeviceGroup>,
    report: &DeviceReport,
) -> BTreeSet<DeviceGroupId> {
    groups
        .into_iter()
        .filter(|group| group.matches(report))
        .map(|group| group.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(os: Os, ownership: Ownership, posture: &[(&str, PostureValue)]) -> DeviceReport {
        DeviceReport {
            hostname: "host".into(),
            os,
            client_version: ClientVersion::new([4, 0, 0, 0], 2),
            ownership,
            posture: posture
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn group(os: &[Os], ownership: &[Ownership], posture: Vec<PostureRequirement>) -> DeviceGroup {
        DeviceGroup {
            id: DeviceGroupId("g".into()),
            name: "g".into(),
            os: os.iter().copied().collect(),
            ownership: ownership.iter().copied().collect(),
            posture,
        }
    }

    fn req(key: &str, op: PostureOp, value: PostureValue) -> PostureRequirement {
        PostureRequirement::new(key, op, value).expect("valid requirement")
    }

    fn text(s: &str) -> PostureValue {
        PostureValue::Text(s.to_owned())
    }

    #[test]
    fn rules_match_per_the_spec() {
        use Os::*;
        use Ownership::*;
        use PostureValue::Bool;
        let encrypted_mac = report(
            Macos,
            Corporate,
            &[("disk_encrypted", Bool(true)), ("os_version", text("14.5"))],
        );
        let personal_phone = report(Ios, Personal, &[("os_version", text("17.1"))]);
        let cases: Vec<(DeviceGroup, &DeviceReport, bool)> = vec![
            (group(&[], &[], vec![]), &encrypted_mac, true),
            (group(&[Macos, Windows], &[], vec![]), &encrypted_mac, true),
            (group(&[Windows], &[], vec![]), &encrypted_mac, false),
            (group(&[], &[Corporate], vec![]), &personal_phone, false),
            (group(&[], &[Personal], vec![]), &personal_phone, true),
            (
                group(
                    &[],
                    &[],
                    vec![req("disk_encrypted", PostureOp::Eq, Bool(true))],
                ),
                &encrypted_mac,
                true,
            ),
            (
                group(
                    &[],
                    &[],
                    vec![req("disk_encrypted", PostureOp::Eq, text("TRUE"))],
                ),
                &encrypted_mac,
                true,
            ),
            (
                group(
                    &[],
                    &[],
                    vec![req("disk_encrypted", PostureOp::Eq, Bool(true))],
                ),
                &personal_phone,
                false,
            ),
            (
                group(
                    &[],
                    &[],
                    vec![req("os_version", PostureOp::Gte, text("14.5"))],
                ),
                &encrypted_mac,
                true,
            ),
            (
                group(
                    &[],
                    &[],
                    vec![req("os_version", PostureOp::Gte, text("14.5.1"))],
                ),
                &encrypted_mac,
                false,
            ),
            (
                group(
                    &[],
                    &[],
                    vec![req("os_version", PostureOp::Gte, text("14"))],
                ),
                &personal_phone,
                true,
            ),
            (
                group(
                    &[Macos],
                    &[Corporate],
                    vec![
                        req("disk_encrypted", PostureOp::Eq, Bool(true)),
                        req("os_version", PostureOp::Gte, PostureValue::Number(14.0)),
                    ],
                ),
                &encrypted_mac,
                true,
            ),
            (
                group(
                    &[Macos],
                    &[Personal],
                    vec![req("disk_encrypted", PostureOp::Eq, Bool(true))],
                ),
                &encrypted_mac,
                false,
            ),
        ];
        for (index, (group, report, expected)) in cases.iter().enumerate() {
            assert_eq!(
                group.matches(report),
                *expected,
                "case {index}: {group:?} vs {report:?}"
            );
        }
    }

    #[test]
    fn gte_on_a_non_version_fact_does_not_match() {
        let device = report(
            Os::Linux,
            Ownership::Corporate,
            &[("os_version", text("rolling"))],
        );
        let rule = group(&[], &[], vec![req("os_version", PostureOp::Gte, text("1"))]);
        assert!(!rule.matches(&device));
    }

    #[test]
    fn invalid_rules_are_refused() {
        assert_eq!(
            PostureRequirement::new(" ", PostureOp::Eq, PostureValue::Bool(true)),
            Err(RuleError::EmptyPostureKey)
        );
        assert!(matches!(
            PostureRequirement::new("os_version", PostureOp::Gte, text("latest")),
            Err(RuleError::GteNeedsVersion { .. })
        ));
        assert_eq!(Os::parse("MacOS"), Ok(Os::Macos));
        assert!(Os::parse("beos").is_err());
        assert!(Ownership::parse("borrowed").is_err());
        assert!(PostureOp::parse("lt").is_err());
    }

    #[test]
    fn effective_groups_lists_every_matching_group() {
        let device = report(Os::Windows, Ownership::Corporate, &[]);
        let mut any = group(&[], &[], vec![]);
        any.id = DeviceGroupId("any".into());
        let mut windows = group(&[Os::Windows], &[], vec![]);
        windows.id = DeviceGroupId("windows".into());
        let mut phones = group(&[Os::Ios, Os::Android], &[], vec![]);
        phones.id = DeviceGroupId("phones".into());
        let got = effective_device_groups([&any, &windows, &phones], &device);
        let ids: Vec<&str> = got.iter().map(DeviceGroupId::as_str).collect();
        assert_eq!(ids, vec!["any", "windows"]);
    }
}
