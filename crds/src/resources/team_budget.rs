//! `TeamBudget`: what a team may spend per period, and what happens when it is spent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::FailModeSpec;
#[cfg(feature = "kube")]
use super::ResourceStatus;

/// What a team may spend on some models per day or month, and what happens when it is spent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[cfg_attr(feature = "kube", derive(kube::CustomResource))]
#[cfg_attr(
    feature = "kube",
    kube(
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
    )
)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.clampMaxTokens) || !self.clampMaxTokens || !has(self.fallback) || size(self.fallback) == 0", "message": "choose clampMaxTokens or fallback, not both"}]))]
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
