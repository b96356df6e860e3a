//! `POST /v1/tokens` (business backends ask for a client's token) and `GET /v1/public-key`.
//!
//! The request is checked in plain functions ([`authorize`], [`claims_for`]) so the rules are
//! tested without HTTP; the handler only moves bytes and the clock in.

use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use danmu_proto::token::Claims;
use metrics::counter;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::config::Secret;
use crate::error::ApiError;
use crate::metrics::{TOKEN_REQUESTS_REJECTED, TOKENS_ISSUED};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most rooms one token may name: keeps tokens (sent on every connect) small.
pub const MAX_ROOMS: usize = 1000;
/// Longest device id.
pub const MAX_DEVICE_LEN: usize = 256;

/// `POST /v1/tokens` body. Unknown fields are refused: a typo such as `"room"` must not
/// silently yield a token for any room.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub uid: u64,
    /// Device id (`buvid`); empty or absent: the token is not bound to a device.
    #[serde(default)]
    pub device: String,
    /// Rooms the token allows; absent: any room. `null` is refused like any other value that
    /// is not an array of room ids: Go marshals an empty slice as `null`, and reading it as
    /// "absent" would turn a user with no rooms into a user with every room.
    #[serde(default, deserialize_with = "present")]
    pub rooms: Option<Vec<u64>>,
    /// Requested lifetime; absent: `token_ttl`; above `token_max_ttl`: capped. `null` is
    /// refused: absent is the only way to ask for the default.
    #[serde(default, deserialize_with = "present")]
    pub ttl_secs: Option<u64>,
}

/// Reads an optional field that, when present, must hold a `T`: `null` is an error
/// ("invalid type: null, expected ..."), not `None`. Absence is handled by `#[serde(default)]`,
/// which never calls this.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `POST /v1/tokens` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The lifetime granted, after capping.
    pub ttl_secs: u64,
}

/// Token lifetimes from configuration.
#[derive(Debug, Clone, Copy)]
pub struct TokenLifetimes {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

/// Why a caller was refused, with its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingKey,
    BadKey,
}

/// Checks `Authorization: Bearer <key>` against the configured keys. No keys configured:
/// open (local demo; `run` warns at start).
pub fn authorize(headers: &HeaderMap, api_keys: &[Secret]) -> Result<(), AuthError> {
    if api_keys.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, key) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|key| !key.is_empty())
        .ok_or(AuthError::MissingKey)?;
    // Compare against every key without stopping early, so timing reveals nothing.
    let matched = api_keys.iter().fold(false, |found, key| {
        found | constant_time_eq(key.expose().as_bytes(), presented.as_bytes())
    });
    if matched {
        Ok(())
    } else {
        Err(AuthError::BadKey)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The claims for a valid request at `now_unix`, or why the request is bad.
pub fn claims_for(
    request: &TokenRequest,
    lifetimes: TokenLifetimes,
    now_unix: u64,
) -> Result<Claims, String> {
    let ttl = match request.ttl_secs {
        Some(0) => return Err("ttl_secs must be at least 1".into()),
        Some(secs) => secs.min(lifetimes.max_ttl.as_secs()),
        None => lifetimes.default_ttl.as_secs(),
    };
    if request.device.len() > MAX_DEVICE_LEN {
        return Err(format!("device is longer than {MAX_DEVICE_LEN} bytes"));
    }
    if let Some(rooms) = &request.rooms {
        if rooms.is_empty() {
            return Err("rooms is empty, which allows no room; omit it to allow any room".into());
        }
        if rooms.len() > MAX_ROOMS {
            return Err(format!("rooms lists more than {MAX_ROOMS} rooms"));
        }
    }
    let mut claims = Claims::new(request.uid, now_unix, ttl);
    claims.dev = request.device.clone();
    claims.rooms = request.rooms.clone();
    Ok(claims)
}

fn reject(reason: &'static str, error: ApiError) -> ApiError {
    counter!(TOKEN_REQUESTS_REJECTED, "reason" => reason).increment(1);
    error
}

/// `POST /v1/tokens`.
pub async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TokenResponse>, ApiError> {
    authorize(&headers, &state.inner.api_keys).map_err(|e| match e {
        AuthError::MissingKey => reject(
            "missing_key",
            ApiError::unauthorized("missing Authorization: Bearer <api key>"),
        ),
        AuthError::BadKey => reject("bad_key", ApiError::unauthorized("unknown api key")),
    })?;
    let body = body.map_err(|e| reject("bad_request", ApiError::bad_request(e.body_text())))?;
    let request: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
        reject(
            "bad_request",
            ApiError::bad_request(format!("bad JSON body: {e}")),
        )
    })?;
    let now = state
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = claims_for(&request, state.inner.lifetimes, now)
        .map_err(|reason| reject("bad_request", ApiError::bad_request(reason)))?;
    let token = state.inner.keys.issuer.issue(&claims).map_err(|e| {
        tracing::error!(error = %e, "signing a token failed");
        reject("internal", ApiError::internal("could not sign the token"))
    })?;
    counter!(TOKENS_ISSUED).increment(1);
    tracing::debug!(uid = claims.uid, exp = claims.exp, "token issued");
    Ok(Json(TokenResponse {
        token,
        expires_at: claims.exp,
        ttl_secs: claims.exp - claims.iat,
    }))
}

