//! Load shedding against a real server with tiny sync limits: a burst of
//! syncs is answered 503 with `Retry-After` rather than queued into timeouts,
//! every device still gets its policy by honouring it, a storming tenant
//! leaves another tenant its syncs, and admin calls answer during the burst.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Database, Tenant, TestApp, report, sync};
use entitle_server::{ServerConfig, ShedConfig};
use reqwest::StatusCode;
use serde_json::Value;

/// Two syncs doing work on the node, one per tenant, a short queue.
fn tiny_limits() -> ServerConfig {
    ServerConfig {
        enrollments_per_minute: 10_000,
        shed: ShedConfig {
            max_syncs_in_flight: 2,
            // Wide enough that no sync of the test is shed before its tenant
            // is known: fairness is decided after authentication.
            max_token_checks_in_flight: 1_000,
            tenant_share_percent: 50,
            queue_wait: Duration::from_millis(20),
            max_queued: 4,
            max_held_long_polls: 100_000,
            retry_after_max_s: 1,
        },
        ..ServerConfig::default()
    }
}

struct Enrolled {
    token: String,
    report: Value,
}

async fn enroll_many(app: &TestApp, tenant: &Tenant, prefix: &str, count: usize) -> Vec<Enrolled> {
    tenant.user(app, &format!("{prefix}-user"), &[]).await;
    let mut devices = Vec::new();
    for index in 0..count {
        let device_report = report(
            &format!("{prefix}-{index}"),
            "macos",
            "4.3",
            "corporate",
            true,
        );
        let (_, token, _) = tenant
            .enroll(app, &format!("{prefix}-user"), device_report.clone())
            .await;
        devices.push(Enrolled {
            token,
            report: device_report,
        });
    }
    devices
}

/// Each device's next report differs from the stored one, so that every
/// sync of the burst writes (and takes a while).
fn changed(device: &Enrolled, round: usize) -> Value {
    let mut changed = device.report.clone();
    changed["hostname"] = Value::from(format!(
        "{}-r{round}",
        device.report["hostname"].as_str().unwrap_or_default()
    ));
    changed
}

/// Checks a sync answer of the burst: a policy, or a 503 that says when to
/// come back; returns the `Retry-After` seconds of a 503.
fn policy_or_busy(answer: &common::Answer) -> Option<u64> {
    match answer.status {
        StatusCode::OK => {
            assert!(answer.body["services"].is_object(), "{:?}", answer.body);
            None
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(
                answer.body["error"]["code"], "server_busy",
                "{:?}",
                answer.body
            );
            Some(0)
        }
        other => panic!("a burst answered {other}: {:?}", answer.body),
    }
}

