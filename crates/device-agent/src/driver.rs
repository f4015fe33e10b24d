//! The tokio driver: connects the state machine to the server (enrollment,
//! sync, long-poll, backoff) and to the local control socket, and reports every
//! state change as one JSON line.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::lkg::{Enrollment, StateDir, StateError};
use crate::machine::{Action, Agent, Backoff, Event, Policy};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The server refused the enrollment for good.
    #[error("enrollment refused: {0}")]
    Enrollment(String),
    /// The device is not enrolled and nothing to enroll with was given.
    #[error("this device is not enrolled yet: give --enrollment-key and --user-name")]
    NotEnrolled,
    /// The control socket failed.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket's path.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The agent did not answer on its control socket.
    #[error("no agent answers at {0}; is `entitle agent run` running with this --state-dir?")]
    NotRunning(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// How the agent talks to the server.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL.
    pub server: String,
    /// The tenant's enrollment key (needed only to enroll).
    pub enrollment_key: Option<String>,
    /// The user's login name (needed only to enroll).
    pub user_name: Option<String>,
    /// What the device reports: hostname, os, client_version, ownership, posture.
    pub report: Value,
    /// Seconds a sync is held by the server (0: no long-poll, poll on the interval only).
    pub long_poll_s: u64,
}

/// The answer to one sync.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// A new policy.
    Policy(Policy),
    /// The policy held is current (304).
    Unchanged,
    /// The device's token was revoked (401).
    Revoked,
    /// Down, slow, or garbage.
    Failed(String),
}

impl SyncOutcome {
    /// The machine event for this outcome.
    pub fn event(self, manual: bool) -> Event {
        match self {
            SyncOutcome::Policy(policy) => Event::PolicyReceived { policy, manual },
            SyncOutcome::Unchanged => Event::PolicyUnchanged,
            SyncOutcome::Revoked => Event::Revoked,
            SyncOutcome::Failed(detail) => Event::TransportError { detail },
        }
    }
}

/// One sync with the server; never fails, every problem is an outcome.
pub async fn sync_once(
    client: &reqwest::Client,
    server: &str,
    token: &str,
    report: &Value,
    etag: Option<&str>,
    wait_s: u64,
) -> SyncOutcome {
    let url = if wait_s > 0 {
        format!("{server}/agent/v1/sync?wait={wait_s}")
    } else {
        format!("{server}/agent/v1/sync")
    };
    let mut request = client
        .post(url)
        .bearer_auth(token)
        .json(report)
        .timeout(Duration::from_secs(wait_s + 15));
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return SyncOutcome::Failed("the server did not answer in time".to_owned());
        }
        Err(error) => return SyncOutcome::Failed(format!("cannot reach the server: {error}")),
    };
    match response.status().as_u16() {
        304 => SyncOutcome::Unchanged,
        401 => SyncOutcome::Revoked,
        200 => match response.text().await {
            Ok(text) => match serde_json::from_str::<Policy>(&text) {
                Ok(policy) => SyncOutcome::Policy(policy),
                Err(error) => SyncOutcome::Failed(format!(
                    "the server answered something that is not a policy ({error})"
                )),
            },
            Err(error) => SyncOutcome::Failed(format!("the answer was cut off: {error}")),
        },
        status => SyncOutcome::Failed(format!("the server answered {status}")),
    }
}

/// Enrolls the device; 4xx answers are final, others are retried by the caller.
pub async fn enroll(
    client: &reqwest::Client,
    config: &AgentConfig,
) -> Result<Result<(Enrollment, Policy), String>, AgentError> {
    let (Some(key), Some(user)) = (&config.enrollment_key, &config.user_name) else {
        return Err(AgentError::NotEnrolled);
    };
    let body = json!({"enrollment_key": key, "user_name": user, "device": config.report});
    let response = match client
        .post(format!("{}/agent/v1/enroll", config.server))
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
    {
        Ok(response) => response,
        Err(error) => return Ok(Err(format!("cannot reach the server: {error}"))),
    };
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    // 429 means "later", not "never": it is retried like a server error.
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        let message = parsed["error"]["message"]
            .as_str()
            .map_or_else(|| format!("the server answered {status}"), str::to_owned);
        return Err(AgentError::Enrollment(message));
    }
    if !status.is_success() {
        return Ok(Err(format!("the server answered {status}")));
    }
    let policy: Policy = match serde_json::from_value(parsed["policy"].clone()) {
        Ok(policy) => policy,
        Err(error) => {
            return Ok(Err(format!(
                "the enrollment answer is not understood: {error}"
            )));
        }
    };
    let (Some(device_id), Some(device_token)) = (
        parsed["device_id"].as_str().filter(|v| !v.is_empty()),
        parsed["device_token"].as_str().filter(|v| !v.is_empty()),
    ) else {
        return Ok(Err(
            "the enrollment answer has no device id or token".to_owned()
        ));
    };
    let enrollment = Enrollment {
        server: config.server.clone(),
        tenant: policy.tenant.clone(),
        device_id: device_id.to_owned(),
        device_token: device_token.to_owned(),
    };
    Ok(Ok((enrollment, policy)))
}

