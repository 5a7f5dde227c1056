//! The custom resources as users write them. Field names are camelCase; unknown fields are
//! refused so a typo (`maxToken`) is an error, not a silently ignored setting.
//!
//! One file per kind; the types they share (status, Secret references, fail modes) live here.

mod access_policy;
mod api_key;
mod gateway_tokens;
mod identity_provider;
mod model_endpoint;
mod team_budget;

pub use access_policy::*;
pub use api_key::*;
pub use gateway_tokens::*;
pub use identity_provider::*;
pub use model_endpoint::*;
pub use team_budget::*;

#[cfg(feature = "kube")]
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of every llmgate resource: `Accepted`, `ResolvedRefs` and `Ready` conditions, each
/// with a reason and a message a person can act on, and the generation they describe.
#[cfg(feature = "kube")]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
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
    /// A Kubernetes Secret name (outside a cluster, a directory under `--secrets-dir`).
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// A key of the Secret: letters, digits, `-`, `_` and `.`, never `..`.
    #[schemars(length(min = 1, max = 253), pattern(r"^\.?([-_a-zA-Z0-9]+\.?)+$"))]
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailModeSpec {
    Open,
    Closed,
}
