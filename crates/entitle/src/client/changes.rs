//! `entitle changes`: scheduled entitlement changes (`entitlements set
//! --apply-at`): pending ones by time, recent outcomes, and cancel.

use clap::Subcommand;

use super::{Api, encode, text};

/// What `entitle changes` does.
#[derive(Subcommand, Debug)]
pub enum ChangeAction {
    /// Pending changes by time, then recent outcomes (applied, conflict, failed, cancelled).
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
    },
    /// Cancel a pending change.
    Cancel {
        /// Change id (from `changes list`).
        id: String,
    },
}

/// Runs `entitle changes`.
pub(super) async fn run(api: Api, action: ChangeAction) -> anyhow::Result<()> {
    match action {
        ChangeAction::List { service } => {
            let query = service
                .map(|s| format!("?service={}", encode(&s)))
                .unwrap_or_default();
            let list = api
                .get(&api.scoped(&format!("/scheduled-changes{query}"))?)
                .await?;
            api.report_items(
                &list,
                &["id", "service", "apply_at", "status", "by", "outcome"],
                |c| {
                    vec![
                        text(&c["id"]),
                        text(&c["service"]),
                        text(&c["apply_at"]),
                        text(&c["status"]),
                        text(&c["created_by"]["name"]),
                        [text(&c["message"]), text(&c["config_version"])]
                            .into_iter()
                            .filter(|t| !t.is_empty())
                            .collect::<Vec<_>>()
                            .join("; version "),
                    ]
                },
            );
        }
        ChangeAction::Cancel { id } => {
            let answer = api
                .delete(&api.scoped(&format!("/scheduled-changes/{}", encode(&id)))?)
                .await?;
            api.report(&answer, |c| {
                format!(
                    "cancelled the change of {} due at {}",
                    text(&c["service"]),
                    text(&c["apply_at"])
                )
            });
        }
    }
    Ok(())
}
