//! `operator-bench`: the control plane's figures.
//!
//! - compile time and snapshot size for N ModelEndpoints and N AccessPolicies (default 1,000);
//! - time from a YAML change to every data plane serving it (p50, p99 over repeated edits),
//!   with the operator watching that large configuration and two data planes subscribed;
//! - the operator's RSS with that configuration loaded.
//!
//! Prints one JSON object. Run from `bench/operator.sh` (release build).

use std::time::{Duration, Instant};

use clap::Parser;
use llmgate_crds::files;
use llmgate_tests::harness::{Gateway, Operator, TEST_KEY, access_yaml};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// ModelEndpoints (and as many AccessPolicies) in the configuration.
    #[arg(long, default_value_t = 1000)]
    resources: usize,
    /// Edits timed for propagation.
    #[arg(long, default_value_t = 40)]
    edits: usize,
}

fn large_config(n: usize) -> String {
    let mut out = access_yaml();
    for i in 0..n {
        out.push_str(&format!(
            "---\napiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: m{i}, namespace: bench, labels: {{tier: t{}}}}}\nspec:\n  model: model-{i}\n  provider: openai-compatible\n  upstreamModel: upstream-{i}\n  replicas: [{{url: \"http://10.0.{}.{}:8000/v1\"}}, {{url: \"http://10.1.{}.{}:8000/v1\"}}]\n  pricing: {{inputPerMillion: 0.5, outputPerMillion: 1.5}}\n---\napiVersion: llmgate.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p{i}, namespace: bench}}\nspec:\n  rules:\n    - name: team-{i}\n      subjects: [{{team: team-{i}}}, {{user: user-{i}@example.com}}]\n      models: [model-{i}, \"shared-*\"]\n",
            i % 10,
            i / 250,
            i % 250,
            i / 250,
            i % 250
        ));
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn serves(gw: &Gateway, model: &str) -> bool {
    let r = gw
        .call_with_key(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})),
            Some(TEST_KEY),
        )
        .await;
    r.status == http::StatusCode::OK
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = large_config(args.resources);
    let files_in = vec![("bench.yaml".to_string(), text.clone())];

    // Compile: the same path the operator and standalone mode take, minus file reading.
    let mut times = Vec::new();
    let mut snapshot_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let loaded = files::compile_files(&files_in, None)
            .map_err(|p| anyhow::anyhow!("benchmark config does not compile: {p:?}"))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        snapshot_bytes = serde_json::to_vec(&loaded.snapshot)?.len();
    }
    times.sort_by(f64::total_cmp);

    // Propagation with the large configuration in place.
    let mut op = Operator::start(&text).await;
    let state = tempfile::tempdir()?;
    let mut a =
        Gateway::start_subscribed(&op.url(), &op.token_file, &state.path().join("a"), "a", &[]);
    let mut b =
        Gateway::start_subscribed(&op.url(), &op.token_file, &state.path().join("b"), "b", &[]);
    a.wait_ready().await;
    b.wait_ready().await;
    let rss = op.pid().map(rss_kib).unwrap_or(0);
    let mut lat = Vec::new();
    for e in 0..args.edits {
        let model = format!("edit-{e}");
        let t = Instant::now();
        op.write_config(
            "edit.yaml",
            &format!(
                "apiVersion: llmgate.dev/v1alpha1\nkind: ModelEndpoint\nmetadata: {{name: edit}}\nspec: {{model: {model}, provider: mock}}\n"
            ),
        );
        for gw in [&a, &b] {
            while !serves(gw, &model).await {
                if t.elapsed() > Duration::from_secs(30) {
                    anyhow::bail!("edit {e} not served after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let rss_after = op.pid().map(rss_kib).unwrap_or(0);
    op.stop();
    println!(
        "{}",
        json!({
            "resources": {"model_endpoints": args.resources, "access_policies": args.resources},
            "compile_ms": {"p50": percentile(&times, 50.0), "min": times[0]},
            "snapshot_bytes": snapshot_bytes,
            "propagation_ms": {"edits": args.edits, "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0), "max": lat.last()},
            "operator_rss_kib": {"loaded": rss, "after_edits": rss_after},
            "note": "propagation includes the operator's 50 ms debounce and the file watcher"
        })
    );
    Ok(())
}
