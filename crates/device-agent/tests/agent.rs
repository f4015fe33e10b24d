//! The real agent (driver, state machine, files, control socket) against the
//! real server, and against a deliberately broken one.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use entitle_device_agent::driver::{self, AgentConfig};
use entitle_device_agent::fleet::{Fleet, FleetPlan, enroll_fleet};
use entitle_device_agent::machine::Backoff;
use entitle_device_agent::protocol::EnrollError;
use entitle_device_agent::runtime::Timing;
use entitle_server::{Server, ServerConfig};
use entitle_store::{Actor, Role, SqlStore, TenantStore, TokenGrant, secrets};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
        Self::start_with(ServerConfig::default()).await
    }

    async fn start_with(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqlStore::open_sqlite(&dir.path().join("entitle.db"))
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
                &Actor::system(),
            )
            .await
            .expect("token");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(Server::new(Arc::new(store), config).run(listener, async {
            let _ = stopped.await;
        }));
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
        ca_file: None,
        insecure_http: false,
        posture_commands: Vec::new(),
        posture_timeout: Duration::from_secs(10),
        posture_interval: Duration::from_secs(20),
        posture_overrides: serde_json::Map::new(),
        hooks: Default::default(),
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

impl RunningAgent {
    /// Whether no event line satisfying `unwanted` comes within `within`.
    async fn quiet(&mut self, within: Duration, unwanted: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) if unwanted(&line) => return false,
                Ok(Some(_)) => continue,
                // The time is up, or the agent stopped.
                _ => return true,
            }
        }
    }
}

fn service_is(line: &Value, service: &str, state: &str) -> bool {
    line["event"] == "state" && line["state"]["services"][service] == state
}

async fn status(dir: &Path) -> Value {
    status_answer(dir).await["status"].clone()
}

async fn status_answer(dir: &Path) -> Value {
    driver::control(dir, "status").await.expect("agent answers")
}

const FAST: Duration = Duration::from_secs(3);

/// A real server with a tenant, and an agent running against it for user ada.
struct Started {
    server: RealServer,
    key: String,
    group: String,
    dir: tempfile::TempDir,
    agent: RunningAgent,
}

/// Starts a server and an agent, and waits until the agent runs Internet & SaaS.
async fn started() -> Started {
    let server = RealServer::start().await;
    let (key, group) = server.tenant().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(config(&server.base, &key), dir.path());
    agent
        .expect(FAST, |l| service_is(l, "internet_access", "running"))
        .await;
    Started {
        server,
        key,
        group,
        dir,
        agent,
    }
}

#[tokio::test]
async fn the_agent_follows_the_rules_of_spec_section_6() {
    let Started {
        server,
        key,
        group,
        dir,
        mut agent,
    } = started().await;
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

/// What a user does with the long-poll on: the change arrives on its own and
/// waits for the next login; "Update Policy" makes a re-authentication enough.
#[tokio::test]
async fn update_policy_after_a_change_the_long_poll_brought_needs_reauthentication() {
    let Started {
        server,
        key: _key,
        group,
        dir,
        mut agent,
    } = started().await;
    server
        .save(
            "private_access",
            json!({"enabled_by_default": false, "user_groups": [group]}),
        )
        .await;
    agent
        .expect(FAST, |l| service_is(l, "private_access", "pending_login"))
        .await;
    driver::control(dir.path(), "update-policy")
        .await
        .expect("update");
    agent
        .expect(FAST, |l| service_is(l, "private_access", "pending_reauth"))
        .await;
    assert_eq!(
        status(dir.path()).await["services"]["internet_access"],
        "running",
        "a service the update did not change keeps running"
    );
    driver::control(dir.path(), "reauth").await.expect("reauth");
    agent
        .expect(FAST, |l| service_is(l, "private_access", "running"))
        .await;
    agent.stop().await;
}

impl RunningAgent {
    /// The event lines up to the first that satisfies `wanted` (up to `within`).
    async fn lines_until(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let done = wanted(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                _ => panic!("no expected event within {within:?}; saw {seen:?}"),
            }
        }
    }
}

