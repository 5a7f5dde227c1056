//! Rate limit + budget stages, admitted together: every rate limit and budget that applies to a
//! request (and to each fallback model it may take) goes to the counter store in one atomic
//! call, which picks the first model whose budgets can pay and reserves everything at once.
//!
//! Worst case reserved: prompt tokens (estimated, [`crate::llm::tokenize`]) plus the output
//! limit (the caller's, else the model's `maxOutputTokens`) times the sequences the upstream
//! generates (`n`, `best_of`). Whenever a budget or token limit reserved output, that limit is
//! sent upstream in every length field the provider reads
//! ([`crate::llm::types::LengthFields`]), so the model cannot run past what was reserved. The
//! settle in [`super::account`] charges what the provider reports and releases the rest.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::budget::{PeriodNow, cost_micros};
use super::ctx::Ctx;
use super::ratelimit::{Unit, reset_text};
use crate::counters::{
    Check, CheckKind, CheckState, Clamp, CountedIn, Plan, Ticket, TicketItem, Verdict,
};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::runtime::{Caller, Runtime};

/// What the request needs from the counters: lazily counted prompt tokens and the output
/// tokens it asked for.
pub struct Estimate<'a> {
    pub prompt_tokens: &'a (dyn Fn() -> u64 + Sync),
    /// The caller's output limit per sequence; `None` when it set none.
    pub max_output: Option<u64>,
    /// Sequences generated, each up to the output limit (`n`, `best_of`; at least 1).
    pub choices: u64,
    /// Whether the operation generates output (chat) or not (embeddings).
    pub has_output: bool,
}

/// The admission's outcome for the rest of the pipeline.
pub struct Admitted {
    /// Index of the endpoint that will serve (the model asked for, or a fallback).
    pub endpoint: usize,
    /// The output limit to send upstream: the reserved one or a clamped one; `None` when no
    /// budget or token limit reserved output (the body then goes as the caller sent it).
    pub cap: Option<u64>,
}

/// What a check stands for, by position in its candidate.
enum Meta {
    Rate {
        limit: usize,
        unit: Unit,
    },
    Budget {
        budget: usize,
        period: Arc<PeriodNow>,
    },
}

