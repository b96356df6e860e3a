//! The nkey users of a fabric and the `authorization` block that lists them with the chart's
//! permissions ([`super::permissions`]): for the test servers ([`FabricUsers::for_tests`]) and
//! for `local-nats` ([`FabricUsers::from_dir`], the seeds `scripts/up` writes under
//! `.dev/keys/`).
//!
//! Each service role has one user per region, whose permissions are that region's: a service
//! that fails over to another region's server keeps its own region's rights (the chart has one
//! cluster per region, so there each server lists only its region's users). The business
//! publisher is one user, given on every server the permissions of that server's region, as the
//! chart's `natsAuth.publishers` does in every region's release (a publish on `danmu.push` is
//! checked as the server's own ingest subject). Tests also get an `admin` user with no
//! permissions block (everything allowed), for setting up and inspecting; the dev fabric has
//! none.
//!
//! Nkey authentication: the server lists public keys (`U...`); a client signs the server's nonce
//! with the seed (`SU...`) (docs.nats.io, "Authentication" → "NKEYs").

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::sync::mpsc::UnboundedReceiver;

use super::permissions::{Role, inbox_prefix, permissions, publisher_permissions};

/// One nkey user: the public key the server lists and the file holding its seed (what the
/// services' `nats_nkey_seed` config key names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NkeyUser {
    pub public_key: String,
    pub seed_file: PathBuf,
    /// The inbox prefix its permissions let it read replies under
    /// ([`super::permissions::inbox_prefix`]); `None` (the admin): the client's default.
    pub inbox_prefix: Option<String>,
}

impl NkeyUser {
    /// Reads a seed file (`SU...`, as `danmu-control nkey --out` writes it).
    pub fn from_seed_file(path: &Path) -> anyhow::Result<NkeyUser> {
        let seed = std::fs::read_to_string(path)
            .with_context(|| format!("reading the nkey seed {}", path.display()))?;
        let pair = nkeys::KeyPair::from_seed(seed.trim())
            .map_err(|e| anyhow::anyhow!("{}: not an nkey seed: {e}", path.display()))?;
        Ok(NkeyUser {
            public_key: pair.public_key(),
            seed_file: path.to_owned(),
            inbox_prefix: None,
        })
    }

    /// The seed text.
    pub fn seed(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.seed_file)
            .with_context(|| format!("reading {}", self.seed_file.display()))?
            .trim()
            .to_owned())
    }

    /// This user, its replies under `prefix` (what its permissions allow it to read).
    pub fn with_inbox_prefix(self, prefix: String) -> NkeyUser {
        NkeyUser {
            inbox_prefix: Some(prefix),
            ..self
        }
    }

    /// Connection options authenticating as this user, with its inbox prefix.
    pub fn options(&self) -> anyhow::Result<async_nats::ConnectOptions> {
        let options = async_nats::ConnectOptions::with_nkey(self.seed()?);
        Ok(match &self.inbox_prefix {
            Some(prefix) => options.custom_inbox_prefix(prefix.clone()),
            None => options,
        })
    }

    /// Connects to `url` as this user, with the server's errors (permission violations, as
    /// `Permissions Violation for Publish to "subject"`) sent to the returned channel.
    pub async fn connect_watching(
        &self,
        url: &str,
    ) -> anyhow::Result<(async_nats::Client, UnboundedReceiver<String>)> {
        connect_watching(self.options()?, url)
            .await
            .with_context(|| format!("connecting to {url} as {}", self.public_key))
    }

    /// Connects to `url` (one URL or a comma-separated list) as this user.
    pub async fn connect(&self, url: &str) -> anyhow::Result<async_nats::Client> {
        let user = self.public_key.clone();
        self.options()?
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url} as {user}"))
    }
}

