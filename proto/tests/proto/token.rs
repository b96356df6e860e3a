//! Tokens: round trip, expiry and not-before at the exact boundary, issuance time, forgery,
//! audience, issuer, subject, algorithm confusion, garbage.

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use danmu_proto::auth::code;
use danmu_proto::token::{
    AUDIENCE, Claims, IAT_LEEWAY_SECS, ISSUER, KeyPair, TokenError, TokenIssuer, TokenVerifier,
    generate_keypair,
};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;

static KEYS: LazyLock<KeyPair> = LazyLock::new(generate_keypair);

fn issuer() -> TokenIssuer {
    TokenIssuer::from_private_pem(&KEYS.private_pem).unwrap()
}

fn verifier() -> TokenVerifier {
    TokenVerifier::from_public_pem(&KEYS.public_pem).unwrap()
}

fn claims() -> Claims {
    Claims {
        dev: "dev-1".into(),
        rooms: Some(vec![1001, 1002]),
        ..Claims::new(42, NOW, 600)
    }
}

#[test]
fn round_trip() {
    let c = claims();
    let token = issuer().issue(&c).unwrap();
    assert_eq!(token.split('.').count(), 3);
    let got = verifier().verify(&token, NOW).unwrap();
    assert_eq!(got, c);
    assert_eq!((got.sub.as_str(), got.uid), ("42", 42));
    assert_eq!((got.iss.as_str(), got.aud.as_str()), (ISSUER, AUDIENCE));
    assert!(got.allows_room(1001) && !got.allows_room(7));
}

#[test]
fn optional_claims_are_omitted_and_default() {
    let c = Claims::new(5, NOW, 60);
    assert!(c.allows_room(123_456));
    let token = issuer().issue(&c).unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(!json.contains("dev") && !json.contains("rooms"), "{json}");
    assert_eq!(verifier().verify(&token, NOW).unwrap(), c);
    let none = Claims {
        rooms: Some(vec![]),
        ..c
    };
    assert!(!none.allows_room(1));
}

#[test]
fn expiry_boundary_is_exact() {
    let c = claims();
    let token = issuer().issue(&c).unwrap();
    assert!(verifier().verify(&token, c.exp - 1).is_ok());
    assert_eq!(verifier().verify(&token, c.exp), Err(TokenError::Expired));
    assert_eq!(
        verifier().verify(&token, c.exp + 1),
        Err(TokenError::Expired)
    );
    assert_eq!(TokenError::Expired.auth_code(), code::TOKEN_EXPIRED);
}

/// A token signed with our key whose payload is `json` as is (claims [`Claims`] cannot write).
fn signed(json: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &json,
        &jsonwebtoken::EncodingKey::from_ed_pem(KEYS.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// [`claims`] as JSON with `nbf` added.
fn with_nbf(nbf: serde_json::Value) -> String {
    let mut json = serde_json::to_value(claims()).unwrap();
    json["nbf"] = nbf;
    signed(json)
}

#[test]
fn not_before_in_the_future_is_refused_without_leeway() {
    let token = with_nbf((NOW + 60).into());
    let err = verifier().verify(&token, NOW).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid);
    assert_eq!(err.auth_code(), code::TOKEN_INVALID);
    assert_eq!(
        verifier().verify(&token, NOW + 59),
        Err(TokenError::NotYetValid)
    );
    // Valid from `nbf` itself on.
    assert_eq!(verifier().verify(&token, NOW + 60).unwrap(), claims());
    assert_eq!(
        verifier().verify(&with_nbf(NOW.into()), NOW).unwrap(),
        claims()
    );
    // An `nbf` that is not unix seconds is not a token we can judge.
    for bad in [serde_json::json!("soon"), serde_json::json!(-1)] {
        assert_eq!(
            verifier().verify(&with_nbf(bad), NOW),
            Err(TokenError::Malformed)
        );
    }
}

#[test]
fn issued_in_the_future_beyond_the_leeway_is_refused() {
    let at = |iat| issuer().issue(&Claims { iat, ..claims() }).unwrap();
    assert!(verifier().verify(&at(NOW + IAT_LEEWAY_SECS), NOW).is_ok());
    let err = verifier()
        .verify(&at(NOW + IAT_LEEWAY_SECS + 1), NOW)
        .unwrap_err();
    assert_eq!(err, TokenError::IssuedInFuture);
    assert_eq!(err.auth_code(), code::TOKEN_INVALID);
}

#[test]
fn expired_token_is_refused_even_when_everything_else_holds() {
    let c = Claims::new(42, NOW - 3600, 600);
    let err = verifier()
        .verify(&issuer().issue(&c).unwrap(), NOW)
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.auth_code()),
        (TokenError::Expired, code::TOKEN_EXPIRED)
    );
}

