//! Which data plane runs which version: updated on subscribe, disconnect and acknowledgement,
//! shown by `/dataplanes` and `llmgate_operator_dataplanes{version}`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use llmgate_snapshot::distribution::{Ack, Health};
use serde::Serialize;

use crate::{Metrics, VersionLabel};

#[derive(Debug, Clone, Serialize)]
pub struct DataPlane {
    pub node: String,
    pub connected: bool,
    /// The version it last reported serving.
    pub version: Option<String>,
    pub applied: bool,
    pub error: Option<String>,
    /// What the data plane said of itself in its last acknowledgement.
    pub health: Option<Health>,
    pub last_seen: String,
}

#[derive(Default)]
pub struct Fleet(Mutex<BTreeMap<String, DataPlane>>);

impl Fleet {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, DataPlane>) -> R) -> R {
        let mut g = match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn entry<'a>(map: &'a mut BTreeMap<String, DataPlane>, node: &str) -> &'a mut DataPlane {
        map.entry(node.to_string()).or_insert_with(|| DataPlane {
            node: node.to_string(),
            connected: false,
            version: None,
            applied: false,
            error: None,
            health: None,
            last_seen: String::new(),
        })
    }

    pub fn connected(&self, node: &str, metrics: &Metrics) {
        self.with(|m| {
            let dp = Self::entry(m, node);
            dp.connected = true;
            dp.last_seen = jiff::Timestamp::now().to_string();
        });
        self.export(metrics);
    }

    pub fn disconnected(&self, node: &str, metrics: &Metrics) {
        self.with(|m| {
            let dp = Self::entry(m, node);
            dp.connected = false;
            dp.last_seen = jiff::Timestamp::now().to_string();
        });
        self.export(metrics);
    }

    pub fn acked(&self, ack: &Ack, metrics: &Metrics) {
        self.with(|m| {
            let dp = Self::entry(m, &ack.node);
            dp.version = Some(ack.version.clone());
            dp.applied = ack.applied;
            dp.error.clone_from(&ack.error);
            dp.health.clone_from(&ack.health);
            dp.last_seen = jiff::Timestamp::now().to_string();
        });
        self.export(metrics);
    }

    pub fn list(&self) -> Vec<DataPlane> {
        self.with(|m| m.values().cloned().collect())
    }

    fn export(&self, metrics: &Metrics) {
        let list = self.list();
        metrics.dataplanes.clear();
        for dp in &list {
            if let Some(v) = &dp.version {
                metrics
                    .dataplanes
                    .get_or_create(&VersionLabel { version: v.clone() })
                    .inc();
            }
        }
        metrics
            .connected
            .set(list.iter().filter(|d| d.connected).count() as i64);
    }
}
