//! `entitle serve`: open the store, make sure an administrator can get in, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use entitle_server::{Server, ServerConfig, ServerTls, ShedConfig, TrustedProxies};
use entitle_store::{Actor, PostgresOptions, Role, SqlStore, Store, TokenGrant, secrets};
use tokio::net::TcpListener;

/// Flags of `entitle serve` (each also `ENTITLE_<FLAG>`).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ENTITLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the SQLite database.
    #[arg(long, env = "ENTITLE_DATA_DIR", default_value = "./entitle-data")]
    pub data_dir: PathBuf,
    /// Database URL; `sqlite://PATH`, or empty for `<data-dir>/entitle.db`.
    #[arg(long, env = "ENTITLE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Token that becomes a super_admin token when the store has none.
    #[arg(long, env = "ENTITLE_BOOTSTRAP_ADMIN_TOKEN", hide_env_values = true)]
    pub bootstrap_admin_token: Option<String>,
    /// Do not apply pending migrations at start (run `entitle migrate` instead).
    #[arg(long, env = "ENTITLE_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Seconds between agents' regular syncs.
    #[arg(long, env = "ENTITLE_POLL_INTERVAL", default_value_t = 3600)]
    pub poll_interval: u64,
    /// The address people open the portal at; `https://…` makes session cookies `Secure`.
    #[arg(long, env = "ENTITLE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log format.
    #[arg(long, env = "ENTITLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A load balancer or proxy (address or CIDR) whose `X-Forwarded-For` and
    /// `Forwarded` headers name the client; repeatable. Without it those
    /// headers are ignored.
    #[arg(long = "trusted-proxy", env = "ENTITLE_TRUSTED_PROXY", value_delimiter = ',',
          value_parser = TrustedProxies::parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, env = "ENTITLE_IDLE_TIMEOUT", default_value_t = 75)]
    pub idle_timeout: u64,
    /// Seconds a client may take to send a request's head.
    #[arg(long, env = "ENTITLE_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Connections served at once (keep it under the open-file limit); past
    /// it a new sync is answered 503 with Retry-After, and admin and SCIM
    /// calls get a few connections kept for them.
    #[arg(long, env = "ENTITLE_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,
    /// MiB of request bodies held in memory at once, over every connection.
    #[arg(long, env = "ENTITLE_MAX_BODY_MIB_IN_FLIGHT", default_value_t = 64)]
    pub max_body_mib_in_flight: usize,
    /// Enrollments allowed per minute per enrollment key and client address.
    #[arg(long, env = "ENTITLE_ENROLLMENTS_PER_MINUTE", default_value_t = 60)]
    pub enrollments_per_minute: u32,
    /// Agent syncs doing work at once (default: 4 per core); more wait
    /// briefly, then are answered 503 with Retry-After.
    #[arg(long, env = "ENTITLE_MAX_SYNCS_IN_FLIGHT")]
    pub max_syncs_in_flight: Option<usize>,
    /// Device-token lookups at once, before the tenant is known (default: 2 per core).
    #[arg(long, env = "ENTITLE_MAX_TOKEN_CHECKS_IN_FLIGHT")]
    pub max_token_checks_in_flight: Option<usize>,
    /// The share of --max-syncs-in-flight one tenant may use, in percent, so
    /// that one tenant's storm does not starve the others' syncs.
    #[arg(long, env = "ENTITLE_SYNC_TENANT_SHARE", default_value_t = 75,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub sync_tenant_share: u8,
    /// Milliseconds a sync waits for a slot before it is answered 503.
    #[arg(long, env = "ENTITLE_SYNC_QUEUE_MS", default_value_t = 500)]
    pub sync_queue_ms: u64,
    /// Syncs waiting for a slot at once; more are answered 503 at once.
    #[arg(long, env = "ENTITLE_MAX_QUEUED_SYNCS", default_value_t = 16_384)]
    pub max_queued_syncs: usize,
    /// Long-polls held at once; past it a sync is answered at once (304 or
    /// 200) instead of being held.
    #[arg(long, env = "ENTITLE_MAX_HELD_LONG_POLLS", default_value_t = 100_000)]
    pub max_held_long_polls: usize,
    /// A shed sync's Retry-After is spread over 1..=this many seconds.
    #[arg(long, env = "ENTITLE_SYNC_RETRY_AFTER_MAX", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub sync_retry_after_max: u64,
    /// Devices kept in memory between their syncs (about 1 KiB each), so
    /// that a repeated sync reads nothing but the tenant's data version.
    #[arg(long, env = "ENTITLE_SYNC_CACHE_DEVICES", default_value_t = 200_000)]
    pub sync_cache_devices: usize,
    /// Sign-in through the company's identity provider.
    #[command(flatten)]
    pub oidc: crate::oidc_args::OidcArgs,
    /// Serve HTTPS with this certificate chain (PEM, server certificate first);
    /// reloaded on SIGHUP and when the file changes. Needs --tls-key.
    #[arg(long, env = "ENTITLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, env = "ENTITLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServeArgs {
    /// The server settings these flags give.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            poll_interval_s: self.poll_interval,
            trusted_proxies: TrustedProxies::new(self.trusted_proxies.clone()),
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            header_read_timeout: Duration::from_secs(self.header_read_timeout.max(1)),
            max_connections: self.max_connections.max(1),
            max_body_bytes_in_flight: self.max_body_mib_in_flight.max(1) * 1024 * 1024,
            enrollments_per_minute: self.enrollments_per_minute,
            public_url: self.public_url.clone(),
            shed: self.shed_config(),
            sync_cache_devices: self.sync_cache_devices,
            ..ServerConfig::default()
        }
    }

    /// The sync gates' limits these flags give.
    pub fn shed_config(&self) -> ShedConfig {
        let defaults = ShedConfig::default();
        ShedConfig {
            max_syncs_in_flight: self
                .max_syncs_in_flight
                .unwrap_or(defaults.max_syncs_in_flight)
                .max(1),
            max_token_checks_in_flight: self
                .max_token_checks_in_flight
                .unwrap_or(defaults.max_token_checks_in_flight)
                .max(1),
            tenant_share_percent: self.sync_tenant_share,
            queue_wait: Duration::from_millis(self.sync_queue_ms),
            max_queued: self.max_queued_syncs,
            max_held_long_polls: self.max_held_long_polls,
            retry_after_max_s: self.sync_retry_after_max,
        }
    }
}

