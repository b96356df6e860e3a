//! Durations in configuration, one format for every service: a string of numbers with units
//! (`"15s"`, `"250ms"`, `"10m"`, `"1h 30m"`, `"1d"`), parsed by `humantime`. A bare number is
//! refused: it would not say whether it means seconds or milliseconds.
//!
//! `#[serde(deserialize_with = "danmu_runtime::config::duration::deserialize")]`.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// What a duration looks like, for error messages.
const EXPECTED: &str = "a duration such as \"15s\", \"250ms\" or \"1h 30m\"";

/// Parses `"15s"`, `"250ms"`, `"1h 30m"`, ...; the error says what was wrong and what is expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("`{text}` is not a duration ({error}); expected {EXPECTED}"))
}

/// Renders a duration in the largest unit that divides it (`"1h"`, `"90s"`, `"1500ms"`), so
/// messages echo what users wrote.
pub fn display(duration: Duration) -> String {
    let ms = duration.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Deserializes a duration string; any other type is refused naming what is expected.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(DurationVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        for text in ["", "42", "5 fortnights", "-5s", "soon"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(&format!("`{text}`")), "{error}");
            assert!(error.contains("\"15s\""), "{error}");
        }
    }

    #[test]
    fn displays_in_the_largest_unit() {
        assert_eq!(display(Duration::from_secs(86_400)), "1d");
        assert_eq!(display(Duration::from_secs(3600)), "1h");
        assert_eq!(display(Duration::from_secs(90)), "90s");
        assert_eq!(display(Duration::from_millis(1500)), "1500ms");
    }
}
