//! `entitle enrollment-keys`: scoped enrollment keys, and the tenant's own.

use clap::Subcommand;
use serde_json::json;

use super::{Api, encode, text};

/// What `entitle enrollment-keys` does.
#[derive(Subcommand, Debug)]
pub enum EnrollmentKeyAction {
    /// List scoped enrollment keys (never their secrets).
    List,
    /// Create a scoped key; its secret is shown once.
    Create {
        /// What administrators call it.
        name: String,
        /// Ownership every device enrolled with it gets: corporate or personal.
        #[arg(long)]
        ownership: Option<String>,
        /// Refused after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Refused after this many enrollments.
        #[arg(long)]
        max_uses: Option<u32>,
    },
    /// Revoke a key at once (devices enrolled with it stay).
    Revoke {
        /// Key id.
        id: String,
    },
    /// Replace the tenant's own enrollment key (the one shown when the tenant
    /// was made); the old one stops enrolling at once, enrolled devices stay.
    RotateTenantKey,
}

/// Runs `entitle enrollment-keys`.
pub(super) async fn run(api: Api, action: EnrollmentKeyAction) -> anyhow::Result<()> {
    match action {
        EnrollmentKeyAction::List => {
            let list = api.get(&api.scoped("/enrollment-keys")?).await?;
            api.report_items(
                &list,
                &["id", "name", "ownership", "uses", "expires", "usable"],
                |k| {
                    vec![
                        text(&k["id"]),
                        text(&k["name"]),
                        text(&k["ownership"]),
                        format!("{}/{}", text(&k["uses"]), text(&k["max_uses"])),
                        text(&k["expires_at"]),
                        if k["usable"] == true {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                    ]
                },
            );
        }
        EnrollmentKeyAction::Create {
            name,
            ownership,
            expires_in_days,
            max_uses,
        } => {
            let body = json!({"name": name, "ownership": ownership,
                              "expires_in_days": expires_in_days, "max_uses": max_uses});
            let created = api.post(&api.scoped("/enrollment-keys")?, &body).await?;
            api.report(&created, |created| {
                format!(
                    "enrollment key {} ({}): {}\nshown once; agents present it as --enrollment-key",
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["enrollment_key"])
                )
            });
        }
        EnrollmentKeyAction::Revoke { id } => {
            let answer = api
                .delete(&api.scoped(&format!("/enrollment-keys/{}", encode(&id)))?)
                .await?;
            api.report(&answer, |_| format!("revoked enrollment key {id}"));
        }
        EnrollmentKeyAction::RotateTenantKey => {
            let rotated = api
                .post(&api.scoped("/enrollment-key/rotate")?, &json!({}))
                .await?;
            api.report(&rotated, |rotated| {
                format!(
                    "the tenant's enrollment key is now {}\nshown once; the old key no longer enrolls",
                    text(&rotated["enrollment_key"])
                )
            });
        }
    }
    Ok(())
}
