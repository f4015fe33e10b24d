//! JSON shapes of core types as stored in the database (and shown in audit diffs).
//!
//! The core has no serde on purpose; these conversions are the storage edge.

use std::collections::{BTreeMap, BTreeSet};

use entitle_core::{
    ClientVersion, DeviceGroup, DeviceGroupId, DeviceReport, GroupId, Os, Ownership, PostureOp,
    PostureRequirement, PostureValue, Settings,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{RunState, ServiceState, StoreError};

/// Settings as JSON, the same shape as the API's SETTINGS.
pub fn settings_to_json(settings: &Settings) -> Value {
    json!({
        "enabled_by_default": settings.enabled_by_default,
        "user_groups": settings.user_groups.iter().map(GroupId::as_str).collect::<Vec<_>>(),
        "device_groups": settings.device_groups.iter().map(DeviceGroupId::as_str).collect::<Vec<_>>(),
        "logout_on_enable": settings.logout_on_enable,
        "exclude_user_groups": settings.exclude_user_groups.iter().map(GroupId::as_str).collect::<Vec<_>>(),
        "exclude_device_groups": settings.exclude_device_groups.iter().map(DeviceGroupId::as_str).collect::<Vec<_>>(),
        "rollout_percent": settings.rollout_percent,
    })
}

/// Settings as history stores them. Fields added later have defaults, so a
/// version written before them reads (and restores) as it meant: no
/// exclusions, rolled out to everyone.
#[derive(Deserialize)]
struct StoredSettingsJson {
    enabled_by_default: bool,
    user_groups: Vec<String>,
    device_groups: Vec<String>,
    logout_on_enable: bool,
    #[serde(default)]
    exclude_user_groups: Vec<String>,
    #[serde(default)]
    exclude_device_groups: Vec<String>,
    #[serde(default = "full_rollout")]
    rollout_percent: u8,
}

fn full_rollout() -> u8 {
    entitle_core::FULL_ROLLOUT
}

pub(crate) fn settings_from_json(text: &str) -> Result<Settings, StoreError> {
    let stored: StoredSettingsJson = decode(text, "settings")?;
    Ok(Settings {
        enabled_by_default: stored.enabled_by_default,
        user_groups: stored.user_groups.into_iter().map(GroupId).collect(),
        device_groups: stored
            .device_groups
            .into_iter()
            .map(DeviceGroupId)
            .collect(),
        logout_on_enable: stored.logout_on_enable,
        exclude_user_groups: stored
            .exclude_user_groups
            .into_iter()
            .map(GroupId)
            .collect(),
        exclude_device_groups: stored
            .exclude_device_groups
            .into_iter()
            .map(DeviceGroupId)
            .collect(),
        rollout_percent: stored.rollout_percent.clamp(1, entitle_core::FULL_ROLLOUT),
    })
}

pub(crate) fn id_list_to_json<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    Value::from(ids.collect::<Vec<_>>()).to_string()
}

pub(crate) fn id_list_from_json(text: &str) -> Result<BTreeSet<String>, StoreError> {
    decode(text, "group list")
}

/// A posture value as JSON.
pub fn posture_value_to_json(value: &PostureValue) -> Value {
    match value {
        PostureValue::Bool(b) => Value::Bool(*b),
        PostureValue::Number(n) => json!(n),
        PostureValue::Text(t) => Value::String(t.clone()),
    }
}

pub(crate) fn posture_value_from_json(value: &Value) -> Option<PostureValue> {
    match value {
        Value::Bool(b) => Some(PostureValue::Bool(*b)),
        Value::Number(n) => n.as_f64().map(PostureValue::Number),
        Value::String(s) => Some(PostureValue::Text(s.clone())),
        _ => None,
    }
}

/// A device report as JSON, the same shape as the API's REPORT.
pub fn report_to_json(report: &DeviceReport) -> Value {
    let posture: serde_json::Map<String, Value> = report
        .posture
        .iter()
        .map(|(k, v)| (k.clone(), posture_value_to_json(v)))
        .collect();
    json!({
        "hostname": report.hostname,
        "os": report.os.as_str(),
        "client_version": report.client_version.to_string(),
        "ownership": report.ownership.as_str(),
        "posture": posture,
    })
}

#[derive(Deserialize)]
struct StoredReport {
    hostname: String,
    os: String,
    client_version: String,
    ownership: String,
    posture: BTreeMap<String, Value>,
}

pub(crate) fn report_from_json(text: &str) -> Result<DeviceReport, StoreError> {
    let stored: StoredReport = decode(text, "device report")?;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("device report: {e}"));
    Ok(DeviceReport {
        hostname: stored.hostname,
        os: Os::parse(&stored.os).map_err(|e| corrupt(&e))?,
        client_version: ClientVersion::parse(&stored.client_version).map_err(|e| corrupt(&e))?,
        ownership: Ownership::parse(&stored.ownership).map_err(|e| corrupt(&e))?,
        posture: stored
            .posture
            .iter()
            .filter_map(|(k, v)| posture_value_from_json(v).map(|v| (k.clone(), v)))
            .collect(),
    })
}

#[derive(Serialize, Deserialize)]
struct StoredRequirement {
    key: String,
    op: String,
    value: Value,
}

