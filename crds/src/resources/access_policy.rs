//! `AccessPolicy`: who may call which models, and the rate limits on top of the rules.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FailModeSpec;
#[cfg(feature = "kube")]
use super::ResourceStatus;

/// Who may call which models, and how often. Deny by default; a matching deny rule beats any
/// allow. Rate limits apply on top of the rules: every limit that matches a call must admit it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
        group = "llmgate.dev",
        version = "v1alpha1",
        kind = "AccessPolicy",
        namespaced,
        status = "ResourceStatus",
        shortname = "ap",
        category = "llmgate",
        printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )
)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "(has(self.rules) && size(self.rules) > 0) || (has(self.rateLimits) && size(self.rateLimits) > 0)", "message": "a policy needs rules or rateLimits"}]))]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.requests) || has(self.tokens)", "message": "set requests, tokens or both"}]))]
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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "(has(self.models) && size(self.models) > 0) || has(self.modelSelector)", "message": "a rule needs models or a modelSelector"}]))]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "[has(self.user), has(self.serviceAccount), has(self.team), has(self.group), has(self.apiKey), has(self.authenticated)].exists_one(x, x)", "message": "set exactly one of user, serviceAccount, team, group, apiKey, authenticated"}, {"rule": "!has(self.identityProvider) || !has(self.apiKey)", "message": "an apiKey subject comes from no identity provider"}]))]
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
    /// Only callers this IdentityProvider (by name, or `namespace/name`) vouches for, directly
    /// or through a gateway token it issued: `{group: admins, identityProvider: corp}`. Without
    /// it a user, group, team or `authenticated` subject matches a caller from any identity
    /// provider (and, for users and teams, API keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    pub identity_provider: Option<String>,
}
