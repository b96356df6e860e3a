//! Upstream danmu: the UPSTREAM body a viewer sends (op 1004), the UPSTREAM_REPLY codes and body
//! (op 1005), and the JSON the gateway publishes for business on `danmu.upstream.<room>`.
//! `docs/protocol.md` describes the same for client authors.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, op, version};

/// UPSTREAM_REPLY codes. 0 and 1 mean the danmu was accepted and forwarded; negative codes mean
/// it was not, and the connection stays open (except after a flood, see `docs/protocol.md`).
pub mod code {
    /// Accepted and forwarded as sent.
    pub const OK: i32 = 0;
    /// Accepted and forwarded with blocked words masked (`*` per character); the reply's `msg`
    /// is the text as forwarded.
    pub const MASKED: i32 = 1;
    /// Over the user's or the room's rate; the reply's `retry_after_ms` says when one more fits.
    pub const RATE_LIMITED: i32 = -201;
    /// The user is on the gateway's deny list.
    pub const USER_DENIED: i32 = -202;
    /// The connection's IP address is on the gateway's deny list.
    pub const IP_DENIED: i32 = -203;
    /// The text contains a blocked word (the filter rejects instead of masking).
    pub const BLOCKED_WORD: i32 = -204;
    /// The body is not JSON of the documented shape, `msg` is empty or has control characters,
    /// or `color` / `mode` is out of range.
    pub const BAD_REQUEST: i32 = -205;
    /// `msg` is longer than the gateway's limit; the reply's `max_chars` says how long it may be.
    pub const TOO_LONG: i32 = -206;
    /// Upstream danmu is switched off on this gateway.
    pub const DISABLED: i32 = -207;
    /// The gateway cannot forward right now (its queue to NATS is full); retry after
    /// `retry_after_ms`.
    pub const UNAVAILABLE: i32 = -208;
}

/// White, the colour of a danmu that names none.
pub const DEFAULT_COLOR: u32 = 0xFF_FFFF;
/// Scrolling, the mode of a danmu that names none.
pub const DEFAULT_MODE: u8 = 1;
/// Display modes, as Bilibili numbers them: 1 scrolling, 4 bottom, 5 top.
pub const MODES: [u8; 3] = [1, 4, 5];
/// Font size written into the room's `DANMU_MSG` (Bilibili's default).
pub const FONT_SIZE: u32 = 25;

/// The JSON body of UPSTREAM, e.g. `{"msg":"hello","color":16777215,"mode":1}`. Unknown fields
/// are ignored.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The text, UTF-8 (JSON strings always are).
    pub msg: String,
    /// 0xRRGGBB; default white.
    #[serde(default = "default_color")]
    pub color: u32,
    /// One of [`MODES`]; default 1 (scrolling).
    #[serde(default = "default_mode")]
    pub mode: u8,
}

fn default_color() -> u32 {
    DEFAULT_COLOR
}

fn default_mode() -> u8 {
    DEFAULT_MODE
}

/// Why an UPSTREAM body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, or `msg` missing, or a field of the wrong type.
    #[error("bad UPSTREAM body: {0}")]
    Json(#[from] serde_json::Error),
    /// `msg` is empty or only whitespace.
    #[error("empty msg")]
    Empty,
    /// `msg` holds a control character (danmu are one line).
    #[error("control character in msg")]
    ControlCharacter,
    /// `color` above 0xFFFFFF.
    #[error("color {0} is not 0xRRGGBB")]
    Color(u32),
    /// `mode` not one of [`MODES`].
    #[error("mode {0} is not 1, 4 or 5")]
    Mode(u8),
    /// `msg` has more characters than allowed.
    #[error("msg has {chars} characters, at most {max} allowed")]
    TooLong {
        /// Characters (Unicode scalar values) in `msg`.
        chars: usize,
        /// The gateway's limit.
        max: usize,
    },
}

impl RequestError {
    /// The UPSTREAM_REPLY code for this error.
    pub fn code(&self) -> i32 {
        match self {
            RequestError::TooLong { .. } => code::TOO_LONG,
            _ => code::BAD_REQUEST,
        }
    }
}

impl UpstreamRequest {
    /// Parses and checks a body; `msg` may hold at most `max_chars` characters.
    pub fn parse(body: &[u8], max_chars: usize) -> Result<Self, RequestError> {
        let request: UpstreamRequest = serde_json::from_slice(body)?;
        if request.msg.trim().is_empty() {
            return Err(RequestError::Empty);
        }
        if request.msg.chars().any(char::is_control) {
            return Err(RequestError::ControlCharacter);
        }
        if request.color > DEFAULT_COLOR {
            return Err(RequestError::Color(request.color));
        }
        if !MODES.contains(&request.mode) {
            return Err(RequestError::Mode(request.mode));
        }
        let chars = request.msg.chars().count();
        if chars > max_chars {
            return Err(RequestError::TooLong {
                chars,
                max: max_chars,
            });
        }
        Ok(request)
    }
}

