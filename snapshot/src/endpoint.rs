//! What a `ModelEndpoint` compiles to: the provider, replicas, pricing, timeouts, failover.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ModelSelector, ResourceRef, Secret};

/// A model name callers may use, and how to serve it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The name in the `model` field of requests.
    pub model: String,
    pub source: ResourceRef,
    pub provider: Provider,
    /// The model id sent upstream.
    pub upstream_model: String,
    pub replicas: Vec<Replica>,
    /// Bearer credential for the upstream, resolved from a secret reference.
    pub api_key: Option<Secret>,
    /// Microsoft Entra ID client credentials (Azure), instead of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraCredential>,
    pub pricing: Pricing,
    pub timeouts: Timeouts,
    pub failover: Failover,
    pub labels: BTreeMap<String, String>,
    /// The most output tokens one request may ask for; what budgets and token limits reserve
    /// when a request does not set `max_tokens`.
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    pub owned_by: String,
    /// Unix seconds, for `/v1/models`.
    pub created: i64,
}

impl Endpoint {
    /// Whether a limit or budget over `selectors` covers this model; an empty list covers all.
    pub fn selected_by(&self, selectors: &[ModelSelector]) -> bool {
        selectors.is_empty()
            || selectors
                .iter()
                .any(|m| m.matches(&self.model, &self.labels))
    }
}

/// Where and as whom a data plane gets Entra ID tokens (OAuth 2.0 client credentials).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntraCredential {
    /// `<authority>/<tenant>/oauth2/v2.0/token`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: String,
}

pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

fn default_max_output_tokens() -> u32 {
    DEFAULT_MAX_OUTPUT_TOKENS
}

/// The provider protocol an endpoint speaks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Provider {
    /// api.openai.com or anything that must behave exactly like it.
    #[serde(rename = "openai")]
    OpenAi,
    /// Self-hosted servers speaking the OpenAI API: vLLM, TGI, llama.cpp, Ollama.
    OpenAiCompatible,
    /// Anthropic's Messages API (api.anthropic.com, or a server speaking it).
    Anthropic,
    /// Azure OpenAI: the deployment (`upstream_model`) in the path and `api-version` in the
    /// query, or the v1 API (`/openai/v1/…`, deployment in the body) without a version.
    AzureOpenAi { api_version: Option<String> },
    /// The built-in deterministic model: no network, for demos, tests and load tests.
    Mock(MockModel),
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::OpenAiCompatible => "openai-compatible",
            Provider::Anthropic => "anthropic",
            Provider::AzureOpenAi { .. } => "azure-openai",
            Provider::Mock(_) => "mock",
        }
    }
}

/// Behaviour of the built-in mock model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MockModel {
    /// Fixed reply; ignored when `echo` is set.
    pub content: String,
    /// Reply with the last user message instead of `content`.
    pub echo: bool,
    /// Delay before the response (or before the first chunk of a stream).
    pub latency_ms: u64,
    /// Delay between stream chunks.
    pub chunk_interval_ms: u64,
    /// Words per stream chunk (at least 1).
    pub chunk_words: u32,
    /// Reported completion tokens; `None` counts one per word of the reply.
    pub completion_tokens: Option<u32>,
    /// Reported prompt tokens; `None` estimates from the prompt length.
    pub prompt_tokens: Option<u32>,
    /// Length of the vectors returned by `/v1/embeddings`.
    pub embedding_dimensions: u32,
}

/// One upstream base URL (the OpenAI SDK's `base_url`, for example `http://vllm:8000/v1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub name: String,
    pub url: String,
}

/// USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Pricing {
    /// Cost in USD of one request's usage.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP (and TLS) connect to one replica.
    pub connect_ms: u64,
    /// From sending the request to the response head (and, for streams, the first chunk).
    pub first_byte_ms: u64,
    /// The whole exchange, streams included.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 2_000,
            first_byte_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

/// How hard to try other replicas, and when to take a replica out of rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// Attempts per request across distinct replicas, the first included.
    pub max_attempts: u32,
    /// Consecutive failures that eject a replica.
    pub eject_after_failures: u32,
    /// First ejection period; doubles on each failed probe up to 32×.
    pub eject_base_ms: u64,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            max_attempts: 3,
            eject_after_failures: 3,
            eject_base_ms: 5_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_per_million_tokens() {
        let p = Pricing {
            input_per_million: 2.5,
            output_per_million: 10.0,
        };
        assert!((p.cost(1_000_000, 0) - 2.5).abs() < 1e-9);
        assert!((p.cost(1000, 500) - 0.0075).abs() < 1e-12);
    }
}
