//! Client commands: every admin API resource from the command line, as tables
//! for people or `--json` for scripts. This module holds the connection flags,
//! the command tree and the HTTP and printing helpers; one module per resource
//! holds its subcommands and their handlers.

mod accounts;
mod audit;
mod changes;
mod device_groups;
mod devices;
mod directory;
mod enrollment_keys;
mod entitlements;
mod grants;
mod tenants;
mod tokens;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{ContentArrangement, Table};
use reqwest::{Method, StatusCode};
use serde_json::Value;

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
    /// A private CA's certificate (PEM), trusted beside the system's CAs, for
    /// an `https://` server whose certificate it signed.
    #[arg(long, env = "ENTITLE_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
}

/// The client commands.
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Tenants: create (super admin), list, show.
    Tenants {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: tenants::TenantAction,
    },
    /// API tokens of a tenant.
    Tokens {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: tokens::TokenAction,
    },
    /// Portal accounts of a tenant: list, invite, create, role, disable, enable, passwords, sessions.
    Accounts {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: accounts::AccountAction,
    },
    /// Directory groups.
    Groups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: directory::GroupAction,
    },
    /// Directory users.
    Users {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: directory::UserAction,
    },
    /// Device groups (rules over device reports).
    DeviceGroups {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: device_groups::DeviceGroupAction,
    },
    /// Entitlement settings: show, set, preview, history, rollback.
    Entitlements {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: entitlements::EntitlementAction,
    },
    /// Enrolled devices and why each service is on or off.
    Devices {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: devices::DeviceAction,
    },
    /// Scoped enrollment keys: which ownership they attest, expiry, uses.
    EnrollmentKeys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: enrollment_keys::EnrollmentKeyAction,
    },
    /// The audit log, newest first.
    Audit {
        #[command(flatten)]
        conn: Conn,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        filters: audit::AuditFilters,
    },
    /// Scheduled entitlement changes (`entitlements set --apply-at`): list, cancel.
    Changes {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: changes::ChangeAction,
    },
    /// Time-bound grants of a service to one user: create, list, revoke.
    Grants {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        action: grants::GrantAction,
    },
    /// The directory's sync status.
    Directory {
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs a client command.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Tenants { conn, action } => tenants::run(Api::new(conn)?, action).await,
        ClientCommand::Tokens { conn, action } => tokens::run(Api::new(conn)?, action).await,
        ClientCommand::Accounts { conn, action } => accounts::run(Api::new(conn)?, action).await,
        ClientCommand::Groups { conn, action } => directory::groups(Api::new(conn)?, action).await,
        ClientCommand::Users { conn, action } => directory::users(Api::new(conn)?, action).await,
        ClientCommand::DeviceGroups { conn, action } => {
            device_groups::run(Api::new(conn)?, action).await
        }
        ClientCommand::Entitlements { conn, action } => {
            entitlements::run(Api::new(conn)?, action).await
        }
        ClientCommand::Devices { conn, action } => devices::run(Api::new(conn)?, action).await,
        ClientCommand::EnrollmentKeys { conn, action } => {
            enrollment_keys::run(Api::new(conn)?, action).await
        }
        ClientCommand::Audit {
            conn,
            limit,
            filters,
        } => audit::run(Api::new(conn)?, limit, filters).await,
        ClientCommand::Directory { conn } => directory::status(Api::new(conn)?).await,
        ClientCommand::Changes { conn, action } => changes::run(Api::new(conn)?, action).await,
        ClientCommand::Grants { conn, action } => grants::run(Api::new(conn)?, action).await,
    }
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
    fn new(conn: Conn) -> anyhow::Result<Self> {
        Ok(Self {
            client: crate::tls_args::client(conn.ca_file.as_deref(), |builder| builder)?,
            conn,
        })
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
            .map_err(|error| crate::tls_args::request_failed(&url, &error))?;
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

    async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.call(Method::PATCH, path, Some(body), None).await?.body)
    }

    async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::DELETE, path, None, None).await?.body)
    }

    /// Prints an answer: the API's JSON under `--json`, else the sentence `line`
    /// makes of it.
    fn report(&self, answer: &Value, line: impl FnOnce(&Value) -> String) {
        if self.conn.json {
            print_json(answer);
        } else {
            print_line(&line(answer));
        }
    }

    /// Prints a list answer: the API's JSON under `--json`, else a table with
    /// `row` of each item.
    fn report_items(&self, answer: &Value, header: &[&str], row: impl Fn(&Value) -> Vec<String>) {
        if self.conn.json {
            print_json(answer);
        } else {
            print_table(header, array(&answer["items"]).iter().map(row).collect());
        }
    }

    fn scoped(&self, rest: &str) -> anyhow::Result<String> {
        Ok(format!("/api/v1/tenants/{}{rest}", self.tenant()?))
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

/// The elements of a JSON array; none when the value is not an array.
fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Deletes a directory or device group at `path`; with `force`, also one that
/// entitlements still select, where it stays as a deleted group that matches nothing.
async fn delete_group(api: &Api, path: &str, what: &str, force: bool) -> anyhow::Result<()> {
    let query = if force { "?force=true" } else { "" };
    let answer = api.delete(&api.scoped(&format!("{path}{query}"))?).await?;
    api.report(&answer, |answer| {
        format!(
            "deleted {what}; still selected (matching nothing) by: {}",
            text(&answer["still_selected_by"])
        )
    });
    Ok(())
}