/// Restarts the agent in `dir` and returns it once it has heard from the
/// server, with the lines it wrote until then.
async fn restart(
    agent: RunningAgent,
    server: &str,
    key: &str,
    dir: &Path,
) -> (RunningAgent, Vec<Value>) {
    agent.stop().await;
    let mut agent = start_agent(config(server, key), dir);
    let lines = agent
        .lines_until(FAST, |l| {
            l["event"] == "state" && l["state"]["server_reachable"] == true
        })
        .await;
    (agent, lines)
}

fn started_services(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "service_started")
        .map(|l| &l["service"])
        .collect()
}

/// SPEC §6: restarting the agent is not a login. A service waiting for the
/// next sign-in keeps waiting, and a user signed out by "logout on enable"
/// stays signed out, until the user signs in.
#[tokio::test]
async fn a_restart_keeps_a_sign_out_and_services_waiting_for_login() {
    let Started {
        server,
        key,
        group,
        dir,
        mut agent,
    } = started().await;

    // Newly entitled without "logout on enable": waits for the next login, across a restart.
    server
        .save(
            "private_access",
            json!({"enabled_by_default": false, "user_groups": [group]}),
        )
        .await;
    agent
        .expect(FAST, |l| service_is(l, "private_access", "pending_login"))
        .await;
    let (mut agent, lines) = restart(agent, &server.base, &key, dir.path()).await;
    assert!(
        !started_services(&lines).contains(&&json!("private_access")),
        "{lines:?}"
    );
    let state = status(dir.path()).await;
    assert_eq!(state["session"], "logged_in", "{state}");
    assert_eq!(
        state["services"]["private_access"], "pending_login",
        "{state}"
    );
    assert_eq!(state["services"]["internet_access"], "running", "{state}");

    // Turned off, then on with "logout on enable": the user is signed out, across a restart.
    server
        .save("private_access", json!({"enabled_by_default": false}))
        .await;
    agent
        .expect(FAST, |l| service_is(l, "private_access", "stopped"))
        .await;
    server
        .save(
            "private_access",
            json!({"enabled_by_default": false, "user_groups": [group], "logout_on_enable": true}),
        )
        .await;
    agent
        .expect(FAST, |l| l["event"] == "user_logged_out")
        .await;
    let (agent, lines) = restart(agent, &server.base, &key, dir.path()).await;
    assert!(started_services(&lines).is_empty(), "{lines:?}");
    let state = status(dir.path()).await;
    assert_eq!(state["session"], "logged_out", "{state}");
    assert_eq!(
        state["services"]["private_access"], "pending_login",
        "{state}"
    );
    assert_eq!(
        state["services"]["internet_access"], "pending_login",
        "{state}"
    );

    // And again, with nothing new from the server: a second restart changes nothing either.
    let (agent, lines) = restart(agent, &server.base, &key, dir.path()).await;
    assert!(started_services(&lines).is_empty(), "{lines:?}");
    assert_eq!(status(dir.path()).await["session"], "logged_out");

    // A damaged file no longer says so: the agent starts signed out all the same.
    agent.stop().await;
    std::fs::write(dir.path().join("policy.json"), b"{\"etag\": \"trunc").expect("damage");
    let mut agent = start_agent(config(&server.base, &key), dir.path());
    let lines = agent
        .lines_until(FAST, |l| {
            l["event"] == "state" && l["state"]["server_reachable"] == true
        })
        .await;
    assert!(
        lines.iter().any(|l| l["event"] == "policy_file_ignored"),
        "{lines:?}"
    );
    assert!(started_services(&lines).is_empty(), "{lines:?}");
    let state = status(dir.path()).await;
    assert_eq!(state["session"], "logged_out", "{state}");
    assert_eq!(
        state["services"]["private_access"], "pending_login",
        "{state}"
    );

    // The sign-in is what starts everything.
    driver::control(dir.path(), "login").await.expect("login");
    agent
        .expect(FAST, |l| {
            service_is(l, "private_access", "running")
                && service_is(l, "internet_access", "running")
        })
        .await;
    agent.stop().await;
}

