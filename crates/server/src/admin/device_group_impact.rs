//! The impact of editing or deleting a device group, before it is done: per
//! service that selects the group, which devices would gain or lose it.
//!
//! The same core `impact` comparison as the entitlement preview, over the
//! tenant's devices as they are and as the change would move them; the
//! settings stay as saved (a deleted group stays selected as a tombstone that
//! matches nothing, so its devices lose what it gave them: access fails closed).

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use entitle_core::{
    DeviceGroup, DeviceGroupId, GroupId, GroupNames, MovedEntry, SERVICES, ServiceDef, decide,
    impact_of_moves_with_names,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::device_groups::device_group_used_by;
use super::selections;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::population::{Decidable, PopulationDevice, blocking, groups_of};
use crate::snapshot::TenantSnapshot;
use crate::state::AppState;
use crate::wire::{DeviceGroupBody, ImpactSideJson};

/// The route of the change preview.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/tenants/{tenant}/device-groups/{id}/preview",
        post(preview_change),
    )
}

/// A proposed change of a device group: its new rule, or its deletion.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceGroupChange {
    /// The rule (and name) the group would have; give this or `delete`.
    pub rule: Option<DeviceGroupBody>,
    /// `true` to preview deleting the group; give this or `rule`.
    pub delete: Option<bool>,
}

/// What a change would do to one service that selects the group.
#[derive(Serialize, ToSchema)]
pub struct ServiceImpactJson {
    /// Service id.
    pub service: String,
    /// Devices that would get the service.
    pub gaining: ImpactSideJson,
    /// Devices that would lose it.
    pub losing: ImpactSideJson,
}

/// The impact of a device-group change, before it is made.
#[derive(Serialize, ToSchema)]
pub struct DeviceGroupImpactJson {
    /// The group's id.
    pub id: String,
    /// Whether this previews a deletion.
    pub delete: bool,
    /// Devices in the group now.
    pub devices_before: usize,
    /// Devices in the group after the change (0 for a deletion).
    pub devices_after: usize,
    /// Ids of the services whose entitlements select the group.
    pub used_by: Vec<String>,
    /// Per service that selects the group, in the table's order.
    pub services: Vec<ServiceImpactJson>,
    /// Devices that would lose at least one service.
    pub devices_losing: usize,
}

/// Shows, per service that selects the device group, which devices would
/// gain or lose the service if the group's rule changed as proposed or the
/// group were deleted. Nothing is changed.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant}/device-groups/{id}/preview", tag = "device-groups",
    request_body = DeviceGroupChange, params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DeviceGroupImpactJson), (status = 404), (status = 422)))]
pub(crate) async fn preview_change(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<DeviceGroupChange>,
) -> ApiResult<Json<DeviceGroupImpactJson>> {
    let tenant = caller.tenant(&state, &tenant).await?;
    let group_id = DeviceGroupId(id);
    let delete = body.delete.unwrap_or(false);
    let proposed = match (body.rule, delete) {
        (Some(rule), false) => Some(rule.parse(group_id.clone())?),
        (None, true) => None,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_change",
                "give either the proposed \"rule\" or \"delete\": true",
            ));
        }
    };
    let snapshot = state
        .snapshots
        .at_least(&tenant.id, tenant.data_version)
        .await?;
    if !snapshot.device_groups().iter().any(|g| g.id == group_id) {
        return Err(ApiError::not_found("device group"));
    }
    let decidable = state.populations.decidable(&tenant.id, &snapshot).await?;
    let selections = selections(&state, &tenant.id).await?;
    let used_by = device_group_used_by(&selections, &group_id);
    // Over a million devices this is a second of one core: off the async workers.
    let change = Change {
        group_id,
        proposed,
        delete,
    };
    let answer = blocking("device group preview", move || {
        change.impact(&decidable, &snapshot, used_by)
    })
    .await?;
    Ok(Json(answer))
}

/// A proposed change of one device group.
struct Change {
    group_id: DeviceGroupId,
    /// The new rule; `None` for a deletion.
    proposed: Option<DeviceGroup>,
    delete: bool,
}

