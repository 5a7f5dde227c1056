//! The custom resources as users write them. Field names are camelCase; unknown fields are
//! refused so a typo (`maxToken`) is an error, not a silently ignored setting.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of every llmgate resource: `Accepted`, `ResolvedRefs` and `Ready` conditions, each
/// with a reason and a message a person can act on, and the generation they describe.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A model name that applications may call, and the upstream that serves it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
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
)]
#[x_kube(validation = Rule::new("self.provider != 'mock' || !has(self.replicas) || size(self.replicas) == 0").message("the mock provider runs inside the gateway and takes no replicas"))]
#[x_kube(validation = Rule::new("self.provider != 'openai-compatible' || (has(self.replicas) && size(self.replicas) > 0)").message("openai-compatible needs at least one replica URL"))]
#[x_kube(validation = Rule::new("self.provider != 'openai' || has(self.credentials)").message("provider openai needs credentials.apiKey.secretRef"))]
#[x_kube(validation = Rule::new("!has(self.mock) || self.provider == 'mock'").message("mock settings are only valid with provider: mock"))]
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
    /// Upstream base URLs (the OpenAI SDK's `base_url`, ending in `/v1`). `openai` defaults to
    /// `https://api.openai.com/v1`; `mock` takes none.
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
    #[serde(rename = "mock")]
    Mock,
}

/// One upstream: a base URL, or a Service whose ready endpoints all become replicas.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.url) != has(self.service)").message("set exactly one of url, service"))]
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
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialsSpec {
    /// Sent upstream as `Authorization: Bearer <value>`.
    pub api_key: SecretValueRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretValueRef {
    pub secret_ref: SecretKeySelector,
}

/// A key in a Secret of the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
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

/// A gateway API key. Git holds only its SHA-256, or a reference to a Secret holding the key.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmgate.dev",
    version = "v1alpha1",
    kind = "ApiKey",
    namespaced,
    status = "ResourceStatus",
    shortname = "lk",
    category = "llmgate",
    printcolumn = r#"{"name":"User","type":"string","jsonPath":".spec.user"}"#,
    printcolumn = r#"{"name":"ServiceAccount","type":"string","jsonPath":".spec.serviceAccount"}"#,
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.user) != has(self.serviceAccount)").message("set exactly one of user, serviceAccount"))]
#[x_kube(validation = Rule::new("has(self.sha256) != has(self.secretRef)").message("set exactly one of sha256, secretRef"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeySpec {
    /// The person the key belongs to (exactly one of `user`, `serviceAccount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    /// The service the key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: Option<String>,
    /// The team whose budgets and limits the key's calls count against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub team: Option<String>,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`). Exactly one of `sha256`,
    /// `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
    /// A Secret key holding the plaintext key; it is hashed at compile time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
}

