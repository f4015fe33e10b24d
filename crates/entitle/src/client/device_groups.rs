//! `entitle device-groups`: rules over device reports, plus finding a device group by
//! name or id.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Api, array, delete_group, text};

/// What `entitle device-groups` does.
#[derive(Subcommand, Debug)]
pub enum DeviceGroupAction {
    /// List device groups with how many devices match.
    List,
    /// Create a device group.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Allowed OS (windows, macos, linux, ios, android); repeatable; none = any.
        #[arg(long)]
        os: Vec<String>,
        /// Allowed ownership (corporate, personal); repeatable; none = any.
        #[arg(long)]
        ownership: Vec<String>,
        /// Required fact: `key=value` or `key>=version`; repeatable.
        #[arg(long)]
        posture: Vec<String>,
    },
    /// Delete a device group (name or id); refused while an entitlement selects it.
    Delete {
        /// Name or id.
        group: String,
        /// Delete it anyway: entitlements keep it as a deleted group that matches nothing.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `entitle device-groups`.
pub(super) async fn run(api: Api, action: DeviceGroupAction) -> anyhow::Result<()> {
    match action {
        DeviceGroupAction::List => {
            let list = api.get(&api.scoped("/device-groups")?).await?;
            api.report_items(
                &list,
                &[
                    "device group",
                    "id",
                    "os",
                    "ownership",
                    "posture",
                    "devices",
                ],
                |g| {
                    let posture: Vec<String> = array(&g["posture"])
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} {}",
                                text(&r["key"]),
                                if r["op"] == "gte" { ">=" } else { "=" },
                                text(&r["value"])
                            )
                        })
                        .collect();
                    vec![
                        text(&g["name"]),
                        text(&g["id"]),
                        text(&g["os"]),
                        text(&g["ownership"]),
                        posture.join(", "),
                        text(&g["matching_devices"]),
                    ]
                },
            );
        }
        DeviceGroupAction::Create {
            name,
            os,
            ownership,
            posture,
        } => {
            let posture = posture
                .iter()
                .map(|p| posture_rule(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let created = api
                .post(
                    &api.scoped("/device-groups")?,
                    &json!({"name": name, "os": os, "ownership": ownership, "posture": posture}),
                )
                .await?;
            api.report(&created, |created| {
                format!(
                    "created device group {} ({}); {} device(s) match now",
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["matching_devices"])
                )
            });
        }
        DeviceGroupAction::Delete { group, force } => {
            let id = api.device_group_id(&group).await?;
            delete_group(
                &api,
                &format!("/device-groups/{id}"),
                &format!("device group {group}"),
                force,
            )
            .await?;
        }
    }
    Ok(())
}

fn posture_rule(text: &str) -> anyhow::Result<Value> {
    let (key, op, value) = if let Some((key, value)) = text.split_once(">=") {
        (key, "gte", value)
    } else if let Some((key, value)) = text.split_once('=') {
        (key, "eq", value)
    } else {
        bail!("posture rule {text:?} must be key=value or key>=version");
    };
    let value = match value.trim() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        other => Value::String(other.to_owned()),
    };
    Ok(json!({"key": key.trim(), "op": op, "value": value}))
}

impl Api {
    /// Device group ids from names or ids, in their order.
    pub(super) async fn device_group_ids(
        &self,
        names_or_ids: &[String],
    ) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for name_or_id in names_or_ids {
            ids.push(self.device_group_id(name_or_id).await?);
        }
        Ok(ids)
    }

    /// A device group id from a name or an id.
    pub(super) async fn device_group_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let list = self.get(&self.scoped("/device-groups")?).await?;
        let items = array(&list["items"]);
        items
            .iter()
            .find(|g| g["id"].as_str() == Some(name_or_id) || g["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name_or_id)))
            .and_then(|g| g["id"].as_str().map(str::to_owned))
            .with_context(|| format!("no device group is named or has the id {name_or_id:?}; see `entitle device-groups list`"))
    }
}
