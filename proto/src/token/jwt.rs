//! Signing and verifying with jsonwebtoken. Keys are parsed with ed25519-dalek first, so a bad
//! PEM is reported when the issuer or verifier is built rather than on the first token, and
//! jsonwebtoken only ever sees key bytes of the exact length it expects.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::keys::pkcs8_der;
use super::{AUDIENCE, Claims, TokenError};

/// Signs tokens with control's private key.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
}

/// Verifies tokens with the public key. Cheap to clone: each gateway task may hold one.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenIssuer {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_private_pem(pem: &str) -> Result<Self, TokenError> {
        install_provider();
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(TokenIssuer {
            key: EncodingKey::from_ed_der(&pkcs8_der(&key)),
        })
    }

    /// A signed JWT (header `{"typ":"JWT","alg":"EdDSA"}`) carrying `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key).map_err(map_error)
    }
}

impl TokenVerifier {
    /// Reads an SPKI PEM Ed25519 public key.
    pub fn from_public_pem(pem: &str) -> Result<Self, TokenError> {
        install_provider();
        let key =
            VerifyingKey::from_public_key_pem(pem).map_err(|e| TokenError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time and audience are checked below against the caller's `now`: the library would read
        // the system clock and add 60 s of leeway.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims.clear();
        Ok(TokenVerifier {
            key: DecodingKey::from_ed_der(key.as_bytes()),
            validation,
        })
    }

    /// Checks the signature (EdDSA only), then `aud == AUDIENCE`, then `now_unix < exp`.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(map_error)?
            .claims;
        if claims.aud != AUDIENCE {
            return Err(TokenError::WrongAudience);
        }
        if claims.exp <= now_unix {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// jsonwebtoken picks its crypto backend from crate features, and panics on use if another crate
/// in the build also enables `aws_lc_rs`. Installing ours explicitly removes that failure mode;
/// if a provider is already installed, it is kept.
fn install_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

fn map_error(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat | ErrorKind::Signing(_) => {
            TokenError::Key(e.to_string())
        }
        _ => TokenError::Malformed,
    }
}
