//! A real server on a free loopback port with its own fresh SQLite file.
#![allow(dead_code)]

use std::sync::Arc;

use entitle_server::{Server, ServerConfig};
use entitle_store::{PostgresOptions, Role, SqlStore, Store, TokenGrant, secrets};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ROOT: &str = "root-token";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

/// The database a test app runs on: its own SQLite file, or its own fresh
/// PostgreSQL database.
pub enum Database {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Database {
    pub fn sqlite() -> Self {
        Database::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// A fresh PostgreSQL database, or `None` (said loudly) when none is configured.
    pub async fn postgres(test: &str) -> Option<Self> {
        let base = entitle_store::testing::postgres_url(test)?;
        let url = entitle_store::testing::fresh_postgres_database(&base)
            .await
            .expect("fresh PostgreSQL database");
        Some(Database::Postgres(url))
    }

    pub async fn open(&self) -> Arc<dyn Store> {
        Arc::new(self.open_sql().await)
    }

    /// The store as its one implementation, for its test-only bulk writes.
    pub async fn open_sql(&self) -> SqlStore {
        match self {
            Database::Sqlite(dir) => SqlStore::open_sqlite(&dir.path().join("entitle.db"))
                .await
                .expect("store opens"),
            Database::Postgres(url) => {
                let options = PostgresOptions {
                    max_connections: 8,
                    ..PostgresOptions::default()
                };
                SqlStore::connect_postgres(url, options)
                    .await
                    .expect("store connects")
            }
        }
    }
}

/// Generates, for each named `async fn NAME(db: Database)`, a test on SQLite and
/// one on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(crate::common::Database::sqlite()).await
            }
            #[tokio::test]
            async fn postgres() {
                if let Some(db) = crate::common::Database::postgres(stringify!($name)).await {
                    super::$name(db).await
                }
            }
        }
    )*};
}

impl TestApp {
    /// A second node on the same database, on PostgreSQL; `None` on SQLite,
    /// where one node is the whole deployment.
    pub async fn second_node(db: &Database) -> Option<Self> {
        match db {
            Database::Postgres(_) => Some(Self::start(db).await),
            Database::Sqlite(_) => None,
        }
    }

    /// Starts a server on the database, as a new node.
    pub async fn start(db: &Database) -> Self {
        Self::start_with(db, ServerConfig::default()).await
    }

