//! Route stage: pick the replica of an endpoint that should serve this attempt.
//!
//! Power of two choices over a peak-EWMA of observed latency, weighted by requests in flight
//! (the linkerd / Finagle balancer): sample two healthy replicas at random and take the one
//! with the lower `ewma × (in_flight + 1)`. Peak-EWMA jumps up to a slow observation at once and
//! decays back slowly, so a replica that turns slow stops getting traffic immediately.
//!
//! Health is passive: consecutive failures (connect errors, 5xx, timeouts) eject a replica for
//! a period that doubles on each failed probe; the prober (`probe.rs`) readmits it when
//! a TCP connect succeeds again. When every replica is ejected the least recently ejected one is
//! tried anyway: a request that might succeed beats a certain 503.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmgate_snapshot::{Failover, Replica};

/// Decay time constant of the latency average.
const DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for a replica never measured: low, so new replicas get tried.
const INITIAL_COST_NS: f64 = 1_000_000.0;

/// Live state of one replica. Survives config reloads as long as the replica stays.
#[derive(Debug)]
pub struct ReplicaState {
    pub name: Arc<str>,
    /// `llmgate_upstream_attempts_total{outcome="ok"}` of this replica, the common case.
    pub ok_attempts: prometheus_client::metrics::counter::Counter,
    /// Base URL without trailing slash.
    pub url: String,
    /// `host:port`, for the TCP probe.
    pub authority: String,
    in_flight: AtomicU32,
    ewma: Mutex<Ewma>,
    health: Mutex<Health>,
}

#[derive(Debug)]
struct Ewma {
    cost_ns: f64,
    stamp: Instant,
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    ejected_until: Option<Instant>,
    ejected_at: Option<Instant>,
    /// Ejections in a row without a success; doubles the period.
    streak: u32,
}

/// What one attempt ended as, for the replica's health and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head arrived after this long (any status below 500).
    Success(Duration),
    /// Connect error, 5xx or timeout.
    Failure,
}

impl ReplicaState {
    pub fn new(
        replica: &Replica,
        ok_attempts: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let authority = replica
            .url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| {
                let a = u.authority()?;
                let port = a.port_u16().unwrap_or(if u.scheme_str() == Some("https") {
                    443
                } else {
                    80
                });
                Some(format!("{}:{port}", a.host()))
            })
            .unwrap_or_default();
        ReplicaState {
            name: Arc::from(replica.name.as_str()),
            ok_attempts,
            url: replica.url.clone(),
            authority,
            in_flight: AtomicU32::new(0),
            ewma: Mutex::new(Ewma {
                cost_ns: INITIAL_COST_NS,
                stamp: Instant::now(),
            }),
            health: Mutex::new(Health::default()),
        }
    }

    fn load(&self) -> f64 {
        let cost = self
            .ewma
            .lock()
            .map(|e| e.cost_ns)
            .unwrap_or(INITIAL_COST_NS);
        cost * f64::from(self.in_flight.load(Ordering::Relaxed) + 1)
    }

    /// Ejected replicas get no traffic until the prober readmits them.
    pub fn is_ejected(&self) -> bool {
        self.health
            .lock()
            .map(|h| h.ejected_until.is_some())
            .unwrap_or(false)
    }

    fn ejected_at(&self) -> Option<Instant> {
        self.health.lock().ok().and_then(|h| h.ejected_at)
    }

    /// Marks a request as in flight on this replica until the guard drops (after the last
    /// byte of its response, streams included).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Feeds the result of an attempt into latency and health. Returns true when this failure
    /// ejected the replica.
    pub fn observe(&self, outcome: Outcome, failover: &Failover, now: Instant) -> bool {
        match outcome {
            Outcome::Success(rtt) => {
                if let Ok(mut e) = self.ewma.lock() {
                    let rtt_ns = rtt.as_nanos() as f64;
                    let current = e.cost_ns;
                    // Peak: a slower observation replaces the average at once.
                    e.cost_ns = if rtt_ns > current {
                        rtt_ns
                    } else {
                        let w = (-(now.saturating_duration_since(e.stamp).as_secs_f64())
                            / DECAY.as_secs_f64())
                        .exp();
                        current * w + rtt_ns * (1.0 - w)
                    };
                    e.stamp = now;
                }
                if let Ok(mut h) = self.health.lock() {
                    *h = Health::default();
                }
                false
            }
            Outcome::Failure => {
                let Ok(mut h) = self.health.lock() else {
                    return false;
                };
                h.consecutive_failures += 1;
                if h.ejected_until.is_none()
                    && h.consecutive_failures >= failover.eject_after_failures
                {
                    eject(&mut h, failover, now);
                    return true;
                }
                false
            }
        }
    }

    /// Result of an active probe of an ejected replica whose period is over.
    pub fn probed(&self, reachable: bool, failover: &Failover, now: Instant) {
        if let Ok(mut h) = self.health.lock() {
            if reachable {
                // Back in rotation, but one more failure ejects it again with a longer period.
                h.ejected_until = None;
                h.consecutive_failures = failover.eject_after_failures.saturating_sub(1);
            } else {
                eject(&mut h, failover, now);
            }
        }
    }

    /// Whether the prober should try this replica now.
    pub fn probe_due(&self, now: Instant) -> bool {
        self.health
            .lock()
            .map(|h| h.ejected_until.is_some_and(|t| t <= now))
            .unwrap_or(false)
    }
}

