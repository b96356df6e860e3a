//! One set of NATS connection settings for every service ([`NatsSettings`]), read from the same
//! config keys everywhere: `nats_url` (a comma-separated URL list, credentials in the URL as
//! `nats://user:pass@host` or a token as `nats://token@host`, `tls://` for TLS), `nats_nkey_seed`
//! or `nats_creds` (at most one of the two, checked in [`NatsSettings::key_source`] only),
//! `nats_tls_ca`, `nats_tls_cert` and `nats_tls_key`, and `nats_inbox_prefix`.
//!
//! async-nats takes one URL per `&str` and ignores credentials written in a URL, so they are
//! split and lifted into the [`async_nats::ConnectOptions`] here. (The gateway's own edge links
//! speak the NATS protocol themselves; `gateway/src/nats/options.rs` builds them from the same
//! [`NatsSettings`].)
//!
//! The inbox prefix is where a client's replies arrive (JetStream and KV API answers, pulled
//! messages, request replies). Each service has its own ([`inbox_prefix`]), so the NATS
//! permissions can let each user read its own replies only: with the default `_INBOX.` shared
//! by all, whoever may subscribe `_INBOX.>` reads every service's JetStream traffic.

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};

/// Why NATS connection settings cannot be used; each names the key or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    /// `nats_url` holds no URL.
    #[error("`nats_url` is empty")]
    NoServer,
    /// One entry of `nats_url` is not a NATS URL.
    #[error("`nats_url` entry {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// Both `nats_nkey_seed` and `nats_creds` are set.
    #[error("set at most one of `nats_nkey_seed` and `nats_creds`")]
    TwoKeys,
    /// One of `nats_tls_cert` and `nats_tls_key` without the other.
    #[error("set both `nats_tls_cert` and `nats_tls_key`, or neither")]
    HalfClientCert,
    /// `nats_inbox_prefix` is not a subject prefix a client can subscribe under.
    #[error("`nats_inbox_prefix` {prefix:?}: {reason}")]
    BadInboxPrefix {
        prefix: String,
        reason: &'static str,
    },
    /// A seed or creds file could not be read.
    #[error("`{key}` {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The seed file does not hold a user seed (`SU...`), or the creds file is malformed.
    #[error("`{key}` {path}: {reason}")]
    BadKey {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl NatsConfigError {
    /// The config key to fix, for errors that name one (`ConfigError::Invalid`).
    pub fn key(&self) -> &'static str {
        match self {
            NatsConfigError::NoServer | NatsConfigError::BadUrl { .. } => "nats_url",
            NatsConfigError::TwoKeys => "nats_creds",
            NatsConfigError::HalfClientCert => "nats_tls_cert",
            NatsConfigError::BadInboxPrefix { .. } => "nats_inbox_prefix",
            NatsConfigError::Read { key, .. } | NatsConfigError::BadKey { key, .. } => key,
        }
    }
}

/// Where each service's replies arrive: `_DANMU_INBOX.<service>` (`gateway`, `distributor`,
/// `control`), the default of its `nats_inbox_prefix` key. The chart's NATS users let each
/// service subscribe under its own prefix only (`charts/danmu/templates/nats-auth.yaml`).
pub fn inbox_prefix(service: &str) -> String {
    format!("{SERVICE_INBOX_ROOT}.{service}")
}

/// The root of the services' inbox prefixes ([`inbox_prefix`]); business publishers use
/// `_INBOX.<name>` instead, so no publisher's grant covers a service's replies.
pub const SERVICE_INBOX_ROOT: &str = "_DANMU_INBOX";

/// A service's NATS connection settings, one field per config key (every service has the same
/// keys). Tests build it directly; services take it from their config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `nats_url`: comma-separated servers, credentials in the first one's URL if any.
    pub url: String,
    /// `nats_nkey_seed`: a file holding an nkey user seed (`SU...`, as `nk -gen user` writes it).
    pub nkey_seed: Option<PathBuf>,
    /// `nats_creds`: a `.creds` file (user JWT and seed, as `nsc` writes it).
    pub creds: Option<PathBuf>,
    /// `nats_tls_ca`: PEM roots to verify the servers with (the system's when unset).
    pub tls_ca: Option<PathBuf>,
    /// `nats_tls_cert` and `nats_tls_key`: a client certificate (PEM), both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `nats_inbox_prefix`: where replies arrive ([`inbox_prefix`]).
    pub inbox_prefix: String,
}

