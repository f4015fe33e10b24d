//! Client commands: every admin API resource from the command line, as tables
//! for people or `--json` for scripts.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How to reach the server.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Server URL.
    #[arg(
        long,
        env = "ENTITLE_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// API token.
    #[arg(long, env = "ENTITLE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Tenant id or name.
    #[arg(long, env = "ENTITLE_TENANT", global = true)]
    tenant: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Tenants: create (super admin), list, show.
    Tenants {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: TenantAction,
    },
    /// API tokens of a tenant.
    Tokens {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Portal accounts of a tenant: list, create, disable, enable, passwords, sessions.
    Accounts {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: AccountAction,
    },
    /// Directory groups.
    Groups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: GroupAction,
    },
    /// Directory users.
    Users {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Device groups (rules over device reports).
    DeviceGroups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: DeviceGroupAction,
    },
    /// Entitlement settings: show, set, preview, history, rollback.
    Entitlements {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: EntitlementAction,
    },
    /// Enrolled devices and why each service is on or off.
    Devices {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Scoped enrollment keys: which ownership they attest, expiry, uses.
    EnrollmentKeys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: EnrollmentKeyAction,
    },
    /// The audit log, newest first.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// The directory's sync status.
    Directory {
        #[command(flatten)]
        conn: Conn,
    },
}

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

#[derive(Subcommand, Debug)]
pub enum DeviceGroupAction {
    /// List device groups with how many devices match.
    List,
    /// Create a device group.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
        /// Allowed OS (windows, macos, linux, ios, android); repeatable; none = any.
        #[arg(long)]
        os: Vec<String>,
        /// Allowed ownership (corporate, personal); repeatable; none = any.
        #[arg(long)]
        ownership: Vec<String>,
        /// Required fact: `key=value` or `key>=version`; repeatable.
        #[arg(long)]
        posture: Vec<String>,
    },
    /// Delete a device group (name or id); refused while an entitlement selects it.
    Delete {
        /// Name or id.
        group: String,
        /// Delete it anyway: entitlements keep it as a deleted group that matches nothing.
        #[arg(long)]
        force: bool,
    },
}

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
}

#[derive(Subcommand, Debug)]
pub enum EntitlementAction {
    /// Show every service's settings, or one service's.
    Show {
        /// Only this service.
        service: Option<String>,
    },
    /// Change a service's settings (reads them, applies the flags, saves with If-Match).
    Set(SettingsChange),
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
    },
}

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
}

struct Api {
    client: reqwest::Client,
    conn: Conn,
}

struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

impl Api {
    fn new(conn: Conn) -> Self {
        Self {
            client: reqwest::Client::new(),
            conn,
        }
    }

    fn tenant(&self) -> anyhow::Result<&str> {
        self.conn
            .tenant
            .as_deref()
            .context("say which tenant with --tenant or ENTITLE_TENANT")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.conn.server.trim_end_matches('/'));
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.conn.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}; is `entitle serve` running?"))?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = body["error"]["message"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_owned);
            let code = body["error"]["code"].as_str().unwrap_or("error");
            bail!("{} ({code}): {message}", status.as_u16());
        }
        Ok(Answer { status, etag, body })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None, None).await?.body)
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.call(Method::POST, path, Some(body), None).await?.body)
    }

    fn scoped(&self, rest: &str) -> anyhow::Result<String> {
        Ok(format!("/api/v1/tenants/{}{rest}", self.tenant()?))
    }

    /// A group id from a name or an id.
    async fn group_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let path = self.scoped(&format!("/groups?limit=200&search={}", encode(name_or_id)))?;
        let page = self.get(&path).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
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

    /// A device group id from a name or an id.
    async fn device_group_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let list = self.get(&self.scoped("/device-groups")?).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .find(|g| g["id"].as_str() == Some(name_or_id) || g["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name_or_id)))
            .and_then(|g| g["id"].as_str().map(str::to_owned))
            .with_context(|| format!("no device group is named or has the id {name_or_id:?}; see `entitle device-groups list`"))
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[allow(clippy::print_stdout)]
fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[allow(clippy::print_stdout)]
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = Table::new();
    table
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}

#[allow(clippy::print_stdout)]
fn print_line(text: &str) {
    println!("{text}");
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Runs a client command.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Tenants { conn, action } => tenants(Api::new(conn), action).await,
        ClientCommand::Tokens { conn, action } => tokens(Api::new(conn), action).await,
        ClientCommand::Accounts { conn, action } => accounts(Api::new(conn), action).await,
        ClientCommand::Groups { conn, action } => groups(Api::new(conn), action).await,
        ClientCommand::Users { conn, action } => users(Api::new(conn), action).await,
        ClientCommand::DeviceGroups { conn, action } => device_groups(Api::new(conn), action).await,
        ClientCommand::Entitlements { conn, action } => entitlements(Api::new(conn), action).await,
        ClientCommand::Devices { conn, action } => devices(Api::new(conn), action).await,
        ClientCommand::EnrollmentKeys { conn, action } => {
            enrollment_keys(Api::new(conn), action).await
        }
        ClientCommand::Audit { conn, limit } => audit(Api::new(conn), limit).await,
        ClientCommand::Directory { conn } => directory(Api::new(conn)).await,
    }
}

