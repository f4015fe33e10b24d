//! The real agent (driver, state machine, files, control socket) against the
//! real server, and against a deliberately broken one.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use entitle_device_agent::driver::{self, AgentConfig};
use entitle_device_agent::machine::Backoff;
use entitle_device_agent::runtime::Timing;
use entitle_server::{Server, ServerConfig};
use entitle_store::{Role, SqliteStore, TenantStore, TokenGrant, secrets};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const ROOT: &str = "agent-test-root";

struct RealServer {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl RealServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("entitle.db"))
            .await
            .expect("store");
        store
            .create_api_token(
                &secrets::hash_secret(ROOT),
                &TokenGrant {
                    role: Role::SuperAdmin,
                    tenant_id: None,
                    name: "root".into(),
                },
                "test",
            )
            .await
            .expect("token");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            Server::new(Arc::new(store), ServerConfig::default()).run(listener, async {
                let _ = stopped.await;
            }),
        );
        Self {
            base,
            client: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> (reqwest::StatusCode, Option<String>, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ROOT)
            .json(&body);
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = request.send().await.expect("sent");
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, etag, response.json().await.unwrap_or(Value::Null))
    }

    /// A tenant with user ada in group Engineering; returns the enrollment key and the group id.
    async fn tenant(&self) -> (String, String) {
        let (_, _, tenant) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/tenants",
                json!({"name": "acme"}),
                None,
            )
            .await;
        let (_, _, group) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/tenants/acme/groups",
                json!({"display_name": "Engineering"}),
                None,
            )
            .await;
        let group_id = group["id"].as_str().expect("group").to_owned();
        self.call(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/users",
            json!({"user_name": "ada", "groups": [group_id]}),
            None,
        )
        .await;
        (
            tenant["enrollment_key"].as_str().expect("key").to_owned(),
            group_id,
        )
    }

    async fn save(&self, service: &str, settings: Value) {
        let path = format!("/api/v1/tenants/acme/entitlements/{service}");
        let (status, _, body) = self.call(reqwest::Method::PUT, &path, settings, None).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
}

fn config(server: &str, key: &str) -> AgentConfig {
    AgentConfig {
        server: server.to_owned(),
        enrollment_key: Some(key.to_owned()),
        user_name: Some("ada".to_owned()),
        report: json!({"hostname": "ada-mbp", "os": "macos", "client_version": "4.3", "ownership": "corporate", "posture": {"disk_encrypted": true}}),
        timing: Timing {
            long_poll_s: 20,
            ..Timing::default()
        },
    }
}

/// A running agent with its event lines.
struct RunningAgent {
    lines: mpsc::UnboundedReceiver<Value>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), driver::AgentError>>,
}

fn start_agent(config: AgentConfig, dir: &Path) -> RunningAgent {
    let (out, lines) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let dir = dir.to_owned();
    let task = tokio::spawn(async move {
        driver::run(config, &dir, out, async {
            let _ = stopped.await;
        })
        .await
    });
    RunningAgent {
        lines,
        stop: Some(stop),
        task,
    }
}

impl RunningAgent {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }

    /// Waits (up to `within`) for an event line that satisfies `wanted`.
    async fn expect(&mut self, within: Duration, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) if wanted(&line) => return line,
                Ok(Some(_)) => continue,
                _ => panic!("no expected event within {within:?}"),
            }
        }
    }
}

fn service_is(line: &Value, service: &str, state: &str) -> bool {
    line["event"] == "state" && line["state"]["services"][service] == state
}

async fn status(dir: &Path) -> Value {
    driver::control(dir, "status").await.expect("agent answers")["status"].clone()
}

