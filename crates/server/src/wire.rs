//! The JSON shapes of the API (SPEC §10), separate from the core types, and the
//! conversions between them. Parsing at this edge turns strings into core types
//! once, with a clear 400 or 422 when they are not valid.

use std::collections::BTreeMap;

use entitle_core::{
    ClientVersion, Decision, DeviceGroup, DeviceGroupId, DeviceReport, GroupId, Impact, ImpactSide,
    Os, Ownership, PostureOp, PostureRequirement, PostureValue, Settings,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use entitle_store::{Applied, RunState, ServiceState};

use crate::error::ApiError;

/// The body of every error answer (SPEC §10): `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorJson {
    /// What went wrong.
    pub error: ErrorDetailJson,
}

/// The inside of an error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetailJson {
    /// A stable, machine-readable code such as `duplicate` or `malformed_json`.
    pub code: String,
    /// What is wrong and how to fix it, for a person.
    pub message: String,
    /// The request field the error concerns, when it is one field (e.g.
    /// `name`, `posture.0.value`), so that a form can show it beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A posture fact's value as the document describes it. Reports and rules
/// carry `serde_json::Value` so that a wrong type gets the API's own 400/422
/// message rather than serde's; this type only names the three accepted shapes
/// (never null, an array or an object) for the OpenAPI document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PostureFactJson {
    /// A boolean fact, e.g. `disk_encrypted: true`.
    Bool(bool),
    /// A numeric fact, e.g. `os_build: 22631`.
    Number(f64),
    /// A text fact, e.g. `edr: "running"`.
    Text(String),
}

/// Who made a change: a kind and id no caller can choose, and a display name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PrincipalJson {
    /// `api_token`, `account`, `device`, `directory`, `system`, `anonymous` or
    /// `unverified` (recorded before principals existed).
    pub kind: &'static str,
    /// The token's, account's or device's id; empty for the directory and the system.
    pub id: String,
    /// Its display name when it acted.
    pub name: String,
}

impl From<&entitle_store::Actor> for PrincipalJson {
    fn from(actor: &entitle_store::Actor) -> Self {
        PrincipalJson {
            kind: actor.kind.as_str(),
            id: actor.id.clone(),
            name: actor.name.clone(),
        }
    }
}

/// Longest name, in characters: display names, user names, device-group names,
/// SCIM user names and group names.
pub const MAX_NAME: usize = 256;
/// Longest host name (RFC 1035's limit for a full domain name).
pub const MAX_HOSTNAME: usize = 253;
/// Most posture facts in one device report.
pub const MAX_POSTURE_FACTS: usize = 64;
/// Most posture requirements in one device-group rule.
pub const MAX_POSTURE_RULES: usize = 64;
/// Longest posture key, in characters.
pub const MAX_POSTURE_KEY: usize = 128;
/// Longest posture text value, in bytes.
pub const MAX_POSTURE_VALUE: usize = 1024;

/// A single-line name: trimmed, 1 to `max` characters, and one that cannot
/// pass for another ([`entitle_core::name_refusal`]).
pub fn single_line<'a>(field: &str, value: &'a str, max: usize) -> Result<&'a str, String> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err(format!("{field} must be 1 to {max} characters"));
    }
    match entitle_core::name_refusal(value) {
        Some(refusal) => Err(format!("{field} {refusal}")),
        None => Ok(value),
    }
}

/// Checks a posture key and value against the limits.
fn check_posture(key: &str, value: &Value) -> Result<(), String> {
    single_line("a posture key", key, MAX_POSTURE_KEY)?;
    if let Value::String(text) = value
        && (text.len() > MAX_POSTURE_VALUE || !text.chars().all(entitle_core::is_name_char))
    {
        return Err(format!(
            "posture value of {key:?} must be at most {MAX_POSTURE_VALUE} bytes without control characters or bidirectional overrides"
        ));
    }
    Ok(())
}

