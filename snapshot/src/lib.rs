//! The compiled llmgate configuration: what a data plane needs to serve, and nothing of
//! Kubernetes.
//!
//! A [`Snapshot`] is produced by `llmgate_crds::compile` (in the operator, or in the data
//! plane's standalone mode) and is immutable once built. Its [`Snapshot::version`] is a content
//! hash, so two compiles of the same resources give the same version and a publisher can skip
//! no-op updates. Secrets resolved at compile time travel inside the snapshot as [`Secret`],
//! whose `Debug` never prints the value.

pub mod distribution;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One validated, self-contained configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `sha256:<first 16 bytes hex>` of the canonical JSON of everything below.
    pub version: String,
    pub endpoints: Vec<Endpoint>,
    pub api_keys: Vec<ApiKey>,
    pub policies: Vec<Policy>,
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub budgets: Vec<Budget>,
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    #[serde(default)]
    pub gateway_tokens: Option<GatewayTokens>,
}

/// The parts of a snapshot that its version hashes over.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotContent {
    pub endpoints: Vec<Endpoint>,
    pub api_keys: Vec<ApiKey>,
    pub policies: Vec<Policy>,
    pub rate_limits: Vec<RateLimit>,
    pub budgets: Vec<Budget>,
    pub identity_providers: Vec<IdentityProvider>,
    pub gateway_tokens: Option<GatewayTokens>,
}

impl Snapshot {
    /// Stamps content with its hash. Inputs are expected in a stable order (compile sorts them),
    /// so equal content gives equal versions.
    pub fn new(content: SnapshotContent) -> Self {
        // Serializing plain data structs to JSON cannot fail (no maps with non-string keys).
        let canonical = serde_json::to_vec(&content).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let version = format!("sha256:{}", hex(&digest[..16]));
        let SnapshotContent {
            endpoints,
            api_keys,
            policies,
            rate_limits,
            budgets,
            identity_providers,
            gateway_tokens,
        } = content;
        Snapshot {
            version,
            endpoints,
            api_keys,
            policies,
            rate_limits,
            budgets,
            identity_providers,
            gateway_tokens,
        }
    }

    /// Whether any limit or budget needs shared counters.
    pub fn needs_counters(&self) -> bool {
        !self.rate_limits.is_empty() || !self.budgets.is_empty()
    }

    /// An empty snapshot: serves nothing, denies everything.
    pub fn empty() -> Self {
        Self::new(SnapshotContent::default())
    }
}

/// Where a compiled entry came from, for errors, audit and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

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
    /// The built-in deterministic model: no network, for demos, tests and load tests.
    Mock(MockModel),
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::OpenAiCompatible => "openai-compatible",
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

/// A gateway API key: only its SHA-256 is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub source: ResourceRef,
    /// Lowercase hex SHA-256 of the full key.
    pub sha256: String,
    pub principal: Principal,
    pub team: Option<String>,
}

/// Who a credential speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum Principal {
    User(String),
    ServiceAccount(String),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::User(n) | Principal::ServiceAccount(n) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub source: ResourceRef,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub subjects: Vec<Subject>,
    pub models: Vec<ModelSelector>,
}

/// Who a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum Subject {
    /// Everyone who authenticated.
    Authenticated,
    User(String),
    ServiceAccount(String),
    Team(String),
    Group(String),
    /// An `ApiKey` resource, by `namespace/name`.
    ApiKey(String),
}

/// Which models a rule covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum ModelSelector {
    Name(String),
    /// `*` matches any run of characters, `?` one character.
    Glob(String),
    /// Every label listed must be present with this value.
    Labels(BTreeMap<String, String>),
}

impl ModelSelector {
    pub fn matches(&self, model: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            ModelSelector::Name(n) => n == model,
            ModelSelector::Glob(g) => glob_match(g.as_bytes(), model.as_bytes()),
            ModelSelector::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
        }
    }
}

/// What a limit or budget does when the shared counter store cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailMode {
    /// Admit within a bounded allowance counted on each replica, reconciled when the store
    /// returns.
    Open,
    /// Refuse with 503 until the store returns.
    #[default]
    Closed,
}

/// A rate limit from an AccessPolicy's `rateLimits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub source: ResourceRef,
    pub name: String,
    /// Callers it applies to; empty means every authenticated caller.
    pub subjects: Vec<Subject>,
    /// Models it applies to; empty means all.
    pub models: Vec<ModelSelector>,
    /// What one counter is kept per (none: one counter shared by everyone it applies to).
    pub per: Vec<LimitDimension>,
    pub window: Window,
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub fail_mode: FailMode,
    /// Percent of the limit each replica may admit on its own while the store is away
    /// (`failMode: open`).
    pub local_allowance_percent: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LimitDimension {
    User,
    Team,
    Model,
}

