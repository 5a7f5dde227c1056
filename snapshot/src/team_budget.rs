//! What a `TeamBudget` compiles to: a spending limit over a calendar period.

use serde::{Deserialize, Serialize};

use crate::{FailMode, ModelSelector, ResourceRef};

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