async fn tenants(api: Api, action: TenantAction) -> anyhow::Result<()> {
    let body = match action {
        TenantAction::Create { name, created_at } => {
            let mut body = json!({"name": name});
            if let Some(at) = created_at {
                body["created_at"] = Value::String(at);
            }
            let created = api.post("/api/v1/tenants", &body).await?;
            if !api.conn.json {
                print_table(
                    &["field", "value"],
                    ["id", "name", "created_at", "enrollment_key", "scim_token"]
                        .iter()
                        .map(|k| vec![(*k).to_owned(), text(&created[*k])])
                        .collect(),
                );
                print_line("The enrollment key and SCIM token are shown only now: keep them.");
                return Ok(());
            }
            created
        }
        TenantAction::List => {
            let list = api.get("/api/v1/tenants").await?;
            if !api.conn.json {
                let rows = list["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|t| {
                        vec![
                            text(&t["name"]),
                            text(&t["id"]),
                            text(&t["created_at"]),
                            text(&t["config_version"]),
                        ]
                    })
                    .collect();
                print_table(&["name", "id", "created_at", "config_version"], rows);
                return Ok(());
            }
            list
        }
        TenantAction::Show => api.get(&api.scoped("")?).await?,
    };
    print_json(&body);
    Ok(())
}

async fn tokens(api: Api, action: TokenAction) -> anyhow::Result<()> {
    match action {
        TokenAction::List { super_admin } => {
            let path = if super_admin {
                "/api/v1/tokens".to_owned()
            } else {
                api.scoped("/tokens")?
            };
            let list = api.get(&path).await?;
            if api.conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|t| {
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
                        })
                        .collect()
                })
                .unwrap_or_default();
            print_table(
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
                rows,
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
            if api.conn.json {
                print_json(&created);
            } else {
                let expiry = match created["expires_at"].as_str() {
                    Some(at) => format!(", expires {at}"),
                    None => String::new(),
                };
                print_line(&format!(
                    "{} token {} (id {}{expiry}), shown only now: {}",
                    text(&created["role"]),
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["token"])
                ));
            }
        }
        TokenAction::Revoke { id, super_admin } => {
            let path = if super_admin {
                format!("/api/v1/tokens/{}", encode(&id))
            } else {
                api.scoped(&format!("/tokens/{}", encode(&id)))?
            };
            let revoked = api.call(Method::DELETE, &path, None, None).await?.body;
            if api.conn.json {
                print_json(&revoked);
            } else {
                print_line(&format!(
                    "revoked token {} ({})",
                    text(&revoked["name"]),
                    text(&revoked["id"])
                ));
            }
        }
    }
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

async fn accounts(api: Api, action: AccountAction) -> anyhow::Result<()> {
    let (account, body) = match action {
        AccountAction::List => {
            let list = api.get(&api.scoped("/accounts")?).await?;
            if api.conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|a| {
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
                        })
                        .collect()
                })
                .unwrap_or_default();
            print_table(&["id", "email", "role", "state", "created"], rows);
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
            if api.conn.json {
                print_json(&created);
            } else {
                print_line(&format!(
                    "created {} account {} ({})",
                    text(&created["role"]),
                    text(&created["email"]),
                    text(&created["id"])
                ));
            }
            return Ok(());
        }
        AccountAction::Disable { account } => (account, json!({"disabled": true})),
        AccountAction::Enable { account } => (account, json!({"disabled": false})),
        AccountAction::SetPassword { account } => {
            let password = password_from_stdin()?;
            let id = account_id(&api, &account).await?;
            let path = api.scoped(&format!("/accounts/{}/password", encode(&id)))?;
            api.call(
                Method::POST,
                &path,
                Some(&json!({"password": password})),
                None,
            )
            .await?;
            print_line(&format!(
                "password of {account} set; its sessions have ended"
            ));
            return Ok(());
        }
        AccountAction::EndSessions { account } => {
            let id = account_id(&api, &account).await?;
            let path = api.scoped(&format!("/accounts/{}/sessions", encode(&id)))?;
            let ended = api.call(Method::DELETE, &path, None, None).await?.body;
            if api.conn.json {
                print_json(&ended);
            } else {
                print_line(&format!(
                    "ended {} session(s) of {account}",
                    text(&ended["ended"])
                ));
            }
            return Ok(());
        }
    };
    let id = account_id(&api, &account).await?;
    let path = api.scoped(&format!("/accounts/{}", encode(&id)))?;
    let changed = api
        .call(Method::PATCH, &path, Some(&body), None)
        .await?
        .body;
    if api.conn.json {
        print_json(&changed);
    } else {
        let state = if changed["disabled"] == json!(true) {
            "disabled"
        } else {
            "enabled"
        };
        print_line(&format!("{} is {state}", text(&changed["email"])));
    }
    Ok(())
}

