//! Bulk seeding for `entitle bench` at scale (a million users, a million
//! devices): one statement per 100,000 rows, written once for both back ends.
//! No audit entries and no data-version bump: this seeds a measurement before
//! the server starts, it is not an administrator's change.

use time::OffsetDateTime;

use super::SqlStore;
use crate::StoreResult;
use crate::dialect::{query, query_built};

/// Rows written per statement.
const BATCH: i64 = 100_000;

impl SqlStore {
    /// For `entitle bench` only: creates `count` users named
    /// `user{i}@bench.test` (numbered from `first`), and makes user `i` a
    /// direct member of `groups[i % groups.len()]` (no membership when
    /// `groups` is empty). The groups must exist in the tenant.
    pub async fn seed_bench_users(
        &self,
        tenant_id: &str,
        first: i64,
        count: i64,
        groups: &[String],
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let (new_id, _) = self.db.bench_sql();
        let users = format!(
            "WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $3)
             INSERT INTO users (id, tenant_id, user_name, user_name_key, display_name,
                                external_id, active, source, version, created_at, updated_at)
             SELECT {new_id}, $1, 'user' || n.i || '@bench.test', 'user' || n.i || '@bench.test',
                    'User ' || n.i, 'bench-' || n.i, TRUE, 'local', 1, $4, $4
             FROM n"
        );
        let memberships =
            "WITH RECURSIVE n(i) AS (SELECT $2 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $3)
             INSERT INTO user_memberships (group_id, user_id)
             SELECT $4, u.id FROM n JOIN users u
                 ON u.tenant_id = $1 AND u.deleted_at IS NULL
                AND u.user_name_key = 'user' || n.i || '@bench.test'
             WHERE n.i % $5 = $6";
        let modulus = groups.len() as i64;
        let mut start = first;
        let end = first + count;
        while start < end {
            let stop = (start + BATCH).min(end);
            let mut tx = self.db.write().await?;
            query_built(users.clone())
                .id(tenant_id)
                .bind(start)
                .bind(stop)
                .time(at)
                .execute(&mut tx)
                .await?;
            // Statistics that count the rows just written (PostgreSQL's
            // ANALYZE sees its own transaction's): without them the planner
            // takes the new users for a few rows and joins each membership
            // by a scan of them all (minutes per batch at 100,000).
            query("ANALYZE users").execute(&mut tx).await?;
            for (index, group) in groups.iter().enumerate() {
                query(memberships)
                    .id(tenant_id)
                    .bind(start)
                    .bind(stop)
                    .id(group)
                    .bind(modulus)
                    .bind(index as i64)
                    .execute(&mut tx)
                    .await?;
            }
            tx.commit().await?;
            start = stop;
        }
        query("ANALYZE").execute(&self.db).await?;
        Ok(())
    }
}
