//! The ejected-replica prober: every 500 ms, each replica whose ejection period is over is tried
//! with a TCP connect and readmitted ([`crate::pipeline::route::ReplicaState::probed`]) or
//! ejected for longer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::runtime::Backend;

/// Probes ejected replicas whose ejection period is over with a TCP connect.
pub async fn run(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let rt = gw.runtime();
        let now = Instant::now();
        for ep in &rt.endpoints {
            let Backend::Http { replicas, .. } = &ep.backend else {
                continue;
            };
            for r in replicas.iter().filter(|r| r.probe_due(now)) {
                let ok = matches!(
                    tokio::time::timeout(
                        Duration::from_millis(ep.spec.timeouts.connect_ms),
                        tokio::net::TcpStream::connect(&r.authority),
                    )
                    .await,
                    Ok(Ok(_))
                );
                r.probed(ok, &ep.spec.failover, Instant::now());
                tracing::info!(model = %ep.spec.model, replica = %r.name, reachable = ok, "probed ejected replica");
            }
        }
    }
}