#[tokio::test]
async fn a_dead_server_leaves_services_running_and_a_restart_restores_them_from_disk() {
    let Started {
        server: _server,
        key,
        group: _,
        dir,
        agent,
    } = started().await;
    let received_at = status(dir.path()).await["policy_received_at"].clone();
    let shown = received_at.as_str().expect("a reception time");
    assert!(
        shown.ends_with('Z') && time::OffsetDateTime::parse(shown, &Rfc3339).is_ok(),
        "RFC 3339 UTC: {shown}"
    );
    agent.stop().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

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
    assert_eq!(
        state["policy_received_at"], received_at,
        "the reception time survives a restart"
    );
    assert!(
        state["policy_age_s"].as_u64().is_some_and(|age| age >= 1),
        "{state}"
    );
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

#[tokio::test]
async fn an_unknown_or_deactivated_user_stops_the_agent_with_a_clear_error() {
    let server = RealServer::start().await;
    let (key, _) = server.tenant().await;
    server
        .call(
            reqwest::Method::POST,
            "/api/v1/tenants/acme/users",
            json!({"user_name": "gone"}),
            None,
        )
        .await;
    let (status, _, body) = server
        .call(
            reqwest::Method::PATCH,
            "/api/v1/tenants/acme/users/gone",
            json!({"active": false}),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    for (user, why) in [
        ("nobody", "is not in the directory"),
        ("gone", "is deactivated"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = config(&server.base, &key);
        settings.user_name = Some(user.to_owned());
        let mut agent = start_agent(settings, dir.path());
        let line = agent
            .expect(FAST, |l| l["event"] == "enrollment_refused")
            .await;
        assert_eq!(line["code"], "user_not_provisioned", "{line}");
        // It stops on its own, at once, rather than retrying forever.
        let result = tokio::time::timeout(FAST, &mut agent.task)
            .await
            .expect("the agent stops by itself")
            .expect("no panic");
        let Err(driver::AgentError::Enroll(EnrollError::Refused {
            status,
            code,
            message,
        })) = result
        else {
            panic!("{user}: {result:?}")
        };
        assert_eq!((status, code.as_str()), (403, "user_not_provisioned"));
        assert!(message.contains(why), "{user}: {message}");
        assert!(
            !dir.path().join("enrollment.json").exists(),
            "{user}: nothing is enrolled"
        );
    }
}

#[tokio::test]
async fn a_revoked_device_stops_its_services_and_says_so() {
    let Started {
        server,
        key,
        group: _,
        dir,
        mut agent,
    } = started().await;
    let device_id = status_answer(dir.path()).await["device_id"]
        .as_str()
        .expect("device id")
        .to_owned();
    // Let the agent settle into its long-poll, which the deletion must wake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (deleted, _, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenants/acme/devices/{device_id}"),
            Value::Null,
            None,
        )
        .await;
    assert_eq!(deleted, reqwest::StatusCode::NO_CONTENT, "{body}");
    let line = agent.expect(FAST, |l| l["event"] == "device_revoked").await;
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked") && e.contains("enrollment.json")),
        "{line}"
    );
    agent
        .expect(FAST, |l| {
            l["event"] == "state"
                && l["state"]["revoked"] == true
                && service_is(l, "internet_access", "stopped")
        })
        .await;
    let state = status(dir.path()).await;
    assert_eq!(state["revoked"], true, "{state}");
    assert_eq!(state["config_version"], Value::Null, "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked")),
        "{state}"
    );
    assert!(
        !dir.path().join("policy.json").exists(),
        "the last-known-good policy is dropped"
    );
    // The dead token is not retried: no second answer comes on its own.
    assert!(
        agent
            .quiet(Duration::from_secs(2), |l| l["event"] == "device_revoked"
                || l["event"] == "sync_failed")
            .await,
        "no retry after a revocation"
    );
    agent.stop().await;

    // A restart does not start anything from the old policy, and says revoked again.
    let mut agent = start_agent(config(&server.base, &key), dir.path());
    agent.expect(FAST, |l| l["event"] == "device_revoked").await;
    let state = status(dir.path()).await;
    assert_eq!(state["revoked"], true, "{state}");
    assert_eq!(state["services"], json!({}), "nothing was started: {state}");
    agent.stop().await;
}

