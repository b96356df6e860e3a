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

/// Operator mode, as `nsc` would set it up, without `nsc`: an operator, a system account and
/// one application account (JetStream enabled, no limits), their JWTs signed with nkeys, and
/// users of the application account as `.creds` files.
pub struct Operator {
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    account: nkeys::KeyPair,
}

impl Operator {
    pub fn generate() -> Operator {
        Operator {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// The application account's public key (`A...`).
    pub fn account(&self) -> String {
        self.account.public_key()
    }

    /// The config lines that put the server in operator mode with both accounts preloaded.
    pub fn server_block(&self) -> anyhow::Result<String> {
        let operator = self.operator.public_key();
        let operator_jwt = encode_jwt(
            &operator,
            "danmu-test",
            serde_json::json!({
                "type": "operator",
                "version": 2,
                "system_account": self.system.public_key(),
            }),
            &self.operator,
        )?;
        // JetStream (storage limits) on the application account only: nats-server refuses it
        // on the system account.
        let account = |key: &nkeys::KeyPair, name: &str, jetstream: i64| {
            encode_jwt(
                &key.public_key(),
                name,
                serde_json::json!({
                    "type": "account",
                    "version": 2,
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                        "wildcards": true, "conn": -1, "leaf": -1,
                        "mem_storage": jetstream, "disk_storage": jetstream,
                        "streams": jetstream, "consumer": jetstream,
                    },
                    "default_permissions": { "pub": {}, "sub": {} },
                }),
                &self.operator,
            )
        };
        Ok(format!(
            "operator: \"{operator_jwt}\"\nsystem_account: \"{system}\"\nresolver: MEMORY\n\
             resolver_preload: {{\n  {system}: \"{system_jwt}\"\n  {app}: \"{app_jwt}\"\n}}\n",
            system = self.system.public_key(),
            system_jwt = account(&self.system, "SYS", 0)?,
            app = self.account.public_key(),
            app_jwt = account(&self.account, "DANMU", -1)?,
        ))
    }

    /// A new user of the application account: its public key and its `.creds` file text.
    pub fn user_creds(&self, name: &str) -> anyhow::Result<(String, String)> {
        let user = nkeys::KeyPair::new_user();
        let jwt = encode_jwt(
            &user.public_key(),
            name,
            serde_json::json!({
                "type": "user",
                "version": 2,
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            }),
            &self.account,
        )?;
        let seed = user.seed()?;
        Ok((
            user.public_key(),
            format!(
                "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
                 ************************* IMPORTANT *************************\n\
                 NKEY Seed printed below can be used to sign and prove identity.\n\n\
                 -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
            ),
        ))
    }
}

/// A NATS JWT (v2): header `{"typ":"JWT","alg":"ed25519-nkey"}`, the claims with `nats`
/// holding the type-specific part, signed by `issuer`'s nkey; base64url without padding.
fn encode_jwt(
    subject: &str,
    name: &str,
    nats: serde_json::Value,
    issuer: &nkeys::KeyPair,
) -> anyhow::Result<String> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{:X}", rand_id()),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64(&signature)))
}

/// A claim id unique enough for a test (nats-server does not check how it was made).
fn rand_id() -> u128 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    u128::from(hasher.finish())
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
