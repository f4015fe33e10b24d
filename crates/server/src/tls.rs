//! HTTPS on the server's one listener: the certificate and key from PEM files,
//! reloaded without a restart, and the handshake in front of the agent lane.
//!
//! The certificate is chosen at each handshake by [`Reloading`], which holds it
//! behind a lock: a reload changes what new connections see, while connections
//! already established (held long-polls among them) keep their session.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind expected.
    #[error("{what} {path}: {detail}")]
    File {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The key does not go with the certificate, or rustls refuses either.
    #[error("certificate {cert} and key {key}: {source}")]
    Rejected {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// The server's TLS settings: where the certificate and key live, and the one
/// they held at the last successful load.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    resolver: Arc<Reloading>,
    config: Arc<rustls::ServerConfig>,
    check_every: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key (PEM); fails if either is unusable
    /// or they do not match.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let first = load_pair(cert_path, key_path, &provider)?;
        let resolver = Arc::new(Reloading {
            current: RwLock::new(Arc::new(first)),
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rejected {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            resolver,
            config: Arc::new(config),
            check_every: Duration::from_secs(5),
        })
    }

    /// How often the files are checked for changes (5 s unless set).
    pub fn check_every(mut self, interval: Duration) -> Self {
        self.check_every = interval.max(Duration::from_millis(10));
        self
    }

    /// Reads the files again. New connections get the new certificate; on any
    /// error the old one stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load_pair(&self.cert_path, &self.key_path, &self.resolver.provider)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The acceptor for new connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// Reloads on SIGHUP and when either file changes, until shutdown.
    ///
    /// Changes are found by comparing the files' modification times and sizes
    /// every few seconds rather than through inotify: two `stat` calls cost
    /// nothing, need no other crate, and also see the files replaced through a
    /// renamed directory or symbolic link (Kubernetes secrets, certbot), which
    /// an inotify watch on the old inode would miss.
    pub(crate) async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = self.stamp();
        let mut tick = tokio::time::interval(self.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<()>();
            let why = tokio::select! {
                () = signalled => "SIGHUP",
                _ = tick.tick() => {
                    let now = self.stamp();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the files changed"
                }
                () = crate::agent::stopping(&mut shutdown) => return,
            };
            match self.reload() {
                Ok(()) => {
                    tracing::info!(why, cert = %self.cert_path.display(), "TLS certificate reloaded")
                }
                Err(error) => tracing::error!(
                    why,
                    %error,
                    "TLS certificate not reloaded; the previous one stays in use"
                ),
            }
        }
    }

    fn stamp(&self) -> [Option<(SystemTime, u64)>; 2] {
        let stamp = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        [stamp(&self.cert_path), stamp(&self.key_path)]
    }
}

/// The certificate new handshakes get, replaceable while the server runs.
#[derive(Debug)]
struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let file_error = |what, path: &Path, detail: String| TlsError::File {
        what,
        path: path.display().to_string(),
        detail,
    };
    // Bounded: a certificate chain or key is a few KiB; anything huge is a mistake.
    let cert_pem = read_bounded(cert_path).map_err(|e| file_error("certificate", cert_path, e))?;
    let key_pem = read_bounded(key_path).map_err(|e| file_error("private key", key_path, e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("certificate", cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(
            "certificate",
            cert_path,
            "no CERTIFICATE block in the file".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        file_error(
            "private key",
            key_path,
            format!("no usable PRIVATE KEY block ({e})"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rejected {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
        source,
    })
}

const MAX_PEM_FILE: u64 = 1024 * 1024;

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_PEM_FILE {
        return Err(format!("larger than {MAX_PEM_FILE} bytes"));
    }
    std::fs::read(path).map_err(|e: io::Error| e.to_string())
}
