//! Self-signed certificates for the gateway's TLS and QUIC listeners, in files as the gateway
//! reads them, and a rustls client configuration that trusts exactly them.

use std::sync::Arc;

use danmu_gateway::transport::tls::CertificateFiles;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// A certificate for `localhost` and `127.0.0.1` in a temporary directory (removed on Drop).
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
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let generated = rcgen::generate_simple_self_signed(names).expect("a certificate");
        self.pem = generated.cert.pem();
        // The key first: a reload between the two writes sees a key that does not fit the old
        // certificate and keeps the previous pair, rather than a mismatched one.
        std::fs::write(&self.files.key_file, generated.signing_key.serialize_pem())
            .expect("writing the key");
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
