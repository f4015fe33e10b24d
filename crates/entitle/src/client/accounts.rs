//! `entitle accounts`: a tenant's portal accounts, their passwords and sessions.

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
            api.report_items(&list, &["id", "email", "role", "state", "created"], |a| {
                vec![
                    text(&a["id"]),
                    text(&a["email"]),
                    text(&a["role"]),
                    if a["disabled"] == json!(true) {
                        format!("disabled {}", text(&a["disabled_at"]))
                    } else {
                        "enabled".to_owned()
                    },
                    text(&a["created_at"]),
                ]
            });
            return Ok(());
        }
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
        format!("{} is {state}", text(&changed["email"]))
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
