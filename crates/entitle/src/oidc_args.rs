//! The flags of sign-in through the company's identity provider, shared by
//! `entitle serve` and `entitle demo`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use entitle_server::oidc::{MappingRule, Oidc, OidcSettings};

/// Largest client secret file read: a secret is tens of bytes.
const MAX_SECRET_BYTES: u64 = 4096;
/// Largest mapping file read.
const MAX_MAP_BYTES: u64 = 1024 * 1024;

/// OpenID Connect sign-in (each flag also `ENTITLE_<FLAG>`).
#[derive(Args, Debug, Clone, Default)]
pub struct OidcArgs {
    /// The identity provider's issuer URL (https://…); enables "Sign in with …".
    #[arg(long, env = "ENTITLE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// This server's client (application) id at the identity provider.
    #[arg(long, env = "ENTITLE_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (never given on the command line).
    #[arg(long, env = "ENTITLE_OIDC_CLIENT_SECRET_FILE")]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The provider's name on the sign-in button.
    #[arg(
        long,
        env = "ENTITLE_OIDC_NAME",
        default_value = "your identity provider"
    )]
    pub oidc_name: String,
    /// The ID-token claim that lists the person's groups.
    #[arg(long, env = "ENTITLE_OIDC_GROUPS_CLAIM", default_value = "groups")]
    pub oidc_groups_claim: String,
    /// Who gets which tenant and role, `group:NAME=TENANT:ROLE`,
    /// `domain:DOMAIN=TENANT:ROLE` or `email:ADDRESS=TENANT:ROLE` (ROLE is
    /// admin or viewer); repeatable, the first that matches wins. Anyone
    /// matching no rule is refused.
    #[arg(long = "oidc-map", env = "ENTITLE_OIDC_MAP")]
    pub oidc_map: Vec<String>,
    /// A file of mapping rules, one a line (`#` starts a comment), read after `--oidc-map`.
    #[arg(long, env = "ENTITLE_OIDC_MAP_FILE")]
    pub oidc_map_file: Option<PathBuf>,
}

impl OidcArgs {
    /// The provider these flags configure, if any; `public_url` is where the
    /// portal is opened, from which the redirect URI is made.
    pub fn build(&self, public_url: Option<&str>) -> anyhow::Result<Option<Arc<Oidc>>> {
        let Some(issuer) = self.oidc_issuer.as_deref().filter(|i| !i.is_empty()) else {
            if self.oidc_client_id.is_some()
                || self.oidc_client_secret_file.is_some()
                || !self.oidc_map.is_empty()
                || self.oidc_map_file.is_some()
            {
                bail!("OpenID Connect flags were given without --oidc-issuer");
            }
            return Ok(None);
        };
        let Some(public_url) = public_url else {
            bail!(
                "--oidc-issuer needs --public-url: the redirect URI registered at the provider is <public-url>/portal/oidc/callback"
            );
        };
        let client_id = self
            .oidc_client_id
            .clone()
            .context("--oidc-issuer needs --oidc-client-id")?;
        let secret_file = self
            .oidc_client_secret_file
            .as_ref()
            .context("--oidc-issuer needs --oidc-client-secret-file")?;
        let client_secret = read_bounded(secret_file, MAX_SECRET_BYTES)
            .with_context(|| format!("cannot read the client secret {}", secret_file.display()))?
            .trim()
            .to_owned();
        let mut lines = self.oidc_map.clone();
        if let Some(file) = &self.oidc_map_file {
            let text = read_bounded(file, MAX_MAP_BYTES)
                .with_context(|| format!("cannot read the mapping file {}", file.display()))?;
            lines.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let rules = lines
            .iter()
            .map(|l| MappingRule::parse(l))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = OidcSettings {
            issuer: issuer.to_owned(),
            client_id,
            client_secret,
            display_name: self.oidc_name.clone(),
            groups_claim: self.oidc_groups_claim.clone(),
            redirect_uri: format!("{}/portal/oidc/callback", public_url.trim_end_matches('/')),
            rules,
        };
        Ok(Some(Oidc::new(settings)?))
    }
}

fn read_bounded(path: &std::path::Path, limit: u64) -> anyhow::Result<String> {
    let size = std::fs::metadata(path)?.len();
    if size > limit {
        bail!("larger than {limit} bytes");
    }
    Ok(std::fs::read_to_string(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path) -> OidcArgs {
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cret\n").expect("written");
        OidcArgs {
            oidc_issuer: Some("https://login.example.com/tenant/v2.0".into()),
            oidc_client_id: Some("client".into()),
            oidc_client_secret_file: Some(secret),
            oidc_name: "Entra ID".into(),
            oidc_groups_claim: "groups".into(),
            oidc_map: vec!["group:Admins=acme:admin".into()],
            oidc_map_file: None,
        }
    }

    #[test]
    fn a_complete_configuration_gives_the_redirect_uri_and_a_trimmed_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let map = dir.path().join("map");
        std::fs::write(&map, "# comment\n\ndomain:acme.example=acme:viewer\n").expect("written");
        let mut args = args(dir.path());
        args.oidc_map_file = Some(map);
        let oidc = args
            .build(Some("https://entitle.example.com/"))
            .expect("valid")
            .expect("configured");
        assert_eq!(
            oidc.settings.redirect_uri,
            "https://entitle.example.com/portal/oidc/callback"
        );
        assert_eq!(oidc.settings.client_secret, "s3cret");
        assert_eq!(oidc.settings.rules.len(), 2);
        assert!(!format!("{oidc:?}").contains("s3cret"), "never in logs");
    }

    #[test]
    fn incomplete_or_unsafe_configurations_are_refused_at_start() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(OidcArgs::default().build(None).expect("fine").is_none());
        let public = Some("https://entitle.example.com");
        let stray = OidcArgs {
            oidc_client_id: Some("client".into()),
            ..OidcArgs::default()
        };
        assert!(stray.build(public).is_err(), "flags without an issuer");
        assert!(args(dir.path()).build(None).is_err(), "no public URL");
        let mut no_rules = args(dir.path());
        no_rules.oidc_map.clear();
        assert!(no_rules.build(public).is_err(), "nobody could sign in");
        let mut plain = args(dir.path());
        plain.oidc_issuer = Some("http://idp.example.com".into());
        assert!(plain.build(public).is_err(), "http off loopback");
        let mut bad_rule = args(dir.path());
        bad_rule.oidc_map = vec!["group:x=acme:super_admin".into()];
        assert!(bad_rule.build(public).is_err(), "no super_admin by mapping");
    }
}
