//! One client connection (`danmu_gateway::connection::Connection`, the sans-IO core) fed
//! arbitrary bytes in arbitrary reads, on TCP (behind the PROXY protocol or not), a QUIC stream
//! and WebSocket: the upgrade parser, the WebSocket decoder, GOIM framing, AUTH and the session rules together.
//! Must hold: no panic; a connection that closes stays closed, with its first reason; the
//! heartbeat timeout ends every connection.

#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use danmu_gateway::connection::{CloseReason, Connection, Context, Limits, Now};
use danmu_gateway::connection::presence::Origin;
use danmu_gateway::connection::reach::ReachConfig;
use danmu_gateway::connection::session::SessionConfig;
use danmu_gateway::stats::Stats;
use danmu_gateway::connection::Transport;
use danmu_gateway::connection::{Handled, Sender};
use danmu_proto::token::{self, TokenVerifier};
use libfuzzer_sys::fuzz_target;

struct Fuzz {
    verifier: TokenVerifier,
    origin: Origin,
    stats: Stats,
}

static CONTEXT: LazyLock<Fuzz> = LazyLock::new(|| Fuzz {
    verifier: TokenVerifier::from_public_pem(&token::generate_keypair().public_pem).unwrap(),
    origin: Origin {
        gateway: "fuzz".into(),
        region: "A".into(),
    },
    stats: Stats::default(),
});

impl Context for Fuzz {
    fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }
    fn region(&self) -> &str {
        "A"
    }
    fn origin(&self) -> &Origin {
        &self.origin
    }
    fn online(&self, _room: u64, _now: Instant) -> u32 {
        0
    }
    fn upstream(&self, sender: &Sender<'_>, seq: u32, body: &[u8]) -> Handled {
        danmu_gateway::upstream::handle(None, &self.stats, sender, seq, body)
    }
    fn is_trusted_proxy(&self, _ip: IpAddr) -> bool {
        true
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
}

fn limits(proxy_protocol: bool) -> Limits {
    Limits {
        session: SessionConfig {
            auth_timeout: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(90),
        },
        max_packet_len: 4096,
        max_ws_message_len: 4096,
        max_handshake_len: 2048,
        outbound_queue_bytes: 1 << 16,
        reply_queue_bytes: 1024,
        socket_send_buffer: None,
        reach: ReachConfig {
            retry_after: Duration::from_secs(1),
            max_retries: 1,
            max_pending: 4,
        },
        close_linger: Duration::from_secs(1),
        drain_period: Duration::from_secs(1),
        write_stall: Duration::from_secs(1),
        queue_wait_sample: 64,
        low_priority_budget: 4096,
        proxy_protocol,
        allowed_origins: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (transport, proxy) = match selector % 4 {
        0 => (Transport::Tcp, false),
        1 => (Transport::Tcp, true),
        2 => (Transport::Ws, false),
        // The QUIC stream (and TLS, WebTransport): stream framing that never expects a PROXY
        // header, even where plain TCP is configured to.
        _ => (Transport::Quic, true),
    };
    let t0 = Instant::now();
    let ctx = &*CONTEXT;
    let mut conn = Connection::new(
        1,
        transport,
        "10.0.0.1".parse().unwrap(),
        std::sync::Arc::new(limits(proxy)),
        true,
        t0,
    );
    // Reads of sizes taken from the selector, so splits vary with the input.
    let chunk = usize::from(selector / 3).max(1);
    let mut buf = BytesMut::new();
    let mut closed: Option<CloseReason> = None;
    for (i, piece) in rest.chunks(chunk).enumerate() {
        let now = Now {
            instant: t0 + Duration::from_millis(i as u64),
            unix_ms: 1_700_000_000_000 + i as u64,
        };
        buf.extend_from_slice(piece);
        conn.handle_read(now, &mut buf, ctx);
        while conn.poll_event().is_some() {}
        if let Some(reason) = &closed {
            assert_eq!(conn.close_reason(), Some(reason), "a close is final");
        }
        closed = conn.close_reason().cloned();
    }
    let end = Now {
        instant: t0 + Duration::from_secs(100),
        unix_ms: 1_700_000_100_000,
    };
    conn.handle_timeout(end, ctx);
    assert!(
        conn.close_reason().is_some(),
        "the heartbeat timeout closes everything"
    );
});
