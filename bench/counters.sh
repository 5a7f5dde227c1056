#!/usr/bin/env bash
# Overhead of rate limits and budgets: the same llmgate binary and fake upstream with no limit
# or budget ("off"), with a per-user request limit ("requests"), and with a per-user request +
# token limit and a team budget ("full"), the last two counted in a real redis-server; measured
# alternately in one run, plus Redis round trips (client commands) and FCALLs per request from
# INFO commandstats.
#
#   bench/counters.sh            (knobs: BENCH_DURATION=10, BENCH_CONNECTIONS="16 64",
#                                 BENCH_ROUNDS=2, BENCH_BUILD=1)
#
# Writes bench/results/counters-<timestamp>/table.md and prints it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-"16 64"}
ROUNDS=${BENCH_ROUNDS:-2}
BUILD=${BENCH_BUILD:-1}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
KEY=sk-bench
UPSTREAM_KEY=sk-bench-upstream

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
command -v wrk >/dev/null || die "wrk is not installed: apt-get install -y wrk"
command -v redis-server >/dev/null || die "redis-server is not installed"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$ROOT/bench/results/counters-$STAMP
mkdir -p "$RUN/off" "$RUN/requests" "$RUN/full" "$RUN/redis"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() {
  for _ in $(seq 1 200); do curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0; sleep 0.05; done
  die "not ready: $1"
}

if [[ $BUILD != 0 ]]; then
  (cd "$ROOT" && cargo build --release -p llmgate-dataplane -p llmgate-tests --bins)
fi

"$BIN/fake-upstream" --listen 127.0.0.1:0 --api-key "$UPSTREAM_KEY" >"$RUN/fake.out" 2>"$RUN/fake.log" &
PIDS+=($!)
for _ in $(seq 1 200); do
  FAKE=$(awk '/^listening / {print $2; exit}' "$RUN/fake.out")
  [[ -n $FAKE ]] && break
  sleep 0.05
done
[[ -n $FAKE ]] || die "fake-upstream did not start"

