//! Provider adapters: how the canonical (OpenAI-shaped) request becomes an upstream HTTP request,
//! and how the upstream's answer becomes an OpenAI-shaped response or stream.
//!
//! The pipeline only talks to [`HttpAdapter`]; a provider with another protocol is one more
//! implementation, not a change to the pipeline. The built-in mock model needs no network and
//! is served by [`mock`] directly.

pub mod anthropic;
pub mod azure;
pub mod mock;
pub mod openai;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use llmgate_snapshot::{Endpoint, MockModel, Provider};

use crate::error::GatewayError;
use crate::llm::types::{ChatRequest, EmbeddingsRequest, EncodingFormat, Usage};

/// Which API operation an upstream call serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Chat,
    Embeddings,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Chat => "chat.completions",
            Op::Embeddings => "embeddings",
        }
    }
}

/// A response translated to the OpenAI shape, with what accounting needs.
#[derive(Debug)]
pub struct Translated {
    pub body: Bytes,
    pub usage: Option<Usage>,
    /// The model (version) the upstream says it ran.
    pub model: Option<String>,
}

/// Turns an upstream byte stream into OpenAI SSE events, and keeps what accounting needs.
pub trait StreamTranslator: Send {
    /// Consumes one upstream chunk; complete client events are appended to `out`.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Bytes>) -> Result<(), GatewayError>;
    /// The upstream ended; flush what is left.
    fn finish(&mut self, out: &mut Vec<Bytes>);
    fn usage(&self) -> Option<Usage>;
    fn model(&self) -> Option<&str>;
    /// Whether the stream reached its proper end (`[DONE]` for OpenAI).
    fn completed(&self) -> bool;
    /// Whether the upstream reported an error inside the stream.
    fn errored(&self) -> bool;
}

/// One provider protocol over HTTP, built per endpoint ([`build`]) and kept across reloads while
/// the endpoint is unchanged, so an adapter may hold state. It only translates: credentials are
/// added by the endpoint's `BackendAuth`, so nothing here needs a clock or a network.
pub trait HttpAdapter: Send + Sync {
    /// The upstream body for a chat request, built once per request and reused by every
    /// attempt. Stream requests must ask the upstream for usage.
    fn chat_body(&self, ep: &Endpoint, req: &ChatRequest<'_>) -> Result<Bytes, GatewayError>;
    fn embeddings_body(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest<'_>,
    ) -> Result<Bytes, GatewayError>;
    /// The HTTP request for one attempt against one replica base URL, without credentials.
    fn request(
        &self,
        ep: &Endpoint,
        base_url: &str,
        op: Op,
        stream: bool,
        request_id: &str,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, GatewayError>;
    /// `created` is the completion's Unix time, for protocols whose answers carry none.
    fn chat_response(&self, body: Bytes, created: i64) -> Result<Translated, GatewayError>;
    fn embeddings_response(
        &self,
        body: Bytes,
        wanted: Option<EncodingFormat>,
    ) -> Result<Translated, GatewayError>;
    /// An upstream error status and body, as the error the caller sees.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError;
    fn chat_stream(&self, client_wants_usage: bool, created: i64) -> Box<dyn StreamTranslator>;
    /// Whether an answer with this status moves the request to another replica (nothing has
    /// reached the caller yet). 5xx everywhere; providers whose replicas have their own quota
    /// add 429.
    fn retry_elsewhere(&self, status: StatusCode) -> bool {
        status.is_server_error()
    }
}

/// How an endpoint is served.
pub enum Serving<'a> {
    /// Over HTTP, through this endpoint's adapter.
    Http(Arc<dyn HttpAdapter>),
    /// In-process: the built-in mock model.
    Mock(&'a MockModel),
}

/// The adapter for one endpoint.
pub fn build(ep: &Endpoint) -> Serving<'_> {
    match &ep.provider {
        Provider::OpenAi => Serving::Http(Arc::new(openai::OpenAi { compatible: false })),
        Provider::OpenAiCompatible => Serving::Http(Arc::new(openai::OpenAi { compatible: true })),
        Provider::Anthropic => Serving::Http(Arc::new(anthropic::Anthropic)),
        Provider::AzureOpenAi { api_version } => Serving::Http(Arc::new(azure::AzureOpenAi {
            api_version: api_version.clone(),
        })),
        Provider::Mock(m) => Serving::Mock(m),
    }
}
