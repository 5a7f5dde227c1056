//! Shared counters for rate limits and budgets: one interface, two stores.
//!
//! - [`memory`]: in this process; standalone mode without `--redis-url`, and the bounded local
//!   allowance a `failMode: open` limit falls back to while Redis is away.
//! - [`redis`]: every data-plane replica counts in one Redis (single node or cluster) through
//!   two versioned server-side functions (`llmgate_v1.lua`): `admit` checks and reserves
//!   everything that applies to a request in one atomic call, `settle` charges what was really
//!   used and releases the rest. Settles are batched, so a request costs one round trip plus a
//!   share of a batch.
//!
//! Rate limits use GCRA (a token bucket kept as one timestamp per counter): exact, one key per
//! counter, no burst at window edges as fixed windows have, and a cost per request, which is
//! what token limits and their true-up need. Budgets reserve a request's worst-case cost at
//! admission and settle the real cost afterwards, so concurrent requests can never spend more
//! than the budget between them; reservations carry a hold time after which a dead data plane's
//! reservation is released.
//!
//! [`Counters`] adds what the stores do not know: fail modes, degraded mode and the journal of
//! what was counted locally, replayed into Redis when it returns.

pub mod memory;
pub mod redis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use llmgate_snapshot::FailMode;
use tokio::sync::{Notify, mpsc};

use crate::alerts::AlertTarget;
use crate::metrics::CounterMetrics;

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
    fn once(mut self) -> SettleItem {
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("counter store: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("counter store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("counter store: unexpected reply: {0}")]
    Reply(String),
    #[error("counter store is not connected yet")]
    NotConnected,
}

/// Where an admission was counted, so its settle goes to the same place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountedIn {
    Shared,
    Local,
}

/// Why an admission could not be decided.
#[derive(Debug, thiserror::Error)]
#[error("the counter store is unavailable and a limit or budget on this model fails closed")]
pub struct Unavailable;

/// Settled budget results, delivered to the alert sender.
pub type OnSettled = Arc<dyn Fn(&SettleItem, &BudgetSettled) + Send + Sync>;

enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

/// Queued settles; the journal holds what must reach Redis once it is back.
const JOURNAL_MAX: usize = 100_000;
const TIMEOUTS_TO_DEGRADE: u32 = 3;
const SETTLE_BATCH: usize = 512;

pub struct Counters {
    store: Store,
    /// The fail-open allowance of this replica.
    local: memory::MemoryStore,
    degraded: AtomicBool,
    /// Timeouts in a row: one slow answer is not yet an outage.
    timeouts: std::sync::atomic::AtomicU32,
    /// The first connection attempt has ended (either way); readiness waits for it so a fresh
    /// replica does not refuse fail-closed requests while it is still connecting.
    tried: AtomicBool,
    recover: Notify,
    stop: Notify,
    journal: Mutex<Vec<SettleItem>>,
    settle_tx: mpsc::UnboundedSender<SettleItem>,
    metrics: CounterMetrics,
    on_settled: Mutex<Option<OnSettled>>,
}

impl Counters {
    /// An in-process store. Returns the settle receiver for [`Counters::run`].
    pub fn memory(metrics: CounterMetrics) -> (Arc<Counters>, mpsc::UnboundedReceiver<SettleItem>) {
        Self::with(Store::Memory(memory::MemoryStore::default()), metrics)
    }

    pub fn redis(
        store: redis::RedisStore,
        metrics: CounterMetrics,
    ) -> (Arc<Counters>, mpsc::UnboundedReceiver<SettleItem>) {
        let (c, rx) = Self::with(Store::Redis(store), metrics);
        // Degraded (fail modes apply) until the first connection is made.
        c.degraded.store(true, Ordering::Relaxed);
        c.metrics.degraded.set(1);
        (c, rx)
    }

    fn with(
        store: Store,
        metrics: CounterMetrics,
    ) -> (Arc<Counters>, mpsc::UnboundedReceiver<SettleItem>) {
        let (settle_tx, rx) = mpsc::unbounded_channel();
        let c = Arc::new(Counters {
            store,
            local: memory::MemoryStore::default(),
            degraded: AtomicBool::new(false),
            timeouts: std::sync::atomic::AtomicU32::new(0),
            tried: AtomicBool::new(false),
            recover: Notify::new(),
            stop: Notify::new(),
            journal: Mutex::new(Vec::new()),
            settle_tx,
            metrics,
            on_settled: Mutex::new(None),
        });
        (c, rx)
    }

