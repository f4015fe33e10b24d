//! The agent driving real services, with the real binary: `entitle serve` on a
//! loopback port, `entitle agent run` with hook scripts that write marker
//! files and posture commands, `entitle agent status` to read what it applied,
//! and the admin API to read what the server was told. Also `entitle agent
//! install` and the `entitle serve` unit of docs/deploy.md, checked by
//! `systemd-analyze verify`.
//!
//! Scenarios that touch storage run on SQLite and, with
//! `ENTITLE_TEST_POSTGRES_URL`, on a fresh PostgreSQL database.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ROOT: &str = "hooks-root-token";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn entitle() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entitle"));
    for var in [
        "ENTITLE_SERVER",
        "ENTITLE_TOKEN",
        "ENTITLE_TENANT",
        "ENTITLE_CA_FILE",
        "ENTITLE_INSECURE_HTTP",
        "ENTITLE_AGENT_STATE_DIR",
        "STATE_DIRECTORY",
    ] {
        command.env_remove(var);
    }
    command
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path, database_url: Option<&str>) -> (Running, String) {
    let port = free_port();
    let log = dir.join(format!("serve-{port}.log"));
    let mut command = entitle();
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--bootstrap-admin-token", ROOT])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("ENTITLE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let child = Running(command.spawn().expect("entitle serve starts"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("entitle is serving")
    {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

async fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url).bearer_auth(ROOT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Tenant `hooks` with user ada; returns the enrollment key.
async fn seed(base: &str) -> String {
    let (status, tenant) = call(
        reqwest::Method::POST,
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": "hooks"})),
    )
    .await;
    assert!(status < 300, "{status} {tenant}");
    let (status, user) = call(
        reqwest::Method::POST,
        &format!("{base}/api/v1/tenants/hooks/users"),
        Some(json!({"user_name": "ada@hooks.test"})),
    )
    .await;
    assert!(status < 300, "{status} {user}");
    tenant["enrollment_key"]
        .as_str()
        .expect("enrollment key")
        .to_owned()
}

/// Turns a service on or off for everyone; `logout` signs the user out when it turns on.
async fn entitle_everyone(base: &str, service: &str, enabled: bool, logout: bool) {
    let url = format!("{base}/api/v1/tenants/hooks/entitlements/{service}");
    let client = reqwest::Client::new();
    let current = client
        .get(&url)
        .bearer_auth(ROOT)
        .send()
        .await
        .expect("answered");
    let etag = current
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let answer = client
        .put(&url)
        .bearer_auth(ROOT)
        .header("If-Match", etag)
        .json(&json!({"enabled_by_default": enabled, "user_groups": [], "device_groups": [], "logout_on_enable": logout}))
        .send()
        .await
        .expect("answered");
    assert!(answer.status().is_success(), "{}", answer.status());
}

fn backends() -> Vec<Option<String>> {
    let mut backends = vec![None];
    match std::env::var("ENTITLE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => backends.push(Some(url)),
        _ => eprintln!("ENTITLE_TEST_POSTGRES_URL is not set: SKIPPING the PostgreSQL runs"),
    }
    backends
}

async fn database(backend: &Option<String>) -> Option<String> {
    match backend {
        None => None,
        Some(base) => Some(
            entitle_store::testing::fresh_postgres_database(base)
                .await
                .expect("fresh PostgreSQL database"),
        ),
    }
}

/// A running `entitle agent run`, with its JSON lines.
struct Agent {
    _child: Running,
    lines: std::sync::mpsc::Receiver<Value>,
    state_dir: PathBuf,
}

impl Agent {
    fn start(state_dir: &Path, args: &[String]) -> Self {
        let mut child = entitle()
            .args(["agent", "run"])
            .args(args)
            .arg("--state-dir")
            .arg(state_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        Self {
            _child: Running(child),
            lines,
            state_dir: state_dir.to_owned(),
        }
    }

    fn expect(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => {
                    took(what, started);
                    return line;
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("the agent never said {what}; it said {seen:#?}");
    }

    fn status(&self) -> Value {
        self.control("status").unwrap_or(Value::Null)
    }

    /// Sends a control command; its answer.
    fn control(&self, command: &str) -> Option<Value> {
        let output = entitle()
            .args(["agent", command, "--state-dir"])
            .arg(&self.state_dir)
            .output()
            .expect("entitle runs");
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Polls `agent status` until `wanted` holds, for up to 30 s.
    fn status_until(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(30);
        loop {
            let status = self.status();
            if wanted(&status) {
                took(what, started);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's status never showed {what}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    took(what, started);
}

/// Says how long a step took, shown with a failure (or `--nocapture`), so that
/// a slow run names where it waited: once it was the test database's creation
/// (see `entitle_store::testing::STALE_DROPS_PER_CALL`), not a late wake-up.
fn took(what: &str, started: Instant) {
    eprintln!("{:>7.2} s  {what}", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_drive_services_and_posture_commands_reach_the_server_on_both_backends() {
    for backend in backends() {
        eprintln!(
            "on {}",
            if backend.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        );
        let started = Instant::now();
        let database_url = database(&backend).await;
        if database_url.is_some() {
            took("a fresh PostgreSQL database", started);
        }
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("temp dir");
        let files = dir.path();
        let (_server, base) = serve(files, database_url.as_deref());
        took("the server started", started);
        let started = Instant::now();
        let key = seed(&base).await;
        // Private Applications on for everyone, with a start hook that fails.
        entitle_everyone(&base, "private_access", true, false).await;
        // Off at first, so that turning it on later is a change.
        entitle_everyone(&base, "digital_experience", false, false).await;
        let marker = |name: &str| files.join(name);
        std::fs::write(marker("firewall"), "on\n").expect("write");
        let record = |file: &str| {
            format!(
                "echo \"$ENTITLE_SERVICE|$ENTITLE_REASON|$ENTITLE_CONFIG_VERSION|$ENTITLE_EXPLANATION\" >> {}",
                marker(file).display()
            )
        };
        let args: Vec<String> = vec![
            "--server".into(),
            base.clone(),
            "--enrollment-key".into(),
            key.clone(),
            "--user-name".into(),
            "ada@hooks.test".into(),
            "--backoff-initial-ms".into(),
            "200".into(),
            "--backoff-max-s".into(),
            "1".into(),
            // Longer than any step's bound (30 s): a change that reached the
            // device only when its long-poll ended, not by the save's wake-up,
            // fails the step rather than passing late.
            "--long-poll".into(),
            "60".into(),
            "--posture-interval-s".into(),
            "1".into(),
            format!("--on-start=internet_access={}", record("zia-started")),
            format!("--on-stop=internet_access={}", record("zia-stopped")),
            format!(
                "--on-start=private_access=echo try >> {}; echo 'tunnel: no route to broker' >&2; exit 3",
                marker("zpa-attempts").display()
            ),
            format!(
                "--posture-command=firewall=cat {}",
                marker("firewall").display()
            ),
            "--posture-command=broken=echo nope; exit 5".into(),
            "--posture=pinned=yes".into(),
            format!("--on-logout={}", record("logged-out")),
            format!("--on-reauth-required={}", record("reauth")),
        ];
        took("the tenant seeded", started);
        let state_dir = files.join("agent");
        let agent = Agent::start(&state_dir, &args);
        agent.expect("internet_access started by its hook", |l| {
            l["event"] == "service_started" && l["service"] == "internet_access"
        });

        // The start hook ran once, with the decision in its environment.
        let started = lines(&marker("zia-started"));
        assert_eq!(started.len(), 1, "{started:?}");
        let fields: Vec<&str> = started[0].splitn(4, '|').collect();
        assert_eq!(fields[0], "internet_access");
        assert_eq!(fields[1], "enabled_by_default", "{started:?}");
        assert!(fields[2].parse::<i64>().is_ok(), "{started:?}");
        assert!(!fields[3].is_empty(), "an explanation: {started:?}");

        // The failing hook: failed with its status and output, and retried.
        let status = agent.status_until("private_access failed", |s| {
            s["applied"]["services"]["private_access"]["state"] == "failed"
        });
        let failed = &status["applied"]["services"]["private_access"];
        assert_eq!(failed["exit_status"], 3, "{status:#}");
        assert_eq!(failed["output"], "tunnel: no route to broker", "{status:#}");
        assert_eq!(
            status["status"]["services"]["private_access"], "failed",
            "the service states shown are the applied ones: {status:#}"
        );
        assert_eq!(
            status["applied"]["services"]["internet_access"]["state"], "running",
            "{status:#}"
        );
        assert!(status["applied"]["config_version"].is_i64(), "{status:#}");
        assert!(
            status["hook_errors"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["service"] == "private_access")),
            "{status:#}"
        );
        wait_for("the failed start hook is retried", || {
            lines(&marker("zpa-attempts")).len() >= 3
        });

        // Posture: the command's fact reaches the server, the failing one is
        // absent and named in the status, the given fact is kept, and the
        // host name is this machine's.
        let errors = &status["posture_errors"];
        assert!(
            errors.as_array().is_some_and(|e| e
                .iter()
                .any(|e| e["key"] == "broken" && e["reason"] == "exited with status 5")),
            "{status:#}"
        );
        let device_id = status["device_id"].as_str().expect("device id").to_owned();
        let device_url = format!("{base}/api/v1/tenants/hooks/devices/{device_id}");
        let (code, device) = call(reqwest::Method::GET, &device_url, None).await;
        assert_eq!(code, 200, "{device}");
        assert_eq!(device["posture"]["firewall"], "on", "{device:#}");
        assert_eq!(device["posture"]["pinned"], "yes", "{device:#}");
        assert!(device["posture"].get("broken").is_none(), "{device:#}");
        // The server keeps what the agent applied: the failed start hook with
        // its exit status, shown in the device's sentence.
        // Up to 30 s: the agent sends its applied state with its next sync,
        // which a pause after a quick 304 (up to 10 s, see `runtime.rs`) or a
        // loaded CI machine can delay (seen once at 10 s).
        let started = Instant::now();
        let mut applied = Value::Null;
        for _ in 0..300 {
            let (_, device) = call(reqwest::Method::GET, &device_url, None).await;
            applied = device["applied"].clone();
            if applied["services"]["private_access"]["state"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        took("the server holds the applied state", started);
        assert_eq!(
            applied["services"]["private_access"]["exit_status"], 3,
            "{applied:#}"
        );
        let summary = applied["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains("Private Applications failed to start (exit 3)"),
            "{summary}"
        );
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("host name")
            .trim()
            .to_owned();
        assert_eq!(device["hostname"], hostname.as_str(), "{device:#}");
        assert_eq!(device["os"], "linux", "{device:#}");
        if let Some(version) = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| entitle_device_agent::facts::os_release_version(&text))
        {
            assert_eq!(device["posture"]["os_version"], version.as_str());
        }

        // A changed fact reaches the server within seconds, not at the end of the long-poll.
        std::fs::write(marker("firewall"), "off\n").expect("write");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(10);
        loop {
            let (_, device) = call(reqwest::Method::GET, &device_url, None).await;
            if device["posture"]["firewall"] == "off" {
                took("the new posture reached the server", started);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new posture never arrived: {device:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A restart does not start again what its hook started.
        drop(agent);
        let agent = Agent::start(&state_dir, &args);
        agent.status_until("internet_access running after the restart", |s| {
            s["applied"]["services"]["internet_access"]["state"] == "running"
        });
        assert_eq!(lines(&marker("zia-started")).len(), 1, "the hook ran again");

        // Revoked: the stop hook runs.
        entitle_everyone(&base, "internet_access", false, false).await;
        wait_for("the stop hook ran", || {
            lines(&marker("zia-stopped"))
                .first()
                .is_some_and(|l| l.starts_with("internet_access|"))
        });
        agent.status_until("internet_access stopped", |s| {
            s["applied"]["services"]["internet_access"]["state"] == "stopped"
        });

        // A newly entitled service that signs the user out runs the logout hook.
        entitle_everyone(&base, "digital_experience", true, true).await;
        wait_for("the logout hook ran", || {
            lines(&marker("logged-out"))
                .first()
                .is_some_and(|l| l.starts_with("|logout_on_enable|"))
        });
        assert!(agent.control("login").is_some());
        // A change that "Update Policy" applies asks for re-authentication.
        entitle_everyone(&base, "internet_access", true, false).await;
        agent.status_until("internet_access waiting for the next login", |s| {
            s["applied"]["services"]["internet_access"]["state"] == "pending_login"
        });
        assert!(agent.control("update-policy").is_some());
        wait_for("the re-authentication hook ran", || {
            lines(&marker("reauth"))
                .first()
                .is_some_and(|l| l.starts_with("internet_access|enabled_by_default|"))
        });
    }
}

#[test]
fn an_unknown_service_in_a_hook_is_refused_at_start() {
    let output = entitle()
        .args(["agent", "run", "--on-start", "zpa=true"])
        .output()
        .expect("entitle runs");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("unknown service \"zpa\"") && error.contains("private_access"),
        "{error}"
    );
}

/// `systemd-analyze verify` on `unit`, written as `name` in `dir`.
fn verify(dir: &Path, name: &str, unit: &str) {
    let path = dir.join(name);
    std::fs::write(&path, unit).expect("write unit");
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // Complaints about the machine's own units are not this unit's.
    let about_this: Vec<&str> = said.lines().filter(|l| l.contains(name)).collect();
    assert!(
        output.status.success() && about_this.is_empty(),
        "{name} does not verify:\n{said}\n---\n{unit}"
    );
}

#[test]
fn the_agent_and_server_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is missing: SKIPPING the unit checks");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let output = entitle()
        .args([
            "agent",
            "install",
            "--print",
            "--server",
            "https://entitle.example",
        ])
        .args([
            "--",
            "--on-start",
            "internet_access=systemctl start zia.service",
        ])
        .output()
        .expect("entitle runs");
    assert!(output.status.success(), "{output:?}");
    let unit = String::from_utf8(output.stdout).expect("utf-8");
    assert!(unit.contains(&format!(
        "ExecStart={} agent run --server https://entitle.example --on-start \"internet_access=systemctl start zia.service\"",
        env!("CARGO_BIN_EXE_entitle")
    )), "{unit}");
    assert!(unit.contains("StateDirectory=entitle-agent"), "{unit}");
    assert!(unit.contains("Restart=on-failure"), "{unit}");
    verify(dir.path(), "entitle-agent.service", &unit);

    // Written to a file, the same unit.
    let written = dir.path().join("out/entitle-agent.service");
    let output = entitle()
        .args([
            "agent",
            "install",
            "--server",
            "https://entitle.example",
            "--unit-file",
        ])
        .arg(&written)
        .args([
            "--",
            "--on-start",
            "internet_access=systemctl start zia.service",
        ])
        .output()
        .expect("entitle runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read_to_string(&written).expect("written"), unit);

    // The server's unit is the one docs/deploy.md shows, run from this binary.
    let deploy =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploy.md"))
            .expect("docs/deploy.md");
    let start = deploy
        .find("# /etc/systemd/system/entitle.service")
        .expect("the server unit in docs/deploy.md");
    let block = &deploy[start..];
    let block = &block[..block.find("```").expect("end of the block")];
    let unit = block.replace("/usr/local/bin/entitle", env!("CARGO_BIN_EXE_entitle"));
    assert!(unit.contains(env!("CARGO_BIN_EXE_entitle")), "{unit}");
    verify(dir.path(), "entitle.service", &unit);
}

#[test]
fn state_directory_from_systemd_is_the_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No agent runs there: the error names the socket in systemd's directory.
    let output = entitle()
        .args(["agent", "status"])
        .env("STATE_DIRECTORY", dir.path())
        .output()
        .expect("entitle runs");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains(&dir.path().join("control.sock").display().to_string()),
        "{error}"
    );
}
