//! Connection tokens: JWTs signed by control with an Ed25519 key, verified by gateways locally
//! with the public key, so authenticating a connection needs no round trip. Only EdDSA is
//! accepted: a token cannot pick a weaker algorithm (`none`, or HS256 keyed with the public key).

mod jwt;
mod keys;

use serde::{Deserialize, Serialize};

use crate::auth::code;

pub use jwt::{TokenIssuer, TokenVerifier};
pub use keys::{KeyPair, generate_keypair};

/// The `aud` every token must carry: gateways are its only consumers.
pub const AUDIENCE: &str = "danmu-gateway";
/// The `iss` every token must carry: control is the only issuer. The key is what proves it;
/// the check refuses a token signed with our key for another purpose.
pub const ISSUER: &str = "danmu-control";
/// How far in the future `iat` may lie, in seconds, before a token is refused: control stamps
/// `iat` with its own clock, and a gateway whose clock lags control's by a second must still
/// accept a token issued just now. `exp` and `nbf` get no leeway.
pub const IAT_LEEWAY_SECS: u64 = 60;

/// What a token says about its bearer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Claims {
    /// The uid as a string (JWT convention); `uid` is authoritative.
    pub sub: String,
    /// User id; the AUTH body's `uid` must equal it.
    pub uid: u64,
    /// Device id, when the token is bound to one device (device-scope pushes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dev: String,
    /// Rooms the bearer may enter; `None` means any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<u64>>,
    /// Issued at, unix seconds; refused when more than [`IAT_LEEWAY_SECS`] after the
    /// verification time.
    pub iat: u64,
    /// Expires at, unix seconds: valid while `now < exp`.
    pub exp: u64,
    /// Issuer, must be [`ISSUER`].
    pub iss: String,
    /// Audience, must be [`AUDIENCE`].
    pub aud: String,
}

impl Claims {
    /// Claims for `uid`, valid from `now_unix` for `ttl_secs`, any room, no device binding.
    pub fn new(uid: u64, now_unix: u64, ttl_secs: u64) -> Self {
        Claims {
            sub: uid.to_string(),
            uid,
            dev: String::new(),
            rooms: None,
            iat: now_unix,
            exp: now_unix.saturating_add(ttl_secs),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        }
    }

    /// Re-checks, at `now_unix` (unix seconds), the time claim that can turn a verified token
    /// invalid later: valid while `now_unix < exp`, otherwise [`TokenError::Expired`]. The
    /// gateway calls it before acting on a token it verified earlier (e.g. a room change). The
    /// other time claims (`nbf`, `iat`) only become easier to satisfy as time passes, so
    /// [`TokenVerifier::verify`] checking them once is enough.
    pub fn check_time(&self, now_unix: u64) -> Result<(), TokenError> {
        if now_unix < self.exp {
            Ok(())
        } else {
            Err(TokenError::Expired)
        }
    }

    /// Whether the bearer may enter `room`.
    pub fn allows_room(&self, room: u64) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.contains(&room))
    }
}

/// Why a token was not accepted (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, bad base64 or JSON, or claims of the wrong shape.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than EdDSA.
    #[error("token algorithm is not EdDSA")]
    WrongAlgorithm,
    /// The signature does not verify with our public key (forged, or another issuer's key).
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is not after the verification time.
    #[error("token expired")]
    Expired,
    /// `nbf` (not before) is after the verification time.
    #[error("token not valid yet")]
    NotYetValid,
    /// `iat` is more than [`IAT_LEEWAY_SECS`] after the verification time.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `aud` is not [`AUDIENCE`].
    #[error("token audience is not {AUDIENCE}")]
    WrongAudience,
    /// `iss` is not [`ISSUER`].
    #[error("token issuer is not {ISSUER}")]
    WrongIssuer,
    /// `sub` is not `uid` written in decimal.
    #[error("token subject does not match its uid")]
    SubjectMismatch,
    /// A key could not be read or used.
    #[error("key error: {0}")]
    Key(String),
}

impl TokenError {
    /// The AUTH_REPLY code: an expired token asks the client to fetch a new one
    /// ([`code::TOKEN_EXPIRED`]); anything else, a token not valid yet included, is
    /// [`code::TOKEN_INVALID`].
    pub fn auth_code(&self) -> i32 {
        match self {
            TokenError::Expired => code::TOKEN_EXPIRED,
            _ => code::TOKEN_INVALID,
        }
    }
}
