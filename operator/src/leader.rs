//! Leader election over a `coordination.k8s.io/v1` Lease: every operator replica compiles and
//! serves snapshots, but only the holder of the Lease writes status. A replica takes the Lease
//! when it is free or expired, renews it well before it expires, and updates it with the
//! resourceVersion it read, so two replicas can never both win.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

pub struct Leader {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    is_leader: AtomicBool,
}

impl Leader {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Leader {
        Leader {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            is_leader: AtomicBool::new(false),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Relaxed)
    }

    /// Takes or renews the Lease; returns whether this replica holds it now.
    pub async fn try_acquire(&self, now: jiff::Timestamp) -> Result<bool, kube::Error> {
        // A 404 means no Lease yet, whatever reason string the server puts on it.
        let current = match self.api.get(&self.name).await {
            Ok(lease) => Some(lease),
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => return Err(e),
        };
        let held = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, now, 0)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => true,
                    Err(kube::Error::Api(e)) if e.code == 409 => false,
                    Err(e) => return Err(e),
                }
            }
            Some(lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let expires = spec.renew_time.as_ref().map(|t| {
                    t.0 + jiff::SignedDuration::from_secs(i64::from(
                        spec.lease_duration_seconds.unwrap_or(0),
                    ))
                });
                let free = expires.is_none_or(|e| e <= now);
                if !mine && !free {
                    false
                } else {
                    let acquired = if mine {
                        spec.acquire_time.map(|t| t.0).unwrap_or(now)
                    } else {
                        now
                    };
                    let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
                    let updated = Lease {
                        metadata: lease.metadata.clone(),
                        spec: Some(self.spec(acquired, now, transitions)),
                    };
                    // `replace` carries the resourceVersion read above: a concurrent writer makes
                    // it fail with 409 instead of both believing they lead.
                    match self
                        .api
                        .replace(&self.name, &PostParams::default(), &updated)
                        .await
                    {
                        Ok(_) => true,
                        Err(kube::Error::Api(e)) if e.code == 409 => false,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let was = self.is_leader.swap(held, Ordering::Relaxed);
        if held != was {
            tracing::info!(identity = %self.identity, leader = held, "leadership changed");
        }
        Ok(held)
    }

    fn spec(
        &self,
        acquired: jiff::Timestamp,
        renewed: jiff::Timestamp,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Keeps trying to lead, renewing at a third of the lease duration. On API errors this
    /// replica stops writing status until it renews again.
    pub async fn run(&self) {
        let period = self.duration / 3;
        loop {
            if let Err(e) = self.try_acquire(jiff::Timestamp::now()).await {
                tracing::warn!(error = %e, "lease renewal failed");
                self.is_leader.store(false, Ordering::Relaxed);
            }
            tokio::time::sleep(period).await;
        }
    }
}
