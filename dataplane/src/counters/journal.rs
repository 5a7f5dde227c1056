//! Getting settles to the shared store: the batcher (up to [`SETTLE_BATCH`] items per call),
//! the journal of what could not be sent or was counted locally while the store was away, the
//! recovery loop that pings the store back, and the replay of the journal into it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::shared::Shared;
use super::{Counters, LockExt, SettleItem, Store, StoreError};
use crate::telemetry::metrics::CounterMetrics;

/// Most items the journal keeps; beyond it they are dropped and counted.
pub(super) const JOURNAL_MAX: usize = 100_000;
/// Most items in one settle call.
pub(super) const SETTLE_BATCH: usize = 512;
/// How often a degraded replica pings the store.
const RECOVERY_PING: Duration = Duration::from_millis(250);

impl Counters {
    /// Background work for the Redis store: sends settles in batches, watches for recovery
    /// and replays the journal. Returns after [`Counters::stop`], once what was queued has been
    /// sent (or journaled, when Redis is away).
    pub async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<SettleItem>) {
        let Store::Shared(redis) = &self.store else {
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

    async fn send_batch(&self, redis: &Shared, batch: &mut Vec<SettleItem>) {
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
        let Store::Shared(redis) = &self.store else {
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
            tokio::time::sleep(RECOVERY_PING).await;
        }
    }

    /// Sends the journal to Redis; on failure puts back what was not sent.
    async fn replay(&self, redis: &Shared) -> Result<usize, StoreError> {
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
}

pub(super) fn push_bounded(j: &mut Vec<SettleItem>, it: SettleItem, metrics: &CounterMetrics) {
    if j.len() >= JOURNAL_MAX {
        metrics.journal_dropped.inc();
        return;
    }
    j.push(it);
    metrics.journal.set(j.len() as i64);
}
