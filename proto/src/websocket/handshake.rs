//! The HTTP/1.1 upgrade (RFC 6455 section 4), both sides. Parsing is httparse over a plain
//! slice: the caller reads bytes until we say the header block is complete, then writes ours.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the client's key before hashing (RFC 6455 section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Headers httparse will read; a real browser sends about 15. More is answered with 431.
const MAX_HEADERS: usize = 64;
/// Bound on a server's response header block, for [`parse_response`].
const MAX_RESPONSE_LEN: usize = 16 * 1024;

/// What the gateway needs from a valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request path without the query string (e.g. `/sub`). Tokens travel in AUTH, not in URLs
    /// that proxies log.
    pub path: String,
    /// `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// `Sec-WebSocket-Extensions` offers, one entry per extension with its parameters (e.g.
    /// `permessage-deflate; client_max_window_bits`). We decline them all; kept for metrics.
    pub offered_extensions: Vec<String>,
    /// `X-Forwarded-For`, when a proxy in front of the gateway set it.
    pub forwarded_for: Option<String>,
    /// `Sec-WebSocket-Protocol` offers, in order.
    pub protocols: Vec<String>,
    /// `Origin` (RFC 6454), trimmed, as sent: browsers send it on every upgrade, other clients
    /// usually do not. The server decides whether the origin may connect.
    pub origin: Option<String>,
}

impl UpgradeRequest {
    /// The subprotocol the server selects: the first one the client offered, or `None` when it
    /// offered none. RFC 6455 section 4.2.2 lets the server pick any offered one; browsers fail
    /// the connection when they offered some and the response selects none.
    pub fn selected_protocol(&self) -> Option<&str> {
        self.protocols.first().map(String::as_str)
    }

    /// The 101 response to this request: [`accept_response_with_protocol`] with this request's
    /// key and [`selected_protocol`](Self::selected_protocol).
    pub fn accept_response(&self) -> Vec<u8> {
        accept_response_with_protocol(&self.key, self.selected_protocol())
    }
}

/// Why an upgrade request or response is unacceptable. For a request, [`status`](Self::status)
/// and [`response`](Self::response) give the HTTP answer the server sends before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The header block is larger than allowed (or not finished within that many bytes).
    /// Answered with 431.
    #[error("header block exceeds {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// More than 64 header lines. Answered with 431.
    #[error("more than {max} header lines")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// Not parseable as HTTP/1.x. Answered with 400.
    #[error("bad HTTP: {0}")]
    Http(String),
    /// A method other than GET. Answered with 405 and `Allow: GET`.
    #[error("method {0} is not GET")]
    NotGet(String),
    /// HTTP/1.0: upgrades need 1.1. Answered with 400.
    #[error("HTTP/1.1 required")]
    NotHttp11,
    /// No `Upgrade: websocket`. Answered with 400.
    #[error("missing Upgrade: websocket")]
    MissingUpgrade,
    /// No `upgrade` token in `Connection`. Answered with 400.
    #[error("missing Connection: upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` absent or not 13. Answered with 426 and
    /// `Sec-WebSocket-Version: 13` (RFC 6455 section 4.4).
    #[error("unsupported Sec-WebSocket-Version {0:?}")]
    UnsupportedVersion(String),
    /// No `Sec-WebSocket-Key`. Answered with 400.
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not base64 of 16 bytes. Answered with 400.
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    BadKey,
    /// No `Host` header: RFC 9112 section 3.2 requires a 400 for an HTTP/1.1 request without
    /// one. Answered with 400.
    #[error("missing Host")]
    MissingHost,
    /// A header that may appear only once appears more often: `Host` (RFC 9112 section 3.2),
    /// `Sec-WebSocket-Key` and `Sec-WebSocket-Version` (RFC 6455 section 11.3.1 and 11.3.5),
    /// `Origin` (RFC 6454 section 7.3). Two values would leave the answer to whichever one a
    /// component happens to read. Answered with 400.
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// A `Sec-WebSocket-Protocol` entry that is not an HTTP token (RFC 6455 section 4.1:
    /// printable ASCII without separators), so it could not be echoed safely. Answered with 400.
    #[error("Sec-WebSocket-Protocol entry {0:?} is not a token")]
    BadProtocol(String),
}

impl HandshakeError {
    /// The HTTP status this error is answered with: 431 for [`TooLarge`](Self::TooLarge) and
    /// [`TooManyHeaders`](Self::TooManyHeaders), 405 for [`NotGet`](Self::NotGet), 426 for
    /// [`UnsupportedVersion`](Self::UnsupportedVersion), 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::TooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::NotGet(_) => 405,
            HandshakeError::UnsupportedVersion(_) => 426,
            _ => 400,
        }
    }

    /// The whole HTTP/1.1 response to send before closing: the status line for
    /// [`status`](Self::status) with its standard reason phrase, `Allow: GET` on 405,
    /// `Sec-WebSocket-Version: 13` on 426, `Connection: close`, and this error's text as a
    /// `text/plain` body.
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let extra: &[(&str, &str)] = match status {
            405 => &[("Allow", "GET")],
            426 => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        };
        http_response(status, reason_phrase(status), extra, &self.to_string())
    }
}

