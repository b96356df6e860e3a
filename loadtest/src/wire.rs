//! Incremental parsers for what the load clients read, written for the counting path: they
//! look at headers and hand out borrowed slices, never copying a body unless a unit is split
//! across two reads (then only that unit's bytes are kept).
//!
//! - [`Kind::GoimTcp`]: a stream of GOIM packets (our gateway over TCP).
//! - [`Kind::GoimWs`]: WebSocket binary messages (server frames, unmasked) whose payloads carry
//!   GOIM packets (our gateway over WebSocket).
//! - [`Kind::NatsWs`]: WebSocket messages carrying the NATS client protocol (nats-server's own
//!   WebSocket listener): `MSG <subject> <sid> [reply] <size>\r\n<payload>\r\n`, `PING`, ...

/// Largest unit accepted (a GOIM packet, a WebSocket frame, a NATS message).
pub const MAX_UNIT: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    GoimTcp,
    GoimWs,
    NatsWs,
}

/// What a parser found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A GOIM packet (outer): version, operation and body.
    Goim {
        version: u16,
        op: u32,
        body: &'a [u8],
    },
    /// A NATS `MSG`: its payload.
    NatsMsg(&'a [u8]),
    /// A NATS `PING`: the client must answer `PONG`.
    NatsPing,
    /// A NATS `PONG` (the answer to the client's `PING`).
    NatsPong,
    /// A WebSocket close frame.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

type Result<T> = std::result::Result<T, WireError>;

/// One connection's parser state: bytes of a unit split across reads, per layer.
#[derive(Debug)]
pub struct Parser {
    kind: Kind,
    /// Transport layer leftover (a GOIM packet on TCP, a WebSocket frame on WebSocket).
    outer: Vec<u8>,
    /// WebSocket only: leftover of the protocol inside the messages.
    inner: Vec<u8>,
    /// WebSocket frames (or, on TCP, GOIM packets) parsed.
    pub units: u64,
}

impl Parser {
    pub fn new(kind: Kind) -> Self {
        Parser {
            kind,
            outer: Vec::new(),
            inner: Vec::new(),
            units: 0,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Bytes held for a unit that is not complete yet.
    pub fn buffered(&self) -> usize {
        self.outer.len() + self.inner.len()
    }

    /// Parses `data`, the next bytes read, calling `on` for every complete event.
    pub fn feed(&mut self, data: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<()> {
        let Parser {
            kind,
            outer,
            inner,
            units,
        } = self;
        match kind {
            Kind::GoimTcp => with_leftover(outer, data, |bytes| goim(bytes, units, on)),
            Kind::GoimWs | Kind::NatsWs => {
                let nats = *kind == Kind::NatsWs;
                with_leftover(outer, data, |bytes| {
                    websocket(
                        bytes,
                        units,
                        &mut |payload: &[u8], on: &mut dyn FnMut(Event<'_>)| {
                            let mut ignored = 0;
                            if nats {
                                with_leftover(inner, payload, |b| nats_protocol(b, on))
                            } else {
                                with_leftover(inner, payload, |b| goim(b, &mut ignored, on))
                            }
                        },
                        on,
                    )
                })
            }
        }
    }
}

/// Runs `parse` over `leftover + data` without copying `data` when nothing is left over;
/// keeps what `parse` did not consume.
fn with_leftover(
    leftover: &mut Vec<u8>,
    data: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<usize>,
) -> Result<()> {
    if leftover.is_empty() {
        let used = parse(data)?;
        if used < data.len() {
            leftover.extend_from_slice(&data[used..]);
        }
    } else {
        leftover.extend_from_slice(data);
        let used = parse(leftover)?;
        leftover.drain(..used);
        if leftover.is_empty() && leftover.capacity() > 64 * 1024 {
            *leftover = Vec::new();
        }
    }
    Ok(())
}

/// Complete GOIM packets of `bytes`; returns the bytes consumed.
fn goim(bytes: &[u8], units: &mut u64, on: &mut (impl FnMut(Event<'_>) + ?Sized)) -> Result<usize> {
    let mut pos = 0;
    while bytes.len() - pos >= 16 {
        let h = &bytes[pos..pos + 16];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let header_len = u16::from_be_bytes([h[4], h[5]]) as usize;
        if header_len != 16 || !(16..=MAX_UNIT).contains(&len) {
            return Err(WireError(format!(
                "bad GOIM header: packet length {len}, header length {header_len}"
            )));
        }
        if bytes.len() - pos < len {
            break;
        }
        *units += 1;
        on(Event::Goim {
            version: u16::from_be_bytes([h[6], h[7]]),
            op: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            body: &bytes[pos + 16..pos + len],
        });
        pos += len;
    }
    Ok(pos)
}

/// Complete WebSocket frames of `bytes` (server to client: unmasked); data frames' payloads go
/// to `payload`. Returns the bytes consumed.
fn websocket(
    bytes: &[u8],
    units: &mut u64,
    payload: &mut impl FnMut(&[u8], &mut dyn FnMut(Event<'_>)) -> Result<()>,
    on: &mut impl FnMut(Event<'_>),
) -> Result<usize> {
    let mut pos = 0;
    loop {
        let rest = &bytes[pos..];
        if rest.len() < 2 {
            break;
        }
        let opcode = rest[0] & 0x0f;
        if rest[1] & 0x80 != 0 {
            return Err(WireError("masked WebSocket frame from a server".into()));
        }
        let (header, len) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (4, u16::from_be_bytes([rest[2], rest[3]]) as usize),
            127 if rest.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&rest[2..10]);
                (10, u64::from_be_bytes(n) as usize)
            }
            126 | 127 => break,
            short => (2, short as usize),
        };
        if len > MAX_UNIT {
            return Err(WireError(format!("WebSocket frame of {len} bytes")));
        }
        if rest.len() < header + len {
            break;
        }
        *units += 1;
        let body = &rest[header..header + len];
        match opcode {
            0..=2 => payload(body, on)?,
            8 => on(Event::Closed),
            9 | 10 => {}
            other => return Err(WireError(format!("WebSocket opcode {other}"))),
        }
        pos += header + len;
    }
    Ok(pos)
}

/// Complete NATS protocol lines (and `MSG` payloads) of `bytes`; returns the bytes consumed.
fn nats_protocol(bytes: &[u8], on: &mut (impl FnMut(Event<'_>) + ?Sized)) -> Result<usize> {
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(eol) = rest.iter().position(|&b| b == b'\n') else {
            if rest.len() > 4096 {
                return Err(WireError("NATS protocol line longer than 4 KiB".into()));
            }
            break;
        };
        let line = rest[..eol].strip_suffix(b"\r").unwrap_or(&rest[..eol]);
        if let Some(args) = line.strip_prefix(b"MSG ") {
            let size = args
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| {
                    WireError(format!("bad MSG line {:?}", String::from_utf8_lossy(line)))
                })?;
            if size > MAX_UNIT {
                return Err(WireError(format!("NATS message of {size} bytes")));
            }
            let start = eol + 1;
            if rest.len() < start + size + 2 {
                break;
            }
            on(Event::NatsMsg(&rest[start..start + size]));
            pos += start + size + 2;
            continue;
        }
        if line == b"PING" {
            on(Event::NatsPing);
        } else if line == b"PONG" {
            on(Event::NatsPong);
        } else if line.starts_with(b"-ERR") {
            return Err(WireError(format!(
                "nats-server: {}",
                String::from_utf8_lossy(line)
            )));
        } else if !(line == b"+OK" || line.starts_with(b"INFO ")) {
            return Err(WireError(format!(
                "unexpected NATS line {:?}",
                String::from_utf8_lossy(line)
            )));
        }
        pos += eol + 1;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::frame::Frame;
    use danmu_proto::websocket;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Goim(u16, u32, Vec<u8>),
        Msg(Vec<u8>),
        Ping,
        Pong,
        Closed,
    }

    /// Feeds `stream` split at every possible point (and byte by byte) and checks the events
    /// are the same as when it arrives whole.
    fn parse_all_splits(kind: Kind, stream: &[u8]) -> Vec<Owned> {
        let collect = |chunks: &[&[u8]]| {
            let mut parser = Parser::new(kind);
            let mut out = Vec::new();
            for chunk in chunks {
                parser
                    .feed(chunk, &mut |e| {
                        out.push(match e {
                            Event::Goim { version, op, body } => {
                                Owned::Goim(version, op, body.to_vec())
                            }
                            Event::NatsMsg(p) => Owned::Msg(p.to_vec()),
                            Event::NatsPing => Owned::Ping,
                            Event::NatsPong => Owned::Pong,
                            Event::Closed => Owned::Closed,
                        })
                    })
                    .unwrap();
            }
            assert_eq!(parser.buffered(), 0);
            out
        };
        let whole = collect(&[stream]);
        for split in 0..stream.len() {
            assert_eq!(collect(&[&stream[..split], &stream[split..]]), whole);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&bytes), whole);
        whole
    }

    #[test]
    fn goim_over_tcp() {
        let mut stream = Frame::new(0, 5, 0, &b"{\"a\":1}"[..]).to_bytes().to_vec();
        stream.extend_from_slice(&Frame::new(1, 3, 1, vec![0, 0, 0, 7]).to_bytes());
        let events = parse_all_splits(Kind::GoimTcp, &stream);
        assert_eq!(
            events,
            [
                Owned::Goim(0, 5, b"{\"a\":1}".to_vec()),
                Owned::Goim(1, 3, vec![0, 0, 0, 7])
            ]
        );
    }

    #[test]
    fn goim_over_websocket_with_long_lengths() {
        let big = vec![b'x'; 70_000];
        let mut packets = Frame::new(0, 5, 0, big.clone()).to_bytes().to_vec();
        packets.extend_from_slice(&Frame::new(0, 5, 0, &b"y"[..]).to_bytes());
        let mut stream = websocket::server_binary(&packets).to_vec();
        stream.extend_from_slice(&websocket::server_binary(
            &Frame::new(3, 5, 0, vec![1u8; 300]).to_bytes(),
        ));
        let mut parser = Parser::new(Kind::GoimWs);
        let mut seen = Vec::new();
        // Two pieces: whole-split coverage of a 70 KB stream is slow, the helper covers splits.
        parser
            .feed(&stream[..1000], &mut |e| seen.push(format!("{e:?}").len()))
            .unwrap();
        parser
            .feed(&stream[1000..], &mut |e| {
                if let Event::Goim { version, body, .. } = e {
                    seen.push(body.len() + version as usize);
                }
            })
            .unwrap();
        assert_eq!(seen, [70_000, 1, 303]);
        let small = websocket::server_binary(&Frame::new(0, 5, 0, &b"hi"[..]).to_bytes());
        let events = parse_all_splits(Kind::GoimWs, &small);
        assert_eq!(events, [Owned::Goim(0, 5, b"hi".to_vec())]);
    }

    #[test]
    fn nats_over_websocket_across_frames() {
        let text = b"INFO {\"server_id\":\"x\"}\r\nPONG\r\nMSG bench.room.1 1 5\r\nhello\r\nPING\r\nMSG bench.room.1 1 _INBOX.x 2\r\nhi\r\n";
        // nats-server may cut its protocol stream anywhere between WebSocket frames.
        let mut stream = websocket::server_binary(&text[..30]).to_vec();
        stream.extend_from_slice(&websocket::server_binary(&text[30..50]));
        stream.extend_from_slice(&websocket::server_binary(&text[50..]));
        stream.extend_from_slice(&websocket::close_frame(websocket::Role::Server, 1000, ""));
        let events = parse_all_splits(Kind::NatsWs, &stream);
        assert_eq!(
            events,
            [
                Owned::Pong,
                Owned::Msg(b"hello".to_vec()),
                Owned::Ping,
                Owned::Msg(b"hi".to_vec()),
                Owned::Closed
            ]
        );
    }

    #[test]
    fn errors_are_reported() {
        let mut parser = Parser::new(Kind::GoimTcp);
        let bad = [0, 0, 0, 20, 0, 12, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0];
        assert!(parser.feed(&bad, &mut |_| {}).is_err());
        let mut parser = Parser::new(Kind::NatsWs);
        let err = websocket::server_binary(b"-ERR 'Authorization Violation'\r\n");
        assert!(parser.feed(&err, &mut |_| {}).is_err());
    }
}
