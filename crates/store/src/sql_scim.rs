//! SCIM storage, written once for both back ends: users, groups and
//! memberships as the identity provider manages them.

use async_trait::async_trait;
use entitle_core::GroupId;
use serde_json::{Value, json};

use super::{Audit, SqlStore, bump_data_version, duplicate, new_id, not_found};
use crate::dialect::{Conn, Param, Row, query, query_built};
use crate::{
    Actor, Counted, MemberKind, ScimGroup, ScimGroupWrite, ScimLookup, ScimMember, ScimStore,
    ScimUser, ScimUserWrite, StoreError, StoreResult, check_member_count, member_changes,
    split_members, user_update_audit,
};

const USER_COLUMNS: &str =
    "id, user_name, external_id, display_name, active, scim_json, created_at, updated_at, version";
const GROUP_COLUMNS: &str =
    "id, display_name, external_id, scim_json, created_at, updated_at, version";

fn attributes(row: &Row) -> StoreResult<Value> {
    let text = row.opt_json("scim_json")?;
    match text {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("scim attributes: {e}"))),
        None => Ok(json!({})),
    }
}

fn user_from_row(row: &Row) -> StoreResult<ScimUser> {
    Ok(ScimUser {
        id: row.id("id")?,
        user_name: row.get("user_name")?,
        external_id: row.get("external_id")?,
        display_name: row.get("display_name")?,
        active: row.get("active")?,
        attributes: attributes(row)?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        version: row.get("version")?,
    })
}

fn group_from_row(row: &Row) -> StoreResult<ScimGroup> {
    Ok(ScimGroup {
        id: row.id("id")?,
        display_name: row.get("display_name")?,
        external_id: row.get("external_id")?,
        attributes: attributes(row)?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        version: row.get("version")?,
        members: Vec::new(),
    })
}

/// A lookup as a SQL condition over static text, with its one bound value.
/// Only fixed fragments are ever put into the SQL; values are always bound.
fn condition(lookup: &ScimLookup, users: bool) -> (&'static str, Param) {
    let text = |value: String| Param::Text(Some(value));
    let id = |value: &String| Param::Id(Some(value.clone()));
    match lookup {
        ScimLookup::All => (" AND $2 IS NULL", Param::Text(None)),
        ScimLookup::Id(value) => (" AND id = $2", id(value)),
        ScimLookup::Name(name) if users => (" AND user_name_key = $2", text(name.to_lowercase())),
        ScimLookup::Name(name) => (" AND name_key = $2", text(name.to_lowercase())),
        ScimLookup::ExternalId(value) => (" AND external_id = $2", text(value.clone())),
        ScimLookup::Member(_) if users => (" AND $2 IS NULL AND false", Param::Text(None)),
        ScimLookup::Member(value) => (
            " AND id IN (SELECT group_id FROM user_memberships WHERE user_id = $2
                         UNION SELECT container_id FROM group_nesting WHERE member_id = $2)",
            id(value),
        ),
    }
}

async fn check_version(
    conn: &mut Conn<'_>,
    table: &'static str,
    tenant_id: &str,
    id: &str,
    expected: Option<i64>,
) -> StoreResult<i64> {
    let sql = match table {
        "users" => {
            "SELECT version FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
        }
        _ => "SELECT version FROM groups WHERE tenant_id = $1 AND id = $2",
    };
    let current: i64 = query(sql)
        .id(tenant_id)
        .id(id)
        .fetch_scalar(&mut *conn)
        .await
        .map_err(not_found(if table == "users" { "user" } else { "group" }))?;
    if let Some(expected) = expected
        && expected != current
    {
        return Err(StoreError::Stale { expected, current });
    }
    Ok(current)
}

/// Sorts member ids into users and groups of the tenant; unknown ids are an error.
async fn resolve_members(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    ids: &[String],
) -> StoreResult<(Vec<String>, Vec<String>)> {
    check_member_count(ids)?;
    if ids.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // One query for the whole list: a member at a time held the write lock
    // for seconds on large groups. `id IN (…)` lets SQLite use the primary
    // key; a join on `json_each` walked every user of the tenant.
    let ids_in = conn.id_set(2);
    let rows = query_built(format!(
        "SELECT id, 'user' AS kind FROM users
         WHERE tenant_id = $1 AND id IN {ids_in} AND deleted_at IS NULL
         UNION ALL
         SELECT id, 'group' AS kind FROM groups WHERE tenant_id = $1 AND id IN {ids_in}"
    ))
    .id(tenant_id)
    .ids(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut kinds = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.id("id")?;
        let kind: String = row.get("kind")?;
        kinds.entry(id).or_insert(kind);
    }
    split_members(ids, &kinds)
}

