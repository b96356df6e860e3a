//! The token signing key: loaded from the configured PEM, with the public half derived from it
//! (served at `GET /v1/public-key`) and checked by signing and verifying one token at start.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};

use danmu_proto::token::{Claims, TokenIssuer, TokenVerifier};

use crate::config::{Config, ConfigError};

/// Control's signing key and the matching public key in PEM.
pub struct SigningKeys {
    pub issuer: TokenIssuer,
    pub public_pem: String,
}

impl SigningKeys {
    /// Reads the key named by `private_key_pem_path` or `private_key_pem`.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        match (&config.private_key_pem_path, &config.private_key_pem) {
            (Some(path), _) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::invalid(
                        "private_key_pem_path",
                        format!("reading {}: {e}", path.display()),
                    )
                })?;
                Self::from_private_pem(&pem)
                    .map_err(|reason| ConfigError::invalid("private_key_pem_path", reason))
            }
            (None, Some(pem)) => Self::from_private_pem(pem.expose())
                .map_err(|reason| ConfigError::invalid("private_key_pem", reason)),
            (None, None) => Err(ConfigError::invalid(
                "private_key_pem_path",
                "no token signing key configured",
            )),
        }
    }

    /// Parses a PKCS#8 PEM Ed25519 private key; the reason when it is unusable.
    pub fn from_private_pem(pem: &str) -> Result<Self, String> {
        let issuer =
            TokenIssuer::from_private_pem(pem).map_err(|e| format!("not an Ed25519 key: {e}"))?;
        let public_pem = SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| format!("not an Ed25519 key: {e}"))?
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("encoding the public key: {e}"))?;
        // Gateways verify with `public_pem`: prove now that it matches what we sign with.
        let verifier = TokenVerifier::from_public_pem(&public_pem)
            .map_err(|e| format!("derived public key unusable: {e}"))?;
        let probe = issuer
            .issue(&Claims::new(0, 0, u64::MAX))
            .map_err(|e| format!("signing a probe token: {e}"))?;
        verifier
            .verify(&probe, 1)
            .map_err(|e| format!("probe token does not verify with the derived public key: {e}"))?;
        Ok(SigningKeys { issuer, public_pem })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use danmu_proto::token::generate_keypair;

    #[test]
    fn derives_the_same_public_key_keygen_writes() {
        let pair = generate_keypair();
        let keys = SigningKeys::from_private_pem(&pair.private_pem).unwrap();
        assert_eq!(keys.public_pem.trim(), pair.public_pem.trim());
    }

    #[test]
    fn bad_keys_name_their_source() {
        let config = Config {
            private_key_pem: Some(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
            ),
            ..Config::default()
        };
        let msg = SigningKeys::load(&config).err().unwrap().to_string();
        assert!(msg.starts_with("config key `private_key_pem`:"), "{msg}");

        let config = Config {
            private_key_pem_path: Some("/nonexistent/control.key.pem".into()),
            ..Config::default()
        };
        let msg = SigningKeys::load(&config).err().unwrap().to_string();
        assert!(
            msg.contains("private_key_pem_path") && msg.contains("/nonexistent"),
            "{msg}"
        );
    }
}
