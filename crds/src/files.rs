//! Configuration from files: a directory of llmgate YAML (nested folders, multi-document
//! files) read, parsed and compiled into a snapshot, with every problem located by file,
//! resource and field. Shared by the data plane's standalone mode and the operator's directory
//! source, so both read files the same way. This module does file I/O;
//! [`crate::compile`] itself stays pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use llmgate_snapshot::{Secret, Snapshot};
use serde::Serialize;

use crate::{Reason, Resource, Resources, SecretKeyRef, compile, parse_documents};

/// One thing wrong with the configuration, located as precisely as known.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    pub field: String,
    pub reason: String,
    pub message: String,
}

impl Problem {
    /// A compile error, located in `file` when the caller knows it.
    pub fn from_compile(e: &crate::CompileError, file: Option<String>) -> Problem {
        Problem {
            file,
            resource: Some(e.resource.to_string()),
            field: e.field.clone(),
            reason: e.reason.as_str().into(),
            message: e.message.clone(),
        }
    }

    /// Something went wrong in llmgate itself rather than in the configuration.
    pub fn internal(message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            resource: None,
            field: String::new(),
            reason: "Internal".into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(r) = &self.resource {
            write!(f, "{r}: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        write!(f, "{}", self.message)
    }
}

/// A compiled configuration ready to apply, with what was left out for missing secrets.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<Problem>,
    /// Models declared but left out (a secret has no value), with why and how to fix it, so a
    /// caller asking for one is told more than "no such model".
    pub left_out: BTreeMap<String, String>,
}

/// Parses and compiles files given as `(name, text)`. A YAML or field error, a dangling
/// reference or a conflict fails the whole set; a secret with no value only leaves its resource
/// out, as a warning.
pub fn compile_files(
    files: &[(String, String)],
    secrets_dir: Option<&Path>,
) -> Result<Loaded, Vec<Problem>> {
    let mut resources = Resources::default();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, text) in files {
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
    let refs = resources.secret_refs();
    resources.secrets = resolve_secrets(&refs, secrets_dir);
    let compiled = compile(&resources);
    let unset: Vec<&SecretKeyRef> = refs
        .iter()
        .filter(|r| !resources.secrets.contains_key(*r))
        .collect();
    let mut left_out = BTreeMap::new();
    let (warnings, errors): (Vec<_>, Vec<_>) = compiled
        .errors
        .iter()
        .map(|e| {
            let file = origin.get(&e.resource.to_string()).cloned();
            let mut p = Problem::from_compile(e, file);
            if e.reason == Reason::MissingSecret {
                // Outside a cluster the fix is a variable or a file: name both.
                if let Some(r) = unset.iter().find(|r| e.message.contains(&r.to_string())) {
                    let file = secrets_dir.map_or_else(String::new, |d| {
                        format!(" or write {}", d.join(&r.name).join(&r.key).display())
                    });
                    p.message = format!(
                        "{}: set {} in the gateway's environment{file}",
                        p.message,
                        env_name(r)
                    );
                }
                if e.resource.kind == "ModelEndpoint"
                    && let Some(me) = resources.model_endpoints.iter().find(|m| {
                        m.metadata.name.as_deref() == Some(e.resource.name.as_str())
                            && m.metadata.namespace.as_deref().unwrap_or("default")
                                == e.resource.namespace
                    })
                {
                    left_out.insert(me.spec.model.clone(), p.message.clone());
                }
            }
            (e.reason, p)
        })
        .partition(|(r, _)| *r == Reason::MissingSecret);
    if !errors.is_empty() {
        return Err(errors.into_iter().map(|(_, p)| p).collect());
    }
    Ok(Loaded {
        snapshot: compiled.snapshot,
        warnings: warnings.into_iter().map(|(_, p)| p).collect(),
        left_out,
    })
}

fn resource_label(r: &Resource) -> String {
    let (kind, meta) = match r {
        Resource::ModelEndpoint(x) => ("ModelEndpoint", &x.metadata),
        Resource::AccessPolicy(x) => ("AccessPolicy", &x.metadata),
        Resource::TeamBudget(x) => ("TeamBudget", &x.metadata),
        Resource::IdentityProvider(x) => ("IdentityProvider", &x.metadata),
        Resource::GatewayTokens(x) => ("GatewayTokens", &x.metadata),
        Resource::ApiKey(x) => ("ApiKey", &x.metadata),
    };
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Reads and compiles a directory: [`read_dir`] then [`compile_files`].
pub fn load_dir(dir: &Path, secrets_dir: Option<&Path>) -> Result<Loaded, Vec<Problem>> {
    compile_files(&read_dir(dir)?, secrets_dir)
}

/// Every `*.yaml` / `*.yml` under `dir`, nested folders included, in a stable order. Hidden
/// files and folders (editor swap files, `..data` of mounted ConfigMaps) are skipped.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, Vec<Problem>> {
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

/// Secrets outside Kubernetes: the file `DIR/<secret>/<key>` when a secrets directory is given and has
/// it, else the environment variable `<SECRET>_<KEY>` (upper case, other characters as `_`).
pub fn resolve_secrets(
    refs: &BTreeSet<SecretKeyRef>,
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

/// Watches directories (recursively) for changes. Dropping it stops the watch.
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` once after every burst of changes under `paths` has been quiet for
/// `debounce` (editors write, rename and chmod in quick succession; a ConfigMap update swaps a
/// symlink). The callback runs on a thread of its own; hand the work to an async task from it.
pub fn watch_dirs(
    paths: &[PathBuf],
    debounce: Duration,
    mut on_change: impl FnMut() + Send + 'static,
) -> notify::Result<DirWatcher> {
    use notify::Watcher;
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })?;
    for p in paths {
        watcher.watch(p, notify::RecursiveMode::Recursive)?;
    }
    std::thread::Builder::new()
        .name("llmgate-watch".into())
        .spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(DirWatcher { _watcher: watcher })
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
    fn problems_name_file_resource_and_field() {
        let files = vec![(
            "a.yaml".to_string(),
            "apiVersion: llmgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {rules: [{subjects: [{team: t}], models: [nope]}]}\n".to_string(),
        )];
        let problems = compile_files(&files, None).err().unwrap_or_default();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].file.as_deref(), Some("a.yaml"));
        assert_eq!(
            problems[0].resource.as_deref(),
            Some("AccessPolicy default/p")
        );
        assert_eq!(problems[0].field, "spec.rules[0].models[0]");
        assert_eq!(problems[0].reason, "DanglingRef");
    }

    /// A model left out for an unset secret says which variable (and file) would set it, and
    /// is listed by its model name.
    #[test]
    fn a_left_out_model_names_what_would_set_its_secret() {
        let files = vec![(
            "m.yaml".to_string(),
            "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {name: mini, namespace: ai}\nspec: {model: gpt-4o-mini, provider: openai, credentials: {apiKey: {secretRef: {name: llmgate-unset-test, key: api-key}}}}\n".to_string(),
        )];
        let dir = Path::new("/run/secrets");
        let loaded = compile_files(&files, Some(dir)).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(loaded.warnings.len(), 1);
        let want = "secret ai/llmgate-unset-test key api-key has no value: set LLMGATE_UNSET_TEST_API_KEY in the gateway's environment or write /run/secrets/llmgate-unset-test/api-key";
        assert_eq!(loaded.warnings[0].message, want);
        assert_eq!(
            loaded.left_out.into_iter().collect::<Vec<_>>(),
            vec![("gpt-4o-mini".to_string(), want.to_string())]
        );
    }
}