const FAST: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_agent_follows_the_rules_of_spec_section_6() {
    let server = RealServer::start().await;
    let (key, group) = server.tenant().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(config(&server.base, &key), dir.path());
    agent
        .expect(FAST, |l| service_is(l, "internet_access", "running"))
        .await;
    assert_eq!(
        status(dir.path()).await["services"]["private_access"],
        "stopped"
    );

    // Turned on for the user's group: waits for the next login, within seconds of the save.
    server
        .save(
            "private_access",
            json!({"enabled_by_default": false, "user_groups": [group]}),
        )
        .await;
    agent
        .expect(FAST, |l| service_is(l, "private_access", "pending_login"))
        .await;
    driver::control(dir.path(), "login").await.expect("login");
    agent
        .expect(FAST, |l| service_is(l, "private_access", "running"))
        .await;

    // Turned off: stopped at once.
    server
        .save("private_access", json!({"enabled_by_default": false}))
        .await;
    agent
        .expect(FAST, |l| {
            l["event"] == "service_stopped" && l["service"] == "private_access"
        })
        .await;

    // With "logout on enable" the user is signed out, then everything entitled runs at login.
    server
        .save(
            "private_access",
            json!({"enabled_by_default": false, "user_groups": [group], "logout_on_enable": true}),
        )
        .await;
    agent
        .expect(FAST, |l| l["event"] == "user_logged_out")
        .await;
    let state = status(dir.path()).await;
    assert_eq!(state["session"], "logged_out");
    assert_eq!(state["services"]["internet_access"], "pending_login");
    driver::control(dir.path(), "login").await.expect("login");
    agent
        .expect(FAST, |l| {
            service_is(l, "private_access", "running")
                && service_is(l, "internet_access", "running")
        })
        .await;

    // A change fetched by "Update Policy" needs re-authentication before it runs.
    // The agent restarts without a long-poll, so that changes arrive by "Update Policy".
    agent.stop().await;
    let mut polling = config(&server.base, &key);
    polling.timing.long_poll_s = 0;
    let mut agent = start_agent(polling, dir.path());
    agent.expect(FAST, |l| l["event"] == "state").await;
    server
        .save("digital_experience", json!({"enabled_by_default": false}))
        .await;
    driver::control(dir.path(), "update-policy")
        .await
        .expect("update");
    agent
        .expect(FAST, |l| service_is(l, "digital_experience", "stopped"))
        .await;
    server
        .save("digital_experience", json!({"enabled_by_default": true}))
        .await;
    driver::control(dir.path(), "update-policy")
        .await
        .expect("update");
    agent
        .expect(FAST, |l| {
            service_is(l, "digital_experience", "pending_reauth")
        })
        .await;
    assert_eq!(
        status(dir.path()).await["services"]["digital_experience"],
        "pending_reauth"
    );
    driver::control(dir.path(), "reauth").await.expect("reauth");
    agent
        .expect(FAST, |l| service_is(l, "digital_experience", "running"))
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_dead_server_leaves_services_running_and_a_restart_restores_them_from_disk() {
    let server = RealServer::start().await;
    let (key, _) = server.tenant().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(config(&server.base, &key), dir.path());
    agent
        .expect(FAST, |l| service_is(l, "internet_access", "running"))
        .await;
    agent.stop().await;

    // Restart against an address where nothing listens.
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let enrollment_file = dir.path().join("enrollment.json");
    let mut enrollment: Value =
        serde_json::from_slice(&std::fs::read(&enrollment_file).expect("read")).expect("json");
    enrollment["server"] = json!(dead_url);
    std::fs::write(&enrollment_file, enrollment.to_string()).expect("write");
    let mut settings = config(&dead_url, &key);
    settings.timing.backoff = Backoff::new(100, 200).expect("valid");
    let mut agent = start_agent(settings, dir.path());
    // Retries follow the configured backoff: four failures well within a
    // second and a half (the default backoff would take 7 s).
    for _ in 0..4 {
        agent
            .expect(Duration::from_millis(1500), |l| l["event"] == "sync_failed")
            .await;
    }
    let state = status(dir.path()).await;
    assert_eq!(state["services"]["internet_access"], "running", "{state}");
    assert_eq!(state["server_reachable"], false);
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("reach")),
        "{state}"
    );
    agent.stop().await;
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Garbage {
    Good,
    Html,
    Truncated,
    ServerError,
    OtherDevice,
    OlderVersion,
    Slow,
}

struct BrokenServer {
    base: String,
    mode: Arc<Mutex<Garbage>>,
    version: Arc<Mutex<i64>>,
}

