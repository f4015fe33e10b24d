//! TLS end to end, with the real binary: `entitle serve --tls-cert --tls-key`
//! on a loopback port, the real agent and client commands over HTTPS, and
//! certificates (CAs, server certificates for the right name, the wrong name,
//! expired ones) generated at run time with rcgen.
//!
//! Scenarios that touch storage run on SQLite and, with
//! `ENTITLE_TEST_POSTGRES_URL`, on a fresh PostgreSQL database.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

const ROOT: &str = "tls-root-token";

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for `names` and its key (PEM); `expired` makes
    /// one whose validity ended yesterday.
    fn server(&self, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "entitle test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        if expired {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(30);
        }
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// Files of one test: CA files, the server's certificate and key.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("written");
        path
    }

    /// Puts a server certificate in place (written beside, then renamed, as
    /// certificate tools do, so that the server never reads half a file).
    fn install(&self, (cert, key): &(String, String)) {
        self.write("cert.pem.new", cert);
        self.write("key.pem.new", key);
        std::fs::rename(self.path("key.pem.new"), self.path("key.pem")).expect("key in place");
        std::fs::rename(self.path("cert.pem.new"), self.path("cert.pem")).expect("cert in place");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn entitle() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entitle"));
    // Nothing of the caller's environment decides where the commands go.
    for var in [
        "ENTITLE_SERVER",
        "ENTITLE_TOKEN",
        "ENTITLE_TENANT",
        "ENTITLE_CA_FILE",
        "ENTITLE_TLS_CERT",
        "ENTITLE_TLS_KEY",
        "ENTITLE_INSECURE_HTTP",
    ] {
        command.env_remove(var);
    }
    command
}

/// A running `entitle serve`, killed when dropped.
struct Served {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn start(files: &Files, database_url: Option<&str>, tls: bool) -> Self {
        Self::start_on(free_port(), files, database_url, tls)
    }