/// Which credentials file [`NatsSettings`] names, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// Only what the URL carries (user/password, token, or nothing).
    None,
    /// `nats_nkey_seed`.
    Seed(&'a Path),
    /// `nats_creds`.
    Creds(&'a Path),
}

impl NatsSettings {
    /// Settings for `url` with no key files and no TLS files, replies under
    /// [`inbox_prefix`]`(service)`.
    pub fn new(url: impl Into<String>, service: &str) -> Self {
        NatsSettings {
            url: url.into(),
            nkey_seed: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: inbox_prefix(service),
        }
    }

    /// The credentials file to use: the one place the "at most one of `nats_nkey_seed` and
    /// `nats_creds`" rule is checked.
    pub fn key_source(&self) -> Result<KeySource<'_>, NatsConfigError> {
        match (&self.nkey_seed, &self.creds) {
            (Some(_), Some(_)) => Err(NatsConfigError::TwoKeys),
            (Some(path), None) => Ok(KeySource::Seed(path)),
            (None, Some(path)) => Ok(KeySource::Creds(path)),
            (None, None) => Ok(KeySource::None),
        }
    }

    /// The client certificate and key files, when both are set.
    pub fn client_cert(&self) -> Result<Option<(&Path, &Path)>, NatsConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => Err(NatsConfigError::HalfClientCert),
        }
    }

    /// Whether every connection must use TLS: a `tls://` URL or any `nats_tls_*` key.
    pub fn require_tls(&self) -> Result<bool, NatsConfigError> {
        Ok(self.tls_ca.is_some()
            || self.client_cert()?.is_some()
            || servers(&self.url)?.iter().any(|s| s.tls_required()))
    }

    /// Checks everything that needs no file: the URLs, the key and certificate rules, the inbox
    /// prefix. Services call it from their config validation; [`connect_options`] calls it too.
    pub fn check(&self) -> Result<(), NatsConfigError> {
        servers(&self.url)?;
        self.key_source()?;
        self.client_cert()?;
        check_inbox_prefix(&self.inbox_prefix)
    }

    /// Reads the seed (checked to be a user seed) or the `.creds` text: `None` without a key
    /// file.
    pub fn read_key(&self) -> Result<Option<KeyText>, NatsConfigError> {
        match self.key_source()? {
            KeySource::None => Ok(None),
            KeySource::Seed(path) => {
                let seed = read("nats_nkey_seed", path)?.trim().to_owned();
                nkeys::KeyPair::from_seed(&seed).map_err(|error| NatsConfigError::BadKey {
                    key: "nats_nkey_seed",
                    path: path.to_owned(),
                    reason: format!("not an nkey seed: {error}"),
                })?;
                Ok(Some(KeyText::Seed(seed)))
            }
            KeySource::Creds(path) => Ok(Some(KeyText::Creds(read("nats_creds", path)?))),
        }
    }
}

/// The text of a key file, as async-nats and the gateway's edge links take it.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyText {
    /// An nkey user seed (`SU...`), trimmed.
    Seed(String),
    /// A whole `.creds` file.
    Creds(String),
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyText::Seed(_) => f.write_str("Seed(<redacted>)"),
            KeyText::Creds(_) => f.write_str("Creds(<redacted>)"),
        }
    }
}

/// An inbox prefix must be a literal subject (tokens of [`is_subject_token`] joined by dots):
/// async-nats subscribes `<prefix>.<id>.*` under it.
fn check_inbox_prefix(prefix: &str) -> Result<(), NatsConfigError> {
    let bad = |reason| NatsConfigError::BadInboxPrefix {
        prefix: prefix.to_owned(),
        reason,
    };
    if prefix.is_empty() {
        return Err(bad("must not be empty"));
    }
    if !prefix.split('.').all(is_subject_token) {
        return Err(bad(
            "must be subject tokens joined by dots, without wildcards, spaces or an empty token",
        ));
    }
    Ok(())
}

/// A literal NATS subject token: not empty, no `.`, `*`, `>` or whitespace.
fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace())
}

/// The servers of a comma-separated `nats_url` (spaces around entries allowed).
pub fn servers(urls: &str) -> Result<Vec<ServerAddr>, NatsConfigError> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|error| NatsConfigError::BadUrl {
                    url: redact(url),
                    reason: error.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(NatsConfigError::NoServer);
    }
    Ok(servers)
}

