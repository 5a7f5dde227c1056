//! The compile step: what a source read becomes a published snapshot, only when its content
//! hash changed, so data planes never receive a no-op update.

use std::sync::Arc;

use llmgate_crds::files::{Loaded, Problem};

use crate::{Operator, Published, ResultLabel, VersionLabel};

/// Publishes a compiled configuration, or records why it was rejected (the last good snapshot
/// keeps being distributed). Returns true when a new version went out.
pub fn publish(op: &Operator, result: Result<Loaded, Vec<Problem>>) -> bool {
    match result {
        Ok(loaded) => {
            // Say it once per change, not on every recompile that comes to the same result.
            if op.status_mut().warnings != loaded.warnings {
                for w in &loaded.warnings {
                    tracing::warn!(problem = %w, "resource left out of the snapshot");
                }
            }
            let version = loaded.snapshot.version.clone();
            let sent = op.published.send_if_modified(|current| {
                if current.as_ref().map(|p| p.snapshot.version.as_str()) == Some(version.as_str()) {
                    return false;
                }
                *current = Some(Arc::new(Published::new(loaded.snapshot)));
                true
            });
            {
                let mut st = op.status_mut();
                st.last_error = None;
                st.warnings = loaded.warnings;
                if sent {
                    st.version = Some(version.clone());
                    st.published_at = Some(jiff::Timestamp::now().to_string());
                }
            }
            if sent {
                op.metrics.snapshot_info.clear();
                op.metrics
                    .snapshot_info
                    .get_or_create(&VersionLabel {
                        version: version.clone(),
                    })
                    .set(1);
                tracing::info!(%version, "snapshot published");
            }
            op.metrics.last_compile_ok.set(1);
            op.metrics
                .compiles
                .get_or_create(&ResultLabel {
                    result: if sent { "published" } else { "unchanged" },
                })
                .inc();
            sent
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "change rejected; still distributing the last good snapshot");
            }
            op.status_mut().last_error = Some(problems);
            op.metrics.last_compile_ok.set(0);
            op.metrics
                .compiles
                .get_or_create(&ResultLabel { result: "failed" })
                .inc();
            false
        }
    }
}
