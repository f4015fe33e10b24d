//! Device revisions: a copy of a tenant's devices kept in memory reads only
//! what changed since the revision it holds. Every write that changes what a
//! decision reads of a device is handed over again; telemetry (applied state,
//! last seen) is not; removals are listed; other tenants never appear.

use entitle_core::{ClientVersion, Ownership};
use entitle_store::{
    Applied, AppliedSync, Device, DeviceChange, DeviceChanges, DeviceFilter, DeviceIds, Store,
};
use time::OffsetDateTime;

use super::{report, tenant, tester, user};

/// Every device-revision scenario, on one store.
pub async fn run_all(store: &dyn Store) {
    changes_since_a_revision_are_handed_over(store).await;
    listings_narrowed_by_ids(store).await;
    nothing_is_lost_while_devices_enroll(store).await;
}

/// The ids handed over since `since`, sorted, with the answer.
async fn changes(
    store: &dyn Store,
    tenant_id: &str,
    since: Option<i64>,
) -> (Vec<String>, DeviceChanges) {
    let mut ids = Vec::new();
    let answer = store
        .device_changes(tenant_id, since, &mut |device: Device| {
            ids.push(device.id);
            Ok(())
        })
        .await
        .expect("device changes");
    ids.sort();
    (ids, answer)
}

async fn changes_since_a_revision_are_handed_over(store: &dyn Store) {
    let t = tenant(store, "revisions").await;
    let other = tenant(store, "revisions-other").await;
    let ada = user(store, &t, "ada").await;
    let bob = user(store, &other, "bob").await;
    let at = OffsetDateTime::now_utc();

    let (ids, start) = changes(store, &t, None).await;
    assert!(ids.is_empty() && start.everything && start.revision == 0);

    let mut enrolled = Vec::new();
    for n in 0..3 {
        let device = store
            .enroll_device(
                &t,
                &ada,
                &format!("rev-{n}"),
                &report(&format!("rev-{n}")),
                at,
                None,
            )
            .await
            .expect("enrolled");
        enrolled.push(device.id);
    }
    store
        .enroll_device(&other, &bob, "rev-other", &report("rev-other"), at, None)
        .await
        .expect("enrolled elsewhere");
    let (ids, all) = changes(store, &t, None).await;
    let mut expected = enrolled.clone();
    expected.sort();
    assert_eq!(
        ids, expected,
        "every device of the tenant, no other tenant's"
    );
    assert!(all.everything && all.revision > start.revision, "{all:?}");
    let (ids, since_start) = changes(store, &t, Some(start.revision)).await;
    assert_eq!(ids, expected, "three enrollments since the start");
    assert!(!since_start.everything && since_start.removed.is_empty());
    assert_eq!(since_start.revision, all.revision);

    // Nothing changed: nothing handed over.
    let (ids, quiet) = changes(store, &t, Some(all.revision)).await;
    assert!(ids.is_empty() && quiet.removed.is_empty() && !quiet.everything);

    // Telemetry is not a change.
    store
        .record_applied(&[AppliedSync {
            device_id: enrolled[0].clone(),
            applied: Applied {
                config_version: 1,
                at,
                saved_at: None,
                services: Default::default(),
            },
            at,
        }])
        .await
        .expect("applied");
    store
        .record_last_seen(&enrolled, at)
        .await
        .expect("last seen");
    let (ids, _) = changes(store, &t, Some(all.revision)).await;
    assert!(
        ids.is_empty(),
        "applied state and last seen change no decision"
    );

    // A new report is.
    let mut newer = report("rev-0");
    newer.client_version = ClientVersion::parse("5.0").expect("version");
    store
        .record_sync(&enrolled[0], Some(&newer), None, at, None)
        .await
        .expect("report");
    let (ids, after_report) = changes(store, &t, Some(all.revision)).await;
    assert_eq!(ids, vec![enrolled[0].clone()]);
    assert!(after_report.revision > all.revision);

    // Attested ownership is; attesting it again changes nothing.
    let attest = DeviceChange {
        ownership: Some(Some(Ownership::Personal)),
        approve: None,
    };
    store
        .change_device(&t, &enrolled[1], &attest, &tester())
        .await
        .expect("attested");
    let (ids, after_attest) = changes(store, &t, Some(after_report.revision)).await;
    assert_eq!(ids, vec![enrolled[1].clone()]);
    store
        .change_device(&t, &enrolled[1], &attest, &tester())
        .await
        .expect("attested again");
    let (ids, _) = changes(store, &t, Some(after_attest.revision)).await;
    assert!(ids.is_empty(), "an unchanged attestation is no change");

    // A removal is listed, and the removed device is not handed over.
    store
        .delete_device(&t, &enrolled[2], &tester())
        .await
        .expect("removed");
    let (ids, after_removal) = changes(store, &t, Some(after_attest.revision)).await;
    assert!(ids.is_empty());
    assert_eq!(after_removal.removed, vec![enrolled[2].clone()]);
    let (ids, _) = changes(store, &t, None).await;
    let mut left = vec![enrolled[0].clone(), enrolled[1].clone()];
    left.sort();
    assert_eq!(ids, left);

    // A revision the store has not reached (a restore from a backup) gets
    // everything again.
    let (ids, beyond) = changes(store, &t, Some(after_removal.revision + 100)).await;
    assert!(beyond.everything);
    assert_eq!(ids, left);

    // The other tenant's counter is its own.
    let (ids, theirs) = changes(store, &other, Some(0)).await;
    assert_eq!(ids.len(), 1);
    assert!(theirs.removed.is_empty());
}