    pub fn describe(&self) -> &'static str {
        match &self.store {
            Store::Memory(_) => "memory",
            Store::Redis(r) => r.describe(),
        }
    }

    pub fn on_settled(&self, f: OnSettled) {
        *self.on_settled.lock_() = Some(f);
    }

    /// Whether the store has been tried (always true in memory).
    pub fn is_started(&self) -> bool {
        matches!(self.store, Store::Memory(_)) || self.tried.load(Ordering::Relaxed)
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    fn set_degraded(&self, on: bool) {
        let was = self.degraded.swap(on, Ordering::Relaxed);
        self.metrics.degraded.set(i64::from(on));
        if on && !was {
            tracing::warn!(
                store = self.describe(),
                "counter store unreachable: degraded mode (fail modes apply)"
            );
            self.recover.notify_one();
        } else if was && !on {
            tracing::info!(store = self.describe(), "counter store reachable again");
        }
    }

    /// Checks and reserves a plan. Errs only when the store is away and the first candidate
    /// has a check that fails closed.
    pub async fn admit(&self, plan: &Plan) -> Result<(Verdict, CountedIn), Unavailable> {
        let redis = match &self.store {
            Store::Memory(m) => return Ok((m.admit(plan), CountedIn::Shared)),
            Store::Redis(r) => r,
        };
        if !self.is_degraded() {
            match redis.admit(plan).await {
                Ok(v) => {
                    self.timeouts.store(0, Ordering::Relaxed);
                    return Ok((v, CountedIn::Shared));
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(error = %e, "counter admission failed");
                    // The call may still run once Redis answers again: release whatever it
                    // would reserve (a release only acts on a reservation that exists). Queued
                    // behind it on the same connection, or journaled while degraded.
                    for c in plan.candidates.iter().flatten() {
                        if matches!(c.kind, CheckKind::Budget { .. }) {
                            let _ = self.settle_tx.send(release_item(c, &plan.rid, None));
                        }
                    }
                    // A lost connection is an outage at once; timeouts count as one from the
                    // third in a row (until then only the request that timed out is affected).
                    let slow = matches!(e, StoreError::Timeout(_))
                        && self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 < TIMEOUTS_TO_DEGRADE;
                    if !slow {
                        self.set_degraded(true);
                    }
                }
            }
        }
        self.admit_locally(plan)
    }

    /// Degraded mode: candidates whose checks all fail open are counted against this replica's
    /// allowance (a percentage of each limit); a first candidate with a closed check refuses.
    fn admit_locally(&self, plan: &Plan) -> Result<(Verdict, CountedIn), Unavailable> {
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

    /// Queues settles; never waits.
    pub fn settle(&self, items: Vec<SettleItem>, counted: CountedIn) {
        match (&self.store, counted) {
            (Store::Memory(m), _) => {
                for (item, r) in items.iter().zip(m.settle(&items)) {
                    self.settled(item, &r);
                }
            }
            (Store::Redis(_), CountedIn::Local) => {
                let local: Vec<SettleItem> = items.iter().map(scale_local_item).collect();
                self.local.settle(&local);
                let mut j = self.journal.lock_();
                for it in items {
                    // Replayed as a plain charge: there is no reservation in Redis to release.
                    let it = match it {
                        SettleItem::Budget {
                            tag,
                            key,
                            holds_key,
                            actual,
                            limit,
                            thresholds,
                            expire_at_ms,
                            alert,
                            ..
                        } => SettleItem::Budget {
                            tag,
                            key,
                            holds_key,
                            rid: String::new(),
                            held: 0,
                            actual,
                            limit,
                            thresholds,
                            expire_at_ms,
                            alert,
                            once: None,
                        },
                        other => other,
                    };
                    push_bounded(&mut j, it.once(), &self.metrics);
                }
            }
            (Store::Redis(_), CountedIn::Shared) => {
                for it in items {
                    if self.settle_tx.send(it).is_err() {
                        self.metrics.journal_dropped.inc();
                    }
                }
            }
        }
    }

    fn settled(&self, item: &SettleItem, r: &Option<BudgetSettled>) {
        if let Some(r) = r {
            let cb = self.on_settled.lock_().clone();
            if let Some(cb) = cb {
                cb(item, r);
            }
        }
    }

    /// Background work for the Redis store: sends settles in batches, watches for recovery
    /// and replays the journal. Returns after [`Counters::stop`], once what was queued has been
    /// sent (or journaled, when Redis is away).
    pub async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<SettleItem>) {
        let Store::Redis(redis) = &self.store else {
            return;
        };
        let me = Arc::clone(&self);
        let recovery = tokio::spawn(async move { me.recovery_loop().await });
        let mut batch = Vec::with_capacity(SETTLE_BATCH);
        loop {
            let stopping = tokio::select! {
                n = rx.recv_many(&mut batch, SETTLE_BATCH) => n == 0,
                () = self.stop.notified() => true,
            };
            if stopping {
                while let Ok(it) = rx.try_recv() {
                    batch.push(it);
                }
            }
            if !batch.is_empty() {
                self.send_batch(redis, &mut batch).await;
            }
            // Counts kept locally after a single slow answer (no outage declared) go out with
            // the next batch rather than waiting for an outage to end.
            if !self.is_degraded() && self.journaled() > 0 && self.replay(redis).await.is_err() {
                self.set_degraded(true);
            }
            if stopping {
                break;
            }
        }
        recovery.abort();
        if !self.is_degraded() {
            let _ = self.replay(redis).await;
        }
        let left = self.journaled();
        if left > 0 {
            tracing::warn!(
                items = left,
                "counts that could not reach Redis before shutdown are lost"
            );
        }
    }

    /// Asks [`Counters::run`] to flush and return.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    async fn send_batch(&self, redis: &redis::RedisStore, batch: &mut Vec<SettleItem>) {
        if self.is_degraded() {
            let mut j = self.journal.lock_();
            for it in batch.drain(..) {
                push_bounded(&mut j, it, &self.metrics);
            }
            return;
        }
        match redis.settle(batch).await {
            Ok(results) => {
                for (item, r) in batch.iter().zip(&results) {
                    self.settled(item, r);
                }
                batch.clear();
            }
            Err(e) => {
                self.metrics.errors.inc();
                tracing::warn!(error = %e, items = batch.len(), "settle failed; kept for replay");
                let mut j = self.journal.lock_();
                for it in batch.drain(..) {
                    push_bounded(&mut j, it, &self.metrics);
                }
                drop(j);
                self.set_degraded(true);
            }
        }
    }

    async fn recovery_loop(&self) {
        let Store::Redis(redis) = &self.store else {
            return;
        };
        loop {
            if !self.is_degraded() {
                self.recover.notified().await;
                continue;
            }
            let pinged = redis.ping().await;
            self.tried.store(true, Ordering::Relaxed);
            match pinged {
                Ok(()) => match self.replay(redis).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(
                                items = n,
                                "replayed counts kept while the store was away"
                            );
                        }
                        self.local.clear();
                        self.timeouts.store(0, Ordering::Relaxed);
                        self.set_degraded(false);
                    }
                    Err(e) => tracing::warn!(error = %e, "replay failed; retrying"),
                },
                Err(e) => tracing::debug!(error = %e, "counter store still unreachable"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends the journal to Redis; on failure puts back what was not sent.
    async fn replay(&self, redis: &redis::RedisStore) -> Result<usize, StoreError> {
        let items = std::mem::take(&mut *self.journal.lock_());
        let mut sent = 0;
        for chunk in items.chunks(SETTLE_BATCH) {
            match redis.settle(chunk).await {
                Ok(results) => {
                    for (item, r) in chunk.iter().zip(&results) {
                        self.settled(item, r);
                    }
                    sent += chunk.len();
                    self.metrics.journal.set((items.len() - sent) as i64);
                }
                Err(e) => {
                    let mut j = self.journal.lock_();
                    let rest: Vec<SettleItem> = items[sent..].to_vec();
                    j.splice(0..0, rest);
                    return Err(e);
                }
            }
        }
        Ok(sent)
    }

    /// Marks `key` as used for `ttl_secs`; false when it already was (replay checks). In Redis
    /// when counters live there, so every replica sees it; when Redis cannot answer, in this
    /// process.
    pub async fn claim_once(&self, key: &str, ttl_secs: u64) -> bool {
        let full = format!("{KEY_PREFIX}once:{key}");
        if let Store::Redis(r) = &self.store
            && !self.is_degraded()
            && let Ok(fresh) = r.set_nx(&full, ttl_secs).await
        {
            return fresh;
        }
        match &self.store {
            Store::Memory(m) => m.set_nx(&full, ttl_secs),
            Store::Redis(_) => self.local.set_nx(&full, ttl_secs),
        }
    }

    /// Items waiting to be replayed into Redis (for `/readyz`).
    pub fn journaled(&self) -> usize {
        self.journal.lock_().len()
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

/// Counters stay usable after a panic elsewhere: the data is plain numbers.
trait LockExt<T> {
    fn lock_(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn lock_(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn push_bounded(j: &mut Vec<SettleItem>, it: SettleItem, metrics: &CounterMetrics) {
    if j.len() >= JOURNAL_MAX {
        metrics.journal_dropped.inc();
        return;
    }
    j.push(it);
    metrics.journal.set(j.len() as i64);
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
fn scale_local_item(it: &SettleItem) -> SettleItem {
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
