//! Operator mode: subscribe to the operator's snapshot stream, apply each snapshot atomically
//! (through [`Gateway::apply`], like every other source), keep the last one in the state
//! directory, and acknowledge it. When the operator is away the data plane keeps serving what
//! it has, across its own restarts too, and reconnects with backoff.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use llmgate_snapshot::Snapshot;
use llmgate_snapshot::distribution::{ACK_PATH, Ack, HEARTBEAT_SECS, Health, Message, WATCH_PATH};

use super::kept::{StateDir, StateDirError, verified};
use crate::gateway::Gateway;

/// Largest snapshot message accepted.
const MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("cannot read the control plane token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("the control plane URL {0:?} is not an http:// or https:// URL")]
    Url(String),
    #[error("cannot use the CA file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot reach the operator: {0}")]
    Connect(String),
    #[error("the operator refused this data plane's token")]
    Unauthorized,
    #[error("the operator answered {0}")]
    Status(StatusCode),
    #[error("no message from the operator for {0} s")]
    Silent(u64),
    #[error("the stream broke: {0}")]
    Stream(String),
    #[error("the operator sent something that is not a message: {0}")]
    Protocol(String),
    #[error(transparent)]
    StateDir(#[from] StateDirError),
}

pub struct Subscriber {
    base: String,
    token: String,
    node: String,
    state: Option<Arc<StateDir>>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Subscriber {
    pub fn new(
        url: &str,
        token_file: &Path,
        ca_file: Option<&Path>,
        state_dir: Option<PathBuf>,
        node: String,
    ) -> Result<Subscriber, SubscribeError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.parse::<http::Uri>().is_err()
        {
            return Err(SubscribeError::Url(url.to_string()));
        }
        if let Some(host) = plain_http_host(&base) {
            tracing::warn!(
                operator = %base,
                "the operator is reached over plain http on {host}, not loopback: snapshots \
                 (which carry upstream credentials) and this data plane's token travel in clear; \
                 serve the operator with TLS and use https:// (--control-plane-ca for its CA)"
            );
        }
        let token = std::fs::read_to_string(token_file)
            .map_err(|source| SubscribeError::Token {
                path: token_file.display().to_string(),
                source,
            })?
            .trim()
            .to_string();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let builder = HttpsConnectorBuilder::new();
        let builder = match ca_file {
            Some(path) => builder.with_tls_config(tls_config(path)?),
            None => builder.with_webpki_roots(),
        };
        let https = builder.https_or_http().enable_http1().wrap_connector(http);
        Ok(Subscriber {
            base,
            token,
            node,
            state: state_dir.map(StateDir::open).transpose()?.map(Arc::new),
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The snapshot kept by the last run, if there is one and it is intact.
    pub fn restore(&self) -> Option<Snapshot> {
        self.state.as_ref()?.restore()
    }

    /// Subscribes for as long as the process runs, reconnecting with backoff.
    pub async fn run(self, gw: Arc<Gateway>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&gw).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    gw.set_control_plane("reconnecting: the operator closed the stream".into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "operator subscription failed");
                    gw.set_control_plane(format!("reconnecting: {e}"));
                }
            }
            let jitter = Duration::from_millis(fastrand::u64(..=backoff.as_millis() as u64 / 4));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One subscription, until the stream ends or fails.
    async fn session(&self, gw: &Arc<Gateway>) -> Result<(), SubscribeError> {
        let have = gw
            .status()
            .applied_at
            .map(|_| gw.runtime().snapshot.version.clone());
        let mut uri = format!(
            "{}{WATCH_PATH}?node={}",
            self.base,
            crate::http::url::encode(&self.node)
        );
        if let Some(v) = &have {
            uri.push_str("&have=");
            uri.push_str(&crate::http::url::encode(v));
        }
        let req = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .body(Full::new(Bytes::new()))
            .map_err(|e| SubscribeError::Connect(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| SubscribeError::Connect("no answer within 5 s".into()))?
            .map_err(|e| SubscribeError::Connect(e.to_string()))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(SubscribeError::Unauthorized);
            }
            s => return Err(SubscribeError::Status(s)),
        }
        tracing::info!(operator = %self.base, node = %self.node, "subscribed to the operator");
        gw.set_control_plane("subscribed".into());
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let silence = Duration::from_secs(3 * HEARTBEAT_SECS);
        loop {
            let frame = tokio::time::timeout(silence, body.frame())
                .await
                .map_err(|_| SubscribeError::Silent(silence.as_secs()))?;
            let Some(frame) = frame else {
                return Ok(());
            };
            let frame = frame.map_err(|e| SubscribeError::Stream(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line = buf.split_to(pos + 1);
                self.handle(gw, &line[..pos]).await?;
            }
            if buf.len() > MAX_LINE {
                return Err(SubscribeError::Protocol(
                    "message larger than 64 MiB".into(),
                ));
            }
        }
    }

    async fn handle(&self, gw: &Arc<Gateway>, line: &[u8]) -> Result<(), SubscribeError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let msg: Message =
            serde_json::from_slice(line).map_err(|e| SubscribeError::Protocol(e.to_string()))?;
        match msg {
            Message::Heartbeat => Ok(()),
            Message::Current { version } => {
                self.ack(gw, version, None);
                Ok(())
            }
            Message::Snapshot { snapshot } => {
                let snapshot = *snapshot;
                let version = snapshot.version.clone();
                if !verified(&snapshot) {
                    tracing::error!(%version, "snapshot does not match its version; not applied");
                    self.ack(
                        gw,
                        gw.runtime().snapshot.version.clone(),
                        Some(format!("snapshot {version} does not match its content")),
                    );
                    return Ok(());
                }
                self.persist(&snapshot).await;
                if gw.apply(snapshot, vec![]) {
                    tracing::info!(%version, "snapshot applied");
                }
                self.ack(gw, version, None);
                Ok(())
            }
        }
    }

    /// Keeps the snapshot in the state directory, off the async workers.
    async fn persist(&self, snapshot: &Snapshot) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(snapshot) else {
            return;
        };
        let result = tokio::task::spawn_blocking(move || state.keep(&bytes)).await;
        if let Ok(Err(e)) | Err(e) = result.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "cannot keep the snapshot in the state directory");
        }
    }

    /// Reports the version now served, and the error when a received snapshot was refused;
    /// best effort, never blocks the stream.
    fn ack(&self, gw: &Gateway, version: String, error: Option<String>) {
        let ack = Ack {
            node: self.node.clone(),
            version,
            applied: error.is_none(),
            error,
            health: Some(Health {
                ready: gw.status().applied_at.is_some() && !gw.is_draining(),
                models: gw.runtime().endpoints.len(),
                in_flight: gw.metrics.in_flight.get(),
            }),
        };
        let Ok(body) = serde_json::to_vec(&ack) else {
            return;
        };
        let req = Request::post(format!("{}{ACK_PATH}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let Ok(req) = req else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                Ok(Ok(r)) if r.status().is_success() => {}
                Ok(Ok(r)) => {
                    tracing::warn!(status = %r.status(), "operator refused the acknowledgement")
                }
                _ => tracing::warn!("acknowledgement did not reach the operator"),
            }
        });
    }
}

/// A client configuration trusting exactly the CA certificates in `path`.
fn tls_config(path: &Path) -> Result<rustls::ClientConfig, SubscribeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let fail = |message: String| SubscribeError::Ca {
        path: path.display().to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .map_err(|e| fail(e.to_string()))
}

/// The host of an `http://` URL unless it is a loopback address, where nothing travels over a
/// network.
fn plain_http_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn only_plain_http_beyond_loopback_is_warned_about() {
        assert_eq!(
            plain_http_host("http://llmgate-operator:8081").as_deref(),
            Some("llmgate-operator")
        );
        assert_eq!(
            plain_http_host("http://10.0.0.5:8081").as_deref(),
            Some("10.0.0.5")
        );
        for quiet in [
            "https://llmgate-operator:8081",
            "http://127.0.0.1:8081",
            "http://127.3.4.5:8081",
            "http://localhost:8081",
            "http://[::1]:8081",
        ] {
            assert_eq!(plain_http_host(quiet), None, "{quiet}");
        }
    }
}
