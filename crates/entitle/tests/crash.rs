//! Crash safety: the real binary is killed with SIGKILL at random moments while
//! clients save settings and write to the directory over SCIM; after each restart every
//! save is either wholly there (settings, config version, audit entry) or wholly
//! absent, and every save answered 200 before the kill is there.
//!
//! Rounds per back end: `ENTITLE_CRASH_ROUNDS` (default 10; the acceptance run
//! uses 100).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entitle_core::{Settings, service};
use entitle_store::{PostgresOptions, ScimLookup, SqlStore, Store};
use rand::Rng;
use serde_json::{Value, json};

const ROOT: &str = "crash-root-token";

fn rounds() -> usize {
    std::env::var("ENTITLE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start(data_dir: &Path, database_url: Option<&str>, port: u16) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_entitle"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--bootstrap-admin-token",
            ROOT,
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("ENTITLE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    command.spawn().expect("entitle serve starts")
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become ready");
}

/// Settings a client saves; their content names the client and its attempt, so
/// a stored version can be matched with the save that produced it.
fn settings_for(client: usize, attempt: usize) -> Value {
    json!({"enabled_by_default": (client + attempt).is_multiple_of(2), "logout_on_enable": !attempt.is_multiple_of(2)})
}

async fn run(database_url: Option<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = start(dir.path(), database_url.as_deref(), port);
    wait_ready(&client, &base).await;
    let tenant = client
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(ROOT)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .expect("sent");
    assert!(tenant.status().is_success(), "{}", tenant.status());
    let tenant: Value = tenant.json().await.expect("json");
    let scim_token = tenant["scim_token"]
        .as_str()
        .expect("scim token")
        .to_owned();
    let token: Value = client
        .post(format!("{base}/api/v1/tenants/crash/tokens"))
        .bearer_auth(ROOT)
        .json(&json!({"name": "saver", "role": "admin"}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let admin = token["token"].as_str().expect("token").to_owned();

    // Acknowledged saves: config version -> the settings sent.
    let acknowledged: Arc<Mutex<BTreeMap<i64, Value>>> = Arc::default();
    // Acknowledged SCIM creations: ("Users" or "Groups", the body sent).
    let directory: Arc<Mutex<Vec<(&'static str, Value)>>> = Arc::default();
    for round in 0..rounds() {
        let stop_at = Instant::now() + Duration::from_millis(rand::rng().random_range(50..400));
        let mut workers = Vec::new();
        for worker in 0..4 {
            let (client, base, admin, acknowledged, directory, scim_token) = (
                client.clone(),
                base.clone(),
                admin.clone(),
                acknowledged.clone(),
                directory.clone(),
                scim_token.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut attempt = 0usize;
                while Instant::now() < stop_at + Duration::from_millis(200) {
                    attempt += 1;
                    if worker >= 2 {
                        // Directory writes over SCIM beside the saves: users and groups.
                        let (kind, body) = if worker == 3 {
                            (
                                "Users",
                                json!({"userName": format!("scim-{round}-{attempt}@crash.test")}),
                            )
                        } else {
                            (
                                "Groups",
                                json!({"displayName": format!("group-{round}-{attempt}")}),
                            )
                        };
                        let sent = client
                            .post(format!("{base}/scim/v2/crash/{kind}"))
                            .bearer_auth(&scim_token)
                            .json(&body)
                            .send()
                            .await;
                        match sent {
                            Ok(response) if response.status().is_success() => {
                                directory.lock().expect("lock").push((kind, body));
                            }
                            Ok(_) | Err(_) => break,
                        }
                        continue;
                    }
                    let body = settings_for(worker, attempt);
                    let sent = client
                        .put(format!(
                            "{base}/api/v1/tenants/crash/entitlements/digital_experience"
                        ))
                        .bearer_auth(&admin)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    if !response.status().is_success() {
                        break;
                    }
                    let etag = response
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_owned();
                    let version: i64 = etag.parse().expect("numeric etag");
                    acknowledged.lock().expect("lock").insert(version, body);
                }
            }));
        }
        tokio::time::sleep_until(stop_at.into()).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        for worker in workers {
            worker.await.expect("worker");
        }
        child = start(dir.path(), database_url.as_deref(), port);
        wait_ready(&client, &base).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let store: Arc<dyn Store> = match &database_url {
        Some(url) => Arc::new(
            SqlStore::connect_postgres(url, PostgresOptions::default())
                .await
                .expect("connect"),
        ),
        None => {
            let sqlite = SqlStore::open_sqlite(&dir.path().join("entitle.db"))
                .await
                .expect("open");
            assert_eq!(
                sqlite.integrity_check().await.expect("integrity check"),
                "ok"
            );
            Arc::new(sqlite)
        }
    };
    let tenant = store.tenant("crash").await.expect("tenant");
    let history = store
        .history(&tenant.id, None, 100_000)
        .await
        .expect("history");
    let versions: Vec<i64> = history.iter().rev().map(|v| v.version).collect();
    let contiguous: Vec<i64> = (1..=tenant.config_version).collect();
    assert_eq!(
        versions, contiguous,
        "versions are contiguous and match the tenant's counter"
    );

    // Every version has its audit entry: whole saves only.
    let mut audit_saves = 0usize;
    let mut before = None;
    loop {
        let page = store.audit(&tenant.id, 1000, before).await.expect("audit");
        let Some((last, _)) = page.last() else { break };
        before = Some(*last);
        audit_saves += page
            .iter()
            .filter(|(_, e)| e.action == "entitlement.save")
            .count();
    }
    assert_eq!(
        audit_saves,
        history.len(),
        "one audit entry per config version"
    );

    // The stored settings are the last version's.
    let zdx = service("digital_experience").expect("zdx");
    let current = store.settings(&tenant.id, zdx).await.expect("settings");
    if let Some(last) = history.first() {
        assert_eq!(current.settings, last.after);
        assert_eq!(current.version, last.version);
    }

    // Nothing acknowledged is lost.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(!acknowledged.is_empty(), "some saves were acknowledged");
    for (version, body) in &acknowledged {
        let stored = history
            .iter()
            .find(|v| v.version == *version)
            .unwrap_or_else(|| panic!("acknowledged version {version} was lost"));
        let expected = Settings {
            enabled_by_default: body["enabled_by_default"] == true,
            logout_on_enable: body["logout_on_enable"] == true,
            ..Settings::default()
        };
        assert_eq!(
            stored.after, expected,
            "version {version} holds what was acknowledged"
        );
    }
    // Nothing the directory got a 2xx for is lost.
    let directory = directory.lock().expect("lock").clone();
    let users = store
        .scim_users(&tenant.id, &ScimLookup::All, None)
        .await
        .expect("users");
    let groups = store
        .scim_groups(&tenant.id, &ScimLookup::All, None, false)
        .await
        .expect("groups");
    for (kind, body) in &directory {
        let found = match *kind {
            "Users" => users
                .items
                .iter()
                .any(|u| body["userName"] == u.user_name.as_str()),
            _ => groups
                .items
                .iter()
                .any(|g| body["displayName"] == g.display_name.as_str()),
        };
        assert!(found, "acknowledged SCIM creation lost: {kind} {body}");
    }
    let _ = writeln_stderr(&format!(
        "crash test on {}: {} rounds, {} acknowledged saves, {} versions, {} acknowledged SCIM creations",
        if database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        rounds(),
        acknowledged.len(),
        history.len(),
        directory.len()
    ));
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_saves_loses_nothing_acknowledged_on_sqlite() {
    run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_saves_loses_nothing_acknowledged_on_postgres() {
    let Some(base) = entitle_store::testing::postgres_url("the SIGKILL test") else {
        return;
    };
    let url = entitle_store::testing::fresh_postgres_database(&base)
        .await
        .expect("fresh database");
    run(Some(url)).await;
}