/// Formats a time as RFC 3339.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// SETTINGS: one service's entitlement settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingsJson {
    /// On for every user; group lists cannot change while it is on.
    pub enabled_by_default: bool,
    /// Directory group ids.
    #[serde(default, deserialize_with = "group_ids")]
    pub user_groups: Vec<String>,
    /// Device group ids.
    #[serde(default, deserialize_with = "group_ids")]
    pub device_groups: Vec<String>,
    /// Log the user out when the service becomes entitled.
    #[serde(default)]
    pub logout_on_enable: bool,
    /// Directory group ids whose members never get the service through groups
    /// or "Enabled by Default" (nested membership applies); may change while
    /// "Enabled by Default" is on.
    #[serde(default, deserialize_with = "group_ids")]
    pub exclude_user_groups: Vec<String>,
    /// Device group ids whose devices never get the service through groups or
    /// "Enabled by Default".
    #[serde(default, deserialize_with = "group_ids")]
    pub exclude_device_groups: Vec<String>,
    /// Staged rollout: the percentage (1–100) of the devices that would get the
    /// service through groups or "Enabled by Default" that do get it, chosen by
    /// a stable hash of tenant, service and device, so that raising it only
    /// adds devices. Default 100.
    #[serde(default = "full_rollout")]
    #[schema(minimum = 1, maximum = 100, default = 100)]
    pub rollout_percent: u16,
}

/// The most group ids one list of a body may name: each costs a lookup while
/// the tenant's writes wait.
pub const MAX_GROUP_IDS: usize = 1_000;

/// Reads a list of group ids, refusing it once it names more than
/// [`MAX_GROUP_IDS`], before reading the rest.
pub fn group_ids<'de, D: serde::Deserializer<'de>>(input: D) -> Result<Vec<String>, D::Error> {
    struct Ids;
    impl<'de> serde::de::Visitor<'de> for Ids {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {MAX_GROUP_IDS} group ids")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut ids = Vec::new();
            while let Some(id) = seq.next_element::<String>()? {
                if ids.len() == MAX_GROUP_IDS {
                    return Err(serde::de::Error::custom(format!(
                        "a list may name at most {MAX_GROUP_IDS} groups"
                    )));
                }
                ids.push(id);
            }
            Ok(ids)
        }
    }
    input.deserialize_seq(Ids)
}

fn full_rollout() -> u16 {
    u16::from(entitle_core::FULL_ROLLOUT)
}

impl From<&Settings> for SettingsJson {
    fn from(settings: &Settings) -> Self {
        Self {
            enabled_by_default: settings.enabled_by_default,
            user_groups: settings.user_groups.iter().map(|g| g.0.clone()).collect(),
            device_groups: settings.device_groups.iter().map(|g| g.0.clone()).collect(),
            logout_on_enable: settings.logout_on_enable,
            exclude_user_groups: settings
                .exclude_user_groups
                .iter()
                .map(|g| g.0.clone())
                .collect(),
            exclude_device_groups: settings
                .exclude_device_groups
                .iter()
                .map(|g| g.0.clone())
                .collect(),
            rollout_percent: u16::from(settings.rollout_percent),
        }
    }
}

impl From<SettingsJson> for Settings {
    fn from(json: SettingsJson) -> Self {
        Self {
            enabled_by_default: json.enabled_by_default,
            user_groups: json.user_groups.into_iter().map(GroupId).collect(),
            device_groups: json.device_groups.into_iter().map(DeviceGroupId).collect(),
            logout_on_enable: json.logout_on_enable,
            exclude_user_groups: json.exclude_user_groups.into_iter().map(GroupId).collect(),
            exclude_device_groups: json
                .exclude_device_groups
                .into_iter()
                .map(DeviceGroupId)
                .collect(),
            // Out of u8's range is out of 1..=100 too: 0 makes `validate_save`
            // refuse it (422) instead of wrapping to an accepted value.
            rollout_percent: u8::try_from(json.rollout_percent).unwrap_or(0),
        }
    }
}

/// REPORT: what a device says about itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReportJson {
    /// Host name.
    pub hostname: String,
    /// windows, macos, linux, ios or android.
    pub os: String,
    /// One to four numeric parts, e.g. 3.9.0.221.
    pub client_version: String,
    /// corporate or personal.
    pub ownership: String,
    /// Posture facts: booleans, numbers or strings.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, PostureFactJson>)]
    pub posture: BTreeMap<String, Value>,
    /// What the agent applied: sent with syncs by agents that report it,
    /// ignored in an enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<AppliedReportJson>,
}

