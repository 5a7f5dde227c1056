//! The vocabulary between the request path and the counter stores: a [`Plan`] of candidates,
//! each a list of [`Check`]s; the [`Verdict`] on it; the [`Ticket`] an admitted request keeps;
//! and the [`SettleItem`]s that settle it when the request ends. Plain data, no I/O.
//!
//! The key layout ([`KEY_PREFIX`]) is an API boundary: stored counters outlive a deploy, so a
//! change of meaning is a new version (`v2`), never an edit of `v1`.

use std::sync::Arc;

use llmgate_snapshot::FailMode;
use serde::Serialize;

/// The key layout version; bumped together with the functions' version when stored data changes
/// meaning.
pub const KEY_PREFIX: &str = "llmgate:v1:";

/// One counter an admission touches.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The hash tag: checks with equal tags live in one cluster slot.
    pub tag: Arc<str>,
    pub key: String,
    pub kind: CheckKind,
    pub fail_mode: FailMode,
    /// Percent of the limit this replica may admit alone while the store is away.
    pub local_percent: u8,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// GCRA: `limit` units per `window_us`; this request costs `cost` units.
    Rate {
        window_us: u64,
        limit: u64,
        cost: u64,
    },
    /// A budget period: `limit` micro-USD; this request reserves `cost`.
    Budget {
        /// Sorted set of reservation expiries.
        holds_key: String,
        limit: u64,
        cost: u64,
        /// How long the reservation survives without a settle.
        hold_us: u64,
        /// Unix ms after which the period's keys may go.
        expire_at_ms: i64,
        /// When set, a request the budget cannot cover in full is admitted with fewer output
        /// tokens, if at least `min_tokens` fit.
        clamp: Option<Clamp>,
    },
}

/// How to lower a request's output tokens to what a budget can pay for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clamp {
    /// Micro-USD of the prompt.
    pub prompt_cost: u64,
    /// Micro-USD per output token.
    pub out_price: f64,
    pub min_tokens: u64,
}

impl Clamp {
    /// Output tokens `left` micro-USD pay for after the prompt, if at least `min_tokens`.
    pub fn tokens(&self, left: i64) -> Option<u64> {
        if self.out_price <= 0.0 {
            return None;
        }
        let n = ((left as f64 - self.prompt_cost as f64) / self.out_price).floor();
        (n >= self.min_tokens as f64).then_some(n as u64)
    }

    pub fn cost(&self, tokens: u64) -> u64 {
        (self.prompt_cost as f64 + tokens as f64 * self.out_price).ceil() as u64
    }
}

/// The candidates of one request, in order of preference: the model asked for, then its
/// fallbacks. Each lists every counter that must admit it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Reservation id: unique per request.
    pub rid: String,
    pub candidates: Vec<Vec<Check>>,
}

/// Remaining allowance of one check after an admission.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CheckState {
    /// Units (rate) or micro-USD (budget) still available.
    pub remaining: i64,
    /// Time until the counter is full again (rate limits; 0 for budgets).
    pub reset_us: u64,
    /// Budgets: the output tokens the request was lowered to, when it was.
    pub clamped: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Admitted {
        candidate: usize,
        states: Vec<CheckState>,
    },
    RateLimited {
        candidate: usize,
        check: usize,
        retry_after_us: u64,
        state: CheckState,
    },
    /// No candidate's budgets could cover it; `check` of `candidate` is the last one refusing.
    BudgetExhausted {
        candidate: usize,
        check: usize,
        left: i64,
    },
}

/// What to settle for one admitted check.
#[derive(Clone, Debug, PartialEq)]
pub enum SettleItem {
    Rate {
        tag: Arc<str>,
        key: String,
        window_us: u64,
        limit: u64,
        /// Units used beyond what was admitted (negative: fewer).
        delta: i64,
        /// The check's local allowance, to settle a local admission at its scaled rate.
        local_percent: u8,
        /// A key set once: the item is applied only if it was not set (replays).
        once: Option<String>,
    },
    Budget {
        tag: Arc<str>,
        key: String,
        holds_key: String,
        /// Empty when nothing was reserved in this store (a replayed local charge).
        rid: String,
        /// The amount the admission reserved (what is released).
        held: u64,
        actual: u64,
        limit: u64,
        thresholds: Vec<u8>,
        expire_at_ms: i64,
        /// Where a crossed threshold is reported.
        alert: Option<Arc<AlertTarget>>,
        once: Option<String>,
    },
}

impl SettleItem {
    pub fn tag(&self) -> &Arc<str> {
        match self {
            SettleItem::Rate { tag, .. } | SettleItem::Budget { tag, .. } => tag,
        }
    }

