//! TLS with rustls for `wss` (WebSocket on TLS) and `tls` (GOIM packets on TLS over TCP).
//!
//! - [`Certificates`]: the certificate chains and keys from PEM files, chosen per handshake
//!   by SNI, and reloaded when the files change: a new handshake takes the new certificate, a
//!   connection already open keeps the session it has. A file that does not load keeps the
//!   last good set and says why in the log and in `danmu_gateway_tls_reloads_total`.
//! - [`TlsSocket`]: a TCP stream with a rustls server connection on it, behind the same
//!   readiness [`Socket`] interface as plain TCP, so the connection task and the core are the
//!   same for both. The handshake is driven by the connection's own reads and writes, so it
//!   runs inside the core's auth timeout: a client that never finishes it is closed when AUTH
//!   is overdue.

use std::io::{self, IoSlice, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use danmu_runtime::config::duration;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, ServerConnection};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::Socket;
use crate::stats::Stats;

/// ALPN of `wss`: the WebSocket upgrade is HTTP/1.1 (RFC 6455 4.1). Browsers offer `h2`
/// as well; the server picks `http/1.1`. A client offering no ALPN is served too.
pub const ALPN_WSS: &[&[u8]] = &[b"http/1.1"];

/// The `[tls]` section of the gateway's configuration: certificates for `wss_listen`,
/// `tls_listen` and `quic_listen`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chains (PEM, leaf first) and their private keys (PEM: PKCS#8, PKCS#1 or
    /// SEC1). A handshake whose SNI one certificate is valid for gets the first such one;
    /// without SNI, or when none is valid for it, the first certificate.
    pub certificates: Vec<CertificateFiles>,
    /// How often the files are read again and, when changed, loaded (default 10s).
    #[serde(deserialize_with = "duration::deserialize")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            certificates: Vec::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// One certificate chain and its key, as files (cert-manager's `tls.crt` and `tls.key`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why a certificate set did not load; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no [[tls.certificates]] configured")]
    Empty,
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The loaded certificates, as rustls resolves them for each handshake.
#[derive(Debug)]
pub struct Certificates {
    files: Vec<CertificateFiles>,
    current: RwLock<Loaded>,
    /// Changed files loaded since start.
    pub reloads: AtomicU64,
    /// Changed files refused since start (the previous set stayed).
    pub reload_errors: AtomicU64,
}

/// The bytes of one certificate file and its key file.
type RawPair = (Vec<u8>, Vec<u8>);

#[derive(Debug)]
struct Loaded {
    keys: Vec<Arc<CertifiedKey>>,
    /// The files' bytes as last read (loaded or refused), to notice a change.
    raw: Vec<RawPair>,
}

impl Certificates {
    /// Loads every certificate; any file that fails fails the whole set.
    pub fn load(files: &[CertificateFiles]) -> Result<Arc<Certificates>, LoadError> {
        let raw = read_all(files)?;
        let keys = parse_all(files, &raw)?;
        Ok(Arc::new(Certificates {
            files: files.to_vec(),
            current: RwLock::new(Loaded { keys, raw }),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        }))
    }

    /// Reads the files again; when their bytes changed, loads them. `Ok(true)`: a new set is
    /// in force; `Ok(false)`: nothing changed (or this content was refused before); `Err`:
    /// the new content was refused and the last good set stays.
    pub fn reload(&self) -> Result<bool, LoadError> {
        let raw = read_all(&self.files)?;
        if self.read().raw == raw {
            return Ok(false);
        }
        let parsed = parse_all(&self.files, &raw);
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.raw = raw;
        current.keys = parsed?;
        Ok(true)
    }

    /// The chain served to a client asking for `sni` (none: the first certificate).
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let current = self.read();
        let name = sni.and_then(|sni| ServerName::try_from(sni).ok());
        let chosen = name.and_then(|name| {
            current.keys.iter().find(|key| {
                key.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
                })
            })
        });
        chosen.or_else(|| current.keys.first()).cloned()
    }

    /// SHA-256 of the first certificate's DER: what a browser's WebTransport
    /// `serverCertificateHashes` names for a self-signed certificate.
    pub fn first_sha256(&self) -> Option<[u8; 32]> {
        let current = self.read();
        let der = current.keys.first()?.end_entity_cert().ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        digest.as_ref().try_into().ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads every `interval` until `stop`, logging and counting each outcome.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!("TLS certificates reloaded");
                    self.reloads.fetch_add(1, Ordering::Relaxed);
                    Stats::tls_reload("ok");
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS certificates not reloaded; the previous ones stay");
                    self.reload_errors.fetch_add(1, Ordering::Relaxed);
                    Stats::tls_reload("error");
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name())
    }
}

