//! The part of the NATS client protocol the edge subscriber speaks, as plain code over bytes:
//! server operations parsed from a buffer, client operations formatted.
//!
//! Parsing checks before it builds: [`parse`] looks at the buffered bytes without allocating
//! and returns `Ok(None)` until a whole operation (control line, and for `MSG`/`HMSG` the
//! payload and its CRLF) is there; only then does it consume the bytes and build the operation.
//! The payload is split off the buffer, not copied.
//!
//! Grammar (docs.nats.io, "Client Protocol"): every control line ends with CRLF; `MSG <subject>
//! <sid> [reply-to] <#bytes>` and `HMSG <subject> <sid> [reply-to] <#header bytes> <#total
//! bytes>` are followed by that many bytes and a CRLF; operation names are case-insensitive.

use bytes::{Buf, Bytes, BytesMut};

/// A server operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the JSON, unparsed.
    Info(Bytes),
    /// `MSG` or `HMSG` (headers skipped): a message for subscription `sid`.
    Msg {
        sid: u64,
        reply: Option<String>,
        payload: Bytes,
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR 'reason'`: the reason without its quotes.
    Err(String),
}

/// Why the bytes are not the NATS server protocol. Every variant means the stream cannot be
/// trusted any further: the connection must be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The control line starts with no operation we know (the first 64 bytes, lossy UTF-8).
    #[error("unknown server operation: {0:?}")]
    Unknown(String),
    /// A known operation whose arguments do not parse (the line's first 128 bytes).
    #[error("malformed {op}: {line:?}")]
    Malformed { op: &'static str, line: String },
    /// No CRLF within [`MAX_LINE`] bytes.
    #[error("control line longer than {0} bytes")]
    LineTooLong(usize),
    /// A message larger than the `max_payload` given to [`parse`] (the server's own limit).
    #[error("message of {size} bytes exceeds {max}")]
    TooLarge { size: usize, max: usize },
    /// The payload of a message is not followed by CRLF.
    #[error("message payload not followed by CRLF")]
    MissingCrlf,
}

/// Longest control line accepted (INFO carries the cluster's URLs, so it can be long).
pub const MAX_LINE: usize = 64 * 1024;

/// Parses one operation from the front of `buf`, consuming it; `Ok(None)` (nothing consumed,
/// nothing allocated) until a whole one is buffered. `max_payload` bounds a message's total
/// size (headers included), in bytes.
pub fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<ServerOp>, WireError> {
    let Some(line_end) = find_crlf(&buf[..buf.len().min(MAX_LINE + 2)]) else {
        if buf.len() > MAX_LINE + 1 {
            return Err(WireError::LineTooLong(MAX_LINE));
        }
        return Ok(None);
    };
    let line = &buf[..line_end];
    let (op, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(space) => (&line[..space], &line[space + 1..]),
        None => (line, &line[..0]),
    };
    let simple = if op.eq_ignore_ascii_case(b"MSG") || op.eq_ignore_ascii_case(b"HMSG") {
        None
    } else if op.eq_ignore_ascii_case(b"PING") {
        Some(ServerOp::Ping)
    } else if op.eq_ignore_ascii_case(b"PONG") {
        Some(ServerOp::Pong)
    } else if op.eq_ignore_ascii_case(b"+OK") {
        Some(ServerOp::Ok)
    } else if op.eq_ignore_ascii_case(b"-ERR") {
        let reason = String::from_utf8_lossy(rest.trim_ascii());
        Some(ServerOp::Err(reason.trim_matches('\'').to_owned()))
    } else if op.eq_ignore_ascii_case(b"INFO") {
        let start = line_end - rest.len();
        let json = trim_range(&buf[start..line_end]);
        let info = Bytes::copy_from_slice(&buf[start + json.0..start + json.1]);
        Some(ServerOp::Info(info))
    } else {
        return Err(WireError::Unknown(lossy(line, 64)));
    };
    if let Some(op) = simple {
        buf.advance(line_end + 2);
        return Ok(Some(op));
    }
    let headers = op.eq_ignore_ascii_case(b"HMSG");
    let name = if headers { "HMSG" } else { "MSG" };
    let args = MsgArgs::parse(rest, headers).ok_or_else(|| WireError::Malformed {
        op: name,
        line: lossy(line, 128),
    })?;
    if args.total > max_payload {
        return Err(WireError::TooLarge {
            size: args.total,
            max: max_payload,
        });
    }
    let needed = line_end + 2 + args.total + 2;
    if buf.len() < needed {
        buf.reserve(needed - buf.len());
        return Ok(None);
    }
    if &buf[needed - 2..needed] != b"\r\n" {
        return Err(WireError::MissingCrlf);
    }
    // Whole: from here on the operation is built.
    let reply = match args.reply {
        Some((from, to)) => {
            let start = line_end - rest.len();
            match std::str::from_utf8(&buf[start + from..start + to]) {
                Ok(reply) => Some(reply.to_owned()),
                Err(_) => {
                    return Err(WireError::Malformed {
                        op: name,
                        line: lossy(&buf[..line_end], 128),
                    });
                }
            }
        }
        None => None,
    };
    buf.advance(line_end + 2);
    let mut body = buf.split_to(args.total + 2);
    body.truncate(args.total);
    let payload = body.freeze().slice(args.header_len..);
    Ok(Some(ServerOp::Msg {
        sid: args.sid,
        reply,
        payload,
    }))
}

/// The arguments of a `MSG`/`HMSG` line; `reply` as a byte range of the arguments.
struct MsgArgs {
    sid: u64,
    reply: Option<(usize, usize)>,
    header_len: usize,
    total: usize,
}

impl MsgArgs {
    /// `None` when the fields do not have the protocol's shape.
    fn parse(rest: &[u8], headers: bool) -> Option<MsgArgs> {
        // At most 5 fields: subject, sid, [reply], [header size], size.
        let mut fields = [(0usize, 0usize); 5];
        let mut count = 0;
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == b' ' || rest[i] == b'\t' {
                i += 1;
                continue;
            }
            let start = i;
            while i < rest.len() && rest[i] != b' ' && rest[i] != b'\t' {
                i += 1;
            }
            if count == fields.len() {
                return None;
            }
            fields[count] = (start, i);
            count += 1;
        }
        let field = |n: usize| &rest[fields[n].0..fields[n].1];
        let (reply, header_len, total) = match (headers, count) {
            (false, 3) => (None, None, 2),
            (false, 4) => (Some(2), None, 3),
            (true, 4) => (None, Some(2), 3),
            (true, 5) => (Some(2), Some(3), 4),
            _ => return None,
        };
        let total = number(field(total))?;
        let header_len = match header_len {
            Some(n) => number(field(n))?,
            None => 0,
        };
        if header_len > total {
            return None;
        }
        Some(MsgArgs {
            sid: u64::try_from(number(field(1))?).ok()?,
            reply: reply.map(|n| fields[n]),
            header_len,
            total,
        })
    }
}

/// A decimal number of at most 18 digits (so it cannot overflow); `None` otherwise.
fn number(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')),
    )
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// The range of `bytes` without leading and trailing ASCII whitespace.
fn trim_range(bytes: &[u8]) -> (usize, usize) {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    (start, end)
}

fn lossy(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// `CONNECT {json}` followed by `PING`: the server's `PONG` (or `-ERR`) tells whether it took
/// the connection. `options` is the CONNECT object (see `client::connect_options`).
pub fn connect(options: &serde_json::Value) -> Bytes {
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
    use proptest::prelude::*;

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
            msg\ta\t5\t2\r\nhi\r\n\
            -ERR 'Slow Consumer'\r\n";
        assert_eq!(
            all(wire).unwrap(),
            [
                ServerOp::Info(Bytes::from_static(
                    b"{\"server_id\":\"x\",\"max_payload\":1048576}"
                )),
                ServerOp::Ok,
                ServerOp::Ping,
                ServerOp::Pong,
                msg(3, None, b"hello"),
                msg(4, Some("_INBOX.abc"), b""),
                msg(4, None, b"hello"),
                msg(9, Some("reply.to"), b""),
                msg(5, None, b"hi"),
                ServerOp::Err("Slow Consumer".into()),
            ]
        );
    }

    #[test]
    fn an_incomplete_message_is_not_consumed() {
        let mut buf = BytesMut::from(&b"MSG s 1 r 10\r\nhel"[..]);
        assert_eq!(parse(&mut buf, 1 << 20), Ok(None));
        assert_eq!(&buf[..], b"MSG s 1 r 10\r\nhel");
        assert!(buf.capacity() >= 26, "room reserved for the whole message");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(matches!(all(b"HELLO\r\n"), Err(WireError::Unknown(_))));
        for bad in [
            &b"MSG s x 5\r\nhello\r\n"[..],
            b"HMSG s 1 9 5\r\nhello\r\n",
            b"MSG s 1 99999999999999999999\r\n",
            b"MSG s 1 a b c d\r\n",
            b"MSG s 1 -5\r\n",
        ] {
            assert!(
                matches!(all(bad), Err(WireError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(all(b"MSG s 1 2\r\nhiXX"), Err(WireError::MissingCrlf));
        let mut buf = BytesMut::from(&b"MSG s 1 2000000\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, 1 << 20),
            Err(WireError::TooLarge { .. })
        ));
        let mut long = BytesMut::from(&vec![b'I'; MAX_LINE + 2][..]);
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
        let connect = connect(&serde_json::json!({"echo": false}));
        assert_eq!(&connect[..], b"CONNECT {\"echo\":false}\r\nPING\r\n");
    }

    /// Server operations as the server writes them.
    fn op() -> impl Strategy<Value = ServerOp> {
        let subject = "[a-z]{1,8}(\\.[a-z0-9_]{1,8}){0,3}";
        let payload = proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
        prop_oneof![
            Just(ServerOp::Ping),
            Just(ServerOp::Pong),
            Just(ServerOp::Ok),
            "[ -&(-~]{0,40}".prop_map(ServerOp::Err),
            "\\{[ -~]{0,60}\\}".prop_map(|j| ServerOp::Info(Bytes::from(j))),
            (any::<u64>(), proptest::option::of(subject), payload).prop_map(
                |(sid, reply, payload)| ServerOp::Msg {
                    sid: sid >> 8,
                    reply,
                    payload,
                }
            ),
        ]
    }

    /// `op` on the wire; messages with a reply go as `HMSG` with a small header, to cover both.
    fn encode(op: &ServerOp, out: &mut Vec<u8>) {
        match op {
            ServerOp::Ping => out.extend_from_slice(b"PING\r\n"),
            ServerOp::Pong => out.extend_from_slice(b"PONG\r\n"),
            ServerOp::Ok => out.extend_from_slice(b"+OK\r\n"),
            ServerOp::Err(reason) => {
                out.extend_from_slice(format!("-ERR '{reason}'\r\n").as_bytes())
            }
            ServerOp::Info(json) => {
                out.extend_from_slice(b"INFO ");
                out.extend_from_slice(json);
                out.extend_from_slice(b"\r\n");
            }
            ServerOp::Msg {
                sid,
                reply: Some(reply),
                payload,
            } => {
                let header = b"NATS/1.0\r\n\r\n";
                let line = format!(
                    "HMSG subj.x {sid} {reply} {} {}\r\n",
                    header.len(),
                    header.len() + payload.len()
                );
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(header);
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
            ServerOp::Msg {
                sid,
                reply: None,
                payload,
            } => {
                out.extend_from_slice(format!("MSG subj.x {sid} {}\r\n", payload.len()).as_bytes());
                out.extend_from_slice(payload);
                out.extend_from_slice(b"\r\n");
            }
        }
    }

    proptest! {
        #[test]
        fn any_split_of_a_valid_stream_parses_to_the_same_operations(
            ops in proptest::collection::vec(op(), 1..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = Vec::new();
            for op in &ops {
                encode(op, &mut wire);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut parsed = Vec::new();
            let mut from = 0;
            for cut in cuts {
                buf.extend_from_slice(&wire[from..cut]);
                from = cut;
                while let Some(op) = parse(&mut buf, 1 << 20).unwrap() {
                    parsed.push(op);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(parsed, ops);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            prefix in proptest::sample::select(vec![
                &b""[..], b"MSG ", b"HMSG ", b"INFO ", b"-ERR ", b"MSG a 1 ", b"HMSG a 1 r ",
            ]),
        ) {
            let mut buf = BytesMut::from(prefix);
            buf.extend_from_slice(&bytes);
            let before = buf.len();
            while let Ok(Some(_)) = parse(&mut buf, 256) {
                prop_assert!(buf.len() < before);
            }
        }
    }
}
