//! `entitle accounts`: a tenant's portal accounts (invitations, roles,
//! passwords) and the sessions signed in to it.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;

use super::{Api, array, encode, print_line, text};

/// What `entitle accounts` does.
#[derive(Subcommand, Debug)]
pub enum AccountAction {
    /// List the tenant's portal accounts.
    List,
    /// Create an account; reads its password from the first line of standard input.
    Create {
        /// Sign-in email (unique in the tenant).
        #[arg(long)]
        email: String,
        /// admin or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Invite an email: an account without a password, and a link (shown
    /// once, valid 72 hours, single use) with which the invitee chooses one.
    Invite {
        /// The invitee's email.
        #[arg(long)]
        email: String,
        /// admin or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Change an account's role (the tenant's last active admin stays admin).
    Role {
        /// The account's email or id.
        account: String,
        /// admin or viewer.
        role: String,
    },
    /// List the portal sessions open in the tenant.
    Sessions,
    /// End one portal session, by the id `entitle accounts sessions` shows.
    EndSession {
        /// The session's id.
        id: String,
    },
    /// Disable an account: sign-in is refused and its sessions end.
    Disable {
        /// The account's email or id.
        account: String,
    },
    /// Enable a disabled account.
    Enable {
        /// The account's email or id.
        account: String,
    },
    /// Set an account's password (read from the first line of standard input);
    /// its sessions end.
    SetPassword {
        /// The account's email or id.
        account: String,
    },
    /// End every session of an account.
    EndSessions {
        /// The account's email or id.
        account: String,
    },
}

/// Runs `entitle accounts`.
pub(super) async fn run(api: Api, action: AccountAction) -> anyhow::Result<()> {
    let (account, body) = match action {
        AccountAction::List => {
            let list = api.get(&api.scoped("/accounts")?).await?;
            let header = ["id", "email", "role", "state", "created", "last sign-in"];
            api.report_items(&list, &header, |a| {
                vec![
                    text(&a["id"]),
                    text(&a["email"]),
                    text(&a["role"]),
                    match a["status"].as_str() {
                        Some("disabled") => format!("disabled {}", text(&a["disabled_at"])),
                        Some("invited") => {
                            format!("invited, link until {}", text(&a["invitation_expires_at"]))
                        }
                        _ => "enabled".to_owned(),
                    },
                    text(&a["created_at"]),
                    text(&a["last_sign_in_at"]),
                ]
            });
            return Ok(());
        }
        AccountAction::Invite { email, role } => {
            let invited = api
                .post(
                    &api.scoped("/invitations")?,
                    &json!({"email": email, "role": role}),
                )
                .await?;
            let server = api.conn.server.trim_end_matches('/').to_owned();
            api.report(&invited, |invited| {
                let link = invited["invitation_url"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{server}{}", text(&invited["invitation_path"])));
                format!(
                    "invited {} as {}; send them this link, valid once until {}:\n{link}",
                    text(&invited["account"]["email"]),
                    text(&invited["account"]["role"]),
                    text(&invited["expires_at"]),
                )
            });
            return Ok(());
        }
        AccountAction::Sessions => {
            let list = api.get(&api.scoped("/sessions")?).await?;
            let header = ["id", "email", "signed in", "last seen", "expires", "from"];
            api.report_items(&list, &header, |s| {
                vec![
                    text(&s["id"]),
                    text(&s["email"]),
                    text(&s["created_at"]),
                    text(&s["last_seen_at"]),
                    text(&s["expires_at"]),
                    text(&s["address"]),
                ]
            });
            return Ok(());
        }
        AccountAction::EndSession { id } => {
            let path = api.scoped(&format!("/sessions/{}", encode(&id)))?;
            api.delete(&path).await?;
            print_line(&format!("session {id} ended"));
            return Ok(());
        }
        AccountAction::Role { account, role } => (account, json!({"role": role})),
        AccountAction::Create { email, role } => {
            let password = password_from_stdin()?;
            let created = api
                .post(
                    &api.scoped("/accounts")?,
                    &json!({"email": email, "role": role, "password": password}),
                )
                .await?;
            api.report(&created, |created| {
                format!(
                    "created {} account {} ({})",
                    text(&created["role"]),
                    text(&created["email"]),
                    text(&created["id"])
                )
            });
            return Ok(());
        }
        AccountAction::Disable { account } => (account, json!({"disabled": true})),
        AccountAction::Enable { account } => (account, json!({"disabled": false})),
        AccountAction::SetPassword { account } => {
            let password = password_from_stdin()?;
            let id = account_id(&api, &account).await?;
            let path = api.scoped(&format!("/accounts/{}/password", encode(&id)))?;
            api.post(&path, &json!({"password": password})).await?;
            print_line(&format!(
                "password of {account} set; its sessions have ended"
            ));
            return Ok(());
        }
        AccountAction::EndSessions { account } => {
            let id = account_id(&api, &account).await?;
            let path = api.scoped(&format!("/accounts/{}/sessions", encode(&id)))?;
            let ended = api.delete(&path).await?;
            api.report(&ended, |ended| {
                format!("ended {} session(s) of {account}", text(&ended["ended"]))
            });
            return Ok(());
        }
    };
    let id = account_id(&api, &account).await?;
    let path = api.scoped(&format!("/accounts/{}", encode(&id)))?;
    let changed = api.patch(&path, &body).await?;
    api.report(&changed, |changed| {
        let state = if changed["disabled"] == json!(true) {
            "disabled"
        } else {
            "enabled"
        };
        format!(
            "{} is {state}, {}",
            text(&changed["email"]),
            text(&changed["role"])
        )
    });
    Ok(())
}

/// Reads a password from the first line of standard input, so that it never
/// appears in the shell's history or the process list.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("give the password on the first line of standard input");
    }
    Ok(password)
}

/// An account id from an email or an id.
async fn account_id(api: &Api, email_or_id: &str) -> anyhow::Result<String> {
    let list = api.get(&api.scoped("/accounts")?).await?;
    array(&list["items"])
        .iter()
        .find(|a| {
            a["id"].as_str() == Some(email_or_id)
                || a["email"]
                    .as_str()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email_or_id))
        })
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .with_context(|| {
            format!("no account has the email or id {email_or_id:?}; see `entitle accounts list`")
        })
}
