//! The `[upstream]` section of the gateway configuration.

use serde::Deserialize;

use crate::error::ConfigError;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Off: every UPSTREAM is answered -207 and nothing is forwarded.
    pub enabled: bool,
    /// Longest `msg` accepted, in characters (Unicode scalar values).
    pub max_msg_chars: usize,
    /// Demo: also publish what passes into the room (business push subject, low priority), so
    /// every member sees it. Off in production, where business decides what the room sees.
    pub echo_to_room: bool,
    /// Per user (all of its connections on this gateway).
    pub user_limit: RateLimit,
    /// Per room, on this gateway: N gateways let a room take up to N times this.
    pub room_limit: RateLimit,
    /// A connection whose user is refused this many times in a row by the user limit is closed
    /// (flood, WebSocket 1008); 0 never closes.
    pub flood_close_after: u32,
    /// Users whose danmu are refused (-202).
    pub deny_uids: Vec<u64>,
    /// Addresses or CIDR blocks whose danmu are refused (-203), e.g. `"10.0.0.0/8"`,
    /// `"2001:db8::/32"`, `"192.0.2.7"`.
    pub deny_ips: Vec<String>,
    pub words: WordsConfig,
    /// Accepted danmu waiting to be published to NATS; when full, requests get -208.
    pub queue_len: usize,
}

/// A token bucket: `burst` messages at once, refilled at `rate_per_sec`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub rate_per_sec: f64,
    pub burst: u32,
}

/// The sensitive-word filter: case-insensitive substring matches of any listed word.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WordsConfig {
    pub action: WordAction,
    /// Words, inline.
    pub list: Vec<String>,
    /// A file of more words: one per line, blank lines and lines starting with `#` ignored.
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WordAction {
    /// Refuse the danmu (-204).
    #[default]
    Reject,
    /// Forward it with each character of every match replaced by `*` (code 1).
    Mask,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            enabled: true,
            max_msg_chars: 100,
            echo_to_room: false,
            user_limit: RateLimit {
                rate_per_sec: 1.0,
                burst: 3,
            },
            room_limit: RateLimit {
                rate_per_sec: 50.0,
                burst: 100,
            },
            flood_close_after: 50,
            deny_uids: Vec::new(),
            deny_ips: Vec::new(),
            words: WordsConfig::default(),
            queue_len: 4096,
        }
    }
}

impl UpstreamConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.max_msg_chars == 0 {
            return invalid("upstream.max_msg_chars", "must be at least 1".into());
        }
        for (key, limit) in [
            ("upstream.user_limit", self.user_limit),
            ("upstream.room_limit", self.room_limit),
        ] {
            if !(limit.rate_per_sec.is_finite() && limit.rate_per_sec > 0.0) || limit.burst == 0 {
                return invalid(
                    key,
                    "rate_per_sec must be above 0 and burst at least 1".into(),
                );
            }
        }
        if let Err(reason) = super::moderation::parse_nets(&self.deny_ips) {
            return invalid("upstream.deny_ips", reason);
        }
        if self.queue_len == 0 {
            return invalid("upstream.queue_len", "must be at least 1".into());
        }
        Ok(())
    }

    /// The word list: inline words and the file's.
    pub fn words(&self) -> Result<Vec<String>, ConfigError> {
        let mut words = self.words.list.clone();
        if let Some(path) = &self.words.path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            words.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .map(String::from),
            );
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        UpstreamConfig::default().validate().unwrap();
        let err = UpstreamConfig {
            deny_ips: vec!["10.0.0.0/33".into()],
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("upstream.deny_ips") && err.contains("10.0.0.0/33"),
            "{err}"
        );
        let mut zero_rate = UpstreamConfig::default();
        zero_rate.room_limit.rate_per_sec = 0.0;
        let err = zero_rate.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.room_limit"), "{err}");
    }

    #[test]
    fn parses_from_toml_with_a_word_file() {
        let dir = std::env::temp_dir().join(format!("danmu-words-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("words.txt");
        std::fs::write(&path, "# blocked\nfoo\n\n  bar  \n").unwrap();
        let text = format!(
            r#"
            enabled = true
            echo_to_room = true
            user_limit = {{ rate_per_sec = 0.5, burst = 2 }}
            deny_uids = [7]
            deny_ips = ["127.0.0.1/32", "::1"]
            [words]
            action = "mask"
            list = ["baz"]
            path = "{}"
            "#,
            path.display()
        );
        let config: UpstreamConfig = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.words.action, WordAction::Mask);
        assert_eq!(config.user_limit.burst, 2);
        assert_eq!(config.room_limit, UpstreamConfig::default().room_limit);
        assert_eq!(config.words().unwrap(), ["baz", "foo", "bar"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(toml::from_str::<UpstreamConfig>("echo = true").is_err());
    }
}
