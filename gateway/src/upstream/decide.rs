//! The decision on one UPSTREAM request, as plain code with an explicit clock: deny lists, rate
//! limits, body checks and the word filter, in that order.
//!
//! Order matters: the deny lists cost nothing and refuse without spending tokens; the user's
//! limit comes before parsing, so a flood of bad bodies is rate limited like any other; the
//! room's limit is spent only by what would reach the room.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use danmu_proto::upstream::{UpstreamRequest, code};

use super::config::UpstreamConfig;
use super::limits::Buckets;
use super::moderation::{DenyList, Filtered, WordFilter, parse_nets};
use crate::error::ConfigError;

/// One UPSTREAM request and who sent it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub uid: u64,
    pub room: u64,
    pub ip: IpAddr,
    pub body: &'a [u8],
}

/// The outcome of a request: its reply code and metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forward as sent.
    Ok(UpstreamRequest),
    /// Forward with blocked words masked (`msg` is the masked text).
    Masked(UpstreamRequest),
    /// `flood`: the user was refused `flood_close_after` times in a row; close the connection.
    RateLimited {
        retry_after: Duration,
        flood: bool,
    },
    DeniedUser,
    DeniedIp,
    BlockedWord,
    BadRequest,
    TooLong {
        max_chars: usize,
    },
    Disabled,
    /// Accepted, but the queue to NATS is full (decided by the caller, not here).
    Unavailable {
        retry_after: Duration,
    },
}

impl Outcome {
    /// Every label, as in `danmu_gateway_upstream_total{result}`.
    pub const LABELS: [&'static str; 10] = crate::stats::UPSTREAM_RESULTS;

    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// Position in [`Outcome::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Outcome::Ok(_) => 0,
            Outcome::Masked(_) => 1,
            Outcome::RateLimited { .. } => 2,
            Outcome::DeniedUser => 3,
            Outcome::DeniedIp => 4,
            Outcome::BlockedWord => 5,
            Outcome::BadRequest => 6,
            Outcome::TooLong { .. } => 7,
            Outcome::Disabled => 8,
            Outcome::Unavailable { .. } => 9,
        }
    }

    pub fn code(&self) -> i32 {
        match self {
            Outcome::Ok(_) => code::OK,
            Outcome::Masked(_) => code::MASKED,
            Outcome::RateLimited { .. } => code::RATE_LIMITED,
            Outcome::DeniedUser => code::USER_DENIED,
            Outcome::DeniedIp => code::IP_DENIED,
            Outcome::BlockedWord => code::BLOCKED_WORD,
            Outcome::BadRequest => code::BAD_REQUEST,
            Outcome::TooLong { .. } => code::TOO_LONG,
            Outcome::Disabled => code::DISABLED,
            Outcome::Unavailable { .. } => code::UNAVAILABLE,
        }
    }
}

/// The rules of one gateway, shared by its connections. Only the buckets change, each behind
/// its own lock, held for a hash lookup.
#[derive(Debug)]
pub struct Moderator {
    enabled: bool,
    max_chars: usize,
    flood_close_after: u32,
    deny: DenyList,
    words: WordFilter,
    users: Mutex<Buckets<u64>>,
    rooms: Mutex<Buckets<u64>>,
}

impl Moderator {
    /// Builds the rules; reads the word file if one is configured.
    pub fn new(config: &UpstreamConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let nets = parse_nets(&config.deny_ips).map_err(|reason| ConfigError::Invalid {
            key: "upstream.deny_ips",
            reason,
        })?;
        let words = WordFilter::new(&config.words()?, config.words.action).map_err(|e| {
            ConfigError::Invalid {
                key: "upstream.words",
                reason: e.to_string(),
            }
        })?;
        Ok(Moderator {
            enabled: config.enabled,
            max_chars: config.max_msg_chars,
            flood_close_after: config.flood_close_after,
            deny: DenyList::new(&config.deny_uids, nets),
            words,
            users: Mutex::new(Buckets::new(config.user_limit, now)),
            rooms: Mutex::new(Buckets::new(config.room_limit, now)),
        })
    }

