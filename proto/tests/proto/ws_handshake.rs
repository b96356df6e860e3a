//! The WebSocket upgrade, both sides.

use danmu_proto::websocket::{
    HandshakeError, accept_key, accept_response, accept_response_with_protocol, client_key,
    client_request, error_response, parse_response, parse_upgrade_request,
};

const CHROME: &str = "GET /sub?room=1 HTTP/1.1\r\n\
Host: danmu.example:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0\r\n\
Upgrade: websocket\r\n\
Origin: https://live.example\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n\
\r\n";

#[test]
fn rfc6455_accept_key() {
    // RFC 6455 section 1.3: base64 of a 20-byte SHA-1, hence 28 characters.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn parses_a_browser_request() {
    let mut buf = CHROME.as_bytes().to_vec();
    buf.extend_from_slice(b"\x82\x80"); // the first frame may follow in the same read
    let (req, n) = parse_upgrade_request(&buf, 8192).unwrap().unwrap();
    assert_eq!(n, CHROME.len());
    assert_eq!(req.path, "/sub");
    assert_eq!(req.key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(
        req.offered_extensions,
        vec!["permessage-deflate; client_max_window_bits"]
    );
    assert_eq!(req.forwarded_for.as_deref(), Some("203.0.113.7, 10.0.0.1"));
    assert!(req.protocols.is_empty());
}

#[test]
fn incomplete_then_complete() {
    for n in 0..CHROME.len() {
        assert_eq!(
            parse_upgrade_request(&CHROME.as_bytes()[..n], 8192),
            Ok(None)
        );
    }
}

#[test]
fn size_limit() {
    assert_eq!(
        parse_upgrade_request(CHROME.as_bytes(), 100),
        Err(HandshakeError::TooLarge { max: 100 })
    );
    let endless = "GET /sub HTTP/1.1\r\nX-Pad: ".to_owned() + &"a".repeat(10_000);
    let err = parse_upgrade_request(endless.as_bytes(), 4096).unwrap_err();
    assert_eq!(err.status(), 431);
}

fn request(lines: &[&str]) -> String {
    format!(
        "GET /sub HTTP/1.1\r\nHost: h\r\n{}\r\n\r\n",
        lines.join("\r\n")
    )
}

#[test]
fn required_headers() {
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let ok = [
        "Upgrade: WebSocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13",
        key,
    ];
    assert!(
        parse_upgrade_request(request(&ok).as_bytes(), 4096)
            .unwrap()
            .is_some()
    );
    let cases: [(Vec<&str>, HandshakeError); 5] = [
        (vec![ok[1], ok[2], key], HandshakeError::MissingUpgrade),
        (
            vec![ok[0], "Connection: keep-alive", ok[2], key],
            HandshakeError::MissingConnectionUpgrade,
        ),
        (
            vec![ok[0], ok[1], "Sec-WebSocket-Version: 8", key],
            HandshakeError::UnsupportedVersion("8".into()),
        ),
        (vec![ok[0], ok[1], ok[2]], HandshakeError::MissingKey),
        (
            vec![ok[0], ok[1], ok[2], "Sec-WebSocket-Key: c2hvcnQ="],
            HandshakeError::BadKey,
        ),
    ];
    for (lines, expected) in cases {
        assert_eq!(
            parse_upgrade_request(request(&lines).as_bytes(), 4096),
            Err(expected)
        );
    }
    let post = request(&ok).replacen("GET", "POST", 1);
    let err = parse_upgrade_request(post.as_bytes(), 4096).unwrap_err();
    assert_eq!(
        (err.clone(), err.status()),
        (HandshakeError::NotGet("POST".into()), 405)
    );
    let old = request(&ok).replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(
        parse_upgrade_request(old.as_bytes(), 4096),
        Err(HandshakeError::NotHttp11)
    );
    assert!(matches!(
        parse_upgrade_request(b"\x16\x03\x01 tls hello\r\n\r\n", 4096),
        Err(HandshakeError::Http(_))
    ));
}

#[test]
fn protocols_are_listed() {
    let req = request(&[
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: goim, danmu.v1",
    ]);
    let (req, _) = parse_upgrade_request(req.as_bytes(), 4096)
        .unwrap()
        .unwrap();
    assert_eq!(req.protocols, vec!["goim", "danmu.v1"]);
    let resp = String::from_utf8(accept_response_with_protocol(&req.key, Some("goim"))).unwrap();
    assert!(resp.contains("\r\nSec-WebSocket-Protocol: goim\r\n"));
}

#[test]
fn accept_response_declines_extensions() {
    let resp = accept_response("dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(
        String::from_utf8(resp).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn error_response_closes() {
    let resp = String::from_utf8(error_response(404, "Not Found")).unwrap();
    assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"));
    assert!(resp.contains("\r\nConnection: close\r\n"));
    assert!(resp.ends_with("\r\n\r\nNot Found\n"));
    let injected = String::from_utf8(error_response(400, "bad\r\nSet-Cookie: x")).unwrap();
    assert!(!injected.contains("\r\nSet-Cookie"));
    let (status, n) = parse_response(resp.as_bytes()).unwrap().unwrap();
    assert_eq!(status, 404);
    assert!(n < resp.len());
}

#[test]
fn client_and_server_agree() {
    let key = client_key([0x42; 16]);
    let req = client_request("localhost:9000", "/sub", &key);
    let (parsed, n) = parse_upgrade_request(&req, 4096).unwrap().unwrap();
    assert_eq!(
        (parsed.path.as_str(), parsed.key.as_str(), n),
        ("/sub", key.as_str(), req.len())
    );
    let resp = accept_response(&parsed.key);
    for cut in 0..resp.len() {
        assert_eq!(parse_response(&resp[..cut]), Ok(None));
    }
    assert_eq!(parse_response(&resp), Ok(Some((101, resp.len()))));
    let text = String::from_utf8(resp).unwrap();
    assert!(text.contains(&accept_key(&key)));
    assert!(parse_response(&vec![b'a'; 20_000]).is_err());
}
