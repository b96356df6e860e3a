//! Self-signed certificates for the gateway's TLS and QUIC listeners, in files as the gateway
//! reads them, and a rustls client configuration that trusts exactly them.

use std::sync::Arc;

use danmu_gateway::transport::tls::CertificateFiles;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A self-signed certificate for `localhost` and `127.0.0.1` (PEM certificate, PEM PKCS#8
/// key) that a browser accepts by its hash in WebTransport's `serverCertificateHashes`: an
/// ECDSA P-256 key, valid from an hour ago for 13 days (the W3C WebTransport rule: at most
/// 14 days, no RSA).
pub fn short_lived_certificate() -> (String, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = rcgen::CertificateParams::new(names).expect("valid names");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(13);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
    let cert = params.self_signed(&key).expect("a certificate");
    (cert.pem(), key.serialize_pem())
}

/// A certificate from [`short_lived_certificate`] in a temporary directory (removed on Drop).
pub struct TestCert {
    dir: tempfile::TempDir,
    pub files: CertificateFiles,
    /// The certificate (PEM) last written.
    pub pem: String,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files = CertificateFiles {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
        };
        let mut cert = TestCert {
            dir,
            files,
            pem: String::new(),
        };
        cert.renew();
        cert
    }

    /// Writes a new certificate and key over the files (as cert-manager renews a Secret).
    pub fn renew(&mut self) {
        let (cert, key) = short_lived_certificate();
        self.pem = cert;
        // The key first: a reload between the two writes sees a key that does not fit the old
        // certificate and keeps the previous pair, rather than a mismatched one.
        std::fs::write(&self.files.key_file, key).expect("writing the key");
        std::fs::write(&self.files.cert_file, &self.pem).expect("writing the certificate");
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The DER of the certificate last written.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.pem.as_bytes())
            .expect("our own PEM")
            .to_vec()
    }

    /// A client configuration trusting this certificate only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config_trusting(&[self.der()], alpn)
    }
}

/// A client configuration trusting the given certificates (DER) only, offering `alpn`.
pub fn client_config_trusting(ders: &[Vec<u8>], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for der in ders {
        roots
            .add(CertificateDer::from(der.clone()))
            .expect("a valid certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring's defaults")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every connection does a full handshake: a resumed session shows the certificate of the
    // session it resumes, not the one the server holds now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Adds `wss`, `tls` and `quic` listeners on free loopback ports with `cert` to a gateway
/// config.
pub fn with_tls(config: &mut danmu_gateway::Config, cert: &TestCert) {
    config.wss_listen = Some(([127, 0, 0, 1], 0).into());
    config.tls_listen = Some(([127, 0, 0, 1], 0).into());
    config.quic_listen = Some(([127, 0, 0, 1], 0).into());
    config.tls.certificates = vec![cert.files.clone()];
}

/// A QUIC client connection to a gateway's `quic_listen`, trusting `cert`, with ALPN
/// `danmu/1`, on its own client endpoint (bound to an ephemeral loopback port).
pub async fn quic_connect(
    addr: std::net::SocketAddr,
    cert: &TestCert,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    let crypto = cert.client_config(&[danmu_gateway::transport::quic::ALPN_DANMU]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?;
    let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = endpoint.connect(addr, "localhost")?.await?;
    Ok((endpoint, connection))
}

/// Opens the one bidirectional stream of a QUIC connection as a [`crate::client::Client`]
/// stream (framed like TCP).
pub async fn quic_client(connection: &quinn::Connection) -> anyhow::Result<crate::client::Client> {
    let (send, recv) = connection.open_bi().await?;
    let stream = tokio::io::join(recv, send);
    crate::client::Client::on_stream(crate::client::Transport::Tcp, Box::new(stream), None).await
}

/// A WebTransport session as a browser opens one, on its own client endpoint: QUIC with ALPN
/// `h3`, HTTP/3 SETTINGS, an extended CONNECT to `https://localhost:<port>/sub`, then a
/// bidirectional stream that starts with the WebTransport stream header and carries the
/// session as a [`crate::client::Client`] stream (framed like TCP).
pub struct WebTransportSession {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    /// The CONNECT stream, open for the session's life.
    pub connect: h3::client::RequestStream<h3_quinn::BidiStream<bytes::Bytes>, bytes::Bytes>,
    /// Sends further requests; kept so the HTTP/3 connection stays open.
    pub requests: h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    /// The CONNECT's response status.
    pub status: http::StatusCode,
}

impl WebTransportSession {
    /// Opens a session on `path`; the status tells whether the gateway accepted it.
    pub async fn connect(
        addr: std::net::SocketAddr,
        cert: &TestCert,
        path: &str,
    ) -> anyhow::Result<WebTransportSession> {
        let crypto = cert.client_config(&[danmu_gateway::transport::webtransport::ALPN_H3]);
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)?;
        let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into())?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint.connect(addr, "localhost")?.await?;
        let (mut driver, mut requests) = h3::client::builder()
            .enable_extended_connect(true)
            .enable_datagram(true)
            .send_grease(false)
            .build::<_, _, bytes::Bytes>(h3_quinn::Connection::new(connection.clone()))
            .await?;
        // The driver reads the server's control stream; it ends with the connection.
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri(format!("https://localhost:{}{path}", addr.port()))
            .extension(h3::ext::Protocol::WEB_TRANSPORT)
            .body(())?;
        let mut connect = requests.send_request(request).await?;
        let status = connect.recv_response().await?.status();
        Ok(WebTransportSession {
            endpoint,
            connection,
            connect,
            requests,
            status,
        })
    }

    /// Opens the session's bidirectional stream with `header` bytes first (the WebTransport
    /// stream header: [`Self::stream_header`]).
    pub async fn open_stream(&self, header: &[u8]) -> anyhow::Result<crate::client::Client> {
        let (mut send, recv) = self.connection.open_bi().await?;
        send.write_all(header).await?;
        let stream = tokio::io::join(recv, send);
        crate::client::Client::on_stream(crate::client::Transport::Tcp, Box::new(stream), None)
            .await
    }

    /// The header of a WebTransport stream of this session: `0x41` and the session id (the
    /// CONNECT stream's id), each a two-byte QUIC varint.
    pub fn stream_header(&self) -> Vec<u8> {
        let session = self.connect.id().into_inner();
        assert!(session < 1 << 14, "a two-byte varint");
        vec![0x40, 0x41, 0x40 | (session >> 8) as u8, session as u8]
    }
}
