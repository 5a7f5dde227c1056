//! llmgate data plane: an OpenAI-compatible proxy in front of every model.
//!
//! The request path, one file per stage in [`pipeline`]:
//!
//! ```text
//! auth → policy → admission (rate limits + budgets) → route → upstream → stream | respond → account
//! ```
//!
//! Each folder is one subsystem, below or beside the pipeline that drives them:
//!
//! - [`sources`]: where snapshots come from (a directory, or the operator);
//! - [`gateway`]: the process-wide state and the one swap of the [`runtime`], what a snapshot
//!   becomes for the request path;
//! - [`identity`]: who is calling; [`counters`]: shared rate and budget counters;
//! - [`llm`]: wire formats and provider adapters; [`backend_auth`]: upstream credentials;
//! - [`audit`]: the audit record and its writer; [`telemetry`]: logs and metrics;
//! - [`http`]: sockets, the API router, the upstream client; [`alerts`] and [`probe`]:
//!   background tasks.
//!
//! [`run`] builds the parts, starts the background tasks, serves, and drains on shutdown.

pub mod alerts;
pub mod audit;
pub mod backend_auth;
pub mod counters;
pub mod error;
pub mod flags;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod llm;
pub mod pipeline;
pub mod probe;
pub mod runtime;
pub mod sources;
pub mod telemetry;

#[cfg(test)]
mod contracts;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use tokio::net::TcpListener;

use tokio::sync::mpsc;

use crate::counters::{Counters, SettleItem, redis};
use crate::flags::Settings;
use crate::gateway::Gateway;
use crate::sources::dir::ConfigSource;
use crate::telemetry::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the configuration is not valid:\n{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}; choose another address with {flag} (or set {env})")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
        /// The flag that sets this address, and its environment variable.
        flag: &'static str,
        env: &'static str,
    },
    #[error("operator mode: {0}")]
    ControlPlane(sources::operator::SubscribeError),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: String,
        source: std::io::Error,
    },
}

/// Runs the data plane until SIGTERM or SIGINT, then drains.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let (audit, audit_writer) =
        audit::AuditSink::start(&settings.audit_log).map_err(|source| RunError::Audit {
            path: settings.audit_log.clone(),
            source,
        })?;
    let metrics = Metrics::new();
    let (counters, settles) = counters(&settings, &metrics);
    let mut background = Vec::new();
    let (gw, described) = match &settings.control_plane {
        Some(url) => {
            let node = settings.node();
            let token_file = settings
                .control_plane_token_file
                .clone()
                .unwrap_or_default();
            let sub = sources::operator::Subscriber::new(
                url,
                &token_file,
                settings.control_plane_ca.as_deref(),
                settings.state_dir.clone(),
                node,
            )
            .map_err(RunError::ControlPlane)?;
            let described = format!("control-plane:{url}");
            let gw = Gateway::new(
                settings.clone(),
                metrics,
                audit,
                Arc::clone(&counters),
                described.clone(),
            );
            // Serve what the last run kept while the operator is (maybe) unreachable.
            if let Some(kept) = sub.restore() {
                tracing::info!(version = %kept.version, "serving the snapshot kept from the last run");
                gw.apply(kept, vec![]);
            }
            background.push(tokio::spawn(sub.run(Arc::clone(&gw))));
            (gw, described)
        }
        None => {
            let source = match &settings.config_dir {
                Some(d) => ConfigSource::Dir(d.clone()),
                None => ConfigSource::Embedded,
            };
            let gw = Gateway::new(
                settings.clone(),
                metrics,
                audit,
                Arc::clone(&counters),
                source.describe(),
            );
            if !sources::dir::reload(&gw, &source).await {
                let problems = gw
                    .status()
                    .last_error
                    .map(|f| {
                        f.problems
                            .iter()
                            .map(|p| format!("  - {p}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                return Err(RunError::Config(problems));
            }
            if let ConfigSource::Dir(dir) = &source {
                background.push(tokio::spawn(sources::dir::watch(
                    Arc::clone(&gw),
                    dir.clone(),
                )));
            }
            (gw, source.describe())
        }
    };

    let (api_addr, admin_addr) = (settings.api_addr(), settings.admin_addr());
    let api = TcpListener::bind(api_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: api_addr,
            source,
            flag: "--listen",
            env: "LLMGATE_LISTEN",
        })?;
    let admin = TcpListener::bind(admin_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: admin_addr,
            source,
            flag: "--admin-listen",
            env: "LLMGATE_ADMIN_LISTEN",
        })?;
    tracing::info!(
        listen = %api_addr,
        admin = %admin_addr,
        config = %described,
        "llmgate data plane serving"
    );
    if settings.is_quickstart() {
        if api_addr.ip().is_loopback() {
            tracing::info!(
                "the quickstart's demo key is public, so it listens on loopback only; \
                 pass --listen (for example --listen 0.0.0.0:8080) to serve other hosts"
            );
        } else {
            tracing::warn!(
                listen = %api_addr,
                "the quickstart's demo key is public and this address serves other hosts: \
                 anyone who reaches it may call its models"
            );
        }
    }

    background.push(tokio::spawn(probe::run(Arc::clone(&gw))));
    alerts::install(&counters, gw.clients.get(2_000), gw.metrics.alerts.clone());
    let counters_task = tokio::spawn(Arc::clone(&counters).run(settles));
    tracing::info!(
        store = counters.describe(),
        "rate-limit and budget counters"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin_task = {
        let app = http::admin::router(Arc::clone(&gw));
        let mut stop = stop_rx.clone();
        tokio::spawn(http::server::serve(
            admin,
            app,
            settings.header_timeout,
            std::time::Duration::from_secs(1),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
            || {},
        ))
    };

    let gw_for_signal = Arc::clone(&gw);
    let gw_for_deadline = Arc::clone(&gw);
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!(
            grace_secs = gw_for_signal.settings.shutdown_grace.as_secs(),
            "shutting down: no new connections, letting in-flight requests finish"
        );
        gw_for_signal.start_draining();
    };
    http::server::serve(
        api,
        http::api_router(Arc::clone(&gw)),
        settings.header_timeout,
        settings.shutdown_grace,
        shutdown,
        move || gw_for_deadline.cut_remaining(),
    )
    .await;

    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    // Every request has ended: hand the last settles to Redis.
    counters.stop();
    if tokio::time::timeout(std::time::Duration::from_secs(5), counters_task)
        .await
        .is_err()
    {
        tracing::warn!("counter settles did not finish within 5 s");
    }
    for t in background {
        t.abort();
    }
    drop(gw);
    // Every sender is gone once the tasks above are: the writer drains and exits.
    if !audit_writer.finish(std::time::Duration::from_secs(5)).await {
        tracing::warn!("audit log did not drain within 5 s");
    }
    Ok(())
}

/// The counter store the flags ask for: Redis (one node or a cluster), else this process.
fn counters(
    settings: &Settings,
    metrics: &Metrics,
) -> (Arc<Counters>, mpsc::UnboundedReceiver<SettleItem>) {
    let target = match (&settings.redis_url, &settings.redis_cluster_nodes) {
        (Some(url), _) => Some(redis::Target::Single(url.clone())),
        (None, nodes) if !nodes.is_empty() => Some(redis::Target::Cluster(nodes.clone())),
        (None, _) => None,
    };
    match target {
        Some(t) => Counters::redis(
            redis::RedisStore::new(t, settings.redis_timeout),
            metrics.counters.clone(),
        ),
        None => Counters::memory(metrics.counters.clone()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
