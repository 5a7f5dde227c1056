//! `llmgate-operator`: parse flags, start logging, run.

use clap::Parser;
use llmgate_operator::config::Settings;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let filter = EnvFilter::try_from_env("LLMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    llmgate_operator::run(settings).await?;
    Ok(())
}
