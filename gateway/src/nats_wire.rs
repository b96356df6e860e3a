//! The part of the NATS client protocol the edge subscriber speaks, as plain code over bytes:
//! server operations parsed incrementally from a buffer, client operations formatted.
//!
//! Why not async-nats for the edge: every async-nats subscription owns a channel whose first
//! block (~11.5 KiB) is allocated up front, and the gateway holds a subscription per connected
//! user (user scope) and per device, per priority: that alone was ~24 KiB per idle connection.
//! Here a subscription is a map entry (sid → group) and batches are delivered straight from the
//! read loop.

use bytes::{Buf, Bytes, BytesMut};

/// A server operation.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the JSON, unparsed.
    Info(String),
    /// `MSG` or `HMSG` (headers skipped): a message for subscription `sid`.
    Msg {
        sid: u64,
        reply: Option<String>,
        payload: Bytes,
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR 'reason'`.
    Err(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("unknown server operation: {0:?}")]
    Unknown(String),
    #[error("malformed {op}: {line:?}")]
    Malformed { op: &'static str, line: String },
    #[error("control line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("message of {size} bytes exceeds {max}")]
    TooLarge { size: usize, max: usize },
}

/// Longest control line accepted (INFO carries the cluster's URLs, so it can be long).
const MAX_LINE: usize = 64 * 1024;

/// Parses one operation from the front of `buf`, consuming it; `Ok(None)` until a whole one is
/// there. `max_payload` bounds a message's size.
pub fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<ServerOp>, WireError> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(WireError::LineTooLong(MAX_LINE));
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    let (op, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
    let malformed = |op: &'static str| WireError::Malformed {
        op,
        line: line.clone(),
    };
    let simple = match op.to_ascii_uppercase().as_str() {
        "PING" => Some(ServerOp::Ping),
        "PONG" => Some(ServerOp::Pong),
        "+OK" => Some(ServerOp::Ok),
        "-ERR" => Some(ServerOp::Err(rest.trim().trim_matches('\'').to_owned())),
        "INFO" => Some(ServerOp::Info(rest.trim().to_owned())),
        "MSG" | "HMSG" => None,
        _ => return Err(WireError::Unknown(line.chars().take(64).collect())),
    };
    if let Some(op) = simple {
        buf.advance(line_end + 2);
        return Ok(Some(op));
    }
    // MSG <subject> <sid> [reply] <size>
    // HMSG <subject> <sid> [reply] <header size> <total size>
    let headers = op.eq_ignore_ascii_case("HMSG");
    let name = if headers { "HMSG" } else { "MSG" };
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let (sid, reply, header_len, total) = match (headers, fields.as_slice()) {
        (false, [_, sid, size]) => (sid, None, "0", *size),
        (false, [_, sid, reply, size]) => (sid, Some(*reply), "0", *size),
        (true, [_, sid, hdr, total]) => (sid, None, *hdr, *total),
        (true, [_, sid, reply, hdr, total]) => (sid, Some(*reply), *hdr, *total),
        _ => return Err(malformed(name)),
    };
    let sid: u64 = sid.parse().map_err(|_| malformed(name))?;
    let header_len: usize = header_len.parse().map_err(|_| malformed(name))?;
    let total: usize = total.parse().map_err(|_| malformed(name))?;
    if header_len > total {
        return Err(malformed(name));
    }
    if total > max_payload {
        return Err(WireError::TooLarge {
            size: total,
            max: max_payload,
        });
    }
    let needed = line_end + 2 + total + 2;
    if buf.len() < needed {
        buf.reserve(needed - buf.len());
        return Ok(None);
    }
    let reply = reply.map(str::to_owned);
    buf.advance(line_end + 2);
    let mut body = buf.split_to(total + 2);
    body.truncate(total);
    let payload = body.freeze().slice(header_len..);
    Ok(Some(ServerOp::Msg {
        sid,
        reply,
        payload,
    }))
}

/// `CONNECT` for a subscriber: no echo, no verbose acks; credentials from the URL if any.
pub fn connect(name: &str, user: Option<&str>, pass: Option<&str>, token: Option<&str>) -> Bytes {
    let mut options = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "lang": "rust-danmu",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "headers": true,
        "no_responders": true,
        "echo": false,
        "name": name,
    });
    if let (Some(user), Some(pass)) = (user, pass) {
        options["user"] = user.into();
        options["pass"] = pass.into();
    }
    if let Some(token) = token {
        options["auth_token"] = token.into();
    }
    Bytes::from(format!("CONNECT {options}\r\nPING\r\n"))
}

pub fn sub(subject: &str, sid: u64) -> Bytes {
    Bytes::from(format!("SUB {subject} {sid}\r\n"))
}

pub fn unsub(sid: u64) -> Bytes {
    Bytes::from(format!("UNSUB {sid}\r\n"))
}

/// An empty publish: the answer to a request.
pub fn empty_pub(subject: &str) -> Bytes {
    Bytes::from(format!("PUB {subject} 0\r\n\r\n"))
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<ServerOp>, WireError> {
        let mut buf = BytesMut::from(bytes);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf, 1 << 20)? {
            ops.push(op);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(ops)
    }

    fn msg(sid: u64, reply: Option<&str>, payload: &'static [u8]) -> ServerOp {
        ServerOp::Msg {
            sid,
            reply: reply.map(str::to_owned),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn every_server_operation_parses() {
        let wire = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n+OK\r\nPING\r\nPONG\r\n\
            MSG danmu.edge.lo.room.7 3 5\r\nhello\r\n\
            MSG danmu.edge.hi.user.1 4 _INBOX.abc 0\r\n\r\n\
            HMSG danmu.edge.hi.user.1 4 12 17\r\nNATS/1.0\r\n\r\nhello\r\n\
            HMSG a 9 reply.to 12 12\r\nNATS/1.0\r\n\r\n\r\n\
            -ERR 'Slow Consumer'\r\n";
        assert_eq!(
            all(wire).unwrap(),
            [
                ServerOp::Info("{\"server_id\":\"x\",\"max_payload\":1048576}".into()),
                ServerOp::Ok,
                ServerOp::Ping,
                ServerOp::Pong,
                msg(3, None, b"hello"),
                msg(4, Some("_INBOX.abc"), b""),
                msg(4, None, b"hello"),
                msg(9, Some("reply.to"), b""),
                ServerOp::Err("Slow Consumer".into()),
            ]
        );
    }

    #[test]
    fn any_split_of_the_stream_parses_the_same() {
        let wire: &[u8] =
            b"PING\r\nMSG s 1 r 10\r\nhello\r\nbye\r\nHMSG s 2 12 14\r\nNATS/1.0\r\n\r\nok\r\n";
        let whole = all(wire).unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut ops = Vec::new();
            while let Some(op) = parse(&mut buf, 1 << 20).unwrap() {
                ops.push(op);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(op) = parse(&mut buf, 1 << 20).unwrap() {
                ops.push(op);
            }
            assert_eq!(ops, whole, "cut at {cut}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(all(b"HELLO\r\n"), Err(WireError::Unknown(_))));
        assert!(matches!(
            all(b"MSG s x 5\r\nhello\r\n"),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            all(b"HMSG s 1 9 5\r\nhello\r\n"),
            Err(WireError::Malformed { .. })
        ));
        let mut buf = BytesMut::from(&b"MSG s 1 2000000\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, 1 << 20),
            Err(WireError::TooLarge { .. })
        ));
        let mut long = BytesMut::from(&vec![b'I'; MAX_LINE + 1][..]);
        assert!(matches!(
            parse(&mut long, 1 << 20),
            Err(WireError::LineTooLong(_))
        ));
    }

    #[test]
    fn client_operations_have_the_protocol_shape() {
        assert_eq!(
            &sub("danmu.edge.lo.room.7", 3)[..],
            b"SUB danmu.edge.lo.room.7 3\r\n"
        );
        assert_eq!(&unsub(3)[..], b"UNSUB 3\r\n");
        assert_eq!(&empty_pub("_INBOX.x")[..], b"PUB _INBOX.x 0\r\n\r\n");
        let connect = connect("gw", Some("u"), Some("p"), None);
        let text = std::str::from_utf8(&connect).unwrap();
        assert!(text.starts_with("CONNECT {") && text.ends_with("}\r\nPING\r\n"));
        assert!(text.contains("\"user\":\"u\"") && text.contains("\"echo\":false"));
    }
}