#[derive(Serialize, Deserialize)]
struct StoredRule {
    os: Vec<String>,
    ownership: Vec<String>,
    posture: Vec<StoredRequirement>,
}

/// A device group as JSON, the same shape as the API's device group.
pub fn device_group_to_json(group: &DeviceGroup) -> Value {
    let mut value = rule_value(group);
    if let Some(object) = value.as_object_mut() {
        object.insert("id".into(), Value::String(group.id.0.clone()));
        object.insert("name".into(), Value::String(group.name.clone()));
    }
    value
}

fn rule_value(group: &DeviceGroup) -> Value {
    json!({
        "os": group.os.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "ownership": group.ownership.iter().map(|o| o.as_str()).collect::<Vec<_>>(),
        "posture": group.posture.iter().map(|r| json!({
            "key": r.key(),
            "op": r.op().as_str(),
            "value": posture_value_to_json(r.value()),
        })).collect::<Vec<_>>(),
    })
}

pub(crate) fn rule_to_json(group: &DeviceGroup) -> String {
    rule_value(group).to_string()
}

pub(crate) fn device_group_from_row(
    id: String,
    name: String,
    rule_json: &str,
) -> Result<DeviceGroup, StoreError> {
    let rule: StoredRule = decode(rule_json, "device group rule")?;
    let corrupt =
        |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("device group {id}: {e}"));
    let mut posture = Vec::with_capacity(rule.posture.len());
    for requirement in &rule.posture {
        let op = PostureOp::parse(&requirement.op).map_err(|e| corrupt(&e))?;
        let value = posture_value_from_json(&requirement.value)
            .ok_or_else(|| corrupt(&"posture value is not a boolean, number or string"))?;
        posture
            .push(PostureRequirement::new(&requirement.key, op, value).map_err(|e| corrupt(&e))?);
    }
    Ok(DeviceGroup {
        os: rule
            .os
            .iter()
            .map(|o| Os::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(&e))?,
        ownership: rule
            .ownership
            .iter()
            .map(|o| Ownership::parse(o))
            .collect::<Result<_, _>>()
            .map_err(|e| corrupt(&e))?,
        posture,
        id: DeviceGroupId(id),
        name,
    })
}

fn decode<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Attested ownership from its two columns; both or neither are set.
pub(crate) fn attested_from_columns(
    ownership: Option<String>,
    by: Option<String>,
) -> Result<Option<crate::Attested>, StoreError> {
    let (Some(ownership), Some(by)) = (ownership, by) else {
        return Ok(None);
    };
    let ownership = entitle_core::Ownership::parse(&ownership)
        .map_err(|_| StoreError::Corrupt(format!("attested ownership {ownership:?}")))?;
    let by = crate::AttestedBy::parse(&by)
        .ok_or_else(|| StoreError::Corrupt(format!("attested by {by:?}")))?;
    Ok(Some(crate::Attested { ownership, by }))
}

/// An ownership column, if set.
pub(crate) fn ownership_from_column(
    text: Option<String>,
) -> Result<Option<entitle_core::Ownership>, StoreError> {
    text.map(|t| {
        entitle_core::Ownership::parse(&t)
            .map_err(|_| StoreError::Corrupt(format!("ownership {t:?}")))
    })
    .transpose()
}

#[derive(Serialize, Deserialize)]
struct StoredServiceState {
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_status: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

/// A device's service states as stored: `{"<service>": {"state", "exit_status"?, "output"?}}`.
pub(crate) fn service_states_to_json(services: &BTreeMap<String, ServiceState>) -> String {
    let stored: BTreeMap<&str, StoredServiceState> = services
        .iter()
        .map(|(id, s)| {
            (
                id.as_str(),
                StoredServiceState {
                    state: s.state.as_str().to_owned(),
                    exit_status: s.exit_status,
                    output: s.output.clone(),
                },
            )
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "{}".to_owned())
}

pub(crate) fn service_states_from_json(
    text: &str,
) -> Result<BTreeMap<String, ServiceState>, StoreError> {
    let stored: BTreeMap<String, StoredServiceState> = decode(text, "service states")?;
    stored
        .into_iter()
        .map(|(id, s)| {
            let state = RunState::parse(&s.state)
                .ok_or_else(|| StoreError::Corrupt(format!("service state {:?}", s.state)))?;
            Ok((
                id,
                ServiceState {
                    state,
                    exit_status: s.exit_status,
                    output: s.output,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn history_written_before_exclusions_reads_as_none_and_everyone() {
        let old = r#"{"enabled_by_default":false,"user_groups":["g1"],"device_groups":[],"logout_on_enable":true}"#;
        let settings = settings_from_json(old).expect("old settings read");
        assert_eq!(
            settings,
            Settings {
                user_groups: [GroupId("g1".into())].into(),
                logout_on_enable: true,
                ..Settings::default()
            }
        );
        assert_eq!(settings.rollout_percent, 100);
    }

    #[test]
    fn new_fields_round_trip() {
        let settings = Settings {
            enabled_by_default: true,
            exclude_user_groups: [GroupId("contractors".into())].into(),
            exclude_device_groups: [DeviceGroupId("kiosks".into())].into(),
            rollout_percent: 10,
            ..Settings::default()
        };
        let text = settings_to_json(&settings).to_string();
        assert_eq!(settings_from_json(&text).expect("reads"), settings);
    }
}
