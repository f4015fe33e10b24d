//! The real agent on a device: enrolls once, keeps its enrollment and
//! last-known-good policy in the state directory, runs the shared
//! [`runtime`](crate::runtime), answers the local control socket and reports
//! every state change as one JSON line.

use std::future::Future;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::lkg::{StateDir, StateError};
use crate::machine::{Action, Agent};
use crate::protocol::{EnrollError, EnrollRequest, SyncOutcome, enroll_retrying};
use crate::runtime::{self, Command, Device, Host, Request, Timing, UnknownCommand, now_ms};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The device could not enroll.
    #[error(transparent)]
    Enroll(#[from] EnrollError),
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
    /// The server's URL would carry the device's credentials in clear.
    #[error("{0}")]
    InsecureHttp(String),
    /// A fleet was asked to enroll devices for nobody.
    #[error("the fleet's devices need at least one user")]
    NoUsers,
    /// A task of the fleet ended abnormally.
    #[error("a fleet task failed: {0}")]
    Task(String),
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
    /// Long-poll, backoff and request timeout.
    pub timing: Timing,
    /// A private CA (PEM) trusted beside the platform's, for an `https://` server.
    pub ca_file: Option<PathBuf>,
    /// Allow plain `http://` to an address other than this machine.
    pub insecure_http: bool,
}

/// Runs the agent until `shutdown` completes. A refused enrollment stops it
/// with [`EnrollError::Refused`]; everything else is retried.
pub async fn run(
    config: AgentConfig,
    state_dir: &Path,
    out: mpsc::UnboundedSender<Value>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    // Refused before any connection: a token must never leave in clear.
    crate::transport::check_plain_http(&config.server, config.insecure_http)
        .map_err(AgentError::InsecureHttp)?;
    let state = StateDir::open(state_dir)?;
    let client = crate::transport::build_client(config.ca_file.as_deref(), |builder| builder)
        .map_err(|e| AgentError::Client(e.to_string()))?;
    let mut shutdown = std::pin::pin!(shutdown);

    let mut first_policy = None;
    let enrollment = match state.enrollment()? {
        Some(enrollment) => enrollment,
        None => {
            let (Some(key), Some(user)) = (&config.enrollment_key, &config.user_name) else {
                return Err(AgentError::NotEnrolled);
            };
            let request = EnrollRequest {
                server: &config.server,
                enrollment_key: key,
                user_name: user,
                report: &config.report,
            };
            let enrolled = tokio::select! {
                () = &mut shutdown => return Ok(()),
                enrolled = enroll_retrying(&client, request, config.timing.request_timeout, config.timing.backoff, None, |error, wait| {
                    let _ = out.send(json!({"event": "enroll_retry", "error": error.to_string(), "retry_in_ms": wait.as_millis() as u64}));
                }) => enrolled,
            };
            let (enrollment, policy) = match enrolled {
                Ok(enrolled) => enrolled,
                Err(error) => {
                    if let EnrollError::Refused { code, .. } = &error {
                        let _ = out.send(json!({"event": "enrollment_refused", "code": code, "error": error.to_string()}));
                    }
                    return Err(error.into());
                }
            };
            state.save_enrollment(&enrollment)?;
            let _ = out.send(json!({"event": "enrolled", "device_id": enrollment.device_id, "tenant": enrollment.tenant}));
            first_policy = Some(policy);
            enrollment
        }
    };
    // The enrollment remembers its server, which is where the token goes.
    crate::transport::check_plain_http(&enrollment.server, config.insecure_http)
        .map_err(AgentError::InsecureHttp)?;
    let (agent, actions) = match first_policy {
        Some(policy) => Agent::enrolled(
            &enrollment.tenant,
            &enrollment.device_id,
            policy,
            config.timing.backoff,
            now_ms(),
            runtime::jitter(),
        ),
        None => {
            let (persisted, damaged) = match state.policy() {
                Ok(policy) => (policy, false),
                Err(error) => {
                    let _ = out
                        .send(json!({"event": "policy_file_ignored", "error": error.to_string()}));
                    (None, true)
                }
            };
            let (mut agent, mut actions) = Agent::new(
                &enrollment.tenant,
                &enrollment.device_id,
                persisted,
                config.timing.backoff,
            );
            if damaged {
                // A damaged file no longer says whether the user was signed
                // out, so the agent starts signed out, as with a file that
                // never said: the next policy waits for a sign-in.
                actions.extend(agent.handle(
                    crate::machine::Event::Logout,
                    now_ms(),
                    runtime::jitter(),
                ));
            }
            (agent, actions)
        }
    };

    let socket_path = state.path().join("control.sock");
    let (commands, mut command_rx) = mpsc::channel::<Request>(16);
    let listener = bind_control(&socket_path)?;
    let control = ControlSocket {
        path: socket_path,
        task: tokio::spawn(serve_control(listener, commands)),
    };
    let mut host = Local {
        hint: format!(
            "the server revoked this device; remove {} and run again with --enrollment-key and --user-name to enroll it again",
            state.path().join("enrollment.json").display()
        ),
        state,
        out,
        shown: Value::Null,
    };
    let device = Device {
        client: &client,
        enrollment: &enrollment,
        report: &config.report,
        timing: config.timing,
    };
    runtime::run(
        device,
        agent,
        actions,
        &mut host,
        Some(&mut command_rx),
        shutdown,
    )
    .await;
    drop(control);
    Ok(())
}