#[test]
fn check_time_refuses_a_verified_token_once_it_expires() {
    let c = verifier()
        .verify(&issuer().issue(&claims()).unwrap(), NOW)
        .unwrap();
    assert_eq!(c.check_time(NOW), Ok(()));
    assert_eq!(c.check_time(c.exp - 1), Ok(()));
    assert_eq!(c.check_time(c.exp), Err(TokenError::Expired));
    assert_eq!(c.check_time(u64::MAX), Err(TokenError::Expired));
}

#[test]
fn wrong_issuer_or_subject() {
    let c = Claims {
        iss: "someone-else".into(),
        ..claims()
    };
    let err = verifier()
        .verify(&issuer().issue(&c).unwrap(), NOW)
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.auth_code()),
        (TokenError::WrongIssuer, code::TOKEN_INVALID)
    );
    let c = Claims {
        sub: "43".into(),
        ..claims()
    };
    let err = verifier()
        .verify(&issuer().issue(&c).unwrap(), NOW)
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.auth_code()),
        (TokenError::SubjectMismatch, code::TOKEN_INVALID)
    );
}

#[test]
fn forged_with_another_key() {
    let other = generate_keypair();
    let token = TokenIssuer::from_private_pem(&other.private_pem)
        .unwrap()
        .issue(&claims())
        .unwrap();
    let err = verifier().verify(&token, NOW).unwrap_err();
    assert_eq!(err, TokenError::BadSignature);
    assert_eq!(err.auth_code(), code::TOKEN_INVALID);
}

#[test]
fn tampered_payload() {
    let token = issuer().issue(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c.uid = 1;
    let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(
        verifier().verify(&forged, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn wrong_audience() {
    let c = Claims {
        aud: "someone-else".into(),
        ..claims()
    };
    let token = issuer().issue(&c).unwrap();
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn alg_none_is_rejected() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let err = verifier().verify(&token, NOW).unwrap_err();
        assert_eq!(err.auth_code(), code::TOKEN_INVALID, "{err:?}");
    }
}

#[test]
fn hs256_keyed_with_the_public_key_is_rejected() {
    // The classic confusion attack: HMAC "signed" with the public key, which attackers know.
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(KEYS.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verifier().verify(&token, NOW),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn garbage_is_malformed() {
    for token in [
        "",
        ".",
        "..",
        "a.b.c",
        "abc",
        "a.b",
        "a.b.c.d",
        "eyJ.eyJ.x",
        "ü.ü.ü",
    ] {
        let err = verifier().verify(token, NOW).unwrap_err();
        assert_eq!(err.auth_code(), code::TOKEN_INVALID, "{token}: {err:?}");
    }
    // A validly signed token whose claims have the wrong shape.
    let token = signed(serde_json::json!({"sub": "x", "exp": NOW + 60}));
    assert_eq!(verifier().verify(&token, NOW), Err(TokenError::Malformed));
}

#[test]
fn keys_are_standard_pem() {
    assert!(
        KEYS.private_pem
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(KEYS.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(&KEYS.private_pem).unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(&KEYS.public_pem).unwrap();
    assert_eq!(sk.verifying_key(), vk);
    assert_ne!(generate_keypair().private_pem, KEYS.private_pem);
}

#[test]
fn accepts_pkcs8_v2_keys_from_other_tools() {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
    let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let private = sk.to_pkcs8_pem(LineEnding::LF).unwrap();
    let public = sk
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let token = TokenIssuer::from_private_pem(&private)
        .unwrap()
        .issue(&claims())
        .unwrap();
    let v = TokenVerifier::from_public_pem(&public).unwrap();
    assert_eq!(v.clone().verify(&token, NOW).unwrap(), claims());
}

#[test]
fn bad_keys_are_key_errors() {
    for pem in ["", "garbage", KEYS.public_pem.as_str()] {
        assert!(matches!(
            TokenIssuer::from_private_pem(pem),
            Err(TokenError::Key(_))
        ));
    }
    for pem in ["", "garbage", KEYS.private_pem.as_str()] {
        assert!(matches!(
            TokenVerifier::from_public_pem(pem),
            Err(TokenError::Key(_))
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_verify_arbitrary_strings(s in any::<String>(), now in any::<u64>()) {
        prop_assert!(verifier().verify(&s, now).is_err());
    }

    #[test]
    fn fuzz_verify_jwt_shaped(
        parts in proptest::collection::vec("[A-Za-z0-9_=+/-]{0,80}", 1..5),
        now in any::<u64>(),
    ) {
        prop_assert!(verifier().verify(&parts.join("."), now).is_err());
    }

    #[test]
    fn fuzz_verify_json_parts(
        header in prop_oneof![Just(r#"{"alg":"EdDSA","typ":"JWT"}"#.to_owned()), any::<String>()],
        payload in any::<String>(),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(sig)
        );
        prop_assert!(verifier().verify(&token, 0).is_err());
    }
}

#[test]
fn debug_output_hides_the_private_key() {
    let shown = format!("{:?}", *KEYS);
    assert!(!shown.contains(KEYS.private_pem.lines().nth(1).unwrap()));
    assert!(shown.contains("redacted"));
}
