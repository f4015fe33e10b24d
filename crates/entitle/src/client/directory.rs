//! The directory: `entitle groups`, `entitle users` and `entitle directory` (its sync
//! status), plus finding a group by name or id.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Api, array, delete_group, encode, print_json, print_line, print_table, text};

/// What `entitle groups` does.
#[derive(Subcommand, Debug)]
pub enum GroupAction {
    /// List or search groups.
    List {
        /// Part of the name.
        #[arg(long)]
        search: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Create a local group.
    Create {
        /// Display name.
        name: String,
        /// Nest this group (name or id) inside the new one; repeatable.
        #[arg(long = "member-group")]
        member_groups: Vec<String>,
    },
    /// Delete a group (name or id); refused while an entitlement selects it.
    Delete {
        /// Name or id.
        group: String,
        /// Delete it anyway: entitlements keep it as a deleted group that matches nothing.
        #[arg(long)]
        force: bool,
    },
}

/// What `entitle users` does.
#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Create a local user.
    Create {
        /// Login name.
        user_name: String,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Group (name or id); repeatable.
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Show a user.
    Show {
        /// Login name.
        user_name: String,
    },
    /// Deactivate a user: their devices lose every service.
    Deactivate {
        /// Login name.
        user_name: String,
    },
    /// Activate a user again.
    Activate {
        /// Login name.
        user_name: String,
    },
}

/// Runs `entitle groups`.
pub(super) async fn groups(api: Api, action: GroupAction) -> anyhow::Result<()> {
    match action {
        GroupAction::List { search, limit } => {
            let mut path = api.scoped(&format!("/groups?limit={limit}"))?;
            if let Some(search) = search {
                path.push_str(&format!("&search={}", encode(&search)));
            }
            let page = api.get(&path).await?;
            api.report_items(&page, &["group", "id", "members", "source"], |g| {
                vec![
                    text(&g["display_name"]),
                    text(&g["id"]),
                    text(&g["member_count"]),
                    text(&g["source"]),
                ]
            });
            if !api.conn.json && page["next_cursor"].is_string() {
                print_line("(more groups: narrow with --search or raise --limit)");
            }
        }
        GroupAction::Create {
            name,
            member_groups,
        } => {
            let ids = api.group_ids(&member_groups).await?;
            let created = api
                .post(
                    &api.scoped("/groups")?,
                    &json!({"display_name": name, "member_groups": ids}),
                )
                .await?;
            api.report(&created, |created| {
                format!(
                    "created group {} ({})",
                    text(&created["display_name"]),
                    text(&created["id"])
                )
            });
        }
        GroupAction::Delete { group, force } => {
            let id = api.group_id(&group).await?;
            delete_group(
                &api,
                &format!("/groups/{id}"),
                &format!("group {group}"),
                force,
            )
            .await?;
        }
    }
    Ok(())
}

/// Runs `entitle users`.
pub(super) async fn users(api: Api, action: UserAction) -> anyhow::Result<()> {
    let body = match action {
        UserAction::Create {
            user_name,
            display_name,
            groups,
        } => {
            let ids = api.group_ids(&groups).await?;
            api.post(
                &api.scoped("/users")?,
                &json!({"user_name": user_name, "display_name": display_name, "groups": ids}),
            )
            .await?
        }
        UserAction::Show { user_name } => {
            api.get(&api.scoped(&format!("/users/{}", encode(&user_name)))?)
                .await?
        }
        UserAction::Deactivate { user_name } => set_active(&api, &user_name, false).await?,
        UserAction::Activate { user_name } => set_active(&api, &user_name, true).await?,
    };
    if api.conn.json {
        print_json(&body);
    } else {
        print_table(
            &["user", "id", "active", "groups"],
            vec![vec![
                text(&body["user_name"]),
                text(&body["id"]),
                text(&body["active"]),
                text(&body["groups"]),
            ]],
        );
    }
    Ok(())
}

/// Runs `entitle directory`: the directory's sync status.
pub(super) async fn status(api: Api) -> anyhow::Result<()> {
    let status = api.get(&api.scoped("/directory/status")?).await?;
    if api.conn.json {
        print_json(&status);
    } else {
        print_table(
            &["users", "groups", "last SCIM request", "SCIM base path"],
            vec![vec![
                text(&status["users"]),
                text(&status["groups"]),
                status["last_scim_request_at"]
                    .as_str()
                    .unwrap_or("never")
                    .to_owned(),
                text(&status["scim_base_path"]),
            ]],
        );
    }
    Ok(())
}

async fn set_active(api: &Api, user_name: &str, active: bool) -> anyhow::Result<Value> {
    let path = api.scoped(&format!("/users/{}", encode(user_name)))?;
    api.patch(&path, &json!({"active": active})).await
}

impl Api {
    /// Group ids from names or ids, in their order.
    pub(super) async fn group_ids(&self, names_or_ids: &[String]) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for name_or_id in names_or_ids {
            ids.push(self.group_id(name_or_id).await?);
        }
        Ok(ids)
    }

    /// A group id from a name or an id.
    pub(super) async fn group_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let path = self.scoped(&format!("/groups?limit=200&search={}", encode(name_or_id)))?;
        let page = self.get(&path).await?;
        let items = array(&page["items"]);
        if let Some(found) = items.iter().find(|g| {
            g["display_name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name_or_id))
        }) {
            return Ok(found["id"].as_str().unwrap_or_default().to_owned());
        }
        match self
            .get(&self.scoped(&format!("/groups/{}", encode(name_or_id)))?)
            .await
        {
            Ok(group) => Ok(group["id"].as_str().unwrap_or_default().to_owned()),
            Err(_) => {
                bail!("no group is named or has the id {name_or_id:?}; see `entitle groups list`")
            }
        }
    }
}
