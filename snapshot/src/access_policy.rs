//! What an `AccessPolicy` compiles to: rules (who may call which models) and rate limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{FailMode, ResourceRef, glob_match};

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
    /// `subject`, vouched for by the IdentityProvider `namespace/name` (directly or through a
    /// gateway token from a login there); never an API key.
    #[serde(rename_all = "camelCase")]
    From {
        identity_provider: String,
        subject: Box<Subject>,
    },
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
