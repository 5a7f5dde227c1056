//! The in-process counter store: the same algorithms as `llmgate_v1.lua`, on a map behind one
//! mutex (held for a few map operations, never across an await).
//!
//! Used alone in standalone mode (one process: its counters are the whole truth) and, next to
//! Redis, as each replica's fail-open allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BudgetSettled, Check, CheckKind, CheckState, LockExt, Plan, SettleItem, Verdict};

#[derive(Default)]
pub struct MemoryStore {
    cells: Mutex<Cells>,
}

#[derive(Default)]
struct Cells {
    map: HashMap<String, Cell>,
    ops: u64,
}

enum Cell {
    /// GCRA theoretical arrival time, µs.
    Tat(f64),
    Budget(BudgetCell),
}

#[derive(Default)]
struct BudgetCell {
    spent: i64,
    reserved: i64,
    /// rid → (amount, hold expiry µs)
    holds: HashMap<String, (i64, u64)>,
    alerted: Vec<u8>,
    expire_at_ms: i64,
}

impl BudgetCell {
    fn purge(&mut self, now: u64) {
        let expired: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(rid, _)| rid.clone())
            .collect();
        for rid in expired {
            if let Some((amount, _)) = self.holds.remove(&rid) {
                self.reserved -= amount;
            }
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn remaining(window_us: u64, limit: u64, tat_after: f64, now: u64) -> i64 {
    ((window_us as f64 - (tat_after - now as f64)) * limit as f64 / window_us as f64).floor() as i64
}

impl MemoryStore {
    pub fn admit(&self, plan: &Plan) -> Verdict {
        self.admit_at(plan, now_us())
    }

    pub fn settle(&self, items: &[SettleItem]) -> Vec<Option<BudgetSettled>> {
        self.settle_at(items, now_us())
    }

    /// Sets `key` for `ttl_secs` unless it is set: whether it was new.
    pub fn set_nx(&self, key: &str, ttl_secs: u64) -> bool {
        self.set_nx_at(key, ttl_secs, now_us())
    }

    fn set_nx_at(&self, key: &str, ttl_secs: u64, now: u64) -> bool {
        let mut cells = self.cells.lock_();
        match cells.map.get(key) {
            Some(Cell::Tat(until)) if *until > now as f64 => false,
            _ => {
                cells.map.insert(
                    key.to_owned(),
                    Cell::Tat(now as f64 + ttl_secs as f64 * 1e6),
                );
                true
            }
        }
    }

    /// Marks `threshold` as alerted on the budget at `key`: its spend when this call marked it,
    /// `None` when it already was (or there is no such budget).
    pub fn mark_alert(&self, key: &str, threshold: u8) -> Option<i64> {
        let mut cells = self.cells.lock_();
        match cells.map.get_mut(key) {
            Some(Cell::Budget(b)) if !b.alerted.contains(&threshold) => {
                b.alerted.push(threshold);
                Some(b.spent)
            }
            _ => None,
        }
    }

    /// Forgets everything (the local allowance after the shared store returns).
    pub fn clear(&self) {
        self.cells.lock_().map.clear();
    }

    pub(crate) fn admit_at(&self, plan: &Plan, now: u64) -> Verdict {
        let mut cells = self.cells.lock_();
        cells.sweep(now);
        let mut exhausted = Verdict::BudgetExhausted {
            candidate: 0,
            check: 0,
            left: 0,
        };
        for (ci, checks) in plan.candidates.iter().enumerate() {
            let mut after = Vec::with_capacity(checks.len());
            let mut fits = true;
            for (i, c) in checks.iter().enumerate() {
                match &c.kind {
                    CheckKind::Rate {
                        window_us,
                        limit,
                        cost,
                    } => {
                        let tat = cells.tat(&c.key).max(now as f64);
                        let next = tat + *cost as f64 * *window_us as f64 / *limit as f64;
                        if next - now as f64 > *window_us as f64 {
                            return Verdict::RateLimited {
                                candidate: ci,
                                check: i,
                                retry_after_us: (next - now as f64 - *window_us as f64) as u64,
                                state: CheckState {
                                    remaining: remaining(*window_us, *limit, tat, now).max(0),
                                    reset_us: (tat - now as f64) as u64,
                                    clamped: None,
                                },
                            };
                        }
                        after.push((next, None));
                    }
                    CheckKind::Budget {
                        limit, cost, clamp, ..
                    } => {
                        let b = cells.budget(&c.key);
                        b.purge(now);
                        let left = *limit as i64 - b.spent - b.reserved;
                        if *cost as i64 > left
                            && let Some(n) = clamp.and_then(|cl| cl.tokens(left))
                        {
                            after.push((left as f64, Some(n)));
                            continue;
                        }
                        if *cost as i64 > left {
                            fits = false;
                            exhausted = Verdict::BudgetExhausted {
                                candidate: ci,
                                check: i,
                                left,
                            };
                            break;
                        }
                        after.push((left as f64, None));
                    }
                }
            }
            if fits {
                let states = checks
                    .iter()
                    .zip(after)
                    .map(|(c, a)| apply(&mut cells, c, a, &plan.rid, now))
                    .collect();
                return Verdict::Admitted {
                    candidate: ci,
                    states,
                };
            }
        }
        exhausted
    }

    pub(crate) fn settle_at(&self, items: &[SettleItem], now: u64) -> Vec<Option<BudgetSettled>> {
        let mut cells = self.cells.lock_();
        items
            .iter()
            .map(|it| match it {
                SettleItem::Rate {
                    key,
                    window_us,
                    limit,
                    delta,
                    ..
                } => {
                    let tat = cells.tat(key).max(now as f64);
                    let next =
                        (tat + *delta as f64 * *window_us as f64 / *limit as f64).max(now as f64);
                    cells.map.insert(key.clone(), Cell::Tat(next));
                    None
                }
                SettleItem::Budget {
                    key,
                    rid,
                    actual,
                    limit,
                    thresholds,
                    expire_at_ms,
                    ..
                } => {
                    let b = cells.budget(key);
                    // With a rid, charge only while the reservation is held: at most once.
                    let charge = match b.holds.remove(rid) {
                        Some((amount, _)) => {
                            b.reserved -= amount;
                            true
                        }
                        None => rid.is_empty(),
                    };
                    if charge {
                        b.spent += *actual as i64;
                    }
                    b.expire_at_ms = *expire_at_ms;
                    let mut fired = Vec::new();
                    for th in thresholds {
                        if b.spent as i128 * 100 >= *limit as i128 * i128::from(*th)
                            && !b.alerted.contains(th)
                        {
                            b.alerted.push(*th);
                            fired.push(*th);
                        }
                    }
                    Some(BudgetSettled {
                        spent: b.spent,
                        reserved: b.reserved,
                        fired,
                    })
                }
            })
            .collect()
    }

    /// Spent and reserved micro-USD of a budget key (tests, `/readyz`).
    pub fn budget_state(&self, key: &str) -> Option<(i64, i64)> {
        match self.cells.lock_().map.get(key) {
            Some(Cell::Budget(b)) => Some((b.spent, b.reserved)),
            _ => None,
        }
    }
}

fn apply(
    cells: &mut Cells,
    c: &Check,
    (after, clamped): (f64, Option<u64>),
    rid: &str,
    now: u64,
) -> CheckState {
    match &c.kind {
        CheckKind::Rate {
            window_us, limit, ..
        } => {
            cells.map.insert(c.key.clone(), Cell::Tat(after));
            CheckState {
                remaining: remaining(*window_us, *limit, after, now),
                reset_us: (after - now as f64) as u64,
                clamped: None,
            }
        }
        CheckKind::Budget {
            cost,
            hold_us,
            expire_at_ms,
            clamp,
            ..
        } => {
            let cost = match (clamped, clamp) {
                (Some(n), Some(cl)) => cl.cost(n),
                _ => *cost,
            } as i64;
            let b = cells.budget(&c.key);
            b.reserved += cost;
            b.holds.insert(rid.to_owned(), (cost, now + hold_us));
            b.expire_at_ms = *expire_at_ms;
            CheckState {
                remaining: after as i64 - cost,
                reset_us: 0,
                clamped,
            }
        }
    }
}

impl Cells {
    fn tat(&self, key: &str) -> f64 {
        match self.map.get(key) {
            Some(Cell::Tat(t)) => *t,
            _ => 0.0,
        }
    }

    fn budget(&mut self, key: &str) -> &mut BudgetCell {
        if !matches!(self.map.get(key), Some(Cell::Budget(_))) {
            self.map
                .insert(key.to_owned(), Cell::Budget(BudgetCell::default()));
        }
        match self.map.get_mut(key) {
            Some(Cell::Budget(b)) => b,
            // Inserted just above.
            _ => unreachable!("budget cell present"),
        }
    }

    /// Drops counters that no longer hold anything, now and then, so the map stays as large
    /// as the set of active callers.
    fn sweep(&mut self, now: u64) {
        self.ops += 1;
        if !self.ops.is_multiple_of(4096) {
            return;
        }
        let now_ms = (now / 1000) as i64;
        self.map.retain(|_, c| match c {
            Cell::Tat(t) => *t > now as f64,
            Cell::Budget(b) => b.expire_at_ms > now_ms,
        });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use llmgate_snapshot::FailMode;

    use super::super::{Clamp, release_item};
    use super::*;

    /// A plain charge of `actual` to budget `key` (limit 100), with no reservation behind it.
    fn charge(key: &str, actual: u64) -> SettleItem {
        SettleItem::Budget {
            tag: Arc::from("t"),
            key: key.into(),
            holds_key: format!("{key}:holds"),
            rid: String::new(),
            held: 0,
            actual,
            limit: 100,
            thresholds: vec![],
            expire_at_ms: i64::MAX,
            alert: None,
            once: None,
        }
    }

    pub fn rate(key: &str, limit: u64, cost: u64) -> Check {
        Check {
            tag: Arc::from("t"),
            key: key.into(),
            kind: CheckKind::Rate {
                window_us: 60_000_000,
                limit,
                cost,
            },
            fail_mode: FailMode::Open,
            local_percent: 10,
        }
    }

    pub fn budget(key: &str, limit: u64, cost: u64, hold_us: u64) -> Check {
        Check {
            tag: Arc::from("t"),
            key: key.into(),
            kind: CheckKind::Budget {
                holds_key: format!("{key}:holds"),
                limit,
                cost,
                hold_us,
                expire_at_ms: i64::MAX,
                clamp: None,
            },
            fail_mode: FailMode::Closed,
            local_percent: 0,
        }
    }

    fn plan(rid: &str, candidates: Vec<Vec<Check>>) -> Plan {
        Plan {
            rid: rid.into(),
            candidates,
        }
    }

    const T0: u64 = 1_800_000_000_000_000;

    #[test]
    fn gcra_admits_the_limit_then_refills_at_its_rate() {
        let s = MemoryStore::default();
        let p = plan("r", vec![vec![rate("k", 3, 1)]]);
        for left in [2, 1, 0] {
            let Verdict::Admitted { states, .. } = s.admit_at(&p, T0) else {
                panic!("admitted")
            };
            assert_eq!(states[0].remaining, left);
        }
        let Verdict::RateLimited {
            retry_after_us,
            state,
            ..
        } = s.admit_at(&p, T0)
        else {
            panic!("limited")
        };
        // One unit every 20 s; the counter is full again 60 s after three at once.
        assert_eq!(retry_after_us, 20_000_000);
        assert_eq!((state.remaining, state.reset_us), (0, 60_000_000));
        assert!(matches!(
            s.admit_at(&p, T0 + 20_000_000),
            Verdict::Admitted { .. }
        ));
    }

    /// The replay guard: a key is taken once until its time to live has passed.
    #[test]
    fn a_key_set_if_absent_is_taken_once_until_it_expires() {
        let s = MemoryStore::default();
        assert!(s.set_nx_at("once:a", 10, T0));
        assert!(!s.set_nx_at("once:a", 10, T0));
        assert!(!s.set_nx_at("once:a", 10, T0 + 9_999_999));
        assert!(s.set_nx_at("once:b", 10, T0), "another key is free");
        assert!(
            s.set_nx_at("once:a", 10, T0 + 10_000_000),
            "expired after 10 s"
        );
        assert!(!s.set_nx_at("once:a", 10, T0 + 10_000_001));
        // The same through the clock.
        assert!(s.set_nx("once:c", 10));
        assert!(!s.set_nx("once:c", 10));
    }

    #[test]
    fn budgets_reserve_fall_back_settle_and_expire() {
        let s = MemoryStore::default();
        let first = vec![budget("b", 100, 60, 1_000)];
        let fallback = vec![rate("fb", 10, 1)];
        let p = plan("a", vec![first.clone(), fallback.clone()]);
        assert!(matches!(
            s.admit_at(&p, T0),
            Verdict::Admitted { candidate: 0, .. }
        ));
        // 60 reserved: a second 60 does not fit and takes the fallback.
        let p2 = plan("b", vec![first.clone(), fallback]);
        assert!(matches!(
            s.admit_at(&p2, T0),
            Verdict::Admitted { candidate: 1, .. }
        ));
        // Settling the first at 30 frees 30 of its 60.
        let settled = s.settle_at(
            &[SettleItem::Budget {
                tag: Arc::from("t"),
                key: "b".into(),
                holds_key: "b:holds".into(),
                rid: "a".into(),
                held: 60,
                actual: 30,
                limit: 100,
                thresholds: vec![25, 50],
                expire_at_ms: i64::MAX,
                alert: None,
                once: None,
            }],
            T0,
        );
        assert_eq!(
            settled[0],
            Some(BudgetSettled {
                spent: 30,
                reserved: 0,
                fired: vec![25]
            })
        );
        assert!(matches!(
            s.admit_at(&plan("c", vec![first.clone()]), T0),
            Verdict::Admitted { candidate: 0, .. }
        ));
        assert_eq!(s.budget_state("b"), Some((30, 60)));
        // A threshold the settle fired is not fired again by hand; one it did not is, once,
        // with the spend; a budget never seen has nothing to mark.
        assert_eq!(s.mark_alert("b", 25), None);
        assert_eq!(s.mark_alert("b", 100), Some(30));
        assert_eq!(s.mark_alert("b", 100), None);
        assert_eq!(s.mark_alert("nowhere", 100), None);
        // Its holder never settles: after the hold the reservation is gone.
        let only = plan("d", vec![vec![budget("b", 100, 70, 1_000)]]);
        assert!(matches!(
            s.admit_at(&only, T0),
            Verdict::BudgetExhausted { left: 10, .. }
        ));
        assert!(matches!(
            s.admit_at(&only, T0 + 1_000),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn a_clamping_budget_admits_what_it_can_pay_for() {
        let s = MemoryStore::default();
        let mut b = budget("b", 100, 90, 1_000);
        if let CheckKind::Budget { clamp, .. } = &mut b.kind {
            *clamp = Some(Clamp {
                prompt_cost: 10,
                out_price: 2.0,
                min_tokens: 5,
            });
        }
        let p = plan("a", vec![vec![b.clone()]]);
        // 90 fits in full, and is not marked clamped even with exactly 90 left.
        let exact = MemoryStore::default();
        exact.settle_at(&[charge("b", 10)], T0);
        let Verdict::Admitted { states, .. } = exact.admit_at(&p, T0) else {
            panic!("admitted in full")
        };
        assert_eq!(states[0].clamped, None);
        assert_eq!(
            exact.budget_state("b"),
            Some((10, 90)),
            "exactly all that was left"
        );
        assert!(matches!(s.admit_at(&p, T0), Verdict::Admitted { .. }));
        // 10 left: (10 - 10) / 2 = 0 tokens < 5, refused.
        assert!(matches!(
            s.admit_at(&plan("b", vec![vec![b.clone()]]), T0),
            Verdict::BudgetExhausted { .. }
        ));
        // After the first settles at 60, 40 left: (40 - 10) / 2 = 15 tokens for 40.
        s.settle_at(&[release_item(&b, "a", None)], T0);
        s.settle_at(&[charge("b", 60)], T0);
        let Verdict::Admitted { states, .. } = s.admit_at(&plan("c", vec![vec![b]]), T0) else {
            panic!("clamped admission")
        };
        assert_eq!(states[0].clamped, Some(15));
        assert_eq!(s.budget_state("b"), Some((60, 40)));
    }

    #[test]
    fn a_refused_rate_limit_stops_the_walk_and_reserves_nothing() {
        let s = MemoryStore::default();
        let p = plan(
            "a",
            vec![vec![budget("b", 100, 10, 1_000), rate("k", 1, 2)]],
        );
        assert!(matches!(
            s.admit_at(&p, T0),
            Verdict::RateLimited { check: 1, .. }
        ));
        assert_eq!(s.budget_state("b"), Some((0, 0)));
    }
}
