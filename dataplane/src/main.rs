//! `llmgate-dataplane`: parse flags, start logging, run.

use clap::Parser;
use llmgate_dataplane::config::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;

// The request path allocates small, short-lived buffers on several threads; mimalloc's
// per-thread free lists serve that pattern at a fraction of glibc malloc's cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let filter = EnvFilter::try_from_env("LLMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(llmgate_dataplane::run(settings))?;
    Ok(())
}
