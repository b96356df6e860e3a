//! How the gateway reaches NATS, built once from its configuration for both kinds of
//! connection it keeps: the edge links (our own client) and the async-nats clients.
//!
//! - Servers: `nats_url`, `[nats|tls]://[user:pass@|token@]host[:port]`, comma-separated.
//! - Credentials: user/password or token from the URL; `nats_nkey_seed` (a file holding an
//!   `SU...` seed) or `nats_creds` (a `.creds` file: user JWT and seed), at most one of the two.
//! - TLS: `nats_tls_ca` (PEM roots; the system's when unset), `nats_tls_cert` + `nats_tls_key`
//!   (a client certificate). Setting any of them, or a `tls://` URL, requires TLS on every
//!   server; a server whose INFO says `tls_required` gets TLS anyway.
//! - Replies: the async-nats clients' inboxes are under `nats_inbox_prefix`. The edge links
//!   make no requests and have no inbox.
//!
//! The rules between the keys (one key file at most, both halves of a client certificate) are
//! [`danmu_runtime::nats::NatsSettings`]'s, shared with every service.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use danmu_runtime::nats::KeyText;

use super::client::{KeyAuth, ServerAddr};
use crate::config::Config;

/// Everything needed to connect to NATS, read and checked at start.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    pub url: String,
    pub servers: Vec<ServerAddr>,
    pub auth: KeyAuth,
    /// The seed text (nkey) or the `.creds` text, as async-nats takes them.
    auth_text: AuthText,
    pub require_tls: bool,
    ca: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    inbox_prefix: String,
}

#[derive(Clone, Debug)]
enum AuthText {
    None,
    Seed(String),
    Creds(String),
}

impl NatsOptions {
    /// Reads the key files the configuration names; errors name the key and the file.
    pub fn from_config(config: &Config) -> anyhow::Result<NatsOptions> {
        let settings = config.nats();
        settings.check()?;
        let servers = parse_servers(&config.nats_url)?;
        let (auth, auth_text) = match settings.read_key()? {
            Some(KeyText::Seed(seed)) => {
                let key = nkeys::KeyPair::from_seed(&seed)
                    .map_err(|e| anyhow::anyhow!("`nats_nkey_seed`: not a seed: {e}"))?;
                (KeyAuth::Nkey(Arc::new(key)), AuthText::Seed(seed))
            }
            Some(KeyText::Creds(text)) => {
                let path = settings.creds.clone().unwrap_or_default();
                let (jwt, seed) = parse_creds(&text)
                    .with_context(|| format!("`nats_creds` {}", path.display()))?;
                let key = nkeys::KeyPair::from_seed(seed).map_err(|e| {
                    anyhow::anyhow!("`nats_creds` {}: bad seed: {e}", path.display())
                })?;
                (
                    KeyAuth::Jwt {
                        jwt: jwt.to_owned(),
                        key: Arc::new(key),
                    },
                    AuthText::Creds(text),
                )
            }
            None => (KeyAuth::None, AuthText::None),
        };
        let client_cert = settings
            .client_cert()?
            .map(|(cert, key)| (cert.to_owned(), key.to_owned()));
        let options = NatsOptions {
            url: config.nats_url.clone(),
            require_tls: settings.require_tls()? || servers.iter().any(|s| s.tls),
            servers,
            auth,
            auth_text,
            ca: settings.tls_ca.clone(),
            client_cert,
            inbox_prefix: settings.inbox_prefix,
        };
        if options.require_tls {
            // Fail at start, not at the first connection.
            options.tls_config()?;
        }
        Ok(options)
    }

    /// async-nats options with the same credentials (the first URL's user/password or token,
    /// the nkey or `.creds`) and TLS.
    pub fn async_nats(&self, name: String) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .custom_inbox_prefix(self.inbox_prefix.clone())
            .retry_on_initial_connect();
        // async-nats does not read credentials from the URL: pass the first server's.
        let first = &self.servers[0];
        if let (Some(user), Some(pass)) = (&first.user, &first.pass) {
            options = options.user_and_password(user.clone(), pass.clone());
        }
        if let Some(token) = &first.token {
            options = options.token(token.clone());
        }
        match &self.auth_text {
            AuthText::None => {}
            AuthText::Seed(seed) => options = options.nkey(seed.clone()),
            AuthText::Creds(text) => {
                options = options
                    .credentials(text)
                    .context("`nats_creds`: async-nats refused the file")?
            }
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.require_tls))
    }

    /// Every server as an async-nats URL, credentials left out (they are in the options):
    /// async-nats takes a list, not one comma-separated string.
    pub fn async_nats_urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| {
                let scheme = if s.tls { "tls" } else { "nats" };
                match s.host.contains(':') {
                    true => format!("{scheme}://[{}]:{}", s.host, s.port),
                    false => format!("{scheme}://{}:{}", s.host, s.port),
                }
            })
            .collect()
    }

    /// The rustls configuration of the edge links: the CA file's roots (the system's when
    /// none is configured) and the client certificate if any.
    pub fn tls_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("`nats_tls_ca`: reading {}", ca.display()))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.with_context(|| format!("`nats_tls_ca` {}", ca.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("`nats_tls_ca` {}", ca.display()))?;
                }
                if roots.is_empty() {
                    bail!("`nats_tls_ca` {}: no certificate in it", ca.display());
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&read_bytes(cert, "nats_tls_cert")?)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("`nats_tls_cert` {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_slice(&read_bytes(key, "nats_tls_key")?)
                    .with_context(|| format!("`nats_tls_key` {}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("`nats_tls_cert`/`nats_tls_key`")?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn read_bytes(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("`{key}`: reading {}", path.display()))
}

/// The user JWT and the seed of a `.creds` file: the first and second blocks framed by
/// `-----BEGIN ...-----` / `------END ...------` lines (the layout `nsc` writes).
pub fn parse_creds(text: &str) -> anyhow::Result<(&str, &str)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            match lines.find(|l| !l.is_empty()) {
                Some(value) if !value.starts_with("---") => blocks.push(value),
                _ => bail!("an empty block after {line:?}"),
            }
        }
    }
    match blocks.as_slice() {
        [jwt, seed, ..] => Ok((jwt, seed)),
        _ => bail!(
            "expected a JWT block and a seed block, found {}",
            blocks.len()
        ),
    }
}