    /// Marks the item to apply once, for a replay that may repeat a call that timed out but
    /// was executed.
    pub(crate) fn once(mut self) -> SettleItem {
        let id = format!("{:032x}", fastrand::u128(..));
        match &mut self {
            SettleItem::Rate { tag, once, .. } | SettleItem::Budget { tag, once, .. } => {
                *once = Some(format!("{KEY_PREFIX}{{{tag}}}:once:{id}"));
            }
        }
        self
    }
}

/// What a budget settle saw: the spend after it and the alert thresholds it crossed first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BudgetSettled {
    pub spent: i64,
    pub reserved: i64,
    pub fired: Vec<u8>,
}

/// Where an admission was counted, so its settle goes to the same place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountedIn {
    Shared,
    Local,
}

/// Where a period's alerts go: plain data carried with each budget settle, for whoever
/// [`super::Counters::on_settled`] hands crossed thresholds to.
#[derive(Debug, PartialEq, Serialize)]
pub struct AlertTarget {
    pub budget: Arc<str>,
    pub team: String,
    pub period: String,
    pub amount_usd: f64,
    #[serde(skip)]
    pub webhook: String,
}

/// What to settle when the request ends.
pub struct Ticket {
    pub rid: String,
    pub counted: CountedIn,
    pub items: Vec<TicketItem>,
}

pub enum TicketItem {
    /// A token limit: its check's cost is what was reserved.
    Tokens(Check),
    Budget {
        check: Check,
        reserved: u64,
        thresholds: Vec<u8>,
        alert: Option<Arc<AlertTarget>>,
    },
}

impl Ticket {
    /// The settles for this request. `usage` is what the provider reported and `cost` its price
    /// in micro-USD; without them, a request that produced output is charged what was reserved
    /// (the worst case) and one that produced nothing is released. Also what the budgets were
    /// charged.
    pub fn settle_items(
        self,
        usage: Option<(u64, u64)>,
        cost: Option<u64>,
        produced: bool,
    ) -> (Vec<SettleItem>, Option<u64>) {
        let mut out = Vec::with_capacity(self.items.len());
        let mut charged = None;
        for item in self.items {
            match item {
                TicketItem::Tokens(check) => {
                    let reserved = check.reserved(None);
                    let used = match usage {
                        Some((p, c)) => p + c,
                        None if produced => reserved,
                        None => 0,
                    };
                    if used != reserved {
                        out.push(check.settle(&self.rid, used, 0, 0));
                    }
                }
                TicketItem::Budget {
                    check,
                    reserved,
                    thresholds,
                    alert,
                } => {
                    let actual = match (usage, cost) {
                        (Some(_), Some(c)) => c,
                        _ if produced => reserved,
                        _ => 0,
                    };
                    charged = Some(actual);
                    let mut item = check.settle(&self.rid, 0, actual, reserved);
                    if let SettleItem::Budget {
                        thresholds: t,
                        alert: a,
                        ..
                    } = &mut item
                    {
                        *t = thresholds;
                        *a = alert;
                    }
                    out.push(item);
                }
            }
        }
        (out, charged)
    }
}

impl Check {
    /// The settle of an admitted check: for a rate limit, `used` units in place of the cost
    /// admitted; for a budget, `actual` charged and the `held` reservation released.
    pub fn settle(&self, rid: &str, used: u64, actual: u64, held: u64) -> SettleItem {
        match &self.kind {
            CheckKind::Rate {
                window_us,
                limit,
                cost,
            } => SettleItem::Rate {
                tag: Arc::clone(&self.tag),
                key: self.key.clone(),
                window_us: *window_us,
                limit: *limit,
                delta: used as i64 - *cost as i64,
                local_percent: self.local_percent,
                once: None,
            },
            CheckKind::Budget {
                holds_key,
                limit,
                expire_at_ms,
                ..
            } => SettleItem::Budget {
                tag: Arc::clone(&self.tag),
                key: self.key.clone(),
                holds_key: holds_key.clone(),
                rid: rid.to_owned(),
                held,
                actual,
                limit: *limit,
                thresholds: Vec::new(),
                expire_at_ms: *expire_at_ms,
                alert: None,
                once: None,
            },
        }
    }

    /// What a budget check reserved: its cost, or less when the admission clamped it.
    pub fn reserved(&self, state: Option<&CheckState>) -> u64 {
        match &self.kind {
            CheckKind::Budget { cost, clamp, .. } => match (state.and_then(|s| s.clamped), clamp) {
                (Some(n), Some(cl)) => cl.cost(n),
                _ => *cost,
            },
            CheckKind::Rate { cost, .. } => *cost,
        }
    }
}

/// The settle that undoes an admission of `c` (a later group refused, or nothing was used);
/// `state` is what the admission said of it.
pub fn release_item(c: &Check, rid: &str, state: Option<&CheckState>) -> SettleItem {
    c.settle(rid, 0, 0, c.reserved(state))
}
