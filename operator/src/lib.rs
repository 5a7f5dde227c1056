//! llmgate operator: the control loop that turns desired state into one snapshot for the fleet.
//!
//! The loop, in the order of its files: `sources/` read the desired state (the Kubernetes API
//! server, or a directory of YAML); [`compile`] turns it into a snapshot with `llmgate_crds` and
//! publishes it only when its content hash changed; [`status`] writes each resource's
//! conditions (the [`leader`] only); [`distribute`] streams every published version to
//! subscribed data planes and records their acknowledgements in the [`fleet`]; [`admin`] shows
//! all of it.

pub mod admin;
pub mod compile;
pub mod config;
pub mod distribute;
pub mod fleet;
pub mod leader;
pub mod sources;
pub mod status;
pub mod tls;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use llmgate_crds::files::Problem;
use llmgate_snapshot::Snapshot;
use llmgate_snapshot::distribution::Message;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Settings, SourceSpec};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("no data-plane token: {0} is empty or missing")]
    EmptyToken(String),
    #[error("cannot listen on {addr}: {source}; choose another address with {flag}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
        /// The flag that sets this address.
        flag: &'static str,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot reach the Kubernetes API: {0}")]
    Kube(kube::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A snapshot as it is handed out: the message line is serialized once per version and shared
/// by every subscriber.
#[derive(Debug)]
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub line: Bytes,
    pub at: jiff::Timestamp,
}

impl Published {
    pub fn new(snapshot: Snapshot) -> Published {
        let snapshot = Arc::new(snapshot);
        let msg = Message::Snapshot {
            snapshot: Box::new((*snapshot).clone()),
        };
        let mut line = serde_json::to_vec(&msg).unwrap_or_default();
        line.push(b'\n');
        Published {
            snapshot,
            line: Bytes::from(line),
            at: jiff::Timestamp::now(),
        }
    }
}