/// Longest output of a failed service's hook, in bytes.
pub const MAX_APPLIED_OUTPUT: usize = 1024;
/// Most lines of a failed service's hook output.
pub const MAX_APPLIED_OUTPUT_LINES: usize = 32;

/// What an agent applied: the config version of the policy it acts on and
/// each service's state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliedReportJson {
    /// The config version of the policy the agent applied (at most the
    /// tenant's current one; a greater one is ignored).
    #[schema(minimum = 0)]
    pub config_version: i64,
    /// Each service's state, by service id (known services only).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceStateJson>,
}

/// One service's state on a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceStateJson {
    /// Whether it runs, and if not, why.
    pub state: RunStateJson,
    /// The exit status of the failed start (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i64>,
    /// The last lines of the failed hook's output (`failed` only; at most
    /// 1 KiB and 32 lines, no control characters but newline and tab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 1024)]
    pub output: Option<String>,
}

/// A service's state on a device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStateJson {
    /// Running.
    Running,
    /// Stopped (not entitled).
    Stopped,
    /// Entitled, waiting for the next login.
    PendingLogin,
    /// Entitled, waiting for the user to re-authenticate.
    PendingReauth,
    /// Its start failed.
    Failed,
}

impl From<RunStateJson> for RunState {
    fn from(state: RunStateJson) -> Self {
        match state {
            RunStateJson::Running => RunState::Running,
            RunStateJson::Stopped => RunState::Stopped,
            RunStateJson::PendingLogin => RunState::PendingLogin,
            RunStateJson::PendingReauth => RunState::PendingReauth,
            RunStateJson::Failed => RunState::Failed,
        }
    }
}

impl From<RunState> for RunStateJson {
    fn from(state: RunState) -> Self {
        match state {
            RunState::Running => RunStateJson::Running,
            RunState::Stopped => RunStateJson::Stopped,
            RunState::PendingLogin => RunStateJson::PendingLogin,
            RunState::PendingReauth => RunStateJson::PendingReauth,
            RunState::Failed => RunStateJson::Failed,
        }
    }
}

/// An `applied` report, parsed: the version and each known service's state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedReport {
    /// The config version the agent applied.
    pub config_version: i64,
    /// Each service's state, by service id.
    pub services: BTreeMap<String, ServiceState>,
}

impl AppliedReportJson {
    /// Parses the report; every problem is a 400 that names its field.
    pub fn parse(&self) -> Result<AppliedReport, ApiError> {
        let bad = |field: String, message: String| {
            ApiError::bad_request("invalid_applied", message).with_field(field)
        };
        if self.config_version < 0 {
            return Err(bad(
                "applied.config_version".to_owned(),
                "applied.config_version must be 0 or more".to_owned(),
            ));
        }
        let mut services = BTreeMap::new();
        for (id, reported) in &self.services {
            let field = format!("applied.services.{id}");
            let service =
                entitle_core::service(id).map_err(|e| bad(field.clone(), e.to_string()))?;
            let failed = reported.state == RunStateJson::Failed;
            if !failed && (reported.exit_status.is_some() || reported.output.is_some()) {
                return Err(bad(
                    field,
                    format!("{id}: exit_status and output are only for a failed service"),
                ));
            }
            if let Some(output) = &reported.output {
                check_output(output)
                    .map_err(|m| bad(format!("{field}.output"), format!("{id}: {m}")))?;
            }
            services.insert(
                service.id.to_owned(),
                ServiceState {
                    state: reported.state.into(),
                    exit_status: reported.exit_status,
                    output: reported.output.clone(),
                },
            );
        }
        Ok(AppliedReport {
            config_version: self.config_version,
            services,
        })
    }
}

/// A failed hook's output: bounded in bytes and lines, and no control
/// character but newline and tab (a carriage return could hide a line).
fn check_output(output: &str) -> Result<(), String> {
    if output.len() > MAX_APPLIED_OUTPUT {
        return Err(format!("output must be at most {MAX_APPLIED_OUTPUT} bytes"));
    }
    if output.lines().count() > MAX_APPLIED_OUTPUT_LINES {
        return Err(format!(
            "output must be at most {MAX_APPLIED_OUTPUT_LINES} lines"
        ));
    }
    if output
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(
            "output may not contain control characters other than newline and tab".to_owned(),
        );
    }
    Ok(())
}