/// A listing narrowed to, or away from, a set of ids keeps its other filters,
/// its order and its keyset pages.
async fn listings_narrowed_by_ids(store: &dyn Store) {
    let t = tenant(store, "by-ids").await;
    let ada = user(store, &t, "ada").await;
    let at = OffsetDateTime::now_utc();
    let mut ids = Vec::new();
    for host in ["host-d", "host-a", "host-c", "host-b"] {
        let device = store
            .enroll_device(&t, &ada, host, &report(host), at, None)
            .await
            .expect("enrolled");
        ids.push(device.id);
    }
    let hosts = |page: &[Device]| -> Vec<String> {
        page.iter().map(|d| d.report.hostname.clone()).collect()
    };
    // host-d, host-c, host-b
    let only = DeviceFilter {
        ids: Some(DeviceIds::Only(vec![
            ids[0].clone(),
            ids[2].clone(),
            ids[3].clone(),
        ])),
        ..DeviceFilter::default()
    };
    let first = store.devices(&t, &only, 2, None).await.expect("page 1");
    assert_eq!(hosts(&first.items), ["host-b", "host-c"]);
    let second = store
        .devices(&t, &only, 2, first.next_cursor.as_deref())
        .await
        .expect("page 2");
    assert_eq!(hosts(&second.items), ["host-d"]);
    assert!(second.next_cursor.is_none());
    assert_eq!(store.count_devices(&t, &only).await.expect("count"), 3);

    let except = DeviceFilter {
        ids: Some(DeviceIds::Except(vec![ids[1].clone()])),
        search: Some("host-".into()),
        ..DeviceFilter::default()
    };
    let page = store.devices(&t, &except, 10, None).await.expect("except");
    assert_eq!(hosts(&page.items), ["host-b", "host-c", "host-d"]);
    assert_eq!(store.count_devices(&t, &except).await.expect("count"), 3);

    let none = DeviceFilter {
        ids: Some(DeviceIds::Only(Vec::new())),
        ..DeviceFilter::default()
    };
    assert!(
        store
            .devices(&t, &none, 10, None)
            .await
            .expect("empty")
            .items
            .is_empty()
    );
    let all_but_none = DeviceFilter {
        ids: Some(DeviceIds::Except(Vec::new())),
        ..DeviceFilter::default()
    };
    assert_eq!(
        store.count_devices(&t, &all_but_none).await.expect("count"),
        4
    );
}

/// A reader that follows the changes while devices enroll and report (on
/// PostgreSQL, in transactions of their own beside its stampings) ends up
/// with every device in its last state: none is skipped by a stamping that
/// raced a write.
async fn nothing_is_lost_while_devices_enroll(store: &dyn Store) {
    let t = tenant(store, "racing").await;
    let ada = user(store, &t, "ada").await;
    let at = OffsetDateTime::now_utc();
    let writes = async {
        let mut ids = Vec::new();
        for n in 0..40 {
            let host = format!("race-{n}");
            let device = store
                .enroll_device(&t, &ada, &host, &report(&host), at, None)
                .await
                .expect("enrolled");
            if n % 3 == 0 {
                let mut newer = report(&host);
                newer.client_version = ClientVersion::parse("5.0").expect("version");
                store
                    .record_sync(&device.id, Some(&newer), None, at, None)
                    .await
                    .expect("report");
            }
            ids.push(device.id);
        }
        ids
    };
    let follow = async {
        let mut seen: std::collections::BTreeMap<String, String> = Default::default();
        let mut since = None;
        for _ in 0..40 {
            let answer = store
                .device_changes(&t, since, &mut |device: Device| {
                    seen.insert(device.id, device.report.client_version.to_string());
                    Ok(())
                })
                .await
                .expect("changes");
            since = Some(answer.revision);
            tokio::task::yield_now().await;
        }
        (seen, since)
    };
    let (ids, (mut seen, since)) = tokio::join!(writes, follow);
    store
        .device_changes(&t, since, &mut |device: Device| {
            seen.insert(device.id, device.report.client_version.to_string());
            Ok(())
        })
        .await
        .expect("last changes");
    let mut everything = std::collections::BTreeMap::new();
    store
        .device_changes(&t, None, &mut |device: Device| {
            everything.insert(device.id, device.report.client_version.to_string());
            Ok(())
        })
        .await
        .expect("every device");
    assert_eq!(everything.len(), ids.len());
    assert_eq!(
        seen, everything,
        "followed changes end where a full read does"
    );
}
