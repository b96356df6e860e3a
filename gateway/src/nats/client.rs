//! A NATS subscriber as a state machine without IO or clock: the link (`link.rs`) feeds it
//! bytes, transport events and `now`, and drains what it wants done ([`Client::poll_event`],
//! [`Client::poll_transmit`], [`Client::poll_timeout`]). Every policy lives here, so tests
//! drive it with bytes and an explicit clock:
//!
//! - Connecting: `INFO` → TLS if the URL (`tls://`), the options or the server
//!   (`tls_required`) ask for it → `CONNECT` with the credentials (user/password or token from
//!   the URL; nkey or JWT with the server's `nonce` signed) and a `PING` → the `PONG` means the
//!   server took us: every live subscription is sent then, once, and the backoff resets.
//! - Server errors (`-ERR`) are events. Only those nats-server closes the connection after
//!   (docs.nats.io "Client Protocol", `-ERR`: authorization, stale connection, slow consumer,
//!   parser and limit errors) end the link; a permissions violation on one subject, an invalid
//!   subject or a subscription limit only concern that subject, and the link keeps going.
//! - `INFO` updates: `connect_urls` join the server pool, `max_payload` bounds what is read,
//!   `ldm` (lame-duck mode: the server will close soon) moves the link to another server at
//!   once when the pool has one.
//! - A `PING` every `ping_interval`; `max_pings_out` unanswered in a row and the link is stale.
//! - Reconnecting: the first attempt at once, then exponential backoff with jitter (half to all
//!   of the step), reset by a connection the server took; the server list is shuffled once and
//!   then tried in turn.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use rand::SeedableRng as _;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, rngs::StdRng};
use serde::Deserialize;

use super::wire::{self, ServerOp, WireError};

/// One NATS server: where, whether its URL requires TLS (`tls://`; as with every NATS client,
/// TLS starts after the server's plain-text INFO), credentials of its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
}