/// APPLIED: what a device's agent last reported it applied.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppliedJson {
    /// The config version of the policy it applied.
    pub config_version: i64,
    /// When the server first heard of that version from it (RFC 3339).
    pub applied_at: String,
    /// Milliseconds from the save of that version to `applied_at`, when the
    /// history keeps the save (version 0, the defaults, has none).
    pub after_save_ms: Option<i64>,
    /// Whether that is the tenant's current config version.
    pub current: bool,
    /// Each reported service's state, by service id.
    pub services: BTreeMap<String, ServiceStateJson>,
    /// One line a person can read, e.g. "policy of config version 12 applied
    /// 0.8 s after the save; Private Applications failed to start (exit 3)".
    pub summary: String,
}

/// A device's applied state as JSON, against the tenant's current version.
pub fn applied_json(applied: &Applied, current_version: i64) -> AppliedJson {
    let after_save_ms = applied
        .saved_at
        .map(|saved| i64::try_from((applied.at - saved).whole_milliseconds()).unwrap_or(i64::MAX));
    AppliedJson {
        summary: applied_summary(applied, after_save_ms, current_version),
        config_version: applied.config_version,
        applied_at: rfc3339(applied.at),
        after_save_ms,
        current: applied.config_version >= current_version,
        services: applied
            .services
            .iter()
            .map(|(id, s)| {
                (
                    id.clone(),
                    ServiceStateJson {
                        state: s.state.into(),
                        exit_status: s.exit_status,
                        output: s.output.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// The sentence of [`AppliedJson::summary`], the one the CLI and the portal show.
fn applied_summary(applied: &Applied, after_save_ms: Option<i64>, current_version: i64) -> String {
    let mut text = format!(
        "policy of config version {} applied",
        applied.config_version
    );
    if let Some(ms) = after_save_ms {
        text.push_str(&format!(" {} after the save", duration_text(ms.max(0))));
    }
    if applied.config_version < current_version {
        text.push_str(&format!(
            " (the current version, {current_version}, is not applied yet)"
        ));
    }
    for (id, service) in &applied.services {
        let name = entitle_core::service(id).map_or(id.as_str(), |s| s.display_name);
        match service.state {
            RunState::Failed => {
                text.push_str(&format!("; {name} failed to start"));
                if let Some(status) = service.exit_status {
                    text.push_str(&format!(" (exit {status})"));
                }
            }
            RunState::PendingLogin => {
                text.push_str(&format!("; {name} waits for the next login"));
            }
            RunState::PendingReauth => {
                text.push_str(&format!("; {name} waits for the user to re-authenticate"));
            }
            RunState::Running | RunState::Stopped => {}
        }
    }
    text
}

/// A duration for a person: tenths of a second below 10 s, then seconds,
/// minutes, hours and days.
fn duration_text(ms: i64) -> String {
    if ms < 10_000 {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    } else if ms < 120_000 {
        format!("{} s", ms / 1000)
    } else if ms < 7_200_000 {
        format!("{} min", ms / 60_000)
    } else if ms < 172_800_000 {
        format!("{} h", ms / 3_600_000)
    } else {
        format!("{} days", ms / 86_400_000)
    }
}

impl ReportJson {
    /// Parses the report into the core type; every problem is a 400.
    pub fn parse(self) -> Result<DeviceReport, ApiError> {
        let bad = |message: String| ApiError::bad_request("invalid_report", message);
        let hostname = single_line("hostname", &self.hostname, MAX_HOSTNAME).map_err(bad)?;
        let client_version = ClientVersion::parse(&self.client_version)
            .map_err(|e| ApiError::bad_request("invalid_client_version", e.to_string()))?;
        let os = Os::parse(&self.os).map_err(|e| bad(e.to_string()))?;
        let ownership = Ownership::parse(&self.ownership).map_err(|e| bad(e.to_string()))?;
        if self.posture.len() > MAX_POSTURE_FACTS {
            return Err(bad(format!(
                "a report may carry at most {MAX_POSTURE_FACTS} posture facts"
            )));
        }
        let mut posture = BTreeMap::new();
        for (key, value) in self.posture {
            check_posture(&key, &value).map_err(bad)?;
            let Some(value) = posture_value(&value) else {
                return Err(bad(format!(
                    "posture fact {key:?} must be a boolean, a number or a string"
                )));
            };
            // Trimmed like a rule's key, so that "disk_encrypted " in a report
            // still meets a rule on "disk_encrypted".
            posture.insert(key.trim().to_owned(), value);
        }
        Ok(DeviceReport {
            hostname: hostname.to_owned(),
            os,
            client_version,
            ownership,
            posture,
        })
    }
}

fn posture_value(value: &Value) -> Option<PostureValue> {
    match value {
        Value::Bool(b) => Some(PostureValue::Bool(*b)),
        Value::Number(n) => n.as_f64().map(PostureValue::Number),
        Value::String(s) => Some(PostureValue::Text(s.clone())),
        _ => None,
    }
}

fn posture_json(value: &PostureValue) -> Value {
    match value {
        PostureValue::Bool(b) => Value::Bool(*b),
        PostureValue::Number(n) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        PostureValue::Text(t) => Value::String(t.clone()),
    }
}

/// The report of a stored device, as JSON.
pub fn report_json(report: &DeviceReport) -> ReportJson {
    ReportJson {
        hostname: report.hostname.clone(),
        os: report.os.to_string(),
        client_version: report.client_version.to_string(),
        ownership: report.ownership.to_string(),
        posture: report
            .posture
            .iter()
            .map(|(k, v)| (k.clone(), posture_json(v)))
            .collect(),
        applied: None,
    }
}

/// DECISION: whether a service runs on a device, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct DecisionJson {
    /// Whether the service runs.
    pub enabled: bool,
    /// legacy_client, enabled_by_default, no_groups_selected, group_match,
    /// not_in_user_groups, not_in_device_groups, user_inactive,
    /// pending_approval, excluded_user_group, excluded_device_group,
    /// temporary_grant or rollout_held_back.
    pub reason: String,
    /// One line a person can read.
    pub explanation: String,
    /// Selected user groups the user is in.
    pub matched_user_groups: Vec<String>,
    /// Selected device groups the device is in.
    pub matched_device_groups: Vec<String>,
}

impl From<&Decision> for DecisionJson {
    fn from(decision: &Decision) -> Self {
        Self {
            enabled: decision.enabled,
            reason: decision.reason.code().to_owned(),
            explanation: decision.explanation.clone(),
            matched_user_groups: decision
                .matched_user_groups
                .iter()
                .map(|g| g.0.clone())
                .collect(),
            matched_device_groups: decision
                .matched_device_groups
                .iter()
                .map(|g| g.0.clone())
                .collect(),
        }
    }
}

/// One service in a device policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ServicePolicyJson {
    /// The decision.
    #[serde(flatten)]
    pub decision: DecisionJson,
    /// Log the user out when the service becomes entitled.
    pub logout_on_enable: bool,
}

/// POLICY: what a device runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PolicyJson {
    /// Changes whenever anything in the policy changes.
    pub etag: String,
    /// The tenant's config version when the policy was computed.
    pub config_version: i64,
    /// Seconds between regular syncs (agents add ±10 % jitter).
    pub poll_interval_s: u64,
    /// The tenant's id.
    pub tenant: String,
    /// The device's id.
    pub device_id: String,
    /// Decision per service id.
    pub services: BTreeMap<String, ServicePolicyJson>,
}

/// DEVICE: an enrolled device with its latest report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceJson {
    /// Device id.
    pub id: String,
    /// Its user's login name.
    pub user_name: String,
    /// Host name.
    pub hostname: String,
    /// Operating system.
    pub os: String,
    /// Client version.
    pub client_version: String,
    /// corporate or personal: the attested ownership when there is one, else
    /// what the device reports. This is what device groups match.
    pub ownership: String,
    /// What the device itself reports.
    pub reported_ownership: String,
    /// Who vouched for `ownership`: `enrollment_key`, `admin`, or null when it
    /// is only self-reported.
    pub ownership_attested_by: Option<String>,
    /// The device reports an ownership that contradicts the attested one (the
    /// report is ignored).
    pub ownership_conflict: bool,
    /// Waiting for an administrator's approval: no group-based service.
    pub pending_approval: bool,
    /// Posture facts.
    #[schema(value_type = BTreeMap<String, PostureFactJson>)]
    pub posture: BTreeMap<String, Value>,
    /// Ids of the device groups it belongs to.
    pub device_groups: Vec<String>,
    /// When it enrolled.
    pub enrolled_at: String,
    /// When it last synced.
    pub last_sync_at: String,
    /// What its agent last reported it applied; null until it reports it.
    pub applied: Option<AppliedJson>,
    /// Decision per service (device detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<BTreeMap<String, DecisionJson>>,
}

/// A posture requirement of a device-group rule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureRuleJson {
    /// The posture key, e.g. disk_encrypted.
    pub key: String,
    /// eq or gte (gte compares versions).
    pub op: String,
    /// The required value.
    #[schema(value_type = PostureFactJson)]
    pub value: Value,
}

/// A device group: a named rule over device reports.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroupBody {
    /// Unique name in the tenant.
    pub name: String,
    /// Allowed operating systems (empty: any).
    #[serde(default)]
    pub os: Vec<String>,
    /// Allowed ownerships (empty: any).
    #[serde(default)]
    pub ownership: Vec<String>,
    /// Facts that must all hold.
    #[serde(default)]
    pub posture: Vec<PostureRuleJson>,
}

