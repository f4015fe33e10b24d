//! Commands the agent runs when it starts or stops a service, signs the user
//! out or asks for re-authentication: how the agent drives the real services
//! of the device. Each runs through the platform's shell with a timeout, its
//! output (standard output and error together) kept only as its last lines.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

/// Lines of a hook's output kept for `agent status`.
const KEPT_LINES: usize = 8;
/// Bytes of a hook's output kept for `agent status` and the server.
pub const KEPT_BYTES: usize = 1024;
/// How long the output pipe is still read once the hook exited: a hook that
/// leaves a daemon holding its output must not count as hanging.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// Why a `SERVICE=COMMAND` flag was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookSpecError {
    /// No `=`.
    #[error("{0:?} must be SERVICE=COMMAND")]
    Shape(String),
    /// A service the server does not know.
    #[error("unknown service {service:?}; the services are {known}")]
    UnknownService {
        /// The name given.
        service: String,
        /// The known ids, comma-separated.
        known: String,
    },
    /// An empty command.
    #[error("the command for service {0:?} is empty")]
    EmptyCommand(String),
}

/// A `SERVICE=COMMAND` flag, with the service checked against the known ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHook {
    /// The service id, e.g. `internet_access`.
    pub service: String,
    /// The shell command.
    pub command: String,
}

impl std::str::FromStr for ServiceHook {
    type Err = HookSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (service, command) = text
            .split_once('=')
            .ok_or_else(|| HookSpecError::Shape(text.to_owned()))?;
        let service = service.trim();
        if entitle_core::service(service).is_err() {
            let known = entitle_core::SERVICES
                .iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(HookSpecError::UnknownService {
                service: service.to_owned(),
                known,
            });
        }
        if command.trim().is_empty() {
            return Err(HookSpecError::EmptyCommand(service.to_owned()));
        }
        Ok(Self {
            service: service.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// The hooks an agent was given.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Run to start a service.
    pub on_start: BTreeMap<String, String>,
    /// Run to stop a service.
    pub on_stop: BTreeMap<String, String>,
    /// Run when a newly entitled service signs the user out.
    pub on_logout: Option<String>,
    /// Run when a service waits for the user to re-authenticate.
    pub on_reauth_required: Option<String>,
    /// How long each may run before it is killed.
    pub timeout: Duration,
}

impl Hooks {
    /// The hooks of `--on-start` and `--on-stop` flags (a later flag for the same service wins).
    pub fn new(start: Vec<ServiceHook>, stop: Vec<ServiceHook>, timeout: Duration) -> Self {
        let map = |hooks: Vec<ServiceHook>| {
            hooks
                .into_iter()
                .map(|hook| (hook.service, hook.command))
                .collect()
        };
        Self {
            on_start: map(start),
            on_stop: map(stop),
            on_logout: None,
            on_reauth_required: None,
            timeout,
        }
    }
}

/// What a hook is told through its environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    /// `ENTITLE_SERVICE`: the service (empty for a sign-out).
    pub service: String,
    /// `ENTITLE_REASON`: the decision's reason code.
    pub reason: String,
    /// `ENTITLE_EXPLANATION`: the decision in words.
    pub explanation: String,
    /// `ENTITLE_CONFIG_VERSION`: the policy's config version.
    pub config_version: Option<i64>,
}

/// How a hook ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookFailure {
    /// Its exit status, when it exited (not when it was killed or never started).
    pub exit_status: Option<i32>,
    /// Why, in words.
    pub reason: String,
    /// The last lines of its output (at most 8 lines, 1 KiB).
    pub output: String,
}

/// Runs `command` with `env` and `timeout`; `Ok` when it exits with status 0.
pub async fn run_hook(command: &str, env: &HookEnv, timeout: Duration) -> Result<(), HookFailure> {
    let failure = |exit_status, reason: String, output: &[u8]| HookFailure {
        exit_status,
        reason,
        output: last_lines(output),
    };
    let mut shell = shell(command);
    shell
        .env("ENTITLE_SERVICE", &env.service)
        .env("ENTITLE_REASON", &env.reason)
        .env("ENTITLE_EXPLANATION", &env.explanation)
        .env(
            "ENTITLE_CONFIG_VERSION",
            env.config_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // A hook that outlives its timeout is killed, not left behind.
        .kill_on_drop(true);
    let mut child = shell
        .spawn()
        .map_err(|e| failure(None, format!("cannot start: {e}"), b""))?;
    let Some(mut stdout) = child.stdout.take() else {
        return Err(failure(None, "no output pipe".to_owned(), b""));
    };
    let mut tail = Tail::default();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + timeout;
    let mut open = true;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            read = stdout.read(&mut buffer), if open => match read {
                Ok(0) | Err(_) => open = false,
                Ok(n) => tail.push(&buffer[..n]),
            },
            () = tokio::time::sleep_until(deadline) => {
                kill_group(child.id()).await;
                let _ = child.kill().await;
                return Err(failure(None, format!("timed out after {} s and was killed", timeout.as_secs_f64()), &tail.bytes));
            }
        }
    };
    // What it wrote just before exiting is still in the pipe.
    let drain = async {
        while open {
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => open = false,
                Ok(n) => tail.push(&buffer[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, drain).await;
    let status =
        status.map_err(|e| failure(None, format!("cannot wait for it: {e}"), &tail.bytes))?;
    if status.success() {
        return Ok(());
    }
    Err(match status.code() {
        Some(code) => failure(
            Some(code),
            format!("exited with status {code}"),
            &tail.bytes,
        ),
        None => failure(None, "killed by a signal".to_owned(), &tail.bytes),
    })
}

/// Kills the hook's process group: what a hung hook started hangs with it.
/// (A hook that ends in time may leave daemons behind; that is how it starts one.)
async fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        // The `kill` program, since the workspace forbids the unsafe call.
        let _ = tokio::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
    }
    #[cfg(not(unix))]
    let _ = pid;
}

