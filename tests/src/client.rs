//! A protocol client for tests: speaks GOIM framing over WebSocket or TCP (plain or on TLS)
//! exactly as a third-party client would, decodes every batch fully, and counts what it
//! received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::{Bytes, BytesMut};
use danmu_proto::frame::{self, Frame, op};
use danmu_proto::{batch, websocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte stream the client reads and writes: TCP, TLS on TCP, a QUIC stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// TLS for [`Client::connect_tls`]: the client configuration and the name to ask for (SNI).
#[derive(Clone)]
pub struct Tls {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Tcp,
}

/// What arrives from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Frame(Frame),
    /// The connection closed; WebSocket close code and reason when one was sent.
    Closed(Option<(u16, String)>),
}

pub struct Client {
    transport: Transport,
    stream: Box<dyn Stream>,
    /// The server's certificate (DER) on TLS.
    pub peer_certificate: Option<Vec<u8>>,
    read_buf: BytesMut,
    ws: Option<websocket::Decoder>,
    /// Payload bytes of WebSocket messages not yet split into GOIM packets.
    packets: BytesMut,
    events: VecDeque<Event>,
    closed: bool,
    /// Outer MESSAGE frames received (a batch counts once).
    pub message_frames: u64,
    /// Versions seen on MESSAGE frames.
    pub versions_seen: Vec<u16>,
    /// The upgrade response, for handshake tests.
    handshake: String,
}

const MAX: usize = 16 * 1024 * 1024;

impl Client {
    pub async fn connect(transport: Transport, addr: SocketAddr) -> anyhow::Result<Client> {
        Self::connect_path(transport, addr, "/sub").await
    }

    /// Like [`Client::connect`], upgrading on another WebSocket path.
    pub async fn connect_path(
        transport: Transport,
        addr: SocketAddr,
        path: &str,
    ) -> anyhow::Result<Client> {
        Self::connect_with(transport, addr, path, None, None).await
    }

    /// Like [`Client::connect`], from another local address, e.g. `127.0.0.2` (any `127/8`
    /// address is loopback): what the gateway sees as this client's IP.
    pub async fn connect_from(
        transport: Transport,
        addr: SocketAddr,
        local: std::net::IpAddr,
    ) -> anyhow::Result<Client> {
        Self::connect_with(transport, addr, "/sub", None, Some(local)).await
    }

    /// A client with a small kernel receive buffer: one that stops reading backs the gateway up
    /// quickly (slow-reader tests).
    pub async fn connect_slow(
        transport: Transport,
        addr: SocketAddr,
        receive_buffer: u32,
    ) -> anyhow::Result<Client> {
        Self::connect_with(transport, addr, "/sub", Some(receive_buffer), None).await
    }

