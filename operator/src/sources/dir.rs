//! `--source dir:PATH`: the llmgate YAML under a directory, watched. Read and compiled exactly as
//! the data plane's standalone mode does (`llmgate_crds::files`), so both agree on every file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use llmgate_crds::files;
use tokio::sync::mpsc;

use crate::Operator;
use crate::compile::publish;

pub async fn run(
    op: Arc<Operator>,
    dir: PathBuf,
    secrets_dir: Option<PathBuf>,
    debounce: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut paths = vec![dir.clone()];
    paths.extend(secrets_dir.clone());
    let _watcher = match files::watch_dirs(&paths, debounce, move || {
        let _ = tx.send(());
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the source directory; changes will not be picked up");
            None
        }
    };
    loop {
        let (d, s) = (dir.clone(), secrets_dir.clone());
        let loaded = tokio::task::spawn_blocking(move || files::load_dir(&d, s.as_deref()))
            .await
            .unwrap_or_else(|e| {
                Err(vec![files::Problem::internal(format!(
                    "loader crashed: {e}"
                ))])
            });
        publish(&op, loaded);
        if rx.recv().await.is_none() {
            return;
        }
    }
}
