//! `entitle tenants`: create (super admin), list, show.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Api, print_json, print_line, print_table, text};

/// What `entitle tenants` does.
#[derive(Subcommand, Debug)]
pub enum TenantAction {
    /// Create a tenant; prints its enrollment key and SCIM token once.
    Create {
        /// Short name: lower-case letters, digits, dashes.
        name: String,
        /// Creation time (RFC 3339), e.g. to keep an older tenant's defaults.
        #[arg(long)]
        created_at: Option<String>,
    },
    /// List tenants.
    List,
    /// Show the tenant given by --tenant.
    Show,
}

/// Runs `entitle tenants`.
pub(super) async fn run(api: Api, action: TenantAction) -> anyhow::Result<()> {
    match action {
        TenantAction::Create { name, created_at } => {
            let mut body = json!({"name": name});
            if let Some(at) = created_at {
                body["created_at"] = Value::String(at);
            }
            let created = api.post("/api/v1/tenants", &body).await?;
            if api.conn.json {
                print_json(&created);
            } else {
                print_table(
                    &["field", "value"],
                    ["id", "name", "created_at", "enrollment_key", "scim_token"]
                        .iter()
                        .map(|k| vec![(*k).to_owned(), text(&created[*k])])
                        .collect(),
                );
                print_line("The enrollment key and SCIM token are shown only now: keep them.");
            }
        }
        TenantAction::List => {
            let list = api.get("/api/v1/tenants").await?;
            api.report_items(
                &list,
                &["name", "id", "created_at", "config_version"],
                |t| {
                    vec![
                        text(&t["name"]),
                        text(&t["id"]),
                        text(&t["created_at"]),
                        text(&t["config_version"]),
                    ]
                },
            );
        }
        // `show` prints JSON with or without --json.
        TenantAction::Show => print_json(&api.get(&api.scoped("")?).await?),
    }
    Ok(())
}
