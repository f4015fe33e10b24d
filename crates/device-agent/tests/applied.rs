//! What the agent tells the server it applied: the sync bodies the real agent
//! sends, recorded by a small server, while real hook scripts start (or fail
//! to start) its services.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use entitle_device_agent::driver::{self, AgentConfig};
use entitle_device_agent::hooks::{Hooks, ServiceHook};
use entitle_device_agent::machine::Backoff;
use entitle_device_agent::runtime::Timing;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

fn policy() -> Value {
    json!({"etag": "\"v5\"", "config_version": 5, "poll_interval_s": 3600, "tenant": "t", "device_id": "d",
           "services": {"internet_access": {"enabled": true, "reason": "enabled_by_default", "explanation": "", "logout_on_enable": false},
                        "private_access": {"enabled": true, "reason": "group_match", "explanation": "in eng", "logout_on_enable": false}}})
}

/// A server that answers with one policy and keeps every body it was sent.
async fn recording_server() -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (enrolls, syncs) = (bodies.clone(), bodies.clone());
    let app = Router::new()
        .route(
            "/agent/v1/enroll",
            post(move |body: axum::Json<Value>| {
                let bodies = enrolls.clone();
                async move {
                    bodies.lock().expect("lock").push(json!({"enroll": body.0}));
                    (
                        StatusCode::CREATED,
                        axum::Json(
                            json!({"device_id": "d", "device_token": "tok", "policy": policy()}),
                        ),
                    )
                }
            }),
        )
        .route(
            "/agent/v1/sync",
            post(
                move |query: RawQuery, headers: HeaderMap, body: axum::Json<Value>| {
                    let bodies = syncs.clone();
                    async move {
                        bodies.lock().expect("lock").push(json!({"sync": body.0}));
                        let current = headers
                            .get("if-none-match")
                            .is_some_and(|etag| etag == "\"v5\"");
                        if !current {
                            return axum::Json(policy()).into_response();
                        }
                        // A held long-poll that nothing changes.
                        if query.0.is_some_and(|q| q.contains("wait")) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        let answer: Response = StatusCode::NOT_MODIFIED.into_response();
                        answer
                    }
                },
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, bodies)
}

fn hook(text: &str) -> ServiceHook {
    text.parse().expect("valid hook")
}

fn config(base: String, hooks: Hooks) -> AgentConfig {
    AgentConfig {
        server: base,
        enrollment_key: Some("key".into()),
        user_name: Some("ada".into()),
        report: json!({"hostname": "h", "os": "linux", "client_version": "4.3", "ownership": "corporate", "posture": {}}),
        posture_commands: Vec::new(),
        posture_timeout: Duration::from_secs(5),
        posture_interval: Duration::from_secs(20),
        posture_overrides: serde_json::Map::new(),
        hooks,
        timing: Timing {
            long_poll_s: 20,
            backoff: Backoff::new(100, 500).expect("backoff"),
            ..Timing::default()
        },
        ca_file: None,
        insecure_http: false,
    }
}

#[tokio::test]
async fn every_sync_says_what_was_applied_with_a_failed_hooks_status_and_output() {
    let (base, bodies) = recording_server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hooks = Hooks::new(
        vec![
            hook("internet_access=true"),
            hook("private_access=echo starting; echo 'broker unreachable' >&2; exit 4"),
        ],
        Vec::new(),
        Duration::from_secs(5),
    );
    let config = config(base, hooks);
    let (out, _lines) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let state = dir.path().to_owned();
    let task = tokio::spawn(async move {
        driver::run(config, &state, out, async {
            let _ = stopped.await;
        })
        .await
    });
    let wanted = json!({"config_version": 5, "services": {
        "internet_access": {"state": "running"},
        "private_access": {"state": "failed", "exit_status": 4, "output": "starting\nbroker unreachable"},
    }});
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = bodies.lock().expect("lock").clone();
        if sent.iter().any(|b| b["sync"]["applied"] == wanted) {
            // Before the first policy, nothing was applied.
            assert!(
                sent[0]["enroll"]["device"].get("applied").is_none(),
                "{sent:#?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no sync said {wanted:#}; the agent sent {sent:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::test]
async fn a_stop_hook_waits_for_the_start_hook_it_undoes() {
    let (base, _bodies) = recording_server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let order = dir.path().join("order");
    let hooks = Hooks::new(
        vec![hook(&format!(
            "internet_access=sleep 1; echo start >> {}",
            order.display()
        ))],
        vec![hook(&format!(
            "internet_access=echo stop >> {}",
            order.display()
        ))],
        Duration::from_secs(5),
    );
    let config = config(base, hooks);
    let (out, mut lines) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let state = dir.path().join("agent");
    let agent_state = state.clone();
    let task = tokio::spawn(async move {
        driver::run(config, &agent_state, out, async {
            let _ = stopped.await;
        })
        .await
    });
    // Signed out while the start hook still runs: the service stops.
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.recv().await {
            if line["event"] == "service_starting" {
                return;
            }
        }
    })
    .await
    .expect("the start hook began");
    let mut answer = Value::Null;
    for _ in 0..50 {
        match driver::control(&state, "logout").await {
            Ok(reply) => {
                answer = reply;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(answer["ok"], true, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&order)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the hooks did not both run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&order).expect("order"),
        "start\nstop\n"
    );
    let _ = stop.send(());
    let _ = task.await;
}