impl ServerAddr {
    /// `host:port`, as nats-server lists its `connect_urls`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Credentials beyond the URL's: an nkey, or a user JWT with its nkey (a `.creds` file). Both
/// sign the server's `nonce`.
#[derive(Clone, Default)]
pub enum KeyAuth {
    #[default]
    None,
    Nkey(Arc<nkeys::KeyPair>),
    Jwt {
        jwt: String,
        key: Arc<nkeys::KeyPair>,
    },
}

impl std::fmt::Debug for KeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyAuth::None => f.write_str("None"),
            KeyAuth::Nkey(key) => write!(f, "Nkey({})", key.public_key()),
            KeyAuth::Jwt { key, .. } => write!(f, "Jwt({})", key.public_key()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The connection's name in the server's monitoring (`/connz`).
    pub name: String,
    pub auth: KeyAuth,
    /// TLS on every server even if its URL says `nats://` and its INFO does not ask for it.
    pub require_tls: bool,
    pub ping_interval: Duration,
    /// Unanswered PINGs after which the link is stale.
    pub max_pings_out: u32,
    /// From the transport being open to the server's PONG to our CONNECT.
    pub handshake_timeout: Duration,
    /// The second attempt waits about this long; each further one twice the last.
    pub reconnect_base: Duration,
    pub reconnect_max: Duration,
}

impl Options {
    pub fn new(name: impl Into<String>) -> Options {
        Options {
            name: name.into(),
            auth: KeyAuth::None,
            require_tls: false,
            ping_interval: Duration::from_secs(20),
            max_pings_out: 2,
            handshake_timeout: Duration::from_secs(5),
            reconnect_base: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// nats-server's default `max_payload`, used until the server says otherwise.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// What kind of `-ERR` the server sent (matched on nats-server's texts, case-insensitively).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Permissions Violation for Subscription to ...` or `... for Publish to ...`.
    Permissions,
    InvalidSubject,
    /// `maximum subscriptions exceeded`.
    MaxSubscriptions,
    /// `Authorization Violation`, `Authentication Timeout`, `... Expired`, `... Revoked`.
    Auth,
    StaleConnection,
    SlowConsumer,
    MaxPayload,
    MaxConnections,
    /// The server could not parse what we sent, or any text we do not know.
    Other,
}

impl ErrorKind {
    pub fn classify(message: &str) -> ErrorKind {
        let m = message.to_ascii_lowercase();
        if m.starts_with("permissions violation") {
            ErrorKind::Permissions
        } else if m.starts_with("invalid subject") {
            ErrorKind::InvalidSubject
        } else if m.starts_with("maximum subscriptions exceeded") {
            ErrorKind::MaxSubscriptions
        } else if m.starts_with("authorization violation")
            || m.starts_with("authentication")
            || m.starts_with("user authentication")
            || m.starts_with("account authentication")
        {
            ErrorKind::Auth
        } else if m.starts_with("stale connection") {
            ErrorKind::StaleConnection
        } else if m.starts_with("slow consumer") {
            ErrorKind::SlowConsumer
        } else if m.starts_with("maximum payload") {
            ErrorKind::MaxPayload
        } else if m.starts_with("maximum connections exceeded")
            || m.starts_with("maximum account active connections")
        {
            ErrorKind::MaxConnections
        } else {
            ErrorKind::Other
        }
    }

    /// Whether nats-server closes the connection after sending it. Unknown texts count as
    /// closing: if the server meant to keep us, a reconnect costs a moment; if it closes and we
    /// wait, we wait for a dead socket.
    pub fn closes(self) -> bool {
        !matches!(
            self,
            ErrorKind::Permissions | ErrorKind::InvalidSubject | ErrorKind::MaxSubscriptions
        )
    }

    /// The `kind` label of `danmu_gateway_nats_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Permissions => "permissions",
            ErrorKind::InvalidSubject => "invalid_subject",
            ErrorKind::MaxSubscriptions => "max_subscriptions",
            ErrorKind::Auth => "auth",
            ErrorKind::StaleConnection => "stale_connection",
            ErrorKind::SlowConsumer => "slow_consumer",
            ErrorKind::MaxPayload => "max_payload",
            ErrorKind::MaxConnections => "max_connections",
            ErrorKind::Other => "other",
        }
    }
}

/// Why the client gives a connection up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Disconnect {
    #[error("server error: {message}")]
    ServerError { kind: ErrorKind, message: String },
    #[error("no PONG to {0} PINGs")]
    Stale(u32),
    #[error("the server is in lame-duck mode; moving to another server")]
    LameDuck,
    #[error("protocol error: {0}")]
    Protocol(#[from] WireError),
    #[error("bad INFO: {0}")]
    BadInfo(String),
    #[error("expected INFO first, got {0}")]
    NoInfo(String),
    #[error("TLS is required but the server does not offer it")]
    TlsUnavailable,
    #[error("handshake not done within {0:?}")]
    HandshakeTimeout(Duration),
    /// Reported by the link: the transport ended or failed (EOF, IO or TLS error, refused).
    #[error("{0}")]
    Transport(String),
}

/// What the link must do or know.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Open a transport to this server, then call [`Client::handle_open`] (or
    /// [`Client::handle_closed`] if that fails).
    Connect(ServerAddr),
    /// Start TLS on the open transport for server name `host`, then call
    /// [`Client::handle_tls`] (or [`Client::handle_closed`]).
    StartTls { host: String },
    /// The server took the connection; subscriptions are on their way.
    Connected { server: String },
    /// Drop the transport; the client reconnects on its own schedule.
    Close(Disconnect),
    /// A `-ERR` that does not end the connection (closing ones come as `Close`).
    ServerError { kind: ErrorKind, message: String },
    Message {
        sid: u64,
        reply: Option<String>,
        payload: Bytes,
    },
}

/// The server's INFO, the fields we act on (docs.nats.io "Client Protocol", INFO).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Info {
    max_payload: Option<usize>,
    tls_required: bool,
    tls_available: bool,
    nonce: Option<String>,
    connect_urls: Vec<String>,
    ldm: bool,
}