    pub fn decide(&self, request: &Request, now: Instant) -> Outcome {
        if !self.enabled {
            return Outcome::Disabled;
        }
        if self.deny.denies_ip(request.ip) {
            return Outcome::DeniedIp;
        }
        if self.deny.denies_uid(request.uid) {
            return Outcome::DeniedUser;
        }
        if let Err(refused) = lock(&self.users).take(request.uid, now) {
            return Outcome::RateLimited {
                retry_after: refused.retry_after,
                flood: self.flood_close_after > 0 && refused.in_a_row >= self.flood_close_after,
            };
        }
        let mut parsed = match UpstreamRequest::parse(request.body, self.max_chars) {
            Ok(parsed) => parsed,
            Err(danmu_proto::upstream::RequestError::TooLong { max, .. }) => {
                return Outcome::TooLong { max_chars: max };
            }
            Err(_) => return Outcome::BadRequest,
        };
        let masked = match self.words.check(&parsed.msg) {
            Filtered::Blocked => return Outcome::BlockedWord,
            Filtered::Clean => false,
            Filtered::Masked(text) => {
                parsed.msg = text;
                true
            }
        };
        if let Err(refused) = lock(&self.rooms).take(request.room, now) {
            // The room is busy, not the user: the user's token is not spent.
            lock(&self.users).give_back(request.uid);
            return Outcome::RateLimited {
                retry_after: refused.retry_after,
                flood: false,
            };
        }
        if masked {
            Outcome::Masked(parsed)
        } else {
            Outcome::Ok(parsed)
        }
    }
}