/// An account id from an email or an id.
async fn account_id(api: &Api, email_or_id: &str) -> anyhow::Result<String> {
    let list = api.get(&api.scoped("/accounts")?).await?;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
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

async fn groups(api: Api, action: GroupAction) -> anyhow::Result<()> {
    match action {
        GroupAction::List { search, limit } => {
            let mut path = api.scoped(&format!("/groups?limit={limit}"))?;
            if let Some(search) = search {
                path.push_str(&format!("&search={}", encode(&search)));
            }
            let page = api.get(&path).await?;
            if api.conn.json {
                print_json(&page);
                return Ok(());
            }
            let rows = page["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|g| {
                    vec![
                        text(&g["display_name"]),
                        text(&g["id"]),
                        text(&g["member_count"]),
                        text(&g["source"]),
                    ]
                })
                .collect();
            print_table(&["group", "id", "members", "source"], rows);
            if page["next_cursor"].is_string() {
                print_line("(more groups: narrow with --search or raise --limit)");
            }
        }
        GroupAction::Create {
            name,
            member_groups,
        } => {
            let mut ids = Vec::new();
            for group in &member_groups {
                ids.push(api.group_id(group).await?);
            }
            let created = api
                .post(
                    &api.scoped("/groups")?,
                    &json!({"display_name": name, "member_groups": ids}),
                )
                .await?;
            if api.conn.json {
                print_json(&created)
            } else {
                print_line(&format!(
                    "created group {} ({})",
                    text(&created["display_name"]),
                    text(&created["id"])
                ))
            }
        }
        GroupAction::Delete { group, force } => {
            let id = api.group_id(&group).await?;
            let answer = api
                .call(
                    Method::DELETE,
                    &api.scoped(&format!("/groups/{id}{}", force_query(force)))?,
                    None,
                    None,
                )
                .await?;
            if api.conn.json {
                print_json(&answer.body)
            } else {
                print_line(&format!(
                    "deleted group {group}; still selected (matching nothing) by: {}",
                    text(&answer.body["still_selected_by"])
                ))
            }
        }
    }
    Ok(())
}

