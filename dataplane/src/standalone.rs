//! Standalone mode: the configuration is a directory of llmgate YAML (or, without one, the
//! quickstart embedded in the binary), compiled in-process with the same `llmgate_crds::compile`
//! the operator uses.
//!
//! A change is applied whole or not at all: any YAML or field error, dangling reference or
//! conflict rejects the change, the last good snapshot keeps serving, and the error (file and
//! field) goes to the log, `/readyz` and `llmgate_config_last_reload_successful`. A secret that
//! is not set is not a mistake in the YAML: its resource is left out with a warning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmgate_crds::{Reason, Resources, SecretKeyRef, compile, parse_documents};
use llmgate_snapshot::{Secret, Snapshot};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::state::{Gateway, Problem};

/// The quickstart configuration, compiled into the binary so it runs with no files at all.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "config/quickstart/models.yaml",
        include_str!("../../config/quickstart/models.yaml"),
    ),
    (
        "config/quickstart/access.yaml",
        include_str!("../../config/quickstart/access.yaml"),
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

/// A compiled configuration ready to apply, with what was left out for missing secrets.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<Problem>,
}

/// Reads, parses and compiles. Blocking file I/O: call from `spawn_blocking`.
pub fn load(source: &ConfigSource, secrets_dir: Option<&Path>) -> Result<Loaded, Vec<Problem>> {
    let files: Vec<(String, String)> = match source {
        ConfigSource::Embedded => EMBEDDED
            .iter()
            .map(|(n, t)| ((*n).to_string(), (*t).to_string()))
            .collect(),
        ConfigSource::Dir(dir) => read_dir(dir)?,
    };
    let mut resources = Resources::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in &files {
        match parse_documents(text) {
            Ok(docs) => {
                for d in docs {
                    origin.insert(resource_label(&d), file.clone());
                    resources.push(d);
                }
            }
            Err(e) => problems.push(Problem {
                file: Some(file.clone()),
                resource: e.resource.clone(),
                field: e.field.clone(),
                reason: "Invalid".into(),
                message: format!("document {}: {}", e.document, e.message),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    resources.secrets = resolve_secrets(&resources.secret_refs(), secrets_dir);
    let compiled = compile(&resources);
    let (warnings, errors): (Vec<_>, Vec<_>) = compiled
        .errors
        .into_iter()
        .map(|e| {
            let resource = e.resource.to_string();
            (
                e.reason,
                Problem {
                    file: origin.get(&resource).cloned(),
                    resource: Some(resource),
                    field: e.field,
                    reason: e.reason.as_str().into(),
                    message: e.message,
                },
            )
        })
        .partition(|(r, _)| *r == Reason::MissingSecret);
    if !errors.is_empty() {
        return Err(errors.into_iter().map(|(_, p)| p).collect());
    }
    Ok(Loaded {
        snapshot: compiled.snapshot,
        warnings: warnings.into_iter().map(|(_, p)| p).collect(),
    })
}

fn resource_label(r: &llmgate_crds::Resource) -> String {
    use llmgate_crds::Resource;
    let (kind, meta) = match r {
        Resource::ModelEndpoint(x) => ("ModelEndpoint", &x.metadata),
        Resource::AccessPolicy(x) => ("AccessPolicy", &x.metadata),
        Resource::ApiKey(x) => ("ApiKey", &x.metadata),
    };
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Every `*.yaml` / `*.yml` under `dir`, nested folders included, in a stable order. Hidden
/// files and folders (editor swap files, `..data` of mounted ConfigMaps) are skipped.
fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let fail = |path: &Path, e: std::io::Error| {
        vec![Problem {
            file: Some(path.display().to_string()),
            resource: None,
            field: String::new(),
            reason: "Unreadable".into(),
            message: e.to_string(),
        }]
    };
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| fail(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| fail(&d, e))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                let text = std::fs::read_to_string(&path).map_err(|e| fail(&path, e))?;
                out.push((path.display().to_string(), text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Standalone secrets: the file `DIR/<secret>/<key>` when a secrets directory is given and has
/// it, else the environment variable `<SECRET>_<KEY>` (upper case, other characters as `_`).
pub fn resolve_secrets(
    refs: &std::collections::BTreeSet<SecretKeyRef>,
    secrets_dir: Option<&Path>,
) -> BTreeMap<SecretKeyRef, Secret> {
    let mut out = BTreeMap::new();
    for r in refs {
        let from_file = secrets_dir
            .map(|d| d.join(&r.name).join(&r.key))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string());
        let value = from_file.or_else(|| std::env::var(env_name(r)).ok());
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.insert(r.clone(), Secret::new(v));
        }
    }
    out
}

pub fn env_name(r: &SecretKeyRef) -> String {
    format!("{}_{}", r.name, r.key)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Loads and applies once; on failure logs every problem and records the rejection.
pub async fn reload(gw: &Arc<Gateway>, source: &ConfigSource) -> bool {
    let src = source.clone();
    let secrets = gw.settings.secrets_dir.clone();
    let result = tokio::task::spawn_blocking(move || load(&src, secrets.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(vec![Problem {
                file: None,
                resource: None,
                field: String::new(),
                reason: "Internal".into(),
                message: format!("configuration loader crashed: {e}"),
            }])
        });
    match result {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!(problem = %w, "resource left out of the configuration");
            }
            let version = loaded.snapshot.version.clone();
            let models = loaded.snapshot.endpoints.len();
            if gw.apply(loaded.snapshot, loaded.warnings) {
                tracing::info!(%version, models, "configuration applied");
            }
            true
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "configuration change rejected; still serving the last good configuration");
            }
            gw.reject(problems);
            false
        }
    }
}

/// Watches the config (and secrets) directory and reloads after each burst of changes.
pub async fn watch(gw: Arc<Gateway>, dir: PathBuf) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the configuration directory; changes will not be applied");
            return;
        }
    };
    let mut paths = vec![dir.clone()];
    paths.extend(gw.settings.secrets_dir.clone());
    for p in &paths {
        if let Err(e) = watcher.watch(p, RecursiveMode::Recursive) {
            tracing::error!(path = %p.display(), error = %e, "cannot watch directory");
        }
    }
    let source = ConfigSource::Dir(dir);
    let debounce = gw.settings.reload_debounce;
    while rx.recv().await.is_some() {
        // Let the burst settle (editors write, rename and chmod in quick succession).
        loop {
            match tokio::time::timeout(debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        reload(&gw, &source).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_follow_the_documented_rule() {
        let r = SecretKeyRef {
            namespace: "default".into(),
            name: "openai".into(),
            key: "api-key".into(),
        };
        assert_eq!(env_name(&r), "OPENAI_API_KEY");
    }

    #[test]
    fn every_example_directory_compiles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for dir in ["quickstart", "samples"] {
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
