//! `entitle entitlements`: settings per service, the preview of a change, the history of
//! config versions and rollback.

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, array, encode, print_json, print_line, print_table, text};

/// Changes to settings, shared by `set` and `preview`.
#[derive(Args, Debug)]
pub struct SettingsChange {
    /// Service: internet_access, private_access or digital_experience.
    service: String,
    /// Turn "Enabled by Default" on or off.
    #[arg(long)]
    enabled_by_default: Option<bool>,
    /// Select this user group (name or id); repeatable; replaces the list.
    #[arg(long = "user-group")]
    user_groups: Vec<String>,
    /// Select this device group (name or id); repeatable; replaces the list.
    #[arg(long = "device-group")]
    device_groups: Vec<String>,
    /// Clear the user group list.
    #[arg(long, conflicts_with = "user_groups")]
    no_user_groups: bool,
    /// Clear the device group list.
    #[arg(long, conflicts_with = "device_groups")]
    no_device_groups: bool,
    /// Log users out when the service becomes entitled.
    #[arg(long)]
    logout_on_enable: Option<bool>,
    /// Exclude this user group (name or id): its members never get the
    /// service through groups or "Enabled by Default"; repeatable; replaces the list.
    #[arg(long = "exclude-user-group")]
    exclude_user_groups: Vec<String>,
    /// Exclude this device group (name or id); repeatable; replaces the list.
    #[arg(long = "exclude-device-group")]
    exclude_device_groups: Vec<String>,
    /// Clear the excluded user group list.
    #[arg(long, conflicts_with = "exclude_user_groups")]
    no_exclude_user_groups: bool,
    /// Clear the excluded device group list.
    #[arg(long, conflicts_with = "exclude_device_groups")]
    no_exclude_device_groups: bool,
    /// Staged rollout: give the service to this percentage (1-100) of the
    /// devices that would get it; raising it only adds devices.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=100))]
    rollout_percent: Option<u16>,
}