/// Options carrying `name`, the first URL's user/password or token, the nkey or `.creds`, TLS
/// (required with a `tls://` URL or any `nats_tls_*` key; the CA and client certificate when
/// set) and the inbox prefix; with the servers to pass to [`ConnectOptions::connect`]. Reads the
/// key files now, so a missing file fails at start.
pub fn connect_options(
    name: impl Into<String>,
    settings: &NatsSettings,
) -> Result<(ConnectOptions, Vec<ServerAddr>), NatsConfigError> {
    settings.check()?;
    let servers = servers(&settings.url)?;
    let mut options = ConnectOptions::new()
        .name(name.into())
        .custom_inbox_prefix(settings.inbox_prefix.clone());
    let first = &servers[0];
    match (first.username(), first.password()) {
        (Some(user), Some(pass)) => {
            options = options.user_and_password(user.to_owned(), pass.to_owned())
        }
        (Some(token), None) => options = options.token(token.to_owned()),
        _ => {}
    }
    match settings.read_key()? {
        Some(KeyText::Seed(seed)) => options = options.nkey(seed),
        Some(KeyText::Creds(text)) => {
            options = options
                .credentials(&text)
                .map_err(|error| NatsConfigError::BadKey {
                    key: "nats_creds",
                    path: settings.creds.clone().unwrap_or_default(),
                    reason: error.to_string(),
                })?;
        }
        None => {}
    }
    if let Some(ca) = &settings.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = settings.client_cert()? {
        options = options.add_client_certificate(cert.to_owned(), key.to_owned());
    }
    if settings.require_tls()? {
        options = options.require_tls(true);
    }
    // The addresses keep their credentials: async-nats does not send them, and stripping
    // would only matter for logs, which print the redacted config key instead.
    Ok((options, servers))
}

/// A new NATS user key pair: its seed (`SU...`, secret) and public key (`U...`).
pub fn generate_user() -> Result<(String, String), nkeys::error::Error> {
    let pair = nkeys::KeyPair::new_user();
    Ok((pair.seed()?, pair.public_key()))
}

fn read(key: &'static str, path: &Path) -> Result<String, NatsConfigError> {
    std::fs::read_to_string(path).map_err(|source| NatsConfigError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// `url` with its password or token replaced by `***`, for error messages and logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                if user.is_empty() {
                    format!("{scheme}://***@{host}")
                } else {
                    format!("{scheme}://{user}:***@{host}")
                }
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_comma_separated_urls() {
        let servers = servers(" nats://a:4222 , nats://b:4223,").unwrap();
        let hosts: Vec<_> = servers.iter().map(|s| (s.host(), s.port())).collect();
        assert_eq!(hosts, [("a", 4222), ("b", 4223)]);
        assert!(matches!(
            super::servers(" , "),
            Err(NatsConfigError::NoServer)
        ));
        let err = super::servers("nats://u:secret@a:4222,http://[::1").unwrap_err();
        assert!(err.to_string().contains("http://[::1"), "{err}");
    }

    #[test]
    fn redacts_passwords_and_tokens() {
        assert_eq!(redact("nats://u:pw@h:1"), "nats://u:***@h:1");
        assert_eq!(redact("nats://tok@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
    }

    #[test]
    fn key_files_are_read_and_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("svc.nk");
        let user = nkeys::KeyPair::new_user();
        std::fs::write(&seed, user.seed().unwrap() + "\n").unwrap();
        let settings = NatsSettings::new("nats://h:1", "test");
        let both = NatsSettings {
            nkey_seed: Some(seed.clone()),
            creds: Some(seed.clone()),
            ..settings.clone()
        };
        assert!(matches!(
            connect_options("t", &both),
            Err(NatsConfigError::TwoKeys)
        ));
        assert!(matches!(both.check(), Err(NatsConfigError::TwoKeys)));
        let good = NatsSettings {
            nkey_seed: Some(seed.clone()),
            ..settings.clone()
        };
        connect_options("t", &good).unwrap();

        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUnotaseed").unwrap();
        let err = connect_options(
            "t",
            &NatsSettings {
                nkey_seed: Some(bad),
                ..settings.clone()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                NatsConfigError::BadKey {
                    key: "nats_nkey_seed",
                    ..
                }
            ),
            "{err}"
        );
        let missing = NatsSettings {
            creds: Some(dir.path().join("missing.creds")),
            ..settings.clone()
        };
        assert!(matches!(
            connect_options("t", &missing),
            Err(NatsConfigError::Read {
                key: "nats_creds",
                ..
            })
        ));
    }

    #[test]
    fn tls_and_inbox_rules_are_checked_without_files() {
        let settings = NatsSettings::new("nats://h:1", "gateway");
        assert_eq!(settings.inbox_prefix, "_DANMU_INBOX.gateway");
        settings.check().unwrap();
        assert!(!settings.require_tls().unwrap());
        let half = NatsSettings {
            tls_cert: Some("cert.pem".into()),
            ..settings.clone()
        };
        assert!(matches!(half.check(), Err(NatsConfigError::HalfClientCert)));
        let ca = NatsSettings {
            tls_ca: Some("ca.pem".into()),
            ..settings.clone()
        };
        assert!(ca.require_tls().unwrap());
        assert!(NatsSettings::new("tls://h:1", "x").require_tls().unwrap());
        for prefix in ["", "_INBOX.>", "_INBOX.*.x", "a..b", "a.", "a b"] {
            let bad = NatsSettings {
                inbox_prefix: prefix.into(),
                ..settings.clone()
            };
            assert!(
                matches!(bad.check(), Err(NatsConfigError::BadInboxPrefix { .. })),
                "{prefix:?}"
            );
        }
    }
}
