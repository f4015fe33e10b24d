//! The real agent on a device: enrolls once, keeps its enrollment and
//! last-known-good policy in the state directory, runs the shared
//! [`runtime`](crate::runtime), answers the local control socket and reports
//! every state change as one JSON line.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::facts::{PostureCommand, PostureFailure, run_posture_commands};
use crate::hooks::{HookEnv, HookFailure, Hooks, run_hook};
use crate::lkg::{StateDir, StateError};
use crate::machine::{Action, Agent, Backoff, ServiceState};
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
    /// What the device reports: hostname, os, client_version, ownership, and
    /// in posture the facts it detected.
    pub report: Value,
    /// Posture facts read by commands, re-read every `posture_interval`.
    pub posture_commands: Vec<PostureCommand>,
    /// How long each posture command may run.
    pub posture_timeout: Duration,
    /// How often the posture commands run again.
    pub posture_interval: Duration,
    /// Posture facts given as such; they win over detected and command facts.
    pub posture_overrides: Map<String, Value>,
    /// The commands that drive the device's services.
    pub hooks: Hooks,
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
    let mut posture = Posture::new(&config);
    posture.refresh(&config).await;
    let report = posture.report(&config.report);

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
                report: &report,
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
    let (wakes, mut wake_rx) = mpsc::unbounded_channel();
    let posture_task = PostureTask(if config.posture_commands.is_empty() {
        None
    } else {
        Some(tokio::spawn(reread_posture(
            config.clone(),
            posture.clone(),
            wakes.clone(),
        )))
    });
    let mut host = Local {
        hint: format!(
            "the server revoked this device; remove {} and run again with --enrollment-key and --user-name to enroll it again",
            state.path().join("enrollment.json").display()
        ),
        started: state.started_services(),
        state,
        out,
        shown: Value::Null,
        hooks: config.hooks.clone(),
        backoff: config.timing.backoff,
        wakes,
        services: BTreeMap::new(),
        hook_errors: VecDeque::new(),
        base: config.report.clone(),
        posture,
        applied: None,
        report: Arc::new(report.clone()),
    };
    // A service a hook started before the restart that the restored state
    // does not run (the user signed out meanwhile) is stopped.
    for id in host.started.clone() {
        if agent.service(&id) != ServiceState::Running
            && !actions.contains(&Action::Start(id.clone()))
        {
            host.act(Action::Stop(id), &agent);
        }
    }
    let device = Device {
        client: &client,
        enrollment: &enrollment,
        report: &report,
        timing: config.timing,
    };
    runtime::run(
        device,
        agent,
        actions,
        &mut host,
        Some(&mut command_rx),
        Some(&mut wake_rx),
        shutdown,
    )
    .await;
    drop(posture_task);
    drop(control);
    Ok(())
}

/// The posture facts: detected ones, command ones, and the overrides on top.
#[derive(Debug, Clone)]
struct Posture {
    detected: Map<String, Value>,
    commands: Map<String, Value>,
    errors: Vec<PostureFailure>,
}

