//! For tests only: the writes of `create_user` and `enroll_device`, many in
//! one transaction. The rows and audit entries are the same as one call each
//! would write; only the commits (each an fsync, and on PostgreSQL a snapshot
//! refresh on every node) are fewer, which is what made seeding a fleet of
//! thousands take minutes.

use super::{
    Enrollment, SqlStore, bump_data_version, insert_device, insert_user, query, tenant_row,
};
use crate::{Actor, Device, NewUser, StoreResult, User};

impl SqlStore {
    /// For tests only: deactivates a user and moves the tenant's data version
    /// without telling any node (no `NOTIFY`, no audit): a write whose
    /// notification a node missed, as while its listener reconnects.
    pub async fn deactivate_user_unannounced(
        &self,
        tenant_id: &str,
        user_id: &str,
    ) -> StoreResult<()> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        query("UPDATE users SET active = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(false)
            .id(tenant_id)
            .id(user_id)
            .execute(&mut tx)
            .await?;
        query("UPDATE tenants SET data_version = data_version + 1 WHERE id = $1")
            .id(tenant_id)
            .execute(&mut tx)
            .await?;
        tx.commit().await
    }

    /// For tests only: `create_user` for each of `users`, in one transaction
    /// with one data-version bump. Returns the users as `create_user` would.
    pub async fn create_users(
        &self,
        tenant_id: &str,
        users: &[NewUser],
        actor: &Actor,
    ) -> StoreResult<Vec<User>> {
        let mut tx = self.db.write_tenant(tenant_id).await?;
        let mut made = Vec::with_capacity(users.len());
        for user in users {
            let id = insert_user(&mut tx, tenant_id, user, actor).await?;
            let mut groups = user.groups.clone();
            groups.sort_unstable();
            groups.dedup();
            made.push(User {
                id,
                user_name: user.user_name.clone(),
                display_name: user.display_name.clone(),
                active: true,
                groups,
            });
        }
        bump_data_version(&mut tx, tenant_id, None).await?;
        tx.commit().await?;
        Ok(made)
    }

    /// For tests only: `enroll_device` without an enrollment key for each of
    /// `devices`, in one transaction.
    pub async fn enroll_devices(
        &self,
        tenant_id: &str,
        devices: &[Enrollment<'_>],
    ) -> StoreResult<Vec<Device>> {
        let mut tx = self.db.write().await?;
        let pending_approval = tenant_row(&mut tx, tenant_id).await?.device_approval;
        let mut made = Vec::with_capacity(devices.len());
        for device in devices {
            made.push(
                insert_device(&mut tx, tenant_id, device, None, None, pending_approval).await?,
            );
        }
        tx.commit().await?;
        Ok(made)
    }
}
