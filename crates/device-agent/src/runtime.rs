//! One agent's life with the server, shared by the real agent (`driver`) and
//! every simulated device of the `fleet`: sync at start, keep a long-poll open
//! while the server answers, poll on the policy's interval (±10 %), back off
//! (capped, exponential, with jitter) after failures, and carry out what the
//! machine decides. What differs between the two is a [`Host`], which may also
//! supply each sync's report: one that changed is sent at once, replacing a
//! held long-poll, so the server need not wait for the hold to end.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::lkg::Enrollment;
use crate::machine::{Action, Agent, Backoff, Event};
use crate::protocol::{SyncOutcome, sync_once};

/// How an agent paces its conversation with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Seconds a sync is held by the server (0: no long-poll, poll on the interval only).
    pub long_poll_s: u64,
    /// Waits between retries after failures.
    pub backoff: Backoff,
    /// How long the server may take to answer a request, beyond a long-poll's wait.
    pub request_timeout: Duration,
}

impl Default for Timing {
    /// A 30 s long-poll, retries from 1 s up to 60 s, 15 s to answer.
    fn default() -> Self {
        Self {
            long_poll_s: 30,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// What a host does with the machine's decisions. The real agent starts and
/// stops services, keeps its policy on disk and reports each change; a
/// simulated device only counts which policy it holds.
pub trait Host {
    /// Carries out an action other than syncing (which the runtime does itself):
    /// start or stop a service, sign the user out, ask for re-authentication,
    /// keep or forget the policy, report a refused policy.
    /// `agent` is the machine that decided it.
    fn act(&mut self, action: Action, agent: &Agent);

    /// Hears what the server answered to a sync, before the machine does.
    fn answered(&mut self, _outcome: &SyncOutcome) {}

    /// Sees the machine once an event and its actions are dealt with.
    fn settled(&mut self, _agent: &Agent, _now_ms: u64) {}

    /// What the next sync reports, when it is not the device's fixed report.
    /// A report that differs from the one last sent is sent at once.
    fn report(&self) -> Option<Arc<Value>> {
        None
    }

    /// Adds the host's own fields to `agent status`.
    fn describe(&self, _status: &mut serde_json::Map<String, Value>) {}

    /// Something the host learned on its own (a hook ended, a posture fact
    /// changed), delivered through the receiver given to [`run`].
    fn woke(&mut self, _wake: Self::Wake, _agent: &Agent) {}

    /// What [`Host::woke`] hears.
    type Wake;
}

/// A command of the local control interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Show the agent's state.
    Status,
    /// The user pressed "Update Policy".
    UpdatePolicy,
    /// The user signed in.
    Login,
    /// The user signed out.
    Logout,
    /// The user re-authenticated.
    Reauth,
}

/// A control command the agent does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?}; use status, update-policy, login, logout or reauth")]
pub struct UnknownCommand(pub String);

impl FromStr for Command {
    type Err = UnknownCommand;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(match name {
            "status" => Command::Status,
            "update-policy" => Command::UpdatePolicy,
            "login" => Command::Login,
            "logout" => Command::Logout,
            "reauth" => Command::Reauth,
            other => return Err(UnknownCommand(other.to_owned())),
        })
    }
}

/// A command with where to send its answer.
pub type Request = (Command, oneshot::Sender<Value>);

/// An enrolled device and how it talks to the server.
#[derive(Debug, Clone, Copy)]
pub struct Device<'a> {
    /// The HTTP client (one for a whole fleet).
    pub client: &'a reqwest::Client,
    /// Where and who the device is.
    pub enrollment: &'a Enrollment,
    /// What it reports at each sync, unless its [`Host::report`] says otherwise.
    pub report: &'a Value,
    /// Its pacing.
    pub timing: Timing,
}