/// Every user of a fabric of `regions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricUsers {
    regions: Vec<String>,
    /// (role, region, user) for every role but the publisher.
    services: Vec<(Role, String, NkeyUser)>,
    pub publisher: NkeyUser,
    /// Tests only: no permissions block.
    pub admin: Option<NkeyUser>,
    /// Clients without credentials are taken as a business publisher (nats-server's
    /// `no_auth_user`, naming a user [`ANONYMOUS_PUBLISHER`] with the publisher's permissions):
    /// the dev fabric, so the README's publish commands need no credentials. Off in tests,
    /// where every connection says who it is.
    pub anonymous_publisher: bool,
}

/// The user that clients without credentials are taken as when
/// [`FabricUsers::anonymous_publisher`] is on. Its replies arrive under `_INBOX.business`
/// ([`super::permissions::publisher_inbox_prefix`]): `nats req --inbox-prefix _INBOX.business`.
pub const ANONYMOUS_PUBLISHER: &str = "business";

/// The service roles: one user per region each.
const SERVICE_ROLES: [Role; 4] = [
    Role::Gateway,
    Role::GatewayEcho,
    Role::Distributor,
    Role::Control,
];

impl FabricUsers {
    /// The test users of `regions`. Their keys are derived from the role and region names, so
    /// every test process and server agrees on them without sharing state, and their seed files
    /// are (re)written under `$TMPDIR/danmu-test-users/`. Loopback test servers only: these
    /// keys are public.
    pub fn for_tests(regions: &[&str]) -> anyhow::Result<FabricUsers> {
        let dir = std::env::temp_dir().join("danmu-test-users");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let user = |name: &str| -> anyhow::Result<NkeyUser> { test_user(&dir, name) };
        let role_user = |role: Role, name: &str| -> anyhow::Result<NkeyUser> {
            Ok(user(name)?.with_inbox_prefix(inbox_prefix(role)))
        };
        let mut services = Vec::new();
        for region in regions {
            for role in SERVICE_ROLES {
                services.push((
                    role,
                    (*region).to_owned(),
                    role_user(role, &format!("{}-{region}", role.name()))?,
                ));
            }
        }
        Ok(FabricUsers {
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            services,
            publisher: role_user(Role::Publisher, "publisher")?,
            admin: Some(user("admin")?),
            anonymous_publisher: false,
        })
    }

    /// The dev fabric's users: the seeds in `dir` named by [`dev_seed_file`] (`scripts/up`
    /// writes them once with `danmu-control nkey --out`). No admin user.
    pub fn from_dir(dir: &Path, regions: &[&str]) -> anyhow::Result<FabricUsers> {
        let mut services = Vec::new();
        for region in regions {
            for role in SERVICE_ROLES {
                let path = dev_seed_file(dir, role, Some(region));
                let user = NkeyUser::from_seed_file(&path)?.with_inbox_prefix(inbox_prefix(role));
                services.push((role, (*region).to_owned(), user));
            }
        }
        Ok(FabricUsers {
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            services,
            publisher: NkeyUser::from_seed_file(&dev_seed_file(dir, Role::Publisher, None))?
                .with_inbox_prefix(inbox_prefix(Role::Publisher)),
            admin: None,
            anonymous_publisher: true,
        })
    }

    /// The user of `role` in `region` (the publisher is the same in every region). Panics on
    /// a region this fabric does not have (a typo in a test).
    pub fn user(&self, role: Role, region: &str) -> &NkeyUser {
        if role == Role::Publisher {
            return &self.publisher;
        }
        self.services
            .iter()
            .find(|(r, reg, _)| *r == role && reg == region)
            .map(|(_, _, user)| user)
            .unwrap_or_else(|| panic!("no {} user for region {region:?}", role.name()))
    }

