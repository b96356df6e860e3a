//! Signing and verifying with jsonwebtoken. Keys are parsed with ed25519-dalek first, so a bad
//! PEM is reported when the issuer or verifier is built rather than on the first token, and
//! jsonwebtoken only ever sees key bytes of the exact length it expects.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use serde::Deserialize;

use super::keys::pkcs8_der;
use super::{AUDIENCE, Claims, IAT_LEEWAY_SECS, ISSUER, TokenError};

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
        // Time, audience and issuer are checked below against the caller's `now`: the library
        // would read the system clock and add 60 s of leeway.
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

    /// Verifies `token` at `now_unix` (unix seconds) and returns its claims. Checks, in order:
    /// the signature (EdDSA only) and the claims' shape ([`TokenError::Malformed`] when a
    /// required claim is missing or of the wrong type), `aud == AUDIENCE`, `iss == ISSUER`,
    /// `sub == uid` in decimal, `now_unix >= nbf` when the token has an `nbf` (RFC 7519 section
    /// 4.1.5; control does not write one), `iat <= now_unix + IAT_LEEWAY_SECS`, and
    /// `now_unix < exp` ([`Claims::check_time`]). `exp` and `nbf` get no leeway.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let Verified { claims, nbf } =
            jsonwebtoken::decode::<Verified>(token, &self.key, &self.validation)
                .map_err(map_error)?
                .claims;
        if claims.aud != AUDIENCE {
            return Err(TokenError::WrongAudience);
        }
        if claims.iss != ISSUER {
            return Err(TokenError::WrongIssuer);
        }
        if claims.sub != claims.uid.to_string() {
            return Err(TokenError::SubjectMismatch);
        }
        if nbf.is_some_and(|nbf| now_unix < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > now_unix.saturating_add(IAT_LEEWAY_SECS) {
            return Err(TokenError::IssuedInFuture);
        }
        claims.check_time(now_unix)?;
        Ok(claims)
    }
}

/// A token's payload as verified: our [`Claims`] plus the registered `nbf` claim, which control
/// does not write but which a token may carry and must then be honoured.
#[derive(Deserialize)]
struct Verified {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    nbf: Option<u64>,
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
