//! `entitle devices`: enrolled devices with each service's decision, approval and
//! attested ownership.

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Api, array, encode, print_json, print_line, print_table, text};

/// What `entitle devices` does.
#[derive(Subcommand, Debug)]
pub enum DeviceAction {
    /// List devices.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
        /// Only devices whose user or host name contains this text.
        #[arg(long)]
        search: Option<String>,
        /// current: devices that applied the tenant's current config version;
        /// stale: devices behind it or whose agent never reported one.
        #[arg(long, value_parser = ["current", "stale"])]
        applied: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a device with each service's decision and explanation.
    Show {
        /// Device id or host name.
        id: String,
    },
    /// Remove a device and revoke its token.
    Delete {
        /// Device id.
        id: String,
    },
    /// Approve devices waiting for approval (approval mode).
    Approve {
        /// Device ids (at most 1,000).
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Attest a device's ownership: corporate, personal, or reported (trust the report again).
    SetOwnership {
        /// Device id.
        id: String,
        /// corporate, personal or reported.
        ownership: String,
    },
    /// Show or set the approval mode: new devices get no group-based service until approved.
    Approval {
        /// on or off; omitted: show.
        mode: Option<String>,
    },
}

/// Runs `entitle devices`.
pub(super) async fn run(api: Api, action: DeviceAction) -> anyhow::Result<()> {
    match action {
        DeviceAction::List {
            user,
            search,
            applied,
            limit,
        } => {
            let mut path = api.scoped(&format!("/devices?limit={limit}"))?;
            if let Some(user) = user {
                path.push_str(&format!("&user_name={}", encode(&user)));
            }
            if let Some(search) = search {
                path.push_str(&format!("&search={}", encode(&search)));
            }
            if let Some(applied) = applied {
                path.push_str(&format!("&applied={}", encode(&applied)));
            }
            let page = api.get(&path).await?;
            api.report_items(
                &page,
                &[
                    "id",
                    "user",
                    "hostname",
                    "os",
                    "ownership",
                    "client",
                    "applied",
                    "last sync",
                ],
                |d| {
                    vec![
                        text(&d["id"]),
                        text(&d["user_name"]),
                        text(&d["hostname"]),
                        text(&d["os"]),
                        text(&d["ownership"]),
                        text(&d["client_version"]),
                        applied_cell(&d["applied"]),
                        text(&d["last_sync_at"]),
                    ]
                },
            );
            if !api.conn.json && page["next_cursor"].is_string() {
                print_line("(more devices: raise --limit or filter with --user)");
            }
        }
        DeviceAction::Show { id } => {
            let device = device_by_id_or_hostname(&api, &id).await?;
            if api.conn.json {
                print_json(&device);
                return Ok(());
            }
            print_line(&format!(
                "{} ({}) of {}: {} {}, client {}",
                text(&device["hostname"]),
                text(&device["id"]),
                text(&device["user_name"]),
                text(&device["ownership"]),
                text(&device["os"]),
                text(&device["client_version"])
            ));
            match device["applied"].get("summary").and_then(Value::as_str) {
                Some(summary) => print_line(summary),
                None => print_line("its agent has not reported what it applied"),
            }
            let rows = device["entitlements"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|(service, d)| {
                    vec![
                        service.clone(),
                        if d["enabled"] == true {
                            "on".into()
                        } else {
                            "off".into()
                        },
                        text(&d["reason"]),
                        text(&d["explanation"]),
                    ]
                })
                .collect();
            print_table(&["service", "state", "reason", "explanation"], rows);
            for (service, state) in device["applied"]["services"]
                .as_object()
                .cloned()
                .unwrap_or_default()
            {
                if let Some(output) = state["output"].as_str() {
                    print_line(&format!("{service} output:"));
                    for line in output.lines() {
                        print_line(&format!("  {line}"));
                    }
                }
            }
        }
        DeviceAction::Delete { id } => {
            api.delete(&api.scoped(&format!("/devices/{}", encode(&id)))?)
                .await?;
            print_line(&format!("removed device {id}; its token no longer works"));
        }
        DeviceAction::Approve { ids } => {
            let answer = api
                .post(&api.scoped("/devices/approve")?, &json!({"ids": ids}))
                .await?;
            api.report(&answer, |answer| {
                format!(
                    "approved: {}; not found: {}",
                    text(&answer["approved"]),
                    text(&answer["not_found"])
                )
            });
        }
        DeviceAction::SetOwnership { id, ownership } => {
            let answer = api
                .patch(
                    &api.scoped(&format!("/devices/{}", encode(&id)))?,
                    &json!({"ownership": ownership}),
                )
                .await?;
            api.report(&answer, |answer| {
                format!(
                    "{} is {} (attested by {}; reports {})",
                    text(&answer["hostname"]),
                    text(&answer["ownership"]),
                    text(&answer["ownership_attested_by"]),
                    text(&answer["reported_ownership"])
                )
            });
        }
        DeviceAction::Approval { mode } => {
            let path = api.scoped("/device-approval")?;
            let answer = match mode.as_deref() {
                None => api.get(&path).await?,
                Some(word @ ("on" | "off")) => {
                    let body = json!({"device_approval": word == "on"});
                    api.call(Method::PUT, &path, Some(&body), None).await?.body
                }
                Some(other) => anyhow::bail!("approval mode is on or off, not {other:?}"),
            };
            api.report(&answer, |answer| {
                format!(
                    "device approval is {}",
                    if answer["device_approval"] == true {
                        "on"
                    } else {
                        "off"
                    }
                )
            });
        }
    }
    Ok(())
}

/// The list's applied column: the version, marked when it is not the current one.
fn applied_cell(applied: &Value) -> String {
    if applied.is_null() {
        return "-".to_owned();
    }
    let version = text(&applied["config_version"]);
    if applied["current"] == true {
        version
    } else {
        format!("{version} (stale)")
    }
}

async fn device_by_id_or_hostname(api: &Api, id: &str) -> anyhow::Result<Value> {
    if let Ok(device) = api
        .get(&api.scoped(&format!("/devices/{}", encode(id)))?)
        .await
    {
        return Ok(device);
    }
    let page = api
        .get(&api.scoped(&format!("/devices?hostname={}", encode(id)))?)
        .await?;
    match array(&page["items"]) {
        [only] => {
            api.get(&api.scoped(&format!("/devices/{}", encode(&text(&only["id"]))))?)
                .await
        }
        [] => bail!("no device has the id or host name {id:?}; see `entitle devices list`"),
        many => bail!(
            "{} devices are named {id:?}; show one by id: {}",
            many.len(),
            many.iter()
                .map(|d| text(&d["id"]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