    /// A WebSocket client whose upgrade request carries `headers` (replacing the standard
    /// header of the same name, e.g. `Sec-WebSocket-Version`), for handshake tests.
    pub async fn connect_with_headers(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Client> {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        let standard = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        for (name, value) in standard {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        Self::connect_request(
            Transport::WebSocket,
            addr,
            Some(request.into_bytes()),
            None,
            None,
            None,
        )
        .await
    }

    /// The server's upgrade response (status line and headers), empty on TCP.
    pub fn handshake_response(&self) -> &str {
        &self.handshake
    }

    async fn connect_with(
        transport: Transport,
        addr: SocketAddr,
        path: &str,
        receive_buffer: Option<u32>,
        local: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Client> {
        let request = (transport == Transport::WebSocket).then(|| {
            websocket::client_request(&addr.to_string(), path, "dGhlIHNhbXBsZSBub25jZQ==")
        });
        Self::connect_request(transport, addr, request, receive_buffer, local, None).await
    }

    /// Connects over TLS: `wss` with [`Transport::WebSocket`], TLS on TCP with
    /// [`Transport::Tcp`].
    pub async fn connect_tls(
        transport: Transport,
        addr: SocketAddr,
        tls: &Tls,
    ) -> anyhow::Result<Client> {
        let request = (transport == Transport::WebSocket).then(|| {
            websocket::client_request(&tls.server_name, "/sub", "dGhlIHNhbXBsZSBub25jZQ==")
        });
        Self::connect_request(transport, addr, request, None, None, Some(tls)).await
    }

    /// A client on a byte stream already open (a QUIC stream, say), framed as `transport`.
    pub async fn on_stream(
        transport: Transport,
        stream: Box<dyn Stream>,
        request: Option<Vec<u8>>,
    ) -> anyhow::Result<Client> {
        Self::start(transport, stream, request, None).await
    }

    async fn connect_request(
        transport: Transport,
        addr: SocketAddr,
        request: Option<Vec<u8>>,
        receive_buffer: Option<u32>,
        local: Option<std::net::IpAddr>,
        tls: Option<&Tls>,
    ) -> anyhow::Result<Client> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        if let Some(ip) = local {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("binding {ip}"))?;
        }
        let stream: TcpStream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        match tls {
            None => Self::start(transport, Box::new(stream), request, None).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())?;
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(name, stream)
                    .await
                    .with_context(|| format!("TLS handshake with {addr}"))?;
                let peer = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| der.to_vec());
                Self::start(transport, Box::new(stream), request, peer).await
            }
        }
    }

    async fn start(
        transport: Transport,
        mut stream: Box<dyn Stream>,
        request: Option<Vec<u8>>,
        peer_certificate: Option<Vec<u8>>,
    ) -> anyhow::Result<Client> {
        let mut read_buf = BytesMut::new();
        let mut handshake = String::new();
        let ws = if let Some(request) = request {
            stream.write_all(&request).await?;
            loop {
                if let Some((status, consumed)) = websocket::parse_response(&read_buf)? {
                    handshake = String::from_utf8_lossy(&read_buf[..consumed]).into_owned();
                    if status != 101 {
                        bail!("upgrade refused with HTTP {status}: {handshake:?}");
                    }
                    let _ = read_buf.split_to(consumed);
                    break;
                }
                if stream.read_buf(&mut read_buf).await? == 0 {
                    bail!("closed during the upgrade");
                }
            }
            Some(websocket::Decoder::new(websocket::Role::Client, MAX))
        } else {
            None
        };
        Ok(Client {
            transport,
            stream,
            peer_certificate,
            read_buf,
            ws,
            packets: BytesMut::new(),
            events: VecDeque::new(),
            closed: false,
            message_frames: 0,
            versions_seen: Vec::new(),
            handshake,
        })
    }

    /// Sends raw bytes as the transport carries them (one binary message on WebSocket).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self.transport {
            Transport::Tcp => {
                self.stream.write_all(bytes).await?;
                self.stream.flush().await?;
            }
            Transport::WebSocket => {
                self.send_ws(websocket::opcode::BINARY, bytes).await?;
            }
        }
        Ok(())
    }

    /// Sends one WebSocket frame (masked, as clients must).
    pub async fn send_ws(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        let frame = websocket::client_frame(opcode, payload, [0x12, 0x34, 0x56, 0x78]);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    pub async fn send(&mut self, frame: &Frame) -> anyhow::Result<()> {
        self.send_bytes(&frame.to_bytes()).await
    }

    /// Sends AUTH and returns the AUTH_REPLY code.
    pub async fn auth(
        &mut self,
        uid: u64,
        room: u64,
        protover: u16,
        key: &str,
    ) -> anyhow::Result<i32> {
        self.auth_with(uid, room, protover, key, serde_json::json!({}))
            .await
    }

    /// AUTH with extra fields merged into the body, e.g. `{"ack": true}` or `{"drain": true}`.
    pub async fn auth_with(
        &mut self,
        uid: u64,
        room: u64,
        protover: u16,
        key: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<i32> {
        let mut body = serde_json::json!({
            "uid": uid, "roomid": room, "protover": protover, "platform": "web", "type": 2,
            "key": key, "buvid": "test-buvid",
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.send(&Frame::new(1, op::AUTH, 1, serde_json::to_vec(&body)?))
            .await?;
        match self.next(Duration::from_secs(10)).await? {
            Event::Frame(f) if f.op == op::AUTH_REPLY => {
                let reply: serde_json::Value = serde_json::from_slice(&f.body)
                    .with_context(|| format!("AUTH_REPLY body {:?}", f.body))?;
                Ok(reply["code"].as_i64().context("AUTH_REPLY without code")? as i32)
            }
            other => bail!("expected AUTH_REPLY, got {other:?}"),
        }
    }

    /// ROOM_CHANGE to `room`; returns the ROOM_CHANGE_REPLY body (`{"code":C,"roomid":R}`),
    /// checking the reply echoes the request's sequence.
    pub async fn change_room(&mut self, room: u64) -> anyhow::Result<serde_json::Value> {
        const SEQ: u32 = 7;
        let body = serde_json::json!({ "roomid": room }).to_string();
        self.send(&Frame::new(1, op::ROOM_CHANGE, SEQ, Bytes::from(body)))
            .await?;
        loop {
            match self.next(Duration::from_secs(20)).await? {
                Event::Frame(f) if f.op == op::ROOM_CHANGE_REPLY => {
                    anyhow::ensure!(f.seq == SEQ, "the reply echoes the request's sequence");
                    return Ok(serde_json::from_slice(&f.body)?);
                }
                Event::Frame(_) => {}
                Event::Closed(why) => bail!("closed while waiting for ROOM_CHANGE_REPLY: {why:?}"),
            }
        }
    }

    /// Sends a heartbeat and returns the online count of the reply.
    pub async fn heartbeat(&mut self) -> anyhow::Result<u32> {
        self.send(&Frame::new(1, op::HEARTBEAT, 2, Bytes::new()))
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Event::Frame(f) if f.op == op::HEARTBEAT_REPLY => {
                    let body: [u8; 4] = f.body[..]
                        .try_into()
                        .context("HEARTBEAT_REPLY body is not 4 bytes")?;
                    return Ok(u32::from_be_bytes(body));
                }
                Event::Frame(_) => continue,
                Event::Closed(why) => bail!("closed while waiting for HEARTBEAT_REPLY: {why:?}"),
            }
        }
    }

    /// The next frame or close, within `timeout`; an error when nothing came in time.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Event> {
        self.next_within(timeout)
            .await?
            .context("timed out waiting for the gateway")
    }

    /// The next frame or close, or `None` when `timeout` passes first. An error is a read or
    /// decode failure, never the timeout.
    async fn next_within(&mut self, timeout: Duration) -> anyhow::Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if self.closed {
                return Ok(Some(Event::Closed(None)));
            }
            self.read_buf.reserve(64 * 1024);
            let Ok(read) =
                tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf)).await
            else {
                return Ok(None);
            };
            match read {
                Ok(0) | Err(_) => {
                    self.parse()?;
                    self.closed = true;
                    if !self.events.iter().any(|e| matches!(e, Event::Closed(_))) {
                        self.events.push_back(Event::Closed(None));
                    }
                }
                Ok(_) => self.parse()?,
            }
        }
    }

    fn parse(&mut self) -> anyhow::Result<()> {
        match &mut self.ws {
            None => {
                while let Some(f) = frame::decode(&mut self.read_buf, MAX)? {
                    self.events.push_back(Event::Frame(f));
                }
            }
            Some(decoder) => {
                while let Some(message) = decoder.decode(&mut self.read_buf)? {
                    match message {
                        websocket::Message::Binary(payload) => {
                            self.packets.extend_from_slice(&payload);
                            while let Some(f) = frame::decode(&mut self.packets, MAX)? {
                                self.events.push_back(Event::Frame(f));
                            }
                            if !self.packets.is_empty() {
                                bail!("a WebSocket message ended inside a GOIM packet");
                            }
                        }
                        websocket::Message::Close(reason) => {
                            self.events.push_back(Event::Closed(reason));
                            self.closed = true;
                        }
                        other => bail!("unexpected WebSocket message {other:?}"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives MESSAGE frames until `count` business messages have arrived, unpacking
    /// batches; other frames are ignored.
    pub async fn messages(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Bytes>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .next(left)
                .await
                .with_context(|| format!("got {} of {count} messages", out.len()))?
            {
                Event::Frame(f) if f.op == op::MESSAGE => out.extend(self.unpack(&f)?),
                Event::Frame(_) => {}
                Event::Closed(why) => {
                    bail!("closed after {} of {count} messages: {why:?}", out.len())
                }
            }
        }
        Ok(out)
    }

    /// Unpacks one MESSAGE frame (any version) into its business payloads.
    pub fn unpack(&mut self, f: &Frame) -> anyhow::Result<Vec<Bytes>> {
        self.message_frames += 1;
        if !self.versions_seen.contains(&f.version) {
            self.versions_seen.push(f.version);
        }
        let inner = batch::unpack(f, MAX)?;
        Ok(inner.into_iter().map(|f| f.body).collect())
    }

    /// Checks that nothing arrives within `quiet` while the connection stays open: a frame, a
    /// close, or bytes that do not decode are each an error.
    pub async fn expect_silence(&mut self, quiet: Duration) -> anyhow::Result<()> {
        match self
            .next_within(quiet)
            .await
            .context("expected silence, but what arrived did not decode")?
        {
            None => Ok(()),
            Some(event) => bail!("expected silence, got {event:?}"),
        }
    }

    /// Waits for the connection to close, skipping frames; returns the close frame if any.
    pub async fn closed(&mut self, timeout: Duration) -> anyhow::Result<Option<(u16, String)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Event::Closed(why) = self.next(left).await? {
                return Ok(why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A TCP client connected to a local peer that `peer` drives.
    async fn with_peer<F>(peer: impl FnOnce(TcpStream) -> F + Send + 'static) -> Client
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            peer(stream).await;
        });
        Client::connect(Transport::Tcp, addr).await.unwrap()
    }

    const QUIET: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn silence_passes_while_the_peer_stays_quiet() {
        let (keep, kept) = tokio::sync::oneshot::channel::<()>();
        let mut client = with_peer(|stream| async move {
            let _ = kept.await;
            drop(stream);
        })
        .await;
        client.expect_silence(QUIET).await.unwrap();
        drop(keep);
    }

    #[tokio::test]
    async fn silence_fails_on_a_closed_connection() {
        let mut client = with_peer(|stream| async move { drop(stream) }).await;
        let err = client.expect_silence(QUIET).await.unwrap_err();
        assert!(format!("{err:#}").contains("Closed"), "{err:#}");
    }

    #[tokio::test]
    async fn silence_fails_on_bytes_that_do_not_decode() {
        let (keep, kept) = tokio::sync::oneshot::channel::<()>();
        let mut client = with_peer(|mut stream| async move {
            // A packet length of 1 is shorter than the 16-byte header.
            let mut header = [0u8; 16];
            header[3] = 1;
            stream.write_all(&header).await.unwrap();
            let _ = kept.await;
        })
        .await;
        let err = client.expect_silence(QUIET).await.unwrap_err();
        assert!(format!("{err:#}").contains("did not decode"), "{err:#}");
        drop(keep);
    }

    #[tokio::test]
    async fn silence_fails_on_a_frame() {
        let (keep, kept) = tokio::sync::oneshot::channel::<()>();
        let mut client = with_peer(|mut stream| async move {
            let frame = Frame::new(1, op::HEARTBEAT_REPLY, 0, Bytes::from_static(&[0, 0, 0, 1]));
            stream.write_all(&frame.to_bytes()).await.unwrap();
            let _ = kept.await;
        })
        .await;
        let err = client.expect_silence(QUIET).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("expected silence, got Frame"),
            "{err:#}"
        );
        drop(keep);
    }
}
