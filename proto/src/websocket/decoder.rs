//! Incremental frame decoder. It validates each header as soon as it is buffered (so a hostile
//! length is refused before we wait for its payload), unmasks in place, and reassembles
//! fragmented data messages while letting control frames through in between.

use bytes::{Buf, Bytes, BytesMut};

use super::{Message, Role, apply_mask, close_code, opcode};

/// Why the peer's bytes are not acceptable WebSocket. After an error the decoder's state is
/// undefined: send a close with [`WsError::close_code`] and drop the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// RSV1-3 set: no extension was negotiated, so they must be zero.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    /// A server received an unmasked frame (clients must mask).
    #[error("unmasked frame from client")]
    UnmaskedFrame,
    /// A client received a masked frame (servers must not mask).
    #[error("masked frame from server")]
    MaskedFrame,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    /// A continuation frame with no fragmented message in flight.
    #[error("continuation frame without a message in flight")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still in flight.
    #[error("new data frame while a fragmented message is in flight")]
    ExpectedContinuation,
    /// A 64-bit payload length with the most significant bit set.
    #[error("invalid 64-bit payload length")]
    BadLength,
    /// A close payload of exactly one byte.
    #[error("close payload of one byte")]
    BadClosePayload,
    /// A close code that must not appear on the wire.
    #[error("invalid close code {0}")]
    BadCloseCode(u16),
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A message longer than the decoder's limit.
    #[error("message of {len} bytes exceeds the maximum {max}")]
    TooLarge {
        /// Bytes the message would have (so far).
        len: u64,
        /// The configured limit.
        max: usize,
    },
}

impl WsError {
    /// The close code to send before dropping the connection.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            WsError::TooLarge { .. } => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// Decodes frames for one connection.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message_len: usize,
    /// A fragmented message in flight. Boxed and absent while idle, so an idle connection's
    /// decoder is three words and owns no heap memory.
    partial: Option<Box<Partial>>,
}

#[derive(Debug)]
struct Partial {
    opcode: u8,
    data: BytesMut,
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

impl Decoder {
    /// A decoder for our side `role`, accepting messages up to `max_message_len` bytes.
    pub fn new(role: Role, max_message_len: usize) -> Self {
        Decoder {
            role,
            max_message_len,
            partial: None,
        }
    }

    /// True while a fragmented message is being reassembled.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes whole frames off the front of `buf` until a message or control frame is complete.
    /// `Ok(None)` means "read more"; fragments already consumed are kept in the decoder.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            let Some(h) = self.header(buf)? else {
                return Ok(None);
            };
            if buf.len() - h.header_len < h.payload_len {
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len);
            if let Some(mask) = h.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(message) = self.frame(h.fin, h.opcode, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Parses and validates the next frame header without consuming it.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, WsError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        let opcode = b0 & 0x0f;
        let is_control = opcode >= 8;
        match opcode {
            opcode::CONTINUATION if self.partial.is_none() => {
                return Err(WsError::UnexpectedContinuation);
            }
            opcode::TEXT | opcode::BINARY if self.partial.is_some() => {
                return Err(WsError::ExpectedContinuation);
            }
            opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
            opcode::CLOSE | opcode::PING | opcode::PONG => {}
            other => return Err(WsError::UnknownOpcode(other)),
        }
        if is_control && !fin {
            return Err(WsError::FragmentedControl);
        }
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(WsError::UnmaskedFrame),
            (Role::Client, true) => return Err(WsError::MaskedFrame),
            _ => {}
        }
        let (len, mut pos) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|b| b.first_chunk::<8>()) {
                Some(b) => (u64::from_be_bytes(*b), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if len >> 63 != 0 {
            return Err(WsError::BadLength);
        }
        if is_control && len > 125 {
            return Err(WsError::ControlTooLong(len));
        }
        if !is_control {
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len()) as u64;
            let total = so_far.saturating_add(len);
            if total > self.max_message_len as u64 {
                return Err(WsError::TooLarge {
                    len: total,
                    max: self.max_message_len,
                });
            }
        }
        let mask = if masked {
            match buf.get(pos..pos + 4) {
                Some(m) => {
                    pos += 4;
                    Some([m[0], m[1], m[2], m[3]])
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        // Bounded by max_message_len (data) or 125 (control) above, so it fits in usize.
        let payload_len = usize::try_from(len).map_err(|_| WsError::BadLength)?;
        Ok(Some(Header {
            fin,
            opcode,
            mask,
            header_len: pos,
            payload_len,
        }))
    }

    /// Handles one whole, unmasked frame; returns a message when one is complete.
    fn frame(&mut self, fin: bool, op: u8, payload: BytesMut) -> Result<Option<Message>, WsError> {
        match op {
            opcode::CLOSE => close(payload.freeze()).map(Some),
            opcode::PING => Ok(Some(Message::Ping(payload.freeze()))),
            opcode::PONG => Ok(Some(Message::Pong(payload.freeze()))),
            opcode::CONTINUATION => {
                // header() checked that a message is in flight.
                let Some(partial) = self.partial.as_mut() else {
                    return Err(WsError::UnexpectedContinuation);
                };
                partial.data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let Some(done) = self.partial.take() else {
                    return Err(WsError::UnexpectedContinuation);
                };
                data_message(done.opcode, done.data.freeze()).map(Some)
            }
            _ if fin => data_message(op, payload.freeze()).map(Some),
            _ => {
                // First fragment: keep its bytes (still a view of the read buffer) as the start
                // of the reassembly buffer.
                self.partial = Some(Box::new(Partial {
                    opcode: op,
                    data: payload,
                }));
                Ok(None)
            }
        }
    }
}

fn data_message(op: u8, data: Bytes) -> Result<Message, WsError> {
    if op == opcode::TEXT {
        std::str::from_utf8(&data).map_err(|_| WsError::InvalidUtf8)?;
        Ok(Message::Text(data))
    } else {
        Ok(Message::Binary(data))
    }
}

fn close(payload: Bytes) -> Result<Message, WsError> {
    match payload.len() {
        0 => return Ok(Message::Close(None)),
        1 => return Err(WsError::BadClosePayload),
        _ => {}
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    // Codes a peer may send (RFC 6455 section 7.4 and the IANA registry); 1004-1006 and 1015
    // are reserved for local use and must never appear on the wire.
    let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
    if !valid {
        return Err(WsError::BadCloseCode(code));
    }
    let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidUtf8)?;
    Ok(Message::Close(Some((code, reason.to_owned()))))
}
