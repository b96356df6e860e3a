//! Token verification (`token::TokenVerifier::verify`). Two inputs per run: the fuzz bytes as a
//! whole token string, which must be refused (nobody can forge our signature); and the bytes as
//! the claims JSON of a token we sign with the real key, so the claims checks run on arbitrary
//! payloads. Must hold: no panic; an accepted token's claims meet every check `verify`
//! documents.

#![no_main]

use std::sync::LazyLock;

use danmu_proto::auth::code;
use danmu_proto::token::{
    AUDIENCE, IAT_LEEWAY_SECS, ISSUER, KeyPair, TokenError, TokenVerifier, generate_keypair,
};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

static KEYS: LazyLock<KeyPair> = LazyLock::new(generate_keypair);
static VERIFIER: LazyLock<TokenVerifier> =
    LazyLock::new(|| TokenVerifier::from_public_pem(&KEYS.public_pem).unwrap());
static SIGNER: LazyLock<jsonwebtoken::EncodingKey> =
    LazyLock::new(|| jsonwebtoken::EncodingKey::from_ed_pem(KEYS.private_pem.as_bytes()).unwrap());

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        assert!(
            VERIFIER.verify(s, NOW).is_err(),
            "accepted an unsigned token"
        );
    }
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let signed = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &payload,
        &SIGNER,
    )
    .expect("signing");
    match VERIFIER.verify(&signed, NOW) {
        Ok(claims) => {
            assert_eq!(claims.aud, AUDIENCE);
            assert_eq!(claims.iss, ISSUER);
            assert_eq!(claims.sub, claims.uid.to_string());
            assert!(claims.iat <= NOW + IAT_LEEWAY_SECS);
            assert!(NOW < claims.exp);
            assert_eq!(claims.check_time(NOW), Ok(()));
            if let Some(nbf) = payload.get("nbf").filter(|v| !v.is_null()) {
                assert!(nbf.as_u64().is_some_and(|nbf| nbf <= NOW));
            }
        }
        Err(TokenError::Expired) => {
            assert!(payload["exp"].as_u64().is_some_and(|exp| exp <= NOW));
        }
        Err(e) => {
            assert_eq!(e.auth_code(), code::TOKEN_INVALID, "{e:?}");
            assert!(
                !matches!(e, TokenError::Key(_) | TokenError::BadSignature),
                "{e:?}"
            );
        }
    }
});
