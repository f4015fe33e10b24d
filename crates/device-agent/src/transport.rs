//! The HTTP client of every entitle command (agent, fleet, bench, admin
//! commands): HTTPS through rustls with the platform's trusted CAs plus an
//! optional private CA, errors that name their real cause, and the refusal to
//! send a secret over plain HTTP to anything but this machine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--ca-file` could not be read or holds no certificate.
    #[error("--ca-file {path}: {detail}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A CA file larger than this is not a CA file.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

/// A client builder that trusts the platform's CAs and, with `ca_file`, the
/// certificates (PEM) in that file as well.
pub fn client_builder(ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, ClientError> {
    let builder = reqwest::Client::builder();
    let Some(path) = ca_file else {
        return Ok(builder);
    };
    let ca_error = |detail: String| ClientError::CaFile {
        path: path.to_owned(),
        detail,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| ca_error(e.to_string()))?
        .len();
    if size > MAX_CA_FILE {
        return Err(ca_error(format!("larger than {MAX_CA_FILE} bytes")));
    }
    let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(ca_error("no CERTIFICATE block in the file".to_owned()));
    }
    Ok(builder.tls_certs_merge(certificates))
}

/// Builds a client from [`client_builder`], with `configure` applied. On a
/// machine without any system CA (a bare container), a client that trusts
/// no one but `ca_file` is built instead of failing: plain HTTP still works
/// and HTTPS fails with "not signed by a trusted CA", which is the truth.
pub fn build_client(
    ca_file: Option<&Path>,
    configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Result<reqwest::Client, ClientError> {
    match configure(client_builder(ca_file)?).build() {
        Ok(client) => Ok(client),
        Err(first) => {
            let only_listed = match ca_file {
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| ClientError::CaFile {
                        path: path.to_owned(),
                        detail: e.to_string(),
                    })?;
                    reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default()
                }
                None => Vec::new(),
            };
            configure(reqwest::Client::builder().tls_certs_only(only_listed))
                .build()
                .map_err(|_| ClientError::Build(describe(&first)))
        }
    }
}

/// What went wrong with a request, in words that name the cause and, for TLS,
/// the flag that fixes it.
pub fn describe(error: &reqwest::Error) -> String {
    if let Some(tls) = find_tls_error(error) {
        return describe_tls(tls);
    }
    if error.is_timeout() {
        return "the server did not answer in time".to_owned();
    }
    if error.is_connect() {
        return format!("cannot reach the server: {}", chain(error));
    }
    // A TLS server answers plain HTTP with a TLS alert, which reads as a
    // malformed response.
    if error.is_request() && error.url().is_some_and(|url| url.scheme() == "http") {
        return format!(
            "{} (if the server serves HTTPS, use an https:// URL)",
            chain(error)
        );
    }
    chain(error)
}