impl DeviceGroupBody {
    /// Parses the rule into the core type; problems of meaning are 422.
    pub fn parse(self, id: DeviceGroupId) -> Result<DeviceGroup, ApiError> {
        let invalid = |field: String| {
            move |message: String| {
                ApiError::unprocessable("invalid_rule", message).with_field(field)
            }
        };
        let name = single_line("name", &self.name, MAX_NAME).map_err(invalid("name".into()))?;
        if self.posture.len() > MAX_POSTURE_RULES {
            return Err(invalid("posture".into())(format!(
                "a rule may require at most {MAX_POSTURE_RULES} posture facts"
            )));
        }
        let os = self
            .os
            .iter()
            .map(|o| Os::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("os".into())(e.to_string()))?;
        let ownership = self
            .ownership
            .iter()
            .map(|o| Ownership::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| invalid("ownership".into())(e.to_string()))?;
        let mut posture = Vec::with_capacity(self.posture.len());
        for (i, rule) in self.posture.iter().enumerate() {
            let at = |part: &str| format!("posture.{i}.{part}");
            single_line("a posture key", &rule.key, MAX_POSTURE_KEY).map_err(invalid(at("key")))?;
            check_posture(&rule.key, &rule.value).map_err(invalid(at("value")))?;
            let op = PostureOp::parse(&rule.op).map_err(|e| invalid(at("op"))(e.to_string()))?;
            let value = posture_value(&rule.value).ok_or_else(|| {
                invalid(at("value"))(format!(
                    "posture value of {:?} must be a boolean, number or string",
                    rule.key
                ))
            })?;
            let requirement = PostureRequirement::new(&rule.key, op, value).map_err(|e| {
                let part = match e {
                    entitle_core::RuleError::EmptyPostureKey => "key",
                    _ => "value",
                };
                invalid(at(part))(e.to_string())
            })?;
            posture.push(requirement);
        }
        Ok(DeviceGroup {
            id,
            name: name.to_owned(),
            os,
            ownership,
            posture,
        })
    }
}

