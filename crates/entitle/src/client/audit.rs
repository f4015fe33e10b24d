//! `entitle audit`: the audit log, newest first.

use super::{Api, text};

/// Runs `entitle audit`.
pub(super) async fn run(api: Api, limit: u32) -> anyhow::Result<()> {
    let page = api
        .get(&api.scoped(&format!("/audit?limit={limit}"))?)
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
