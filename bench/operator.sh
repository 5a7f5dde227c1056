#!/usr/bin/env bash
# Control-plane figures: compile time and snapshot size for 1,000 ModelEndpoints and 1,000
# AccessPolicies, time from a YAML change to two data planes serving it (p50/p99), operator RSS.
#   bench/operator.sh                  # BENCH_RESOURCES=1000 BENCH_EDITS=40
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p llmgate-operator -p llmgate-dataplane -p llmgate-tests --bins
"$target/release/operator-bench" --resources "${BENCH_RESOURCES:-1000}" --edits "${BENCH_EDITS:-40}"