/// How logs are written.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sets up logging to stderr.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENTITLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if result.is_err() {
        // Already initialised (e.g. demo calling serve): keep the first one.
    }
}

/// Where the data lives, as the flags say.
pub enum Database {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server shared by several nodes.
    Postgres(String),
}

impl Database {
    /// Reads `--data-dir` and `--database-url`.
    pub fn from_flags(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(
            match database_url.map(str::trim).filter(|u| !u.is_empty()) {
                None => Database::Sqlite(data_dir.join("entitle.db")),
                Some(url) if url.starts_with("sqlite://") => {
                    Database::Sqlite(PathBuf::from(url.trim_start_matches("sqlite://")))
                }
                Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Database::Postgres(url.to_owned())
                }
                Some(url) => bail!(
                    "unsupported database URL {:?}; expected postgres://USER@HOST/DB or sqlite://PATH",
                    redact(url)
                ),
            },
        )
    }

    /// Opens the store; `migrate` applies pending migrations first.
    pub async fn open(&self, migrate: bool) -> anyhow::Result<Arc<dyn Store>> {
        match self {
            Database::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create data directory {}", dir.display())
                    })?;
                }
                let store = SqlStore::open_sqlite_with(path, migrate)
                    .await
                    .with_context(|| format!("cannot open the database {}", path.display()))?;
                Ok(Arc::new(store))
            }
            Database::Postgres(url) => {
                let options = PostgresOptions {
                    migrate,
                    ..PostgresOptions::default()
                };
                let store = SqlStore::connect_postgres(url, options)
                    .await
                    .with_context(|| {
                        format!("cannot use the PostgreSQL database {}", redact(url))
                    })?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// A database URL with its password hidden, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Opens the store the flags name, applying migrations.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    Database::from_flags(data_dir, database_url)?
        .open(true)
        .await
}