fn eject(h: &mut Health, failover: &Failover, now: Instant) {
    let factor = 1u64 << h.streak.min(5);
    h.ejected_until = Some(now + Duration::from_millis(failover.eject_base_ms * factor));
    h.ejected_at = Some(now);
    h.streak += 1;
}

/// Counts a request in flight on a replica until dropped.
pub struct InFlight(Arc<ReplicaState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks a replica index not in `tried` (a bitmask; endpoints have at most 64 replicas).
pub fn pick(replicas: &[Arc<ReplicaState>], tried: u64) -> Option<usize> {
    let mut healthy = [0usize; 64];
    let mut n = 0;
    for (i, r) in replicas.iter().enumerate().take(64) {
        if tried & (1 << i) == 0 && !r.is_ejected() {
            healthy[n] = i;
            n += 1;
        }
    }
    match n {
        0 => replicas
            .iter()
            .enumerate()
            .take(64)
            .filter(|(i, _)| tried & (1 << i) == 0)
            .min_by_key(|(_, r)| r.ejected_at())
            .map(|(i, _)| i),
        1 => Some(healthy[0]),
        _ => {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (healthy[a], healthy[b]);
            if replicas[a].load() <= replicas[b].load() {
                Some(a)
            } else {
                Some(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(n: usize) -> Vec<Arc<ReplicaState>> {
        (0..n)
            .map(|i| {
                Arc::new(ReplicaState::new(
                    &Replica {
                        name: format!("r{i}"),
                        url: format!("http://127.0.0.1:{}/v1", 9000 + i),
                    },
                    Default::default(),
                ))
            })
            .collect()
    }

    const FO: Failover = Failover {
        max_attempts: 3,
        eject_after_failures: 2,
        eject_base_ms: 1000,
    };

    #[test]
    fn prefers_the_faster_replica() {
        let rs = replicas(2);
        let now = Instant::now();
        rs[0].observe(Outcome::Success(Duration::from_millis(50)), &FO, now);
        rs[1].observe(Outcome::Success(Duration::from_millis(1)), &FO, now);
        let picks: Vec<_> = (0..100).filter_map(|_| pick(&rs, 0)).collect();
        assert!(picks.iter().all(|&i| i == 1), "{picks:?}");
    }

    #[test]
    fn in_flight_load_spreads_requests() {
        let rs = replicas(2);
        let _busy: Vec<_> = (0..5).map(|_| rs[0].start()).collect();
        assert_eq!(pick(&rs, 0), Some(1));
        drop(_busy);
        assert_eq!(rs[0].in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn skips_tried_and_ejected_replicas() {
        let rs = replicas(3);
        let now = Instant::now();
        assert!(!rs[0].observe(Outcome::Failure, &FO, now));
        assert!(
            rs[0].observe(Outcome::Failure, &FO, now),
            "second failure ejects"
        );
        for _ in 0..50 {
            let p = pick(&rs, 0b010);
            assert_eq!(p, Some(2));
        }
        // everything tried or ejected: none left for this request
        assert_eq!(
            pick(&rs, 0b110),
            Some(0),
            "panic mode tries the ejected one"
        );
        assert_eq!(pick(&rs, 0b111), None);
    }

    #[test]
    fn a_slow_spike_counts_at_once() {
        let rs = replicas(1);
        let now = Instant::now();
        rs[0].observe(Outcome::Success(Duration::from_millis(2)), &FO, now);
        rs[0].observe(Outcome::Success(Duration::from_millis(500)), &FO, now);
        let cost = rs[0].ewma.lock().map(|e| e.cost_ns).unwrap_or(0.0);
        assert!(cost >= 500e6, "{cost}");
        // and decays back towards fast observations over time
        let later = now + Duration::from_secs(30);
        rs[0].observe(Outcome::Success(Duration::from_millis(2)), &FO, later);
        let cost = rs[0].ewma.lock().map(|e| e.cost_ns).unwrap_or(0.0);
        assert!(cost < 50e6, "{cost}");
    }

    #[test]
    fn probe_readmits_and_failed_probe_doubles_the_period() {
        let rs = replicas(1);
        let t0 = Instant::now();
        rs[0].observe(Outcome::Failure, &FO, t0);
        rs[0].observe(Outcome::Failure, &FO, t0);
        assert!(!rs[0].probe_due(t0));
        let t1 = t0 + Duration::from_millis(1001);
        assert!(rs[0].probe_due(t1));
        rs[0].probed(false, &FO, t1);
        assert!(
            !rs[0].probe_due(t1 + Duration::from_millis(1500)),
            "second period is 2 s"
        );
        let t2 = t1 + Duration::from_millis(2001);
        assert!(rs[0].probe_due(t2));
        rs[0].probed(true, &FO, t2);
        assert!(!rs[0].is_ejected());
        assert!(
            rs[0].observe(Outcome::Failure, &FO, t2),
            "one failure re-ejects after a probe"
        );
    }
}
