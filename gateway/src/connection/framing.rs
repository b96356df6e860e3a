//! Bytes from the socket to client packets, per framing, as plain code.
//!
//! TCP carries GOIM packets directly. WebSocket carries them inside binary messages; one
//! message may hold several packets, and a packet never spans two messages
//! (`docs/protocol.md`, "WebSocket"): a message that ends inside a packet is a protocol error,
//! closed at once rather than left to swallow the messages after it. Buffers are released
//! whenever they are empty, so an idle connection holds no read memory.

use bytes::{Bytes, BytesMut};
use danmu_proto::frame::{self, Frame, FrameError};
use danmu_proto::websocket::{self, Message, WsError};

use super::CloseReason;
use crate::connection::Framing;

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Frame(Frame),
    /// WebSocket ping, answered with a pong carrying the same payload (RFC 6455 5.5.2).
    Ping(Bytes),
    /// The client closed with a WebSocket Close frame carrying this code (none: an empty
    /// payload); RFC 6455 5.5.1 asks for a Close in answer.
    Closed(Option<u16>),
}

/// A connection's inbound decoder: GOIM packets straight (TCP) or inside WebSocket messages.
pub struct Inbound {
    max_packet_len: usize,
    websocket: Option<WebSocketInbound>,
}

struct WebSocketInbound {
    decoder: websocket::Decoder,
    /// Payload bytes of binary messages not yet parsed into whole GOIM packets.
    packets: BytesMut,
}

impl Inbound {
    pub fn new(framing: Framing, max_packet_len: usize, max_ws_message_len: usize) -> Self {
        Inbound {
            max_packet_len,
            websocket: (framing == Framing::Message).then(|| WebSocketInbound {
                decoder: websocket::Decoder::new(websocket::Role::Server, max_ws_message_len),
                packets: BytesMut::new(),
            }),
        }
    }

