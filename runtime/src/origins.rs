//! Which browser origins may use a service: the `allowed_origins` key of control (CORS) and of
//! the gateway (the WebSocket upgrade's `Origin`), one list shape for both.
//!
//! An origin is what browsers send in `Origin` (RFC 6454 section 6.1): `scheme://host` with
//! `:port` when it is not the scheme's default, no path, lower case. The list holds such
//! origins, or `*` for any origin. An empty list means the check is off.

/// A validated `allowed_origins` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// Lower-cased entries; `*` matches any origin.
    entries: Vec<String>,
}

/// Why an `allowed_origins` entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`allowed_origins` entry {entry:?}: {reason}")]
pub struct OriginError {
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl AllowedOrigins {
    /// Validates `entries`: each is `*` or `http(s)://host[:port]` without a path, query,
    /// user info or trailing slash (what a browser's `Origin` looks like, so an entry that
    /// could never match is refused at start rather than silently locking browsers out).
    pub fn new<S: AsRef<str>>(entries: &[S]) -> Result<Self, OriginError> {
        let entries = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                check(entry).map_err(|reason| OriginError {
                    entry: entry.to_owned(),
                    reason,
                })?;
                Ok(entry.to_ascii_lowercase())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedOrigins { entries })
    }

    /// Whether the list is empty: no origin check.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a request carrying `Origin: origin` may proceed. True when the list is empty, or
    /// holds `*`, or holds `origin` (compared ASCII case-insensitively: RFC 6454 serializes
    /// scheme and host in lower case, but a hand-written client may not).
    pub fn allows(&self, origin: &str) -> bool {
        self.is_empty()
            || self
                .entries
                .iter()
                .any(|entry| entry == "*" || entry.eq_ignore_ascii_case(origin.trim()))
    }
}

fn check(entry: &str) -> Result<(), &'static str> {
    if entry == "*" {
        return Ok(());
    }
    let rest = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
        .ok_or("must be `*` or start with http:// or https://")?;
    if rest.is_empty() {
        return Err("has no host");
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace()) {
        return Err("must be scheme://host[:port], with no path, query, user or trailing slash");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_origins_or_any() {
        let list = AllowedOrigins::new(&["https://live.example", "http://localhost:8080"]).unwrap();
        assert!(list.allows("https://live.example"));
        assert!(list.allows("HTTPS://Live.Example"));
        assert!(list.allows("http://localhost:8080"));
        assert!(!list.allows("http://live.example"));
        assert!(!list.allows("https://live.example.evil"));
        assert!(!list.allows("https://evil.example"));
        assert!(!list.allows("null"));
        assert!(AllowedOrigins::new(&["*"]).unwrap().allows("null"));
        assert!(AllowedOrigins::default().allows("https://evil.example"));
    }

    #[test]
    fn refuses_entries_no_browser_sends() {
        for entry in [
            "live.example",
            "https://",
            "https://live.example/",
            "https://live.example/path",
            "https://user@live.example",
            "ftp://live.example",
        ] {
            let error = AllowedOrigins::new(&[entry]).unwrap_err();
            assert_eq!(error.entry, entry);
        }
    }
}