fn read_all(files: &[CertificateFiles]) -> Result<Vec<RawPair>, LoadError> {
    if files.is_empty() {
        return Err(LoadError::Empty);
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })
    };
    files
        .iter()
        .map(|f| Ok((read(&f.cert_file)?, read(&f.key_file)?)))
        .collect()
}

fn parse_all(
    files: &[CertificateFiles],
    raw: &[RawPair],
) -> Result<Vec<Arc<CertifiedKey>>, LoadError> {
    let provider = rustls::crypto::ring::default_provider();
    files
        .iter()
        .zip(raw)
        .map(|(files, (cert, key))| {
            let invalid = |path: &PathBuf, reason: String| LoadError::Invalid {
                path: path.clone(),
                reason,
            };
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    invalid(
                        &files.cert_file,
                        format!("not a PEM certificate chain: {e}"),
                    )
                })?;
            if chain.is_empty() {
                return Err(invalid(&files.cert_file, "no CERTIFICATE block".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| invalid(&files.key_file, format!("not a PEM private key: {e}")))?;
            CertifiedKey::from_der(chain, key, &provider)
                .map(Arc::new)
                .map_err(|e| {
                    invalid(
                        &files.key_file,
                        format!("does not fit the certificate: {e}"),
                    )
                })
        })
        .collect()
}

/// Why [`self_signed`] made no certificate.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// Browsers accept a certificate pinned by hash for at most 14 days (W3C WebTransport,
    /// `serverCertificateHashes`).
    #[error("a self-signed certificate may last at most 14 days, not {0}")]
    TooLong(u32),
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
}