/// Refuses nesting `members` in `container` when it would close a cycle.
async fn refuse_cycles(
    conn: &mut Conn<'_>,
    tenant_id: &str,
    container: &str,
    members: &[String],
) -> StoreResult<()> {
    if members.is_empty() {
        return Ok(());
    }
    let graph = super::group_graph(conn, tenant_id).await?;
    for member in members {
        if graph.would_cycle(&GroupId(container.to_owned()), &GroupId(member.clone())) {
            return Err(StoreError::Cycle {
                container: container.to_owned(),
                member: member.clone(),
            });
        }
    }
    Ok(())
}

async fn insert_members(
    conn: &mut Conn<'_>,
    group_id: &str,
    users: &[String],
    groups: &[String],
) -> StoreResult<()> {
    for user in users {
        query("INSERT INTO user_memberships (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .id(group_id)
            .id(user)
            .execute(&mut *conn)
            .await?;
    }
    for group in groups {
        query("INSERT INTO group_nesting (container_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .id(group_id)
            .id(group)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn members_of(conn: &mut Conn<'_>, group_id: &str) -> StoreResult<Vec<ScimMember>> {
    // Users first, then groups, each by id.
    let rows = query(
        "SELECT u.id, u.user_name AS display, 'user' AS kind
           FROM user_memberships m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1
         UNION ALL
         SELECT g.id, g.display_name AS display, 'group' AS kind
           FROM group_nesting n JOIN groups g ON g.id = n.member_id WHERE n.container_id = $1
         ORDER BY kind DESC, id",
    )
    .id(group_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.get("kind")?;
            Ok(ScimMember {
                id: row.id("id")?,
                kind: if kind == "user" {
                    MemberKind::User
                } else {
                    MemberKind::Group
                },
                display: row.get("display")?,
            })
        })
        .collect()
}

/// One page of a list, ordered by creation, and how many rows match in all.
/// `from` is static SQL (`FROM … WHERE tenant_id = $1 …`) whose one other
/// parameter, `$2`, is `value`.
async fn list_page(
    store: &SqlStore,
    columns: &str,
    from: &str,
    tenant_id: &str,
    value: Param,
    page: Option<(usize, usize)>,
) -> StoreResult<(usize, Vec<Row>)> {
    let total: i64 = query_built(format!("SELECT COUNT(*) {from}"))
        .id(tenant_id)
        .bind(&value)
        .fetch_scalar(&store.db)
        .await?;
    let (offset, limit) = page.unwrap_or((0, usize::MAX >> 1));
    let rows = query_built(format!(
        "SELECT {columns} {from} ORDER BY created_at, id LIMIT $3 OFFSET $4"
    ))
    .id(tenant_id)
    .bind(value)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(i64::try_from(offset).unwrap_or(i64::MAX))
    .fetch_all(&store.db)
    .await?;
    Ok((usize::try_from(total).unwrap_or(0), rows))
}

#[async_trait]
impl ScimStore for SqlStore {
    async fn scim_create_user(
        &self,
        tenant_id: &str,
        user: ScimUserWrite,
    ) -> StoreResult<ScimUser> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let id = new_id();
        let at = self.db.now();
        query(
            "INSERT INTO users (id, tenant_id, user_name, user_name_key, display_name, external_id, active, source, scim_json, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'scim', $8, 1, $9, $10)",
        )
        .id(&id)
        .id(tenant_id)
        .bind(&user.user_name)
        .bind(user.user_name.to_lowercase())
        .bind(&user.display_name)
        .bind(&user.external_id)
        .bind(user.active)
        .json(user.attributes.to_string())
        .time(at)
        .time(at)
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate(e, "user", &user.user_name))?;
        Audit::new(
            Some(tenant_id),
            &Actor::directory(),
            "user.create",
            &user.user_name,
        )
        .after(&json!({"id": id, "active": user.active}))
        .commit_bumping(tx, tenant_id)
        .await?;
        self.scim_user(tenant_id, &id).await
    }

    async fn scim_user(&self, tenant_id: &str, id: &str) -> StoreResult<ScimUser> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
        );
        let row = query_built(sql)
            .id(tenant_id)
            .id(id)
            .find(&self.db, "user")
            .await?;
        user_from_row(&row)
    }

    async fn scim_replace_user(
        &self,
        tenant_id: &str,
        id: &str,
        user: ScimUserWrite,
        expected_version: Option<i64>,
    ) -> StoreResult<ScimUser> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        check_version(&mut tx, "users", tenant_id, id, expected_version).await?;
        let previous = query("SELECT user_name, display_name, active FROM users WHERE id = $1")
            .id(id)
            .fetch_one(&mut tx)
            .await?;
        let previous_name: String = previous.get("user_name")?;
        let previous_display: Option<String> = previous.get("display_name")?;
        let mut user = user;
        keep_deactivated(&mut user, previous.get("active")?);
        let change = user_update_audit(
            (
                &previous_name,
                previous_display.as_deref(),
                previous.get("active")?,
            ),
            &user,
        );
        query(
            "UPDATE users SET user_name = $1, user_name_key = $2, display_name = $3, external_id = $4, active = $5, scim_json = $6,
                              version = version + 1, updated_at = $7 WHERE id = $8",
        )
        .bind(&user.user_name)
        .bind(user.user_name.to_lowercase())
        .bind(&user.display_name)
        .bind(&user.external_id)
        .bind(user.active)
        .json(user.attributes.to_string())
        .time(self.db.now())
        .id(id)
        .execute(&mut tx)
        .await
        .map_err(|e| duplicate(e, "user", &user.user_name))?;
        bump_data_version(&mut tx, tenant_id, None).await?;
        if let Some((action, before, after)) = change {
            Audit::new(
                Some(tenant_id),
                &Actor::directory(),
                action,
                &user.user_name,
            )
            .before(&before)
            .after(&after)
            .write(&mut tx)
            .await?;
        }
        tx.commit().await?;
        self.scim_user(tenant_id, id).await
    }

    async fn scim_delete_user(
        &self,
        tenant_id: &str,
        id: &str,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        check_version(&mut tx, "users", tenant_id, id, expected_version).await?;
        let name: String = query("SELECT user_name FROM users WHERE id = $1")
            .id(id)
            .fetch_scalar(&mut tx)
            .await?;
        query(
            "UPDATE users SET deleted_at = $1, active = false, version = version + 1 WHERE id = $2",
        )
        .time(self.db.now())
        .id(id)
        .execute(&mut tx)
        .await?;
        query("DELETE FROM user_memberships WHERE user_id = $1")
            .id(id)
            .execute(&mut tx)
            .await?;
        Audit::new(Some(tenant_id), &Actor::directory(), "user.delete", &name)
            .before(&json!({"id": id}))
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(())
    }

    async fn scim_users(
        &self,
        tenant_id: &str,
        lookup: &ScimLookup,
        page: Option<(usize, usize)>,
    ) -> StoreResult<Counted<ScimUser>> {
        let (clause, value) = condition(lookup, true);
        let from = format!("FROM users WHERE tenant_id = $1 AND deleted_at IS NULL{clause}");
        let (total, rows) = list_page(self, USER_COLUMNS, &from, tenant_id, value, page).await?;
        Ok(Counted {
            items: rows.iter().map(user_from_row).collect::<StoreResult<_>>()?,
            total,
        })
    }

    async fn scim_create_group(
        &self,
        tenant_id: &str,
        group: ScimGroupWrite,
    ) -> StoreResult<ScimGroup> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let (users, groups) = resolve_members(&mut tx, tenant_id, &group.members).await?;
        let id = new_id();
        let at = self.db.now();
        query(
            "INSERT INTO groups (id, tenant_id, display_name, name_key, external_id, source, scim_json, version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'scim', $6, 1, $7, $8)",
        )
        .id(&id)
        .id(tenant_id)
        .bind(&group.display_name)
        .bind(group.display_name.to_lowercase())
        .bind(&group.external_id)
        .json(group.attributes.to_string())
        .time(at)
        .time(at)
        .execute(&mut tx)
        .await?;
        insert_members(&mut tx, &id, &users, &groups).await?;
        Audit::new(
            Some(tenant_id),
            &Actor::directory(),
            "group.create",
            &group.display_name,
        )
        .after(&json!({"id": id, "members": group.members.len()}))
        .commit_bumping(tx, tenant_id)
        .await?;
        self.scim_group(tenant_id, &id, true).await
    }

    async fn scim_group(
        &self,
        tenant_id: &str,
        id: &str,
        with_members: bool,
    ) -> StoreResult<ScimGroup> {
        let mut conn = self.db.read().await?;
        let sql = format!("SELECT {GROUP_COLUMNS} FROM groups WHERE tenant_id = $1 AND id = $2");
        let row = query_built(sql)
            .id(tenant_id)
            .id(id)
            .find(&mut conn, "group")
            .await?;
        let mut group = group_from_row(&row)?;
        if with_members {
            group.members = members_of(&mut conn, id).await?;
        }
        Ok(group)
    }

    async fn scim_replace_group(
        &self,
        tenant_id: &str,
        id: &str,
        group: ScimGroupWrite,
        expected_version: Option<i64>,
    ) -> StoreResult<ScimGroup> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        check_version(&mut tx, "groups", tenant_id, id, expected_version).await?;
        let (users, groups) = resolve_members(&mut tx, tenant_id, &group.members).await?;
        refuse_cycles(&mut tx, tenant_id, id, &groups).await?;
        let previous_name: String = query("SELECT display_name FROM groups WHERE id = $1")
            .id(id)
            .fetch_scalar(&mut tx)
            .await?;
        let previous_members: Vec<String> = members_of(&mut tx, id)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        query(
            "UPDATE groups SET display_name = $1, name_key = $2, external_id = $3, scim_json = $4, version = version + 1, updated_at = $5 WHERE id = $6",
        )
        .bind(&group.display_name)
        .bind(group.display_name.to_lowercase())
        .bind(&group.external_id)
        .json(group.attributes.to_string())
        .time(self.db.now())
        .id(id)
        .execute(&mut tx)
        .await?;
        query("DELETE FROM user_memberships WHERE group_id = $1")
            .id(id)
            .execute(&mut tx)
            .await?;
        query("DELETE FROM group_nesting WHERE container_id = $1")
            .id(id)
            .execute(&mut tx)
            .await?;
        insert_members(&mut tx, id, &users, &groups).await?;
        Audit::new(
            Some(tenant_id),
            &Actor::directory(),
            "group.replace",
            &group.display_name,
        )
        .before(&json!({"display_name": previous_name}))
        .after(&json!({
            "display_name": group.display_name,
            "members": member_changes(&previous_members, &group.members),
        }))
        .commit_bumping(tx, tenant_id)
        .await?;
        self.scim_group(tenant_id, id, true).await
    }

    async fn scim_change_members(
        &self,
        tenant_id: &str,
        id: &str,
        add: &[String],
        remove: &[String],
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        check_version(&mut tx, "groups", tenant_id, id, expected_version).await?;
        let (users, groups) = resolve_members(&mut tx, tenant_id, add).await?;
        refuse_cycles(&mut tx, tenant_id, id, &groups).await?;
        insert_members(&mut tx, id, &users, &groups).await?;
        for member in remove {
            query("DELETE FROM user_memberships WHERE group_id = $1 AND user_id = $2")
                .id(id)
                .id(member)
                .execute(&mut tx)
                .await?;
            query("DELETE FROM group_nesting WHERE container_id = $1 AND member_id = $2")
                .id(id)
                .id(member)
                .execute(&mut tx)
                .await?;
        }
        query("UPDATE groups SET version = version + 1, updated_at = $1 WHERE id = $2")
            .time(self.db.now())
            .id(id)
            .execute(&mut tx)
            .await?;
        let name: String = query("SELECT display_name FROM groups WHERE id = $1")
            .id(id)
            .fetch_scalar(&mut tx)
            .await?;
        Audit::new(Some(tenant_id), &Actor::directory(), "group.members", &name)
            .after(&json!({"added": add, "removed": remove}))
            .commit_bumping(tx, tenant_id)
            .await?;
        Ok(())
    }

    async fn scim_delete_group(
        &self,
        tenant_id: &str,
        id: &str,
        expected_version: Option<i64>,
    ) -> StoreResult<Vec<String>> {
        {
            let mut conn = self.db.read().await?;
            check_version(&mut conn, "groups", tenant_id, id, expected_version).await?;
        }
        crate::DirectoryStore::delete_group(self, tenant_id, id, &Actor::directory(), true).await
    }

    async fn scim_groups(
        &self,
        tenant_id: &str,
        lookup: &ScimLookup,
        page: Option<(usize, usize)>,
        with_members: bool,
    ) -> StoreResult<Counted<ScimGroup>> {
        let (clause, value) = condition(lookup, false);
        let from = format!("FROM groups WHERE tenant_id = $1{clause}");
        let (total, rows) = list_page(self, GROUP_COLUMNS, &from, tenant_id, value, page).await?;
        let mut conn = self.db.read().await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut group = group_from_row(row)?;
            if with_members {
                group.members = members_of(&mut conn, &group.id).await?;
            }
            items.push(group);
        }
        Ok(Counted { items, total })
    }
}

/// A replace (a PUT, or the result of a PATCH) that leaves `active`
/// unassigned (left out, null or removed) keeps a deactivated user
/// deactivated: only `"active": true` gives the user's devices their
/// services back (access fails closed). Decided under the write lock, so that
/// it needs no precondition of the client. An active user stays active and
/// reads back without the attribute, as the request left it.
fn keep_deactivated(user: &mut ScimUserWrite, was_active: bool) {
    let given = user
        .attributes
        .as_object()
        .is_some_and(|attributes| attributes.contains_key("active"));
    if !was_active && !given {
        user.active = false;
        if let Some(attributes) = user.attributes.as_object_mut() {
            attributes.insert("active".into(), serde_json::Value::Bool(false));
        }
    }
}
