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
    assert_eq!(req.origin.as_deref(), Some("https://live.example"));
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

/// RFC 9112 section 3.2 (Host exactly once in HTTP/1.1), RFC 6455 section 11.3.1 and 11.3.5
/// (one key, one version), RFC 6454 section 7.3 (one Origin): each of these got 101 before.
#[test]
fn host_once_and_key_once() {
    let ok = [
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ];
    let raw = |lines: &[&str]| format!("GET /sub HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
    assert!(
        parse_upgrade_request(raw(&ok).as_bytes(), 4096)
            .unwrap()
            .is_some()
    );
    let with = |extra: &str| {
        let mut lines = ok.to_vec();
        lines.push(extra);
        parse_upgrade_request(raw(&lines).as_bytes(), 4096)
    };
    let cases = [
        ("host: other", "Host"),
        (
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==",
            "Sec-WebSocket-Key",
        ),
        (
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key",
        ),
        ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version"),
    ];
    for (extra, name) in cases {
        let err = with(extra).unwrap_err();
        assert_eq!(err, HandshakeError::DuplicateHeader(name), "{extra}");
        assert_eq!(err.status(), 400);
    }
    let err = parse_upgrade_request(raw(&ok[1..]).as_bytes(), 4096).unwrap_err();
    assert_eq!(
        (err.clone(), err.status()),
        (HandshakeError::MissingHost, 400)
    );
    // An empty Host is what RFC 9112 asks of a client whose target has no authority: accepted.
    let mut empty_host = ok.to_vec();
    empty_host[0] = "Host:";
    assert!(
        parse_upgrade_request(raw(&empty_host).as_bytes(), 4096)
            .unwrap()
            .is_some()
    );

    let (request, _) = with("Origin:  https://live.example ").unwrap().unwrap();
    assert_eq!(request.origin.as_deref(), Some("https://live.example"));
    let (request, _) = parse_upgrade_request(raw(&ok).as_bytes(), 4096)
        .unwrap()
        .unwrap();
    assert_eq!(request.origin, None);
    let mut two = ok.to_vec();
    two.extend(["Origin: https://a.example", "Origin: https://b.example"]);
    assert_eq!(
        parse_upgrade_request(raw(&two).as_bytes(), 4096),
        Err(HandshakeError::DuplicateHeader("Origin"))
    );
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

/// Status, headers (lower-cased names) and header-block length of a complete response.
fn head(bytes: &[u8]) -> (u16, Vec<(String, String)>, usize) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(bytes).unwrap() else {
        panic!("incomplete response");
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8(h.value.to_vec()).unwrap();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    (resp.code.unwrap(), headers, n)
}

/// Status, headers and body of an error answer, checked to be one whole HTTP/1.1 message that
/// closes the connection and whose `Content-Length` matches its body.
fn answer(bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, n) = head(bytes);
    let body = String::from_utf8(bytes[n..].to_vec()).unwrap();
    assert!(has(&headers, "content-length", &body.len().to_string()));
    assert!(has(&headers, "connection", "close"));
    (status, headers, body)
}

fn has(headers: &[(String, String)], name: &str, value: &str) -> bool {
    headers.iter().any(|(k, v)| k == name && v == value)
}

#[test]
fn wrong_or_missing_version_is_426_with_the_supported_version() {
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    for version in [Some("Sec-WebSocket-Version: 8"), None] {
        let mut lines = vec!["Upgrade: websocket", "Connection: Upgrade", key];
        lines.extend(version);
        let err = parse_upgrade_request(request(&lines).as_bytes(), 4096).unwrap_err();
        assert!(matches!(err, HandshakeError::UnsupportedVersion(_)));
        let bytes = err.response();
        assert!(bytes.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
        let (status, headers, _) = answer(&bytes);
        assert_eq!(status, 426);
        assert!(has(&headers, "sec-websocket-version", "13"), "{headers:?}");
    }
}

#[test]
fn other_methods_are_405_allowing_get() {
    let req = CHROME.replacen("GET", "PUT", 1);
    let err = parse_upgrade_request(req.as_bytes(), 8192).unwrap_err();
    assert_eq!(err, HandshakeError::NotGet("PUT".into()));
    let bytes = err.response();
    assert!(bytes.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
    let (status, headers, body) = answer(&bytes);
    assert_eq!(status, 405);
    assert!(has(&headers, "allow", "GET"), "{headers:?}");
    assert_eq!(body, "method PUT is not GET\n");
}

#[test]
fn oversized_header_blocks_are_431() {
    let long = parse_upgrade_request(CHROME.as_bytes(), 100).unwrap_err();
    let pad: String = (0..70).map(|i| format!("X-Pad-{i}: x\r\n")).collect();
    let many = CHROME.replacen("\r\n", &format!("\r\n{pad}"), 1);
    let many = parse_upgrade_request(many.as_bytes(), 1 << 20).unwrap_err();
    assert_eq!(many, HandshakeError::TooManyHeaders { max: 64 });
    for err in [long, many] {
        let bytes = err.response();
        assert!(bytes.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert_eq!(answer(&bytes).0, 431);
    }
}

#[test]
fn other_malformed_requests_are_400() {
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    let cases = [
        request(&["Connection: Upgrade", "Sec-WebSocket-Version: 13", key]),
        request(&["Upgrade: websocket", "Sec-WebSocket-Version: 13", key]),
        request(&[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
        ]),
        request(&[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: c2hvcnQ=",
        ]),
        request(&[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            key,
            "Sec-WebSocket-Protocol: goim, bad protocol",
        ]),
        CHROME.replacen("HTTP/1.1", "HTTP/1.0", 1),
        "\x16\x03\x01 tls hello\r\n\r\n".to_owned(),
    ];
    for req in cases {
        let err = parse_upgrade_request(req.as_bytes(), 4096).unwrap_err();
        let bytes = err.response();
        assert!(
            bytes.starts_with(b"HTTP/1.1 400 Bad Request\r\n"),
            "{err:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let (status, headers, body) = answer(&bytes);
        assert_eq!(status, 400);
        assert_eq!(body, format!("{err}\n"));
        assert!(!headers.iter().any(|(k, _)| k == "sec-websocket-version"));
    }
}

#[test]
fn the_first_offered_subprotocol_is_echoed() {
    let offer = request(&[
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol: danmu.v1, goim",
    ]);
    let (req, _) = parse_upgrade_request(offer.as_bytes(), 4096)
        .unwrap()
        .unwrap();
    assert_eq!(req.selected_protocol(), Some("danmu.v1"));
    let bytes = req.accept_response();
    let (status, headers, n) = head(&bytes);
    assert_eq!(n, bytes.len());
    assert_eq!(status, 101);
    assert!(
        has(&headers, "sec-websocket-protocol", "danmu.v1"),
        "{headers:?}"
    );
    assert!(has(
        &headers,
        "sec-websocket-accept",
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    ));

    // No offer: no subprotocol header, the same bytes as before subprotocols existed.
    let (plain, _) = parse_upgrade_request(CHROME.as_bytes(), 8192)
        .unwrap()
        .unwrap();
    assert_eq!(plain.selected_protocol(), None);
    assert_eq!(plain.accept_response(), accept_response(&plain.key));
}
