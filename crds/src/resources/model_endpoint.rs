//! `ModelEndpoint`: a model name callers may use, and the upstream replicas that serve it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "kube")]
use super::ResourceStatus;
use super::SecretValueRef;

/// A model name that applications may call, and the upstream that serves it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "llmgate.dev",
        version = "v1alpha1",
        kind = "ModelEndpoint",
        namespaced,
        status = "ResourceStatus",
        shortname = "me",
        category = "llmgate",
        printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model"}"#,
        printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.provider != 'mock' || !has(self.replicas) || size(self.replicas) == 0", "message": "the mock provider runs inside the gateway and takes no replicas"},
    {"rule": "self.provider != 'openai-compatible' || (has(self.replicas) && size(self.replicas) > 0)", "message": "openai-compatible needs at least one replica URL"},
    {"rule": "self.provider != 'openai' || has(self.credentials)", "message": "provider openai needs credentials.apiKey.secretRef"},
    {"rule": "self.provider != 'anthropic' || has(self.credentials) || (has(self.replicas) && size(self.replicas) > 0)", "message": "provider anthropic needs credentials.apiKey.secretRef for api.anthropic.com"},
    {"rule": "self.provider != 'azure-openai' || (has(self.replicas) && size(self.replicas) > 0 && has(self.credentials))", "message": "provider azure-openai needs the resource URL in replicas and credentials (apiKey or entra)"},
    {"rule": "!has(self.azure) || self.provider == 'azure-openai'", "message": "azure settings are only valid with provider: azure-openai"},
    {"rule": "!has(self.mock) || self.provider == 'mock'", "message": "mock settings are only valid with provider: mock"},
]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelEndpointSpec {
    /// The name callers put in the `model` field.
    #[schemars(length(min = 1, max = 256), pattern(r"^\S+$"))]
    pub model: String,
    /// The protocol the upstream speaks.
    pub provider: ProviderKind,
    /// The model id sent upstream; defaults to `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub upstream_model: Option<String>,
    /// Upstream base URLs (the OpenAI SDK's `base_url`, ending in `/v1`; for `anthropic` the
    /// Anthropic SDK's, with or without `/v1`). `openai` defaults to `https://api.openai.com/v1`,
    /// `anthropic` to `https://api.anthropic.com`; `mock` takes none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub replicas: Vec<ReplicaSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverSpec>,
    /// Behaviour of the built-in `mock` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockSpec>,
    /// Azure OpenAI settings (`provider: azure-openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
    /// The most output tokens one request may ask for (default 4096): what budgets and token
    /// limits reserve when a request does not set `max_tokens`, and the cap sent upstream then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_output_tokens: Option<u32>,
    /// `owned_by` in `/v1/models`; defaults to the provider kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    #[serde(rename = "openai-compatible")]
    OpenAiCompatible,
    /// Anthropic's Messages API; the key goes in `x-api-key`.
    #[serde(rename = "anthropic")]
    Anthropic,
    /// Azure OpenAI; `upstreamModel` is the deployment name, the key goes in `api-key`.
    #[serde(rename = "azure-openai")]
    AzureOpenAi,
    #[serde(rename = "mock")]
    Mock,
}

/// Azure OpenAI: which API of the resource to call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSpec {
    /// The deployments API's `api-version` (`2024-10-21` or later, `-preview` allowed): requests
    /// go to `/openai/deployments/<upstreamModel>/…?api-version=…`. Without it, the v1 API
    /// (`/openai/v1/…`, the deployment in the body's `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"))]
    pub api_version: Option<String>,
}

/// One upstream: a base URL, or a Service whose ready endpoints all become replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.url) != has(self.service)", "message": "set exactly one of url, service"}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSpec {
    /// Base URL, for example `http://llama-0.llama:8080/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub url: Option<String>,
    /// A Service in this namespace: each ready endpoint of its EndpointSlices is a replica,
    /// updated as pods come and go (Kubernetes source only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReplicaSpec>,
    /// Name in metrics and audit records; defaults to `host:port` (for a Service,
    /// `service/pod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceReplicaSpec {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The EndpointSlice port name; may be left out when the Service has a single port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub port: Option<String>,
    #[serde(default)]
    pub scheme: SchemeSpec,
    /// Path of the OpenAI API on the pods (default `/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), pattern(r"^/[^\s?#]*$"))]
    pub path: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchemeSpec {
    #[default]
    Http,
    Https,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.apiKey) != has(self.entra)", "message": "set exactly one of apiKey, entra"}]))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSpec {
    /// A key: `Authorization: Bearer <value>` (`x-api-key` for Anthropic, `api-key` for Azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretValueRef>,
    /// Azure only: Microsoft Entra ID tokens by client credentials instead of a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraSpec>,
}

/// A Microsoft Entra ID application whose client-credentials tokens call Azure OpenAI (it needs
/// the "Cognitive Services OpenAI User" role on the resource).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraSpec {
    #[schemars(length(min = 1, max = 64))]
    pub tenant_id: String,
    #[schemars(length(min = 1, max = 64))]
    pub client_id: String,
    pub client_secret: SecretValueRef,
    /// Default `https://login.microsoftonline.com` (sovereign clouds have their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub authority_host: Option<String>,
    /// Default `https://cognitiveservices.azure.com/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub scope: Option<String>,
}

/// USD per million tokens.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingSpec {
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub input_per_million: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub output_per_million: f64,
}

/// Durations such as `500ms`, `30s`, `5m`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub connect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub first_byte: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub total: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailoverSpec {
    /// Attempts per request across distinct replicas, the first included (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: Option<u32>,
    /// Consecutive failures that take a replica out of rotation (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub eject_after_failures: Option<u32>,
    /// How long an ejected replica waits before it is probed (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub eject_for: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MockSpec {
    /// Fixed reply (default "This is a mock response from llmgate.").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reply with the last user message instead.
    #[serde(default)]
    pub echo: bool,
    /// Delay before the reply or first chunk, e.g. `20ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub latency: Option<String>,
    /// Delay between stream chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub chunk_interval: Option<String>,
    /// Words per stream chunk (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub chunk_words: Option<u32>,
    /// Reported completion tokens (default: one per word).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u32>,
    /// Reported prompt tokens (default: estimated from the prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u32>,
    /// Embedding vector length (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8192))]
    pub embedding_dimensions: Option<u32>,
}