impl Posture {
    fn new(config: &AgentConfig) -> Self {
        Self {
            detected: config.report["posture"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            commands: Map::new(),
            errors: Vec::new(),
        }
    }

    async fn refresh(&mut self, config: &AgentConfig) {
        (self.commands, self.errors) =
            run_posture_commands(&config.posture_commands, config.posture_timeout).await;
        for (key, value) in &config.posture_overrides {
            self.commands.insert(key.clone(), value.clone());
        }
    }

    fn facts(&self) -> Map<String, Value> {
        let mut facts = self.detected.clone();
        facts.extend(self.commands.clone());
        facts
    }

    /// `base` with these posture facts.
    fn report(&self, base: &Value) -> Value {
        let mut report = base.clone();
        if let Some(fields) = report.as_object_mut() {
            fields.insert("posture".to_owned(), Value::Object(self.facts()));
        }
        report
    }
}

/// The task that re-reads the posture commands, stopped with the agent.
struct PostureTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for PostureTask {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Runs the posture commands every `posture_interval` and tells the agent
/// when what they report changed. The interval is the long-poll's wait, so
/// that a changed fact reaches the server at least as often as a held sync
/// would have carried it.
async fn reread_posture(
    config: AgentConfig,
    mut posture: Posture,
    wakes: mpsc::UnboundedSender<Wake>,
) {
    loop {
        tokio::time::sleep(config.posture_interval).await;
        let before = (posture.commands.clone(), posture.errors.clone());
        posture.refresh(&config).await;
        if (&posture.commands, &posture.errors) != (&before.0, &before.1)
            && wakes.send(Wake::Posture(posture.clone())).is_err()
        {
            return;
        }
    }
}

/// What the real agent's tasks tell it.
#[derive(Debug)]
enum Wake {
    /// A start (`start`) or stop hook of a service ended.
    Service {
        /// The service.
        service: String,
        /// Which start or stop of it the hook was for.
        generation: u64,
        /// A start hook, else a stop hook.
        start: bool,
        /// How it ended.
        result: Result<(), HookFailure>,
    },
    /// A sign-out or re-authentication hook ended.
    Other {
        /// `on_logout` or `on_reauth_required`.
        hook: &'static str,
        /// How it ended.
        result: Result<(), HookFailure>,
    },
    /// Time to run a failed start hook again.
    Retry {
        /// The service.
        service: String,
        /// Which start it retries.
        generation: u64,
    },
    /// The posture commands report something else.
    Posture(Posture),
}

/// Where a service is, as far as its hooks go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Applied {
    /// The start hook runs.
    Starting,
    /// Started (by its hook, or with none).
    Running,
    /// The start hook failed; it runs again after a backoff.
    Failed(HookFailure),
    /// Stopped.
    Stopped,
}

#[derive(Debug)]
struct ServiceHooks {
    /// The service's last hook: the next one waits for it, so that a stop
    /// hook never runs before the start hook it undoes has ended.
    last: Option<tokio::task::JoinHandle<()>>,
    applied: Applied,
    /// Bumped at each start and stop, so that a late hook outcome is ignored.
    generation: u64,
    /// Failed start attempts in a row.
    failures: u32,
}

/// Hook failures kept for `agent status`.
const KEPT_HOOK_ERRORS: usize = 8;

/// The real agent's side of the runtime: files, JSON lines.
struct Local {
    state: StateDir,
    out: mpsc::UnboundedSender<Value>,
    /// The state last reported, so that only changes are.
    shown: Value,
    /// What to tell the user when the device is revoked.
    hint: String,
    hooks: Hooks,
    backoff: Backoff,
    wakes: mpsc::UnboundedSender<Wake>,
    services: BTreeMap<String, ServiceHooks>,
    /// Services whose start hook succeeded, as persisted.
    started: BTreeSet<String>,
    /// The last hook failures, newest last.
    hook_errors: VecDeque<Value>,
    base: Value,
    posture: Posture,
    /// What the agent applied, as last reported.
    applied: Option<Value>,
    report: Arc<Value>,
}

impl Local {
    fn say(&self, line: Value) {
        let _ = self.out.send(line);
    }

    fn env(agent: &Agent, service: &str) -> HookEnv {
        let policy = agent.policy();
        let decision = policy.and_then(|p| p.services.get(service));
        HookEnv {
            service: service.to_owned(),
            reason: match decision {
                Some(decision) => decision.reason.clone(),
                None if agent.revoked() => "device_revoked".to_owned(),
                None => String::new(),
            },
            explanation: decision.map(|d| d.explanation.clone()).unwrap_or_default(),
            config_version: policy.map(|p| p.config_version),
        }
    }