/// The JSON body of UPSTREAM_REPLY: `code` always, the other fields when they apply.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamReply {
    /// See [`code`].
    pub code: i32,
    /// Codes 0 and 1: the message id (also its `Nats-Msg-Id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Code 1: the text as forwarded, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Codes -201 and -208: milliseconds until a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Code -206: the longest `msg` accepted, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
}

impl UpstreamReply {
    /// UPSTREAM_REPLY: version 1, op 1005, the request's sequence, this JSON body.
    pub fn to_frame(&self, seq: u32) -> Bytes {
        let body = serde_json::to_vec(self).expect("a reply always serializes");
        Frame::new(version::CONTROL, op::UPSTREAM_REPLY, seq, body).to_bytes()
    }
}

/// Header names of what the gateway publishes on `danmu.upstream.<room>`, besides
/// `Nats-Msg-Id` (the message id).
pub mod header {
    /// The sender's uid.
    pub const UID: &str = "Danmu-Uid";
    /// The room the sender is in.
    pub const ROOM: &str = "Danmu-Room";
    /// The sender's IP address as the gateway saw it.
    pub const IP: &str = "Danmu-Ip";
    /// The node id of the gateway that accepted it.
    pub const GATEWAY: &str = "Danmu-Gateway";
}

/// What business receives on `danmu.upstream.<room>`: one accepted danmu, as JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDanmu {
    /// Always `DANMU_MSG`.
    pub cmd: String,
    /// Unique per message; also the `Nats-Msg-Id` header and the reply's `id`.
    pub id: String,
    /// The sender, from its token.
    pub uid: u64,
    /// The sender's device, from its token (or AUTH's `buvid`).
    pub device: String,
    /// The room the sender is in.
    pub room: u64,
    /// The text as forwarded (masked when `masked`).
    pub msg: String,
    /// 0xRRGGBB.
    pub color: u32,
    /// 1 scrolling, 4 bottom, 5 top.
    pub mode: u8,
    /// Blocked words were masked.
    pub masked: bool,
    /// When the gateway accepted it, unix milliseconds.
    pub ts_ms: u64,
    /// The gateway's node id.
    pub gateway: String,
    /// The gateway's region.
    pub region: String,
}

impl UpstreamDanmu {
    /// The message as the room's members receive it (the demo's echo), in the `DANMU_MSG`
    /// shape clients read: `{"cmd":"DANMU_MSG","info":[[0,mode,fontsize,color,unix_ms],"text",
    /// [uid,"name"]]}`. Tokens carry no user name, so the name is the uid.
    pub fn room_message(&self) -> serde_json::Value {
        serde_json::json!({
            "cmd": "DANMU_MSG",
            "info": [
                [0, self.mode, FONT_SIZE, self.color, self.ts_ms],
                self.msg,
                [self.uid, self.uid.to_string()],
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_defaults_colour_and_mode() {
        let request = UpstreamRequest::parse(br#"{"msg":"hi","extra":1}"#, 10).unwrap();
        assert_eq!((request.color, request.mode), (DEFAULT_COLOR, DEFAULT_MODE));
    }

    #[test]
    fn bad_requests_get_their_code() {
        let code = |body: &[u8]| UpstreamRequest::parse(body, 5).unwrap_err().code();
        assert_eq!(code(b"{msg:"), code::BAD_REQUEST);
        assert_eq!(code(br#"{"color":1}"#), code::BAD_REQUEST);
        assert_eq!(code(br#"{"msg":"  "}"#), code::BAD_REQUEST);
        assert_eq!(code(br#"{"msg":"a\nb"}"#), code::BAD_REQUEST);
        assert_eq!(code(br#"{"msg":"a","color":16777216}"#), code::BAD_REQUEST);
        assert_eq!(code(br#"{"msg":"a","mode":2}"#), code::BAD_REQUEST);
        assert_eq!(code(br#"{"msg":"a","mode":-1}"#), code::BAD_REQUEST);
        assert_eq!(
            code("{\"msg\":\"弹幕弹幕弹幕\"}".as_bytes()),
            code::TOO_LONG
        );
        // Characters, not bytes: five CJK characters are 15 bytes and fit.
        assert!(UpstreamRequest::parse("{\"msg\":\"弹幕弹幕弹\"}".as_bytes(), 5).is_ok());
    }

    #[test]
    fn replies_omit_what_does_not_apply() {
        let reply = UpstreamReply {
            code: code::RATE_LIMITED,
            retry_after_ms: Some(250),
            ..Default::default()
        };
        let frame = crate::frame::decode(
            &mut bytes::BytesMut::from(&reply.to_frame(9)[..]),
            crate::frame::DEFAULT_MAX_PACKET_LEN,
        )
        .unwrap()
        .unwrap();
        assert_eq!((frame.op, frame.seq, frame.version), (1005, 9, 1));
        assert_eq!(&frame.body[..], br#"{"code":-201,"retry_after_ms":250}"#);
    }
}
