//! What a device's agent applied: stored with a sync, read back with the save
//! time of that version (by id, by token and in listings), untouched by a sync
//! that carries none, never audited, and filtered on against the tenant's
//! current config version with totals.

use entitle_core::Settings;
use entitle_store::{Applied, AuditFilter, DeviceFilter, RunState, ServiceState, Store};
use time::{Duration, OffsetDateTime};

use super::{report, save, tenant, user};

/// Every applied-state scenario, on one store.
pub async fn run_all(store: &dyn Store) {
    applied_state_is_stored_and_filtered(store).await;
}

fn applied(version: i64, at: OffsetDateTime, private_access: RunState) -> Applied {
    let failed = private_access == RunState::Failed;
    Applied {
        config_version: version,
        at,
        saved_at: None,
        services: [
            (
                "internet_access".to_owned(),
                ServiceState {
                    state: RunState::Running,
                    exit_status: None,
                    output: None,
                },
            ),
            (
                "private_access".to_owned(),
                ServiceState {
                    state: private_access,
                    exit_status: failed.then_some(3),
                    output: failed.then(|| "no route\n\tto gateway".to_owned()),
                },
            ),
        ]
        .into(),
    }
}

async fn applied_state_is_stored_and_filtered(store: &dyn Store) {
    let t = tenant(store, "applied").await;
    let ada = user(store, &t, "ada").await;
    let at = OffsetDateTime::now_utc();
    let mut devices = Vec::new();
    for n in 0..3 {
        let device = store
            .enroll_device(
                &t,
                &ada,
                &format!("applied-{n}"),
                &report(&format!("host-{n}")),
                at,
                None,
            )
            .await
            .expect("enrolled");
        assert_eq!(device.applied, None);
        devices.push(device);
    }
    let saved = store
        .save_settings(
            &t,
            save(
                "private_access",
                None,
                Settings {
                    enabled_by_default: true,
                    ..Settings::default()
                },
            ),
        )
        .await
        .expect("saved");
    let version = saved.config_version;
    let saved_at = store.config_version(&t, version).await.expect("version").at;
    let audit_before = store
        .audit_filtered(&t, &AuditFilter::default(), 1000, None)
        .await
        .expect("audit")
        .len();

    let heard = saved_at + Duration::milliseconds(800);
    let state = applied(version, heard, RunState::Failed);
    store
        .record_sync(&devices[0].id, None, Some(&state), heard, None)
        .await
        .expect("synced");
    let read = store.device(&t, &devices[0].id).await.expect("device");
    let stored = read.applied.clone().expect("applied stored");
    assert_eq!(stored.config_version, version);
    assert_eq!(stored.at, heard);
    assert_eq!(stored.saved_at, Some(saved_at));
    assert_eq!(stored.services, state.services);
    assert_eq!(read.last_sync_at, heard);
    let by_token = store.device_by_token("applied-0").await.expect("by token");
    assert_eq!(by_token.device.applied, read.applied);

    // A sync without applied state leaves it as it is.
    let later = heard + Duration::minutes(5);
    store
        .record_sync(&devices[0].id, None, None, later, None)
        .await
        .expect("synced");
    assert_eq!(
        store
            .device(&t, &devices[0].id)
            .await
            .expect("device")
            .applied,
        read.applied
    );
    assert_eq!(
        store
            .device(&t, &devices[0].id)
            .await
            .expect("device")
            .last_sync_at,
        later
    );
    // Last-seen times in one batch: ids of devices since removed are ignored,
    // the others' times set, nothing else touched.
    let batch_at = saved_at + Duration::minutes(7);
    let gone = "00000000-0000-4000-8000-000000000000".to_owned();
    let written = store
        .record_last_seen(
            &[devices[1].id.clone(), devices[2].id.clone(), gone],
            batch_at,
        )
        .await
        .expect("last seen");
    assert_eq!(written, 2);
    for (n, wanted) in [(0, later), (1, batch_at), (2, batch_at)] {
        let device = store.device(&t, &devices[n].id).await.expect("device");
        assert_eq!(device.last_sync_at, wanted, "device {n}");
    }
    assert_eq!(
        store.record_last_seen(&[], batch_at).await.expect("none"),
        0
    );
    // Device 1 applied the version before.
    store
        .record_sync(
            &devices[1].id,
            None,
            Some(&applied(version - 1, heard, RunState::Running)),
            heard,
            None,
        )
        .await
        .expect("synced");
    let audit_after = store
        .audit_filtered(&t, &AuditFilter::default(), 1000, None)
        .await
        .expect("audit")
        .len();
    assert_eq!(audit_after, audit_before, "device telemetry is not audited");

    assert_eq!(
        listed(store, &t, true).await,
        (vec!["host-0".to_owned()], 1)
    );
    assert_eq!(
        listed(store, &t, false).await,
        (vec!["host-1".to_owned(), "host-2".to_owned()], 2)
    );
}

/// Host names of the devices the filter keeps, a page of one at a time, and
/// their count.
async fn listed(store: &dyn Store, t: &str, current: bool) -> (Vec<String>, u64) {
    let filter = DeviceFilter {
        applied_current: Some(current),
        ..DeviceFilter::default()
    };
    let mut hosts = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .devices(t, &filter, 1, cursor.as_deref())
            .await
            .expect("page");
        hosts.extend(page.items.iter().map(|d| d.report.hostname.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let total = store.count_devices(t, &filter).await.expect("count");
    (hosts, total)
}
