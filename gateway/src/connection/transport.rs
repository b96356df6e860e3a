//! What a connection came in over and how its packets are delimited: two separate facts.
//!
//! The **transport** is the kind of listener (`ws`, `wss`, `tcp`, `tls`, `quic`,
//! `webtransport`): it names the connection in metrics and logs and decides how it opens (an
//! HTTP upgrade, a PROXY header, or packets straight away). The **framing** is what the fan-out
//! and the connection core need to know about the bytes: GOIM packets inside WebSocket binary
//! messages, or packets back to back on a byte stream. TLS, QUIC and WebTransport change who
//! writes the bytes (encrypted per connection, or through a QUIC endpoint), never the bytes
//! the fan-out pre-frames once per batch: `wss` gets the same frames as `ws`, `tls`, `quic`
//! and `webtransport` the same as `tcp`.

use bytes::Bytes;
use danmu_proto::websocket;

/// How GOIM packets are delimited on a connection (`docs/protocol.md`, "Transports").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One or more whole packets per WebSocket binary message (RFC 6455), server frames
    /// unmasked: `ws` and `wss`.
    Message,
    /// Packets back to back, split by their length field: TCP, TLS on TCP, the one QUIC
    /// stream, the one WebTransport stream.
    Stream,
}

impl Framing {
    /// Every framing, in [`Framing::index`] order.
    pub const ALL: [Framing; 2] = [Framing::Message, Framing::Stream];

    /// A dense index (0 or 1), for arrays of per-framing encodings.
    pub fn index(self) -> usize {
        match self {
            Framing::Message => 0,
            Framing::Stream => 1,
        }
    }

    /// Wraps a GOIM packet (or a run of them) as this framing sends it: one unmasked binary
    /// WebSocket message, or the packets as they are.
    pub fn wrap(self, packets: &[u8]) -> Bytes {
        match self {
            Framing::Message => websocket::server_binary(packets),
            Framing::Stream => Bytes::copy_from_slice(packets),
        }
    }
}

/// The kind of listener a client connected through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket on plain TCP, `GET /sub`.
    Ws,
    /// WebSocket on TLS (rustls), `GET /sub`.
    Wss,
    /// GOIM packets on plain TCP (optionally behind a PROXY protocol header).
    Tcp,
    /// GOIM packets on TLS over TCP.
    Tls,
    /// GOIM packets on one client-opened bidirectional QUIC stream (ALPN `danmu/1`).
    Quic,
    /// GOIM packets on one bidirectional WebTransport stream (HTTP/3, ALPN `h3`).
    WebTransport,
}

impl Transport {
    /// Every transport, for metrics that list each one.
    pub const ALL: [Transport; 6] = [
        Transport::Ws,
        Transport::Wss,
        Transport::Tcp,
        Transport::Tls,
        Transport::Quic,
        Transport::WebTransport,
    ];

    /// The `transport` label of metrics and logs; also the key of the node list's address.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
            Transport::WebTransport => "webtransport",
        }
    }

    /// How this transport's packets are delimited.
    pub fn framing(self) -> Framing {
        match self {
            Transport::Ws | Transport::Wss => Framing::Message,
            Transport::Tcp | Transport::Tls | Transport::Quic | Transport::WebTransport => {
                Framing::Stream
            }
        }
    }

    /// Whether the bytes arrive encrypted by TLS or QUIC (rustls in both cases).
    pub fn is_encrypted(self) -> bool {
        match self {
            Transport::Ws | Transport::Tcp => false,
            Transport::Wss | Transport::Tls | Transport::Quic | Transport::WebTransport => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transport_has_one_framing_and_a_distinct_label() {
        let labels: std::collections::HashSet<_> =
            Transport::ALL.iter().map(|t| t.label()).collect();
        assert_eq!(labels.len(), Transport::ALL.len());
        for framing in Framing::ALL {
            assert_eq!(Framing::ALL[framing.index()], framing);
        }
        assert_eq!(Transport::Wss.framing(), Transport::Ws.framing());
        assert_eq!(Transport::Quic.framing(), Transport::Tcp.framing());
    }

    #[test]
    fn stream_framing_sends_packets_as_they_are_and_message_framing_one_binary_message() {
        let packet = danmu_proto::frame::heartbeat_reply(7);
        assert_eq!(Framing::Stream.wrap(&packet), packet);
        let message = Framing::Message.wrap(&packet);
        assert_eq!(message[0], 0x82, "FIN + binary opcode");
        assert_eq!(&message[message.len() - packet.len()..], &packet[..]);
    }
}
