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

mod journal;
mod local;
pub mod memory;
pub mod plan;
pub mod redis;
mod shared;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use self::journal::push_bounded;
use self::local::scale_local_item;
pub use self::plan::*;
use self::shared::Shared;
use crate::telemetry::metrics::CounterMetrics;

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

/// Why an admission could not be decided.
#[derive(Debug, thiserror::Error)]
#[error("the counter store is unavailable and a limit or budget on this model fails closed")]
pub struct Unavailable;

/// Settled budget results, delivered to the alert sender.
pub type OnSettled = Arc<dyn Fn(&SettleItem, &BudgetSettled) + Send + Sync>;

enum Store {
    /// The whole truth, in this process (one replica).
    Memory(memory::MemoryStore),
    /// Shared by every replica, with this replica's allowance and journal beside it.
    Shared(Shared),
}

/// Timeouts in a row that make an outage.
const TIMEOUTS_TO_DEGRADE: u32 = 3;

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
        Self::shared(Shared::Redis(store), metrics)
    }

    fn shared(
        store: Shared,
        metrics: CounterMetrics,
    ) -> (Arc<Counters>, mpsc::UnboundedReceiver<SettleItem>) {
        let (c, rx) = Self::with(Store::Shared(store), metrics);
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
            Store::Shared(r) => r.describe(),
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
            Store::Shared(r) => r,
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

    /// Queues settles; never waits.
    pub fn settle(&self, items: Vec<SettleItem>, counted: CountedIn) {
        match (&self.store, counted) {
            (Store::Memory(m), _) => {
                for (item, r) in items.iter().zip(m.settle(&items)) {
                    self.settled(item, &r);
                }
            }
            (Store::Shared(_), CountedIn::Local) => {
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
            (Store::Shared(_), CountedIn::Shared) => {
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

    /// Marks `key` as used for `ttl_secs`; false when it already was (replay checks). In Redis
    /// when counters live there, so every replica sees it; when Redis cannot answer, in this
    /// process.
    pub async fn claim_once(&self, key: &str, ttl_secs: u64) -> bool {
        let full = format!("{KEY_PREFIX}once:{key}");
        if let Store::Shared(r) = &self.store
            && !self.is_degraded()
            && let Ok(fresh) = r.set_nx(&full, ttl_secs).await
        {
            return fresh;
        }
        match &self.store {
            Store::Memory(m) => m.set_nx(&full, ttl_secs),
            Store::Shared(_) => self.local.set_nx(&full, ttl_secs),
        }
    }

    /// Marks a budget's `threshold` as alerted, once per period across replicas (the field a
    /// settle crossing it sets): its spend when this call marked it. Best effort: `None` when
    /// it was marked already or the store cannot say.
    pub async fn mark_alert(&self, key: &str, threshold: u8) -> Option<i64> {
        match &self.store {
            Store::Memory(m) => m.mark_alert(key, threshold),
            Store::Shared(r) if !self.is_degraded() => {
                r.mark_alert(key, threshold).await.ok().flatten()
            }
            Store::Shared(_) => self.local.mark_alert(key, threshold),
        }
    }

    /// Items waiting to be replayed into Redis (for `/readyz`).
    pub fn journaled(&self) -> usize {
        self.journal.lock_().len()
    }
}

/// Counters stay usable after a panic elsewhere: the data is plain numbers.
pub(crate) trait LockExt<T> {
    fn lock_(&self) -> MutexGuard<'_, T>;
}

impl<T> LockExt<T> for Mutex<T> {
    fn lock_(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
