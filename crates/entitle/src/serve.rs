//! `entitle serve`: open the store, make sure an administrator can get in, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use entitle_server::{Server, ServerConfig};
use entitle_store::{Role, SqliteStore, Store, TokenGrant, secrets};
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
    /// Seconds between agents' regular syncs.
    #[arg(long, env = "ENTITLE_POLL_INTERVAL", default_value_t = 3600)]
    pub poll_interval: u64,
    /// Log format.
    #[arg(long, env = "ENTITLE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
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

/// Opens the store the flags name, applying migrations.
pub async fn open_store(
    data_dir: &Path,
    database_url: Option<&str>,
) -> anyhow::Result<Arc<dyn Store>> {
    let path = match database_url.filter(|u| !u.is_empty()) {
        None => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            data_dir.join("entitle.db")
        }
        Some(url) if url.starts_with("sqlite://") => {
            PathBuf::from(url.trim_start_matches("sqlite://"))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            bail!(
                "the PostgreSQL back end is not part of this build yet; use SQLite (omit --database-url)"
            )
        }
        Some(url) => bail!("unsupported database URL {url:?}; expected sqlite://PATH"),
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("cannot open the database {}", path.display()))?;
    Ok(Arc::new(store))
}

/// Makes the bootstrap token a super_admin token if the store has none.
pub async fn bootstrap(store: &dyn Store, token: Option<&str>) -> anyhow::Result<()> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        if !store.has_super_admin().await? {
            tracing::warn!(
                "no super_admin token exists; start with --bootstrap-admin-token to create one"
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
        .create_api_token(&secrets::hash_secret(token), &grant, "bootstrap")
        .await?;
    tracing::info!("bootstrap super_admin token created");
    Ok(())
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let store = open_store(&args.data_dir, args.database_url.as_deref()).await?;
    bootstrap(&*store, args.bootstrap_admin_token.as_deref()).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = ServerConfig {
        poll_interval_s: args.poll_interval,
        ..ServerConfig::default()
    };
    tracing::info!(address = %listener.local_addr()?, "entitle is serving");
    Server::new(store, config)
        .run(listener, shutdown_signal())
        .await?;
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