/// Refuses a plain `http://` URL to anything but a loopback address, unless
/// `insecure_http`: device tokens and enrollment keys must not cross a network
/// in clear. Decided from the URL alone, before any connection.
pub fn check_plain_http(url: &str, insecure_http: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("the server URL {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if insecure_http || is_loopback(&parsed) => Ok(()),
        "http" => Err(format!(
            "refusing to send the device's credentials over plain http:// to {}; use https:// (with --ca-file FILE for a private CA), or --insecure-http to allow it",
            parsed.host_str().unwrap_or("the server")
        )),
        other => Err(format!(
            "the server URL {url:?} has scheme {other:?}; use https://"
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    // The URL parser has already normalised the host (`127.1` is `127.0.0.1`).
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The rustls error behind a request's failure, if any. An `io::Error`
/// wrapping another error hides it from `source()` (which skips to the
/// wrapped error's own source), and reqwest's connector wraps TLS errors in
/// two of them, so each link is also unwrapped with `get_ref`.
fn find_tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut link: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = link {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            link = Some(inner);
            continue;
        }
        link = current.source();
    }
    None
}

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(certificate) = error else {
        return match error {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!(
                    "TLS failed ({error}): is the server serving plain HTTP? then use an http:// URL"
                )
            }
            _ => format!("TLS failed: {error}"),
        };
    };
    match certificate {
        C::UnknownIssuer => "the server's certificate is not signed by a trusted CA (use --ca-file FILE for a private CA)".to_owned(),
        C::NotValidForNameContext { expected, presented } => format!(
            "the certificate is for host {}, not {} (connect with a name the certificate lists, or issue one for this name)",
            if presented.is_empty() {
                "(none listed)".to_owned()
            } else {
                presented.iter().map(|n| presented_name(n)).collect::<Vec<_>>().join(", ")
            },
            server_name(expected),
        ),
        C::NotValidForName => "the server's certificate is not for the host name in the URL".to_owned(),
        C::ExpiredContext { not_after, .. } => format!(
            "the server's certificate expired on {} (renew it on the server)",
            when(*not_after)
        ),
        C::Expired => "the server's certificate has expired (renew it on the server)".to_owned(),
        C::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is not valid before {} (check this machine's clock)",
            when(*not_before)
        ),
        C::NotValidYet => "the server's certificate is not valid yet (check this machine's clock)".to_owned(),
        C::Revoked => "the server's certificate has been revoked".to_owned(),
        other => format!("the server's certificate was refused: {other:?}"),
    }
}

/// `DnsName("a.example")` or `IpAddress(10.0.0.1)`, as webpki lists a
/// certificate's names, without the wrapping.
fn presented_name(name: &str) -> &str {
    for prefix in ["DnsName(\"", "IpAddress("] {
        if let Some(inner) = name.strip_prefix(prefix) {
            return inner.trim_end_matches(')').trim_end_matches('"');
        }
    }
    name
}

fn server_name(name: &rustls::pki_types::ServerName<'_>) -> String {
    match name {
        rustls::pki_types::ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn when(time: rustls::pki_types::UnixTime) -> String {
    let seconds = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{seconds} s after 1970"))
}

/// The error and its causes, as one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut link = error.source();
    while let Some(cause) = link {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        link = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_beyond_this_machine() {
        for allowed in [
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:8080",
            "http://127.3.2.1",
            "http://[::1]:9090",
            "https://entitle.example.com",
            "https://10.0.0.1",
        ] {
            assert_eq!(check_plain_http(allowed, false), Ok(()), "{allowed}");
        }
        for refused in [
            "http://entitle.example.com",
            "http://10.0.0.1:8080",
            "http://[fe80::1]",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://0.0.0.0",
        ] {
            let error = check_plain_http(refused, false).expect_err(refused);
            assert!(error.contains("--insecure-http"), "{error}");
            assert_eq!(check_plain_http(refused, true), Ok(()), "{refused}");
        }
        assert!(check_plain_http("ftp://x", true).is_err());
        assert!(check_plain_http("not a url", true).is_err());
    }

    #[test]
    fn certificate_errors_name_their_cause_and_fix() {
        use rustls::CertificateError as C;
        let unknown = describe_tls(&rustls::Error::InvalidCertificate(C::UnknownIssuer));
        assert!(unknown.contains("--ca-file FILE"), "{unknown}");
        let name = describe_tls(&rustls::Error::InvalidCertificate(
            C::NotValidForNameContext {
                expected: rustls::pki_types::ServerName::try_from("127.0.0.1")
                    .expect("ip")
                    .to_owned(),
                presented: vec!["DnsName(\"example.test\")".to_owned()],
            },
        ));
        assert!(
            name.contains("example.test") && name.contains("not 127.0.0.1"),
            "{name}"
        );
        let expired = describe_tls(&rustls::Error::InvalidCertificate(C::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                1_800_000_000,
            )),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(1_700_000_000),
            ),
        }));
        assert!(expired.contains("expired on 2023-11-14"), "{expired}");
    }
}
