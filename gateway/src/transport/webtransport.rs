//! WebTransport over HTTP/3 (draft-ietf-webtrans-http3) on the QUIC port: ALPN [`ALPN_H3`],
//! an extended CONNECT (RFC 9220) to [`PATH`] with `:protocol = webtransport`, then one
//! client-opened bidirectional WebTransport stream carrying exactly the bytes of the TCP
//! transport (AUTH first), through the same [`QuicSocket`] as QUIC.
//!
//! HTTP/3 itself (SETTINGS, QPACK, the CONNECT request and its response) is the `h3` crate on
//! `h3-quinn`, on the same quinn connection. The WebTransport stream is taken from quinn
//! directly, not through h3: its header (the signal value `0x41` and the session id, two QUIC
//! variable-length integers, draft-ietf-webtrans-http3 4.2) is read here, and the rest of the
//! stream is a plain quinn stream. So the connection task, its queues and its limits are the
//! ones of every other transport.
//!
//! After the CONNECT, h3 is not polled again: the client's control and QPACK streams stay
//! unread in quinn's buffers (bounded by the receive windows), and a second request or a
//! second session is never accepted.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::VarInt;

use super::Shared;
use super::quic::QuicSocket;
use crate::connection::Transport;

/// ALPN of HTTP/3 (RFC 9114), which WebTransport runs on.
pub const ALPN_H3: &[u8] = b"h3";

/// The path of the extended CONNECT that opens a session (`https://host:port/sub`).
pub const PATH: &str = "/sub";

/// Signal value opening a client bidirectional WebTransport stream
/// (draft-ietf-webtrans-http3, "WEBTRANSPORT_STREAM").
pub const WEBTRANSPORT_STREAM: u64 = 0x41;

/// HTTP/3 application error code of the gateway's closes (RFC 9114 8.1, H3_NO_ERROR); the
/// reason phrase is the close reason label (`docs/protocol.md`, "Close reasons").
pub const H3_NO_ERROR: u32 = 0x100;
/// HTTP/3 error code when no session or no stream came within the auth timeout, or the
/// request was not a WebTransport CONNECT to [`PATH`] (RFC 9114 8.1, H3_REQUEST_REJECTED).
pub const H3_REQUEST_REJECTED: u32 = 0x10b;

/// Bidirectional streams an HTTP/3 client needs: the CONNECT request and the one
/// WebTransport stream.
pub const BIDI_STREAMS: u32 = 2;
/// Unidirectional streams an HTTP/3 client opens: control, QPACK encoder, QPACK decoder
/// (RFC 9114 6.2, RFC 9204 4.2). Chromium refuses a server whose transport parameters allow
/// fewer, so every connection on the port starts with this many (`quic::transport_config`).
pub const UNI_STREAMS: u32 = 3;

/// Why a stream header was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The stream does not begin with [`WEBTRANSPORT_STREAM`].
    #[error("not a WebTransport stream (signal value {0:#x})")]
    NotWebTransport(u64),
    /// The stream belongs to another session than the one the CONNECT opened.
    #[error("stream of session {got}, the session is {expected}")]
    WrongSession { got: u64, expected: u64 },
}

/// Length in bytes of the QUIC variable-length integer whose first byte is `first`
/// (RFC 9000 16: the two high bits give 1, 2, 4 or 8).
pub fn varint_len(first: u8) -> usize {
    1 << (first >> 6)
}

/// Decodes one QUIC variable-length integer of exactly [`varint_len`] bytes (RFC 9000 16).
pub fn varint(bytes: &[u8]) -> u64 {
    bytes.iter().enumerate().fold(0, |value, (i, &b)| match i {
        0 => u64::from(b & 0x3f),
        _ => (value << 8) | u64::from(b),
    })
}

/// Checks a stream header (`signal`, `session`) against the session the CONNECT opened.
pub fn check_header(signal: u64, session: u64, expected: u64) -> Result<(), HeaderError> {
    if signal != WEBTRANSPORT_STREAM {
        return Err(HeaderError::NotWebTransport(signal));
    }
    if session != expected {
        return Err(HeaderError::WrongSession {
            got: session,
            expected,
        });
    }
    Ok(())
}

async fn read_varint(recv: &mut quinn::RecvStream) -> anyhow::Result<u64> {
    let mut buf = [0u8; 8];
    recv.read_exact(&mut buf[..1]).await?;
    let len = varint_len(buf[0]);
    recv.read_exact(&mut buf[1..len]).await?;
    Ok(varint(&buf[..len]))
}

/// Whether a request opens a WebTransport session on [`PATH`].
fn is_session_request(request: &http::Request<()>) -> bool {
    request.method() == http::Method::CONNECT
        && request.extensions().get::<h3::ext::Protocol>()
            == Some(&h3::ext::Protocol::WEB_TRANSPORT)
        && request.uri().path() == PATH
}