/// What `/readyz` says about the source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStatus {
    pub source: String,
    pub version: Option<String>,
    pub published_at: Option<String>,
    /// Set while the latest change is rejected; the last good snapshot is still distributed.
    pub last_error: Option<Vec<Problem>>,
    pub warnings: Vec<Problem>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub snapshot_info: Family<VersionLabel, Gauge>,
    pub compiles: Family<ResultLabel, Counter>,
    pub last_compile_ok: Gauge,
    pub dataplanes: Family<VersionLabel, Gauge>,
    pub connected: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("llmgate_operator");
        let snapshot_info = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "snapshot_info",
            "The snapshot being distributed (value 1)",
            snapshot_info.clone(),
        );
        let compiles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "compiles",
            "Compiles by result (published, unchanged, failed)",
            compiles.clone(),
        );
        let last_compile_ok = Gauge::default();
        registry.register(
            "last_compile_successful",
            "1 when the last change compiled, 0 when it was rejected",
            last_compile_ok.clone(),
        );
        let dataplanes = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "dataplanes",
            "Known data planes by the snapshot version they run",
            dataplanes.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "dataplane_connections",
            "Data planes subscribed right now",
            connected.clone(),
        );
        Metrics {
            registry,
            snapshot_info,
            compiles,
            last_compile_ok,
            dataplanes,
            connected,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The operator's shared state.
pub struct Operator {
    published: watch::Sender<Option<Arc<Published>>>,
    token: String,
    pub fleet: fleet::Fleet,
    pub metrics: Metrics,
    status: Mutex<SourceStatus>,
    shutdown: watch::Sender<bool>,
}

impl Operator {
    pub fn new(token: String, source: String) -> Arc<Operator> {
        Arc::new(Operator {
            published: watch::Sender::new(None),
            token,
            fleet: fleet::Fleet::default(),
            metrics: Metrics::new(),
            status: Mutex::new(SourceStatus {
                source,
                ..SourceStatus::default()
            }),
            shutdown: watch::Sender::new(false),
        })
    }

    pub fn current(&self) -> Option<Arc<Published>> {
        self.published.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.published.subscribe()
    }

    pub fn status(&self) -> SourceStatus {
        self.status_mut().clone()
    }

    fn status_mut(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        match self.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Whether `token` is the accepted bearer token (constant-time compare).
    pub fn token_ok(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        token.len() == self.token.len() && bool::from(token.as_bytes().ct_eq(self.token.as_bytes()))
    }

    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), RunError> {
    let client = match (&settings.source, &settings.token_secret) {
        (SourceSpec::Kubernetes, _) | (_, Some(_)) => {
            Some(kube::Client::try_default().await.map_err(RunError::Kube)?)
        }
        _ => None,
    };
    let own_namespace = settings
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let (token, token_from) = match (&settings.token_file, &settings.token_secret, &client) {
        (Some(file), _, _) => {
            let t = std::fs::read_to_string(file).map_err(|source| RunError::Token {
                path: file.display().to_string(),
                source,
            })?;
            (t, file.display().to_string())
        }
        (None, Some(name), Some(client)) => {
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.clone(), &own_namespace);
            let secret = secrets.get(name).await.map_err(RunError::Kube)?;
            let value = secret
                .data
                .and_then(|d| d.get("token").cloned())
                .and_then(|b| String::from_utf8(b.0).ok())
                .unwrap_or_default();
            (value, format!("secret {own_namespace}/{name} key token"))
        }
        _ => {
            return Err(RunError::EmptyToken(
                "no --token-file or --token-secret".into(),
            ));
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(RunError::EmptyToken(token_from));
    }
    let acceptor = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let described = match &settings.source {
        SourceSpec::Kubernetes => match settings.namespaces.as_slice() {
            [] => "kubernetes:all-namespaces".to_string(),
            ns => format!("kubernetes:{}", ns.join(",")),
        },
        SourceSpec::Dir(dir) => format!("dir:{}", dir.display()),
    };
    let op = Operator::new(token, described);

    let bind = |addr, flag| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source, flag })
    };
    let dist = bind(settings.distribution_listen, "--distribution-listen").await?;
    let admin = bind(settings.admin_listen, "--admin-listen").await?;
    tracing::info!(
        distribution = %settings.distribution_listen,
        tls = acceptor.is_some(),
        admin = %settings.admin_listen,
        source = %op.status().source,
        "llmgate operator running"
    );

    let mut background = Vec::new();
    match &settings.source {
        SourceSpec::Dir(dir) => background.push(tokio::spawn(sources::dir::run(
            Arc::clone(&op),
            dir.clone(),
            settings.secrets_dir.clone(),
            settings.debounce,
        ))),
        SourceSpec::Kubernetes => {
            let client = match client.clone() {
                Some(c) => c,
                None => kube::Client::try_default().await.map_err(RunError::Kube)?,
            };
            let lease_ns = own_namespace.clone();
            let identity = settings.identity.clone().unwrap_or_else(default_identity);
            let leader = Arc::new(leader::Leader::new(
                kube::Api::namespaced(client.clone(), &lease_ns),
                "llmgate-operator",
                &identity,
                std::time::Duration::from_secs(15),
            ));
            let l = Arc::clone(&leader);
            background.push(tokio::spawn(async move { l.run().await }));
            background.push(tokio::spawn(sources::kubernetes::run(
                Arc::clone(&op),
                client,
                settings.namespaces.clone(),
                settings.debounce,
                leader,
            )));
        }
    }
    let dist_app = distribute::router(Arc::clone(&op));
    let dist_server = {
        let mut stop = op.shutting_down();
        let acceptor = acceptor.clone();
        async move {
            match acceptor {
                Some(acceptor) => {
                    tls::serve(dist, dist_app, acceptor, stop).await;
                    Ok(())
                }
                None => {
                    axum::serve(dist, dist_app)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await
                }
            }
        }
    };
    let mut stop = op.shutting_down();
    let admin_server =
        axum::serve(admin, admin::router(Arc::clone(&op))).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let op_for_signal = Arc::clone(&op);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        op_for_signal.shutdown.send_replace(true);
    });
    let (a, b) = tokio::join!(dist_server, admin_server.into_future());
    for t in background {
        t.abort();
    }
    a.map_err(RunError::Serve)?;
    b.map_err(RunError::Serve)?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A Lease identity no other replica has: the host name and this process's id (as client-go
/// adds a unique suffix), so two operators on one host, or hosts that share `$HOSTNAME`, never
/// both believe they hold the Lease.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "llmgate-operator".into());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod identity_tests {
    #[test]
    fn the_default_lease_identity_is_this_host_and_process() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("Linux");
        assert_eq!(
            super::default_identity(),
            format!("{}_{}", host.trim(), std::process::id())
        );
    }
}