pub async fn admit(
    gw: &Gateway,
    rt: &Runtime,
    caller: &Caller<'_>,
    first: usize,
    est: Estimate<'_>,
    ctx: &mut Ctx,
) -> Result<Admitted, GatewayError> {
    let who = caller.identity();
    let first_budgets = rt.budgets_for(caller, first);
    let mut candidates = vec![first];
    for &b in &first_budgets {
        for m in &rt.budgets[b].spec.fallback {
            if let Some((i, _)) = rt.endpoint(m)
                && !candidates.contains(&i)
                && caller.decision(rt, i).allowed
            {
                candidates.push(i);
            }
        }
    }
    let nothing_applies = candidates.len() == 1
        && first_budgets.is_empty()
        && rt.limits_for(caller, first).next().is_none();
    if nothing_applies {
        return Ok(Admitted {
            endpoint: first,
            cap: None,
        });
    }

    let mut prompt: Option<u64> = None;
    let mut prompt_tokens = || *prompt.get_or_insert_with(|| (est.prompt_tokens)());
    let mut plan = Plan {
        rid: format!("{:032x}", fastrand::u128(..)),
        candidates: Vec::with_capacity(candidates.len()),
    };
    let mut metas: Vec<Vec<Meta>> = Vec::with_capacity(candidates.len());
    let mut kept: Vec<usize> = Vec::with_capacity(candidates.len());
    let mut outs: Vec<u64> = Vec::with_capacity(candidates.len());
    for &c in &candidates {
        let ep = &rt.endpoints[c].spec;
        // Per sequence, never above what the model can produce (a fallback model may allow
        // less than the one asked for); all bounded, so the products cannot overflow.
        let model_max = u64::from(ep.max_output_tokens);
        let out = if est.has_output {
            est.max_output.map_or(model_max, |m| m.min(model_max))
        } else {
            0
        };
        let choices = est.choices.clamp(1, crate::llm::types::MAX_CHOICES);
        let generated = out.saturating_mul(choices);
        let mut checks: Vec<(Check, Meta)> = Vec::new();
        let mut too_large: Option<GatewayError> = None;
        for li in rt.limits_for(caller, c) {
            let limit = &rt.limits[li];
            let tokens = if limit.spec.tokens.is_some() {
                prompt_tokens().saturating_add(generated)
            } else {
                0
            };
            let mut found = Vec::with_capacity(2);
            limit.checks(who, caller.tag(), &ep.model, tokens, &mut found);
            for (check, unit) in found {
                if let CheckKind::Rate { limit: l, cost, .. } = check.kind
                    && cost > l
                {
                    too_large = Some(GatewayError::ExceedsLimit {
                        limit: Arc::clone(&limit.id),
                        unit: unit.as_str(),
                        needed: cost,
                        allowed: l,
                        window: limit.spec.window.as_str(),
                    });
                }
                checks.push((check, Meta::Rate { limit: li, unit }));
            }
        }
        let others;
        let budgets: &[usize] = if c == first {
            &first_budgets
        } else {
            others = rt.budgets_for(caller, c);
            &others
        };
        for &b in budgets {
            let budget = &rt.budgets[b];
            let p = prompt_tokens();
            let cost = cost_micros(&ep.pricing, p, generated);
            // Clamped tokens are per sequence: each one costs `choices` output tokens.
            let clamp = Clamp {
                prompt_cost: cost_micros(&ep.pricing, p, 0),
                out_price: ep.pricing.output_per_million * choices as f64,
                min_tokens: 1,
            };
            let (check, period) = budget.check(who, caller.tag(), cost, ep, Some(clamp));
            checks.push((check, Meta::Budget { budget: b, period }));
        }
        if let Some(e) = too_large {
            if c == first {
                return Err(e);
            }
            continue;
        }
        let (cs, ms): (Vec<Check>, Vec<Meta>) = checks.into_iter().unzip();
        plan.candidates.push(cs);
        metas.push(ms);
        kept.push(c);
        outs.push(out);
    }

    let (verdict, counted) = gw
        .counters
        .admit(&plan)
        .await
        .map_err(|_| GatewayError::CountersUnavailable)?;
    ctx.rec.counters = Some(match counted {
        CountedIn::Shared => gw.counters.describe(),
        CountedIn::Local => "local",
    });
    match verdict {
        Verdict::Admitted { candidate, states } => {
            let endpoint = kept[candidate];
            let checks = std::mem::take(&mut plan.candidates[candidate]);
            let all_metas = &metas;
            let metas = &all_metas[candidate];
            let reserves_output = est.has_output
                && metas.iter().any(|m| match m {
                    Meta::Rate { unit, .. } => *unit == Unit::Tokens,
                    Meta::Budget { .. } => true,
                });
            let mut cap = reserves_output.then_some(outs[candidate]);
            let mut items = Vec::new();
            let mut headers = RateHeaders::default();
            let mut budget_left: Option<(i64, &Arc<str>)> = None;
            for ((check, meta), state) in checks.into_iter().zip(metas).zip(&states) {
                match meta {
                    &Meta::Rate { unit, .. } => {
                        headers.see(unit, &check, state);
                        if unit == Unit::Tokens {
                            items.push(TicketItem::Tokens(check));
                        }
                    }
                    Meta::Budget { budget, period } => {
                        let b = &rt.budgets[*budget];
                        let reserved = check.reserved(Some(state));
                        if let Some(n) = state.clamped {
                            cap = Some(cap.map_or(n, |c| c.min(n)));
                            ctx.rec.max_tokens_clamped = Some(n);
                        }
                        if budget_left.is_none_or(|(l, _)| state.remaining < l) {
                            budget_left = Some((state.remaining, &b.id));
                        }
                        items.push(TicketItem::Budget {
                            thresholds: b.spec.alert_thresholds.clone(),
                            alert: b.alert_target(who.team.as_deref().unwrap_or("-"), period),
                            check,
                            reserved,
                        });
                    }
                }
            }
            headers.write(&mut ctx.headers);
            if let Some((left, id)) = budget_left {
                insert(&mut ctx.headers, "x-llmgate-budget", id);
                insert(
                    &mut ctx.headers,
                    "x-llmgate-budget-remaining-usd",
                    &format!("{:.6}", left.max(0) as f64 / 1e6),
                );
            }
            if let Some(n) = ctx.rec.max_tokens_clamped {
                insert(
                    &mut ctx.headers,
                    "x-llmgate-max-tokens-clamped",
                    &n.to_string(),
                );
            }
            if endpoint != first {
                let from = &rt.endpoints[first].model;
                if let Some(&b) = first_budgets.first() {
                    spent_out(gw, rt, caller, &plan, all_metas, b);
                }
                let by = first_budgets
                    .first()
                    .map(|&b| Arc::clone(&rt.budgets[b].id))
                    .unwrap_or_else(|| Arc::from(""));
                insert(&mut ctx.headers, "x-llmgate-fallback-from", from);
                insert(
                    &mut ctx.headers,
                    "x-llmgate-fallback-reason",
                    &format!("budget_exhausted; budget={by}"),
                );
                gw.metrics
                    .fallbacks
                    .get_or_create(&crate::telemetry::metrics::FallbackLabels {
                        budget: by.to_string(),
                        from: from.to_string(),
                        to: rt.endpoints[endpoint].model.to_string(),
                    })
                    .inc();
                ctx.rec.fallback_from = Some(Arc::clone(from));
                ctx.rec.fallback_reason = Some(Arc::from(format!("budget_exhausted:{by}")));
            }
            if !items.is_empty() {
                ctx.ticket = Some(Ticket {
                    rid: plan.rid,
                    counted,
                    items,
                });
            }
            Ok(Admitted { endpoint, cap })
        }
        Verdict::RateLimited {
            candidate,
            check,
            retry_after_us,
            state,
        } => {
            let Meta::Rate { limit, unit } = metas[candidate][check] else {
                return Err(GatewayError::Internal("rate verdict on a budget".into()));
            };
            let l = &rt.limits[limit];
            gw.metrics
                .rate_limited
                .get_or_create(&crate::telemetry::metrics::LimitLabels {
                    limit: l.id.to_string(),
                })
                .inc();
            let mut h = RateHeaders::default();
            h.see(unit, &plan.candidates[candidate][check], &state);
            h.write(&mut ctx.headers);
            ctx.rec.rate_limit = Some(Arc::clone(&l.id));
            Err(GatewayError::RateLimited {
                limit: Arc::clone(&l.id),
                unit: unit.as_str(),
                per: l.spec.window.as_str(),
                model: rt.endpoints[kept[candidate]].model.to_string(),
                retry_after_us,
            })
        }
        Verdict::BudgetExhausted {
            candidate, check, ..
        } => {
            let Meta::Budget { budget, .. } = metas[candidate][check] else {
                return Err(GatewayError::Internal("budget verdict on a rate".into()));
            };
            // The model asked for could not be paid: its budget has run out for this caller.
            let first_refused = if candidate == 0 {
                Some(budget)
            } else {
                first_budgets.first().copied()
            };
            if let Some(b) = first_refused {
                spent_out(gw, rt, caller, &plan, &metas, b);
            }
            let b = &rt.budgets[budget];
            gw.metrics
                .budget_exhausted
                .get_or_create(&crate::telemetry::metrics::LimitLabels {
                    limit: b.id.to_string(),
                })
                .inc();
            let period = b.period();
            insert(&mut ctx.headers, "x-llmgate-budget", &b.id);
            insert(&mut ctx.headers, "x-llmgate-budget-remaining-usd", "0");
            Err(GatewayError::BudgetExhausted {
                budget: Arc::clone(&b.id),
                team: who.team.as_deref().unwrap_or("-").to_owned(),
                model: rt.endpoints[kept[candidate]].model.to_string(),
                amount_usd: b.spec.amount_micros as f64 / 1e6,
                period: b.spec.period.as_str(),
                resets_at: period.end_text.clone(),
                retry_after_secs: ((period.end_ms - jiff::Timestamp::now().as_millisecond()) / 1000)
                    .max(1) as u64,
            })
        }
    }
}

