//! The entitlement preview and the device listing filtered by service state
//! decide over the devices a node keeps in memory: every change to a device
//! (enrollment, a new report, removal), made on this node or another, and
//! every change to what decides (a save), shows in the next answer. Device
//! group counts are taken from the same devices, by effective ownership.

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{Database, TestApp, report, settings, sync};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(previews_and_state_listings_follow_every_device_change);

/// Host names of the devices a listing shows.
async fn hosts(app: &TestApp, path: &str, token: &str) -> BTreeSet<String> {
    let page = app.get(path, token).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["hostname"].as_str().expect("hostname").to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

async fn previews_and_state_listings_follow_every_device_change(db: Database) {
    let first = TestApp::start(&db).await;
    // On SQLite one node is the whole deployment; on PostgreSQL the changes
    // are made through a second node.
    let second = TestApp::second_node(&db).await;
    let other = second.as_ref().unwrap_or(&first);
    let t = first.tenant("acme").await;
    t.user(&first, "ada", &[]).await;
    let encrypted = t
        .device_group(
            &first,
            json!({"name": "Encrypted", "posture": [{"key": "disk_encrypted", "op": "eq", "value": true}]}),
        )
        .await;
    t.save(
        &first,
        "private_access",
        settings(false, &[], &[&encrypted]),
    )
    .await;
    let plain = |host: &str| report(host, "linux", "4.0", "corporate", false);
    let locked = |host: &str| report(host, "linux", "4.0", "corporate", true);
    let (one, _, _) = t.enroll(&first, "ada", locked("one")).await;
    t.enroll(&first, "ada", locked("two")).await;
    let (_, three_token, _) = t.enroll(&first, "ada", plain("three")).await;

    let on = t.path("/devices?service=private_access&state=on");
    let off = t.path("/devices?service=private_access&state=off");
    let preview = t.path("/entitlements/private_access/preview");
    assert_eq!(hosts(&first, &on, &t.admin).await, set(&["one", "two"]));
    assert_eq!(hosts(&first, &off, &t.admin).await, set(&["three"]));
    let everyone = first
        .post(&preview, &t.admin, settings(true, &[], &[]))
        .await;
    assert_eq!(everyone.status, StatusCode::OK, "{:?}", everyone.body);
    assert_eq!(everyone.body["gaining"]["devices"], 1);
    assert_eq!(everyone.body["gaining"]["sample"], json!(["ada on three"]));

    // Enrolled, reported and removed elsewhere.
    t.enroll(other, "ada", plain("four")).await;
    let synced = sync(other, &three_token, &locked("three"), None, None).await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    let removed = other
        .call(
            Method::DELETE,
            &t.path(&format!("/devices/{one}")),
            Some(&t.admin),
            None,
            &[],
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);

    assert_eq!(hosts(&first, &on, &t.admin).await, set(&["three", "two"]));
    assert_eq!(hosts(&first, &off, &t.admin).await, set(&["four"]));
    let everyone = first
        .post(&preview, &t.admin, settings(true, &[], &[]))
        .await;
    assert_eq!(
        everyone.body["gaining"]["devices"], 1,
        "{:?}",
        everyone.body
    );
    assert_eq!(everyone.body["gaining"]["sample"], json!(["ada on four"]));
    let nobody = first
        .post(&preview, &t.admin, settings(false, &[], &[]))
        .await;
    assert_eq!(nobody.body["losing"]["devices"], 2, "{:?}", nobody.body);

    // A save elsewhere changes every device's state, with no device changed
    // (the groups are cleared before "Enabled by Default" may be turned on).
    t.save(other, "private_access", settings(false, &[], &[]))
        .await;
    assert_eq!(
        hosts(&first, &on, &t.admin).await,
        BTreeSet::new(),
        "no group selected: off for every device"
    );
    t.save(other, "private_access", settings(true, &[], &[]))
        .await;
    assert_eq!(
        hosts(&first, &on, &t.admin).await,
        set(&["four", "three", "two"])
    );
    assert!(hosts(&first, &off, &t.admin).await.is_empty());
    let any_off = t.path("/devices?state=off");
    // The other services are off by default for a new tenant's settings, or
    // on: either way the listing is what each device's own page says.
    let listed = hosts(&first, &any_off, &t.admin).await;
    for host in ["two", "three", "four"] {
        let page = first
            .get(&t.path(&format!("/devices?hostname={host}")), &t.admin)
            .await;
        let device = &page.body["items"][0];
        let detail = first
            .get(
                &t.path(&format!("/devices/{}", device["id"].as_str().expect("id"))),
                &t.admin,
            )
            .await;
        let any_service_off = detail.body["entitlements"]
            .as_object()
            .expect("entitlements")
            .values()
            .any(|d| d["enabled"] == false);
        assert_eq!(
            listed.contains(host),
            any_service_off,
            "{host}: {:?}",
            detail.body
        );
    }
}

on_both_backends!(device_group_counts_are_what_decisions_see);

/// A device group's member count and a rule's preview count devices by
/// their effective ownership (attested, else reported), as decisions do.
async fn device_group_counts_are_what_decisions_see(db: Database) {
    let app = TestApp::start(&db).await;
    let t = app.tenant("acme").await;
    t.user(&app, "ada", &[]).await;
    let corporate = t
        .device_group(
            &app,
            json!({"name": "Corporate", "ownership": ["corporate"]}),
        )
        .await;
    let (claims, _, _) = t
        .enroll(
            &app,
            "ada",
            report("claims", "macos", "4.0", "personal", true),
        )
        .await;
    t.enroll(
        &app,
        "ada",
        report("owned", "macos", "4.0", "corporate", true),
    )
    .await;
    t.enroll(&app, "ada", report("own", "linux", "4.0", "personal", true))
        .await;
    let count = || async {
        let group = app
            .get(&t.path(&format!("/device-groups/{corporate}")), &t.admin)
            .await;
        assert_eq!(group.status, StatusCode::OK, "{:?}", group.body);
        group.body["matching_devices"].clone()
    };
    let rule_preview = || async {
        let preview = app
            .post(
                &t.path("/device-groups/preview"),
                &t.admin,
                json!({"name": "Any", "ownership": ["corporate"]}),
            )
            .await;
        assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
        preview.body.clone()
    };
    assert_eq!(count().await, 1);
    assert_eq!(rule_preview().await["sample"], json!(["ada on owned"]));

    let attested = t.attest(&app, &claims, "corporate").await;
    assert!(
        attested.body["device_groups"]
            .as_array()
            .expect("device groups")
            .contains(&json!(corporate)),
        "{:?}",
        attested.body
    );
    assert_eq!(count().await, 2);
    let preview = rule_preview().await;
    assert_eq!(preview["matching_devices"], 2);
    assert_eq!(preview["sample"], json!(["ada on claims", "ada on owned"]));
}
