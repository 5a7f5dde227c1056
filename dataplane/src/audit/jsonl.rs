//! The JSON-lines audit writer: one record per line, to stdout or a file opened for append, on a
//! plain thread that batches what arrives within a short window into one write.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::AuditRecord;

/// How long the writer lets records gather before writing them: one write and one wake-up per
/// window instead of one per request, at the cost of records landing this much later.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// Starts the writer thread on `rx`. `-` writes to stdout; anything else is a file opened for
/// append. The returned handle finishes once every sender is dropped and the queue is written.
pub fn start(target: &str, rx: mpsc::Receiver<AuditRecord>) -> std::io::Result<AuditWriter> {
    let out: Box<dyn Write + Send> = if target == "-" {
        Box::new(std::io::stdout())
    } else {
        let path = PathBuf::from(target);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?,
        )
    };
    // A plain thread: file writes would otherwise go through tokio's blocking pool and cost
    // a thread hand-off per record.
    let handle = std::thread::Builder::new()
        .name("llmgate-audit".into())
        .spawn(move || write_loop(rx, out))?;
    Ok(AuditWriter(handle))
}

/// The writer thread.
pub struct AuditWriter(std::thread::JoinHandle<()>);

impl AuditWriter {
    /// Waits up to `timeout` for the writer to drain and stop; false if it did not.
    pub async fn finish(self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.0.is_finished() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

fn write_loop(mut rx: mpsc::Receiver<AuditRecord>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    // Blocks until the first record of a batch, or returns when every sender is gone.
    while let Some(first) = rx.blocking_recv() {
        std::thread::sleep(BATCH_WINDOW);
        let mut next = Some(first);
        while let Some(rec) = next {
            if serde_json::to_writer(&mut out, &rec).is_ok() {
                let _ = out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            tracing::error!(error = %e, "audit log write failed");
        }
    }
    let _ = out.flush();
}
