//! Why a connection ends: one reason per close, each with its RFC 6455 close code (section 7.4.1)
//! and its metric label (`danmu_gateway_connections_closed_total{reason}`). The table of codes
//! is `docs/protocol.md`'s "Close codes the gateway sends".

/// Why a connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No AUTH within the auth timeout (WebSocket: no upgrade either).
    AuthTimeout,
    /// AUTH refused with this AUTH_REPLY code (sent before the close).
    AuthFailed(i32),
    /// Nothing heard (no packet of any op) for the heartbeat timeout. WebSocket pings and pongs
    /// do not count: browsers cannot send them, so the packet heartbeat is the liveness signal.
    HeartbeatTimeout,
    /// A frame that does not parse, or an operation not allowed in this state.
    Protocol(String),
    /// A packet or WebSocket message over its limit.
    TooLarge,
    /// A WebSocket text or close reason that is not UTF-8 (RFC 6455 8.1).
    InvalidUtf8,
    /// WebSocket text message: the protocol is binary only.
    TextMessage,
    /// The client went away: a WebSocket Close (answered with a Close first), EOF or a reset.
    PeerClosed,
    /// The client does not read: high priority overflowed its queue, or the socket took no byte
    /// for the write-stall period while data waited.
    SlowConsumer,
    /// Replies the client asked for (pongs, heartbeat and upstream replies) piled up unread
    /// past their bound: a client that floods pings and never reads.
    ReplyBacklog,
    /// The gateway stops and the connection had not joined (nothing to drain).
    Shutdown,
    /// The gateway drains: reconnect elsewhere.
    Drain,
    /// Kept sending upstream danmu while rate limited.
    Flood,
    /// Refused at accept: the gateway holds `max_connections` already.
    Overloaded,
}

impl CloseReason {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::AuthFailed(_) => "auth_failed",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::Protocol(_) => "protocol_error",
            CloseReason::TooLarge => "too_large",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::TextMessage => "text_message",
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ReplyBacklog => "reply_backlog",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Drain => "drain",
            CloseReason::Flood => "flood",
            CloseReason::Overloaded => "max_connections",
        }
    }

    /// RFC 6455 close code sent to WebSocket clients (section 7.4.1).
    pub fn websocket_code(&self) -> u16 {
        match self {
            CloseReason::AuthTimeout | CloseReason::AuthFailed(_) => 1008,
            CloseReason::HeartbeatTimeout => 1001,
            CloseReason::Protocol(_) => 1002,
            CloseReason::TooLarge => 1009,
            CloseReason::InvalidUtf8 => 1007,
            CloseReason::TextMessage => 1003,
            CloseReason::PeerClosed => 1000,
            CloseReason::SlowConsumer | CloseReason::ReplyBacklog => 1008,
            CloseReason::Shutdown => 1001,
            CloseReason::Drain => 1012,
            CloseReason::Flood => 1008,
            CloseReason::Overloaded => 1013,
        }
    }

    /// Short text for the close frame and logs (at most 123 bytes fit a close frame; longer
    /// details are cut by the encoder).
    pub fn detail(&self) -> String {
        match self {
            CloseReason::AuthFailed(code) => format!("auth failed ({code})"),
            CloseReason::Protocol(what) => what.clone(),
            CloseReason::Overloaded => "try again later".into(),
            other => other.label().replace('_', " "),
        }
    }
}
