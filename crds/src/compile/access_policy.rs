//! `AccessPolicy` → policy rules and rate limits. A policy keeps its valid rules and loses only
//! the broken parts; a rate limit is kept whole or not at all.

use std::collections::BTreeSet;

use llmgate_snapshot::{self as snap, ModelSelector, ResourceRef};

use super::{
    CompileError, Declared, Errs, Reason, Resources, compile_models, fail_mode, namespace_of,
    qualified, source,
};
use crate::object::Object;
use crate::resources::{
    AccessPolicySpec, EffectSpec, LimitDimensionSpec, RateLimitSpec, RuleSpec, SubjectSpec,
    WindowSpec,
};

/// The rules and rate limits of every policy.
pub(super) fn compile_all(
    resources: &Resources,
    declared: &Declared<'_>,
    errors: &mut Vec<CompileError>,
) -> (Vec<snap::Policy>, Vec<snap::RateLimit>) {
    let mut policies_in: Vec<&Object<AccessPolicySpec>> =
        resources.access_policies.iter().collect();
    policies_in.sort_by_key(|r| source("AccessPolicy", &r.metadata));
    let mut policies = Vec::new();
    let mut rate_limits = Vec::new();
    for p in policies_in {
        let src = source("AccessPolicy", &p.metadata);
        let mut errs = Errs::new(&src);
        let ns = namespace_of(&p.metadata);
        let rules = p
            .spec
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| compile_rule(i, r, ns, declared, &mut errs))
            .collect::<Vec<_>>();
        if !rules.is_empty() {
            policies.push(snap::Policy {
                source: src.clone(),
                rules,
            });
        }
        let mut names = BTreeSet::new();
        for (i, l) in p.spec.rate_limits.iter().enumerate() {
            if !names.insert(l.name.as_str()) {
                errs.push(
                    format!("spec.rateLimits[{i}].name"),
                    Reason::Conflict,
                    format!(
                        "another rate limit of this policy is already named {:?}",
                        l.name
                    ),
                );
                continue;
            }
            let before = errs.0.len();
            let limit = compile_rate_limit(i, l, &src, declared, &mut errs);
            // A limit is kept whole or not at all: dropping a broken subject would widen it to
            // callers it was never meant for.
            if errs.0.len() == before {
                rate_limits.push(limit);
            }
        }
        errors.extend(errs.0);
    }
    (policies, rate_limits)
}

fn compile_rule(
    index: usize,
    rule: &RuleSpec,
    namespace: &str,
    declared: &Declared<'_>,
    errs: &mut Errs<'_>,
) -> Option<snap::Rule> {
    let at = format!("spec.rules[{index}]");
    let subjects = compile_subjects(&at, &rule.subjects, namespace, declared, errs);
    let mut models = compile_models(&at, &rule.models, &declared.models, errs);
    if let Some(sel) = &rule.model_selector {
        models.push(ModelSelector::Labels(sel.match_labels.clone()));
    }
    if rule.subjects.is_empty() {
        errs.push(
            format!("{at}.subjects"),
            Reason::Invalid,
            "a rule needs at least one subject",
        );
    }
    if rule.models.is_empty() && rule.model_selector.is_none() {
        errs.push(
            format!("{at}.models"),
            Reason::Invalid,
            "a rule needs models or a modelSelector",
        );
    }
    if subjects.is_empty() || models.is_empty() {
        return None;
    }
    Some(snap::Rule {
        name: rule.name.clone().unwrap_or_else(|| format!("rule-{index}")),
        effect: match rule.effect {
            EffectSpec::Allow => snap::Effect::Allow,
            EffectSpec::Deny => snap::Effect::Deny,
        },
        subjects,
        models,
    })
}

