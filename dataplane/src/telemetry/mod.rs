//! What the data plane tells its operators: logs (set up here, through `tracing`) and
//! Prometheus metrics ([`metrics`]).

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::flags::LogFormat;

/// Logs to stderr, at the level LLMGATE_LOG sets (default `info`), as text or JSON lines.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LLMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
}
