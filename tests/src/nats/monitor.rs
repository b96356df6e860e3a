//! A minimal HTTP/1.0 GET for nats-server's monitoring port, so readiness checks need no HTTP
//! client dependency.

use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One monitoring request never takes longer than this (loopback, small JSON bodies).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET http://127.0.0.1:{port}{path}`: the status code and the body.
pub async fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    timeout(REQUEST_TIMEOUT, get_inner(port, path))
        .await
        .with_context(|| format!("GET :{port}{path} timed out"))?
}

async fn get_inner(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to monitor port {port}"))?;
    // HTTP/1.0 without keep-alive: the server closes after the response, so read to the end.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw).with_context(|| format!("GET :{port}{path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("truncated HTTP response: {text:?}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad HTTP status line: {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// `GET` a JSON endpoint (`/varz`, `/jsz`, `/gatewayz`, ...) that must answer 200.
pub async fn get_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(port, path).await?;
    if status != 200 {
        bail!("GET :{port}{path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("GET :{port}{path}: bad JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"status\":\"unavailable\"}";
        let (status, body) = parse_response(raw).unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, "{\"status\":\"unavailable\"}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
