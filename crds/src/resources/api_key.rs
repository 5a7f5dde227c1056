//! `ApiKey`: a gateway key, held in Git only as its SHA-256 or a Secret reference.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(feature = "kube")]
use super::ResourceStatus;
use super::SecretKeySelector;

/// A gateway API key. Git holds only its SHA-256, or a reference to a Secret holding the key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
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
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.user) != has(self.serviceAccount)", "message": "set exactly one of user, serviceAccount"},
    {"rule": "has(self.sha256) != has(self.secretRef)", "message": "set exactly one of sha256, secretRef"},
]))]
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