/// Who may call which models, and how often. Deny by default; a matching deny rule beats any
/// allow. Rate limits apply on top of the rules: every limit that matches a call must admit it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmgate.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "ResourceStatus",
    shortname = "ap",
    category = "llmgate",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("(has(self.rules) && size(self.rules) > 0) || (has(self.rateLimits) && size(self.rateLimits) > 0)").message("a policy needs rules or rateLimits"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessPolicySpec {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub rules: Vec<RuleSpec>,
    /// Limits on requests and tokens per window, counted across every data-plane replica.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub rate_limits: Vec<RateLimitSpec>,
}

/// One rate limit. A counter is kept per combination of the `per` dimensions: `[user]` limits
/// each user on their own, `[team, model]` each team on each model, `[]` everyone it applies to
/// together.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.requests) || has(self.tokens)").message("set requests, tokens or both"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Named in errors, headers and metrics.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Callers it applies to (default: everyone who authenticated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub subjects: Vec<SubjectSpec>,
    /// Model names or globs it applies to (default: all models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub models: Vec<String>,
    #[serde(default)]
    #[schemars(length(max = 3))]
    pub per: Vec<LimitDimensionSpec>,
    pub window: WindowSpec,
    /// Requests per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub requests: Option<u64>,
    /// Prompt plus completion tokens per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens: Option<u64>,
    /// When the counter store is unreachable: `open` (default) admits within a local allowance
    /// per replica, `closed` refuses with 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailModeSpec>,
    /// Percent of the limit each replica may admit on its own while the store is away
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub local_allowance_percent: Option<u8>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LimitDimensionSpec {
    User,
    Team,
    Model,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WindowSpec {
    Minute,
    Hour,
    Day,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailModeSpec {
    Open,
    Closed,
}

/// What a team may spend on some models per day or month, and what happens when it is spent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmgate.dev",
    version = "v1alpha1",
    kind = "TeamBudget",
    namespaced,
    status = "ResourceStatus",
    shortname = "tb",
    category = "llmgate",
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"USD","type":"number","jsonPath":".spec.amountUsd"}"#,
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.period"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("!has(self.clampMaxTokens) || !self.clampMaxTokens || !has(self.fallback) || size(self.fallback) == 0").message("choose clampMaxTokens or fallback, not both"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamBudgetSpec {
    /// The team (as an ApiKey's `team` names it). `*`: every team without a TeamBudget of its
    /// own for the model gets its own budget of this size.
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
    /// USD per period.
    #[schemars(range(min = 0.0, max = 1.0e9))]
    pub amount_usd: f64,
    pub period: PeriodSpec,
    /// IANA time zone whose calendar the period follows (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Model names or globs whose cost counts against the budget (default: all models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub models: Vec<String>,
    /// Models to serve instead, in order, once the budget cannot cover a request. Empty:
    /// refuse with 429 `budget_exceeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256)))]
    pub fallback: Vec<String>,
    /// Lower a request's `max_tokens` to what the remaining budget can pay for, rather than
    /// refusing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp_max_tokens: Option<bool>,
    /// When the counter store is unreachable: `closed` (default) refuses with 503, `open`
    /// admits within a local allowance per replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailModeSpec>,
    /// Percent of the amount each replica may spend on its own while the store is away
    /// (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub local_allowance_percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<BudgetAlertsSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PeriodSpec {
    Day,
    Month,
}

/// A JSON POST to `webhookUrl` when spend crosses each threshold, once per period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetAlertsSpec {
    /// Percent of the amount (default 50, 80, 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(range(min = 1, max = 100)))]
    pub thresholds: Vec<u8>,
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s]+$"))]
    pub webhook_url: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.models) && size(self.models) > 0) || has(self.modelSelector)").message("a rule needs models or a modelSelector"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Named in audit records and errors; defaults to `rule-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub effect: EffectSpec,
    #[schemars(length(min = 1, max = 256))]
    pub subjects: Vec<SubjectSpec>,
    /// Model names, or globs with `*` and `?`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    pub models: Vec<String>,
    /// Models whose ModelEndpoint carries all these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_selector: Option<LabelSelectorSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum EffectSpec {
    #[default]
    Allow,
    Deny,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorSpec {
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// Exactly one field set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.user), has(self.serviceAccount), has(self.team), has(self.group), has(self.apiKey), has(self.authenticated)].exists_one(x, x)").message("set exactly one of user, serviceAccount, team, group, apiKey, authenticated"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// An `ApiKey` by name (same namespace) or `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// `true`: everyone who authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
}

/// An identity provider whose tokens callers may present instead of an API key, and how its
/// claims become a caller: user, groups, team.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmgate.dev",
    version = "v1alpha1",
    kind = "IdentityProvider",
    namespaced,
    status = "ResourceStatus",
    shortname = "idp",
    category = "llmgate",
    printcolumn = r#"{"name":"OIDC","type":"string","jsonPath":".spec.oidc.issuer"}"#,
    printcolumn = r#"{"name":"SAML","type":"string","jsonPath":".spec.saml.entityId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.oidc) != has(self.saml)").message("set exactly one of oidc, saml"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityProviderSpec {
    /// An OpenID Connect issuer: callers send its access or ID tokens as bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcSpec>,
    /// A SAML 2.0 IdP: people log in through the browser and get a gateway token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saml: Option<SamlSpec>,
    /// Which claims (OIDC) or attributes (SAML) name the user and their groups (defaults: `sub`
    /// or the SAML NameID, and `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<ClaimsSpec>,
    /// How a caller's team is decided; budgets and rate limits count against exactly it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<TeamsSpec>,
}