fn policy(version: i64, device: &str, zpa: bool) -> Value {
    json!({"etag": format!("\"v{version}-{zpa}\""), "config_version": version, "poll_interval_s": 3600, "tenant": "t", "device_id": device,
           "services": {"internet_access": {"enabled": true, "reason": "enabled_by_default", "explanation": "", "logout_on_enable": false},
                        "private_access": {"enabled": zpa, "reason": "group_match", "explanation": "", "logout_on_enable": false}}})
}

async fn broken_server() -> BrokenServer {
    let mode = Arc::new(Mutex::new(Garbage::Good));
    let version = Arc::new(Mutex::new(5i64));
    let (sync_mode, sync_version) = (mode.clone(), version.clone());
    let app = Router::new()
        .route("/agent/v1/enroll", post(|| async { (axum::http::StatusCode::CREATED, axum::Json(json!({"device_id": "d", "device_token": "tok", "policy": policy(5, "d", false)}))) }))
        .route("/agent/v1/sync", post(move || {
            let (mode, version) = (sync_mode.clone(), sync_version.clone());
            async move {
                let current = *mode.lock().expect("lock");
                let version = *version.lock().expect("lock");
                let reply: Response = match current {
                    Garbage::Good => axum::Json(policy(version, "d", version > 5)).into_response(),
                    Garbage::Html => ([("content-type", "text/html")], "<html><body>Gateway portal</body></html>").into_response(),
                    Garbage::Truncated => ([("content-type", "application/json")], "{\"etag\": \"x\", \"config_vers").into_response(),
                    Garbage::ServerError => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
                    Garbage::OtherDevice => axum::Json(policy(version + 10, "someone-else", false)).into_response(),
                    Garbage::OlderVersion => axum::Json(policy(1, "d", false)).into_response(),
                    Garbage::Slow => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        "never".into_response()
                    }
                };
                reply
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    BrokenServer {
        base,
        mode,
        version,
    }
}

#[tokio::test]
async fn garbage_from_the_server_changes_nothing_and_the_agent_catches_up() {
    let server = broken_server().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = config(&server.base, "key");
    settings.timing.long_poll_s = 1;
    settings.timing.request_timeout = Duration::from_secs(1);
    let mut agent = start_agent(settings, dir.path());
    agent
        .expect(FAST, |l| service_is(l, "internet_access", "running"))
        .await;
    for garbage in [
        Garbage::Html,
        Garbage::Truncated,
        Garbage::ServerError,
        Garbage::OtherDevice,
        Garbage::OlderVersion,
    ] {
        *server.mode.lock().expect("lock") = garbage;
        agent
            .expect(Duration::from_secs(10), |l| {
                l["event"] == "sync_failed" || l["event"] == "policy_rejected"
            })
            .await;
        let state = status(dir.path()).await;
        assert_eq!(
            state["services"]["internet_access"], "running",
            "{garbage:?}: {state}"
        );
        assert_eq!(
            state["config_version"], 5,
            "{garbage:?}: the held policy is kept"
        );
        assert_eq!(state["server_reachable"], false, "{garbage:?}");
        let saved: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("policy.json")).expect("lkg"))
                .expect("json");
        assert_eq!(
            saved["config_version"], 5,
            "{garbage:?}: the last-known-good file is untouched"
        );
        // Recover before the next kind, so each is seen on its own.
        *server.mode.lock().expect("lock") = Garbage::Good;
        agent
            .expect(Duration::from_secs(10), |l| {
                l["event"] == "state" && l["state"]["server_reachable"] == true
            })
            .await;
    }
    // A server that stops answering: the sync times out after the long-poll's
    // wait plus the request timeout (1 + 1 s here, 1 + 15 s by default), nothing stops.
    *server.mode.lock().expect("lock") = Garbage::Slow;
    agent
        .expect(Duration::from_secs(6), |l| {
            l["event"] == "sync_failed"
                && l["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("did not answer in time"))
        })
        .await;
    assert_eq!(
        status(dir.path()).await["services"]["internet_access"],
        "running"
    );
    // The server comes back with a change: the agent catches up on its own.
    *server.version.lock().expect("lock") = 6;
    *server.mode.lock().expect("lock") = Garbage::Good;
    agent
        .expect(Duration::from_secs(30), |l| {
            l["event"] == "state" && l["state"]["config_version"] == 6
        })
        .await;
    agent.stop().await;
}