    /// The `authorization { users: [...] }` block for the server of `server_region`: every
    /// service user with its own region's permissions, the publisher with this region's, the
    /// admin (if any) with no permissions block. One JSON object per user, as the chart renders
    /// them. With [`FabricUsers::anonymous_publisher`], preceded by `no_auth_user` and with one
    /// more user, [`ANONYMOUS_PUBLISHER`] (a random password nobody needs), with the
    /// publisher's permissions.
    pub fn authorization_block(&self, server_region: &str) -> String {
        let regions: Vec<&str> = self.regions.iter().map(String::as_str).collect();
        let mut out = String::new();
        if self.anonymous_publisher {
            let _ = writeln!(out, "no_auth_user: \"{ANONYMOUS_PUBLISHER}\"");
        }
        out.push_str("authorization {\n  users: [\n");
        let mut line = |value: serde_json::Value| {
            let _ = writeln!(out, "    {value}");
        };
        for (role, region, user) in &self.services {
            line(serde_json::json!({
                "nkey": user.public_key,
                "permissions": permissions(*role, region, &regions).to_json(),
            }));
        }
        line(serde_json::json!({
            "nkey": self.publisher.public_key,
            "permissions": permissions(Role::Publisher, server_region, &regions).to_json(),
        }));
        if let Some(admin) = &self.admin {
            line(serde_json::json!({ "nkey": admin.public_key }));
        }
        if self.anonymous_publisher {
            line(serde_json::json!({
                "user": ANONYMOUS_PUBLISHER,
                // Random, never used: clients without credentials become this user.
                "password": nkeys::KeyPair::new_user().public_key(),
                "permissions": publisher_permissions(ANONYMOUS_PUBLISHER, server_region).to_json(),
            }));
        }
        out.push_str("  ]\n}\n");
        out
    }
}

/// Where the dev fabric keeps the seed of `role` in `region`: `<dir>/nats-<role>-<region>.nk`,
/// and the publisher's (no region) `<dir>/nats-publisher.nk`. Region names are lower-cased
/// (`nats-gateway-echo-a.nk`).
pub fn dev_seed_file(dir: &Path, role: Role, region: Option<&str>) -> PathBuf {
    match region {
        Some(region) if role != Role::Publisher => {
            dir.join(format!("nats-{}-{}.nk", role.name(), region.to_lowercase()))
        }
        _ => dir.join(format!("nats-{}.nk", role.name())),
    }
}

