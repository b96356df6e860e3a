//! What the server's bytes mean, before any protocol rule: the WebSocket upgrade response and
//! frames (RFC 6455, through `danmu_proto::websocket`, client role) or a plain stream of GOIM
//! packets (TCP, TLS, a QUIC stream), split into whole packets (`danmu_proto::frame`). Plain
//! code over a buffer: the fuzz target `client_wire` feeds it arbitrary bytes.

use bytes::{Bytes, BytesMut};
use danmu_proto::frame::{self, Frame};
use danmu_proto::websocket::{self, Role};

/// How packets travel on a connection, apart from how the connection was made (a TLS or QUIC
/// stream carries the same framing as plain TCP; `wss` the same as `ws`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Packets back to back on a byte stream (TCP, TLS over TCP, one QUIC stream).
    Stream,
    /// An HTTP/1.1 upgrade on path `/sub`, then binary WebSocket messages of whole packets.
    WebSocket,
}

/// One thing the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A whole GOIM packet (batches are still compressed: see `danmu_proto::batch::unpack`).
    Packet(Frame),
    /// The WebSocket upgrade was answered with 101.
    Upgraded,
    /// A WebSocket ping: answer with a pong carrying the payload.
    Ping(Bytes),
    /// The server's WebSocket Close frame (code and reason when it sent them).
    Close(Option<(u16, String)>),
}

/// Why the server's bytes cannot be read; the connection must be dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The upgrade response is not HTTP, or too long.
    #[error("WebSocket upgrade response: {0}")]
    Handshake(String),
    /// The upgrade was answered with a status other than 101.
    #[error("WebSocket upgrade refused with HTTP {0}")]
    UpgradeRefused(u16),
    /// A WebSocket frame breaks RFC 6455 (e.g. a masked server frame).
    #[error("WebSocket: {0}")]
    WebSocket(#[from] websocket::WsError),
    /// A GOIM packet header is invalid or announces more than the limit.
    #[error("packet: {0}")]
    Packet(#[from] frame::FrameError),
    /// A WebSocket message ended inside a packet (the protocol keeps packets whole per message).
    #[error("a WebSocket message ended inside a packet")]
    SplitPacket,
}

/// The inbound decoder of one connection.
#[derive(Debug)]
pub struct WireDecoder {
    max_packet_len: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    Stream,
    Upgrading,
    WebSocket(websocket::Decoder),
}

impl WireDecoder {
    /// A decoder for `framing`, refusing packets (and WebSocket messages) longer than
    /// `max_packet_len` bytes.
    pub fn new(framing: Framing, max_packet_len: usize) -> Self {
        let state = match framing {
            Framing::Stream => State::Stream,
            Framing::WebSocket => State::Upgrading,
        };
        WireDecoder {
            max_packet_len,
            state,
        }
    }

    /// Takes what is complete off the front of `buf` and appends it to `out`; what is left is
    /// an incomplete tail to read more onto. After an error the connection is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut, out: &mut Vec<Inbound>) -> Result<(), WireError> {
        loop {
            match &mut self.state {
                State::Stream => {
                    while let Some(packet) = frame::decode(buf, self.max_packet_len)? {
                        out.push(Inbound::Packet(packet));
                    }
                    return Ok(());
                }
                State::Upgrading => {
                    let Some((status, len)) = websocket::parse_response(buf)
                        .map_err(|e| WireError::Handshake(e.to_string()))?
                    else {
                        return Ok(());
                    };
                    if status != 101 {
                        return Err(WireError::UpgradeRefused(status));
                    }
                    let _ = buf.split_to(len);
                    out.push(Inbound::Upgraded);
                    self.state = State::WebSocket(websocket::Decoder::new(
                        Role::Client,
                        self.max_packet_len,
                    ));
                }
                State::WebSocket(decoder) => {
                    while let Some(message) = decoder.decode(buf)? {
                        match message {
                            websocket::Message::Binary(payload) => {
                                let mut payload = BytesMut::from(payload);
                                while let Some(packet) =
                                    frame::decode(&mut payload, self.max_packet_len)?
                                {
                                    out.push(Inbound::Packet(packet));
                                }
                                if !payload.is_empty() {
                                    return Err(WireError::SplitPacket);
                                }
                            }
                            websocket::Message::Ping(payload) => out.push(Inbound::Ping(payload)),
                            websocket::Message::Close(reason) => out.push(Inbound::Close(reason)),
                            // A text message carries nothing of the protocol (binary only);
                            // an unsolicited pong is allowed by RFC 6455.
                            websocket::Message::Text(_) | websocket::Message::Pong(_) => {}
                        }
                    }
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use danmu_proto::frame::op;

    use super::*;

    fn decode_all(framing: Framing, bytes: &[u8]) -> Result<Vec<Inbound>, WireError> {
        let mut decoder = WireDecoder::new(framing, 1024);
        let mut out = Vec::new();
        // Byte by byte: every split point must work.
        let mut buf = BytesMut::new();
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            decoder.decode(&mut buf, &mut out)?;
        }
        Ok(out)
    }

    fn reply() -> Frame {
        Frame::new(
            1,
            op::HEARTBEAT_REPLY,
            1,
            Bytes::from_static(&[0, 0, 4, 0xd2]),
        )
    }

    #[test]
    fn stream_packets_split_anywhere() {
        let mut bytes = reply().to_bytes().to_vec();
        bytes.extend_from_slice(&reply().to_bytes());
        let out = decode_all(Framing::Stream, &bytes).unwrap();
        assert_eq!(
            out,
            vec![Inbound::Packet(reply()), Inbound::Packet(reply())]
        );
    }

    #[test]
    fn websocket_upgrade_then_messages() {
        let mut bytes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        bytes.extend_from_slice(&websocket::server_binary(&reply().to_bytes()));
        bytes.extend_from_slice(&websocket::server_frame(websocket::opcode::PING, b"p"));
        bytes.extend_from_slice(&websocket::close_frame(Role::Server, 1012, "drain"));
        let out = decode_all(Framing::WebSocket, &bytes).unwrap();
        assert_eq!(
            out,
            vec![
                Inbound::Upgraded,
                Inbound::Packet(reply()),
                Inbound::Ping(Bytes::from_static(b"p")),
                Inbound::Close(Some((1012, "drain".into()))),
            ]
        );
    }

    #[test]
    fn refused_upgrade_and_bad_frames_are_errors() {
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            decode_all(Framing::WebSocket, refused),
            Err(WireError::UpgradeRefused(404))
        );
        let mut split = b"HTTP/1.1 101 OK\r\n\r\n".to_vec();
        split.extend_from_slice(&websocket::server_binary(&reply().to_bytes()[..10]));
        assert_eq!(
            decode_all(Framing::WebSocket, &split),
            Err(WireError::SplitPacket)
        );
        let too_long = [0, 0, 8, 0, 0, 16, 0, 1];
        assert!(matches!(
            decode_all(Framing::Stream, &too_long),
            Err(WireError::Packet(frame::FrameError::TooLarge { .. }))
        ));
    }
}