    /// Starts a server with these settings on the database, as a new node.
    pub async fn start_with(db: &Database, config: ServerConfig) -> Self {
        let store = db.open().await;
        if !store.has_super_admin().await.expect("query") {
            let grant = TokenGrant {
                role: Role::SuperAdmin,
                tenant_id: None,
                name: "root".into(),
            };
            store
                .create_api_token(
                    &secrets::hash_secret(ROOT),
                    &grant,
                    &entitle_store::Actor::system(),
                )
                .await
                .expect("root token");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Server::new(store, config);
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has finished.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series of `/metrics`, named with its labels (e.g.
    /// `entitle_sync_writes_total{what="report"}`); `None` while it has none.
    pub async fn metric(&self, series: &str) -> Option<i64> {
        let prefix = format!("{series} ");
        self.metrics()
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, etag, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    #[allow(dead_code, reason = "not every test binary deletes")]
    pub async fn delete(&self, path: &str, token: &str) -> Answer {
        self.call(Method::DELETE, path, Some(token), None, &[])
            .await
    }

    pub async fn put(
        &self,
        path: &str,
        token: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Answer {
        let headers: Vec<(&str, &str)> =
            if_match.map(|m| vec![("If-Match", m)]).unwrap_or_default();
        self.call(Method::PUT, path, Some(token), Some(body), &headers)
            .await
    }

    /// Creates a tenant and an admin token for it.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let created = self
            .post("/api/v1/tenants", ROOT, json!({"name": name}))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let admin = self
            .post(
                &format!("/api/v1/tenants/{name}/tokens"),
                ROOT,
                json!({"name": "admin", "role": "admin"}),
            )
            .await;
        assert_eq!(admin.status, StatusCode::CREATED, "{:?}", admin.body);
        Tenant {
            name: name.into(),
            id: created.body["id"].as_str().expect("id").into(),
            admin: admin.body["token"].as_str().expect("token").into(),
            enrollment_key: created.body["enrollment_key"].as_str().expect("key").into(),
            scim_token: created.body["scim_token"]
                .as_str()
                .expect("scim token")
                .into(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub struct Tenant {
    pub name: String,
    pub id: String,
    pub admin: String,
    pub enrollment_key: String,
    pub scim_token: String,
}

impl Tenant {
    pub fn path(&self, rest: &str) -> String {
        format!("/api/v1/tenants/{}{rest}", self.name)
    }

    pub async fn group(&self, app: &TestApp, name: &str, members: &[&str]) -> String {
        let answer = app
            .post(
                &self.path("/groups"),
                &self.admin,
                json!({"display_name": name, "member_groups": members}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.body["id"].as_str().expect("id").into()
    }

    /// A new API token of the tenant with this role: its secret and its id.
    #[allow(dead_code, reason = "not every test binary makes tokens")]
    pub async fn token(&self, app: &TestApp, name: &str, role: &str) -> (String, String) {
        let answer = app
            .post(
                &self.path("/tokens"),
                &self.admin,
                json!({"name": name, "role": role}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        let text = |key: &str| answer.body[key].as_str().expect(key).to_owned();
        (text("token"), text("id"))
    }

    pub async fn user(&self, app: &TestApp, user_name: &str, groups: &[&str]) -> String {
        let answer = app
            .post(
                &self.path("/users"),
                &self.admin,
                json!({"user_name": user_name, "groups": groups}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.body["id"].as_str().expect("id").into()
    }

    pub async fn device_group(&self, app: &TestApp, body: Value) -> String {
        let answer = app
            .post(&self.path("/device-groups"), &self.admin, body)
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer.body["id"].as_str().expect("id").into()
    }

    /// Saves settings without If-Match and returns the new ETag.
    pub async fn save(&self, app: &TestApp, service: &str, settings: Value) -> String {
        let answer = app
            .put(
                &self.path(&format!("/entitlements/{service}")),
                &self.admin,
                settings,
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.etag.expect("etag")
    }

    /// An administrator attests, through `app`, the ownership of device
    /// `id`; returns the device as answered.
    pub async fn attest(&self, app: &TestApp, id: &str, ownership: &str) -> Answer {
        let answer = app
            .call(
                Method::PATCH,
                &self.path(&format!("/devices/{id}")),
                Some(&self.admin),
                Some(json!({ "ownership": ownership })),
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer
    }

    /// Enrolls a device; returns (device id, token, policy).
    pub async fn enroll(
        &self,
        app: &TestApp,
        user_name: &str,
        report: Value,
    ) -> (String, String, Value) {
        let answer = app
            .post("/agent/v1/enroll", "", json!({"enrollment_key": self.enrollment_key, "user_name": user_name, "device": report}))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        (
            answer.body["device_id"].as_str().expect("id").into(),
            answer.body["device_token"].as_str().expect("token").into(),
            answer.body["policy"].clone(),
        )
    }
}

pub fn report(hostname: &str, os: &str, version: &str, ownership: &str, encrypted: bool) -> Value {
    json!({"hostname": hostname, "os": os, "client_version": version, "ownership": ownership,
           "posture": {"disk_encrypted": encrypted, "os_version": "14.5"}})
}

/// SETTINGS as the API answers them, with no exclusions and a full rollout.
pub fn settings(on: bool, users: &[&str], devices: &[&str]) -> Value {
    json!({"enabled_by_default": on, "user_groups": users, "device_groups": devices, "logout_on_enable": false,
           "exclude_user_groups": [], "exclude_device_groups": [], "rollout_percent": 100})
}

/// Syncs a device; returns the answer.
pub async fn sync(
    app: &TestApp,
    token: &str,
    report: &Value,
    etag: Option<&str>,
    wait: Option<u64>,
) -> Answer {
    let path = match wait {
        Some(seconds) => format!("/agent/v1/sync?wait={seconds}"),
        None => "/agent/v1/sync".to_owned(),
    };
    let headers: Vec<(&str, &str)> = etag.map(|e| vec![("If-None-Match", e)]).unwrap_or_default();
    app.call(
        Method::POST,
        &path,
        Some(token),
        Some(report.clone()),
        &headers,
    )
    .await
}

/// Holds a long-poll (`wait=30`) for a device that holds `etag`, in the
/// background: answers its status, body (`null` if none) and how long it was held.
pub fn hold(
    app: &TestApp,
    token: &str,
    report: &Value,
    etag: &str,
) -> JoinHandle<(StatusCode, Value, std::time::Duration)> {
    hold_for(app, token, report, etag, 30)
}

/// [`hold`] with a hold of `wait` seconds.
pub fn hold_for(
    app: &TestApp,
    token: &str,
    report: &Value,
    etag: &str,
    wait: u64,
) -> JoinHandle<(StatusCode, Value, std::time::Duration)> {
    let (base, client) = (app.base.clone(), app.client.clone());
    let (token, report, etag) = (token.to_owned(), report.clone(), etag.to_owned());
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = client
            .post(format!("{base}/agent/v1/sync?wait={wait}"))
            .bearer_auth(token)
            .header("If-None-Match", etag)
            .json(&report)
            .send()
            .await
            .expect("sent");
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, started.elapsed())
    })
}