    /// Parses everything complete in `buf`, leaving a partial frame in place.
    pub fn decode(&mut self, buf: &mut BytesMut, out: &mut Vec<Input>) -> Result<(), CloseReason> {
        let max = self.max_packet_len;
        match &mut self.websocket {
            None => decode_packets(buf, max, out),
            Some(ws) => {
                while let Some(message) = ws.decoder.decode(buf).map_err(ws_reason)? {
                    match message {
                        Message::Binary(payload) => {
                            if ws.packets.is_empty() {
                                ws.packets = BytesMut::from(&payload[..]);
                            } else {
                                ws.packets.extend_from_slice(&payload);
                            }
                            decode_packets(&mut ws.packets, max, out)?;
                            if !ws.packets.is_empty() {
                                return Err(CloseReason::Protocol(format!(
                                    "a packet spans WebSocket messages ({} bytes left over)",
                                    ws.packets.len()
                                )));
                            }
                            ws.packets = BytesMut::new();
                        }
                        Message::Text(_) => return Err(CloseReason::TextMessage),
                        Message::Ping(payload) => out.push(Input::Ping(payload)),
                        // Unsolicited pongs are allowed and ignored (RFC 6455 5.5.3).
                        Message::Pong(_) => {}
                        Message::Close(payload) => {
                            out.push(Input::Closed(payload.map(|(code, _)| code)));
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

fn decode_packets(buf: &mut BytesMut, max: usize, out: &mut Vec<Input>) -> Result<(), CloseReason> {
    while let Some(frame) = frame::decode(buf, max).map_err(frame_reason)? {
        out.push(Input::Frame(frame));
    }
    Ok(())
}

fn frame_reason(error: FrameError) -> CloseReason {
    match error {
        FrameError::TooLarge { .. } => CloseReason::TooLarge,
        other => CloseReason::Protocol(format!("malformed frame: {other}")),
    }
}

fn ws_reason(error: WsError) -> CloseReason {
    match error {
        WsError::TooLarge { .. } => CloseReason::TooLarge,
        WsError::InvalidUtf8 => CloseReason::InvalidUtf8,
        other => CloseReason::Protocol(format!("websocket: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::frame::op;
    use danmu_proto::websocket::{client_frame, opcode};

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn heartbeat(seq: u32) -> Frame {
        Frame::new(1, op::HEARTBEAT, seq, Bytes::new())
    }

    #[test]
    fn tcp_frames_split_anywhere_decode_the_same() {
        let mut stream = BytesMut::new();
        heartbeat(1).encode(&mut stream);
        heartbeat(2).encode(&mut stream);
        for split in 0..stream.len() {
            let mut inbound = Inbound::new(Framing::Stream, 1024, 1024);
            let mut buf = BytesMut::from(&stream[..split]);
            let mut out = Vec::new();
            inbound.decode(&mut buf, &mut out).unwrap();
            buf.extend_from_slice(&stream[split..]);
            inbound.decode(&mut buf, &mut out).unwrap();
            assert_eq!(
                out,
                [Input::Frame(heartbeat(1)), Input::Frame(heartbeat(2))]
            );
        }
    }

    #[test]
    fn one_websocket_message_may_carry_several_packets() {
        let mut packets = BytesMut::new();
        heartbeat(1).encode(&mut packets);
        heartbeat(2).encode(&mut packets);
        let mut buf = BytesMut::from(&client_frame(opcode::BINARY, &packets, MASK)[..]);
        let mut inbound = Inbound::new(Framing::Message, 1024, 1024);
        let mut out = Vec::new();
        inbound.decode(&mut buf, &mut out).unwrap();
        assert_eq!(
            out,
            [Input::Frame(heartbeat(1)), Input::Frame(heartbeat(2))]
        );
    }

    #[test]
    fn text_messages_and_oversized_or_malformed_frames_close() {
        let mut inbound = Inbound::new(Framing::Message, 1024, 1024);
        let mut buf = BytesMut::from(&client_frame(opcode::TEXT, b"{}", MASK)[..]);
        assert_eq!(
            inbound.decode(&mut buf, &mut Vec::new()),
            Err(CloseReason::TextMessage)
        );

        let mut inbound = Inbound::new(Framing::Stream, 64, 1024);
        let big = Frame::new(0, op::MESSAGE, 0, vec![b'x'; 100]).to_bytes();
        let mut buf = BytesMut::from(&big[..]);
        assert_eq!(
            inbound.decode(&mut buf, &mut Vec::new()),
            Err(CloseReason::TooLarge)
        );

        let mut inbound = Inbound::new(Framing::Stream, 64, 1024);
        let mut buf =
            BytesMut::from(&[0, 0, 0, 20, 0, 99, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0][..]);
        assert!(matches!(
            inbound.decode(&mut buf, &mut Vec::new()),
            Err(CloseReason::Protocol(_))
        ));
    }

    #[test]
    fn a_close_reason_that_is_not_utf8_closes_with_1007() {
        let mut inbound = Inbound::new(Framing::Message, 1024, 1024);
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0xff, 0xfe]);
        let mut buf = BytesMut::from(&client_frame(opcode::CLOSE, &payload, MASK)[..]);
        let reason = inbound.decode(&mut buf, &mut Vec::new()).unwrap_err();
        assert_eq!(reason, CloseReason::InvalidUtf8);
        assert_eq!(reason.websocket_code(), 1007);
    }

    #[test]
    fn pings_and_close_frames_surface() {
        let mut inbound = Inbound::new(Framing::Message, 1024, 1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&client_frame(opcode::PING, b"hi", MASK));
        buf.extend_from_slice(&client_frame(opcode::CLOSE, &1000u16.to_be_bytes(), MASK));
        let mut out = Vec::new();
        inbound.decode(&mut buf, &mut out).unwrap();
        assert_eq!(
            out,
            [
                Input::Ping(Bytes::from_static(b"hi")),
                Input::Closed(Some(1000))
            ]
        );
    }

    #[test]
    fn a_packet_claiming_more_than_its_message_holds_closes_at_once() {
        // The field case: a 20-byte message whose packet claims 1000 bytes.
        let packet = [
            0, 0, 3, 0xe8, 0, 0x10, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0x61, 0x62, 0x63, 0x64,
        ];
        let mut inbound = Inbound::new(Framing::Message, 64 * 1024, 64 * 1024);
        let mut buf = BytesMut::from(&client_frame(opcode::BINARY, &packet, MASK)[..]);
        assert!(matches!(
            inbound.decode(&mut buf, &mut Vec::new()),
            Err(CloseReason::Protocol(detail)) if detail.contains("spans")
        ));
    }
}