    fn record(&mut self, service: &str) -> &mut ServiceHooks {
        self.services
            .entry(service.to_owned())
            .or_insert(ServiceHooks {
                last: None,
                applied: Applied::Stopped,
                generation: 0,
                failures: 0,
            })
    }

    fn spawn_service_hook(&mut self, command: String, env: HookEnv, generation: u64, start: bool) {
        let (wakes, timeout) = (self.wakes.clone(), self.hooks.timeout);
        let record = self.record(&env.service);
        let previous = record.last.take();
        record.last = Some(tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let result = run_hook(&command, &env, timeout).await;
            let _ = wakes.send(Wake::Service {
                service: env.service,
                generation,
                start,
                result,
            });
        }));
    }

    fn spawn_other_hook(&self, hook: &'static str, command: Option<&String>, env: HookEnv) {
        let Some(command) = command.cloned() else {
            return;
        };
        let (wakes, timeout) = (self.wakes.clone(), self.hooks.timeout);
        tokio::spawn(async move {
            let result = run_hook(&command, &env, timeout).await;
            let _ = wakes.send(Wake::Other { hook, result });
        });
    }

    fn save_started(&self) {
        if let Err(error) = self.state.save_started_services(&self.started) {
            self.say(json!({"event": "service_states_not_saved", "error": error.to_string()}));
        }
    }

    fn hook_failed(&mut self, hook: &str, service: &str, failure: &HookFailure) {
        let line = json!({"hook": hook, "service": service, "exit_status": failure.exit_status, "reason": failure.reason, "output": failure.output});
        self.say(json!({"event": "hook_failed", "hook": hook, "service": service, "exit_status": failure.exit_status, "reason": failure.reason, "output": failure.output}));
        if self.hook_errors.len() == KEPT_HOOK_ERRORS {
            self.hook_errors.pop_front();
        }
        self.hook_errors.push_back(line);
    }

    fn rebuild_report(&mut self) {
        let mut report = self.posture.report(&self.base);
        if let (Some(applied), Some(fields)) = (&self.applied, report.as_object_mut()) {
            fields.insert("applied".to_owned(), applied.clone());
        }
        if *self.report != report {
            self.report = Arc::new(report);
        }
    }
}

impl Host for Local {
    type Wake = Wake;