/// A command from the control socket, with where to send the answer.
type Command = (String, oneshot::Sender<Value>);

type SyncFuture = Pin<Box<dyn Future<Output = (SyncOutcome, bool)> + Send>>;

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    state_dir: &Path,
    out: mpsc::UnboundedSender<Value>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let state = StateDir::open(state_dir)?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| AgentError::Client(e.to_string()))?;
    // The machine's clock is the wall clock, so that the times it persists mean something after a restart.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
    };
    let jitter = || rand::random::<f64>() * 2.0 - 1.0;

    let mut first_policy = None;
    let enrollment = match state.enrollment()? {
        Some(enrollment) => enrollment,
        None => {
            let mut failures = 0u32;
            loop {
                match enroll(&client, &config).await? {
                    Ok((enrollment, policy)) => {
                        state.save_enrollment(&enrollment)?;
                        let _ = out.send(json!({"event": "enrolled", "device_id": enrollment.device_id, "tenant": enrollment.tenant}));
                        first_policy = Some(policy);
                        break enrollment;
                    }
                    Err(detail) => {
                        failures += 1;
                        let wait = Duration::from_millis((1000u64 << failures.min(6)).min(60_000));
                        let _ = out.send(json!({"event": "enroll_retry", "error": detail, "retry_in_ms": wait.as_millis() as u64}));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
    };
    let persisted = match state.policy() {
        Ok(policy) => policy,
        Err(error) => {
            let _ = out.send(json!({"event": "policy_file_ignored", "error": error.to_string()}));
            None
        }
    };
    let (mut agent, mut actions) = Agent::new(
        &enrollment.tenant,
        &enrollment.device_id,
        persisted,
        Backoff::default(),
    );
    if let Some(policy) = first_policy {
        actions.extend(agent.handle(
            Event::PolicyReceived {
                policy,
                manual: false,
            },
            now(),
            jitter(),
        ));
    }

    let socket_path = state.path().join("control.sock");
    let (commands, mut command_rx) = mpsc::channel::<Command>(16);
    let listener = bind_control(&socket_path)?;
    tokio::spawn(serve_control(listener, commands));

    let mut sync: Option<SyncFuture> = None;
    let mut next_sync: Option<Instant> = None;
    let mut last_status = json!(null);
    let shutdown = std::pin::pin!(shutdown);
    let mut shutdown = shutdown;
    loop {
        // Apply what the machine decided.
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Start(id) => {
                    let _ = out.send(json!({"event": "service_started", "service": id}));
                }
                Action::Stop(id) => {
                    let _ = out.send(json!({"event": "service_stopped", "service": id}));
                }
                Action::LogoutUser => {
                    let _ = out.send(json!({"event": "user_logged_out", "why": "a newly entitled service asks for it"}));
                }
                Action::AskReauth(id) => {
                    let _ = out.send(json!({"event": "reauthentication_needed", "service": id}));
                }
                Action::Rejected(reason) => {
                    let _ = out.send(json!({"event": "policy_rejected", "reason": reason}));
                }
                Action::Forget => {
                    if let Err(error) = state.forget_policy() {
                        let _ = out.send(
                            json!({"event": "policy_not_removed", "error": error.to_string()}),
                        );
                    }
                }
                Action::Persist(held) => {
                    if let Err(error) = state.save_policy(&held) {
                        let _ = out
                            .send(json!({"event": "policy_not_saved", "error": error.to_string()}));
                    }
                }
                Action::SyncNow { manual } => {
                    sync = Some(start_sync(
                        &client,
                        &enrollment,
                        &config,
                        agent.policy().map(|p| p.etag.clone()),
                        manual,
                    ));
                    next_sync = None;
                }
                Action::ScheduleSync { at_ms } => {
                    next_sync =
                        Some(Instant::now() + Duration::from_millis(at_ms.saturating_sub(now())));
                }
            }
        }
        let status = serde_json::to_value(agent.status(now())).unwrap_or(Value::Null);
        let shown = json!({"session": status["session"], "services": status["services"], "server_reachable": status["server_reachable"], "config_version": status["config_version"], "revoked": status["revoked"]});
        if shown != last_status {
            let _ = out.send(json!({"event": "state", "state": shown}));
            last_status = shown;
        }
        // While the server answers, keep a long-poll open; after errors, wait for the backoff.
        if sync.is_none()
            && config.long_poll_s > 0
            && agent.status(now()).server_reachable
            && !agent.status(now()).revoked
        {
            sync = Some(start_sync(
                &client,
                &enrollment,
                &config,
                agent.policy().map(|p| p.etag.clone()),
                false,
            ));
        }
        let sleep_until = next_sync.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            Some((command, reply)) = command_rx.recv() => {
                let answer = match command.as_str() {
                    "status" => json!({"tenant": enrollment.tenant, "device_id": enrollment.device_id, "server": enrollment.server, "status": agent.status(now())}),
                    "update-policy" => { actions.extend(agent.handle(Event::UpdatePolicyPressed, now(), jitter())); json!({"ok": true}) }
                    "login" => { actions.extend(agent.handle(Event::Login, now(), jitter())); json!({"ok": true}) }
                    "logout" => { actions.extend(agent.handle(Event::Logout, now(), jitter())); json!({"ok": true}) }
                    "reauth" => { actions.extend(agent.handle(Event::Reauthenticated, now(), jitter())); json!({"ok": true}) }
                    other => json!({"error": format!("unknown command {other:?}; use status, update-policy, login, logout or reauth")}),
                };
                let _ = reply.send(answer);
            }
            (outcome, manual) = async { match sync.as_mut() { Some(future) => future.await, None => std::future::pending().await } } => {
                sync = None;
                if let SyncOutcome::Failed(detail) = &outcome {
                    let _ = out.send(json!({"event": "sync_failed", "error": detail}));
                }
                actions.extend(agent.handle(outcome.event(manual), now(), jitter()));
            }
            () = tokio::time::sleep_until(sleep_until.into()), if next_sync.is_some() => {
                next_sync = None;
                if sync.is_none() {
                    actions.extend(agent.handle(Event::Timer, now(), jitter()));
                }
            }
        }
    }
}

