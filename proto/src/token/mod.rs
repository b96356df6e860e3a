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
/// The `iss` control writes. Informational: gateways trust the key, not this string.
pub const ISSUER: &str = "danmu-control";

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
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expires at, unix seconds: valid while `now < exp`.
    pub exp: u64,
    /// Issuer, normally [`ISSUER`].
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
    /// `aud` is not [`AUDIENCE`].
    #[error("token audience is not {AUDIENCE}")]
    WrongAudience,
    /// A key could not be read or used.
    #[error("key error: {0}")]
    Key(String),
}

impl TokenError {
    /// The AUTH_REPLY code: an expired token asks the client to fetch a new one, anything else
    /// is simply invalid.
    pub fn auth_code(&self) -> i32 {
        match self {
            TokenError::Expired => code::TOKEN_EXPIRED,
            _ => code::TOKEN_INVALID,
        }
    }
}