#[derive(Debug)]
enum State {
    /// The next attempt is due at `at`.
    Waiting {
        at: Instant,
    },
    /// A transport is being opened or handshaken; given up at `deadline`.
    Handshake {
        step: Step,
        deadline: Instant,
    },
    Connected {
        next_ping: Instant,
        pings_out: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Opening,
    Info,
    Tls,
    Pong,
}

/// What a subscription is for. The client asks it for its subject whenever it (re)subscribes,
/// so no subject string is stored per subscription: the gateway keeps two subscriptions per
/// connected user (one per priority link), and the strings were ~0.1 KiB per idle connection.
pub trait Subscription {
    /// The NATS subject to subscribe to.
    fn subject(&self) -> String;
}

/// A subscription that is its own subject (tests, tools).
impl Subscription for &'static str {
    fn subject(&self) -> String {
        (*self).to_owned()
    }
}

/// The subscriber state machine; `T` is what the caller keeps per subscription.
pub struct Client<T> {
    options: Options,
    pool: Vec<ServerAddr>,
    /// Index in `pool` of the server of the current (or last) attempt.
    current: usize,
    state: State,
    /// Attempts since the last connection the server took.
    attempts: u32,
    tls: bool,
    max_payload: usize,
    /// The `nonce` of the current server's INFO, signed by nkey and JWT credentials.
    nonce: Option<String>,
    read: BytesMut,
    write: BytesMut,
    events: VecDeque<Event>,
    subscriptions: HashMap<u64, T>,
    rng: StdRng,
}

impl<T: Subscription> Client<T> {
    /// A client that wants to connect at once. `servers` must not be empty; `seed` drives the
    /// shuffle and the jitter.
    pub fn new(options: Options, mut servers: Vec<ServerAddr>, seed: u64, now: Instant) -> Self {
        assert!(!servers.is_empty(), "at least one NATS server");
        let mut rng = StdRng::seed_from_u64(seed);
        servers.shuffle(&mut rng);
        let current = servers.len() - 1;
        Client {
            options,
            pool: servers,
            current,
            state: State::Waiting { at: now },
            attempts: 0,
            tls: false,
            max_payload: DEFAULT_MAX_PAYLOAD,
            nonce: None,
            read: BytesMut::new(),
            write: BytesMut::new(),
            events: VecDeque::new(),
            subscriptions: HashMap::new(),
            rng,
        }
    }

    /// Adds a subscription to `value.subject()`; sent now if connected, else with the others
    /// once connected.
    pub fn subscribe(&mut self, sid: u64, value: T) {
        if self.is_connected() {
            self.write
                .extend_from_slice(&wire::sub(&value.subject(), sid));
        }
        self.subscriptions.insert(sid, value);
    }

    pub fn unsubscribe(&mut self, sid: u64) {
        if self.subscriptions.remove(&sid).is_some() && self.is_connected() {
            self.write.extend_from_slice(&wire::unsub(sid));
        }
    }

    pub fn subscription(&self, sid: u64) -> Option<&T> {
        self.subscriptions.get(&sid)
    }

    /// Answers a request with an empty message; dropped when not connected (the requester's
    /// wait times out, as for any lost reply).
    pub fn reply_empty(&mut self, subject: &str) {
        if self.is_connected() {
            self.write.extend_from_slice(&wire::empty_pub(subject));
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected { .. })
    }

    /// The server's `max_payload` (or nats-server's default before its INFO).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Every server known, configured and discovered.
    pub fn servers(&self) -> &[ServerAddr] {
        &self.pool
    }

    /// The one deadline the link must wake up at.
    pub fn poll_timeout(&self) -> Instant {
        match self.state {
            State::Waiting { at } => at,
            State::Handshake { deadline, .. } => deadline,
            State::Connected { next_ping, .. } => next_ping,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Waiting { at } if now >= at => {
                self.current = (self.current + 1) % self.pool.len();
                self.attempts = self.attempts.saturating_add(1);
                self.tls = false;
                self.read.clear();
                self.write.clear();
                self.state = State::Handshake {
                    step: Step::Opening,
                    deadline: now + self.options.handshake_timeout,
                };
                self.events
                    .push_back(Event::Connect(self.pool[self.current].clone()));
            }
            State::Handshake { deadline, .. } if now >= deadline => {
                self.close(
                    now,
                    Disconnect::HandshakeTimeout(self.options.handshake_timeout),
                );
            }
            State::Connected {
                next_ping,
                pings_out,
            } if now >= next_ping => {
                if pings_out >= self.options.max_pings_out {
                    return self.close(now, Disconnect::Stale(pings_out));
                }
                self.write.extend_from_slice(wire::PING);
                self.state = State::Connected {
                    next_ping: now + self.options.ping_interval,
                    pings_out: pings_out + 1,
                };
            }
            _ => {}
        }
    }