/// `GET /v1/public-key`: the SPKI PEM gateways verify tokens with.
pub async fn public_key(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-pem-file"),
        )],
        state.inner.keys.public_pem.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIMES: TokenLifetimes = TokenLifetimes {
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(86_400),
    };

    fn request(json: &str) -> TokenRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn claims_carry_the_request() {
        let claims = claims_for(
            &request(r#"{"uid":42,"device":"buvid","rooms":[1001],"ttl_secs":600}"#),
            LIFETIMES,
            1000,
        )
        .unwrap();
        assert_eq!((claims.uid, claims.sub.as_str()), (42, "42"));
        assert_eq!(claims.dev, "buvid");
        assert_eq!(claims.rooms, Some(vec![1001]));
        assert_eq!((claims.iat, claims.exp), (1000, 1600));
    }

    #[test]
    fn ttl_defaults_and_caps() {
        let claims = claims_for(&request(r#"{"uid":1}"#), LIFETIMES, 0).unwrap();
        assert_eq!(claims.exp, 3600);
        assert_eq!(claims.rooms, None);
        let claims =
            claims_for(&request(r#"{"uid":1,"ttl_secs":999999999}"#), LIFETIMES, 0).unwrap();
        assert_eq!(claims.exp, 86_400);
    }

    #[test]
    fn bad_requests() {
        let bad = |json: &str| claims_for(&request(json), LIFETIMES, 0).unwrap_err();
        assert!(bad(r#"{"uid":1,"ttl_secs":0}"#).contains("ttl_secs"));
        assert!(bad(r#"{"uid":1,"rooms":[]}"#).contains("rooms"));
        let many: Vec<u64> = (0..=MAX_ROOMS as u64).collect();
        assert!(bad(&format!(r#"{{"uid":1,"rooms":{many:?}}}"#)).contains("rooms"));
        assert!(serde_json::from_str::<TokenRequest>(r#"{"uid":1,"room":[5]}"#).is_err());
    }

    /// `null` (what Go sends for an empty slice) must not read as "absent", which for `rooms`
    /// would mean every room.
    #[test]
    fn null_is_not_absent() {
        for json in [
            r#"{"uid":1,"rooms":null}"#,
            r#"{"uid":1,"rooms":"7"}"#,
            r#"{"uid":1,"rooms":7}"#,
            r#"{"uid":1,"rooms":[null]}"#,
            r#"{"uid":1,"rooms":{}}"#,
            r#"{"uid":1,"ttl_secs":null}"#,
            r#"{"uid":null}"#,
            r#"{"uid":1,"device":null}"#,
        ] {
            let error = serde_json::from_str::<TokenRequest>(json).unwrap_err();
            assert!(
                error.to_string().contains("invalid type"),
                "{json}: {error}"
            );
        }
    }

    #[test]
    fn bearer_keys() {
        let keys: Vec<Secret> = vec!["k1".into(), "k2".into()];
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            authorize(&headers, &keys)
        };
        assert_eq!(with("Bearer k2"), Ok(()));
        assert_eq!(with("bearer  k1 "), Ok(()));
        assert_eq!(with("Bearer k3"), Err(AuthError::BadKey));
        assert_eq!(with("Bearer k"), Err(AuthError::BadKey));
        assert_eq!(with("Basic k1"), Err(AuthError::MissingKey));
        assert_eq!(with("Bearer "), Err(AuthError::MissingKey));
        assert_eq!(
            authorize(&HeaderMap::new(), &keys),
            Err(AuthError::MissingKey)
        );
        assert_eq!(authorize(&HeaderMap::new(), &[]), Ok(()));
    }
}
