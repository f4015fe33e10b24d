//! `entitle audit`: the audit log, newest first, filtered by the server over
//! the whole log.

use clap::Args;

use super::{Api, encode, text};

/// Filters of `entitle audit`; each narrows the log.
#[derive(Args, Debug, Default)]
pub struct AuditFilters {
    /// The actor's principal id, or text in its name.
    #[arg(long)]
    actor: Option<String>,
    /// The action, exactly, or a prefix ending with `.` (`device.`).
    #[arg(long)]
    action: Option<String>,
    /// The target, exactly.
    #[arg(long)]
    target: Option<String>,
    /// Changes to this service's entitlement settings.
    #[arg(long)]
    service: Option<String>,
    /// Entries at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<String>,
    /// Entries before this RFC 3339 time.
    #[arg(long)]
    to: Option<String>,
    /// Text anywhere in the entry.
    #[arg(long)]
    text: Option<String>,
}

impl AuditFilters {
    fn query(&self) -> String {
        [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("service", &self.service),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.text),
        ]
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("&{name}={}", encode(v))))
        .collect()
    }
}

/// Runs `entitle audit`.
pub(super) async fn run(api: Api, limit: u32, filters: AuditFilters) -> anyhow::Result<()> {
    let page = api
        .get(&api.scoped(&format!("/audit?limit={limit}{}", filters.query()))?)
        .await?;
    api.report_items(&page, &["at", "actor", "action", "target"], |e| {
        vec![
            text(&e["at"]),
            text(&e["actor"]),
            text(&e["action"]),
            text(&e["target"]),
        ]
    });
    Ok(())
}