/// Runs one agent until `shutdown` completes, starting with the `actions`
/// that [`Agent::new`] returned. `commands` is the control interface, if any.
pub async fn run<H: Host>(
    device: Device<'_>,
    mut agent: Agent,
    mut actions: Vec<Action>,
    host: &mut H,
    mut commands: Option<&mut mpsc::Receiver<Request>>,
    mut wakes: Option<&mut mpsc::UnboundedReceiver<H::Wake>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    // The sync in flight, if any, kept in the task itself rather than boxed:
    // a fleet holds one per device at all times.
    let mut sync = std::pin::pin!(None);
    let mut timer: Option<Instant> = None;
    // The report of the sync in flight (or the last one), and whether that sync is held.
    let mut sent: Option<Arc<Value>> = None;
    let mut held = false;
    // When the sync in flight started, and until when the next long-poll
    // waits: a server at its cap of held long-polls answers them at once,
    // and asking again at once would only spin.
    let mut sent_at = Instant::now();
    let mut pause: Option<Instant> = None;
    loop {
        for action in std::mem::take(&mut actions) {
            match action {
                // Asked for now (start, timer, "Update Policy"): ask without
                // waiting for a change. It replaces a held long-poll.
                Action::SyncNow { manual } => {
                    sent = host.report();
                    held = false;
                    sync.set(Some(request(device, sent.clone(), etag(&agent), 0, manual)));
                    timer = None;
                }
                Action::ScheduleSync { at_ms } => {
                    let delay = at_ms.saturating_sub(now_ms());
                    timer = Some(Instant::now() + Duration::from_millis(delay));
                }
                other => host.act(other, &agent),
            }
        }
        host.settled(&agent, now_ms());
        let usable = agent.server_reachable() && !agent.revoked();
        // A changed report (posture, what was applied) is sent at once rather
        // than when a held long-poll ends; a sync that is not held answers
        // soon and the next one carries it. After failures the backoff timer
        // decides.
        if usable && (sync.is_none() || held) {
            let report = host.report();
            let changed = match (&report, &sent) {
                (Some(now), Some(before)) => !Arc::ptr_eq(now, before) && now != before,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if changed && (sync.is_some() || device.timing.long_poll_s == 0) {
                sent = report;
                held = false;
                sync.set(Some(request(device, sent.clone(), etag(&agent), 0, false)));
            }
        }
        // While the server answers, keep a long-poll open; after failures the
        // backoff timer decides, and a revoked device asks no more.
        if sync.is_none() && device.timing.long_poll_s > 0 && usable && pause.is_none() {
            sent = host.report();
            held = true;
            sent_at = Instant::now();
            sync.set(Some(request(
                device,
                sent.clone(),
                etag(&agent),
                device.timing.long_poll_s,
                false,
            )));
        }
        tokio::select! {
            () = &mut shutdown => return,
            Some((command, reply)) = next_command(&mut commands) => {
                let event = match command {
                    Command::Status => {
                        let enrollment = device.enrollment;
                        let mut status = json!({"tenant": enrollment.tenant, "device_id": enrollment.device_id, "server": enrollment.server, "status": agent.status(now_ms())});
                        if let Some(fields) = status.as_object_mut() {
                            host.describe(fields);
                        }
                        let _ = reply.send(status);
                        continue;
                    }
                    Command::UpdatePolicy => Event::UpdatePolicyPressed,
                    Command::Login => Event::Login,
                    Command::Logout => Event::Logout,
                    Command::Reauth => Event::Reauthenticated,
                };
                actions.extend(agent.handle(event, now_ms(), jitter()));
                let _ = reply.send(json!({"ok": true}));
            }
            (outcome, manual) = async {
                match sync.as_mut().as_pin_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                }
            } => {
                sync.set(None);
                host.answered(&outcome);
                let quick = sent_at.elapsed() < QUICK_ANSWER && device.timing.long_poll_s > 1;
                if held && quick && outcome == SyncOutcome::Unchanged {
                    let spread = (jitter() + 1.0) / 2.0 * NOT_HELD_PAUSE.as_secs_f64();
                    pause = Some(Instant::now() + NOT_HELD_PAUSE + Duration::from_secs_f64(spread));
                }
                let event = match outcome {
                    // The held connection dropped: the server went away.
                    SyncOutcome::Failed(detail) if held => Event::HeldSyncLost { detail },
                    outcome => outcome.event(manual),
                };
                actions.extend(agent.handle(event, now_ms(), jitter()));
            }
            () = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)), if pause.is_some() => {
                pause = None;
            }
            Some(wake) = next_wake(&mut wakes) => host.woke(wake, &agent),
            () = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                timer = None;
                // A sync in flight answers sooner than a new one would.
                if sync.is_none() {
                    actions.extend(agent.handle(Event::Timer, now_ms(), jitter()));
                }
            }
        }
    }
}

/// A long-poll answered 304 sooner than this was not held by the server.
const QUICK_ANSWER: Duration = Duration::from_secs(1);
/// How long the next long-poll waits then (plus up to as long again, at random).
const NOT_HELD_PAUSE: Duration = Duration::from_secs(5);

/// The wall-clock time in milliseconds since the UNIX epoch, the machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A jitter sample in `[-1, 1]`.
pub fn jitter() -> f64 {
    rand::random::<f64>() * 2.0 - 1.0
}

fn etag(agent: &Agent) -> Option<String> {
    agent.policy().map(|p| p.etag.clone())
}

async fn request(
    device: Device<'_>,
    report: Option<Arc<Value>>,
    etag: Option<String>,
    wait_s: u64,
    manual: bool,
) -> (SyncOutcome, bool) {
    let outcome = sync_once(
        device.client,
        device.enrollment,
        report.as_deref().unwrap_or(device.report),
        etag.as_deref(),
        wait_s,
        device.timing.request_timeout,
    )
    .await;
    (outcome, manual)
}

async fn next_wake<W>(wakes: &mut Option<&mut mpsc::UnboundedReceiver<W>>) -> Option<W> {
    match wakes {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_command(commands: &mut Option<&mut mpsc::Receiver<Request>>) -> Option<Request> {
    match commands {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_unknown_ones_say_what_is_known() {
        assert_eq!("update-policy".parse(), Ok(Command::UpdatePolicy));
        assert_eq!("status".parse(), Ok(Command::Status));
        let error = "reboot".parse::<Command>().expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "unknown command \"reboot\"; use status, update-policy, login, logout or reauth"
        );
    }
}