impl LimitDimension {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitDimension::User => "user",
            LimitDimension::Team => "team",
            LimitDimension::Model => "model",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Window {
    Minute,
    Hour,
    Day,
}

impl Window {
    pub fn millis(self) -> u64 {
        match self {
            Window::Minute => 60_000,
            Window::Hour => 3_600_000,
            Window::Day => 86_400_000,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
        }
    }
}

/// A team's spending limit over a calendar period, from a `TeamBudget`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub source: ResourceRef,
    /// The team it applies to; `*` gives every team without a budget of its own for a model
    /// its own budget of this size.
    pub team: String,
    /// Millionths of a USD.
    pub amount_micros: u64,
    pub period: Period,
    /// IANA time zone the period's calendar follows (`UTC`, `Europe/Berlin`).
    pub time_zone: String,
    /// Models whose cost counts against it; empty means all.
    pub models: Vec<ModelSelector>,
    /// Models to serve instead, in order, when the budget cannot cover a request. Empty: refuse.
    pub fallback: Vec<String>,
    /// Lower `max_tokens` to what the remaining budget can pay for instead of falling back.
    pub clamp_max_tokens: bool,
    pub fail_mode: FailMode,
    pub local_allowance_percent: u8,
    /// Percent of the amount at which the webhook is told, once per period each.
    pub alert_thresholds: Vec<u8>,
    pub alert_webhook: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// An identity provider whose tokens the gateway accepts, and how their claims map to a caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdentityProvider {
    pub source: ResourceRef,
    /// Exactly one of `oidc`, `saml`.
    pub oidc: Option<Oidc>,
    pub saml: Option<Saml>,
    pub mapping: ClaimMapping,
}

/// llmgate as the SAML service provider of one IdP, with what compile read from its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saml {
    pub idp_entity_id: String,
    /// The IdP's single sign-on URL for the HTTP-Redirect binding.
    pub sso_url: String,
    /// The IdP's signing certificates, base64 DER.
    pub signing_certs: Vec<String>,
    /// llmgate's SP entity ID.
    pub entity_id: String,
    pub acs_url: String,
    pub clock_skew_secs: u64,
}

/// An OpenID Connect issuer: bearer JWTs signed by its keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Oidc {
    /// Exactly the `iss` of its tokens.
    pub issuer: String,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Accepted signing algorithms (asymmetric only: RS*, PS*, ES*, EdDSA).
    pub algorithms: Vec<String>,
    /// Leeway for `exp` and `nbf`.
    pub clock_skew_secs: u64,
    /// JWKS location; `None` reads it from the issuer's discovery document.
    pub jwks_uri: Option<String>,
    /// Browser login through this issuer, when configured.
    pub login: Option<OidcLogin>,
}

/// The gateway's confidential client at an OIDC issuer, for the authorization-code flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OidcLogin {
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub redirect_url: String,
}

/// Tokens llmgate issues after a login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayTokens {
    pub source: ResourceRef,
    /// `(kid, HMAC key)`; the first signs.
    pub keys: Vec<(String, Secret)>,
    pub ttl_secs: u64,
    pub revoked: Vec<Revocation>,
}

/// Tokens of `principal` issued before `before` (unix seconds) are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub principal: Principal,
    pub before: i64,
}

/// Claim names (dotted paths for nested claims) that make a token's caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMapping {
    /// The user's id (`sub`, `email`, `preferred_username`…).
    pub user: String,
    /// The user's groups (an array of strings, or one string).
    pub groups: String,
    /// The claim naming a client; a token whose `sub` equals it is a service account
    /// (client-credentials), named by it.
    pub client_id: String,
    /// How the caller's team is decided, first match wins.
    pub team: TeamRule,
}

/// Which team a token's caller counts against.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRule {
    /// A claim holding the team name.
    pub claim: Option<String>,
    /// Group → team, in order: the first group the caller is in decides.
    pub from_groups: Vec<(String, String)>,
    /// Service accounts (client ids) → team.
    pub service_accounts: Vec<(String, String)>,
}

/// Iterative wildcard match with backtracking to the last `*`: linear in practice, no regex.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A credential value. Serializes as itself (snapshots carry credentials to authenticated data
/// planes) but never shows in `Debug` output, so logs and traces cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(b"gpt-*", b"gpt-4o"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"*-mini", b"gpt-4o-mini"));
        assert!(glob_match(b"g?t-4", b"gpt-4"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"gpt-*", b"llama-3"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(!glob_match(b"gpt-4", b"gpt-4o"));
    }

    #[test]
    fn version_is_a_content_hash() {
        let a = Snapshot::empty();
        let b = Snapshot::empty();
        assert_eq!(a.version, b.version);
        assert!(a.version.starts_with("sha256:"));
        let mut content = SnapshotContent::default();
        content.policies.push(Policy {
            source: ResourceRef {
                kind: "AccessPolicy".into(),
                namespace: "default".into(),
                name: "p".into(),
            },
            rules: vec![],
        });
        assert_ne!(Snapshot::new(content).version, a.version);
    }

    #[test]
    fn secret_debug_never_shows_the_value() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            serde_json::to_string(&s).unwrap_or_default(),
            "\"sk-live-123\""
        );
    }

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
