//! `entitle audit`: the audit log, newest first.

use super::{Api, print_json, print_table, text};

/// Runs `entitle audit`.
pub(super) async fn run(api: Api, limit: u32) -> anyhow::Result<()> {
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