/// A panic elsewhere while holding the lock leaves buckets that are still consistent numbers.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::super::config::{RateLimit, WordAction};
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn config() -> UpstreamConfig {
        let mut config = UpstreamConfig {
            user_limit: RateLimit {
                rate_per_sec: 1.0,
                burst: 2,
            },
            room_limit: RateLimit {
                rate_per_sec: 1.0,
                burst: 3,
            },
            flood_close_after: 3,
            deny_uids: vec![666],
            deny_ips: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        config.words.list = vec!["spam".into()];
        config
    }

    fn ask(moderator: &Moderator, uid: u64, room: u64, body: &str, now: Instant) -> Outcome {
        let request = Request {
            uid,
            room,
            ip: LOCAL,
            body: body.as_bytes(),
        };
        moderator.decide(&request, now)
    }

    fn hello() -> UpstreamRequest {
        UpstreamRequest {
            msg: "hello".into(),
            color: 0xFF_FFFF,
            mode: 1,
        }
    }

    const HELLO: &str = r#"{"msg":"hello"}"#;

    #[test]
    fn a_clean_danmu_passes_with_its_fields() {
        let t0 = Instant::now();
        let moderator = Moderator::new(&config(), t0).unwrap();
        let outcome = ask(
            &moderator,
            1,
            9,
            r#"{"msg":"hi there","color":255,"mode":5}"#,
            t0,
        );
        let expected = UpstreamRequest {
            msg: "hi there".into(),
            color: 255,
            mode: 5,
        };
        assert_eq!(outcome, Outcome::Ok(expected));
        assert_eq!((outcome.code(), outcome.label()), (0, "ok"));
    }

    #[test]
    fn the_user_limit_refuses_with_a_retry_hint_then_closes_a_flood() {
        let t0 = Instant::now();
        let moderator = Moderator::new(&config(), t0).unwrap();
        assert_eq!(ask(&moderator, 1, 9, HELLO, t0), Outcome::Ok(hello()));
        // Bad bodies spend tokens too: a flood of them is limited like any other.
        assert_eq!(ask(&moderator, 1, 9, "{not json", t0), Outcome::BadRequest);
        let limited = ask(&moderator, 1, 9, HELLO, t0);
        assert_eq!(
            limited,
            Outcome::RateLimited {
                retry_after: Duration::from_secs(1),
                flood: false
            }
        );
        assert_eq!((limited.code(), limited.label()), (-201, "rate_limited"));
        assert!(matches!(
            ask(&moderator, 1, 9, "{not json", t0),
            Outcome::RateLimited { flood: false, .. }
        ));
        assert!(matches!(
            ask(&moderator, 1, 9, HELLO, t0),
            Outcome::RateLimited { flood: true, .. }
        ));
        // Other users are not affected; the user recovers at the rate.
        assert_eq!(ask(&moderator, 2, 9, HELLO, t0), Outcome::Ok(hello()));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(ask(&moderator, 1, 9, HELLO, later), Outcome::Ok(hello()));
    }

    #[test]
    fn the_room_limit_refuses_without_spending_the_users_token() {
        let t0 = Instant::now();
        let moderator = Moderator::new(&config(), t0).unwrap();
        for uid in 1..=3 {
            assert_eq!(ask(&moderator, uid, 9, HELLO, t0), Outcome::Ok(hello()));
        }
        let limited = ask(&moderator, 4, 9, HELLO, t0);
        assert!(matches!(limited, Outcome::RateLimited { flood: false, .. }));
        // Another room has its own bucket, and user 4 still has both tokens.
        assert_eq!(ask(&moderator, 4, 10, HELLO, t0), Outcome::Ok(hello()));
        assert_eq!(ask(&moderator, 4, 10, HELLO, t0), Outcome::Ok(hello()));
        // Refused bodies never reach the room's bucket.
        let t1 = t0 + Duration::from_secs(3);
        for uid in 20..25 {
            assert_eq!(ask(&moderator, uid, 9, "[]", t1), Outcome::BadRequest);
        }
        assert_eq!(ask(&moderator, 30, 9, HELLO, t1), Outcome::Ok(hello()));
    }

    #[test]
    fn deny_lists_refuse_before_anything_else() {
        let t0 = Instant::now();
        let moderator = Moderator::new(&config(), t0).unwrap();
        for _ in 0..5 {
            let outcome = ask(&moderator, 666, 9, HELLO, t0);
            assert_eq!((outcome.code(), outcome.label()), (-202, "denied_user"));
        }
        let from_denied_ip = Request {
            uid: 1,
            room: 9,
            ip: "10.9.8.7".parse().unwrap(),
            body: HELLO.as_bytes(),
        };
        let outcome = moderator.decide(&from_denied_ip, t0);
        assert_eq!((outcome.code(), outcome.label()), (-203, "denied_ip"));
        // Neither spent user 1's tokens.
        assert_eq!(ask(&moderator, 1, 9, HELLO, t0), Outcome::Ok(hello()));
        assert_eq!(ask(&moderator, 1, 9, HELLO, t0), Outcome::Ok(hello()));
    }

    #[test]
    fn blocked_words_are_rejected_or_masked() {
        let t0 = Instant::now();
        let moderator = Moderator::new(&config(), t0).unwrap();
        let outcome = ask(&moderator, 1, 9, r#"{"msg":"buy SPAM"}"#, t0);
        assert_eq!((outcome.code(), outcome.label()), (-204, "blocked_word"));

        let mut masking = config();
        masking.words.action = WordAction::Mask;
        let moderator = Moderator::new(&masking, t0).unwrap();
        let outcome = ask(&moderator, 1, 9, r#"{"msg":"buy SPAM"}"#, t0);
        let expected = UpstreamRequest {
            msg: "buy ****".into(),
            ..hello()
        };
        assert_eq!((outcome.code(), outcome.label()), (1, "masked"));
        assert_eq!(outcome, Outcome::Masked(expected));
    }

    #[test]
    fn too_long_and_disabled() {
        let t0 = Instant::now();
        let moderator = Moderator::new(
            &UpstreamConfig {
                max_msg_chars: 3,
                ..config()
            },
            t0,
        )
        .unwrap();
        let outcome = ask(&moderator, 1, 9, r#"{"msg":"four"}"#, t0);
        assert_eq!(outcome, Outcome::TooLong { max_chars: 3 });
        assert_eq!((outcome.code(), outcome.label()), (-206, "too_long"));

        let off = Moderator::new(
            &UpstreamConfig {
                enabled: false,
                ..config()
            },
            t0,
        )
        .unwrap();
        let outcome = ask(&off, 1, 9, HELLO, t0);
        assert_eq!((outcome.code(), outcome.label()), (-207, "disabled"));
    }
}