fn shell(command: &str) -> tokio::process::Command {
    if cfg!(windows) {
        let mut shell = tokio::process::Command::new("cmd");
        shell.arg("/C").arg(format!("{command} 2>&1"));
        shell
    } else {
        let mut shell = tokio::process::Command::new("sh");
        // Standard error joins the one pipe read, so failures show their messages.
        shell.arg("-c").arg(format!("exec 2>&1\n{command}"));
        // Its own process group, so that a timeout kills what it started too.
        #[cfg(unix)]
        shell.process_group(0);
        shell
    }
}

/// The last bytes of a stream, bounded whatever its length.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Four times what is kept, so that the last lines are whole.
        let keep = KEPT_BYTES * 4;
        if self.bytes.len() > keep {
            let cut = self.bytes.len() - keep;
            self.bytes.drain(..cut);
        }
    }
}

/// The last 8 lines of `output`, at most 1 KiB, as text. Control characters
/// other than tab (a colour escape, a carriage return of a progress bar) and
/// bidirectional overrides become U+FFFD: the server refuses them, and a
/// refused sync would cost the device its policy over a line of telemetry.
pub fn last_lines(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<String> = text
        .trim_end()
        .lines()
        .map(|line| {
            line.chars()
                .map(|c| {
                    if c == '\t' || entitle_core::is_name_char(c) {
                        c
                    } else {
                        '\u{FFFD}'
                    }
                })
                .collect()
        })
        .collect();
    let start = lines.len().saturating_sub(KEPT_LINES);
    let mut kept = lines[start..].join("\n");
    if kept.len() > KEPT_BYTES {
        let mut cut = kept.len() - KEPT_BYTES;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept.drain(..cut);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_hooks_name_a_known_service_and_a_command() {
        let hook: ServiceHook = "private_access=systemctl start zpa".parse().expect("valid");
        assert_eq!(hook.service, "private_access");
        assert_eq!(hook.command, "systemctl start zpa");
        let error = "zpa=true".parse::<ServiceHook>().expect_err("unknown");
        assert!(
            error
                .to_string()
                .contains("internet_access, private_access"),
            "{error}"
        );
        assert!("internet_access=  ".parse::<ServiceHook>().is_err());
        assert!("internet_access".parse::<ServiceHook>().is_err());
    }

    #[test]
    fn output_keeps_the_last_lines_and_bytes() {
        let many: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            last_lines(many.as_bytes()),
            (13..=20)
                .map(|i| format!("line {i}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            last_lines(b"\x1b[31merror\x1b[0m\rretry\r\n\tdone\r\n"),
            "\u{FFFD}[31merror\u{FFFD}[0m\u{FFFD}retry\n\tdone",
            "only tabs and line ends survive as themselves"
        );
        assert_eq!(
            last_lines("fichier \u{202E}txt.exe".as_bytes()),
            "fichier \u{FFFD}txt.exe",
            "a bidirectional override is replaced too: the server refuses it"
        );
        let long = "é".repeat(2000);
        let kept = last_lines(long.as_bytes());
        assert!(kept.len() <= KEPT_BYTES && kept.len() >= KEPT_BYTES - 1);
    }

    /// Whether the process of a `/proc` entry runs (a zombie does not).
    fn alive(proc: &std::path::Path) -> bool {
        std::fs::read_to_string(proc.join("stat"))
            .map(|stat| {
                !stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_hook_sees_its_environment_and_fails_with_its_status_and_output() {
        let env = HookEnv {
            service: "private_access".into(),
            reason: "group_match".into(),
            explanation: "in group eng".into(),
            config_version: Some(7),
        };
        let timeout = Duration::from_secs(5);
        run_hook(
            "test \"$ENTITLE_SERVICE/$ENTITLE_CONFIG_VERSION\" = private_access/7",
            &env,
            timeout,
        )
        .await
        .expect("the environment is set");
        let failed = run_hook("echo one; echo two >&2; exit 3", &env, timeout)
            .await
            .expect_err("fails");
        assert_eq!(failed.exit_status, Some(3));
        assert_eq!(failed.output, "one\ntwo");
        let slow = run_hook("sleep 30", &env, Duration::from_millis(200))
            .await
            .expect_err("killed");
        assert_eq!(slow.exit_status, None);
        assert!(slow.reason.contains("timed out"), "{}", slow.reason);
        // What a hung hook started dies with it.
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("pid");
        let hung = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        run_hook(&hung, &env, Duration::from_millis(500))
            .await
            .expect_err("killed");
        let pid = std::fs::read_to_string(&pid_file).expect("pid written");
        let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while alive(&proc) {
            assert!(
                std::time::Instant::now() < deadline,
                "the hook's child lives on"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A daemon left holding the pipe does not make a start hang.
        let started = tokio::time::timeout(
            Duration::from_secs(3),
            run_hook("sleep 20 & echo started", &env, Duration::from_secs(10)),
        )
        .await;
        assert!(matches!(started, Ok(Ok(()))), "{started:?}");
    }
}