    fn start_on(port: u16, files: &Files, database_url: Option<&str>, tls: bool) -> Self {
        let log = files.path(&format!("serve-{port}.log"));
        let mut command = entitle();
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--bootstrap-admin-token", ROOT])
            .arg("--data-dir")
            .arg(files.path("data"))
            .env("ENTITLE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if tls {
            command
                .arg("--tls-cert")
                .arg(files.path("cert.pem"))
                .arg("--tls-key")
                .arg(files.path("key.pem"));
        }
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        let child = command.spawn().expect("entitle serve starts");
        let served = Self { child, port, log };
        served.wait_for_log("entitle is serving");
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server never logged {text:?}:\n{}", self.log());
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// A client trusting only `ca` (PEM).
fn client_trusting(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(ca.as_bytes()).expect("ca pem"))
        .timeout(Duration::from_secs(40))
        .build()
        .expect("client")
}

async fn json_call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (reqwest::StatusCode, Option<String>, Value) {
    let mut request = client.request(method, url).bearer_auth(ROOT);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(etag) = if_match {
        request = request.header("If-Match", etag);
    }
    let response = request.send().await.expect("answered");
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    (status, etag, body)
}

/// Creates tenant `tls` with user `ada@tls.test`; returns the enrollment key.
async fn seed(client: &reqwest::Client, base: &str) -> String {
    let (status, _, tenant) = json_call(
        client,
        reqwest::Method::POST,
        &format!("{base}/api/v1/tenants"),
        Some(json!({"name": "tls"})),
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {tenant}");
    let (status, _, user) = json_call(
        client,
        reqwest::Method::POST,
        &format!("{base}/api/v1/tenants/tls/users"),
        Some(json!({"user_name": "ada@tls.test"})),
        None,
    )
    .await;
    assert!(status.is_success(), "{status} {user}");
    tenant["enrollment_key"]
        .as_str()
        .expect("enrollment key")
        .to_owned()
}

/// Flips the logout option of Internet & SaaS, which is part of every policy.
async fn change_every_policy(client: &reqwest::Client, base: &str) {
    let url = format!("{base}/api/v1/tenants/tls/entitlements/internet_access");
    let (status, etag, mut settings) =
        json_call(client, reqwest::Method::GET, &url, None, None).await;
    assert!(status.is_success(), "{status} {settings}");
    settings["logout_on_enable"] =
        Value::Bool(!settings["logout_on_enable"].as_bool().unwrap_or(false));
    let (status, _, body) = json_call(
        client,
        reqwest::Method::PUT,
        &url,
        Some(settings),
        etag.as_deref(),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
}

async fn enroll(client: &reqwest::Client, base: &str, key: &str, host: &str) -> (String, Value) {
    let response = client
        .post(format!("{base}/agent/v1/enroll"))
        .json(&json!({"enrollment_key": key, "user_name": "ada@tls.test", "device": report(host)}))
        .send()
        .await
        .expect("enrolled");
    assert!(response.status().is_success(), "{}", response.status());
    let body: Value = response.json().await.expect("json");
    (
        body["device_token"].as_str().expect("token").to_owned(),
        body["policy"].clone(),
    )
}

fn report(host: &str) -> Value {
    json!({"hostname": host, "os": "linux", "client_version": "4.3.0.120", "ownership": "corporate", "posture": {}})
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

/// `entitle <args>` with a deadline; its output.
fn run_cli(args: &[&str]) -> Output {
    entitle()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("entitle runs")
}

/// A running `entitle agent run`, with its JSON lines.
struct Agent {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
    state_dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(files: &Files, server: &str, ca: &Path, key: &str) -> Self {
        let state_dir = files.path("agent");
        let mut child = entitle()
            .args(["agent", "run", "--server", server, "--enrollment-key", key])
            .args(["--user-name", "ada@tls.test", "--backoff-max-s", "1"])
            .args(["--long-poll", "20"])
            .arg("--ca-file")
            .arg(ca)
            .arg("--state-dir")
            .arg(&state_dir)
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
            child,
            lines,
            state_dir,
        }
    }

    fn expect(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("the agent never said {what}; it said {seen:#?}");
    }

    fn control(&self, command: &str) -> Value {
        let output = run_cli(&[
            "agent",
            command,
            "--state-dir",
            self.state_dir.to_str().expect("utf-8 path"),
        ]);
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn the_agent_and_the_cli_enroll_and_sync_over_https_on_both_backends() {
    for backend in backends() {
        let database_url = database(&backend).await;
        let files = Files::new();
        let ca = Ca::new("entitle test CA");
        files.install(&ca.server(&["localhost", "127.0.0.1"], false));
        let ca_file = files.write("ca.pem", &ca.pem);
        let served = Served::start(&files, database_url.as_deref(), true);
        assert!(
            served.log().contains("serving HTTPS"),
            "the start-up line says HTTPS: {}",
            served.log()
        );
        let base = served.url("localhost");
        let admin = client_trusting(&ca.pem);
        let key = seed(&admin, &base).await;

        // Every client command trusts the CA given with --ca-file (or ENTITLE_CA_FILE).
        let listed = run_cli(&[
            "tenants",
            "list",
            "--server",
            &base,
            "--token",
            ROOT,
            "--json",
            "--ca-file",
            ca_file.to_str().expect("utf-8"),
        ]);
        assert!(
            listed.status.success(),
            "{}",
            String::from_utf8_lossy(&listed.stderr)
        );
        assert!(String::from_utf8_lossy(&listed.stdout).contains("\"tls\""));
        let by_env = entitle()
            .args(["tenants", "list", "--server", &base, "--token", ROOT])
            .env("ENTITLE_CA_FILE", &ca_file)
            .output()
            .expect("runs");
        assert!(
            by_env.status.success(),
            "{}",
            String::from_utf8_lossy(&by_env.stderr)
        );

        // The real agent enrolls, syncs and holds its long-poll over HTTPS.
        let agent = Agent::start(&files, &base, &ca_file, &key);
        agent.expect("enrolled", |l| l["event"] == "enrolled");
        let first = agent.expect("its state", |l| {
            l["event"] == "state" && l["state"]["config_version"].is_number()
        });
        let version = first["state"]["config_version"].as_i64().expect("version");
        change_every_policy(&admin, &base).await;
        agent.expect("the new policy, through the held long-poll", |l| {
            l["event"] == "state"
                && l["state"]["config_version"]
                    .as_i64()
                    .is_some_and(|v| v > version)
        });
        let status = agent.control("status");
        assert_eq!(status["status"]["server_reachable"], true, "{status}");
        assert_eq!(status["server"], base.as_str(), "{status}");
    }
}

#[tokio::test]
async fn an_unknown_ca_is_named_with_the_flag_that_fixes_it_and_the_agent_keeps_its_policy() {
    let files = Files::new();
    let ca = Ca::new("entitle test CA");
    let other = Ca::new("some other CA");
    files.install(&ca.server(&["localhost"], false));
    let ca_file = files.write("ca.pem", &ca.pem);
    let served = Served::start(&files, None, true);
    let base = served.url("localhost");
    let admin = client_trusting(&ca.pem);
    let key = seed(&admin, &base).await;

    // A client command without the CA: the cause and the flag, not "cannot reach".
    let refused = run_cli(&["tenants", "list", "--server", &base, "--token", ROOT]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("not signed by a trusted CA")
            && message.contains("--ca-file FILE")
            && !message.contains("cannot reach"),
        "{message}"
    );

    let agent = Agent::start(&files, &base, &ca_file, &key);
    agent.expect("its policy", |l| {
        l["event"] == "state" && l["state"]["services"]["internet_access"] == "running"
    });
    // The server comes back with a certificate from a CA the agent does not trust.
    let port = served.port;
    drop(served);
    files.install(&other.server(&["localhost"], false));
    let _served = Served::start_on(port, &files, None, true);
    agent.expect("the TLS failure, with the flag that fixes it", |l| {
        l["event"] == "sync_failed"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("--ca-file FILE"))
    });
    let status = agent.control("status");
    let state = &status["status"];
    assert_eq!(state["server_reachable"], false, "{status}");
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not signed by a trusted CA")),
        "{status}"
    );
    assert_eq!(
        state["services"]["internet_access"], "running",
        "the last-known-good policy stays in force: {status}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_or_an_expired_one_is_named() {
    let files = Files::new();
    let ca = Ca::new("entitle test CA");
    files.install(&ca.server(&["example.test"], false));
    let ca_file = files.write("ca.pem", &ca.pem);
    let served = Served::start(&files, None, true);
    let ca_arg = ca_file.to_str().expect("utf-8");

    let wrong_host = run_cli(&[
        "tenants",
        "list",
        "--server",
        &served.url("127.0.0.1"),
        "--token",
        ROOT,
        "--ca-file",
        ca_arg,
    ]);
    assert!(!wrong_host.status.success());
    let message = String::from_utf8_lossy(&wrong_host.stderr);
    assert!(
        message.contains("the certificate is for host example.test, not 127.0.0.1"),
        "{message}"
    );

    // The files change (no signal): the server finds it within a few seconds.
    files.install(&ca.server(&["localhost"], true));
    served.wait_for_log("the files changed");
    let expired = run_cli(&[
        "tenants",
        "list",
        "--server",
        &served.url("localhost"),
        "--token",
        ROOT,
        "--ca-file",
        ca_arg,
    ]);
    assert!(!expired.status.success());
    let message = String::from_utf8_lossy(&expired.stderr);
    assert!(
        message.contains("the server's certificate expired on"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reload_leaves_held_long_polls_alone_and_a_bad_one_keeps_the_old_certificate() {
    for backend in backends() {
        let database_url = database(&backend).await;
        let files = Files::new();
        let first_ca = Ca::new("first CA");
        let second_ca = Ca::new("second CA");
        files.install(&first_ca.server(&["localhost"], false));
        let served = Served::start(&files, database_url.as_deref(), true);
        let base = served.url("localhost");
        let first = client_trusting(&first_ca.pem);
        let key = seed(&first, &base).await;

        // Three devices hold long-polls over connections made with the first certificate.
        let mut held = Vec::new();
        for index in 0..3 {
            let (token, policy) = enroll(&first, &base, &key, &format!("held-{index}")).await;
            let etag = policy["etag"].as_str().expect("etag").to_owned();
            let client = client_trusting(&first_ca.pem);
            let url = format!("{base}/agent/v1/sync?wait=30");
            held.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .header("If-None-Match", etag)
                    .json(&report("held"))
                    .send()
                    .await
                    .expect("the held sync is answered");
                let status = response.status();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = first
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default();
            if metrics.contains("entitle_held_long_polls 3") {
                break;
            }
            assert!(Instant::now() < deadline, "the polls were never held");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        files.install(&second_ca.server(&["localhost"], false));
        served.hangup();
        served.wait_for_log("TLS certificate reloaded");
        // New connections see the new certificate.
        let second = client_trusting(&second_ca.pem);
        let answer = second
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("the new certificate is served");
        assert!(answer.status().is_success());
        let stale = client_trusting(&first_ca.pem)
            .get(format!("{base}/healthz"))
            .send()
            .await;
        assert!(stale.is_err(), "the old certificate is no longer served");

        // A broken file is not loaded: the certificate in use stays.
        files.write("cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
        served.hangup();
        served.wait_for_log("TLS certificate not reloaded");
        let answer = client_trusting(&second_ca.pem)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("still served");
        assert!(answer.status().is_success());

        // The held polls, on connections from before both reloads, wake with the change.
        change_every_policy(&second, &base).await;
        for poll in held {
            let (status, policy) = tokio::time::timeout(Duration::from_secs(20), poll)
                .await
                .expect("woken in time")
                .expect("task");
            assert_eq!(status, reqwest::StatusCode::OK, "{policy}");
            assert!(policy.is_object(), "{policy}");
        }
    }
}

#[test]
fn plain_http_beyond_this_machine_is_refused_before_any_connection() {
    // In a network namespace of its own, the agent has no route anywhere: had
    // it tried to connect, it would say so. Its refusal comes first.
    if Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("`unshare -n` is not allowed here: SKIPPING the refusal test");
        return;
    }
    let files = Files::new();
    let state_dir = files.path("agent");
    let mut agent = Command::new("unshare");
    agent
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_entitle"))
        .args(["agent", "run", "--server", "http://192.0.2.10:8080"])
        .args(["--enrollment-key", "ent_enroll_x"])
        .args(["--user-name", "ada@tls.test"])
        .arg("--state-dir")
        .arg(&state_dir)
        .env_remove("ENTITLE_INSECURE_HTTP");
    let output = within_seconds(agent, 10);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("refusing to send the device's credentials over plain http://")
            && message.contains("--insecure-http"),
        "{message}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("enroll_retry"));

    let mut fleet = Command::new("unshare");
    fleet
        .arg("-n")
        .arg(env!("CARGO_BIN_EXE_entitle"))
        .args(["fleet", "--server", "http://192.0.2.10:8080"])
        .args([
            "--enrollment-key",
            "ent_enroll_x",
            "--users",
            "ada@tls.test",
        ])
        .env_remove("ENTITLE_INSECURE_HTTP");
    let fleet = within_seconds(fleet, 10);
    assert!(!fleet.status.success());
    assert!(String::from_utf8_lossy(&fleet.stderr).contains("--insecure-http"));
}

/// Runs `command` to its end; one still running after `seconds` (an agent
/// retrying forever) is killed and fails the test.
fn within_seconds(mut command: Command, seconds: u64) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while child.try_wait().expect("status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "still running after {seconds} s: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn without_tls_flags_the_server_says_it_serves_plain_http() {
    let files = Files::new();
    let served = Served::start(&files, None, false);
    assert!(
        served.log().contains("plain HTTP, without TLS"),
        "{}",
        served.log()
    );
}