async fn a_burst_is_shed_with_retry_after_and_every_device_gets_its_policy(db: Database) {
    let app = TestApp::start_with(&db, tiny_limits()).await;
    let storm = app.tenant("storm").await;
    let devices = enroll_many(&app, &storm, "storm", 60).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // Everyone at once, each on its own connection.
    let burst: Vec<_> = devices
        .iter()
        .map(|device| {
            let client = client.clone();
            let url = format!("{}/agent/v1/sync", app.base);
            let body = changed(device, 1);
            let token = device.token.clone();
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .expect("answered, not timed out");
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Value = response.json().await.expect("JSON body");
                (status, retry_after, body)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in burst {
        answers.push(task.await.expect("burst task"));
    }
    let mut shed = Vec::new();
    for (index, (status, retry_after, body)) in answers.into_iter().enumerate() {
        let answer = common::Answer {
            status,
            etag: None,
            body,
        };
        if policy_or_busy(&answer).is_some() {
            let seconds: u64 = retry_after
                .as_deref()
                .expect("a 503 says when to come back")
                .parse()
                .expect("Retry-After in seconds");
            assert!((1..=1).contains(&seconds), "{seconds}");
            shed.push(index);
        }
    }
    assert!(
        !shed.is_empty(),
        "60 syncs at once through 1 slot with a queue of 4: some must be shed"
    );
    assert!(shed.len() < devices.len(), "some get through");

    // Honouring Retry-After, every shed device gets its policy.
    let mut rounds = 0;
    while !shed.is_empty() {
        rounds += 1;
        assert!(rounds <= 60, "{} devices still shed", shed.len());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut still = Vec::new();
        for index in shed {
            let device = &devices[index];
            let answer = sync(&app, &device.token, &changed(device, 1), None, None).await;
            if policy_or_busy(&answer).is_some() {
                still.push(index);
            }
        }
        shed = still;
    }

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("entitle_sync_shed_total{reason="),
        "{metrics}"
    );
    assert!(metrics.contains("entitle_syncs_in_flight 0"), "{metrics}");
}

async fn a_storming_tenant_leaves_another_its_syncs_and_admin_calls_answer(db: Database) {
    let app = TestApp::start_with(&db, tiny_limits()).await;
    let storm = app.tenant("storm").await;
    let quiet = app.tenant("quiet").await;
    let storming = enroll_many(&app, &storm, "storm", 60).await;
    let calm = enroll_many(&app, &quiet, "quiet", 5).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // The storm: every storm device syncs over and over, concurrently, for
    // as long as the quiet tenant's syncs and the admin calls take.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let storm_tasks: Vec<_> = storming
        .into_iter()
        .map(|device| {
            let client = client.clone();
            let url = format!("{}/agent/v1/sync", app.base);
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut round = 0;
                while !*stopped.borrow_and_update() {
                    round += 1;
                    let answer = client
                        .post(&url)
                        .bearer_auth(&device.token)
                        .json(&changed(&device, round))
                        .send()
                        .await
                        .expect("answered, not timed out");
                    statuses.push(answer.status());
                }
                statuses
            })
        })
        .collect();

    // Meanwhile the quiet tenant syncs each device, with a changed report,
    // several times: none is shed, because the storm may use only half of
    // the node's slots.
    for round in 1..=5 {
        for device in &calm {
            let answer = sync(&app, &device.token, &changed(device, round), None, None).await;
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        }
        // Admin calls of either tenant do not pass the sync gates.
        for tenant in [&storm, &quiet] {
            let devices = app
                .get(&tenant.path("/devices?limit=50"), &tenant.admin)
                .await;
            assert_eq!(devices.status, StatusCode::OK, "{:?}", devices.body);
        }
    }
    stop.send_replace(true);
    let mut storm_statuses = Vec::new();
    for task in storm_tasks {
        storm_statuses.extend(task.await.expect("storm task"));
    }
    assert!(
        storm_statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{storm_statuses:?}"
    );
    assert!(
        storm_statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "the storm was shed"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("reason=\"tenant_share\""), "{metrics}");
}

async fn past_the_cap_on_held_long_polls_a_sync_is_answered_at_once(db: Database) {
    let config = ServerConfig {
        shed: ShedConfig {
            max_held_long_polls: 0,
            ..ShedConfig::default()
        },
        ..ServerConfig::default()
    };
    let app = TestApp::start_with(&db, config).await;
    let tenant = app.tenant("acme").await;
    let devices = enroll_many(&app, &tenant, "held", 1).await;
    let device = &devices[0];
    let first = sync(&app, &device.token, &device.report, None, None).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.etag.expect("etag");
    // Asked to hold 60 s; the client gives up after 20 s, so a hold fails the test.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let answer = client
        .post(format!("{}/agent/v1/sync?wait=60", app.base))
        .bearer_auth(&device.token)
        .header("If-None-Match", &etag)
        .json(&device.report)
        .send()
        .await
        .expect("answered without holding");
    assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("entitle_long_polls_not_held_total 1"),
        "{metrics}"
    );
}

on_both_backends!(
    a_burst_is_shed_with_retry_after_and_every_device_gets_its_policy,
    a_storming_tenant_leaves_another_its_syncs_and_admin_calls_answer,
    past_the_cap_on_held_long_polls_a_sync_is_answered_at_once,
);