REDIS_PORT=$(port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$RUN/redis" >"$RUN/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done

SHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
BASE="apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: bench}
spec: {user: bench, team: bench, sha256: \"$SHA\"}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: fast}
spec:
  model: fast
  provider: openai-compatible
  upstreamModel: fast
  replicas: [{url: \"http://$FAKE/v1\"}]
  credentials: {apiKey: {secretRef: {name: upstream, key: api-key}}}
  pricing: {inputPerMillion: 0.001, outputPerMillion: 0.001}
"
printf '%s---\n%s' "$BASE" "apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench}
spec:
  rules: [{subjects: [{team: bench}], models: ['*']}]
" >"$RUN/off/main.yaml"
printf '%s---\n%s' "$BASE" "apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench}
spec:
  rules: [{subjects: [{team: bench}], models: ['*']}]
  rateLimits:
    - {name: per-user, per: [user], window: minute, requests: 100000000, tokens: 100000000000}
---
apiVersion: llmgate.dev/v1alpha1
kind: TeamBudget
metadata: {name: bench}
spec: {team: bench, amountUsd: 1000000000, period: day}
" >"$RUN/full/main.yaml"
printf '%s---\n%s' "$BASE" "apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench}
spec:
  rules: [{subjects: [{team: bench}], models: ['*']}]
  rateLimits:
    - {name: per-user, per: [user], window: minute, requests: 100000000}
" >"$RUN/requests/main.yaml"

start() { # name extra-args... → sets <NAME>_PORT and <NAME>_PID
  local name=$1; shift
  local p a
  p=$(port); a=$(port)
  UPSTREAM_API_KEY=$UPSTREAM_KEY LLMGATE_LOG=warn "$BIN/llmgate-dataplane" --config-dir "$RUN/$name" \
    --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" --audit-log /dev/null "$@" \
    >"$RUN/$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "${name^^}_PID" %s "$!"
  printf -v "${name^^}_PORT" %s "$p"
  wait_ok "http://127.0.0.1:$a/readyz"
}
start off
start requests --redis-url "redis://127.0.0.1:$REDIS_PORT"
start full --redis-url "redis://127.0.0.1:$REDIS_PORT"
REQ_PORT=$REQUESTS_PORT
log "off :$OFF_PORT, requests :$REQ_PORT, full :$FULL_PORT, redis :$REDIS_PORT, fake $FAKE"

# Sanity: the limited gateways count (rate-limit headers present) and answer 200.
for p in $REQ_PORT $FULL_PORT; do
  curl -fsS -D "$RUN/headers-$p.txt" -o /dev/null "http://127.0.0.1:$p/v1/chat/completions" \
    -H "authorization: Bearer $KEY" -d '{"model":"fast","messages":[{"role":"user","content":"hello"}]}'
  grep -qi '^x-ratelimit-limit-requests' "$RUN/headers-$p.txt" || die "limits are not applied on :$p"
done

fcalls() { redis-cli -p "$REDIS_PORT" INFO commandstats | awk -F'[=,:]' '/^cmdstat_fcall:/ {print $3}'; }
# Commands clients send (commands run inside functions are counted too, so only these).
allcalls() {
  redis-cli -p "$REDIS_PORT" INFO commandstats |
    awk -F'[=,:]' '/^cmdstat_(fcall|function\|load|ping):/ {s+=$3} END {print s+0}'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_MS=$(awk "BEGIN {print 1000 / $(getconf CLK_TCK)}")
redis_usec() { redis-cli -p "$REDIS_PORT" INFO commandstats | awk -F'[=,:]' '/^cmdstat_fcall:/ {print $5}'; }

run_wrk() { # port conns
  BENCH_KEY=$KEY wrk -t2 -c"$2" -d"${DURATION}s" -s "$ROOT/bench/chat.lua" \
    "http://127.0.0.1:$1/v1/chat/completions" | awk '/^BENCH_RESULT/'
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

TABLE=$RUN/table.md
{
  echo "| connections | round | config | off req/s | on req/s | on/off | off p50 µs | on p50 µs | gateway CPU µs/req off | on | Redis round trips/request | FCALL/request | Redis µs/request |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"
for c in $CONNECTIONS; do
  for p in $OFF_PORT $REQ_PORT $FULL_PORT; do run_wrk "$p" "$c" >/dev/null; done   # warm-up
  for r in $(seq 1 "$ROUNDS"); do
    for cfg in requests full; do
      port=$REQ_PORT; pid=$REQUESTS_PID
      [[ $cfg == full ]] && port=$FULL_PORT && pid=$FULL_PID
      t0=$(ticks "$OFF_PID")
      off=$(run_wrk "$OFF_PORT" "$c")
      t1=$(ticks "$OFF_PID")
      f0=$(fcalls); a0=$(allcalls); u0=$(redis_usec); g0=$(ticks "$pid")
      on=$(run_wrk "$port" "$c")
      sleep 0.5   # the last settle batch
      f1=$(fcalls); a1=$(allcalls); u1=$(redis_usec); g1=$(ticks "$pid")
      for x in "$off" "$on"; do
        for e in err_connect err_read err_write err_status err_timeout; do
          [[ $(field "$e" "$x") == 0 ]] || die "errors during the run: $x"
        done
      done
      offr=$(field rps "$off"); onr=$(field rps "$on"); n=$(field requests "$on")
      offn=$(field requests "$off")
      printf '| %s | %s | %s | %.0f | %.0f | %.2f | %s | %s | %.1f | %.1f | %.3f | %.3f | %.1f |\n' "$c" "$r" "$cfg" \
        "$offr" "$onr" "$(awk "BEGIN {print $onr / $offr}")" "$(field p50_us "$off")" \
        "$(field p50_us "$on")" "$(awk "BEGIN {print ($t1 - $t0) * $TICK_MS * 1000 / $offn}")" \
        "$(awk "BEGIN {print ($g1 - $g0) * $TICK_MS * 1000 / $n}")" "$(awk "BEGIN {print ($a1 - $a0) / $n}")" \
        "$(awk "BEGIN {print ($f1 - $f0) / $n}")" "$(awk "BEGIN {print ($u1 - $u0) / $n}")" >>"$TABLE"
    done
  done
done
cat "$TABLE"
