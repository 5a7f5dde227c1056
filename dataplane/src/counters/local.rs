//! Degraded mode: while the shared store is away, candidates whose checks all fail open are
//! counted against this replica's allowance, a percentage (`localAllowancePercent`) of each
//! limit, in the in-process store; what was counted goes to the journal for replay.

use std::sync::Arc;

use llmgate_snapshot::FailMode;

use super::journal::push_bounded;
use super::{
    Check, CheckKind, CountedIn, Counters, LockExt, Plan, SettleItem, Unavailable, Verdict,
};

impl Counters {
    /// Degraded mode: candidates whose checks all fail open are counted against this replica's
    /// allowance (a percentage of each limit); a first candidate with a closed check refuses.
    pub(super) fn admit_locally(&self, plan: &Plan) -> Result<(Verdict, CountedIn), Unavailable> {
        let open = |c: &Vec<Check>| c.iter().all(|k| k.fail_mode == FailMode::Open);
        if plan.candidates.first().is_some_and(|c| !open(c)) {
            return Err(Unavailable);
        }
        let scaled = Plan {
            rid: plan.rid.clone(),
            candidates: plan
                .candidates
                .iter()
                .map(|c| {
                    if !open(c) {
                        // Not admissible while degraded: a budget that can admit nothing.
                        return vec![Check {
                            tag: Arc::from(""),
                            key: String::from("llmgate:closed"),
                            kind: CheckKind::Budget {
                                holds_key: String::from("llmgate:closed:holds"),
                                limit: 0,
                                cost: 1,
                                hold_us: 1,
                                expire_at_ms: 0,
                                clamp: None,
                            },
                            fail_mode: FailMode::Closed,
                            local_percent: 0,
                        }];
                    }
                    c.iter().map(scale_local).collect()
                })
                .collect(),
        };
        let v = self.local.admit(&scaled);
        self.metrics.local_admissions.inc();
        if let Verdict::Admitted { candidate, .. } = &v {
            // What was reserved locally reaches Redis as usage: requests now, the rest at
            // settle time.
            let mut j = self.journal.lock_();
            for c in &plan.candidates[*candidate] {
                if let CheckKind::Rate {
                    window_us,
                    limit,
                    cost,
                } = &c.kind
                {
                    push_bounded(
                        &mut j,
                        SettleItem::Rate {
                            tag: Arc::clone(&c.tag),
                            key: c.key.clone(),
                            window_us: *window_us,
                            limit: *limit,
                            delta: *cost as i64,
                            local_percent: c.local_percent,
                            once: None,
                        }
                        .once(),
                        &self.metrics,
                    );
                }
            }
        }
        Ok((v, CountedIn::Local))
    }
}

fn scaled(limit: u64, percent: u8) -> u64 {
    limit.saturating_mul(u64::from(percent)) / 100
}

fn scale_local(c: &Check) -> Check {
    let mut c = c.clone();
    match &mut c.kind {
        CheckKind::Rate { limit, .. } => *limit = scaled(*limit, c.local_percent).max(1),
        CheckKind::Budget { limit, .. } => *limit = scaled(*limit, c.local_percent),
    }
    if c.local_percent == 0 {
        // Nothing may be admitted alone: make the check refuse.
        if let CheckKind::Rate { limit, cost, .. } = &mut c.kind {
            *limit = 1;
            *cost = (*cost).max(2);
        }
    }
    c
}

/// A settle of a local admission, at the scaled limits the admission used.
pub(super) fn scale_local_item(it: &SettleItem) -> SettleItem {
    let mut it = it.clone();
    match &mut it {
        SettleItem::Rate {
            limit,
            local_percent,
            ..
        } => *limit = scaled(*limit, *local_percent).max(1),
        SettleItem::Budget { thresholds, .. } => thresholds.clear(),
    }
    it
}
