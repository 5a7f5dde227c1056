#!/usr/bin/env bash
# Clone to first answer, as README.md's "Run it" promises it: clones the repository into a
# temporary directory, runs the README's first command with an empty cargo home (every crate is
# downloaded) and an empty target directory, and sends the README's first curl until it answers.
# Prints the time from the clone to the answer, the build's own time, and the binary size.
#
#   bench/first-answer.sh [REPOSITORY [REVISION]]     (default: this checkout, its HEAD)
#
# Needs git, curl, cargo (rustup), GNU time (/usr/bin/time) and nothing listening on 127.0.0.1:8080. Deletes what it made.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=${1:-$ROOT}
REV=${2:-}
WORK=$(mktemp -d /var/tmp/llmgate-first-answer.XXXXXX)
GATEWAY=
cleanup() {
  [[ -n $GATEWAY ]] && kill "$GATEWAY" 2>/dev/null && wait "$GATEWAY" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8080/; then
  echo "first-answer: something already listens on 127.0.0.1:8080" >&2
  exit 1
fi

# A cold start: no crates downloaded, nothing built. rustup's own toolchain stays where it is.
export CARGO_HOME=$WORK/cargo-home
mkdir -p "$CARGO_HOME"
unset CARGO_TARGET_DIR RUSTFLAGS CARGO_BUILD_RUSTFLAGS
export PATH="$HOME/.cargo/bin:$PATH"

start=$(date +%s.%N)
git clone -q "$REPO" "$WORK/llmgate"
cd "$WORK/llmgate"
[[ -z $REV ]] || git checkout -q "$REV"
# The README's command, in two steps so the build's CPU time can be read: `cargo run` after a
# `cargo build` of the same profile starts the binary at once.
if ! /usr/bin/time -o "$WORK/cpu" -f '%U %S' cargo build --release -p llmgate-dataplane 2>"$WORK/build.log"; then
  echo "first-answer: the build failed:" >&2
  tail -20 "$WORK/build.log" >&2
  exit 1
fi
cargo run --release -p llmgate-dataplane >"$WORK/gateway.out" 2>"$WORK/gateway.log" &
GATEWAY=$!

body='{"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello!"}]}'
until answer=$(curl -sf localhost:8080/v1/chat/completions \
    -H "Authorization: Bearer sk-llmgate-demo" -H "Content-Type: application/json" -d "$body"); do
  if ! kill -0 "$GATEWAY" 2>/dev/null; then
    echo "first-answer: the gateway exited before answering:" >&2
    tail -20 "$WORK/gateway.log" >&2
    exit 1
  fi
  sleep 0.5
done
end=$(date +%s.%N)

built=$(grep -o 'Finished .* in .*' "$WORK/build.log" | head -1 || true)
cpu=$(awk '{ printf "%d s", $1 + $2 }' "$WORK/cpu")
binary=$WORK/llmgate/target/release/llmgate-dataplane
size=$(stat -c %s "$binary")
stripped=$(strip -o "$WORK/stripped" "$binary" && stat -c %s "$WORK/stripped")
awk -v s="$start" -v e="$end" 'BEGIN { t = e - s; printf "clone to first answer: %d min %02d s\n", t / 60, t % 60 }'
echo "cargo: $built; CPU (user + system): $cpu"
echo "binary: $((size / 1000000)) MB ($((stripped / 1000000)) MB stripped)"
echo "cores: $(nproc); answer: ${answer:0:80}…"
