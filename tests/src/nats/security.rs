//! Servers that require TLS and authentication, as production runs them: certificates made
//! with rcgen, nkeys made with the `nkeys` crate, and the nats-server config blocks saying so
//! (pass them to [`super::single_with`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

/// A CA, a server certificate for `127.0.0.1`/`localhost` and a client certificate, all signed
/// by the CA, as PEM files in a temporary directory removed on Drop.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    dir: TempDir,
}

impl Pki {
    pub fn generate() -> anyhow::Result<Pki> {
        let dir = TempDir::with_prefix("danmu-pki-")?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let cert = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()])?;
        let (client_cert, client_key) = leaf(vec!["danmu-gateway".into()])?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        };
        Ok(Pki {
            ca: write("ca.pem", &ca_cert.pem())?,
            server_cert: write("server.pem", &server_cert)?,
            server_key: write("server-key.pem", &server_key)?,
            client_cert: write("client.pem", &client_cert)?,
            client_key: write("client-key.pem", &client_key)?,
            dir,
        })
    }

    /// Where the files are (to add more, e.g. a seed file).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The `tls { }` block: clients must speak TLS; with `verify`, they must also present a
    /// certificate signed by the CA.
    pub fn server_block(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
            quote(&self.server_cert),
            quote(&self.server_key),
            quote(&self.ca),
        )
    }
}

/// One user of an `authorization { users: [...] }` block.
pub enum User {
    Password {
        user: String,
        password: String,
        /// Subjects this user may not subscribe to.
        deny_subscribe: Vec<String>,
    },
    /// Authenticated by signing the server's nonce with the seed of this public key (`U...`).
    Nkey { public_key: String },
}

/// The `authorization { users: [...] }` block for `users`; clients that present no
/// credentials are taken as `no_auth_user` if given (nats-server's `no_auth_user`), so services
/// that are not under test connect as before.
pub fn authorization(users: &[User], no_auth_user: Option<&str>) -> String {
    let mut out = match no_auth_user {
        Some(user) => format!("no_auth_user: \"{user}\"\n"),
        None => String::new(),
    };
    out.push_str("authorization {\n  users: [\n");
    for user in users {
        match user {
            User::Password {
                user,
                password,
                deny_subscribe,
            } => {
                let _ = write!(out, "    {{ user: \"{user}\", password: \"{password}\"");
                if !deny_subscribe.is_empty() {
                    let denied: Vec<String> =
                        deny_subscribe.iter().map(|s| format!("\"{s}\"")).collect();
                    let _ = write!(
                        out,
                        ", permissions: {{ subscribe: {{ deny: [{}] }} }}",
                        denied.join(", ")
                    );
                }
                out.push_str(" }\n");
            }
            User::Nkey { public_key } => {
                let _ = writeln!(out, "    {{ nkey: \"{public_key}\" }}");
            }
        }
    }
    out.push_str("  ]\n}\n");
    out
}

fn quote(path: &std::path::Path) -> String {
    format!(
        "\"{}\"",
        path.display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_block_lists_users_and_denials() {
        let block = authorization(
            &[
                User::Password {
                    user: "gw".into(),
                    password: "pw".into(),
                    deny_subscribe: vec!["danmu.edge.*.room.2".into()],
                },
                User::Nkey {
                    public_key: "UABC".into(),
                },
            ],
            Some("gw"),
        );
        assert!(block.starts_with("no_auth_user: \"gw\"\n"));
        assert!(block.contains(
            r#"{ user: "gw", password: "pw", permissions: { subscribe: { deny: ["danmu.edge.*.room.2"] } } }"#
        ));
        assert!(block.contains(r#"{ nkey: "UABC" }"#));
    }
}
