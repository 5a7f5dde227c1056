//! `llmgate-dataplane`: parse flags, start logging, run.

use clap::Parser;
use llmgate_dataplane::flags::Settings;

// The request path allocates small, short-lived buffers on several threads; mimalloc's
// per-thread free lists serve that pattern at a fraction of glibc malloc's cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    if let Some(dir) = &settings.check_config {
        let (valid, report) =
            llmgate_dataplane::sources::dir::check(dir, settings.secrets_dir.as_deref());
        print!("{report}");
        std::process::exit(if valid { 0 } else { 1 });
    }
    llmgate_dataplane::telemetry::init_logging(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(llmgate_dataplane::run(settings))?;
    Ok(())
}
