//! The agent's decisions, as a pure state machine (SPEC §6).
//!
//! Events come in with the current time (milliseconds since the UNIX epoch: the
//! machine only compares times, but what it persists and shows must still mean
//! something after a restart) and a jitter sample in `[-1, 1]`; actions come out.
//! Nothing here can drop a running service because of a transport error: only a
//! valid policy that un-entitles it, a logout, or a revoked device stops it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One service in a device policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePolicy {
    /// Whether the service runs.
    pub enabled: bool,
    /// Why, as a stable code.
    pub reason: String,
    /// Why, in words.
    #[serde(default)]
    pub explanation: String,
    /// Log the user out when the service becomes entitled.
    #[serde(default)]
    pub logout_on_enable: bool,
}

/// A device policy as the server sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Changes whenever the policy changes.
    pub etag: String,
    /// The tenant's config version.
    pub config_version: i64,
    /// Seconds between regular syncs.
    pub poll_interval_s: u64,
    /// The tenant's id.
    pub tenant: String,
    /// The device's id.
    pub device_id: String,
    /// Decision per service id.
    pub services: BTreeMap<String, ServicePolicy>,
}

/// A policy as the agent holds it: with the time it was received, so that its
/// age survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPolicy {
    /// The policy.
    #[serde(flatten)]
    pub policy: Policy,
    /// When it was received (milliseconds since the UNIX epoch), if known:
    /// files written before this was recorded do not say.
    #[serde(
        default,
        rename = "received_at",
        with = "rfc3339_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub received_at_ms: Option<u64>,
    /// The user's session and the services' states when the policy was last
    /// saved, so that a restart is not taken for a sign-in. Files written
    /// before this was recorded do not say; see [`Agent::new`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_state: Option<SessionState>,
}

/// What the user did with the policy held: signed in or out, and which
/// services wait for a sign-in or a re-authentication (SPEC §6: restarting the
/// agent is not a login).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Signed in or out.
    pub session: Session,
    /// Each service's state.
    pub services: BTreeMap<String, ServiceState>,
}

/// Capped exponential backoff after failures, spread by ±20 % jitter; and
/// the spread of a reconnect after a held long-poll's connection dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first_ms: u64,
    cap_ms: u64,
    reconnect_spread_ms: u64,
}

/// The longest random wait before reconnecting after a held long-poll's
/// connection dropped (a server restart): a fleet comes back spread over it.
const RECONNECT_SPREAD_MS: u64 = 5_000;

/// Why backoff settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// The first wait is zero, which would hammer a server that is down.
    #[error("the first backoff wait must be more than 0 ms")]
    ZeroFirstWait,
    /// The cap is below the first wait.
    #[error("the longest backoff wait ({cap_ms} ms) is shorter than the first ({first_ms} ms)")]
    CapBelowFirst {
        /// The first wait.
        first_ms: u64,
        /// The cap.
        cap_ms: u64,
    },
}

impl Default for Backoff {
    /// One second first, doubling up to a minute.
    fn default() -> Self {
        Self {
            first_ms: 1_000,
            cap_ms: 60_000,
            reconnect_spread_ms: RECONNECT_SPREAD_MS,
        }
    }
}

impl Backoff {
    /// The first retry waits `first_ms`; each further failure doubles it, up to `cap_ms`.
    pub fn new(first_ms: u64, cap_ms: u64) -> Result<Self, BackoffError> {
        if first_ms == 0 {
            return Err(BackoffError::ZeroFirstWait);
        }
        if cap_ms < first_ms {
            return Err(BackoffError::CapBelowFirst { first_ms, cap_ms });
        }
        Ok(Self {
            first_ms,
            cap_ms,
            reconnect_spread_ms: RECONNECT_SPREAD_MS.min(cap_ms),
        })
    }

    /// The same backoff, with reconnects after a dropped long-poll spread
    /// over `0..=spread_ms` (default: 5 s, or the cap if shorter).
    pub fn with_reconnect_spread_ms(mut self, spread_ms: u64) -> Self {
        self.reconnect_spread_ms = spread_ms;
        self
    }

    /// The wait before reconnecting after a held long-poll's connection
    /// dropped: anywhere in `0..=spread` ("full jitter"), so that a fleet
    /// whose server restarted does not reconnect all at once.
    pub fn reconnect_ms(&self, jitter: f64) -> u64 {
        let share = (jitter.clamp(-1.0, 1.0) + 1.0) / 2.0;
        (self.reconnect_spread_ms as f64 * share) as u64
    }

    /// The wait after a busy server asked for `retry_after_ms`: never
    /// earlier, at least the first backoff wait, plus up to half again, so
    /// that agents told the same wait do not come back together.
    pub fn busy_ms(&self, retry_after_ms: u64, jitter: f64) -> u64 {
        let share = (jitter.clamp(-1.0, 1.0) + 1.0) / 2.0;
        let wait = retry_after_ms.max(self.first_ms);
        wait.saturating_add((wait as f64 * 0.5 * share) as u64)
    }

    /// The first wait, in milliseconds.
    pub fn first_ms(&self) -> u64 {
        self.first_ms
    }

    /// The longest wait, in milliseconds.
    pub fn cap_ms(&self) -> u64 {
        self.cap_ms
    }

    /// The wait after `failures` failures in a row (at least one); `jitter` in `[-1, 1]`.
    pub fn delay_ms(&self, failures: u32, jitter: f64) -> u64 {
        let exponent = failures.saturating_sub(1).min(32);
        let base = self
            .first_ms
            .saturating_mul(1u64 << exponent)
            .min(self.cap_ms);
        // ±20 % so that a fleet that lost its server does not come back all at once.
        (base as f64 * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0))).max(0.0) as u64
    }
}

/// A service's state on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Running.
    Running,
    /// Not running.
    Stopped,
    /// Entitled; starts at the user's next sign-in.
    PendingLogin,
    /// Entitled; starts once the user re-authenticates.
    PendingReauth,
}

