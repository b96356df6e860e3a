//! How a connection's bytes are framed on the wire: the one fact about a connection that both the
//! fan-out (which pre-frames a batch once per transport) and the connection core need.

use bytes::Bytes;
use danmu_proto::websocket;

/// How a connection's bytes are framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    WebSocket,
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Tcp => "tcp",
        }
    }

    /// Wraps a GOIM packet (or a run of them) as this transport sends it.
    pub fn wrap(self, packets: &[u8]) -> Bytes {
        match self {
            Transport::WebSocket => websocket::server_binary(packets),
            Transport::Tcp => Bytes::copy_from_slice(packets),
        }
    }
}