    /// The transport asked for by [`Event::Connect`] is open; the server speaks first (INFO).
    pub fn handle_open(&mut self, _now: Instant) {
        if let State::Handshake { step, .. } = &mut self.state
            && *step == Step::Opening
        {
            *step = Step::Info;
        }
    }

    /// TLS is up on the transport (asked for after INFO by [`Event::StartTls`]).
    pub fn handle_tls(&mut self, _now: Instant) {
        if let State::Handshake { step, .. } = &mut self.state
            && *step == Step::Tls
        {
            self.tls = true;
            self.send_connect();
        }
    }

    /// The transport failed or ended (refused, EOF, IO or TLS error): reconnect on schedule.
    pub fn handle_closed(&mut self, now: Instant, reason: String) {
        if !matches!(self.state, State::Waiting { .. }) {
            self.schedule_reconnect(now, false);
            tracing::debug!(%reason, "NATS transport closed");
        }
    }

    /// Bytes read from the transport.
    pub fn handle_read(&mut self, bytes: &[u8], now: Instant) {
        if matches!(self.state, State::Waiting { .. }) {
            return;
        }
        self.read.extend_from_slice(bytes);
        loop {
            let op = match wire::parse(&mut self.read, self.max_payload) {
                Ok(Some(op)) => op,
                Ok(None) => break,
                Err(error) => return self.close(now, error.into()),
            };
            self.handle_op(op, now);
            if matches!(self.state, State::Waiting { .. }) {
                return;
            }
        }
        // A burst may have grown the buffer; give the memory back once it is drained.
        if self.read.is_empty() && self.read.capacity() > 1024 * 1024 {
            self.read = BytesMut::new();
        }
    }

    fn handle_op(&mut self, op: ServerOp, now: Instant) {
        let step = match self.state {
            State::Handshake { step, .. } => Some(step),
            _ => None,
        };
        match op {
            ServerOp::Info(json) => self.handle_info(&json, step == Some(Step::Info), now),
            _ if step == Some(Step::Info) => {
                self.close(now, Disconnect::NoInfo(format!("{op:?}")));
            }
            ServerOp::Msg {
                sid,
                reply,
                payload,
            } => self.events.push_back(Event::Message {
                sid,
                reply,
                payload,
            }),
            ServerOp::Ping => self.write.extend_from_slice(wire::PONG),
            ServerOp::Pong => match &mut self.state {
                State::Handshake { .. } if step == Some(Step::Pong) => {
                    self.attempts = 0;
                    self.state = State::Connected {
                        next_ping: now + self.options.ping_interval,
                        pings_out: 0,
                    };
                    for (sid, value) in &self.subscriptions {
                        self.write
                            .extend_from_slice(&wire::sub(&value.subject(), *sid));
                    }
                    self.events.push_back(Event::Connected {
                        server: self.pool[self.current].addr(),
                    });
                }
                State::Connected { pings_out, .. } => *pings_out = 0,
                _ => {}
            },
            ServerOp::Ok => {}
            ServerOp::Err(message) => {
                let kind = ErrorKind::classify(&message);
                if kind.closes() {
                    self.close(now, Disconnect::ServerError { kind, message });
                } else {
                    self.events.push_back(Event::ServerError { kind, message });
                }
            }
        }
    }

