//! Degraded mode, the local allowance, the journal and its replay, on a fake of the shared store
//! (the in-process store behind a switch) under paused tokio time: the paths a Redis outage
//! takes, without a Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use llmgate_snapshot::FailMode;

use super::memory::MemoryStore;
use super::memory::tests::{budget, rate};
use super::shared::Shared;
use super::*;
use crate::telemetry::metrics::CounterMetrics;

/// How the fake answers.
#[derive(Default)]
pub struct FakeState {
    store: MemoryStore,
    /// Refuses every call as a lost connection would.
    down: AtomicBool,
    /// Answers every call with a timeout, without running it.
    slow: AtomicBool,
    /// Runs the call, then answers with a timeout (Redis ran it; the answer came too late).
    late: AtomicBool,
    calls: AtomicUsize,
}

#[derive(Clone, Default)]
pub struct FakeShared(Arc<FakeState>);

impl FakeShared {
    pub async fn call<T>(&self, f: impl FnOnce(&MemoryStore) -> T) -> Result<T, StoreError> {
        let s = &self.0;
        s.calls.fetch_add(1, Ordering::Relaxed);
        // A store call is never instant: let other tasks run, as a network round trip would.
        tokio::task::yield_now().await;
        if s.down.load(Ordering::Relaxed) {
            return Err(StoreError::NotConnected);
        }
        if s.slow.load(Ordering::Relaxed) {
            return Err(StoreError::Timeout(Duration::from_millis(100)));
        }
        let out = f(&s.store);
        if s.late.load(Ordering::Relaxed) {
            return Err(StoreError::Timeout(Duration::from_millis(100)));
        }
        Ok(out)
    }

    fn set(&self, down: bool, slow: bool, late: bool) {
        self.0.down.store(down, Ordering::Relaxed);
        self.0.slow.store(slow, Ordering::Relaxed);
        self.0.late.store(late, Ordering::Relaxed);
    }
}

/// Counters over a fake shared store, with their background task running, connected.
async fn connected() -> (Arc<Counters>, FakeShared, CounterMetrics) {
    let fake = FakeShared::default();
    let metrics = CounterMetrics::default();
    let (c, rx) = Counters::shared(Shared::Fake(fake.clone()), metrics.clone());
    assert!(c.is_degraded(), "degraded until the store first answers");
    tokio::spawn(Arc::clone(&c).run(rx));
    settle_down().await;
    assert!(!c.is_degraded() && c.is_started());
    (c, fake, metrics)
}

/// Lets the background task take its turns: the recovery loop pings every 250 ms.
async fn settle_down() {
    tokio::time::sleep(Duration::from_millis(600)).await;
}

fn plan(rid: &str, checks: Vec<Check>) -> Plan {
    Plan {
        rid: rid.into(),
        candidates: vec![checks],
    }
}

fn open_rate(limit: u64, percent: u8) -> Check {
    let mut c = rate("llmgate:v1:{t}:rl:r", limit, 1);
    c.fail_mode = FailMode::Open;
    c.local_percent = percent;
    c
}

