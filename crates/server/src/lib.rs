//! The entitle server: the admin API, the agent protocol and the operations
//! endpoints, around one store and per-tenant in-memory snapshots.
//!
//! Each surface is a module with its own `router()`, merged in [`Server::new`].

mod admin;
mod agent;
mod auth;
mod conn;
mod directory;
mod edge;
mod enrollment;
mod error;
mod extract;
#[cfg(test)]
mod fuzz;
mod lane;
mod limit;
mod metrics;
pub mod oidc;
mod ops;
pub mod password;
mod population;
mod portal;
mod scheduler;
mod scim;
mod shed;
mod snapshot;
mod state;
mod sync_cache;
mod sync_writes;
pub mod tls;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use entitle_store::{Change, ChangeFeed, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

pub use error::ApiError;
pub use limit::TrustedProxies;
pub use metrics::{Metrics, ProcessFigures};
use ops::ErrorResponses;
pub use shed::ShedConfig;
pub use snapshot::{Snapshots, TenantSnapshot};
pub use state::{AppState, ServerConfig};
pub use tls::{ServerTls, TlsError};

/// The OpenAPI document of the admin API and the agent protocol, generated from
/// the handlers and wire types.
#[derive(OpenApi)]
#[openapi(
    info(title = "entitle", description = "Service entitlement control plane: admin API and agent protocol."),
    paths(
        admin::tenants::create_tenant, admin::tenants::list_tenants, admin::tenants::get_tenant,
        admin::tenants::create_token, admin::accounts::create_account,
        admin::scim_setup::rotate_scim_token, admin::device_groups::preview_device_group,
        admin::directory::create_group, admin::directory::list_groups, admin::directory::get_group,
        admin::directory::list_users,
        admin::directory::delete_group, admin::directory::create_user, admin::directory::get_user,
        admin::directory::update_user,
        admin::device_groups::create_device_group, admin::device_groups::list_device_groups,
        admin::device_groups::get_device_group, admin::device_groups::update_device_group,
        admin::device_groups::delete_device_group,
        admin::entitlements::get_entitlements, admin::entitlements::get_settings,
        admin::entitlements::put_settings, admin::entitlements::preview,
        admin::entitlements::history, admin::entitlements::rollback,
        admin::scheduled_changes::list_changes, admin::scheduled_changes::cancel_change,
        admin::grants::create_grant, admin::grants::list_grants, admin::grants::revoke_grant,
        admin::devices::list_devices, admin::devices::get_device, admin::devices::delete_device,
        admin::devices::export_devices, admin::devices::resync_device,
        admin::audit::audit, admin::audit::export, admin::directory::directory_status,
        enrollment::create_key, enrollment::list_keys, enrollment::revoke_key,
        enrollment::change_device, enrollment::approve_devices, enrollment::get_approval,
        enrollment::set_approval, enrollment::rotate_tenant_key,
        admin::tenants::list_tokens, admin::tenants::revoke_token,
        admin::tenants::create_super_token, admin::tenants::list_super_tokens,
        admin::tenants::revoke_super_token,
        admin::accounts::list_accounts, admin::accounts::update_account,
        admin::accounts::set_password, admin::accounts::end_sessions,
        admin::scim_setup::list_scim_tokens, admin::scim_setup::revoke_scim_token,
        admin::scim_setup::scim_setup, admin::scim_setup::check_scim_setup,
        admin::invitations::create_invitation, admin::sessions::list_sessions,
        admin::sessions::end_session, admin::sessions::sign_out_everywhere,
        agent::enroll, agent::sync,
        admin::directory_views::user_access, admin::directory_views::group_members,
        admin::directory_views::group_nesting, admin::device_group_impact::preview_change,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
    ),
    components(schemas(wire::ErrorJson, wire::ErrorDetailJson)),
    modifiers(&BearerAuth, &ErrorResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Applies changes announced by other nodes, a burst at a time so that a
/// thousand directory writes rebuild a tenant's snapshot once, not a thousand times.
async fn follow_changes(mut feed: ChangeFeed, snapshots: Arc<Snapshots>) {
    while let Some(first) = feed.recv().await {
        let mut burst = vec![first];
        while let Ok(more) = feed.try_recv() {
            burst.push(more);
        }
        for change in coalesce(burst) {
            if let Err(error) = snapshots.apply(&change).await {
                tracing::warn!(%error, "could not apply a change from another node");
            }
        }
    }
}

/// One change per tenant (its latest version), then one per device a change
/// was about (so that its held long-poll answers), or a single resync.
fn coalesce(burst: Vec<Change>) -> Vec<Change> {
    let mut latest: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    let mut devices: Vec<(String, String, Option<String>)> = Vec::new();
    for change in burst {
        match change {
            Change::Resync => return vec![Change::Resync],
            Change::Tenant {
                tenant_id,
                data_version,
                device_id,
                user_id,
            } => {
                if let Some(device_id) = device_id {
                    devices.push((tenant_id.clone(), device_id, user_id));
                }
                let entry = latest.entry(tenant_id).or_insert(data_version);
                *entry = (*entry).max(data_version);
            }
        }
    }
    let device_changes: Vec<Change> = devices
        .into_iter()
        .map(|(tenant_id, device_id, user_id)| Change::Tenant {
            data_version: latest.get(&tenant_id).copied().unwrap_or_default(),
            tenant_id,
            device_id: Some(device_id),
            user_id,
        })
        .collect();
    latest
        .into_iter()
        .map(|(tenant_id, data_version)| Change::Tenant {
            tenant_id,
            data_version,
            device_id: None,
            user_id: None,
        })
        .chain(device_changes)
        .collect()
}

/// The most devices noted as seen between two batched writes (about 20 MiB);
/// a node writes every second, and a million devices each seen every one to
/// two minutes note about 17,000 a second.
const LAST_SEEN_PENDING: usize = 262_144;

/// A server ready to run: its routes and the switch that ends held long-polls.
pub struct Server {
    router: Router,
    state: AppState,
    shutdown: watch::Sender<bool>,
    tls: Option<Arc<ServerTls>>,
}

impl Server {
    /// Builds the server over a store.
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let state = AppState {
            snapshots: Arc::new(Snapshots::new(store.clone())),
            populations: Arc::new(population::Populations::new(store.clone())),
            store,
            sync_cache: Arc::new(sync_cache::SyncCache::new(
                config.sync_cache_devices,
                metrics.sync_version_reads.clone(),
            )),
            shed: Arc::new(shed::Shed::new(config.shed.clone(), metrics.clone())),
            last_seen: Arc::new(sync_writes::LastSeen::new(LAST_SEEN_PENDING)),
            applied_writes: Arc::default(),
            metrics,
            failures: Arc::new(limit::FailureLimiter::default()),
            enrollments: Arc::new(limit::EnrollLimiter::new(config.enrollments_per_minute)),
            body_budget: limit::BodyBudget::new(config.max_body_bytes_in_flight),
            directory: Arc::new(directory::DirectoryActivity::default()),
            config,
            shutdown: shutdown_rx,
        };
        let router = Router::new()
            .merge(admin::router())
            .merge(agent::router())
            .merge(enrollment::router())
            .merge(ops::router())
            .merge(portal::router())
            .merge(scim::router())
            .fallback(portal::not_found)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::track,
            ))
            .layer(DefaultBodyLimit::max(edge::MAX_BODY))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                edge::guard,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                extract::resolve_client,
            ))
            .layer(TraceLayer::new_for_http())
            .with_state(state.clone());
        Self {
            router,
            state,
            shutdown,
            tls: None,
        }
    }

    /// Serves HTTPS with this certificate instead of plain HTTP, on the same
    /// listener for every surface; the certificate is reloaded on SIGHUP and
    /// when its files change.
    pub fn with_tls(mut self, tls: Arc<ServerTls>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The shared state (for in-process callers such as benchmarks).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` completes, then answers held long-polls and finishes
    /// in-flight requests before returning.
    pub async fn run(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let feed = self
            .state
            .store
            .changes()
            .await
            .map_err(std::io::Error::other)?;
        if let Some(feed) = feed {
            tokio::spawn(follow_changes(feed, self.state.snapshots.clone()));
        }
        tokio::spawn(scheduler::run(self.state.clone(), scheduler::node_name()));
        tokio::spawn(self.state.last_seen.clone().run(
            self.state.store.clone(),
            self.state.metrics.clone(),
            self.state.shutdown.clone(),
        ));
        let shutdown = self.shutdown;
        let acceptor = self.tls.as_ref().map(|tls| tls.acceptor());
        if let Some(tls) = &self.tls {
            tokio::spawn(tls.clone().watch(self.state.shutdown.clone()));
        }
        let (mut handed_over, lane_connections) =
            lane::start(listener, self.state.clone(), acceptor)?;
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            // Hyper has one timer for the wait before a request and the reading
            // of its head: it gets both allowances, so that a load balancer's
            // pooled connections are not closed under it. A connection's first
            // head is read by the lane, under the header-read timeout alone.
            .header_read_timeout(
                self.state.config.idle_timeout + self.state.config.header_read_timeout,
            )
            // A client that half-closes after its request still gets the answer.
            .half_close(true);
        // Every connection task holds a receiver; the sender sees them all dropped.
        let (connections, connection_alive) = watch::channel(());
        let stopping_rx = self.state.shutdown.clone();
        let accept = async {
            while let Some((io, address)) = handed_over.next().await {
                let router = self.router.clone();
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(ConnectInfo(address));
                        tower::ServiceExt::oneshot(router.clone(), request)
                    },
                );
                let connection = http1.serve_connection(hyper_util::rt::TokioIo::new(io), service);
                let mut stopping_rx = stopping_rx.clone();
                let alive = connection_alive.clone();
                tokio::spawn(async move {
                    let _alive = alive;
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%error, "connection ended with an error");
                            }
                            return;
                        }
                        () = agent::stopping(&mut stopping_rx) => {}
                    }
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = stop => {}
        }
        tracing::info!("shutting down: answering held long-polls");
        shutdown.send_replace(true);
        // Held syncs read the flag when woken: wake them all.
        self.state.snapshots.wake_all();
        drop(connection_alive);
        connections.closed().await;
        lane_connections.closed().await;
        let state = &self.state;
        state
            .last_seen
            .flush(state.store.as_ref(), &state.metrics)
            .await;
        Ok(())
    }
}