/// Whether the user is signed in to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Session {
    /// Signed in.
    LoggedIn,
    /// Signed out.
    LoggedOut,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server answered with a policy; `manual` when it answers "Update Policy".
    PolicyReceived {
        /// The policy.
        policy: Policy,
        /// Whether the user asked for it.
        manual: bool,
    },
    /// The server answered that the policy is unchanged (304).
    PolicyUnchanged,
    /// The user signed in.
    Login,
    /// The user signed out.
    Logout,
    /// The user re-authenticated.
    Reauthenticated,
    /// The user pressed "Update Policy".
    UpdatePolicyPressed,
    /// The server could not be reached, was slow, or answered garbage.
    TransportError {
        /// What went wrong.
        detail: String,
    },
    /// The connection of a held long-poll dropped (the server restarted).
    HeldSyncLost {
        /// What went wrong.
        detail: String,
    },
    /// The server is overloaded (429 or 503) and asked to wait (`Retry-After`).
    ServerBusy {
        /// The wait asked for, in milliseconds.
        retry_after_ms: u64,
        /// What the server said.
        detail: String,
    },
    /// The server no longer knows the device (its token was revoked).
    Revoked,
    /// The regular poll is due.
    Timer,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a service.
    Start(String),
    /// Stop a service.
    Stop(String),
    /// Sign the user out.
    LogoutUser,
    /// Ask the user to re-authenticate for a service.
    AskReauth(String),
    /// Sync now.
    SyncNow {
        /// Whether the user asked for it.
        manual: bool,
    },
    /// Sync again at this time (milliseconds).
    ScheduleSync {
        /// When.
        at_ms: u64,
    },
    /// Keep this policy as last-known-good.
    Persist(HeldPolicy),
    /// Drop the last-known-good policy: the device was revoked, and a restart
    /// must not start services from it.
    Forget,
    /// A policy was refused; it changed nothing.
    Rejected(String),
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Signed in or out.
    pub session: Session,
    /// Each service's state.
    pub services: BTreeMap<String, ServiceState>,
    /// The policy's config version, if one is held.
    pub config_version: Option<i64>,
    /// When the policy was received (RFC 3339, UTC), if known.
    #[serde(with = "rfc3339_ms")]
    pub policy_received_at: Option<u64>,
    /// Seconds since the policy was received, if known.
    pub policy_age_s: Option<u64>,
    /// Whether the last exchange with the server succeeded.
    pub server_reachable: bool,
    /// The last problem, if any.
    pub last_error: Option<String>,
    /// Failed exchanges in a row.
    pub consecutive_failures: u32,
    /// Whether the server revoked this device.
    pub revoked: bool,
}

/// The agent's state.
#[derive(Debug, Clone)]
pub struct Agent {
    tenant: String,
    device_id: String,
    session: Session,
    services: BTreeMap<String, ServiceState>,
    policy: Option<Policy>,
    received_at_ms: Option<u64>,
    backoff: Backoff,
    reachable: bool,
    last_error: Option<String>,
    failures: u32,
    revoked: bool,
    manual_pending: bool,
}

impl Agent {
    /// An agent for an enrolled device, running from its persisted policy if
    /// it has one (so a start while the server is down restores the last
    /// state), with the session and service states saved with it.
    ///
    /// A restart is not a sign-in: a user who was signed out stays signed out,
    /// and a service waiting for a sign-in or a re-authentication keeps
    /// waiting. A file that does not record the session (written by an older
    /// agent) cannot tell a signed-in user from one that a newly entitled
    /// service signed out, so it reads as signed out, every entitled service
    /// waiting for the next sign-in: that costs the user one sign-in after the
    /// upgrade, whereas reading it as signed in could start services that
    /// were waiting for one. Without any persisted policy the user counts as
    /// signed in, and the first policy starts what it entitles.
    pub fn new(
        tenant: &str,
        device_id: &str,
        persisted: Option<HeldPolicy>,
        backoff: Backoff,
    ) -> (Self, Vec<Action>) {
        let mut agent = Self {
            tenant: tenant.to_owned(),
            device_id: device_id.to_owned(),
            session: Session::LoggedIn,
            services: BTreeMap::new(),
            policy: None,
            received_at_ms: None,
            backoff,
            reachable: false,
            last_error: None,
            failures: 0,
            revoked: false,
            manual_pending: false,
        };
        let mut actions = Vec::new();
        if let Some(HeldPolicy {
            policy,
            received_at_ms,
            session_state,
        }) = persisted.filter(|held| agent.validate(&held.policy).is_ok())
        {
            agent.session = session_state
                .as_ref()
                .map_or(Session::LoggedOut, |saved| saved.session);
            for (id, service) in &policy.services {
                let saved = session_state
                    .as_ref()
                    .and_then(|saved| saved.services.get(id).copied());
                let state = agent.restored(service.enabled, saved);
                agent.set(id, state, &mut actions);
            }
            agent.policy = Some(policy);
            agent.received_at_ms = received_at_ms;
        }
        actions.push(Action::SyncNow { manual: false });
        (agent, actions)
    }

    /// An agent for a device that has just enrolled: the enrollment's answer
    /// is its first policy, received at `now_ms`, so it needs no sync at start
    /// (a fleet of thousands would otherwise send a burst of them).
    pub fn enrolled(
        tenant: &str,
        device_id: &str,
        policy: Policy,
        backoff: Backoff,
        now_ms: u64,
        jitter: f64,
    ) -> (Self, Vec<Action>) {
        let (mut agent, _) = Self::new(tenant, device_id, None, backoff);
        let actions = agent.handle(
            Event::PolicyReceived {
                policy,
                manual: false,
            },
            now_ms,
            jitter,
        );
        (agent, actions)
    }

    /// The state of a service (stopped when unknown).
    pub fn service(&self, id: &str) -> ServiceState {
        self.services
            .get(id)
            .copied()
            .unwrap_or(ServiceState::Stopped)
    }

    /// The user's session.
    pub fn session(&self) -> Session {
        self.session
    }

    /// The policy held, if any.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Whether the last exchange with the server succeeded.
    pub fn server_reachable(&self) -> bool {
        self.reachable
    }

    /// Whether the server revoked this device.
    pub fn revoked(&self) -> bool {
        self.revoked
    }

    /// What `status` shows.
    pub fn status(&self, now_ms: u64) -> Status {
        Status {
            session: self.session,
            services: self.services.clone(),
            config_version: self.policy.as_ref().map(|p| p.config_version),
            policy_received_at: self.received_at_ms,
            policy_age_s: self
                .received_at_ms
                .map(|at| now_ms.saturating_sub(at) / 1000),
            server_reachable: self.reachable,
            last_error: self.last_error.clone(),
            consecutive_failures: self.failures,
            revoked: self.revoked,
        }
    }

    /// Checks a policy before it is activated.
    pub fn validate(&self, policy: &Policy) -> Result<(), String> {
        if policy.tenant != self.tenant || policy.device_id != self.device_id {
            return Err(format!(
                "the policy is for device {} of tenant {}, not this device",
                policy.device_id, policy.tenant
            ));
        }
        if let Some(held) = &self.policy
            && policy.config_version < held.config_version
        {
            return Err(format!(
                "the policy's config version {} is older than the {} held",
                policy.config_version, held.config_version
            ));
        }
        if policy.services.keys().any(|id| id.is_empty())
            || policy.poll_interval_s == 0
            || policy.config_version < 0
            || policy.etag.is_empty()
        {
            return Err("the policy is malformed".to_owned());
        }
        Ok(())
    }