/// A budget of the model asked for refused: its 100 % alert, when it has one.
fn spent_out(
    gw: &Gateway,
    rt: &Runtime,
    caller: &Caller<'_>,
    plan: &Plan,
    metas: &[Vec<Meta>],
    budget: usize,
) {
    let b = &rt.budgets[budget];
    if !b.spec.alert_thresholds.contains(&100) {
        return;
    }
    let Some((check, period)) =
        plan.candidates[0]
            .iter()
            .zip(&metas[0])
            .find_map(|(c, m)| match m {
                Meta::Budget { budget: x, period } if *x == budget => Some((c, period)),
                _ => None,
            })
    else {
        return;
    };
    let team = caller.identity().team.as_deref().unwrap_or("-");
    let Some(target) = b.alert_target(team, period) else {
        return;
    };
    crate::alerts::spent_out(
        Arc::clone(&gw.counters),
        gw.clients.get(2_000),
        gw.metrics.alerts.clone(),
        check.key.clone(),
        target,
    );
}

/// The most restrictive requests and tokens counters, for the `x-ratelimit-*` headers.
#[derive(Default)]
struct RateHeaders {
    requests: Option<(u64, i64, u64)>,
    tokens: Option<(u64, i64, u64)>,
}

impl RateHeaders {
    fn see(&mut self, unit: Unit, check: &Check, state: &CheckState) {
        let CheckKind::Rate { limit, .. } = check.kind else {
            return;
        };
        let slot = match unit {
            Unit::Requests => &mut self.requests,
            Unit::Tokens => &mut self.tokens,
        };
        let now = (limit, state.remaining.max(0), state.reset_us);
        if slot.is_none_or(|(_, r, _)| now.1 < r) {
            *slot = Some(now);
        }
    }

    fn write(&self, h: &mut HeaderMap) {
        const NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        for (names, v) in NAMES.iter().zip([self.requests, self.tokens]) {
            if let Some((limit, remaining, reset)) = v {
                h.insert(names[0].clone(), HeaderValue::from(limit));
                h.insert(names[1].clone(), HeaderValue::from(remaining));
                if let Ok(v) = HeaderValue::from_str(&reset_text(reset)) {
                    h.insert(names[2].clone(), v);
                }
            }
        }
    }
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}