async fn admitted(c: &Counters, p: &Plan) -> Option<CountedIn> {
    match c.admit(p).await {
        Ok((Verdict::Admitted { .. }, counted)) => Some(counted),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_counts_locally_within_the_allowance_and_replays_it_once() {
    let (c, fake, metrics) = connected().await;
    let check = open_rate(10, 50);
    assert_eq!(
        admitted(&c, &plan("a", vec![check.clone()])).await,
        Some(CountedIn::Shared)
    );

    fake.set(true, false, false);
    let mut local = 0;
    for i in 0..10 {
        match c.admit(&plan(&format!("o{i}"), vec![check.clone()])).await {
            Ok((Verdict::Admitted { .. }, CountedIn::Local)) => local += 1,
            Ok((Verdict::RateLimited { .. }, CountedIn::Local)) => {}
            other => panic!("while the store is away: {other:?}"),
        }
    }
    assert!(c.is_degraded(), "a lost connection is an outage at once");
    assert_eq!(local, 5, "50 % of a limit of 10 may be admitted alone");
    assert_eq!(c.journaled(), 5);
    assert_eq!(metrics.local_admissions.get(), 10);

    fake.set(false, false, false);
    settle_down().await;
    assert!(!c.is_degraded());
    assert_eq!(c.journaled(), 0);
    // The shared counter now holds 1 + 5: four more fit under the limit of 10, not five.
    let mut shared = 0;
    for i in 0..5 {
        if admitted(&c, &plan(&format!("b{i}"), vec![check.clone()])).await
            == Some(CountedIn::Shared)
        {
            shared += 1;
        }
    }
    assert_eq!(shared, 4);
}

#[tokio::test(start_paused = true)]
async fn a_fail_closed_check_refuses_while_the_store_is_away() {
    let (c, fake, _) = connected().await;
    let mut closed = open_rate(10, 50);
    closed.fail_mode = FailMode::Closed;
    fake.set(true, false, false);
    assert!(c.admit(&plan("a", vec![closed.clone()])).await.is_err());
    assert!(c.is_degraded());
    // Degraded now: refused without asking the store.
    let calls = fake.0.calls.load(Ordering::Relaxed);
    assert!(c.admit(&plan("b", vec![closed.clone()])).await.is_err());
    assert_eq!(fake.0.calls.load(Ordering::Relaxed), calls);
    // The model asked for decides: an open fallback does not stand in for a closed first choice,
    let fallback = Plan {
        rid: "c".into(),
        candidates: vec![vec![closed.clone()], vec![open_rate(10, 50)]],
    };
    assert!(c.admit(&fallback).await.is_err());
    // and an open first choice is served locally though its fallback fails closed.
    let first_open = Plan {
        rid: "d".into(),
        candidates: vec![vec![open_rate(10, 50)], vec![closed]],
    };
    assert!(matches!(
        c.admit(&first_open).await,
        Ok((Verdict::Admitted { candidate: 0, .. }, CountedIn::Local))
    ));
}

#[tokio::test(start_paused = true)]
async fn one_slow_answer_is_not_an_outage_three_in_a_row_are() {
    let (c, fake, metrics) = connected().await;
    let check = open_rate(100, 50);
    fake.set(false, true, false);
    for i in 0..2 {
        assert_eq!(
            admitted(&c, &plan(&format!("s{i}"), vec![check.clone()])).await,
            Some(CountedIn::Local)
        );
        assert!(!c.is_degraded(), "timeout {} alone is not an outage", i + 1);
    }
    // An answer in between resets the count.
    fake.set(false, false, false);
    assert_eq!(
        admitted(&c, &plan("ok", vec![check.clone()])).await,
        Some(CountedIn::Shared)
    );
    fake.set(false, true, false);
    for i in 0..3 {
        let _ = c.admit(&plan(&format!("t{i}"), vec![check.clone()])).await;
    }
    assert!(c.is_degraded(), "the third timeout in a row is");
    assert_eq!(metrics.errors.get(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_reservation_made_by_a_call_that_timed_out_is_released() {
    let (c, fake, _) = connected().await;
    let b = budget("llmgate:v1:{t}:b:x", 1_000_000, 1_000, 60_000_000);
    fake.set(false, false, true);
    // The store reserved, the answer came late: the request is refused (fails closed)...
    assert!(c.admit(&plan("late", vec![b.clone()])).await.is_err());
    assert_eq!(fake.0.store.budget_state(&b.key), Some((0, 1_000)));
    // ...and the release queued behind the call reaches the store once it answers again.
    fake.set(false, false, false);
    settle_down().await;
    assert_eq!(fake.0.store.budget_state(&b.key), Some((0, 0)));
}

#[tokio::test(start_paused = true)]
async fn a_budget_settled_while_degraded_is_replayed_as_a_charge() {
    let (c, fake, _) = connected().await;
    let mut b = budget("llmgate:v1:{t}:b:y", 1_000_000, 1_000, 60_000_000);
    b.fail_mode = FailMode::Open;
    b.local_percent = 50;
    fake.set(true, false, false);
    let p = plan("d", vec![b.clone()]);
    assert_eq!(admitted(&c, &p).await, Some(CountedIn::Local));
    c.settle(vec![b.settle(&p.rid, 0, 300, 1_000)], CountedIn::Local);
    assert_eq!(c.journaled(), 1);

    fake.set(false, false, false);
    settle_down().await;
    assert_eq!(c.journaled(), 0);
    // Charged once, with nothing left reserved in the shared store.
    assert_eq!(fake.0.store.budget_state(&b.key), Some((300, 0)));
    settle_down().await;
    assert_eq!(fake.0.store.budget_state(&b.key), Some((300, 0)));
}

#[tokio::test(start_paused = true)]
async fn settles_that_fail_are_journaled_and_sent_when_the_store_returns() {
    let (c, fake, _) = connected().await;
    let b = budget("llmgate:v1:{t}:b:z", 1_000_000, 1_000, 60_000_000);
    let p = plan("s", vec![b.clone()]);
    assert_eq!(admitted(&c, &p).await, Some(CountedIn::Shared));
    fake.set(true, false, false);
    c.settle(vec![b.settle(&p.rid, 0, 400, 1_000)], CountedIn::Shared);
    settle_down().await;
    assert!(c.is_degraded());
    assert_eq!(c.journaled(), 1);
    assert_eq!(fake.0.store.budget_state(&b.key), Some((0, 1_000)));

    fake.set(false, false, false);
    settle_down().await;
    assert_eq!(c.journaled(), 0);
    assert_eq!(fake.0.store.budget_state(&b.key), Some((400, 0)));
}