    fn act(&mut self, action: Action, agent: &Agent) {
        match action {
            Action::Start(id) => {
                let command = self.hooks.on_start.get(&id).cloned();
                let already = self.started.contains(&id);
                let record = self.record(&id);
                record.generation += 1;
                record.failures = 0;
                let generation = record.generation;
                match command {
                    // Its hook started it before a restart, and nothing stopped it since.
                    Some(_) if already => {
                        record.applied = Applied::Running;
                        self.say(json!({"event": "service_started", "service": id, "hook": "already ran"}));
                    }
                    Some(command) => {
                        record.applied = Applied::Starting;
                        self.say(json!({"event": "service_starting", "service": id}));
                        self.spawn_service_hook(command, Self::env(agent, &id), generation, true);
                    }
                    None => {
                        record.applied = Applied::Running;
                        self.say(json!({"event": "service_started", "service": id}));
                    }
                }
            }
            Action::Stop(id) => {
                let record = self.record(&id);
                record.generation += 1;
                record.applied = Applied::Stopped;
                let generation = record.generation;
                if self.started.remove(&id) {
                    self.save_started();
                }
                if let Some(command) = self.hooks.on_stop.get(&id).cloned() {
                    self.spawn_service_hook(command, Self::env(agent, &id), generation, false);
                }
                self.say(json!({"event": "service_stopped", "service": id}));
            }
            Action::LogoutUser => {
                let env = HookEnv {
                    reason: "logout_on_enable".to_owned(),
                    ..Self::env(agent, "")
                };
                self.spawn_other_hook("on_logout", self.hooks.on_logout.as_ref(), env);
                self.say(
                    json!({"event": "user_logged_out", "why": "a newly entitled service asks for it"}),
                );
            }
            Action::AskReauth(id) => {
                let env = Self::env(agent, &id);
                self.spawn_other_hook(
                    "on_reauth_required",
                    self.hooks.on_reauth_required.as_ref(),
                    env,
                );
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
            SyncOutcome::Busy {
                status,
                retry_after_ms,
            } => self.say(json!({"event": "server_busy", "status": status,
                "retry_after_s": retry_after_ms.map(|ms| ms.div_ceil(1000))})),
            SyncOutcome::Policy(_) | SyncOutcome::Unchanged => {}
        }
    }

    fn settled(&mut self, agent: &Agent, now_ms: u64) {
        let applied = applied(agent, &self.services);
        if applied != self.applied {
            self.applied = applied;
            self.rebuild_report();
        }
        let status = agent.status(now_ms);
        let shown = json!({"session": status.session, "services": status.services, "server_reachable": status.server_reachable, "config_version": status.config_version, "revoked": status.revoked, "applied": self.applied});
        if shown != self.shown {
            self.say(json!({"event": "state", "state": shown}));
            self.shown = shown;
        }
    }

    fn report(&self) -> Option<Arc<Value>> {
        Some(self.report.clone())
    }

    fn describe(&self, status: &mut Map<String, Value>) {
        // The machine says `running` once a service is entitled and allowed;
        // the device runs it only once its start hook succeeded, so the
        // states shown are the applied ones.
        if let (Some(applied), Some(machine)) = (
            self.applied.as_ref().and_then(|a| a.get("services")),
            status
                .get_mut("status")
                .and_then(|s| s.get_mut("services"))
                .and_then(Value::as_object_mut),
        ) {
            for (id, shown) in machine.iter_mut() {
                if let Some(state) = applied.get(id).and_then(|a| a.get("state")) {
                    match shown {
                        Value::Object(fields) => {
                            fields.insert("state".to_owned(), state.clone());
                        }
                        other => *other = state.clone(),
                    }
                }
            }
        }
        status.insert(
            "applied".to_owned(),
            self.applied.clone().unwrap_or(Value::Null),
        );
        status.insert("posture".to_owned(), Value::Object(self.posture.facts()));
        status.insert(
            "posture_errors".to_owned(),
            serde_json::to_value(&self.posture.errors).unwrap_or_default(),
        );
        status.insert(
            "hook_errors".to_owned(),
            Value::Array(self.hook_errors.iter().cloned().collect()),
        );
    }

    fn woke(&mut self, wake: Wake, agent: &Agent) {
        match wake {
            Wake::Service {
                service,
                generation,
                start,
                result,
            } => {
                let hook = if start { "on_start" } else { "on_stop" };
                if let Err(failure) = &result {
                    self.hook_failed(hook, &service, failure);
                }
                let record = self.record(&service);
                // A start hook that a later stop or start overtook changes nothing.
                if !start || record.generation != generation {
                    return;
                }
                match result {
                    Ok(()) => {
                        record.applied = Applied::Running;
                        record.failures = 0;
                        self.started.insert(service.clone());
                        self.save_started();
                        self.say(json!({"event": "service_started", "service": service}));
                    }
                    Err(failure) => {
                        record.applied = Applied::Failed(failure);
                        record.failures = record.failures.saturating_add(1);
                        let failures = record.failures;
                        let wait = self.backoff.delay_ms(failures, crate::runtime::jitter());
                        let wakes = self.wakes.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            let _ = wakes.send(Wake::Retry {
                                service,
                                generation,
                            });
                        });
                    }
                }
            }
            Wake::Retry {
                service,
                generation,
            } => {
                let Some(command) = self.hooks.on_start.get(&service).cloned() else {
                    return;
                };
                let record = self.record(&service);
                let failed = matches!(record.applied, Applied::Failed(_));
                if record.generation == generation
                    && failed
                    && agent.service(&service) == ServiceState::Running
                {
                    self.say(json!({"event": "service_start_retried", "service": service}));
                    self.spawn_service_hook(command, Self::env(agent, &service), generation, true);
                }
            }
            Wake::Other { hook, result } => {
                if let Err(failure) = result {
                    self.hook_failed(hook, "", &failure);
                }
            }
            Wake::Posture(posture) => {
                self.say(json!({"event": "posture_changed", "posture": posture.facts(), "posture_errors": posture.errors}));
                self.posture = posture;
                self.rebuild_report();
            }
        }
    }
}