async fn users(api: Api, action: UserAction) -> anyhow::Result<()> {
    let body = match action {
        UserAction::Create {
            user_name,
            display_name,
            groups,
        } => {
            let mut ids = Vec::new();
            for group in &groups {
                ids.push(api.group_id(group).await?);
            }
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

async fn set_active(api: &Api, user_name: &str, active: bool) -> anyhow::Result<Value> {
    let path = api.scoped(&format!("/users/{}", encode(user_name)))?;
    Ok(api
        .call(Method::PATCH, &path, Some(&json!({"active": active})), None)
        .await?
        .body)
}

fn posture_rule(text: &str) -> anyhow::Result<Value> {
    let (key, op, value) = if let Some((key, value)) = text.split_once(">=") {
        (key, "gte", value)
    } else if let Some((key, value)) = text.split_once('=') {
        (key, "eq", value)
    } else {
        bail!("posture rule {text:?} must be key=value or key>=version");
    };
    let value = match value.trim() {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        other => Value::String(other.to_owned()),
    };
    Ok(json!({"key": key.trim(), "op": op, "value": value}))
}

async fn device_groups(api: Api, action: DeviceGroupAction) -> anyhow::Result<()> {
    match action {
        DeviceGroupAction::List => {
            let list = api.get(&api.scoped("/device-groups")?).await?;
            if api.conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|g| {
                    let posture: Vec<String> = g["posture"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|r| {
                            format!(
                                "{} {} {}",
                                text(&r["key"]),
                                if r["op"] == "gte" { ">=" } else { "=" },
                                text(&r["value"])
                            )
                        })
                        .collect();
                    vec![
                        text(&g["name"]),
                        text(&g["id"]),
                        text(&g["os"]),
                        text(&g["ownership"]),
                        posture.join(", "),
                        text(&g["matching_devices"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "device group",
                    "id",
                    "os",
                    "ownership",
                    "posture",
                    "devices",
                ],
                rows,
            );
        }
        DeviceGroupAction::Create {
            name,
            os,
            ownership,
            posture,
        } => {
            let posture = posture
                .iter()
                .map(|p| posture_rule(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let created = api
                .post(
                    &api.scoped("/device-groups")?,
                    &json!({"name": name, "os": os, "ownership": ownership, "posture": posture}),
                )
                .await?;
            if api.conn.json {
                print_json(&created)
            } else {
                print_line(&format!(
                    "created device group {} ({}); {} device(s) match now",
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["matching_devices"])
                ))
            }
        }
        DeviceGroupAction::Delete { group, force } => {
            let id = api.device_group_id(&group).await?;
            let answer = api
                .call(
                    Method::DELETE,
                    &api.scoped(&format!("/device-groups/{id}{}", force_query(force)))?,
                    None,
                    None,
                )
                .await?;
            if api.conn.json {
                print_json(&answer.body)
            } else {
                print_line(&format!(
                    "deleted device group {group}; still selected (matching nothing) by: {}",
                    text(&answer.body["still_selected_by"])
                ))
            }
        }
    }
    Ok(())
}

/// The query that asks to delete a group that entitlements still select.
fn force_query(force: bool) -> &'static str {
    if force { "?force=true" } else { "" }
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
        let mut ids = Vec::new();
        for group in &change.user_groups {
            ids.push(api.group_id(group).await?);
        }
        settings["user_groups"] = json!(ids);
    }
    if change.no_device_groups {
        settings["device_groups"] = json!([]);
    } else if !change.device_groups.is_empty() {
        let mut ids = Vec::new();
        for group in &change.device_groups {
            ids.push(api.device_group_id(group).await?);
        }
        settings["device_groups"] = json!(ids);
    }
    if let Some(logout) = change.logout_on_enable {
        settings["logout_on_enable"] = Value::Bool(logout);
    }
    Ok((settings, answer.etag))
}

async fn entitlements(api: Api, action: EntitlementAction) -> anyhow::Result<()> {
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
                    "logout_on_enable",
                ],
                rows,
            );
            print_line(&format!("config version {}", text(&all["config_version"])));
        }
        EntitlementAction::Set(change) => {
            let (settings, etag) = changed_settings(&api, &change).await?;
            let path = api.scoped(&format!("/entitlements/{}", change.service))?;
            let answer = api
                .call(Method::PUT, &path, Some(&settings), etag.as_deref())
                .await?;
            if api.conn.json {
                print_json(&answer.body)
            } else {
                let version = answer.etag.unwrap_or_default();
                print_line(&format!(
                    "saved {} as config version {}",
                    change.service,
                    version.trim_matches('"')
                ));
            }
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
            let names = group_names(&api).await?;
            let rows = history["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|v| {
                    vec![
                        text(&v["config_version"]),
                        text(&v["service"]),
                        text(&v["actor"]),
                        text(&v["at"]),
                        diff(&v["before"], &v["after"], &names),
                    ]
                })
                .collect();
            print_table(&["version", "service", "actor", "at", "change"], rows);
        }
        EntitlementAction::Rollback { config_version } => {
            let result = api
                .post(
                    &api.scoped("/entitlements/rollback")?,
                    &json!({"config_version": config_version}),
                )
                .await?;
            if api.conn.json {
                print_json(&result)
            } else {
                print_line(&format!(
                    "restored {} as it was in version {config_version}: new config version {}",
                    text(&result["service"]),
                    text(&result["config_version"])
                ))
            }
        }
    }
    Ok(())
}

fn sample_lines(sample: &Value) -> String {
    let lines: Vec<String> = sample
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect();
    lines.join("\n")
}

async fn group_names(api: &Api) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut names = std::collections::HashMap::new();
    let groups = api.get(&api.scoped("/groups?limit=200")?).await?;
    for g in groups["items"].as_array().cloned().unwrap_or_default() {
        names.insert(text(&g["id"]), text(&g["display_name"]));
    }
    let device_groups = api.get(&api.scoped("/device-groups")?).await?;
    for g in device_groups["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        names.insert(text(&g["id"]), text(&g["name"]));
    }
    Ok(names)
}