impl Change {
    /// What the change does to every service in `used_by` or excluding the group.
    fn impact(
        self,
        decidable: &Decidable,
        snapshot: &TenantSnapshot,
        used_by: Vec<String>,
    ) -> DeviceGroupImpactJson {
        let devices = &decidable.devices;
        let Change {
            group_id,
            proposed,
            delete,
        } = self;
        // Device groups move per profile (what rules read), not per device.
        let before = devices.groups(snapshot);
        let after = devices.groups_by(|report| {
            let mut moved = snapshot.device_groups_for(report);
            moved.remove(&group_id);
            if proposed.as_ref().is_some_and(|rule| rule.matches(report)) {
                moved.insert(group_id.clone());
            }
            moved
        });
        let moves =
            |device: &PopulationDevice| groups_of(&before, device) != groups_of(&after, device);
        let mut services = Vec::new();
        let mut losing = vec![false; devices.len()];
        // A service that excludes the group is concerned too: devices moving
        // into the group lose it, and deleting it leaves a tombstone that turns
        // the service off for everyone it would reach (access fails closed).
        let excluding = |s: &ServiceDef| {
            snapshot
                .settings(s)
                .is_some_and(|stored| stored.settings.exclude_device_groups.contains(&group_id))
        };
        let names_after = AfterChange {
            snapshot,
            deleted: delete.then_some(&group_id),
        };
        for service in SERVICES
            .iter()
            .filter(|s| used_by.iter().any(|u| u == s.id) || excluding(s))
        {
            let Some(stored) = snapshot.settings(service) else {
                continue;
            };
            // Each device as it is and as the change would leave it.
            let moved = || {
                decidable
                    .subjects(snapshot, &before)
                    .zip(decidable.subjects(snapshot, &after))
                    .map(|((device, before), (_, after))| (device, before, after))
            };
            let result = impact_of_moves_with_names(
                service,
                &stored.settings,
                moved().map(|(device, before, after)| MovedEntry {
                    hostname: &device.hostname,
                    before,
                    after,
                }),
                snapshot,
                &names_after,
            );
            // Which devices lose it, for the count over every service: those that
            // move, or all when a deleted group leaves a tombstone in the exclusions.
            let tombstone = delete && excluding(service);
            for ((device, before, after), lost) in moved().zip(losing.iter_mut()) {
                if *lost || !(tombstone || moves(device)) {
                    continue;
                }
                *lost = decide(service, &stored.settings, &before, snapshot).enabled
                    && !decide(service, &stored.settings, &after, &names_after).enabled;
            }
            services.push(ServiceImpactJson {
                service: service.id.to_owned(),
                gaining: result.gaining.into(),
                losing: result.losing.into(),
            });
        }
        let in_group = |groups: &[std::collections::BTreeSet<DeviceGroupId>]| {
            devices
                .iter()
                .filter(|device| groups_of(groups, device).contains(&group_id))
                .count()
        };
        DeviceGroupImpactJson {
            devices_before: in_group(&before),
            devices_after: in_group(&after),
            id: group_id.0,
            delete,
            used_by,
            services,
            devices_losing: losing.iter().filter(|&&lost| lost).count(),
        }
    }
}

/// Group names as the change would leave them: a deleted group is known only
/// by its tombstone.
struct AfterChange<'a> {
    snapshot: &'a TenantSnapshot,
    deleted: Option<&'a DeviceGroupId>,
}

impl GroupNames for AfterChange<'_> {
    fn user_group(&self, id: &GroupId) -> Option<&str> {
        self.snapshot.user_group(id)
    }
    fn device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        if self.deleted == Some(id) {
            return None;
        }
        self.snapshot.device_group(id)
    }
    fn deleted_user_group(&self, id: &GroupId) -> Option<&str> {
        self.snapshot.deleted_user_group(id)
    }
    fn deleted_device_group(&self, id: &DeviceGroupId) -> Option<&str> {
        if self.deleted == Some(id) {
            return self.snapshot.device_group(id);
        }
        self.snapshot.deleted_device_group(id)
    }
}
