//! `PopulationStore` for both back ends: the columns a decision reads, a
//! slice of the user-id space at a time.

use async_trait::async_trait;

use super::SqlStore;
use crate::codec::{attested_from_columns, report_from_json};
use crate::dialect::{Row, query_built};
use crate::{PopulationDevice, PopulationStore, StoreResult};

/// The first id of slice `index` of `parts` of the id space, in the form of
/// a UUID (which both back ends compare with their ids: PostgreSQL as
/// `uuid`, SQLite as text, whose ids are lower-case hex either way).
fn boundary(index: usize, parts: usize) -> String {
    let start = (index as u64).saturating_mul(1 << 32) / parts.max(1) as u64;
    format!("{start:08x}-0000-0000-0000-000000000000")
}

#[async_trait]
impl PopulationStore for SqlStore {
    async fn decision_population(
        &self,
        tenant_id: &str,
        part: usize,
        parts: usize,
    ) -> StoreResult<Vec<PopulationDevice>> {
        let parts = parts.max(1);
        let lower = if part == 0 {
            ""
        } else {
            " AND d.user_id >= $2"
        };
        let upper = if part + 1 >= parts {
            ""
        } else if part == 0 {
            " AND d.user_id < $2"
        } else {
            " AND d.user_id < $3"
        };
        let mut select = query_built(format!(
            "SELECT d.user_id, u.user_name, d.report_json, d.attested_ownership, d.attested_by,
                    d.pending_approval
             FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.tenant_id = $1{lower}{upper}"
        ))
        .id(tenant_id);
        if part > 0 {
            select = select.id(&boundary(part, parts));
        }
        if part + 1 < parts {
            select = select.id(&boundary(part + 1, parts));
        }
        select.fetch_all_as(&self.db, population_from_row).await
    }
}

fn population_from_row(row: &Row) -> StoreResult<PopulationDevice> {
    let mut report = report_from_json(&row.json("report_json")?)?;
    if let Some(attested) =
        attested_from_columns(row.get("attested_ownership")?, row.get("attested_by")?)?
    {
        report.ownership = attested.ownership;
    }
    Ok(PopulationDevice {
        user_id: row.id("user_id")?,
        user_name: row.get("user_name")?,
        report,
        pending_approval: row.get("pending_approval")?,
    })
}

#[cfg(test)]
mod tests {
    use super::boundary;

    #[test]
    fn boundaries_split_the_id_space_in_order() {
        assert_eq!(boundary(0, 4), "00000000-0000-0000-0000-000000000000");
        assert_eq!(boundary(1, 4), "40000000-0000-0000-0000-000000000000");
        assert_eq!(boundary(3, 4), "c0000000-0000-0000-0000-000000000000");
        let bounds: Vec<String> = (0..7).map(|i| boundary(i, 7)).collect();
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
    }
}
