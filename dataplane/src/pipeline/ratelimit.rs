//! Rate-limit stage: which `rateLimits` of the snapshot apply to a caller and model, and the
//! counters they are kept in. The counting itself happens in the admission stage, in the same
//! atomic call as the budgets.

use std::fmt::Write as _;
use std::sync::Arc;

use llmgate_snapshot::{Endpoint, LimitDimension, RateLimit};

use super::policy;
use crate::counters::{Check, CheckKind, KEY_PREFIX};
use crate::identity::Identity;

/// A rate limit as the request path reads it.
pub struct LimitRt {
    /// `namespace/policy#name`, in errors, metrics and keys.
    pub id: Arc<str>,
    pub spec: RateLimit,
    pub window_us: u64,
    /// Whether the counter is per caller (lives under the caller's tag) or shared.
    per_caller: bool,
    shared_tag: Arc<str>,
}

/// What a check counts; decides the headers it feeds and how it is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
        }
    }
}

impl LimitRt {
    pub fn build(spec: &RateLimit) -> LimitRt {
        let id: Arc<str> = Arc::from(format!(
            "{}/{}#{}",
            spec.source.namespace, spec.source.name, spec.name
        ));
        LimitRt {
            shared_tag: Arc::from(format!("g:{id}")),
            per_caller: spec
                .per
                .iter()
                .any(|d| matches!(d, LimitDimension::User | LimitDimension::Team)),
            window_us: spec.window.millis() * 1000,
            spec: spec.clone(),
            id,
        }
    }

    pub fn applies_to_caller(&self, who: &Identity) -> bool {
        self.spec.subjects.is_empty() || self.spec.subjects.iter().any(|s| policy::matches(s, who))
    }

    pub fn applies_to_model(&self, ep: &Endpoint) -> bool {
        ep.selected_by(&self.spec.models)
    }

    /// The checks of this limit for one request: one per unit it limits.
    pub fn checks(
        &self,
        who: &Identity,
        caller_tag: &Arc<str>,
        model: &str,
        tokens: u64,
        out: &mut Vec<(Check, Unit)>,
    ) {
        let tag = if self.per_caller {
            Arc::clone(caller_tag)
        } else {
            Arc::clone(&self.shared_tag)
        };
        let mut key = String::with_capacity(96);
        let _ = write!(key, "{KEY_PREFIX}{{{tag}}}:rl:{}:", self.id);
        for d in &self.spec.per {
            match d {
                LimitDimension::User => {
                    let _ = write!(key, "u={},", who.name);
                }
                LimitDimension::Team => {
                    let _ = write!(key, "t={},", who.team.as_deref().unwrap_or("-"));
                }
                LimitDimension::Model => {
                    let _ = write!(key, "m={model},");
                }
            }
        }
        let check = |unit: Unit, limit: u64, cost: u64| Check {
            tag: Arc::clone(&tag),
            key: format!("{key}{}", if unit == Unit::Requests { "r" } else { "t" }),
            kind: CheckKind::Rate {
                window_us: self.window_us,
                limit,
                cost,
            },
            fail_mode: self.spec.fail_mode,
            local_percent: self.spec.local_allowance_percent,
        };
        if let Some(limit) = self.spec.requests {
            out.push((check(Unit::Requests, limit, 1), Unit::Requests));
        }
        if let Some(limit) = self.spec.tokens {
            out.push((check(Unit::Tokens, limit, tokens), Unit::Tokens));
        }
    }
}

/// OpenAI's reset format: `1s`, `6m0s`, `59.5s`, `20ms`.
pub fn reset_text(us: u64) -> String {
    let ms = us.div_ceil(1000);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        let t = format!("{s:.3}");
        let t = t.trim_end_matches('0').trim_end_matches('.');
        return format!("{t}s");
    }
    let total = ms / 1000;
    let (h, m, sec) = (total / 3600, (total % 3600) / 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else {
        format!("{m}m{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_read_like_openai() {
        assert_eq!(reset_text(20_000), "20ms");
        assert_eq!(reset_text(1_000_000), "1s");
        assert_eq!(reset_text(59_500_000), "59.5s");
        assert_eq!(reset_text(360_000_000), "6m0s");
        assert_eq!(reset_text(3_723_000_000), "1h2m3s");
    }
}