fn named(ids: &Value, names: &std::collections::HashMap<String, String>) -> String {
    let mut list: Vec<String> = ids
        .as_array()
        .cloned()
        .unwrap_or_default()
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

async fn devices(api: Api, action: DeviceAction) -> anyhow::Result<()> {
    match action {
        DeviceAction::List {
            user,
            search,
            limit,
        } => {
            let mut path = api.scoped(&format!("/devices?limit={limit}"))?;
            if let Some(user) = user {
                path.push_str(&format!("&user_name={}", encode(&user)));
            }
            if let Some(search) = search {
                path.push_str(&format!("&search={}", encode(&search)));
            }
            let page = api.get(&path).await?;
            if api.conn.json {
                print_json(&page);
                return Ok(());
            }
            let rows = page["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|d| {
                    vec![
                        text(&d["id"]),
                        text(&d["user_name"]),
                        text(&d["hostname"]),
                        text(&d["os"]),
                        text(&d["ownership"]),
                        text(&d["client_version"]),
                        text(&d["last_sync_at"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "id",
                    "user",
                    "hostname",
                    "os",
                    "ownership",
                    "client",
                    "last sync",
                ],
                rows,
            );
            if page["next_cursor"].is_string() {
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
        }
        DeviceAction::Delete { id } => {
            api.call(
                Method::DELETE,
                &api.scoped(&format!("/devices/{}", encode(&id)))?,
                None,
                None,
            )
            .await?;
            print_line(&format!("removed device {id}; its token no longer works"));
        }
        DeviceAction::Approve { ids } => {
            let answer = api
                .post(&api.scoped("/devices/approve")?, &json!({"ids": ids}))
                .await?;
            if api.conn.json {
                print_json(&answer);
            } else {
                print_line(&format!(
                    "approved: {}; not found: {}",
                    text(&answer["approved"]),
                    text(&answer["not_found"])
                ));
            }
        }
        DeviceAction::SetOwnership { id, ownership } => {
            let answer = api
                .call(
                    Method::PATCH,
                    &api.scoped(&format!("/devices/{}", encode(&id)))?,
                    Some(&json!({"ownership": ownership})),
                    None,
                )
                .await?;
            if api.conn.json {
                print_json(&answer.body);
            } else {
                print_line(&format!(
                    "{} is {} (attested by {}; reports {})",
                    text(&answer.body["hostname"]),
                    text(&answer.body["ownership"]),
                    text(&answer.body["ownership_attested_by"]),
                    text(&answer.body["reported_ownership"])
                ));
            }
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
            if api.conn.json {
                print_json(&answer);
            } else {
                print_line(&format!(
                    "device approval is {}",
                    if answer["device_approval"] == true {
                        "on"
                    } else {
                        "off"
                    }
                ));
            }
        }
    }
    Ok(())
}

async fn enrollment_keys(api: Api, action: EnrollmentKeyAction) -> anyhow::Result<()> {
    match action {
        EnrollmentKeyAction::List => {
            let list = api.get(&api.scoped("/enrollment-keys")?).await?;
            if api.conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows = list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|k| {
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
                })
                .collect();
            print_table(
                &["id", "name", "ownership", "uses", "expires", "usable"],
                rows,
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
            if api.conn.json {
                print_json(&created);
            } else {
                print_line(&format!(
                    "enrollment key {} ({}): {}\nshown once; agents present it as --enrollment-key",
                    text(&created["name"]),
                    text(&created["id"]),
                    text(&created["enrollment_key"])
                ));
            }
        }
        EnrollmentKeyAction::Revoke { id } => {
            let answer = api
                .call(
                    Method::DELETE,
                    &api.scoped(&format!("/enrollment-keys/{}", encode(&id)))?,
                    None,
                    None,
                )
                .await?;
            if api.conn.json {
                print_json(&answer.body);
            } else {
                print_line(&format!("revoked enrollment key {id}"));
            }
        }
    }
    Ok(())
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
    let items = page["items"].as_array().cloned().unwrap_or_default();
    match items.as_slice() {
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

async fn audit(api: Api, limit: u32) -> anyhow::Result<()> {
    let page = api
        .get(&api.scoped(&format!("/audit?limit={limit}"))?)
        .await?;
    if api.conn.json {
        print_json(&page);
        return Ok(());
    }
    let rows = page["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            vec![
                text(&e["at"]),
                text(&e["actor"]),
                text(&e["action"]),
                text(&e["target"]),
            ]
        })
        .collect();
    print_table(&["at", "actor", "action", "target"], rows);
    Ok(())
}

async fn directory(api: Api) -> anyhow::Result<()> {
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
