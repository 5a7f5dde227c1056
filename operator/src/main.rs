//! `llmgate-operator`: parse flags, start logging, run.

use clap::Parser;
use llmgate_operator::config::Settings;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let filter = EnvFilter::try_from_env("LLMGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    llmgate_operator::run(settings).await?;
    Ok(())
}
