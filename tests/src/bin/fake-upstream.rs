//! `fake-upstream --listen ADDR --api-key KEY`: the fake OpenAI-compatible upstream as a
//! process, for the Python SDK tests and the benchmark. Prints `listening ADDR` when ready.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value = "sk-upstream-test")]
    api_key: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fake = llmgate_tests::fake::FakeUpstream::start_on(args.listen, &args.api_key).await?;
    println!("listening {}", fake.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
