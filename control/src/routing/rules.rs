//! Routing rules: per-client policy decided from uid, device and client version. First match
//! wins; no rules (the default) means every client holds a long connection.
//!
//! ```toml
//! [[rules]]                # allow list: these users keep long connections ...
//! name = "staff"
//! uids = [1, 2, 3]
//! mode = "long_connection"
//!
//! [[rules]]                # ... while 10 % of everyone else polls (by uid hash)
//! name = "polling-rollout"
//! percent = 10
//! mode = "polling"
//!
//! [[rules]]                # deny list by client version
//! name = "old-clients"
//! versions = ["1.0.*", "0.9.3"]
//! mode = "polling"
//! ```

use serde::{Deserialize, Serialize};

use super::Client;

/// How the client should receive messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Connect to one of the listed gateways (WebSocket, TCP or QUIC).
    #[default]
    LongConnection,
    /// Poll the room history over HTTP instead of holding a connection.
    Polling,
}

/// The decision for one client, returned to it as `"policy"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    pub mode: Mode,
    /// Name of the rule that decided, absent when none matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// One rule: every criterion given must match (an empty list does not constrain).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown in responses and logs; also salts the rollout hash so that two rollouts pick
    /// different users.
    pub name: String,
    #[serde(default)]
    pub uids: Vec<u64>,
    #[serde(default)]
    pub devices: Vec<String>,
    /// Client versions, exact or with a trailing `*` (`"1.0.*"`).
    #[serde(default)]
    pub versions: Vec<String>,
    /// Matches this percentage of uids (0..=100) by a stable hash; raising it keeps the users
    /// already in.
    #[serde(default)]
    pub percent: Option<u8>,
    pub mode: Mode,
}

impl Rule {
    /// Checks what serde cannot; the reason, for the config error.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if let Some(percent) = self.percent
            && percent > 100
        {
            return Err(format!("percent {percent} is above 100"));
        }
        Ok(())
    }

    fn matches(&self, client: &Client) -> bool {
        let uid_listed = self.uids.is_empty() || client.uid.is_some_and(|u| self.uids.contains(&u));
        let device_listed = self.devices.is_empty()
            || client
                .device
                .as_deref()
                .is_some_and(|d| self.devices.iter().any(|x| x == d));
        let version_listed = self.versions.is_empty()
            || client
                .version
                .as_deref()
                .is_some_and(|v| self.versions.iter().any(|p| version_matches(p, v)));
        let in_rollout = self.percent.is_none_or(|percent| {
            client
                .uid
                .is_some_and(|uid| rollout_bucket(&self.name, uid) < u64::from(percent))
        });
        uid_listed && device_listed && version_listed && in_rollout
    }
}

fn version_matches(pattern: &str, version: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => version.starts_with(prefix),
        None => pattern == version,
    }
}

/// The uid's bucket in 0..100 for rule `salt` (FNV-1a: stable across builds and platforms,
/// unlike std's `DefaultHasher`).
pub fn rollout_bucket(salt: &str, uid: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in salt.bytes().chain([0]).chain(uid.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % 100
}

/// The configured rules, in order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Self {
        Rules { rules }
    }

    /// The first matching rule's policy, or long connection.
    pub fn policy(&self, client: &Client) -> Policy {
        self.rules
            .iter()
            .find(|rule| rule.matches(client))
            .map(|rule| Policy {
                mode: rule.mode,
                rule: Some(rule.name.clone()),
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(uid: Option<u64>, device: Option<&str>, version: Option<&str>) -> Client {
        Client {
            region: "A".into(),
            uid,
            device: device.map(Into::into),
            version: version.map(Into::into),
        }
    }

    fn polling(name: &str) -> Rule {
        Rule {
            name: name.into(),
            mode: Mode::Polling,
            ..Rule::default()
        }
    }

    #[test]
    fn no_rules_means_long_connection() {
        let policy = Rules::default().policy(&client(Some(1), None, None));
        assert_eq!(policy, Policy::default());
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            serde_json::json!({"mode": "long_connection"})
        );
    }

    #[test]
    fn first_match_wins_so_allow_lists_go_first() {
        let rules = Rules::new(vec![
            Rule {
                name: "staff".into(),
                uids: vec![7],
                mode: Mode::LongConnection,
                ..Rule::default()
            },
            polling("everyone"),
        ]);
        assert_eq!(
            rules.policy(&client(Some(7), None, None)).rule.as_deref(),
            Some("staff")
        );
        let other = rules.policy(&client(Some(8), None, None));
        assert_eq!(other.mode, Mode::Polling);
        assert_eq!(other.rule.as_deref(), Some("everyone"));
    }

    #[test]
    fn device_and_version_lists() {
        let rules = Rules::new(vec![Rule {
            devices: vec!["buvid-1".into()],
            versions: vec!["1.0.*".into(), "2.0.0".into()],
            ..polling("old")
        }]);
        assert_eq!(
            rules
                .policy(&client(None, Some("buvid-1"), Some("1.0.7")))
                .mode,
            Mode::Polling
        );
        assert_eq!(
            rules
                .policy(&client(None, Some("buvid-1"), Some("2.0.0")))
                .mode,
            Mode::Polling
        );
        assert_eq!(
            rules
                .policy(&client(None, Some("buvid-1"), Some("2.0.1")))
                .mode,
            Mode::LongConnection
        );
        assert_eq!(
            rules
                .policy(&client(None, Some("buvid-2"), Some("1.0.7")))
                .mode,
            Mode::LongConnection
        );
        assert_eq!(
            rules.policy(&client(None, None, None)).mode,
            Mode::LongConnection
        );
    }

    #[test]
    fn percentage_rollout_is_stable_and_monotone() {
        let rules_at = |percent| {
            Rules::new(vec![Rule {
                percent: Some(percent),
                ..polling("rollout")
            }])
        };
        let polled = |percent| {
            let rules = rules_at(percent);
            (0..10_000u64)
                .filter(|&uid| rules.policy(&client(Some(uid), None, None)).mode == Mode::Polling)
                .collect::<Vec<_>>()
        };
        let ten = polled(10);
        let twenty = polled(20);
        assert!((800..1200).contains(&ten.len()), "{}", ten.len());
        assert!(ten.iter().all(|uid| twenty.contains(uid)));
        assert!(polled(0).is_empty());
        assert_eq!(polled(100).len(), 10_000);
        // No uid, no rollout.
        assert_eq!(
            rules_at(100).policy(&client(None, None, None)).mode,
            Mode::LongConnection
        );
    }

    #[test]
    fn check_rejects_bad_rules() {
        assert!(polling("").check().is_err());
        assert!(
            Rule {
                percent: Some(101),
                ..polling("r")
            }
            .check()
            .is_err()
        );
        assert!(
            Rule {
                percent: Some(100),
                ..polling("r")
            }
            .check()
            .is_ok()
        );
    }
}
