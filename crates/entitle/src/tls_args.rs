//! `--ca-file`: how every command that talks to a server trusts a private CA,
//! and the one place their HTTP clients are built.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// Trust for `https://` servers.
#[derive(Args, Debug, Clone, Default)]
pub struct CaArgs {
    /// A private CA's certificate (PEM), trusted beside the system's CAs, for
    /// an `https://` server whose certificate it signed.
    #[arg(long, env = "ENTITLE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl CaArgs {
    /// An HTTP client trusting the system's CAs and `--ca-file`, with
    /// `configure` applied.
    pub fn client(
        &self,
        configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> anyhow::Result<reqwest::Client> {
        client(self.ca_file.as_deref(), configure)
    }
}

/// An HTTP client trusting the system's CAs and `ca_file`, with `configure` applied.
pub fn client(
    ca_file: Option<&Path>,
    configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> anyhow::Result<reqwest::Client> {
    entitle_device_agent::transport::build_client(ca_file, configure).context("cannot set up HTTPS")
}

/// A failed request, in words that name the cause (and for TLS, the fix).
pub fn request_failed(url: &str, error: &reqwest::Error) -> anyhow::Error {
    let cause = entitle_device_agent::transport::describe(error);
    if error.is_connect() && !cause.starts_with("the server") && !cause.starts_with("TLS") {
        anyhow::anyhow!("{url}: {cause}; is `entitle serve` running?")
    } else {
        anyhow::anyhow!("{url}: {cause}")
    }
}
