//! Standalone mode: the configuration is a directory of llmgate YAML (or, without one, the
//! quickstart embedded in the binary), compiled in-process with the same `llmgate_crds::compile`
//! the operator uses.
//!
//! A change is applied whole or not at all: any YAML or field error, dangling reference or
//! conflict rejects the change, the last good snapshot keeps serving, and the error (file and
//! field) goes to the log, `/readyz` and `llmgate_config_last_reload_successful`. A secret that
//! is not set is not a mistake in the YAML: its resource is left out with a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmgate_crds::files::{self, Loaded, Problem};
use tokio::sync::mpsc;

use crate::gateway::Gateway;

/// The quickstart configuration, compiled into the binary so it runs with no files at all.
/// Named `embedded:…` in problems: an edit of the file on disk does not change what is served.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "embedded:config/quickstart/models.yaml",
        include_str!("../../../config/quickstart/models.yaml"),
    ),
    (
        "embedded:config/quickstart/access.yaml",
        include_str!("../../../config/quickstart/access.yaml"),
    ),
];

/// Where configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    Dir(PathBuf),
    Embedded,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::Dir(d) => format!("dir:{}", d.display()),
            ConfigSource::Embedded => "embedded:quickstart".into(),
        }
    }
}

/// Reads, parses and compiles. Blocking file I/O: call from `spawn_blocking`.
pub fn load(source: &ConfigSource, secrets_dir: Option<&Path>) -> Result<Loaded, Vec<Problem>> {
    match source {
        ConfigSource::Embedded => {
            let embedded: Vec<(String, String)> = EMBEDDED
                .iter()
                .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
                .collect();
            files::compile_files(&embedded, secrets_dir)
        }
        ConfigSource::Dir(dir) => files::load_dir(dir, secrets_dir),
    }
}

/// `--check-config`: the report a reload of `dir` would give, and whether it would be served.
pub fn check(dir: &Path, secrets_dir: Option<&Path>) -> (bool, String) {
    use std::fmt::Write;
    let mut out = String::new();
    match load(&ConfigSource::Dir(dir.to_path_buf()), secrets_dir) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(
                out,
                "ok: {} is valid: {} models served, {} left out, version {}",
                dir.display(),
                loaded.snapshot.endpoints.len(),
                loaded.left_out.len(),
                loaded.snapshot.version
            );
            (true, out)
        }
        Err(problems) => {
            for p in &problems {
                let _ = writeln!(out, "error: {p}");
            }
            let _ = writeln!(
                out,
                "{} is not valid: {} problem{}; nothing of it would be served",
                dir.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            (false, out)
        }
    }
}

/// Loads and applies once; on failure logs every problem and records the rejection.
pub async fn reload(gw: &Arc<Gateway>, source: &ConfigSource) -> bool {
    let src = source.clone();
    let secrets = gw.settings.secrets_dir.clone();
    let result = tokio::task::spawn_blocking(move || load(&src, secrets.as_deref()))
        .await
        .unwrap_or_else(|e| Err(vec![Problem::internal(format!("loader crashed: {e}"))]));
    match result {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!(problem = %w, "resource left out of the configuration");
            }
            let version = loaded.snapshot.version.clone();
            let models = loaded.snapshot.endpoints.len();
            gw.set_left_out(loaded.left_out);
            if gw.apply(loaded.snapshot, loaded.warnings) {
                tracing::info!(%version, models, "configuration applied");
            }
            true
        }
        Err(problems) => {
            // At start-up there is nothing to keep serving: the caller reports the problems
            // and stops.
            let serving = !gw.status().version.is_empty();
            for p in &problems {
                if serving {
                    tracing::error!(problem = %p, "configuration change rejected; still serving the last good configuration");
                } else {
                    tracing::error!(problem = %p, "configuration rejected");
                }
            }
            gw.reject(problems);
            false
        }
    }
}

/// Watches the config (and secrets) directory and reloads after each burst of changes.
pub async fn watch(gw: Arc<Gateway>, dir: PathBuf) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut paths = vec![dir.clone()];
    paths.extend(gw.settings.secrets_dir.clone());
    let _watcher = match files::watch_dirs(&paths, gw.settings.reload_debounce, move || {
        let _ = tx.send(());
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the configuration directory; changes will not be applied");
            return;
        }
    };
    let source = ConfigSource::Dir(dir);
    while rx.recv().await.is_some() {
        reload(&gw, &source).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_directory_compiles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for dir in ["quickstart", "samples", "local-login"] {
            let loaded = load(&ConfigSource::Dir(root.join(dir)), None)
                .unwrap_or_else(|p| panic!("config/{dir} is invalid: {p:#?}"));
            assert!(
                !loaded.snapshot.endpoints.is_empty(),
                "config/{dir} serves a model"
            );
            // Only secrets may be missing here (no keys in the test environment).
            assert!(loaded.warnings.iter().all(|w| w.reason == "MissingSecret"));
        }
    }

    #[test]
    fn the_embedded_quickstart_is_the_quickstart_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/quickstart");
        let on_disk = load(&ConfigSource::Dir(root), None).expect("valid");
        let embedded = load(&ConfigSource::Embedded, None).expect("valid");
        assert_eq!(on_disk.snapshot.version, embedded.snapshot.version);
    }

    #[test]
    fn the_embedded_quickstart_compiles() {
        let loaded = load(&ConfigSource::Embedded, None).expect("quickstart is valid");
        assert!(
            loaded
                .snapshot
                .endpoints
                .iter()
                .any(|e| e.model == "mock-gpt"),
            "the quickstart serves the mock model"
        );
    }
}