/// The real agent's side of the runtime: files, JSON lines.
struct Local {
    state: StateDir,
    out: mpsc::UnboundedSender<Value>,
    /// The state last reported, so that only changes are.
    shown: Value,
    /// What to tell the user when the device is revoked.
    hint: String,
}

impl Local {
    fn say(&self, line: Value) {
        let _ = self.out.send(line);
    }
}

impl Host for Local {
    fn act(&mut self, action: Action) {
        match action {
            Action::Start(id) => self.say(json!({"event": "service_started", "service": id})),
            Action::Stop(id) => self.say(json!({"event": "service_stopped", "service": id})),
            Action::LogoutUser => self.say(
                json!({"event": "user_logged_out", "why": "a newly entitled service asks for it"}),
            ),
            Action::AskReauth(id) => {
                self.say(json!({"event": "reauthentication_needed", "service": id}));
            }
            Action::Rejected(reason) => {
                self.say(json!({"event": "policy_rejected", "reason": reason}));
            }
            Action::Persist(held) => {
                if let Err(error) = self.state.save_policy(&held) {
                    self.say(json!({"event": "policy_not_saved", "error": error.to_string()}));
                }
            }
            Action::Forget => {
                if let Err(error) = self.state.forget_policy() {
                    self.say(json!({"event": "policy_not_removed", "error": error.to_string()}));
                }
            }
            // The runtime syncs itself.
            Action::SyncNow { .. } | Action::ScheduleSync { .. } => {}
        }
    }

    fn answered(&mut self, outcome: &SyncOutcome) {
        match outcome {
            SyncOutcome::Failed(detail) => {
                self.say(json!({"event": "sync_failed", "error": detail}))
            }
            SyncOutcome::Revoked => {
                self.say(json!({"event": "device_revoked", "error": self.hint}))
            }
            SyncOutcome::Policy(_) | SyncOutcome::Unchanged => {}
        }
    }

    fn settled(&mut self, agent: &Agent, now_ms: u64) {
        let status = agent.status(now_ms);
        let shown = json!({"session": status.session, "services": status.services, "server_reachable": status.server_reachable, "config_version": status.config_version, "revoked": status.revoked});
        if shown != self.shown {
            self.say(json!({"event": "state", "state": shown}));
            self.shown = shown;
        }
    }
}

/// The control socket while the agent runs: stops answering and disappears with it.
struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
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
async fn serve_control(listener: tokio::net::UnixListener, commands: mpsc::Sender<Request>) {
    while let Ok((stream, _)) = listener.accept().await {
        let commands = commands.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut line = String::new();
            if BufReader::new(reader).read_line(&mut line).await.is_err() {
                return;
            }
            // Unknown or malformed commands are answered here; the agent only sees valid ones.
            let answer = match parse_command(&line) {
                Ok(command) => {
                    let (reply, answer) = oneshot::channel();
                    if commands.send((command, reply)).await.is_err() {
                        return;
                    }
                    let Ok(answer) = answer.await else {
                        return;
                    };
                    answer
                }
                Err(error) => json!({"error": error.to_string()}),
            };
            let _ = writer.write_all(format!("{answer}\n").as_bytes()).await;
        });
    }
}

/// Why a line on the control socket is not a command.
#[derive(Debug, thiserror::Error)]
enum BadCommand {
    /// Not JSON at all.
    #[error("send one JSON line such as {{\"command\": \"status\"}}")]
    NotJson,
    /// JSON without a command.
    #[error("the line has no \"command\"")]
    NoCommand,
    /// A command the agent does not know.
    #[error(transparent)]
    Unknown(#[from] UnknownCommand),
}

/// Reads `{"command": "..."}`.
fn parse_command(line: &str) -> Result<Command, BadCommand> {
    let value: Value = serde_json::from_str(line).map_err(|_| BadCommand::NotJson)?;
    let Some(name) = value["command"].as_str() else {
        return Err(BadCommand::NoCommand);
    };
    Ok(name.parse()?)
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
