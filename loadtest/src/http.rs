//! A minimal HTTP/1.1 client (one request per connection) for control's token endpoint and
//! Prometheus `/metrics` pages: enough for a load tool, no extra dependency.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(20);

/// `(host:port, path)` of an `http://` URL.
fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host, path.to_string()))
}

/// Sends a request and returns the status and body.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    tokio::time::timeout(TIMEOUT, request_inner(method, url, headers, body))
        .await
        .with_context(|| format!("{method} {url} timed out"))?
}

async fn request_inner(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let (host, path) = split_url(url)?;
    let mut stream = TcpStream::connect(&host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    parse_response(&response).with_context(|| format!("{method} {url}"))
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&response[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &response[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let eol = body[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&body[pos..pos + eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        pos += eol + 2;
        if size == 0 {
            return Ok((status, out));
        }
        ensure!(body.len() >= pos + size, "truncated chunk");
        out.extend_from_slice(&body[pos..pos + size]);
        pos += size + 2;
    }
}

/// A token from control's `POST /v1/tokens` for `uid`, allowed into `room`.
pub async fn control_token(
    control: &str,
    api_key: Option<&str>,
    uid: u64,
    room: u64,
) -> anyhow::Result<String> {
    let url = format!("{}/v1/tokens", control.trim_end_matches('/'));
    let body = serde_json::json!({"uid": uid, "rooms": [room], "device": format!("load-{uid}")});
    let auth = api_key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    let (status, reply) = request("POST", &url, &headers, body.to_string().as_bytes()).await?;
    if status != 200 {
        bail!(
            "control answered {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let reply: serde_json::Value = serde_json::from_slice(&reply)?;
    reply["token"]
        .as_str()
        .map(str::to_owned)
        .context("control's answer has no token")
}

/// Sums of the samples of each metric name on a Prometheus text page (labels folded together).
pub async fn scrape(url: &str) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let (status, body) = request("GET", url, &[], b"").await?;
    ensure!(status == 200, "GET {url}: HTTP {status}");
    let text = String::from_utf8_lossy(&body);
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if let Ok(value) = value.parse::<f64>() {
            *out.entry(name.to_string()).or_insert(0.0) += value;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(parse_response(plain).unwrap(), (200, b"hi".to_vec()));
        let chunked =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (201, b"abcde".to_vec()));
        assert_eq!(
            split_url("http://127.0.0.1:8080/v1/tokens").unwrap(),
            ("127.0.0.1:8080".into(), "/v1/tokens".into())
        );
    }
}