/// What the agent applied, as the sync body's `applied` carries it: the
/// config version acted on and each service's state, `failed` with the start
/// hook's exit status and last output; none before the first policy.
fn applied(agent: &Agent, records: &BTreeMap<String, ServiceHooks>) -> Option<Value> {
    let policy = agent.policy()?;
    let mut services = Map::new();
    for id in policy.services.keys() {
        let entry = match agent.service(id) {
            ServiceState::Running => match records.get(id).map(|s| &s.applied) {
                Some(Applied::Running) => json!({"state": "running"}),
                Some(Applied::Failed(failure)) => {
                    let mut failed = json!({"state": "failed", "output": failure.output});
                    if let Some(status) = failure.exit_status {
                        failed["exit_status"] = json!(status);
                    }
                    failed
                }
                // Its start hook has not succeeded yet.
                _ => json!({"state": "stopped"}),
            },
            ServiceState::Stopped => json!({"state": "stopped"}),
            ServiceState::PendingLogin => json!({"state": "pending_login"}),
            ServiceState::PendingReauth => json!({"state": "pending_reauth"}),
        };
        services.insert(id.clone(), entry);
    }
    Some(json!({"config_version": policy.config_version, "services": services}))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Policy, ServicePolicy};

    fn decision(enabled: bool) -> ServicePolicy {
        ServicePolicy {
            enabled,
            reason: "enabled_by_default".into(),
            explanation: String::new(),
            logout_on_enable: false,
        }
    }

    fn record(applied: Applied) -> ServiceHooks {
        ServiceHooks {
            last: None,
            applied,
            generation: 1,
            failures: 0,
        }
    }

    #[test]
    fn applied_says_what_the_hooks_did_and_nothing_before_a_policy() {
        let (agent, _) = Agent::new("t", "d", None, Backoff::default());
        assert_eq!(applied(&agent, &BTreeMap::new()), None);
        let policy = Policy {
            etag: "\"e\"".into(),
            config_version: 9,
            poll_interval_s: 60,
            tenant: "t".into(),
            device_id: "d".into(),
            services: BTreeMap::from([
                ("internet_access".to_owned(), decision(true)),
                ("private_access".to_owned(), decision(true)),
                ("digital_experience".to_owned(), decision(false)),
            ]),
        };
        let (agent, _) = Agent::enrolled("t", "d", policy, Backoff::default(), 0, 0.0);
        let failure = HookFailure {
            exit_status: Some(3),
            reason: "exited with status 3".into(),
            output: "no route".into(),
        };
        let records = BTreeMap::from([
            ("internet_access".to_owned(), record(Applied::Running)),
            (
                "private_access".to_owned(),
                record(Applied::Failed(failure)),
            ),
        ]);
        assert_eq!(
            applied(&agent, &records),
            Some(json!({"config_version": 9, "services": {
                "internet_access": {"state": "running"},
                "private_access": {"state": "failed", "exit_status": 3, "output": "no route"},
                "digital_experience": {"state": "stopped"},
            }}))
        );
        // A start hook still running has not started its service.
        let starting = BTreeMap::from([("internet_access".to_owned(), record(Applied::Starting))]);
        let body = applied(&agent, &starting).expect("a policy is held");
        assert_eq!(body["services"]["internet_access"]["state"], "stopped");
    }
}
