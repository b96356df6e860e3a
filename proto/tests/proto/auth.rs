//! The AUTH body.

use danmu_proto::auth::{AuthError, AuthReply, AuthRequest, code};
use danmu_proto::frame::version;

#[test]
fn parses_the_spec_example() {
    let body = br#"{"uid":42,"roomid":1001,"protover":3,"platform":"web","type":2,"key":"<token>","buvid":"..."}"#;
    let req = AuthRequest::parse(body).unwrap();
    assert_eq!(
        req,
        AuthRequest {
            uid: 42,
            roomid: 1001,
            protover: 3,
            platform: "web".into(),
            kind: 2,
            key: "<token>".into(),
            buvid: "...".into(),
            ack: false,
            drain: false,
        }
    );
    assert_eq!(req.message_version(), Some(version::BROTLI));
}

#[test]
fn ack_opts_in_to_high_reach() {
    let req = AuthRequest::parse(br#"{"uid":1,"roomid":2,"key":"k","ack":true}"#).unwrap();
    assert!(req.ack);
}

#[test]
fn tolerates_unknown_and_missing_optional_fields() {
    let req = AuthRequest::parse(
        br#"{"uid":"7","roomid":"99","key":"k","clientver":"2.0.11","web_location":1}"#,
    )
    .unwrap();
    assert_eq!((req.uid, req.roomid, req.protover), (7, 99, 0));
    assert_eq!(req.kind, 0);
    assert!(req.platform.is_empty() && req.buvid.is_empty());
    assert_eq!(req.message_version(), Some(version::RAW));
}

#[test]
fn protover_mapping() {
    let mut req = AuthRequest::parse(br#"{"uid":1,"roomid":1,"key":""}"#).unwrap();
    for (p, v) in [
        (0, Some(0)),
        (1, Some(0)),
        (2, Some(2)),
        (3, Some(3)),
        (4, None),
    ] {
        req.protover = p;
        assert_eq!(req.message_version(), v);
    }
}

#[test]
fn bad_bodies_are_bad_requests() {
    for body in [
        &b""[..],
        b"{}",
        b"null",
        b"{\"uid\":1,\"roomid\":1}",
        b"{\"uid\":-1,\"roomid\":1,\"key\":\"k\"}",
        b"{\"uid\":\"x\",\"roomid\":1,\"key\":\"k\"}",
        b"\xff\xfe",
        b"[1,2,3]",
    ] {
        let err: AuthError = AuthRequest::parse(body).unwrap_err();
        assert_eq!(err.auth_code(), code::BAD_REQUEST);
    }
}

#[test]
fn reply_json() {
    assert_eq!(
        serde_json::to_string(&AuthReply { code: code::OK }).unwrap(),
        r#"{"code":0}"#
    );
    let reply: AuthReply = serde_json::from_slice(br#"{"code":-102}"#).unwrap();
    assert_eq!(reply.code, code::TOKEN_EXPIRED);
}
