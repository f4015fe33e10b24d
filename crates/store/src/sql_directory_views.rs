//! Read-only views of the directory for the portal and the API: a group's
//! effective members (direct and through nested groups), a keyset page at a
//! time, written once for both back ends.
//!
//! The groups nested inside a group are found with the core's `GroupGraph`
//! (the one closure of nesting) over the tenant's nesting edges; the users are
//! then paged in the database by login name, so that a group of thousands
//! never travels whole.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use entitle_core::GroupId;

use super::{SqlStore, keyset_after, keyset_next};
use crate::dialect::{Conn, query, query_built};
use crate::{DirectoryViewStore, GroupMember, MemberCounts, Page, StoreResult};

#[async_trait]
impl DirectoryViewStore for SqlStore {
    async fn group_members(
        &self,
        tenant_id: &str,
        group_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> StoreResult<Page<GroupMember>> {
        let (after_key, after_id) = keyset_after(cursor)?;
        let mut tx = self.db.read_transaction().await?;
        let inside = nested_inside(&mut tx, tenant_id, group_id).await?;
        let groups: Vec<String> = inside.keys().map(|g| g.0.clone()).collect();
        let groups_in = tx.id_set(2);
        let rows = query_built(format!(
            "SELECT u.id, u.user_name, u.user_name_key, u.display_name, u.active FROM users u
             WHERE u.tenant_id = $1 AND u.deleted_at IS NULL
               AND u.id IN (SELECT m.user_id FROM user_memberships m WHERE m.group_id IN {groups_in})
               AND (u.user_name_key > $3 OR (u.user_name_key = $3 AND u.id > $4))
             ORDER BY u.user_name_key, u.id LIMIT $5"
        ))
        .id(tenant_id)
        .ids(&groups)
        .bind(&after_key)
        .id(&after_id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&mut tx)
        .await?;
        let shown: Vec<_> = rows.iter().take(limit as usize).collect();
        let user_ids = shown
            .iter()
            .map(|row| row.id("id"))
            .collect::<StoreResult<Vec<String>>>()?;
        // Which of the nested groups each shown user is directly in, to say
        // through which group a member belongs.
        let users_in = tx.id_set(1);
        let groups_in = tx.id_set(2);
        let mut direct: HashMap<String, Vec<GroupId>> = HashMap::new();
        if !user_ids.is_empty() {
            for row in query_built(format!(
                "SELECT user_id, group_id FROM user_memberships
                 WHERE user_id IN {users_in} AND group_id IN {groups_in}"
            ))
            .ids(&user_ids)
            .ids(&groups)
            .fetch_all(&mut tx)
            .await?
            {
                direct
                    .entry(row.id("user_id")?)
                    .or_default()
                    .push(GroupId(row.id("group_id")?));
            }
        }
        let root = GroupId(group_id.to_owned());
        let mut items = Vec::with_capacity(shown.len());
        for (row, user_id) in shown.iter().zip(user_ids) {
            let via = via(
                &inside,
                &root,
                direct.get(&user_id).map_or(&[], Vec::as_slice),
            );
            items.push(GroupMember {
                user_id,
                user_name: row.get("user_name")?,
                display_name: row.get("display_name")?,
                active: row.get("active")?,
                via,
            });
        }
        let next_cursor = keyset_next(&rows, limit, "user_name_key")?;
        tx.commit().await?;
        Ok(Page { items, next_cursor })
    }

    async fn count_group_members(
        &self,
        tenant_id: &str,
        group_id: &str,
    ) -> StoreResult<MemberCounts> {
        let mut tx = self.db.read_transaction().await?;
        let inside = nested_inside(&mut tx, tenant_id, group_id).await?;
        let groups: Vec<String> = inside.keys().map(|g| g.0.clone()).collect();
        let groups_in = tx.id_set(2);
        let row = query_built(format!(
            "SELECT COUNT(*) AS members, COALESCE(SUM(CASE WHEN u.active THEN 1 ELSE 0 END), 0) AS active
             FROM users u
             WHERE u.tenant_id = $1 AND u.deleted_at IS NULL
               AND u.id IN (SELECT m.user_id FROM user_memberships m WHERE m.group_id IN {groups_in})"
        ))
        .id(tenant_id)
        .ids(&groups)
        .fetch_one(&mut tx)
        .await?;
        tx.commit().await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(MemberCounts {
            members: count(row.get("members")?),
            active: count(row.get("active")?),
            nested_groups: inside.len().saturating_sub(1) as u64,
        })
    }
}

/// Every group nested inside `group_id` (itself included) with its path down
/// from it; `NotFound` for a group the tenant does not have.
async fn nested_inside(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    group_id: &str,
) -> StoreResult<BTreeMap<GroupId, Vec<GroupId>>> {
    query("SELECT id FROM groups WHERE tenant_id = $1 AND id = $2")
        .id(tenant_id)
        .id(group_id)
        .find(&mut *conn, "group")
        .await?;
    let graph = super::group_graph(conn, tenant_id).await?;
    Ok(graph.nested_inside(&GroupId(group_id.to_owned())))
}

/// The groups through which a user directly in `direct` belongs to `root`:
/// empty for a direct member, else the shortest chain from the user's own
/// group up to the group directly inside `root` (ties broken by id).
fn via(
    inside: &BTreeMap<GroupId, Vec<GroupId>>,
    root: &GroupId,
    direct: &[GroupId],
) -> Vec<String> {
    if direct.contains(root) {
        return Vec::new();
    }
    let shortest = direct
        .iter()
        .filter_map(|g| inside.get(g))
        .min_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    shortest.map_or_else(Vec::new, |path| {
        path.iter().skip(1).rev().map(|g| g.0.clone()).collect()
    })
}