fn compile_subjects(
    at: &str,
    specs: &[SubjectSpec],
    namespace: &str,
    declared: &Declared<'_>,
    errs: &mut Errs<'_>,
) -> Vec<snap::Subject> {
    let declared_keys = &declared.keys;
    let mut subjects = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let field = format!("{at}.subjects[{i}]");
        let set = [
            s.user.is_some(),
            s.service_account.is_some(),
            s.team.is_some(),
            s.group.is_some(),
            s.api_key.is_some(),
            s.authenticated.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            errs.push(
                field,
                Reason::Invalid,
                "set exactly one of user, serviceAccount, team, group, apiKey, authenticated",
            );
            continue;
        }
        let subject = if let Some(v) = &s.user {
            snap::Subject::User(v.clone())
        } else if let Some(v) = &s.service_account {
            snap::Subject::ServiceAccount(v.clone())
        } else if let Some(v) = &s.team {
            snap::Subject::Team(v.clone())
        } else if let Some(v) = &s.group {
            snap::Subject::Group(v.clone())
        } else if let Some(v) = &s.api_key {
            let q = if v.contains('/') {
                v.clone()
            } else {
                qualified(namespace, v)
            };
            if !declared_keys.contains(&q) {
                errs.push(
                    format!("{field}.apiKey"),
                    Reason::DanglingRef,
                    format!("ApiKey {q} does not exist"),
                );
                continue;
            }
            snap::Subject::ApiKey(q)
        } else if s.authenticated == Some(true) {
            snap::Subject::Authenticated
        } else {
            errs.push(
                format!("{field}.authenticated"),
                Reason::Invalid,
                "authenticated can only be true",
            );
            continue;
        };
        let subject = match &s.identity_provider {
            None => subject,
            Some(_) if matches!(subject, snap::Subject::ApiKey(_)) => {
                errs.push(
                    format!("{field}.identityProvider"),
                    Reason::Invalid,
                    "an apiKey subject comes from no identity provider",
                );
                continue;
            }
            Some(idp) => {
                let q = if idp.contains('/') {
                    idp.clone()
                } else {
                    qualified(namespace, idp)
                };
                if !declared.identity_providers.contains(&q) {
                    errs.push(
                        format!("{field}.identityProvider"),
                        Reason::DanglingRef,
                        format!("IdentityProvider {q} does not exist"),
                    );
                    continue;
                }
                snap::Subject::From {
                    identity_provider: q,
                    subject: Box::new(subject),
                }
            }
        };
        subjects.push(subject);
    }
    subjects
}

fn compile_rate_limit(
    index: usize,
    spec: &RateLimitSpec,
    src: &ResourceRef,
    declared: &Declared<'_>,
    errs: &mut Errs<'_>,
) -> snap::RateLimit {
    let at = format!("spec.rateLimits[{index}]");
    let subjects = compile_subjects(&at, &spec.subjects, &src.namespace, declared, errs);
    let models = compile_models(&at, &spec.models, &declared.models, errs);
    if spec.requests.is_none() && spec.tokens.is_none() {
        errs.push(at.clone(), Reason::Invalid, "set requests, tokens or both");
    }
    if spec.requests == Some(0) || spec.tokens == Some(0) {
        errs.push(
            at.clone(),
            Reason::Invalid,
            "a limit of 0 refuses everything; use a deny rule instead",
        );
    }
    let mut per: Vec<snap::LimitDimension> = spec
        .per
        .iter()
        .map(|d| match d {
            LimitDimensionSpec::User => snap::LimitDimension::User,
            LimitDimensionSpec::Team => snap::LimitDimension::Team,
            LimitDimensionSpec::Model => snap::LimitDimension::Model,
        })
        .collect();
    per.sort();
    per.dedup();
    snap::RateLimit {
        source: src.clone(),
        name: spec.name.clone(),
        subjects,
        models,
        per,
        window: match spec.window {
            WindowSpec::Minute => snap::Window::Minute,
            WindowSpec::Hour => snap::Window::Hour,
            WindowSpec::Day => snap::Window::Day,
        },
        requests: spec.requests,
        tokens: spec.tokens,
        fail_mode: fail_mode(spec.fail_mode, snap::FailMode::Open),
        local_allowance_percent: spec.local_allowance_percent.unwrap_or(10).min(100),
    }
}