/// A device group as answered, with how many devices it holds now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceGroupJson {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Allowed operating systems.
    pub os: Vec<String>,
    /// Allowed ownerships.
    pub ownership: Vec<String>,
    /// Required facts.
    pub posture: Vec<PostureRuleJson>,
    /// Enrolled devices that meet the rule now.
    pub matching_devices: usize,
    /// Ids of the services whose entitlements select the group, so that an
    /// administrator sees what a deletion would touch before making it.
    pub used_by: Vec<String>,
}

impl DeviceGroupJson {
    /// The answer for a device group and its current member count.
    pub fn new(group: &DeviceGroup, matching_devices: usize) -> Self {
        Self {
            id: group.id.0.clone(),
            name: group.name.clone(),
            os: group.os.iter().map(ToString::to_string).collect(),
            ownership: group.ownership.iter().map(ToString::to_string).collect(),
            posture: group
                .posture
                .iter()
                .map(|r| PostureRuleJson {
                    key: r.key().to_owned(),
                    op: r.op().as_str().to_owned(),
                    value: posture_json(r.value()),
                })
                .collect(),
            matching_devices,
            used_by: Vec::new(),
        }
    }

    /// The same answer, naming the services that select the group.
    pub fn used_by(mut self, services: Vec<String>) -> Self {
        self.used_by = services;
        self
    }
}

