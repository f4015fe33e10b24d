//! `entitle tokens`: a tenant's API tokens, or the super admin tokens.

use clap::Subcommand;
use serde_json::json;

use super::{Api, encode, text};

/// What `entitle tokens` does.
#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// List the tenant's API tokens (never their secrets), or the super admin tokens.
    List {
        /// The super admin tokens instead of the tenant's.
        #[arg(long = "super")]
        super_admin: bool,
    },
    /// Create an API token; prints it once.
    Create {
        /// A name for the token (shown in the audit log).
        #[arg(long)]
        name: String,
        /// admin, viewer, or super_admin (a token for every tenant; needs a super admin token).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Days until the token stops working.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in_days: Option<u32>,
        /// When the token stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a token at once, by id (see `entitle tokens list`).
    Revoke {
        /// The token's id.
        id: String,
        /// A super admin token instead of one of the tenant's.
        #[arg(long = "super")]
        super_admin: bool,
    },
}

/// Runs `entitle tokens`.
pub(super) async fn run(api: Api, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::List { super_admin } => {
            let path = if super_admin {
                "/api/v1/tokens".to_owned()
            } else {
                api.scoped("/tokens")?
            };
            let list = api.get(&path).await?;
            api.report_items(
                &list,
                &[
                    "id",
                    "name",
                    "role",
                    "status",
                    "created",
                    "by",
                    "expires",
                    "last used",
                ],
                |t| {
                    [
                        "id",
                        "name",
                        "role",
                        "status",
                        "created_at",
                        "created_by",
                        "expires_at",
                        "last_used_at",
                    ]
                    .iter()
                    .map(|field| text(&t[*field]))
                    .collect()
                },
            );
        }
        TokenAction::Create {
            name,
            role,
            expires_in_days,
            expires_at,
        } => {
            let mut body = json!({"name": name});
            if let Some(days) = expires_in_days {
                body["expires_in_days"] = json!(days);
            }
            if let Some(at) = expires_at {
                body["expires_at"] = json!(at);
            }
            let path = if role == "super_admin" {
                "/api/v1/tokens".to_owned()
            } else {
                body["role"] = json!(role);
                api.scoped("/tokens")?
            };
            let created = api.post(&path, &body).await?;
            api.report(&created, |created| {
                let expiry = match created["expires_at"].as_str() {
                    Some(at) => format!(", expires {at}"),
                    None => String::new(),
                };
                format!(
                    "{} token {} (id {}{expiry}), shown only now: {}",
                    text(&created["role"]),
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["token"])
                )
            });
        }
        TokenAction::Revoke { id, super_admin } => {
            let path = if super_admin {
                format!("/api/v1/tokens/{}", encode(&id))
            } else {
                api.scoped(&format!("/tokens/{}", encode(&id)))?
            };
            let revoked = api.delete(&path).await?;
            api.report(&revoked, |revoked| {
                format!(
                    "revoked token {} ({})",
                    text(&revoked["name"]),
                    text(&revoked["id"])
                )
            });
        }
    }
    Ok(())
}