#[tokio::test]
async fn an_unknown_control_command_is_answered_with_an_error_and_the_agent_keeps_running() {
    let Started {
        server: _server,
        key: _key,
        group: _,
        dir,
        agent,
    } = started().await;
    let answer = driver::control(dir.path(), "reboot")
        .await
        .expect("answered");
    assert!(
        answer["error"].as_str().is_some_and(
            |e| e.contains("unknown command \"reboot\"") && e.contains("update-policy")
        ),
        "{answer}"
    );
    // Garbage on the socket is answered too.
    for line in ["not json\n", "{\"verb\": \"status\"}\n"] {
        let stream = tokio::net::UnixStream::connect(dir.path().join("control.sock"))
            .await
            .expect("connect");
        let (reader, mut writer) = stream.into_split();
        writer.write_all(line.as_bytes()).await.expect("write");
        let mut answer = String::new();
        BufReader::new(reader)
            .read_line(&mut answer)
            .await
            .expect("read");
        let answer: Value = serde_json::from_str(&answer).expect("JSON answer");
        assert!(answer["error"].is_string(), "{line}: {answer}");
    }
    let state = status(dir.path()).await;
    assert_eq!(state["services"]["internet_access"], "running", "{state}");
    assert!(!agent.task.is_finished(), "the agent still runs");
    agent.stop().await;
}

/// A small fleet over the shared runtime: enrolls, follows a save through its
/// long-polls, and, without long-polls, through the policy's poll interval.
#[tokio::test]
async fn a_fleet_follows_saves_by_long_poll_and_by_polling() {
    let server = RealServer::start_with(ServerConfig {
        poll_interval_s: 1,
        ..ServerConfig::default()
    })
    .await;
    let (key, _) = server.tenant().await;
    let users = vec!["ada".to_owned()];
    let plan = FleetPlan {
        server: &server.base,
        enrollment_key: &key,
        users: &users,
        count: 20,
        parallel: 4,
    };
    let client = reqwest::Client::new();
    let enrolled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = enrolled.clone();
    let devices = enroll_fleet(&client, plan, Timing::default(), move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .expect("enrolled");
    assert_eq!(devices.len(), 20);
    assert_eq!(enrolled.load(std::sync::atomic::Ordering::Relaxed), 20);
    let (long_polling, polling) = {
        let mut devices = devices;
        let rest = devices.split_off(10);
        (devices, rest)
    };
    let long_polling = Fleet::start(&client, long_polling, Timing::default());
    let polling = Fleet::start(
        &client,
        polling,
        Timing {
            long_poll_s: 0,
            ..Timing::default()
        },
    );
    // Let the long-polls be held before the save.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, etag, body) = server
        .call(
            reqwest::Method::PUT,
            "/api/v1/tenants/acme/entitlements/internet_access",
            // Part of every device's policy, whatever its client version.
            json!({"enabled_by_default": true, "logout_on_enable": true}),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let version: i64 = etag
        .as_deref()
        .map(|e| e.trim_matches('"'))
        .and_then(|e| e.parse().ok())
        .expect("the save's version");
    let saved = Instant::now();
    let reached = long_polling.propagation(version, saved, &[1.0], FAST).await;
    assert!(
        reached[0].is_some(),
        "every long-polling device holds the change"
    );
    // Polled every second ±10 %: all have it within about a second.
    let reached = polling.propagation(version, saved, &[1.0], FAST).await;
    assert!(
        reached[0].is_some(),
        "every polling device holds the change"
    );
    assert_eq!(polling.holding(version), 10);
    long_polling.stop();
    polling.stop();
}

/// One unknown user among many makes the server refuse (and, after twenty
/// refusals, slow down) the fleet's enrollments: the fleet names the refusal,
/// not the 429s it caused.
#[tokio::test]
async fn a_fleet_with_an_unknown_user_says_which_refusal_stopped_it() {
    let server = RealServer::start().await;
    let (key, _) = server.tenant().await;
    let users = vec!["ada".to_owned(), "nobody".to_owned()];
    let plan = FleetPlan {
        server: &server.base,
        enrollment_key: &key,
        users: &users,
        count: 60,
        parallel: 8,
    };
    let timing = Timing {
        backoff: Backoff::new(10, 20).expect("valid"),
        ..Timing::default()
    };
    let error = enroll_fleet(&reqwest::Client::new(), plan, timing, || {})
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("user_not_provisioned") && message.contains("nobody"),
        "{message}"
    );
}
