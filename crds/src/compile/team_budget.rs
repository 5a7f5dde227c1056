//! `TeamBudget` → a budget: amount, period, models, what happens when spent, alerts.

use std::collections::{BTreeMap, BTreeSet};

use llmgate_snapshot::{self as snap, ResourceRef};

use super::{
    CompileError, Declared, Errs, Reason, Resources, compile_models, fail_mode, parse_base_url,
    source,
};
use crate::object::Object;
use crate::resources::{PeriodSpec, TeamBudgetSpec};

/// Every budget that compiles.
pub(super) fn compile_all(
    resources: &Resources,
    declared: &Declared<'_>,
    errors: &mut Vec<CompileError>,
) -> Vec<snap::Budget> {
    let declared_models = &declared.models;
    let mut budgets_in: Vec<&Object<TeamBudgetSpec>> = resources.team_budgets.iter().collect();
    budgets_in.sort_by_key(|r| source("TeamBudget", &r.metadata));
    let mut budgets = Vec::new();
    for b in budgets_in {
        let src = source("TeamBudget", &b.metadata);
        let mut errs = Errs::new(&src);
        let budget = compile_budget(b, &src, declared_models, &mut errs);
        if errs.is_empty() {
            budgets.push(budget);
        }
        errors.extend(errs.0);
    }
    budgets
}

fn compile_budget(
    b: &Object<TeamBudgetSpec>,
    src: &ResourceRef,
    declared_models: &BTreeSet<&str>,
    errs: &mut Errs<'_>,
) -> snap::Budget {
    let spec = &b.spec;
    let models = compile_models("spec", &spec.models, declared_models, errs);
    let time_zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".to_owned());
    if jiff::tz::TimeZone::get(&time_zone).is_err() {
        errs.push(
            "spec.timeZone",
            Reason::Invalid,
            format!("unknown time zone {time_zone:?}; use an IANA name such as Europe/Berlin"),
        );
    }
    if !(spec.amount_usd.is_finite() && spec.amount_usd >= 0.0) {
        errs.push(
            "spec.amountUsd",
            Reason::Invalid,
            "amountUsd must be a number of USD, 0 or more",
        );
    }
    for (i, m) in spec.fallback.iter().enumerate() {
        let field = format!("spec.fallback[{i}]");
        if !declared_models.contains(m.as_str()) {
            errs.push(
                field,
                Reason::DanglingRef,
                format!("no ModelEndpoint serves model {m:?}"),
            );
        } else if models.iter().any(|s| s.matches(m, &BTreeMap::new())) || spec.models.is_empty() {
            errs.push(
                field,
                Reason::Invalid,
                format!("fallback model {m:?} is covered by this same budget, so it cannot help once the budget is spent"),
            );
        }
    }
    if spec.clamp_max_tokens == Some(true) && !spec.fallback.is_empty() {
        errs.push(
            "spec.clampMaxTokens",
            Reason::Invalid,
            "choose clampMaxTokens or fallback, not both",
        );
    }
    let mut alert_thresholds = Vec::new();
    let mut alert_webhook = None;
    if let Some(a) = &spec.alerts {
        alert_thresholds = if a.thresholds.is_empty() {
            vec![50, 80, 100]
        } else {
            a.thresholds.clone()
        };
        if let Some(t) = alert_thresholds.iter().find(|t| **t == 0 || **t > 100) {
            errs.push(
                "spec.alerts.thresholds",
                Reason::Invalid,
                format!("threshold {t} is not a percent between 1 and 100"),
            );
        }
        alert_thresholds.sort_unstable();
        alert_thresholds.dedup();
        if let Err(m) = parse_base_url(&a.webhook_url) {
            errs.push("spec.alerts.webhookUrl", Reason::Invalid, m);
        }
        alert_webhook = Some(a.webhook_url.clone());
    }
    snap::Budget {
        source: src.clone(),
        team: spec.team.clone(),
        amount_micros: (spec.amount_usd.max(0.0) * 1e6).round() as u64,
        period: match spec.period {
            PeriodSpec::Day => snap::Period::Day,
            PeriodSpec::Month => snap::Period::Month,
        },
        time_zone,
        models,
        fallback: spec.fallback.clone(),
        clamp_max_tokens: spec.clamp_max_tokens.unwrap_or(false),
        fail_mode: fail_mode(spec.fail_mode, snap::FailMode::Closed),
        local_allowance_percent: spec.local_allowance_percent.unwrap_or(5).min(100),
        alert_thresholds,
        alert_webhook,
    }
}