    /// Handles one event at `now_ms`; `jitter` in `[-1, 1]` spreads retries and polls.
    pub fn handle(&mut self, event: Event, now_ms: u64, jitter: f64) -> Vec<Action> {
        let before = (self.session, self.services.clone());
        let mut actions = self.dispatch(event, now_ms, jitter);
        // A sign-in, a sign-out or a re-authentication changes what a restart
        // must restore, so it is saved with the policy like a new policy is.
        let changed = before.0 != self.session || before.1 != self.services;
        let saved = actions
            .iter()
            .any(|action| matches!(action, Action::Persist(_) | Action::Forget));
        if changed
            && !saved
            && let Some(held) = self.held()
        {
            actions.push(Action::Persist(held));
        }
        actions
    }

    /// The policy held with its session state, as it is persisted.
    pub fn held(&self) -> Option<HeldPolicy> {
        let policy = self.policy.clone()?;
        Some(HeldPolicy {
            policy,
            received_at_ms: self.received_at_ms,
            session_state: Some(SessionState {
                session: self.session,
                services: self.services.clone(),
            }),
        })
    }

    fn dispatch(&mut self, event: Event, now_ms: u64, jitter: f64) -> Vec<Action> {
        let jitter = jitter.clamp(-1.0, 1.0);
        match event {
            Event::PolicyReceived { policy, manual } => {
                self.receive(policy, manual || self.manual_pending, now_ms, jitter)
            }
            Event::PolicyUnchanged => {
                self.succeeded();
                let mut actions = Vec::new();
                if std::mem::take(&mut self.manual_pending) {
                    actions.extend(self.apply_waiting_changes());
                }
                actions.push(self.next_poll(now_ms, jitter));
                actions
            }
            Event::Login => self.login(),
            Event::Logout => self.logout(),
            Event::Reauthenticated => {
                if self.session == Session::LoggedOut {
                    return Vec::new();
                }
                self.transition(|_, state| {
                    (state == ServiceState::PendingReauth).then_some(ServiceState::Running)
                })
            }
            Event::UpdatePolicyPressed => {
                self.manual_pending = true;
                vec![Action::SyncNow { manual: true }]
            }
            Event::TransportError { detail } => self.failed(detail, now_ms, jitter),
            // A long-poll that was held fine until now: every device of the
            // fleet lost it at the same moment, so they come back spread out.
            Event::HeldSyncLost { detail } if self.failures == 0 => {
                self.failure(detail);
                vec![Action::ScheduleSync {
                    at_ms: now_ms.saturating_add(self.backoff.reconnect_ms(jitter)),
                }]
            }
            Event::HeldSyncLost { detail } => self.failed(detail, now_ms, jitter),
            Event::ServerBusy {
                retry_after_ms,
                detail,
            } => {
                self.failure(detail);
                vec![Action::ScheduleSync {
                    at_ms: now_ms.saturating_add(self.backoff.busy_ms(retry_after_ms, jitter)),
                }]
            }
            Event::Revoked => {
                self.revoked = true;
                self.reachable = true;
                self.last_error =
                    Some("the server revoked this device; enroll it again".to_owned());
                self.policy = None;
                self.received_at_ms = None;
                let mut actions = self.transition(|_, state| {
                    (state != ServiceState::Stopped).then_some(ServiceState::Stopped)
                });
                // No sync is scheduled: the token is dead, only a new enrollment helps.
                actions.push(Action::Forget);
                actions
            }
            Event::Timer => vec![Action::SyncNow { manual: false }],
        }
    }

    fn succeeded(&mut self) {
        // An answer other than 401 means the token is valid again.
        self.revoked = false;
        self.reachable = true;
        self.failures = 0;
        self.last_error = None;
    }

    fn failure(&mut self, detail: String) {
        self.reachable = false;
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(detail);
    }

    fn failed(&mut self, detail: String, now_ms: u64, jitter: f64) -> Vec<Action> {
        self.failure(detail);
        vec![Action::ScheduleSync {
            at_ms: now_ms.saturating_add(self.backoff.delay_ms(self.failures, jitter)),
        }]
    }

    fn next_poll(&self, now_ms: u64, jitter: f64) -> Action {
        let interval = self.policy.as_ref().map_or(3600, |p| p.poll_interval_s) as f64 * 1000.0;
        // ±10 % so that a fleet does not stampede.
        Action::ScheduleSync {
            at_ms: now_ms.saturating_add((interval * (1.0 + 0.1 * jitter)).max(0.0) as u64),
        }
    }

    fn receive(&mut self, policy: Policy, manual: bool, now_ms: u64, jitter: f64) -> Vec<Action> {
        if let Err(reason) = self.validate(&policy) {
            let mut actions = vec![Action::Rejected(reason.clone())];
            actions.extend(self.failed(reason, now_ms, jitter));
            return actions;
        }
        self.succeeded();
        self.manual_pending = false;
        let before: BTreeMap<String, bool> = self
            .policy
            .as_ref()
            .map(|p| {
                p.services
                    .iter()
                    .map(|(id, s)| (id.clone(), s.enabled))
                    .collect()
            })
            .unwrap_or_default();
        let first = self.policy.is_none();
        let mut actions = Vec::new();
        let mut logout = false;
        for (id, service) in &policy.services {
            let was = before.get(id).copied().unwrap_or(false);
            let current = self.service(id);
            let next = match (was, service.enabled) {
                (_, false) => ServiceState::Stopped,
                // The first policy after enrollment (or after a revocation) starts what is entitled.
                (false, true) if first => self.running_or_waiting(),
                (false, true) if service.logout_on_enable => {
                    logout = true;
                    ServiceState::PendingLogin
                }
                (false, true) if manual => ServiceState::PendingReauth,
                (false, true) => ServiceState::PendingLogin,
                (true, true) if manual => self.after_manual_update(current),
                (true, true) => current,
            };
            self.set(id, next, &mut actions);
        }
        // Services the policy no longer names are not entitled any more.
        let gone: Vec<String> = self
            .services
            .keys()
            .filter(|id| !policy.services.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.set(&id, ServiceState::Stopped, &mut actions);
        }
        if logout && self.session == Session::LoggedIn {
            actions.push(Action::LogoutUser);
            actions.extend(self.logout());
        }
        self.policy = Some(policy);
        self.received_at_ms = Some(now_ms);
        actions.extend(self.held().map(Action::Persist));
        actions.push(self.next_poll(now_ms, jitter));
        actions
    }

    /// "Update Policy" also applies a change the long-poll brought earlier and
    /// that still waits for the next login: with the user signed in, it now
    /// needs only a re-authentication, as if the update had fetched it.
    fn after_manual_update(&self, current: ServiceState) -> ServiceState {
        match (current, self.session) {
            (ServiceState::PendingLogin, Session::LoggedIn) => ServiceState::PendingReauth,
            _ => current,
        }
    }

    fn apply_waiting_changes(&mut self) -> Vec<Action> {
        let session = self.session;
        self.transition(|_, state| {
            (state == ServiceState::PendingLogin && session == Session::LoggedIn)
                .then_some(ServiceState::PendingReauth)
        })
    }

