//! The AUTH body a client sends first, and the AUTH_REPLY codes. Field names are the Bilibili
//! ones so existing clients authenticate unchanged; unknown fields are ignored because every
//! client version adds its own.

use serde::{Deserialize, Deserializer, Serialize};

use crate::frame::version;

/// AUTH_REPLY codes. 0 is success; failures are negative, in the range Bilibili clients already
/// treat as "authentication failed", and the connection is closed after the reply.
pub mod code {
    /// Authenticated; messages follow.
    pub const OK: i32 = 0;
    /// The token is missing, malformed, forged or signed by an unknown key.
    pub const TOKEN_INVALID: i32 = -101;
    /// The token's `exp` has passed: fetch a new one from control.
    pub const TOKEN_EXPIRED: i32 = -102;
    /// The token does not allow the requested room.
    pub const ROOM_NOT_ALLOWED: i32 = -103;
    /// The AUTH body is not valid JSON of the expected shape.
    pub const BAD_REQUEST: i32 = -104;
    /// The `uid` in the AUTH body differs from the token's.
    pub const UID_MISMATCH: i32 = -105;
    /// `protover` is not one we can encode (0, 1, 2 or 3).
    pub const UNSUPPORTED_PROTOVER: i32 = -106;
}

/// The JSON body of an AUTH packet, e.g.
/// `{"uid":42,"roomid":1001,"protover":3,"platform":"web","type":2,"key":"<token>","buvid":"..."}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuthRequest {
    /// User id; must match the token's. Some clients send it as a string, which we accept.
    #[serde(deserialize_with = "u64_or_string")]
    pub uid: u64,
    /// Room to enter. Accepted as a number or a numeric string.
    #[serde(deserialize_with = "u64_or_string")]
    pub roomid: u64,
    /// What the client can decode: 0 raw, 2 zlib, 3 brotli (1 is read as raw).
    #[serde(default)]
    pub protover: u16,
    /// Client platform, e.g. `web`; informational.
    #[serde(default)]
    pub platform: String,
    /// Bilibili's connection type (2 for web); informational.
    #[serde(default, rename = "type")]
    pub kind: u32,
    /// The token issued by control.
    pub key: String,
    /// Device id; informational (the token's `dev` is authoritative).
    #[serde(default)]
    pub buvid: String,
    /// Opts in to high reach: high-priority batches then carry a delivery id in the packet's
    /// sequence field, the client answers each with an ACK (op 1006, same sequence), and the
    /// gateway retries what is not acknowledged. Clients that never set it get nothing new.
    #[serde(default)]
    pub ack: bool,
    /// Opts in to DRAIN (op 1001): when the gateway shuts down, the client is told to reconnect
    /// elsewhere before its socket closes. Other clients are just closed (WebSocket code 1012).
    #[serde(default)]
    pub drain: bool,
}

/// The JSON body of AUTH_REPLY.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthReply {
    /// See [`code`].
    pub code: i32,
}

/// Why an AUTH body was rejected; always answered with [`code::BAD_REQUEST`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not JSON, or a required field (`uid`, `roomid`, `key`) is missing or of the wrong type.
    #[error("bad AUTH body: {0}")]
    Json(#[from] serde_json::Error),
}

impl AuthError {
    /// The AUTH_REPLY code for this error.
    pub fn auth_code(&self) -> i32 {
        code::BAD_REQUEST
    }
}

impl AuthRequest {
    /// Parses an AUTH body.
    pub fn parse(body: &[u8]) -> Result<AuthRequest, AuthError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The packet version this client's messages must be sent in, or `None` if its `protover`
    /// is unknown (answer [`code::UNSUPPORTED_PROTOVER`]). Protover 1 means "no compression" to
    /// old Bilibili clients, so it maps to raw.
    pub fn message_version(&self) -> Option<u16> {
        match self.protover {
            0 | 1 => Some(version::RAW),
            2 => Some(version::ZLIB),
            3 => Some(version::BROTLI),
            _ => None,
        }
    }
}

fn u64_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => Ok(n),
        NumOrStr::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}