/// The HTTP/3 side of a connection: dropping it closes the QUIC connection (H3_NO_ERROR), so
/// the caller keeps it until its own close.
type Http3 = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// A request that was answered (`404`) rather than dropped: its response gets time to arrive.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Answered(String);

/// The session's CONNECT stream (kept for the session's life, never polled again) and its
/// WebTransport stream.
struct Session {
    _connect: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// HTTP/3 settings, the CONNECT and its response, then the WebTransport stream and its header.
async fn open_session(
    connection: &quinn::Connection,
    http3: &mut Option<Http3>,
) -> anyhow::Result<Session> {
    let h3 = http3.insert(
        h3::server::builder()
            .enable_extended_connect(true)
            .enable_webtransport(true)
            .enable_datagram(true)
            .max_webtransport_sessions(1)
            .send_grease(false)
            .build(h3_quinn::Connection::new(connection.clone()))
            .await?,
    );
    let resolver = h3
        .accept()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the connection ended before a request"))?;
    let (request, mut stream) = resolver.resolve_request().await?;
    if !is_session_request(&request) {
        let response = http::Response::builder()
            .status(http::StatusCode::NOT_FOUND)
            .body(())?;
        stream.send_response(response).await?;
        let _ = stream.finish().await;
        return Err(Answered(format!(
            "{} {} is not a WebTransport session on {PATH}",
            request.method(),
            request.uri()
        ))
        .into());
    }
    let response = http::Response::builder()
        .status(http::StatusCode::OK)
        // Chromium's draft-02 WebTransport looks for this header.
        .header("sec-webtransport-http3-draft", "draft02")
        .body(())?;
    stream.send_response(response).await?;
    let session = stream.id().into_inner();
    let (send, mut recv) = connection.accept_bi().await?;
    let signal = read_varint(&mut recv).await?;
    let stream_session = read_varint(&mut recv).await?;
    check_header(signal, stream_session, session)?;
    Ok(Session {
        _connect: stream,
        send,
        recv,
    })
}

/// One HTTP/3 connection (its handshake done by [`super::quic`]): the session and its stream
/// within the auth timeout, then the connection task on the stream, then the same orderly end
/// as QUIC. Counted under the `webtransport` label from here on.
pub(crate) async fn serve(connection: quinn::Connection, peer: SocketAddr, shared: Arc<Shared>) {
    let label = Transport::WebTransport.label();
    // quinn fixed the transport parameters (1 bidi, 3 uni) before the ALPN was known; raise
    // the bidirectional limit to what a session needs, for this connection only.
    connection.set_max_concurrent_bi_streams(VarInt::from_u32(BIDI_STREAMS));
    let limit = shared.limits.session.auth_timeout;
    let mut http3 = None;
    let opened = tokio::time::timeout(limit, open_session(&connection, &mut http3)).await;
    let session = match opened {
        Ok(Ok(session)) => session,
        outcome => {
            let why = match outcome {
                Ok(Err(error)) => {
                    if error.is::<Answered>() {
                        // The response is in flight: a close now would discard it.
                        let linger = shared.limits.close_linger;
                        let _ = tokio::time::timeout(linger, connection.closed()).await;
                    }
                    error.to_string()
                }
                _ => "no session within the auth timeout".to_string(),
            };
            tracing::debug!(%peer, %why, "WebTransport session refused");
            connection.close(VarInt::from_u32(H3_REQUEST_REJECTED), b"no_session");
            shared.stats.connection_closing(label, "no_session");
            return shared.stats.connection_ended(label);
        }
    };
    let socket = QuicSocket::new(session.send, session.recv);
    let close = VarInt::from_u32(H3_NO_ERROR);
    super::quic::serve_stream(
        socket,
        &connection,
        close,
        peer,
        Transport::WebTransport,
        shared,
    )
    .await;
    drop(http3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_of_every_length_decode() {
        // RFC 9000 A.1's examples.
        for (bytes, value) in [
            (&[0x25][..], 37),
            (&[0x40, 0x25][..], 37),
            (&[0x7b, 0xbd][..], 15293),
            (&[0x9d, 0x7f, 0x3e, 0x7d][..], 494_878_333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
                151_288_809_941_952_652,
            ),
        ] {
            assert_eq!(varint_len(bytes[0]), bytes.len());
            assert_eq!(varint(bytes), value);
        }
    }

    #[test]
    fn a_stream_header_names_the_session() {
        assert_eq!(check_header(0x41, 0, 0), Ok(()));
        assert_eq!(
            check_header(0x54, 0, 0),
            Err(HeaderError::NotWebTransport(0x54))
        );
        assert_eq!(
            check_header(0x41, 4, 0),
            Err(HeaderError::WrongSession {
                got: 4,
                expected: 0
            })
        );
    }
}