fn start_sync(
    client: &reqwest::Client,
    enrollment: &Enrollment,
    config: &AgentConfig,
    etag: Option<String>,
    manual: bool,
) -> SyncFuture {
    let (client, server, token, report) = (
        client.clone(),
        enrollment.server.clone(),
        enrollment.device_token.clone(),
        config.report.clone(),
    );
    // A manual update asks at once rather than waiting for a change.
    let wait = if manual { 0 } else { config.long_poll_s };
    Box::pin(async move {
        (
            sync_once(&client, &server, &token, &report, etag.as_deref(), wait).await,
            manual,
        )
    })
}

#[cfg(unix)]
fn bind_control(path: &Path) -> Result<tokio::net::UnixListener, AgentError> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| AgentError::Control {
        path: path.display().to_string(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

#[cfg(unix)]
async fn serve_control(listener: tokio::net::UnixListener, commands: mpsc::Sender<Command>) {
    while let Ok((stream, _)) = listener.accept().await {
        let commands = commands.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(reader).read_line(&mut line).await.is_err() {
                return;
            }
            let command = serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["command"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let (reply, answer) = oneshot::channel();
            if commands.send((command, reply)).await.is_err() {
                return;
            }
            if let Ok(answer) = answer.await {
                let _ = writer.write_all(format!("{answer}\n").as_bytes()).await;
            }
        });
    }
}

/// Sends one command to a running agent and returns its answer.
#[cfg(unix)]
pub async fn control(state_dir: &Path, command: &str) -> Result<Value, AgentError> {
    let path = state_dir.join("control.sock");
    let shown = path.display().to_string();
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|_| AgentError::NotRunning(shown.clone()))?;
    let (reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("{}\n", json!({"command": command})).as_bytes())
        .await
        .map_err(|source| AgentError::Control {
            path: shown.clone(),
            source,
        })?;
    let mut line = String::new();
    BufReader::new(reader)
        .read_line(&mut line)
        .await
        .map_err(|source| AgentError::Control {
            path: shown.clone(),
            source,
        })?;
    serde_json::from_str(&line).map_err(|_| AgentError::NotRunning(shown))
}
