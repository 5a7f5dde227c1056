//! Budget stage: which `TeamBudget`s cover a caller's team on a model, the period they count
//! in, a request's worst-case cost, the fallback models to try when a budget is spent, and
//! the alerts a settle fires.
//!
//! The reservation itself happens in the admission stage with the rate limits, in one atomic
//! call; the settle in the account stage when the request ends.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};
use llmgate_snapshot::{Budget, Endpoint, Period, Pricing};

use crate::counters::AlertTarget;
use crate::counters::{Check, CheckKind, Clamp, KEY_PREFIX};
use crate::identity::Identity;

/// A budget as the request path reads it.
pub struct BudgetRt {
    /// `namespace/name`.
    pub id: Arc<str>,
    pub spec: Budget,
    tz: TimeZone,
    current: ArcSwap<PeriodNow>,
}

/// The period a budget counts in now, recomputed when it ends.
#[derive(Debug)]
pub struct PeriodNow {
    /// `2026-11-26` (day) or `2026-11` (month), in the budget's time zone.
    pub id: String,
    /// Unix ms when it ends.
    pub end_ms: i64,
    /// RFC 3339 of the end, for messages.
    pub end_text: String,
}

/// Keys outlive their period by a week, so a finance lead can still read yesterday's counters.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;
/// A reservation is held this long past the model's total timeout before it is released as
/// belonging to a dead data plane.
const HOLD_GRACE_MS: u64 = 5_000;

impl BudgetRt {
    pub fn build(spec: &Budget) -> BudgetRt {
        // Compile checked the name; UTC is the safe reading of anything it let through.
        let tz = TimeZone::get(&spec.time_zone).unwrap_or(TimeZone::UTC);
        let current = ArcSwap::from_pointee(period_at(
            &Zoned::now().with_time_zone(tz.clone()),
            spec.period,
        ));
        BudgetRt {
            id: Arc::from(format!("{}/{}", spec.source.namespace, spec.source.name)),
            spec: spec.clone(),
            tz,
            current,
        }
    }

    pub fn covers(&self, ep: &Endpoint) -> bool {
        ep.selected_by(&self.spec.models)
    }

    /// The current period (cached until it ends).
    pub fn period(&self) -> Arc<PeriodNow> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let cur = self.current.load_full();
        if now_ms < cur.end_ms {
            return cur;
        }
        let next = Arc::new(period_at(
            &Zoned::now().with_time_zone(self.tz.clone()),
            self.spec.period,
        ));
        self.current.store(Arc::clone(&next));
        next
    }

    /// The check reserving `cost` micro-USD of this budget for a caller.
    pub fn check(
        &self,
        who: &Identity,
        caller_tag: &Arc<str>,
        cost: u64,
        ep: &Endpoint,
        clamp: Option<Clamp>,
    ) -> (Check, Arc<PeriodNow>) {
        let period = self.period();
        let team = who.team.as_deref().unwrap_or("-");
        let key = format!(
            "{KEY_PREFIX}{{{caller_tag}}}:b:{}:{team}:{}",
            self.id, period.id
        );
        let check = Check {
            tag: Arc::clone(caller_tag),
            kind: CheckKind::Budget {
                holds_key: format!("{key}:holds"),
                limit: self.spec.amount_micros,
                cost,
                hold_us: (ep.timeouts.total_ms + HOLD_GRACE_MS) * 1000,
                expire_at_ms: period.end_ms + KEEP_MS,
                clamp: clamp.filter(|_| self.spec.clamp_max_tokens),
            },
            key,
            fail_mode: self.spec.fail_mode,
            local_percent: self.spec.local_allowance_percent,
        };
        (check, period)
    }

    pub fn alert_target(&self, team: &str, period: &PeriodNow) -> Option<Arc<AlertTarget>> {
        let webhook = self.spec.alert_webhook.clone()?;
        Some(Arc::new(AlertTarget {
            budget: Arc::clone(&self.id),
            team: team.to_owned(),
            period: period.id.clone(),
            amount_usd: self.spec.amount_micros as f64 / 1e6,
            webhook,
        }))
    }
}

fn period_at(now: &Zoned, period: Period) -> PeriodNow {
    let date = now.date();
    let (id, start) = match period {
        Period::Day => (date.to_string(), date),
        Period::Month => (
            format!("{:04}-{:02}", date.year(), date.month()),
            date.first_of_month(),
        ),
    };
    let next = match period {
        Period::Day => start.checked_add(1.day()),
        Period::Month => start.checked_add(1.month()),
    };
    let end = next
        .ok()
        .and_then(|d| d.to_zoned(now.time_zone().clone()).ok())
        .map(|z| z.timestamp())
        .unwrap_or(jiff::Timestamp::MAX);
    PeriodNow {
        id,
        end_ms: end.as_millisecond(),
        end_text: end.to_string(),
    }
}

/// Micro-USD of `prompt` input and `completion` output tokens, rounded up.
pub fn cost_micros(p: &Pricing, prompt: u64, completion: u64) -> u64 {
    (prompt as f64 * p.input_per_million + completion as f64 * p.output_per_million).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_follow_the_budget_calendar() {
        let tz = TimeZone::get("Europe/Berlin").expect("tz");
        // 23:30 UTC on 30 Nov is already 1 Dec in Berlin.
        let t: jiff::Timestamp = "2026-11-30T23:30:00Z".parse().expect("ts");
        let z = t.to_zoned(tz);
        let day = period_at(&z, Period::Day);
        assert_eq!(day.id, "2026-12-01");
        assert_eq!(day.end_text, "2026-12-01T23:00:00Z");
        let month = period_at(&z, Period::Month);
        assert_eq!(month.id, "2026-12");
        assert_eq!(month.end_text, "2026-12-31T23:00:00Z");
        let utc = period_at(&t.to_zoned(TimeZone::UTC), Period::Day);
        assert_eq!(utc.id, "2026-11-30");
    }

    #[test]
    fn cost_is_micro_usd_rounded_up() {
        let p = Pricing {
            input_per_million: 30.0,
            output_per_million: 60.0,
        };
        // 1000 × $30/M + 500 × $60/M = $0.06
        assert_eq!(cost_micros(&p, 1000, 500), 60_000);
        let cheap = Pricing {
            input_per_million: 0.15,
            output_per_million: 0.6,
        };
        assert_eq!(cost_micros(&cheap, 1, 0), 1);
    }
}