/// What `entitle entitlements` does.
#[derive(Subcommand, Debug)]
pub enum EntitlementAction {
    /// Show every service's settings, or one service's.
    Show {
        /// Only this service.
        service: Option<String>,
    },
    /// Change a service's settings (reads them, applies the flags, saves with If-Match).
    Set {
        #[command(flatten)]
        change: SettingsChange,
        /// Apply the change at this time (RFC 3339, e.g. 2026-12-01T06:00:00Z)
        /// instead of now; `entitle changes list` shows it, `changes cancel` cancels it.
        #[arg(long)]
        apply_at: Option<String>,
    },
    /// Show who would gain and lose a service under the changed settings, without saving.
    Preview(SettingsChange),
    /// Config versions, newest first.
    History {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Restore the settings of a config version (as a new version).
    Rollback {
        /// The config version to restore.
        config_version: i64,
        /// Restore it without the groups deleted since (preview the result
        /// first: without them the service may reach more people).
        #[arg(long)]
        without_deleted: bool,
    },
}

/// Runs `entitle entitlements`.
pub(super) async fn run(api: Api, action: EntitlementAction) -> anyhow::Result<()> {
    match action {
        EntitlementAction::Show { service } => {
            let all = api.get(&api.scoped("/entitlements")?).await?;
            if api.conn.json {
                match service {
                    Some(id) => print_json(&all["services"][&id]),
                    None => print_json(&all),
                }
                return Ok(());
            }
            let names = group_names(&api).await?;
            let rows = all["services"]
                .as_object()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter(|(id, _)| service.as_deref().is_none_or(|s| s == id.as_str()))
                .map(|(id, s)| {
                    vec![
                        id.clone(),
                        text(&s["enabled_by_default"]),
                        named(&s["user_groups"], &names),
                        named(&s["device_groups"], &names),
                        excluded(s, &names),
                        format!("{} %", text(&s["rollout_percent"])),
                        text(&s["logout_on_enable"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "service",
                    "enabled_by_default",
                    "user_groups",
                    "device_groups",
                    "excluded",
                    "rollout",
                    "logout_on_enable",
                ],
                rows,
            );
            print_line(&format!("config version {}", text(&all["config_version"])));
        }
        EntitlementAction::Set { change, apply_at } => {
            let (mut settings, etag) = changed_settings(&api, &change).await?;
            if let Some(at) = &apply_at {
                settings["apply_at"] = json!(at);
            }
            let path = api.scoped(&format!("/entitlements/{}", change.service))?;
            let answer = api
                .call(Method::PUT, &path, Some(&settings), etag.as_deref())
                .await?;
            if answer.status == StatusCode::ACCEPTED {
                api.report(&answer.body, |body| {
                    format!(
                        "scheduled {} for {} as change {}; `entitle changes cancel {}` cancels it",
                        change.service,
                        text(&body["apply_at"]),
                        text(&body["id"]),
                        text(&body["id"])
                    )
                });
                return Ok(());
            }
            // The new config version comes in the ETag, not in the settings;
            // a save that changed nothing answers the version it read.
            let version = answer.etag.as_deref().unwrap_or_default().trim_matches('"');
            let unchanged = answer.etag.is_some() && answer.etag == etag;
            api.report(&answer.body, |_| {
                if unchanged {
                    format!(
                        "nothing to change: {} stays config version {version}",
                        change.service
                    )
                } else {
                    format!("saved {} as config version {version}", change.service)
                }
            });
            debug_assert_eq!(answer.status, StatusCode::OK);
        }
        EntitlementAction::Preview(change) => {
            let (settings, _) = changed_settings(&api, &change).await?;
            let path = api.scoped(&format!("/entitlements/{}/preview", change.service))?;
            let impact = api.post(&path, &settings).await?;
            if api.conn.json {
                print_json(&impact);
                return Ok(());
            }
            let rows = ["gaining", "losing", "legacy_clients"]
                .iter()
                .map(|side| {
                    vec![
                        (*side).to_owned(),
                        text(&impact[*side]["users"]),
                        text(&impact[*side]["devices"]),
                        sample_lines(&impact[*side]["sample"]),
                    ]
                })
                .collect();
            print_table(&["", "users", "devices", "sample"], rows);
            let steps: Vec<Vec<String>> = array(&impact["rollout"])
                .iter()
                .map(|step| {
                    vec![
                        format!("{} %", text(&step["percent"])),
                        text(&step["devices"]),
                        format!("+{}", text(&step["added"])),
                    ]
                })
                .collect();
            if !steps.is_empty() {
                print_line(&format!(
                    "rollout at {} %; devices at each step:",
                    text(&settings["rollout_percent"])
                ));
                print_table(&["rollout", "devices", "added"], steps);
            }
            print_line(
                "nothing saved: run `entitle entitlements set` with the same flags to apply",
            );
        }
        EntitlementAction::History { service, limit } => {
            let mut path = api.scoped(&format!("/entitlements/history?limit={limit}"))?;
            if let Some(service) = service {
                path.push_str(&format!("&service={}", encode(&service)));
            }
            let history = api.get(&path).await?;
            if api.conn.json {
                print_json(&history);
                return Ok(());
            }
            // The history names every group its page selects, deleted ones too.
            let names: std::collections::HashMap<String, String> = history["names"]
                .as_object()
                .map(|names| {
                    names
                        .iter()
                        .map(|(id, name)| (id.clone(), text(name)))
                        .collect()
                })
                .unwrap_or_default();
            let rows = array(&history["items"])
                .iter()
                .map(|v| {
                    let change = diff(&v["before"], &v["after"], &names);
                    let change = match v["restored_from"].as_i64() {
                        Some(from) => format!("restored from v{from}; {change}"),
                        None => change,
                    };
                    vec![
                        text(&v["config_version"]),
                        text(&v["service"]),
                        text(&v["actor"]),
                        text(&v["at"]),
                        change,
                    ]
                })
                .collect();
            print_table(&["version", "service", "actor", "at", "change"], rows);
        }
        EntitlementAction::Rollback {
            config_version,
            without_deleted,
        } => {
            let result = api
                .post(
                    &api.scoped("/entitlements/rollback")?,
                    &json!({"config_version": config_version, "without_deleted": without_deleted}),
                )
                .await?;
            api.report(&result, |result| {
                if result["changed"] == Value::Bool(false) {
                    format!(
                        "{} is already as it was in version {config_version}: config version {} unchanged",
                        text(&result["service"]),
                        text(&result["config_version"])
                    )
                } else {
                    format!(
                        "restored {} as it was in version {config_version}: new config version {}",
                        text(&result["service"]),
                        text(&result["config_version"])
                    )
                }
            });
        }
    }
    Ok(())
}

/// Applies the flags of `set`/`preview` to the current settings.
async fn changed_settings(
    api: &Api,
    change: &SettingsChange,
) -> anyhow::Result<(Value, Option<String>)> {
    let path = api.scoped(&format!("/entitlements/{}", change.service))?;
    let answer = api.call(Method::GET, &path, None, None).await?;
    let mut settings = answer.body;
    if let Some(on) = change.enabled_by_default {
        settings["enabled_by_default"] = Value::Bool(on);
    }
    if change.no_user_groups {
        settings["user_groups"] = json!([]);
    } else if !change.user_groups.is_empty() {
        settings["user_groups"] = json!(api.group_ids(&change.user_groups).await?);
    }
    if change.no_device_groups {
        settings["device_groups"] = json!([]);
    } else if !change.device_groups.is_empty() {
        settings["device_groups"] = json!(api.device_group_ids(&change.device_groups).await?);
    }
    if let Some(logout) = change.logout_on_enable {
        settings["logout_on_enable"] = Value::Bool(logout);
    }
    if change.no_exclude_user_groups {
        settings["exclude_user_groups"] = json!([]);
    } else if !change.exclude_user_groups.is_empty() {
        settings["exclude_user_groups"] = json!(api.group_ids(&change.exclude_user_groups).await?);
    }
    if change.no_exclude_device_groups {
        settings["exclude_device_groups"] = json!([]);
    } else if !change.exclude_device_groups.is_empty() {
        settings["exclude_device_groups"] =
            json!(api.device_group_ids(&change.exclude_device_groups).await?);
    }
    if let Some(percent) = change.rollout_percent {
        settings["rollout_percent"] = json!(percent);
    }
    Ok((settings, answer.etag))
}

fn sample_lines(sample: &Value) -> String {
    let lines: Vec<String> = array(sample).iter().map(text).collect();
    lines.join("\n")
}

async fn group_names(api: &Api) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut names = std::collections::HashMap::new();
    let groups = api.get(&api.scoped("/groups?limit=200")?).await?;
    for g in array(&groups["items"]) {
        names.insert(text(&g["id"]), text(&g["display_name"]));
    }
    let device_groups = api.get(&api.scoped("/device-groups")?).await?;
    for g in array(&device_groups["items"]) {
        names.insert(text(&g["id"]), text(&g["name"]));
    }
    Ok(names)
}

/// The excluded user and device groups of a service's settings, by name.
fn excluded(settings: &Value, names: &std::collections::HashMap<String, String>) -> String {
    let users = named(&settings["exclude_user_groups"], names);
    let devices = named(&settings["exclude_device_groups"], names);
    match (users.as_str(), devices.as_str()) {
        ("-", "-") => "-".into(),
        (_, "-") => users,
        ("-", _) => devices,
        _ => format!("{users}; {devices}"),
    }
}

fn named(ids: &Value, names: &std::collections::HashMap<String, String>) -> String {
    let mut list: Vec<String> = array(ids)
        .iter()
        .map(|id| {
            let id = text(id);
            names.get(&id).cloned().unwrap_or(id)
        })
        .collect();
    list.sort();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn diff(
    before: &Value,
    after: &Value,
    names: &std::collections::HashMap<String, String>,
) -> String {
    let keys = [
        "enabled_by_default",
        "user_groups",
        "device_groups",
        "logout_on_enable",
        "exclude_user_groups",
        "exclude_device_groups",
        "rollout_percent",
    ];
    let show = |value: &Value| {
        if value.is_array() {
            format!("[{}]", named(value, names).trim_matches('-'))
        } else {
            text(value)
        }
    };
    let changes: Vec<String> = keys
        .iter()
        .filter(|k| before[**k] != after[**k])
        .map(|k| format!("{k}: {} -> {}", show(&before[*k]), show(&after[*k])))
        .collect();
    if changes.is_empty() {
        "(no change)".into()
    } else {
        changes.join("; ")
    }
}