/// Parses `[nats|tls]://[user:pass@|token@]host[:port]`, comma-separated (scheme optional,
/// port 4222 by default).
pub fn parse_servers(urls: &str) -> anyhow::Result<Vec<ServerAddr>> {
    let mut servers = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (tls, rest) = match url.split_once("://") {
            Some(("nats", rest)) => (false, rest),
            Some(("tls", rest)) => (true, rest),
            Some((scheme, _)) => {
                bail!("NATS URL {url:?}: scheme {scheme}:// is not supported (nats:// or tls://)")
            }
            None => (false, url),
        };
        let (credentials, host) = match rest.rsplit_once('@') {
            Some((credentials, host)) => (Some(credentials), host),
            None => (None, rest),
        };
        let host = host.trim_end_matches('/');
        let (host, port) = match host.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !port.ends_with(']') => (
                host,
                port.parse()
                    .with_context(|| format!("NATS URL {url:?}: bad port {port:?}"))?,
            ),
            _ => (host, 4222),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("NATS URL {url:?}: no host");
        }
        let (user, pass, token) = match credentials.map(|c| c.split_once(':')) {
            Some(Some((user, pass))) => (Some(user.to_owned()), Some(pass.to_owned()), None),
            Some(None) => (None, None, credentials.map(str::to_owned)),
            None => (None, None, None),
        };
        servers.push(ServerAddr {
            host: host.to_owned(),
            port,
            tls,
            user,
            pass,
            token,
        });
    }
    if servers.is_empty() {
        bail!("no NATS server in {urls:?}");
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_and_credentials_parse() {
        let servers =
            parse_servers("nats://127.0.0.1:4222, nats://u:p@b:4223,tok@c,d:1,tls://e").unwrap();
        let addrs: Vec<_> = servers.iter().map(ServerAddr::addr).collect();
        assert_eq!(
            addrs,
            ["127.0.0.1:4222", "b:4223", "c:4222", "d:1", "e:4222"]
        );
        assert_eq!(
            (servers[1].user.as_deref(), servers[1].pass.as_deref()),
            (Some("u"), Some("p"))
        );
        assert_eq!(servers[2].token.as_deref(), Some("tok"));
        assert!(servers[4].tls && !servers[0].tls);
        assert!(parse_servers("ws://a:4222").is_err());
        assert!(parse_servers("nats://a:x").is_err());
        assert!(parse_servers(" , ").is_err());
    }

    #[test]
    fn key_files_are_read_at_start_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let key = nkeys::KeyPair::new_user();
        std::fs::write(path("gw.nk"), format!("{}\n", key.seed().unwrap())).unwrap();
        std::fs::write(path("bad.nk"), "not a seed").unwrap();
        std::fs::write(path("ca.pem"), "no certificate here").unwrap();
        let config = |f: &dyn Fn(&mut Config)| {
            let mut config = Config::default();
            f(&mut config);
            NatsOptions::from_config(&config).map_err(|e| format!("{e:#}"))
        };

        let options = config(&|c| c.nats_nkey_seed = Some(path("gw.nk"))).unwrap();
        assert!(matches!(&options.auth, KeyAuth::Nkey(k) if k.public_key() == key.public_key()));
        assert!(!options.require_tls);
        let options = config(&|c| c.nats_url = "nats://u:p@a:1,tls://[::1]:2".into()).unwrap();
        assert!(options.async_nats("gw".into()).is_ok());
        assert_eq!(options.async_nats_urls(), ["nats://a:1", "tls://[::1]:2"]);
        assert!(options.require_tls, "a tls:// URL requires TLS");

        for (set, key) in [
            (
                &(|c: &mut Config| c.nats_nkey_seed = Some(path("missing")))
                    as &dyn Fn(&mut Config),
                "nats_nkey_seed",
            ),
            (
                &|c: &mut Config| c.nats_nkey_seed = Some(path("bad.nk")),
                "nats_nkey_seed",
            ),
            (
                &|c: &mut Config| c.nats_creds = Some(path("bad.nk")),
                "nats_creds",
            ),
            (
                &|c: &mut Config| c.nats_tls_ca = Some(path("ca.pem")),
                "nats_tls_ca",
            ),
            (
                &|c: &mut Config| c.nats_tls_key = Some(path("ca.pem")),
                "nats_tls_cert",
            ),
        ] {
            let err = config(set).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn creds_files_give_their_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\neyJhbGc.payload.sig\n------END NATS USER JWT------\n\n\
            ************************* IMPORTANT *************************\n\
            NKEY Seed printed below can be used to sign and prove identity.\n\n\
            -----BEGIN USER NKEY SEED-----\nSUAEXAMPLE\n------END USER NKEY SEED------\n";
        assert_eq!(
            parse_creds(text).unwrap(),
            ("eyJhbGc.payload.sig", "SUAEXAMPLE")
        );
        assert!(parse_creds("-----BEGIN NATS USER JWT-----\nabc\n------END------\n").is_err());
        assert!(parse_creds("").is_err());
    }
}
