//! RFC 6455 WebSocket as plain code over bytes, for both roles: the gateway is the server, tests
//! and the load tool are clients.
//!
//! We do not use tungstenite: the gateway frames each batch once ([`server_binary`]) and writes
//! the same bytes to every WebSocket member, and an idle [`Decoder`] holds no allocation.
//! No extension is ever negotiated (permessage-deflate is declined: batches are already
//! compressed once, and per-connection deflate state would cost memory and CPU per member).

mod decoder;
mod encode;
mod handshake;
mod mask;

use bytes::Bytes;

pub use decoder::{Decoder, WsError};
pub use encode::{
    client_frame, close_frame, encode_frame, frame_header, server_binary, server_frame,
};
pub use handshake::{
    HandshakeError, UpgradeRequest, accept_key, accept_response, accept_response_with_protocol,
    client_key, client_request, error_response, parse_response, parse_upgrade_request,
};
pub use mask::apply_mask;

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continues a fragmented text or binary message.
    pub const CONTINUATION: u8 = 0;
    /// UTF-8 text message (we close these with 1003 on the gateway: the protocol is binary).
    pub const TEXT: u8 = 1;
    /// Binary message: carries GOIM packets.
    pub const BINARY: u8 = 2;
    /// Close, optionally with a code and a UTF-8 reason.
    pub const CLOSE: u8 = 8;
    /// Ping; answer with a pong carrying the same payload.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// Which end of the connection we are: decides who masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Receives unmasked frames, sends masked ones.
    Client,
}

/// A whole message (fragments reassembled) or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Binary data.
    Binary(Bytes),
    /// Text data, already checked to be UTF-8.
    Text(Bytes),
    /// Ping payload (at most 125 bytes).
    Ping(Bytes),
    /// Pong payload (at most 125 bytes).
    Pong(Bytes),
    /// Close with its status code and reason, or `None` for an empty close payload.
    Close(Option<(u16, String)>),
}

/// Close codes we send (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Going away: the gateway is draining or shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data type we do not accept (text messages: the protocol is binary).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Text or close reason that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (e.g. authentication failed, flood).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Message larger than we accept.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Unexpected server condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Service restart: reconnect (possibly elsewhere).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Try again later (overloaded).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