    fn handle_info(&mut self, json: &[u8], first: bool, now: Instant) {
        let info: Info = match serde_json::from_slice(json) {
            Ok(info) => info,
            Err(error) => return self.close(now, Disconnect::BadInfo(error.to_string())),
        };
        if let Some(max) = info.max_payload.filter(|&m| m > 0) {
            self.max_payload = max;
        }
        let template = self.pool[self.current].clone();
        for url in &info.connect_urls {
            let Some((host, port)) = url
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse().ok()?)))
            else {
                continue;
            };
            if !self.pool.iter().any(|s| s.host == host && s.port == port) {
                self.pool.push(ServerAddr {
                    host: host.to_owned(),
                    port,
                    ..template.clone()
                });
            }
        }
        if first {
            let want_tls = self.options.require_tls || info.tls_required || template.tls;
            if want_tls && !self.tls {
                if !(info.tls_required || info.tls_available) {
                    return self.close(now, Disconnect::TlsUnavailable);
                }
                self.state = State::Handshake {
                    step: Step::Tls,
                    deadline: self.poll_timeout(),
                };
                self.events.push_back(Event::StartTls {
                    host: template.host,
                });
                self.nonce = info.nonce;
                return;
            }
            self.nonce = info.nonce;
            self.send_connect();
        } else if info.ldm && self.pool.len() > 1 {
            // Lame duck: this server closes soon; not a failure, so the next one is tried now.
            self.close_with(now, Disconnect::LameDuck, true);
        }
    }
}

impl<T: Subscription> Client<T> {
    /// The next thing the link must do or know.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the transport, all that is pending.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.write.is_empty()).then(|| self.write.split().freeze())
    }

    fn send_connect(&mut self) {
        let options = self.connect_options();
        self.write.extend_from_slice(&wire::connect(&options));
        if let State::Handshake { step, .. } = &mut self.state {
            *step = Step::Pong;
        }
    }

    /// The CONNECT object: no echo, no verbose acks, headers on; credentials of the server's URL
    /// (user and password, or token) and the nkey or JWT with the nonce signed (`sig`,
    /// base64url without padding, of the nonce's bytes).
    pub fn connect_options(&self) -> serde_json::Value {
        let server = &self.pool[self.current];
        let mut options = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "lang": "rust-danmu",
            "version": env!("CARGO_PKG_VERSION"),
            "protocol": 1,
            "headers": true,
            "no_responders": true,
            "echo": false,
            "tls_required": self.tls,
            "name": self.options.name,
        });
        if let (Some(user), Some(pass)) = (&server.user, &server.pass) {
            options["user"] = user.as_str().into();
            options["pass"] = pass.as_str().into();
        }
        if let Some(token) = &server.token {
            options["auth_token"] = token.as_str().into();
        }
        let sign = |key: &nkeys::KeyPair| {
            let nonce = self.nonce.as_deref()?;
            // Signing with a seed-holding key pair cannot fail; a public-only one is refused at
            // configuration.
            let sig = key.sign(nonce.as_bytes()).ok()?;
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
        };
        match &self.options.auth {
            KeyAuth::None => {}
            KeyAuth::Nkey(key) => {
                options["nkey"] = key.public_key().into();
                if let Some(sig) = sign(key) {
                    options["sig"] = sig.into();
                }
            }
            KeyAuth::Jwt { jwt, key } => {
                options["jwt"] = jwt.as_str().into();
                if let Some(sig) = sign(key) {
                    options["sig"] = sig.into();
                }
            }
        }
        options
    }

    /// Gives the connection up and tells the link to drop it.
    fn close(&mut self, now: Instant, reason: Disconnect) {
        self.close_with(now, reason, false);
    }

    fn close_with(&mut self, now: Instant, reason: Disconnect, at_once: bool) {
        self.schedule_reconnect(now, at_once);
        self.events.push_back(Event::Close(reason));
    }

    fn schedule_reconnect(&mut self, now: Instant, at_once: bool) {
        // Zero attempts since a connection the server took: this is the first, at once.
        let delay = if at_once || self.attempts == 0 {
            Duration::ZERO
        } else {
            let step = self
                .options
                .reconnect_base
                .saturating_mul(1 << (self.attempts - 1).min(16))
                .min(self.options.reconnect_max);
            step.mul_f64(self.rng.gen_range(0.5..=1.0))
        };
        self.read.clear();
        self.write.clear();
        self.nonce = None;
        self.state = State::Waiting { at: now + delay };
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
