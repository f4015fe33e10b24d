//! `entitle grants`: time-bound grants of a service to one user (optionally
//! one device), with a justification; they end by themselves.

use clap::Subcommand;
use serde_json::json;

use super::{Api, encode, text};

/// What `entitle grants` does.
#[derive(Subcommand, Debug)]
pub enum GrantAction {
    /// Grant a user a service for a while.
    Create {
        /// The user: login name or id.
        #[arg(long)]
        user: String,
        /// The service: internet_access, private_access or digital_experience.
        #[arg(long)]
        service: String,
        /// How many hours (at most 720); or give --until.
        #[arg(long, conflicts_with = "until")]
        hours: Option<u32>,
        /// Until this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// From this time (RFC 3339) instead of now.
        #[arg(long)]
        starts_at: Option<String>,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        justification: String,
        /// Only this device of the user's (its id).
        #[arg(long)]
        device: Option<String>,
        /// Give the service even if an exclusion group excludes the user or device.
        #[arg(long)]
        override_exclusions: bool,
    },
    /// Grants, newest first, with their state now.
    List {
        /// Only active, upcoming, ended or revoked grants.
        #[arg(long)]
        state: Option<String>,
    },
    /// End a grant now.
    Revoke {
        /// Grant id.
        id: String,
    },
}

/// Runs `entitle grants`.
pub(super) async fn run(api: Api, action: GrantAction) -> anyhow::Result<()> {
    match action {
        GrantAction::Create {
            user,
            service,
            hours,
            until,
            starts_at,
            justification,
            device,
            override_exclusions,
        } => {
            if hours.is_none() && until.is_none() {
                anyhow::bail!("say how long with --hours N or --until TIME");
            }
            let body = json!({
                "user": user,
                "service": service,
                "duration": hours.map(|h| format!("{h}h")),
                "ends_at": until,
                "starts_at": starts_at,
                "justification": justification,
                "device_id": device,
                "overrides_exclusions": override_exclusions,
            });
            let created = api.post(&api.scoped("/grants")?, &body).await?;
            api.report(&created, |g| {
                format!(
                    "granted {} to {} from {} until {} (grant {}, {})",
                    text(&g["service"]),
                    text(&g["user_name"]),
                    text(&g["starts_at"]),
                    text(&g["ends_at"]),
                    text(&g["id"]),
                    text(&g["state"])
                )
            });
        }
        GrantAction::List { state } => {
            let query = state
                .map(|s| format!("?state={}", encode(&s)))
                .unwrap_or_default();
            let list = api.get(&api.scoped(&format!("/grants{query}"))?).await?;
            api.report_items(
                &list,
                &[
                    "id",
                    "user",
                    "service",
                    "device",
                    "from",
                    "until",
                    "state",
                    "by",
                    "justification",
                ],
                |g| {
                    vec![
                        text(&g["id"]),
                        text(&g["user_name"]),
                        text(&g["service"]),
                        text(&g["device_id"]),
                        text(&g["starts_at"]),
                        text(&g["ends_at"]),
                        text(&g["state"]),
                        text(&g["created_by"]["name"]),
                        text(&g["justification"]),
                    ]
                },
            );
        }
        GrantAction::Revoke { id } => {
            let answer = api
                .delete(&api.scoped(&format!("/grants/{}", encode(&id)))?)
                .await?;
            api.report(&answer, |g| {
                format!(
                    "revoked the grant of {} to {}",
                    text(&g["service"]),
                    text(&g["user_name"])
                )
            });
        }
    }
    Ok(())
}
