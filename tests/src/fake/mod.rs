//! A fake OpenAI-compatible upstream that checks what OpenAI checks and can misbehave on
//! demand. Used by the integration tests (in-process), the Python SDK tests and the benchmark
//! (as the `fake-upstream` binary).
//!
//! It checks `Authorization: Bearer <key>` (401 otherwise, OpenAI's body), the request shape
//! (JSON object, `model` string, non-empty `messages` with known roles, `input` for
//! embeddings; 400 otherwise), and `stream_options` only with `stream`. Behaviour is chosen by
//! the upstream model id, or for one instance whatever the model with
//! [`FakeUpstream::behave_as`] (`POST /_fake/behaviour` with the behaviour as the body, empty
//! to reset, for the `fake-upstream` binary), so one replica of an endpoint can fail while the
//! others answer:
//!
//! | model | behaviour |
//! |---|---|
//! | `fail-429` | 429 `rate_limit_exceeded` with `retry-after: 1` |
//! | `fail-500` | 500 `server_error` |
//! | `slow-first-byte:<ms>` | waits before the response head |
//! | `slow-stream:<ms>` | waits between stream chunks |
//! | `drop-mid-stream` | sends two chunks, then drops the connection |
//! | `chunks:<n>` | `n` content chunks |
//! | `bill-asked` | bills every sequence it was asked for at full length, reading the length fields as the servers that read most do (below) |
//! | anything else | `echo: <last user message>`, one word per chunk |
//!
//! With `tools` in the request the reply is a call of the first tool (streamed as fragments
//! when streaming). `GET /_fake/stats` returns the counters in [`Stats`]. The same server
//! speaks Anthropic's Messages API at `/v1/messages` ([`anthropic`]) and Azure
//! OpenAI's routes under `/openai/` ([`azure`]).

pub mod anthropic;
pub mod azure;
pub mod openai;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use openai::{BILL_ASKED_CONTEXT, asked_tokens};
use state::Shared;
pub use state::Stats;

/// A running fake; dropping it (or [`FakeUpstream::kill`]) closes the listener and every
/// connection at once, like a crashed process.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start(api_key: &str) -> std::io::Result<FakeUpstream> {
        Self::start_on(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            api_key,
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, api_key: &str) -> std::io::Result<FakeUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            api_key: api_key.to_string(),
            stats: Arc::clone(&stats),
            last_request: std::sync::Mutex::new(Value::Null),
            behave_as: std::sync::Mutex::new(None),
            issued_tokens: std::sync::Mutex::new(Vec::new()),
        });
        let app = router(Arc::clone(&shared));
        let task = tokio::spawn(accept_loop(listener, app, Arc::clone(&stats)));
        Ok(FakeUpstream {
            addr,
            stats,
            shared,
            task,
        })
    }

    /// `http://addr/v1`, the base URL to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The JSON body of the last request received.
    pub fn last_request(&self) -> Value {
        self.shared
            .last_request
            .lock()
            .map(|v| v.clone())
            .unwrap_or(Value::Null)
    }

    pub fn kill(&self) {
        self.task.abort();
    }

    /// From now on this instance behaves as the model `behaviour` would (`"fail-500"`,
    /// `"slow-first-byte:2000"` …) whatever model it is asked for; `None` resets it.
    pub fn behave_as(&self, behaviour: Option<&str>) {
        self.shared.set_behaviour(behaviour);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, app: Router, stats: Arc<Stats>) {
    // Connection tasks live in this set: aborting the loop aborts them all.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            Ok((stream, _)) = listener.accept() => {
                stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/messages", post(anthropic::messages))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(azure::deployment_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(azure::deployment_embeddings),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(azure::entra_token))
        .route("/openai/v1/chat/completions", post(azure::v1_chat))
        .route("/openai/v1/embeddings", post(azure::v1_embeddings))
        .route("/v1/models", get(openai::models))
        .route("/_fake/stats", get(stats))
        .route("/_fake/behaviour", post(set_behaviour))
        .with_state(shared)
}

async fn set_behaviour(State(s): State<Arc<Shared>>, body: String) -> StatusCode {
    s.set_behaviour(Some(body.trim()));
    StatusCode::NO_CONTENT
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(serde_json::to_value(&*s.stats).unwrap_or_default()).into_response()
}