/// One side of an impact preview.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ImpactSideJson {
    /// Distinct users.
    pub users: usize,
    /// Devices.
    pub devices: usize,
    /// Up to ten "user on host" entries.
    pub sample: Vec<String>,
}

impl From<ImpactSide> for ImpactSideJson {
    fn from(side: ImpactSide) -> Self {
        Self {
            users: side.users,
            devices: side.devices,
            sample: side.sample,
        }
    }
}

/// The impact of proposed settings, before they are saved.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ImpactJson {
    /// Devices that would get the service.
    pub gaining: ImpactSideJson,
    /// Devices that would lose it.
    pub losing: ImpactSideJson,
    /// Devices whose client is too old to honour the settings.
    pub legacy_clients: ImpactSideJson,
    /// Staged rollout of the proposed settings: how many devices get the
    /// service at each step of `rollout_percent` and how many each step adds
    /// (empty where no rollout applies).
    #[serde(default)]
    pub rollout: Vec<RolloutStepJson>,
}

/// One step of a staged rollout's preview.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct RolloutStepJson {
    /// The step's `rollout_percent`.
    pub percent: u8,
    /// Devices that get the service at this step.
    pub devices: usize,
    /// Devices this step adds to the previous step.
    pub added: usize,
}

impl From<entitle_core::RolloutStep> for RolloutStepJson {
    fn from(step: entitle_core::RolloutStep) -> Self {
        Self {
            percent: step.percent,
            devices: step.devices,
            added: step.added,
        }
    }
}

impl From<Impact> for ImpactJson {
    fn from(impact: Impact) -> Self {
        Self {
            gaining: impact.gaining.into(),
            losing: impact.losing.into(),
            legacy_clients: impact.legacy_clients.into(),
            rollout: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_duration(ms: i64, expected: &str) {
        assert_eq!(duration_text(ms), expected, "{ms} ms");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        check_duration(0, "0.0 s");
        check_duration(812, "0.8 s");
        check_duration(9_999, "9.9 s");
        check_duration(10_000, "10 s");
        check_duration(119_999, "119 s");
        check_duration(120_000, "2 min");
        check_duration(7_200_000, "2 h");
        check_duration(172_800_000, "2 days");
    }

    #[test]
    fn the_summary_names_the_version_the_delay_and_failed_services() {
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(10_800);
        let failed = ServiceState {
            state: RunState::Failed,
            exit_status: Some(3),
            output: None,
        };
        let running = ServiceState {
            state: RunState::Running,
            exit_status: None,
            output: None,
        };
        let applied = Applied {
            config_version: 12,
            at,
            saved_at: Some(OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(10)),
            services: BTreeMap::from([
                ("internet_access".to_owned(), running),
                ("private_access".to_owned(), failed),
            ]),
        };
        let json = applied_json(&applied, 12);
        assert_eq!(json.after_save_ms, Some(800));
        assert!(json.current);
        assert_eq!(
            json.summary,
            "policy of config version 12 applied 0.8 s after the save; Private Applications failed to start (exit 3)"
        );
        let behind = applied_json(&applied, 13);
        assert!(!behind.current);
        assert!(
            behind
                .summary
                .contains("the current version, 13, is not applied yet")
        );
    }

    #[test]
    fn output_allows_newlines_and_tabs_only() {
        assert!(check_output("a\n\tb").is_ok());
        assert!(check_output("a\rb").is_err());
        assert!(check_output("a\u{1b}b").is_err());
        assert!(check_output(&"x".repeat(MAX_APPLIED_OUTPUT + 1)).is_err());
        assert!(check_output(&"x\n".repeat(MAX_APPLIED_OUTPUT_LINES + 1)).is_err());
    }
}