/// A self-signed certificate and its key (both PEM) for `names` (DNS names or IP addresses),
/// valid from an hour ago for `days`: an ECDSA P-256 key, and at most 14 days, so a browser
/// may also trust it by its hash for WebTransport (`serverCertificateHashes` accepts nothing
/// else). For development and tests; production certificates come from a CA.
///
/// Errors: `days` above 14, or a name rcgen refuses.
pub fn self_signed(names: &[String], days: u32) -> Result<(String, String), SelfSignedError> {
    if days > 14 {
        return Err(SelfSignedError::TooLong(days));
    }
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A rustls server configuration on `certificates` offering `alpn` (TLS 1.2 and 1.3,
/// ring's cipher suites, no client certificates, no 0-RTT).
pub fn server_config(certificates: Arc<Certificates>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The same on TLS 1.3 only, as QUIC requires (RFC 9001 4.2).
pub fn server_config_tls13(certificates: Arc<Certificates>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3")
            .with_no_client_auth()
            .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TCP stream carrying TLS, read and written in plaintext through the readiness interface.
///
/// rustls buffers at most 64 KiB of records not yet written (its default buffer limit);
/// plaintext is taken only when those have left, so a slow reader shows as a full socket to
/// the core exactly as on plain TCP.
pub struct TlsSocket {
    tcp: TcpStream,
    state: Mutex<State>,
    transport: &'static str,
    stats: Arc<Stats>,
}

struct State {
    tls: ServerConnection,
    /// A failure was counted already (or the handshake finished: nothing more to count).
    counted: bool,
}

impl TlsSocket {
    /// Starts a server-side TLS connection on an accepted stream; `transport` labels its
    /// handshake failures.
    pub fn new(
        tcp: TcpStream,
        config: Arc<ServerConfig>,
        transport: &'static str,
        stats: Arc<Stats>,
    ) -> Result<TlsSocket, rustls::Error> {
        Ok(TlsSocket {
            tcp,
            state: Mutex::new(State {
                tls: ServerConnection::new(config)?,
                counted: false,
            }),
            transport,
            stats,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes pending records until none is left or the socket is full.
    fn write_records(&self, state: &mut State) -> io::Result<()> {
        while state.tls.wants_write() {
            match state.tls.write_tls(&mut TcpIo(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn failed(&self, state: &mut State, error: &rustls::Error) {
        if state.tls.is_handshaking() && !state.counted {
            state.counted = true;
            self.stats
                .tls_handshake_failed(self.transport, failure_reason(error));
        }
        tracing::debug!(%error, transport = self.transport, "TLS failed");
        // The alert rustls queued for the peer, if the socket takes it now.
        let _ = self.write_records(state);
    }
}

impl Drop for TlsSocket {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.tls.is_handshaking() && !state.counted {
            // Closed before the handshake ended: the auth timeout, the client leaving, or
            // the gateway refusing it.
            self.stats
                .tls_handshake_failed(self.transport, "incomplete");
        }
    }
}

/// A label for why a handshake failed (`danmu_gateway_tls_handshake_failures_total{reason}`).
pub fn failure_reason(error: &rustls::Error) -> &'static str {
    use rustls::Error as E;
    match error {
        E::InvalidMessage(_) => "bad_message",
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "unexpected_message"
        }
        E::PeerIncompatible(_) => "incompatible",
        E::PeerMisbehaved(_) => "misbehaved",
        E::AlertReceived(_) => "alert_received",
        E::NoApplicationProtocol => "no_alpn",
        E::DecryptError => "decrypt_error",
        _ => "other",
    }
}

/// `Read`/`Write` over a tokio TCP stream without blocking: `WouldBlock` when not ready.
struct TcpIo<'a>(&'a TcpStream);

impl Read for TcpIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TcpIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for TlsSocket {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Plaintext already decrypted (or a close already seen) needs no more bytes.
        if !self.state().tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut guard = self.state();
        let state = &mut *guard;
        let mut chunk = [0u8; 4096];
        loop {
            match state.tls.reader().read(&mut chunk) {
                Ok(0) => return Ok(0),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The TCP stream ended without close_notify: the peer is gone all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match state.tls.read_tls(&mut TcpIo(&self.tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(error) = state.tls.process_new_packets() {
                self.failed(state, &error);
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            if !state.tls.is_handshaking() {
                state.counted = true;
            }
            // Handshake messages, session tickets, key updates: out as soon as they exist;
            // what the socket does not take now goes with the next write.
            match self.write_records(state) {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }

    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut guard = self.state();
        let state = &mut *guard;
        // Records already made leave first; new plaintext waits behind them.
        self.write_records(state)?;
        let taken = state.tls.writer().write_vectored(bufs)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.write_records(state) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    fn wants_flush(&self) -> bool {
        self.state().tls.wants_write()
    }

    fn try_flush(&self) -> io::Result<()> {
        let mut guard = self.state();
        self.write_records(&mut guard)
    }

    fn start_close(&self) {
        self.state().tls.send_close_notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(names: &[&str]) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn write(
        dir: &std::path::Path,
        name: &str,
        (cert, key): &(String, String),
    ) -> CertificateFiles {
        let files = CertificateFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert).unwrap();
        std::fs::write(&files.key_file, key).unwrap();
        files
    }

    fn der(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().to_vec()
    }

    #[test]
    fn a_self_signed_certificate_loads_and_lasts_at_most_fourteen_days() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = super::self_signed(&names, 13).unwrap();
        let files = write(dir.path(), "s", &(cert, key));
        let certs = Certificates::load(&[files]).unwrap();
        assert!(certs.select(Some("localhost")).is_some());
        assert!(certs.first_sha256().is_some());
        assert!(super::self_signed(&names, 15).is_err());
    }

    #[test]
    fn sni_picks_the_certificate_valid_for_the_name_and_falls_back_to_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a", &generated(&["a.example"]));
        let b = write(dir.path(), "b", &generated(&["*.b.example"]));
        let certs = Certificates::load(&[a, b]).unwrap();
        let first = der(&certs.select(None).unwrap());
        let second = der(&certs.select(Some("x.b.example")).unwrap());
        assert_ne!(first, second);
        assert_eq!(der(&certs.select(Some("a.example")).unwrap()), first);
        assert_eq!(der(&certs.select(Some("other.example")).unwrap()), first);
    }

    #[test]
    fn a_changed_file_is_loaded_and_a_bad_one_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), "a", &generated(&["a.example"]));
        let certs = Certificates::load(std::slice::from_ref(&files)).unwrap();
        let before = der(&certs.select(None).unwrap());
        assert!(!certs.reload().unwrap(), "unchanged files load nothing");

        write(dir.path(), "a", &generated(&["a.example"]));
        assert!(certs.reload().unwrap());
        let renewed = der(&certs.select(None).unwrap());
        assert_ne!(before, renewed);

        std::fs::write(&files.cert_file, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let error = certs.reload().unwrap_err().to_string();
        assert!(error.contains("a.crt"), "{error}");
        assert_eq!(der(&certs.select(None).unwrap()), renewed);
        assert!(
            !certs.reload().unwrap(),
            "the refused content is not tried again"
        );
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = generated(&["a.example"]);
        let (_, other_key) = generated(&["a.example"]);
        let files = write(dir.path(), "a", &(cert, other_key));
        let error = Certificates::load(&[files]).unwrap_err().to_string();
        assert!(error.contains("a.key") && error.contains("fit"), "{error}");
        let missing = CertificateFiles {
            cert_file: dir.path().join("nope.crt"),
            key_file: dir.path().join("nope.key"),
        };
        let error = Certificates::load(&[missing]).unwrap_err().to_string();
        assert!(error.contains("nope.crt"), "{error}");
    }
}