/// The test user `name`: its key derived from the name, its seed written to `<dir>/<name>.nk`
/// if that file does not hold it yet (through a rename, so a concurrent reader never sees half
/// a file).
fn test_user(dir: &Path, name: &str) -> anyhow::Result<NkeyUser> {
    let mut raw = [0u8; 32];
    for (i, byte) in format!("danmu-test-user/{name}").bytes().enumerate() {
        raw[i % 32] = raw[i % 32].wrapping_mul(31).wrapping_add(byte);
    }
    let pair = nkeys::KeyPair::new_from_raw(nkeys::KeyPairType::User, raw)
        .map_err(|e| anyhow::anyhow!("deriving the test key {name}: {e}"))?;
    let seed = pair
        .seed()
        .map_err(|e| anyhow::anyhow!("the seed of {name}: {e}"))?;
    let path = dir.join(format!("{name}.nk"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(seed.as_str()) {
        // Unique per process and per call: tests of one process run on parallel threads, and a
        // shared temporary name would let one thread's rename take another's file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = dir.join(format!("{name}.nk.{}.{n}", std::process::id()));
        std::fs::write(&temp, &seed).with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(NkeyUser {
        public_key: pair.public_key(),
        seed_file: path,
        inbox_prefix: None,
    })
}

/// The test user of `role` in `region` (see [`FabricUsers::for_tests`]).
pub fn test_user_of(role: Role, region: &str) -> NkeyUser {
    FabricUsers::for_tests(&[region])
        .expect("writing the test users' seeds")
        .user(role, region)
        .clone()
}

/// The test admin user: no permissions block on the test servers, so it may do anything
/// (create and delete streams, read any subject). For tests that set up or inspect; the
/// fabric's own connections never use it.
pub fn test_admin() -> NkeyUser {
    FabricUsers::for_tests(&[])
        .expect("writing the test users' seeds")
        .admin
        .expect("the test users have an admin")
}

/// The business publisher of the test servers (the chart's `natsAuth.publishers` rights).
pub fn test_publisher() -> NkeyUser {
    FabricUsers::for_tests(&[])
        .expect("writing the test users' seeds")
        .publisher
}

/// Connects to `url` as the test business publisher.
pub async fn connect_publisher(url: &str) -> anyhow::Result<async_nats::Client> {
    test_publisher().connect(url).await
}

/// Connects to `url` as the test admin (see [`test_admin`]).
pub async fn connect_admin(url: &str) -> anyhow::Result<async_nats::Client> {
    test_admin().connect(url).await
}

/// Connects to `url` with `options`, the server's errors (permission violations, as
/// `Permissions Violation for Publish to "subject"`) sent to the returned channel.
pub async fn connect_watching(
    options: async_nats::ConnectOptions,
    url: &str,
) -> anyhow::Result<(async_nats::Client, UnboundedReceiver<String>)> {
    let (errors, received) = tokio::sync::mpsc::unbounded_channel();
    let client = options
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event
                {
                    let _ = errors.send(text);
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, received))
}

/// The next server error on a [`connect_watching`] channel, within 10 s.
pub async fn refusal(errors: &mut UnboundedReceiver<String>) -> anyhow::Result<String> {
    tokio::time::timeout(std::time::Duration::from_secs(10), errors.recv())
        .await
        .map_err(|_| anyhow::anyhow!("no permission violation within 10s"))?
        .ok_or_else(|| anyhow::anyhow!("the connection closed"))
}

/// Publishes `subject` as a watched client and expects nats-server to refuse it as
/// `checked_as` (the subject after the account's mapping).
pub async fn publish_refused(
    client: &async_nats::Client,
    errors: &mut UnboundedReceiver<String>,
    subject: &str,
    checked_as: &str,
) -> anyhow::Result<()> {
    client.publish(subject.to_owned(), "forged".into()).await?;
    client.flush().await?;
    let refused = refusal(errors).await?;
    anyhow::ensure!(
        refused.contains(&format!(
            "Permissions Violation for Publish to \"{checked_as}\""
        )),
        "{subject}: {refused}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_users_are_stable_and_distinct() {
        let users = FabricUsers::for_tests(&["A", "B"]).unwrap();
        let again = FabricUsers::for_tests(&["A", "B"]).unwrap();
        assert_eq!(users, again);
        let mut keys: Vec<&str> = Role::ALL
            .iter()
            .flat_map(|role| ["A", "B"].map(|r| users.user(*role, r).public_key.as_str()))
            .collect();
        keys.push(&users.admin.as_ref().unwrap().public_key);
        let count = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), count - 1, "only the publisher is shared");
        let seed = users.user(Role::Gateway, "B").seed().unwrap();
        assert!(seed.starts_with("SU"));
        let block = users.authorization_block("B");
        assert!(block.contains("\"danmu.in.B.>\""), "{block}");
        assert!(!block.contains("\"danmu.in.A.>\""), "{block}");
    }

    #[test]
    fn threads_writing_the_same_seed_at_once_all_succeed() {
        // A race needs a clean directory: 20 rounds, each on a fresh one.
        for _ in 0..20 {
            let dir = tempfile::TempDir::with_prefix("danmu-users-").unwrap();
            let users: Vec<NkeyUser> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..16)
                    .map(|_| scope.spawn(|| test_user(dir.path(), "gateway-A")))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap().unwrap())
                    .collect()
            });
            assert!(users.windows(2).all(|w| w[0] == w[1]));
            let seed = std::fs::read_to_string(&users[0].seed_file).unwrap();
            assert!(seed.starts_with("SU"), "{seed}");
        }
    }
}
