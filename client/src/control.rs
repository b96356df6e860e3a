//! Control's HTTP API as a client needs it (`docs/control.md`): the node list, and tokens for
//! development (`POST /v1/tokens` with an API key is business's call in production: a viewer's
//! app gets its token from its own backend). HTTP/1.1 through hyper, over TCP or TLS.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::nodes::NodeList;
use crate::tls;

/// Largest response body read from control.
const MAX_BODY: usize = 1024 * 1024;

/// Why a request to control failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control URL is not `http://host[:port][/prefix]` or `https://...`.
    #[error("control URL {0:?}: {1}")]
    Url(String, String),
    /// Connecting, TLS, or HTTP failed.
    #[error("{0}: {1}")]
    Http(String, String),
    /// Control answered with an error status (its JSON `error` when it sent one).
    #[error("{0}: HTTP {1}: {2}")]
    Status(String, u16, String),
    /// The body is not the JSON expected.
    #[error("{0}: {1}")]
    Body(String, String),
    /// No answer within the timeout.
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
}

/// `POST /v1/tokens`'s answer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IssuedToken {
    /// The JWT for AUTH's `key`.
    pub token: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

/// A control base URL and the TLS settings for `https`.
#[derive(Clone)]
pub struct Control {
    base: String,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl Control {
    /// Control at `base` (e.g. `http://127.0.0.1:8080`), trusting what `tls` says for
    /// `https`, each request bounded by `timeout`.
    pub fn new(
        base: &str,
        tls: &tls::TlsOptions,
        timeout: Duration,
    ) -> Result<Control, tls::TlsError> {
        Ok(Control {
            base: base.trim_end_matches('/').to_owned(),
            tls: Arc::new(tls::client_config(tls, &[b"http/1.1"], false)?),
            timeout,
        })
    }

    /// `GET /v1/nodes?region=..&uid=..`.
    pub async fn nodes(
        &self,
        region: Option<&str>,
        uid: Option<u64>,
    ) -> Result<NodeList, ControlError> {
        let mut query = Vec::new();
        if let Some(region) = region.filter(|r| !r.is_empty()) {
            // Region names are letters, digits, `-` and `_` (control refuses others), so they
            // need no escaping; a bad one gets control's 400.
            query.push(format!("region={region}"));
        }
        if let Some(uid) = uid {
            query.push(format!("uid={uid}"));
        }
        let path = if query.is_empty() {
            "/v1/nodes".to_owned()
        } else {
            format!("/v1/nodes?{}", query.join("&"))
        };
        self.json(Method::GET, &path, None, None).await
    }

    /// `POST /v1/tokens` `{"uid":..,"rooms":[..]}` with `Authorization: Bearer <api_key>`
    /// when a key is given.
    pub async fn token(
        &self,
        api_key: Option<&str>,
        uid: u64,
        rooms: &[u64],
    ) -> Result<IssuedToken, ControlError> {
        let body = serde_json::json!({ "uid": uid, "rooms": rooms }).to_string();
        self.json(Method::POST, "/v1/tokens", api_key, Some(body))
            .await
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        api_key: Option<&str>,
        body: Option<String>,
    ) -> Result<T, ControlError> {
        let what = format!("{method} {}{path}", self.base);
        let request = self.request(&what, method, path, api_key, body);
        let (status, body) = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| ControlError::Timeout(what.clone(), self.timeout))??;
        if status != 200 {
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ControlError::Status(what, status, error));
        }
        serde_json::from_slice(&body).map_err(|e| ControlError::Body(what, e.to_string()))
    }

    async fn request(
        &self,
        what: &str,
        method: Method,
        path: &str,
        api_key: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, Bytes), ControlError> {
        let http = |e: &dyn std::fmt::Display| ControlError::Http(what.to_owned(), e.to_string());
        let uri: Uri =
            format!("{}{path}", self.base)
                .parse()
                .map_err(|e: hyper::http::uri::InvalidUri| {
                    ControlError::Url(self.base.clone(), e.to_string())
                })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(ControlError::Url(
                    self.base.clone(),
                    "not http:// or https://".into(),
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ControlError::Url(self.base.clone(), "no host".into()))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let tcp = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| http(&e))?;
        let stream: Box<dyn crate::transport::Stream> = if https {
            let name = tls::server_name(host).map_err(|e| http(&e))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| http(&e))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(&e))?;
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(key) = api_key {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http(&e))?;
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}