/// The standard reason phrase of the statuses we send (RFC 9110 section 15, RFC 6585 for 431).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Parses a client's upgrade request from the start of `buf`. `Ok(None)`: the header block is
/// not complete yet. `Ok(Some((request, n)))`: the first `n` bytes were the request; anything
/// after them is already WebSocket data. `max_len` bounds the header block in bytes: a block
/// not finished within it is [`HandshakeError::TooLarge`] as soon as more than `max_len` bytes
/// are buffered. On error, send [`HandshakeError::response`] and close.
pub fn parse_upgrade_request(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_len => {
            return Err(HandshakeError::TooLarge { max: max_len });
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders { max: MAX_HEADERS });
        }
        Err(e) => return Err(HandshakeError::Http(e.to_string())),
    };
    if len > max_len {
        return Err(HandshakeError::TooLarge { max: max_len });
    }
    let method = req.method.unwrap_or_default();
    if method != "GET" {
        return Err(HandshakeError::NotGet(method.to_owned()));
    }
    if req.version != Some(1) {
        return Err(HandshakeError::NotHttp11);
    }
    let headers = req.headers;
    for name in [
        "Host",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Origin",
    ] {
        if count(headers, name) > 1 {
            return Err(HandshakeError::DuplicateHeader(name));
        }
    }
    if count(headers, "host") == 0 {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(headers, "upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, "connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let version = header(headers, "sec-websocket-version").unwrap_or_default();
    if version.trim() != "13" {
        return Err(HandshakeError::UnsupportedVersion(version.to_owned()));
    }
    let key = header(headers, "sec-websocket-key")
        .ok_or(HandshakeError::MissingKey)?
        .trim();
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(HandshakeError::BadKey);
    }
    let protocols = list(headers, "sec-websocket-protocol");
    if let Some(bad) = protocols.iter().find(|p| !is_token(p)) {
        return Err(HandshakeError::BadProtocol(bad.clone()));
    }
    let path = req.path.unwrap_or("/");
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let request = UpgradeRequest {
        path: path.to_owned(),
        key: key.to_owned(),
        offered_extensions: list(headers, "sec-websocket-extensions"),
        forwarded_for: header(headers, "x-forwarded-for").map(|v| v.trim().to_owned()),
        protocols,
        origin: header(headers, "origin").map(|v| v.trim().to_owned()),
    };
    Ok(Some((request, len)))
}

/// Whether `s` is an HTTP token (RFC 9110 section 5.6.2), the syntax RFC 6455 section 4.1
/// requires of each `Sec-WebSocket-Protocol` entry.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How many header lines are named `name` (case-insensitive).
fn count(headers: &[httparse::Header<'_>], name: &str) -> usize {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .count()
}

/// The first header named `name` (case-insensitive), if it is UTF-8.
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// All comma-separated items of every header named `name`, trimmed, empty items dropped.
fn list(headers: &[httparse::Header<'_>], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether some header `name` lists `token` (case-insensitive): `Connection: keep-alive,
/// Upgrade` counts.
fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    list(headers, name)
        .iter()
        .any(|item| item.eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// The 101 response. It never carries `Sec-WebSocket-Extensions`: permessage-deflate and every
/// other extension are declined.
pub fn accept_response(key: &str) -> Vec<u8> {
    accept_response_with_protocol(key, None)
}

/// The 101 response, echoing one subprotocol the client offered. Browsers fail the connection
/// when they offered subprotocols and the server selects none, so the gateway picks one when
/// asked.
pub fn accept_response_with_protocol(key: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(protocol) = protocol {
        response.push_str("Sec-WebSocket-Protocol: ");
        response.push_str(&printable(protocol));
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.into_bytes()
}

/// A plain HTTP error that closes the connection, with `reason` as the reason phrase and as
/// a `text/plain` body. A 426 also carries `Sec-WebSocket-Version: 13`. For a failed upgrade,
/// [`HandshakeError::response`] gives the right status and headers; this is for the answers the
/// caller decides on (e.g. 404 for a path it does not serve).
pub fn error_response(status: u16, reason: &str) -> Vec<u8> {
    let extra: &[(&str, &str)] = if status == 426 {
        &[("Sec-WebSocket-Version", "13")]
    } else {
        &[]
    };
    http_response(status, reason, extra, reason)
}

/// `HTTP/1.1 {status} {reason}`, the `extra` headers, `Connection: close`, and `body` plus a
/// newline as `text/plain`. Control characters are dropped from `reason` and `body`.
fn http_response(status: u16, reason: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let reason = printable(reason);
    let body = printable(body);
    let mut response = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in extra {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Connection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         \r\n\
         {body}\n",
        body.len() + 1
    ));
    response.into_bytes()
}

/// Drops control characters so caller-supplied text cannot inject headers.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// A `Sec-WebSocket-Key` from 16 random bytes the caller supplies.
pub fn client_key(nonce: [u8; 16]) -> String {
    STANDARD.encode(nonce)
}

/// A client's upgrade request for `path` on `host`.
pub fn client_request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\n\
         Host: {}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         \r\n",
        printable(path),
        printable(host),
        printable(key)
    )
    .into_bytes()
}

/// Parses the server's response to [`client_request`]. `Ok(None)`: not complete yet.
/// `Ok(Some((status, n)))`: the first `n` bytes were the response; 101 means upgraded.
pub fn parse_response(buf: &[u8]) -> Result<Option<(u16, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_RESPONSE_LEN => {
            Ok(Some((resp.code.unwrap_or_default(), len)))
        }
        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_LEN => Ok(None),
        Ok(_) => Err(HandshakeError::TooLarge {
            max: MAX_RESPONSE_LEN,
        }),
        Err(e) => Err(HandshakeError::Http(e.to_string())),
    }
}
