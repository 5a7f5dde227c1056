//! Azure OpenAI upstreams (`provider: azure-openai`): OpenAI's protocol at Azure's URLs.
//!
//! Bodies, answers, streams and errors are OpenAI's (the [`OpenAi`] adapter's: bodies byte for
//! byte, the limit in `max_completion_tokens`, which o-series deployments require); what
//! differs is where a request goes — `/openai/deployments/<deployment>/…?api-version=…`, or the
//! v1 API's `/openai/v1/…` with the deployment as `model` — and that a 429 moves the request to
//! another replica: each Azure resource (region) has its own quota, so another one may serve.
//! Azure's own stream chunks (a first chunk with `choices: []` and `prompt_filter_results`,
//! `content_filter_results` on choices, `finish_reason: content_filter`) pass through as sent:
//! they are valid OpenAI chunks to the SDKs.

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use llmgate_snapshot::Endpoint;

use super::openai::OpenAi;
use super::{HttpAdapter, Op, StreamTranslator, Translated};
use crate::error::GatewayError;
use crate::llm::types::{ChatRequest, EmbeddingsRequest, EncodingFormat};

pub struct AzureOpenAi {
    /// `None`: the v1 API.
    pub api_version: Option<String>,
}

const OPENAI: OpenAi = OpenAi { compatible: false };

impl AzureOpenAi {
    /// The URL of `op` on the resource at `base_url` for `deployment`.
    pub fn url(&self, base_url: &str, deployment: &str, op: Op) -> String {
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/openai").unwrap_or(base);
        let path = match op {
            Op::Chat => "chat/completions",
            Op::Embeddings => "embeddings",
        };
        match &self.api_version {
            Some(v) => format!("{base}/openai/deployments/{deployment}/{path}?api-version={v}"),
            None => format!("{base}/openai/v1/{path}"),
        }
    }
}

impl HttpAdapter for AzureOpenAi {
    fn chat_body(&self, ep: &Endpoint, req: &ChatRequest<'_>) -> Result<Bytes, GatewayError> {
        OPENAI.chat_body(ep, req)
    }

    fn embeddings_body(
        &self,
        ep: &Endpoint,
        req: &EmbeddingsRequest<'_>,
    ) -> Result<Bytes, GatewayError> {
        OPENAI.embeddings_body(ep, req)
    }

    fn request(
        &self,
        ep: &Endpoint,
        base_url: &str,
        op: Op,
        stream: bool,
        request_id: &str,
        body: Bytes,
    ) -> Result<http::Request<Full<Bytes>>, GatewayError> {
        let mut r = OPENAI.request(ep, "", op, stream, request_id, body)?;
        *r.uri_mut() = self
            .url(base_url, &ep.upstream_model, op)
            .parse()
            .map_err(|e| GatewayError::Internal(format!("Azure URL: {e}")))?;
        Ok(r)
    }

    fn chat_response(&self, body: Bytes, created: i64) -> Result<Translated, GatewayError> {
        OPENAI.chat_response(body, created)
    }

    fn embeddings_response(
        &self,
        body: Bytes,
        wanted: Option<EncodingFormat>,
    ) -> Result<Translated, GatewayError> {
        OPENAI.embeddings_response(body, wanted)
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GatewayError {
        OPENAI.error(status, headers, body)
    }

    fn chat_stream(&self, client_wants_usage: bool, created: i64) -> Box<dyn StreamTranslator> {
        OPENAI.chat_stream(client_wants_usage, created)
    }

    fn retry_elsewhere(&self, status: StatusCode) -> bool {
        status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_and_v1_urls_keep_the_deployment_name_whole() {
        let classic = AzureOpenAi {
            api_version: Some("2024-10-21".into()),
        };
        assert_eq!(
            classic.url("https://res.openai.azure.com/", "gpt-4.1", Op::Chat),
            "https://res.openai.azure.com/openai/deployments/gpt-4.1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            classic.url("https://res.openai.azure.com/openai", "emb", Op::Embeddings),
            "https://res.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        let v1 = AzureOpenAi { api_version: None };
        assert_eq!(
            v1.url("https://res.openai.azure.com", "gpt-4.1", Op::Chat),
            "https://res.openai.azure.com/openai/v1/chat/completions"
        );
        assert!(v1.retry_elsewhere(StatusCode::TOO_MANY_REQUESTS));
        assert!(!v1.retry_elsewhere(StatusCode::BAD_REQUEST));
        assert!(!OPENAI.retry_elsewhere(StatusCode::TOO_MANY_REQUESTS));
    }
}