/// Makes the bootstrap token a super_admin token if the store has none.
pub async fn bootstrap(store: &dyn Store, token: Option<&str>) -> anyhow::Result<()> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        if !store.has_super_admin().await? {
            tracing::warn!(
                "no super_admin token exists; start with ENTITLE_BOOTSTRAP_ADMIN_TOKEN set to create one"
            );
        }
        return Ok(());
    };
    if store.has_super_admin().await? {
        return Ok(());
    }
    let grant = TokenGrant {
        role: Role::SuperAdmin,
        tenant_id: None,
        name: "bootstrap".into(),
    };
    store
        .create_api_token(&secrets::hash_secret(token), &grant, &Actor::system())
        .await?;
    tracing::info!("bootstrap super_admin token created");
    Ok(())
}

/// Open files kept free of connections: the database, its WAL, logs, the
/// certificate reloads.
const FILES_KEPT_FREE: u64 = 256;

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let store = Database::from_flags(&args.data_dir, args.database_url.as_deref())?
        .open(!args.no_migrate)
        .await?;
    bootstrap(&*store, args.bootstrap_admin_token.as_deref()).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(url) = &args.public_url {
        let lower = url.to_ascii_lowercase();
        anyhow::ensure!(
            lower.starts_with("https://") || lower.starts_with("http://"),
            "--public-url must start with https:// (or http:// without TLS), not {url:?}"
        );
    }
    let mut config = args.server_config();
    config.oidc = args.oidc.build(args.public_url.as_deref())?;
    // Each connection is a file: raise the open-file limit as far as allowed,
    // and keep the connection cap under it (with room for the database and
    // the logs and the lane's 503s past the cap), so that accept() never
    // fails with "too many open files".
    match entitle_device_agent::fleet::raise_open_file_limit() {
        Ok(limit) => {
            let room = usize::try_from(limit.saturating_sub(FILES_KEPT_FREE))
                .unwrap_or(usize::MAX)
                .max(1);
            if config.max_connections > room {
                tracing::warn!(
                    max_connections = config.max_connections,
                    open_file_limit = limit,
                    "--max-connections lowered to {room} to stay under the open-file limit"
                );
                config.max_connections = room;
            }
        }
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
    let mut server = Server::new(store, config);
    let address = listener.local_addr()?;
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::load(cert, key).context("cannot use --tls-cert and --tls-key")?;
            server = server.with_tls(Arc::new(tls));
            tracing::info!(
                %address,
                url = %format!("https://{address}"),
                cert = %cert.display(),
                "entitle is serving HTTPS (certificate reloaded on SIGHUP or when its files change)"
            );
        }
        _ => tracing::info!(
            %address,
            url = %format!("http://{address}"),
            "entitle is serving plain HTTP, without TLS (give --tls-cert and --tls-key for HTTPS)"
        ),
    }
    server.run(listener, shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Flags of `entitle migrate`.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Directory for the SQLite database.
    #[arg(long, env = "ENTITLE_DATA_DIR", default_value = "./entitle-data")]
    pub data_dir: PathBuf,
    /// Database URL (`postgres://…` or `sqlite://PATH`).
    #[arg(long, env = "ENTITLE_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Applies pending migrations and exits.
#[allow(clippy::print_stdout)]
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    Database::from_flags(&args.data_dir, args.database_url.as_deref())?
        .open(true)
        .await?;
    println!("migrations applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/entitle"),
            "postgres://app:***@db:5432/entitle"
        );
        assert_eq!(
            redact("postgres://app@db/entitle"),
            "postgres://app@db/entitle"
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
