//! Ed25519 keys as PEM. We write the DER ourselves: both encodings are a fixed prefix followed by
//! 32 key bytes (RFC 8410), exactly what `openssl genpkey -algorithm ed25519` produces, and that
//! way key generation has no failure path.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;

/// PKCS#8 v1 `PrivateKeyInfo` for Ed25519 up to the 32-byte seed (RFC 8410 section 7).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// `SubjectPublicKeyInfo` for Ed25519 up to the 32-byte public key (RFC 8410 section 4).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An Ed25519 key pair in PEM: the private key for control, the public key for gateways.
#[derive(Clone)]
pub struct KeyPair {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub private_pem: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
    pub public_pem: String,
}

/// Keeps the private key out of logs.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("private_pem", &"[redacted]")
            .field("public_pem", &self.public_pem)
            .finish()
    }
}

/// A fresh key pair from the operating system's random source.
pub fn generate_keypair() -> KeyPair {
    let key = SigningKey::generate(&mut rand_core::OsRng);
    KeyPair {
        private_pem: pem("PRIVATE KEY", &pkcs8_der(&key)),
        public_pem: pem("PUBLIC KEY", &spki_der(&key.verifying_key().to_bytes())),
    }
}

/// PKCS#8 v1 DER of a signing key: the form jsonwebtoken's Ed25519 signer reads.
pub(crate) fn pkcs8_der(key: &SigningKey) -> Vec<u8> {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&key.to_bytes());
    der
}

fn spki_der(public: &[u8; 32]) -> Vec<u8> {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    der
}

fn pem(label: &str, der: &[u8]) -> String {
    // Both DER blobs are under 48 bytes, so the base64 fits one 64-column line.
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        STANDARD.encode(der)
    )
}