    /// A service's state after a restart: what was saved, as far as the
    /// policy and the session allow. Nothing runs while the user is signed
    /// out, and a state that contradicts the policy (a file edited by hand)
    /// waits for the next sign-in rather than running.
    fn restored(&self, enabled: bool, saved: Option<ServiceState>) -> ServiceState {
        if !enabled {
            return ServiceState::Stopped;
        }
        match (self.session, saved) {
            (Session::LoggedIn, Some(ServiceState::Running)) => ServiceState::Running,
            (_, Some(state @ (ServiceState::PendingLogin | ServiceState::PendingReauth))) => state,
            _ => ServiceState::PendingLogin,
        }
    }

    fn running_or_waiting(&self) -> ServiceState {
        match self.session {
            Session::LoggedIn => ServiceState::Running,
            Session::LoggedOut => ServiceState::PendingLogin,
        }
    }

    fn login(&mut self) -> Vec<Action> {
        self.session = Session::LoggedIn;
        // A sign-in also counts as re-authentication: everything entitled runs.
        let entitled: Vec<String> = self
            .policy
            .as_ref()
            .map(|p| {
                p.services
                    .iter()
                    .filter(|(_, s)| s.enabled)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.transition(|id, state| {
            (entitled.iter().any(|e| e == id) && state != ServiceState::Running)
                .then_some(ServiceState::Running)
        })
    }

    fn logout(&mut self) -> Vec<Action> {
        self.session = Session::LoggedOut;
        // Signed out, nothing runs; what is entitled waits for the next sign-in.
        self.transition(|_, state| {
            matches!(state, ServiceState::Running | ServiceState::PendingReauth)
                .then_some(ServiceState::PendingLogin)
        })
    }

    fn transition(
        &mut self,
        change: impl Fn(&str, ServiceState) -> Option<ServiceState>,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let changes: Vec<(String, ServiceState)> = self
            .services
            .iter()
            .filter_map(|(id, state)| change(id, *state).map(|next| (id.clone(), next)))
            .collect();
        for (id, next) in changes {
            self.set(&id, next, &mut actions);
        }
        actions
    }

    fn set(&mut self, id: &str, next: ServiceState, actions: &mut Vec<Action>) {
        let previous = self.service(id);
        self.services.insert(id.to_owned(), next);
        match (
            previous == ServiceState::Running,
            next == ServiceState::Running,
        ) {
            (false, true) => actions.push(Action::Start(id.to_owned())),
            (true, false) => actions.push(Action::Stop(id.to_owned())),
            _ => {}
        }
        if next == ServiceState::PendingReauth && previous != ServiceState::PendingReauth {
            actions.push(Action::AskReauth(id.to_owned()));
        }
    }
}

/// Times in milliseconds since the UNIX epoch, written as RFC 3339 UTC text.
mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub(super) fn serialize<S: Serializer>(value: &Option<u64>, out: S) -> Result<S::Ok, S::Error> {
        let Some(ms) = value else {
            return out.serialize_none();
        };
        let text = OffsetDateTime::from_unix_timestamp_nanos(i128::from(*ms) * 1_000_000)
            .map_err(S::Error::custom)?
            .format(&Rfc3339)
            .map_err(S::Error::custom)?;
        out.serialize_some(&text)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        input: D,
    ) -> Result<Option<u64>, D::Error> {
        let Some(text) = Option::<String>::deserialize(input)? else {
            return Ok(None);
        };
        let at = OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom)?;
        // Times before 1970 cannot be a policy's reception; they read as unknown.
        Ok(u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceState::*;
    use proptest::prelude::*;

    fn policy(version: i64, services: &[(&str, bool, bool)]) -> Policy {
        Policy {
            etag: format!("\"e{version}\""),
            config_version: version,
            poll_interval_s: 3600,
            tenant: "t".into(),
            device_id: "d".into(),
            services: services
                .iter()
                .map(|(id, enabled, logout)| {
                    (
                        (*id).to_owned(),
                        ServicePolicy {
                            enabled: *enabled,
                            reason: "r".into(),
                            explanation: String::new(),
                            logout_on_enable: *logout,
                        },
                    )
                })
                .collect(),
        }
    }

    fn received(policy: Policy) -> Event {
        Event::PolicyReceived {
            policy,
            manual: false,
        }
    }

    /// Starts an agent with `initial` received, runs `events`, and checks the
    /// states and that the last event's actions contain `expected_actions`.
    fn check(
        initial: &[(&str, bool, bool)],
        events: Vec<Event>,
        expected: &[(&str, ServiceState)],
        expected_actions: &[Action],
        session: Session,
    ) {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, initial)), 0, 0.0);
        let mut last = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            last = agent.handle(event, 1000 * (index as u64 + 1), 0.0);
        }
        for (id, state) in expected {
            assert_eq!(agent.service(id), *state, "{id}: {:?}", agent.services);
        }
        for action in expected_actions {
            assert!(last.contains(action), "expected {action:?} in {last:?}");
        }
        assert_eq!(agent.session(), session);
    }

    #[test]
    fn first_policy_runs_what_is_entitled() {
        check(
            &[("zia", true, false), ("zpa", false, false)],
            vec![],
            &[("zia", Running), ("zpa", Stopped)],
            &[],
            Session::LoggedIn,
        );
    }

    #[test]
    fn newly_entitled_waits_for_the_next_login() {
        check(
            &[("zpa", false, false)],
            vec![received(policy(2, &[("zpa", true, false)]))],
            &[("zpa", PendingLogin)],
            &[],
            Session::LoggedIn,
        );
        check(
            &[("zpa", false, false)],
            vec![received(policy(2, &[("zpa", true, false)])), Event::Login],
            &[("zpa", Running)],
            &[Action::Start("zpa".into())],
            Session::LoggedIn,
        );
    }

    #[test]
    fn newly_entitled_with_logout_signs_the_user_out_then_everything_runs_at_login() {
        check(
            &[("zia", true, false), ("zpa", false, false)],
            vec![received(policy(
                2,
                &[("zia", true, false), ("zpa", true, true)],
            ))],
            &[("zpa", PendingLogin), ("zia", PendingLogin)],
            &[Action::LogoutUser, Action::Stop("zia".into())],
            Session::LoggedOut,
        );
        check(
            &[("zia", true, false), ("zpa", false, false)],
            vec![
                received(policy(2, &[("zia", true, false), ("zpa", true, true)])),
                Event::Login,
            ],
            &[("zpa", Running), ("zia", Running)],
            &[Action::Start("zpa".into()), Action::Start("zia".into())],
            Session::LoggedIn,
        );
    }

    #[test]
    fn newly_unentitled_stops_at_once() {
        check(
            &[("zpa", true, false)],
            vec![received(policy(2, &[("zpa", false, false)]))],
            &[("zpa", Stopped)],
            &[Action::Stop("zpa".into())],
            Session::LoggedIn,
        );
        check(
            &[("zpa", true, false), ("zdx", true, false)],
            vec![received(policy(2, &[("zpa", true, false)]))],
            &[("zdx", Stopped)],
            &[Action::Stop("zdx".into())],
            Session::LoggedIn,
        );
    }

    #[test]
    fn manual_update_that_changed_a_service_needs_reauthentication() {
        let manual = Event::PolicyReceived {
            policy: policy(2, &[("zpa", true, false), ("zia", true, false)]),
            manual: true,
        };
        check(
            &[("zpa", false, false), ("zia", true, false)],
            vec![Event::UpdatePolicyPressed, manual.clone()],
            &[("zpa", PendingReauth), ("zia", Running)],
            &[Action::AskReauth("zpa".into())],
            Session::LoggedIn,
        );
        check(
            &[("zpa", false, false), ("zia", true, false)],
            vec![
                Event::UpdatePolicyPressed,
                manual.clone(),
                Event::Reauthenticated,
            ],
            &[("zpa", Running)],
            &[Action::Start("zpa".into())],
            Session::LoggedIn,
        );
        // The answer to "Update Policy" counts as manual even if the driver did not say so.
        check(
            &[("zpa", false, false)],
            vec![
                Event::UpdatePolicyPressed,
                received(policy(2, &[("zpa", true, false)])),
            ],
            &[("zpa", PendingReauth)],
            &[],
            Session::LoggedIn,
        );
    }

    #[test]
    fn update_policy_applies_a_change_still_waiting_for_login_after_reauthentication() {
        // The long-poll brought zpa (pending_login); "Update Policy" finds no news.
        let brought = received(policy(2, &[("zpa", true, false), ("zia", true, false)]));
        check(
            &[("zpa", false, false), ("zia", true, false)],
            vec![
                brought.clone(),
                Event::UpdatePolicyPressed,
                Event::PolicyUnchanged,
            ],
            &[("zpa", PendingReauth), ("zia", Running)],
            &[Action::AskReauth("zpa".into())],
            Session::LoggedIn,
        );
        check(
            &[("zpa", false, false)],
            vec![
                brought.clone(),
                Event::UpdatePolicyPressed,
                Event::PolicyUnchanged,
                Event::Reauthenticated,
            ],
            &[("zpa", Running)],
            &[Action::Start("zpa".into())],
            Session::LoggedIn,
        );
        // Or the update fetched a newer policy that still entitles zpa.
        check(
            &[("zpa", false, false)],
            vec![
                brought.clone(),
                Event::UpdatePolicyPressed,
                received(policy(3, &[("zpa", true, false), ("zdx", false, false)])),
            ],
            &[("zpa", PendingReauth)],
            &[Action::AskReauth("zpa".into())],
            Session::LoggedIn,
        );
        // A failed update changes nothing until a retry gets the server's answer;
        // a 304 that nobody asked for changes nothing at all.
        check(
            &[("zpa", false, false)],
            vec![
                brought.clone(),
                Event::UpdatePolicyPressed,
                Event::TransportError {
                    detail: "down".into(),
                },
            ],
            &[("zpa", PendingLogin)],
            &[],
            Session::LoggedIn,
        );
        check(
            &[("zpa", false, false)],
            vec![
                brought.clone(),
                Event::UpdatePolicyPressed,
                Event::TransportError {
                    detail: "down".into(),
                },
                Event::PolicyUnchanged,
            ],
            &[("zpa", PendingReauth)],
            &[Action::AskReauth("zpa".into())],
            Session::LoggedIn,
        );
        check(
            &[("zpa", false, false)],
            vec![brought, Event::PolicyUnchanged],
            &[("zpa", PendingLogin)],
            &[],
            Session::LoggedIn,
        );
        // Signed out (logout on enable), the next login is what it takes.
        check(
            &[("zpa", false, false)],
            vec![
                received(policy(2, &[("zpa", true, true)])),
                Event::UpdatePolicyPressed,
                Event::PolicyUnchanged,
            ],
            &[("zpa", PendingLogin)],
            &[],
            Session::LoggedOut,
        );
    }

    #[test]
    fn logout_stops_everything_and_login_starts_what_is_entitled() {
        check(
            &[("zia", true, false), ("zpa", false, false)],
            vec![Event::Logout],
            &[("zia", PendingLogin), ("zpa", Stopped)],
            &[Action::Stop("zia".into())],
            Session::LoggedOut,
        );
        check(
            &[("zia", true, false)],
            vec![Event::Logout, Event::Login],
            &[("zia", Running)],
            &[Action::Start("zia".into())],
            Session::LoggedIn,
        );
        check(
            &[("zia", true, false)],
            vec![Event::Logout, Event::Reauthenticated],
            &[("zia", PendingLogin)],
            &[],
            Session::LoggedOut,
        );
    }

    #[test]
    fn transport_errors_keep_everything_and_back_off() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[("zia", true, false)])), 0, 0.0);
        let mut delays = Vec::new();
        for attempt in 0..10u64 {
            let actions = agent.handle(
                Event::TransportError {
                    detail: "down".into(),
                },
                attempt,
                0.0,
            );
            let Some(Action::ScheduleSync { at_ms }) = actions.first() else {
                panic!("{actions:?}")
            };
            delays.push(at_ms - attempt);
            assert_eq!(agent.service("zia"), Running);
        }
        assert_eq!(&delays[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(*delays.last().unwrap_or(&0), 60_000, "capped");
        let status = agent.status(5000);
        assert!(!status.server_reachable);
        assert_eq!(status.consecutive_failures, 10);
        agent.handle(Event::PolicyUnchanged, 6000, 0.0);
        assert!(agent.status(6000).server_reachable);
    }

    #[test]
    fn invalid_policies_change_nothing() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(5, &[("zia", true, false)])), 0, 0.0);
        let mut other_device = policy(6, &[("zia", false, false)]);
        other_device.device_id = "someone-else".into();
        let mut other_tenant = policy(6, &[("zia", false, false)]);
        other_tenant.tenant = "other".into();
        let mut no_etag = policy(6, &[("zia", false, false)]);
        no_etag.etag = String::new();
        let mut no_poll = policy(6, &[("zia", false, false)]);
        no_poll.poll_interval_s = 0;
        for bad in [
            other_device,
            other_tenant,
            no_etag,
            no_poll,
            policy(4, &[("zia", false, false)]),
        ] {
            let actions = agent.handle(received(bad), 1, 0.0);
            assert!(
                matches!(actions.first(), Some(Action::Rejected(_))),
                "{actions:?}"
            );
            assert_eq!(agent.service("zia"), Running);
            assert_eq!(agent.policy().map(|p| p.config_version), Some(5));
        }
        // The same version again is fine.
        assert!(!matches!(
            agent
                .handle(received(policy(5, &[("zia", true, false)])), 2, 0.0)
                .first(),
            Some(Action::Rejected(_))
        ));
    }

    /// A policy as files written before the session state was recorded hold it.
    fn held(policy: Policy, received_at_ms: Option<u64>) -> HeldPolicy {
        HeldPolicy {
            policy,
            received_at_ms,
            session_state: None,
        }
    }

    /// A policy as it is persisted, with the session and the services' states.
    fn saved(
        policy: Policy,
        received_at_ms: Option<u64>,
        session: Session,
        services: &[(&str, ServiceState)],
    ) -> HeldPolicy {
        HeldPolicy {
            session_state: Some(SessionState {
                session,
                services: services
                    .iter()
                    .map(|(id, state)| ((*id).to_owned(), *state))
                    .collect(),
            }),
            ..held(policy, received_at_ms)
        }
    }

    /// The last policy an agent asked to persist in `actions`, if any.
    fn persisted(actions: &[Action]) -> Option<HeldPolicy> {
        actions.iter().rev().find_map(|action| match action {
            Action::Persist(held) => Some(held.clone()),
            _ => None,
        })
    }

    /// The states that are not `stopped` (a stopped service and an unknown one are alike).
    fn active(agent: &Agent) -> BTreeMap<String, ServiceState> {
        agent
            .services
            .iter()
            .filter(|(_, state)| **state != Stopped)
            .map(|(id, state)| (id.clone(), *state))
            .collect()
    }

    /// Runs `events` after a first policy `initial`, restarts the agent from
    /// what it last persisted, and checks that the restart changed nothing
    /// and started only what was running.
    fn restart_after(initial: &[(&str, bool, bool)], events: Vec<Event>) -> (Agent, Vec<Action>) {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        let mut last = persisted(&agent.handle(received(policy(1, initial)), 0, 0.0));
        for (index, event) in events.into_iter().enumerate() {
            let actions = agent.handle(event, 1000 * (index as u64 + 1), 0.0);
            last = persisted(&actions).or(last);
        }
        assert_eq!(last, agent.held(), "every change is persisted");
        let (restarted, actions) = Agent::new("t", "d", last, Backoff::default());
        assert_eq!(restarted.session(), agent.session());
        assert_eq!(active(&restarted), active(&agent));
        for action in &actions {
            if let Action::Start(id) = action {
                assert_eq!(agent.service(id), Running, "{id} started by a restart");
            }
        }
        (restarted, actions)
    }

    #[test]
    fn a_restart_is_not_a_login() {
        // "Logout on enable" signed the user out: still signed out, nothing runs.
        let (restarted, actions) = restart_after(
            &[("zia", true, false), ("zpa", false, false)],
            vec![received(policy(
                2,
                &[("zia", true, false), ("zpa", true, true)],
            ))],
        );
        assert_eq!(restarted.session(), Session::LoggedOut);
        assert_eq!(restarted.service("zia"), PendingLogin);
        assert_eq!(restarted.service("zpa"), PendingLogin);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Start(_))),
            "{actions:?}"
        );
        // A newly entitled service still waits for the next sign-in; the rest runs.
        let (restarted, actions) = restart_after(
            &[("zia", true, false), ("zpa", false, false)],
            vec![received(policy(
                2,
                &[("zia", true, false), ("zpa", true, false)],
            ))],
        );
        assert_eq!(restarted.session(), Session::LoggedIn);
        assert_eq!(restarted.service("zpa"), PendingLogin);
        assert_eq!(restarted.service("zia"), Running);
        assert!(actions.contains(&Action::Start("zia".into())));
        // A change fetched by "Update Policy" still needs re-authentication, and asks for it again.
        let (restarted, actions) = restart_after(
            &[("zpa", false, false)],
            vec![
                Event::UpdatePolicyPressed,
                Event::PolicyReceived {
                    policy: policy(2, &[("zpa", true, false)]),
                    manual: true,
                },
            ],
        );
        assert_eq!(restarted.service("zpa"), PendingReauth);
        assert!(actions.contains(&Action::AskReauth("zpa".into())));
        // The user signed out by hand: still signed out.
        let (restarted, _) = restart_after(&[("zia", true, false)], vec![Event::Logout]);
        assert_eq!(restarted.session(), Session::LoggedOut);
        assert_eq!(restarted.service("zia"), PendingLogin);
        // Signed in again: everything runs again after a restart too.
        let (restarted, actions) =
            restart_after(&[("zia", true, false)], vec![Event::Logout, Event::Login]);
        assert_eq!(restarted.service("zia"), Running);
        assert!(actions.contains(&Action::Start("zia".into())));
    }

    #[test]
    fn a_restored_sign_out_ends_at_the_next_login() {
        let (mut restarted, _) = restart_after(
            &[("zia", true, false), ("zpa", false, false)],
            vec![received(policy(
                2,
                &[("zia", true, false), ("zpa", true, true)],
            ))],
        );
        let actions = restarted.handle(Event::Login, 5_000, 0.0);
        assert_eq!(restarted.service("zia"), Running);
        assert_eq!(restarted.service("zpa"), Running);
        assert!(actions.contains(&Action::Start("zpa".into())));
        // The sign-in is saved too, so the next restart runs everything.
        let Some(held) = persisted(&actions) else {
            panic!("the sign-in is not persisted: {actions:?}")
        };
        let (again, _) = Agent::new("t", "d", Some(held), Backoff::default());
        assert_eq!(again.session(), Session::LoggedIn);
        assert_eq!(again.service("zpa"), Running);
    }

    #[test]
    fn a_file_without_session_state_starts_nothing_until_the_next_login() {
        let old = held(
            policy(3, &[("zia", true, false), ("zpa", false, false)]),
            Some(1_000),
        );
        let (mut agent, actions) = Agent::new("t", "d", Some(old), Backoff::default());
        assert_eq!(agent.session(), Session::LoggedOut);
        assert_eq!(agent.service("zia"), PendingLogin);
        assert_eq!(agent.service("zpa"), Stopped);
        assert_eq!(actions, [Action::SyncNow { manual: false }]);
        agent.handle(Event::Login, 2_000, 0.0);
        assert_eq!(agent.service("zia"), Running);
    }

    #[test]
    fn a_saved_state_that_contradicts_the_policy_never_runs_more() {
        let entitled = policy(3, &[("zia", true, false), ("zpa", false, false)]);
        // Signed out, yet "running": waits for the sign-in.
        let (agent, actions) = Agent::new(
            "t",
            "d",
            Some(saved(
                entitled.clone(),
                None,
                Session::LoggedOut,
                &[("zia", Running), ("zpa", Running)],
            )),
            Backoff::default(),
        );
        assert_eq!(agent.service("zia"), PendingLogin);
        assert_eq!(agent.service("zpa"), Stopped, "not entitled");
        assert!(!actions.iter().any(|a| matches!(a, Action::Start(_))));
        // Signed in, entitled but "stopped" or not named: waits for the sign-in.
        for services in [&[("zia", Stopped)][..], &[]] {
            let (agent, actions) = Agent::new(
                "t",
                "d",
                Some(saved(entitled.clone(), None, Session::LoggedIn, services)),
                Backoff::default(),
            );
            assert_eq!(agent.service("zia"), PendingLogin);
            assert!(!actions.iter().any(|a| matches!(a, Action::Start(_))));
        }
    }

    #[test]
    fn session_changes_are_persisted_and_nothing_else_is() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[("zia", true, false)])), 0, 0.0);
        let actions = agent.handle(Event::Logout, 1, 0.0);
        assert_eq!(
            persisted(&actions),
            Some(saved(
                policy(1, &[("zia", true, false)]),
                Some(0),
                Session::LoggedOut,
                &[("zia", PendingLogin)]
            ))
        );
        // Events that change no state write nothing.
        for event in [
            Event::Logout,
            Event::Reauthenticated,
            Event::Timer,
            Event::PolicyUnchanged,
            Event::TransportError {
                detail: "down".into(),
            },
        ] {
            let actions = agent.handle(event, 2, 0.0);
            assert_eq!(persisted(&actions), None, "{actions:?}");
        }
    }

    fn session_event() -> impl Strategy<Value = Event> {
        let services = proptest::collection::vec((any::<bool>(), any::<bool>()), 3);
        prop_oneof![
            Just(Event::Login),
            Just(Event::Logout),
            Just(Event::Reauthenticated),
            Just(Event::UpdatePolicyPressed),
            Just(Event::PolicyUnchanged),
            Just(Event::Timer),
            Just(Event::TransportError { detail: "x".into() }),
            Just(Event::HeldSyncLost { detail: "x".into() }),
            (0u64..10_000).prop_map(|retry_after_ms| Event::ServerBusy {
                retry_after_ms,
                detail: "x".into()
            }),
            (services, any::<bool>()).prop_map(|(services, manual)| {
                let ids = ["zia", "zpa", "zdx"];
                let named: Vec<(&str, bool, bool)> = ids
                    .iter()
                    .zip(services)
                    .map(|(id, (enabled, logout))| (*id, enabled, logout))
                    .collect();
                Event::PolicyReceived {
                    policy: policy(1, &named),
                    manual,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn a_restart_restores_what_was_last_persisted(events in proptest::collection::vec(session_event(), 0..30)) {
            restart_after(&[("zia", true, false), ("zpa", false, true)], events);
        }
    }

    #[test]
    fn a_restart_runs_from_the_persisted_policy() {
        let persisted = policy(3, &[("zia", true, false), ("zpa", false, false)]);
        let (agent, actions) = Agent::new(
            "t",
            "d",
            Some(saved(
                persisted,
                Some(1_000),
                Session::LoggedIn,
                &[("zia", Running), ("zpa", Stopped)],
            )),
            Backoff::default(),
        );
        assert_eq!(agent.service("zia"), Running);
        assert!(actions.contains(&Action::Start("zia".into())));
        assert!(actions.contains(&Action::SyncNow { manual: false }));
        // The policy keeps the time it was received, not the time of the restart.
        let status = agent.status(61_000);
        assert_eq!(status.policy_received_at, Some(1_000));
        assert_eq!(status.policy_age_s, Some(60));
        let mut foreign = policy(3, &[("zia", true, false)]);
        foreign.device_id = "x".into();
        let (agent, _) = Agent::new("t", "d", Some(held(foreign, None)), Backoff::default());
        assert!(
            agent.policy().is_none(),
            "a persisted policy of another device is not used"
        );
    }

    #[test]
    fn a_received_policy_is_persisted_with_its_time() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        let actions = agent.handle(received(policy(1, &[("zia", true, false)])), 42_000, 0.0);
        assert!(
            actions.contains(&Action::Persist(saved(
                policy(1, &[("zia", true, false)]),
                Some(42_000),
                Session::LoggedIn,
                &[("zia", Running)]
            ))),
            "{actions:?}"
        );
        assert_eq!(agent.status(45_500).policy_age_s, Some(3));
        // An unknown reception time (an old file) is shown as unknown, not as "now".
        let (agent, _) = Agent::new(
            "t",
            "d",
            Some(held(policy(1, &[]), None)),
            Backoff::default(),
        );
        let status = agent.status(45_500);
        assert_eq!(
            (status.policy_received_at, status.policy_age_s),
            (None, None)
        );
    }

    #[test]
    fn a_freshly_enrolled_device_runs_its_first_policy_without_syncing_again() {
        let first = policy(1, &[("zia", true, false), ("zpa", false, false)]);
        let (agent, actions) =
            Agent::enrolled("t", "d", first.clone(), Backoff::default(), 5_000, 0.0);
        assert_eq!(agent.service("zia"), Running);
        assert!(agent.server_reachable());
        assert_eq!(
            actions,
            [
                Action::Start("zia".into()),
                Action::Persist(saved(
                    first,
                    Some(5_000),
                    Session::LoggedIn,
                    &[("zia", Running), ("zpa", Stopped)]
                )),
                Action::ScheduleSync { at_ms: 3_605_000 },
            ]
        );
        // A first policy that is not this device's is refused and retried later.
        let mut foreign = policy(1, &[("zia", true, false)]);
        foreign.device_id = "x".into();
        let (agent, actions) = Agent::enrolled("t", "d", foreign, Backoff::default(), 0, 0.0);
        assert!(agent.policy().is_none());
        assert!(
            matches!(actions.first(), Some(Action::Rejected(_))),
            "{actions:?}"
        );
        assert!(actions.contains(&Action::ScheduleSync { at_ms: 1_000 }));
    }

    #[test]
    fn a_revoked_device_stops_everything() {
        check(
            &[("zia", true, false)],
            vec![Event::Revoked],
            &[("zia", Stopped)],
            &[Action::Stop("zia".into()), Action::Forget],
            Session::LoggedIn,
        );
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[("zia", true, false)])), 0, 0.0);
        let actions = agent.handle(Event::Revoked, 1, 0.0);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::ScheduleSync { .. } | Action::SyncNow { .. })),
            "a dead token is not retried: {actions:?}"
        );
        let status = agent.status(2);
        assert!(status.revoked);
        assert_eq!(status.config_version, None);
        assert!(
            status
                .last_error
                .is_some_and(|e| e.contains("enroll it again"))
        );
        // Should the server answer again, the device is not revoked any more.
        agent.handle(received(policy(2, &[("zia", true, false)])), 3, 0.0);
        assert!(!agent.status(4).revoked);
        assert_eq!(agent.service("zia"), Running);
    }

    #[test]
    fn a_busy_server_is_asked_again_after_its_wait_plus_jitter_never_earlier() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[("zia", true, false)])), 0, 0.0);
        let busy = |retry_after_ms| Event::ServerBusy {
            retry_after_ms,
            detail: "busy".into(),
        };
        assert_eq!(
            agent.handle(busy(4_000), 100, -1.0),
            [Action::ScheduleSync { at_ms: 4_100 }],
            "never earlier than asked"
        );
        assert_eq!(
            agent.handle(busy(4_000), 100, 1.0),
            [Action::ScheduleSync { at_ms: 6_100 }],
            "at most half again"
        );
        assert_eq!(
            agent.handle(busy(4_000), 100, 0.0),
            [Action::ScheduleSync { at_ms: 5_100 }]
        );
        // "Retry-After: 0" does not make it hammer: the first backoff wait at least.
        assert_eq!(
            agent.handle(busy(0), 100, -1.0),
            [Action::ScheduleSync { at_ms: 1_100 }]
        );
        // Services keep running; the status says why the server is not used.
        assert_eq!(agent.service("zia"), Running);
        let status = agent.status(200);
        assert!(!status.server_reachable);
        assert!(status.last_error.is_some_and(|e| e.contains("busy")));
        agent.handle(Event::PolicyUnchanged, 7_000, 0.0);
        assert!(agent.server_reachable());
    }

    #[test]
    fn a_dropped_long_poll_reconnects_after_a_random_wait_then_backs_off() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[("zia", true, false)])), 0, 0.0);
        let lost = || Event::HeldSyncLost {
            detail: "connection closed".into(),
        };
        // Spread over 0..=5 s by the jitter sample, so a fleet comes back spread out.
        let mut first = agent.clone();
        assert_eq!(
            first.handle(lost(), 1_000, -1.0),
            [Action::ScheduleSync { at_ms: 1_000 }]
        );
        let mut last = agent.clone();
        assert_eq!(
            last.handle(lost(), 1_000, 1.0),
            [Action::ScheduleSync { at_ms: 6_000 }]
        );
        assert_eq!(
            agent.handle(lost(), 1_000, 0.0),
            [Action::ScheduleSync { at_ms: 3_500 }]
        );
        assert_eq!(agent.service("zia"), Running);
        // If the server is still down, the usual backoff follows.
        assert_eq!(
            agent.handle(lost(), 4_000, 0.0),
            [Action::ScheduleSync { at_ms: 6_000 }]
        );
        // The spread is at most the cap of a short backoff, and can be set.
        let short = Backoff::new(10, 20).expect("valid");
        assert_eq!(short.reconnect_ms(1.0), 20);
        assert_eq!(short.with_reconnect_spread_ms(0).reconnect_ms(1.0), 0);
    }

    proptest! {
        #[test]
        fn busy_waits_are_never_shorter_than_asked(
            retry_after_ms in 0u64..10_000_000,
            jitter in -2.0f64..2.0,
            now_ms in 0u64..1_000_000,
        ) {
            let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
            let actions = agent.handle(
                Event::ServerBusy { retry_after_ms, detail: "busy".into() },
                now_ms,
                jitter,
            );
            let wait = retry_after_ms.max(1_000);
            match actions.as_slice() {
                [Action::ScheduleSync { at_ms }] => {
                    prop_assert!(*at_ms >= now_ms + wait);
                    prop_assert!(*at_ms <= now_ms + wait + wait / 2);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }

    #[test]
    fn backoff_settings_are_checked_and_followed() {
        assert_eq!(Backoff::new(0, 10), Err(BackoffError::ZeroFirstWait));
        assert!(matches!(
            Backoff::new(500, 100),
            Err(BackoffError::CapBelowFirst { .. })
        ));
        let backoff = Backoff::new(250, 1_000).expect("valid");
        let delays: Vec<u64> = (1..=5).map(|n| backoff.delay_ms(n, 0.0)).collect();
        assert_eq!(delays, [250, 500, 1_000, 1_000, 1_000]);
        assert_eq!(backoff.delay_ms(1, 1.0), 300, "+20 %");
        assert_eq!(backoff.delay_ms(1, -1.0), 200, "-20 %");
        assert_eq!(backoff.delay_ms(u32::MAX, 0.0), 1_000, "no overflow");
        let (mut agent, _) = Agent::new("t", "d", None, backoff);
        let down = || Event::TransportError {
            detail: "down".into(),
        };
        assert_eq!(
            agent.handle(down(), 10, 0.0),
            [Action::ScheduleSync { at_ms: 260 }]
        );
        assert_eq!(
            agent.handle(down(), 10, 0.0),
            [Action::ScheduleSync { at_ms: 510 }]
        );
    }

    #[test]
    fn status_shows_the_reception_time_as_rfc3339_utc() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        agent.handle(received(policy(1, &[])), 1_700_000_000_000, 0.0);
        let shown = serde_json::to_value(agent.status(1_700_000_005_000)).expect("json");
        assert_eq!(shown["policy_received_at"], "2023-11-14T22:13:20Z");
        assert_eq!(shown["policy_age_s"], 5);
        let (agent, _) = Agent::new("t", "d", None, Backoff::default());
        let shown = serde_json::to_value(agent.status(0)).expect("json");
        assert!(shown["policy_received_at"].is_null(), "{shown}");
    }

    #[test]
    fn polls_are_spread_by_ten_percent() {
        let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
        let early = agent.handle(received(policy(1, &[])), 0, -1.0);
        assert!(
            early.contains(&Action::ScheduleSync { at_ms: 3_240_000 }),
            "{early:?}"
        );
        let late = agent.handle(Event::PolicyUnchanged, 0, 1.0);
        assert!(
            late.contains(&Action::ScheduleSync { at_ms: 3_960_000 }),
            "{late:?}"
        );
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::TransportError { detail: "x".into() }),
            Just(Event::Timer),
            Just(Event::UpdatePolicyPressed),
            Just(Event::PolicyUnchanged),
            (0i64..3).prop_map(|v| Event::PolicyReceived {
                policy: {
                    let mut p = policy(v, &[("zia", false, false)]);
                    p.device_id = "other".into();
                    p
                },
                manual: false
            }),
        ]
    }

    proptest! {
        #[test]
        fn transport_errors_and_bad_policies_never_stop_a_running_service(events in proptest::collection::vec(event(), 0..40)) {
            let (mut agent, _) = Agent::new("t", "d", None, Backoff::default());
            agent.handle(received(policy(5, &[("zia", true, false)])), 0, 0.0);
            for (index, event) in events.into_iter().enumerate() {
                let actions = agent.handle(event, index as u64, 0.5);
                prop_assert!(!actions.contains(&Action::Stop("zia".into())));
                prop_assert_eq!(agent.service("zia"), Running);
            }
        }
    }
}