/// llmgate as a SAML service provider of one IdP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamlSpec {
    /// The IdP's metadata XML (its entity ID, single sign-on URL and signing certificate).
    /// Metadata without a signing certificate is refused.
    #[schemars(length(min = 1, max = 262144))]
    pub idp_metadata: String,
    /// llmgate's SP entity ID, as registered at the IdP (the assertions' audience).
    #[schemars(length(min = 1, max = 1024))]
    pub entity_id: String,
    /// The public URL of llmgate's assertion consumer service:
    /// `…/auth/saml/acs/<namespace>/<name>`.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub acs_url: String,
    /// Leeway for the assertions' time window (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub clock_skew: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcSpec {
    /// Exactly the `iss` claim of its tokens; discovery is read from
    /// `<issuer>/.well-known/openid-configuration`.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub issuer: String,
    /// Accepted audiences (`aud`); a token must name one.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 512)))]
    pub audiences: Vec<String>,
    /// Accepted signing algorithms (default RS256, ES256). Symmetric algorithms and `none` are
    /// never accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub algorithms: Vec<JwtAlgorithmSpec>,
    /// Leeway for `exp` and `nbf` (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub clock_skew: Option<String>,
    /// JWKS URL, when it is not the one discovery names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub jwks_uri: Option<String>,
    /// Browser login (authorization code + PKCE) at `/auth/login/<namespace>/<name>`, ending in a
    /// gateway token; needs a `GatewayTokens` resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<OidcLoginSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OidcLoginSpec {
    /// The gateway's client at the IdP (a confidential client).
    #[schemars(length(min = 1, max = 256))]
    pub client_id: String,
    pub client_secret: SecretValueRef,
    /// Default `openid email profile`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub scopes: Vec<String>,
    /// Where the IdP sends the browser back: the gateway's public
    /// `…/auth/callback/<namespace>/<name>`, as registered at the IdP.
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s?#]+$"))]
    pub redirect_url: String,
}

/// Gateway tokens: short-lived JWTs llmgate issues after a browser login, for SDKs and CLIs
/// (`OPENAI_API_KEY=<token>`). One per installation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "llmgate.dev",
    version = "v1alpha1",
    kind = "GatewayTokens",
    plural = "gatewaytokens",
    namespaced,
    status = "ResourceStatus",
    shortname = "gwt",
    category = "llmgate",
    printcolumn = r#"{"name":"TTL","type":"string","jsonPath":".spec.ttl"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTokensSpec {
    /// HMAC keys (at least 32 bytes each). The first signs new tokens; all verify, so a new key
    /// is rolled in by putting it first and the old one is dropped once its tokens expired.
    #[schemars(length(min = 1, max = 8))]
    pub signing_keys: Vec<SigningKeySpec>,
    /// Lifetime of a token (default `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]+(ms|s|m|h))+$"))]
    pub ttl: Option<String>,
    /// Tokens of these callers issued before the time given are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub revoked: Vec<RevocationSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKeySpec {
    /// The `kid` of the tokens it signs.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub id: String,
    pub secret_ref: SecretKeySelector,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.user) != has(self.serviceAccount)").message("set exactly one of user, serviceAccount"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevocationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: Option<String>,
    /// RFC 3339: tokens issued before it are refused.
    pub issued_before: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithmSpec {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// Claim names; nested claims as dotted paths (`realm_access.roles`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimsSpec {
    /// The user's id (default `sub`; `email` and `preferred_username` are common).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub user: Option<String>,
    /// The user's groups: an array of strings or one string (default `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub groups: Option<String>,
    /// The client id claim (default `client_id`). A token whose `sub` equals it was issued to a
    /// service by client credentials: its caller is the service account of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id: Option<String>,
}

/// The caller's team, first rule that gives one: a claim, then group membership, then the
/// service account's declared team. No team when none applies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamsSpec {
    /// A claim holding the team name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub claim: Option<String>,
    /// In order: the first group the caller is in names their team.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub from_groups: Vec<GroupTeamSpec>,
    /// Teams of service accounts (client-credentials clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub service_accounts: Vec<ServiceAccountTeamSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupTeamSpec {
    #[schemars(length(min = 1, max = 256))]
    pub group: String,
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountTeamSpec {
    #[schemars(length(min = 1, max = 253))]
    pub service_account: String,
    #[schemars(length(min = 1, max = 253))]
    pub team: String,
}
