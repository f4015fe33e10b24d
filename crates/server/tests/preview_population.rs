//! The entitlement preview decides over the tenant's devices as the server
//! keeps them in memory (in id order): its counts and its sample must be
//! those of one pass over every device in (user, host name) order, whatever
//! order the devices are kept in.

#[macro_use]
mod common;

use common::{Database, TestApp, report, settings};
use entitle_server::ServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(preview_over_users_in_every_part_counts_each_once);

async fn preview_over_users_in_every_part_counts_each_once(db: Database) {
    let config = ServerConfig {
        enrollments_per_minute: u32::MAX,
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let t = app.tenant("acme").await;
    let eng = t.group(&app, "Engineering", &[]).await;
    // 24 users with random ids (spread over every part), two devices each;
    // the even ones are engineers. One engineer's second device has a client
    // too old for group settings.
    let mut expected_gaining = Vec::new();
    for index in 0..24 {
        let name = format!("u{index:02}");
        let engineer = index % 2 == 0;
        let groups: Vec<&str> = if engineer { vec![&eng] } else { vec![] };
        t.user(&app, &name, &groups).await;
        for host in ["a", "b"] {
            let hostname = format!("{name}-{host}");
            let old = index == 4 && host == "b";
            let version = if old { "1.2.3" } else { "4.0" };
            t.enroll(
                &app,
                &name,
                report(&hostname, "macos", version, "corporate", true),
            )
            .await;
            if engineer && !old {
                expected_gaining.push(format!("{name} on {hostname}"));
            }
        }
    }
    expected_gaining.sort();

    let preview = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            settings(false, &[&eng], &[]),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{:?}", preview.body);
    let gaining = &preview.body["gaining"];
    assert_eq!(gaining["devices"], 23, "{gaining}");
    assert_eq!(gaining["users"], 12, "{gaining}");
    let first_ten: Vec<Value> = expected_gaining.iter().take(10).map(|s| json!(s)).collect();
    assert_eq!(gaining["sample"], json!(first_ten));
    assert_eq!(preview.body["losing"]["devices"], 0);
    assert_eq!(preview.body["legacy_clients"]["devices"], 1);
    assert_eq!(preview.body["legacy_clients"]["users"], 1);

    // Saved, then the opposite: everyone on. The non-engineers gain, nobody
    // loses, and the same preview twice names the same devices.
    t.save(&app, "private_access", settings(false, &[&eng], &[]))
        .await;
    let everyone = settings(true, &[], &[]);
    let first = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            everyone.clone(),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.body["gaining"]["users"], 12, "{:?}", first.body);
    assert_eq!(first.body["gaining"]["devices"], 24, "{:?}", first.body);
    assert_eq!(first.body["losing"]["devices"], 0, "{:?}", first.body);
    assert_eq!(
        first.body["gaining"]["sample"][0], "u01 on u01-a",
        "{:?}",
        first.body
    );
    let second = app
        .post(
            &t.path("/entitlements/private_access/preview"),
            &t.admin,
            everyone,
        )
        .await;
    assert_eq!(second.body, first.body);
}
