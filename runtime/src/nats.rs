//! One way for the distributor and control to connect to NATS, so both honour the same config:
//! a comma-separated URL list, credentials in the URL (`nats://user:pass@host`, or a token as
//! `nats://token@host`), an nkey seed file or a `.creds` file (at most one of the two), and
//! `tls://` URLs (TLS required).
//!
//! async-nats takes one URL per `&str` and ignores credentials written in a URL, so they are
//! split and lifted into the [`async_nats::ConnectOptions`] here. (The gateway's own edge links
//! speak the NATS protocol themselves; `gateway/src/nats/options.rs` reads the same keys.)

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

/// Credentials besides those in the URL: the files named by the `nats_nkey_seed` and
/// `nats_creds` config keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsCredentials {
    /// A file holding an nkey user seed (`SU...`, as `nk -gen user` writes it).
    pub nkey_seed: Option<PathBuf>,
    /// A `.creds` file (user JWT and seed, as `nsc` writes it).
    pub creds: Option<PathBuf>,
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

/// Options carrying `name`, the first URL's user/password or token, the nkey or `.creds`, and
/// TLS when any URL says `tls://`; with the servers to pass to
/// [`ConnectOptions::connect`]. Reads the key files now, so a missing file fails at start.
pub fn connect_options(
    name: impl Into<String>,
    urls: &str,
    credentials: &NatsCredentials,
) -> Result<(ConnectOptions, Vec<ServerAddr>), NatsConfigError> {
    let servers = servers(urls)?;
    let mut options = ConnectOptions::new().name(name.into());
    let first = &servers[0];
    match (first.username(), first.password()) {
        (Some(user), Some(pass)) => {
            options = options.user_and_password(user.to_owned(), pass.to_owned())
        }
        (Some(token), None) => options = options.token(token.to_owned()),
        _ => {}
    }
    match (&credentials.nkey_seed, &credentials.creds) {
        (Some(_), Some(_)) => return Err(NatsConfigError::TwoKeys),
        (Some(path), None) => {
            let seed = read("nats_nkey_seed", path)?.trim().to_owned();
            nkeys::KeyPair::from_seed(&seed).map_err(|error| NatsConfigError::BadKey {
                key: "nats_nkey_seed",
                path: path.clone(),
                reason: format!("not an nkey seed: {error}"),
            })?;
            options = options.nkey(seed);
        }
        (None, Some(path)) => {
            let text = read("nats_creds", path)?;
            options = options
                .credentials(&text)
                .map_err(|error| NatsConfigError::BadKey {
                    key: "nats_creds",
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
        }
        (None, None) => {}
    }
    if servers.iter().any(|s| s.tls_required()) {
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
        let both = NatsCredentials {
            nkey_seed: Some(seed.clone()),
            creds: Some(seed.clone()),
        };
        assert!(matches!(
            connect_options("t", "nats://h:1", &both),
            Err(NatsConfigError::TwoKeys)
        ));
        let good = NatsCredentials {
            nkey_seed: Some(seed.clone()),
            creds: None,
        };
        connect_options("t", "nats://h:1", &good).unwrap();

        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUnotaseed").unwrap();
        let err = connect_options(
            "t",
            "nats://h:1",
            &NatsCredentials {
                nkey_seed: Some(bad),
                creds: None,
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
        let missing = NatsCredentials {
            nkey_seed: None,
            creds: Some(dir.path().join("missing.creds")),
        };
        assert!(matches!(
            connect_options("t", "nats://h:1", &missing),
            Err(NatsConfigError::Read {
                key: "nats_creds",
                ..
            })
        ));
    }
}
