#!/usr/bin/env bash
# Benchmark of the llmgate data plane against a fake OpenAI upstream on loopback.
#
# Builds the release binaries, starts fake-upstream, llmgate (and nginx as a reference proxy
# when installed), then measures, in one run and on the same machine:
#   - non-streaming POST /v1/chat/completions with wrk + bench/chat.lua, for each target
#     (direct -> fake, llmgate -> fake, nginx -> fake) at each connection count;
#   - streaming chat completions (20 chunks) with stream-bench, for each target, and through
#     llmgate's Anthropic and Azure adapters (llmgate-anthropic, llmgate-azure);
#   - CPU time per request of the proxy (llmgate, nginx) and llmgate's resident memory.
# Writes bench/results/<timestamp>/table.md (plus raw outputs) and prints the table.
# Exits 1 if any request failed (non-2xx, socket error, broken stream).
#
# Environment knobs (see bench/README.md):
#   BENCH_DURATION=10            seconds per measured run
#   BENCH_WARMUP=2               seconds of unrecorded warm-up per target
#   BENCH_CONNECTIONS="1 16 64"  connection counts of the non-streaming runs
#   BENCH_STREAM_CONNECTIONS="1 16"  connection counts of the streaming runs
#   BENCH_WRK_THREADS=2          wrk -t
#   BENCH_NGINX=auto             auto: use nginx when found; 0: skip it
#   BENCH_BUILD=1                0: use the binaries already in target/release
#   BENCH_AUDIT_LOG=<run dir>/audit.log   llmgate's --audit-log (e.g. /dev/null)
#   BENCH_KEEP_AUDIT=0           1: keep the default audit log (about 0.5 GB) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 64"}
STREAM_CONNECTIONS=${BENCH_STREAM_CONNECTIONS:-"1 16"}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
USE_NGINX=${BENCH_NGINX:-auto}
BUILD=${BENCH_BUILD:-1}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

GATEWAY_KEY=sk-bench
UPSTREAM_KEY=sk-bench-upstream
CHAT_BODY='{"model":"fast","messages":[{"role":"user","content":"hello"}]}'
STREAM_BODY_DIRECT='{"model":"chunks:20","messages":[{"role":"user","content":"hello"}],"stream":true}'
STREAM_BODY_GATEWAY='{"model":"stream20","messages":[{"role":"user","content":"hello"}],"stream":true}'
# The same 20-chunk stream through the translating adapters (the fake speaks both protocols).
STREAM_BODY_ANTHROPIC='{"model":"stream20-anthropic","messages":[{"role":"user","content":"hello"}],"stream":true}'
STREAM_BODY_AZURE='{"model":"stream20-azure","messages":[{"role":"user","content":"hello"}],"stream":true}'

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# --- prerequisites ---------------------------------------------------------------------------
command -v wrk >/dev/null || die "wrk is not installed: apt-get install -y wrk"
command -v curl >/dev/null || die "curl is not installed: apt-get install -y curl"
command -v cargo >/dev/null || [[ $BUILD == 0 ]] || die "cargo is not on PATH"
NGINX_BIN=
if [[ $USE_NGINX != 0 ]]; then
  NGINX_BIN=$(command -v nginx || true)
  [[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
  [[ -n $NGINX_BIN ]] || log "nginx not found: skipping the nginx reference (apt-get install -y nginx-light)"
fi
CLK_TCK=$(getconf CLK_TCK)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$ROOT/bench/results/$STAMP
mkdir -p "$RUN/config" "$RUN/raw"
AUDIT_LOG=${BENCH_AUDIT_LOG:-$RUN/audit.log}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Share of the CPU busy over one second before anything starts: other work on the machine
# (the load average lags by minutes and also counts a benchmark that just ended).
cpu_busy_pct() {
  local a b
  read -ra a < <(head -n1 /proc/stat)
  sleep 1
  read -ra b < <(head -n1 /proc/stat)
  # cpu user nice system idle iowait irq softirq steal
  local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
  local idle=$(((b[4] + b[5]) - (a[4] + a[5])))
  echo $((busy * 100 / (busy + idle > 0 ? busy + idle : 1)))
}
BUSY_START=$(cpu_busy_pct)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=
# Changes to the harness itself do not change what is measured.
if [[ $COMMIT != unknown ]] && ! git -C "$ROOT" diff --quiet HEAD -- . ':(exclude)bench' 2>/dev/null; then
  DIRTY=" (with uncommitted changes outside bench/)"
fi

# --- processes and cleanup -------------------------------------------------------------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

alive() { kill -0 "$1" 2>/dev/null; }
calc() { awk "BEGIN {$1}"; }

# free_port VAR: sets VAR to a loopback port nothing listens on, distinct from earlier picks.
USED_PORTS=
free_port() {
  local p _
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 30000))
    if [[ " $USED_PORTS " != *" $p "* ]] && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS $p"
      printf -v "$1" %s "$p"
      return 0
    fi
  done
  die "no free loopback port found"
}

# wait_http URL PID NAME: until URL answers 2xx, while PID lives.
wait_http() {
  local _
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    alive "$2" || die "$3 exited during start-up (see $RUN/$3.log)"
    sleep 0.05
  done
  die "$3 not ready at $1 after 10 s (see $RUN/$3.log)"
}

# cpu_ticks PID...: utime+stime of the processes, in clock ticks.
cpu_ticks() {
  local pid stat rest total=0
  for pid in "$@"; do
    [[ -r /proc/$pid/stat ]] || die "process $pid has exited"
    stat=$(<"/proc/$pid/stat")
    rest=${stat##*) }
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# --- build ------------------------------------------------------------------------------------
if [[ $BUILD != 0 ]]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release -p llmgate-dataplane -p llmgate-tests --bins)
fi
for b in llmgate-dataplane fake-upstream stream-bench; do
  [[ -x $BIN/$b ]] || die "$BIN/$b is missing (run without BENCH_BUILD=0)"
done

# --- fake upstream ------------------------------------------------------------------------------
"$BIN/fake-upstream" --listen 127.0.0.1:0 --api-key "$UPSTREAM_KEY" >"$RUN/fake.out" 2>"$RUN/fake.log" &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
FAKE_ADDR=
for _ in $(seq 1 200); do
  FAKE_ADDR=$(awk '/^listening / {print $2; exit}' "$RUN/fake.out")
  [[ -n $FAKE_ADDR ]] && break
  alive "$FAKE_PID" || die "fake-upstream exited during start-up (see $RUN/fake.log)"
  sleep 0.05
done
[[ -n $FAKE_ADDR ]] || die "fake-upstream did not report its address"
log "fake upstream on $FAKE_ADDR"

# --- llmgate ------------------------------------------------------------------------------------
KEY_SHA=$(printf %s "$GATEWAY_KEY" | sha256sum | cut -d' ' -f1)
cat >"$RUN/config/main.yaml" <<EOF
apiVersion: llmgate.dev/v1alpha1
kind: ApiKey
metadata: {name: bench}
spec: {serviceAccount: bench, team: bench, sha256: "$KEY_SHA"}
---
apiVersion: llmgate.dev/v1alpha1
kind: AccessPolicy
metadata: {name: bench}
spec:
  rules:
    - subjects: [{team: bench}]
      models: ["*"]
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: fast}
spec:
  model: fast
  provider: openai-compatible
  upstreamModel: fast
  replicas: [{url: "http://$FAKE_ADDR/v1"}]
  credentials: {apiKey: {secretRef: {name: upstream, key: api-key}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: stream20}
spec:
  model: stream20
  provider: openai-compatible
  upstreamModel: "chunks:20"
  replicas: [{url: "http://$FAKE_ADDR/v1"}]
  credentials: {apiKey: {secretRef: {name: upstream, key: api-key}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: stream20-anthropic}
spec:
  model: stream20-anthropic
  provider: anthropic
  upstreamModel: "chunks:20"
  replicas: [{url: "http://$FAKE_ADDR"}]
  credentials: {apiKey: {secretRef: {name: upstream, key: api-key}}}
---
apiVersion: llmgate.dev/v1alpha1
kind: ModelEndpoint
metadata: {name: stream20-azure}
spec:
  model: stream20-azure
  provider: azure-openai
  upstreamModel: chunks-20
  azure: {apiVersion: "2024-10-21"}
  replicas: [{url: "http://$FAKE_ADDR"}]
  credentials: {apiKey: {secretRef: {name: upstream, key: api-key}}}
EOF
free_port GW_PORT
free_port GW_ADMIN_PORT
UPSTREAM_API_KEY=$UPSTREAM_KEY LLMGATE_LOG=${LLMGATE_LOG:-warn} "$BIN/llmgate-dataplane" \
  --config-dir "$RUN/config" --listen "127.0.0.1:$GW_PORT" \
  --admin-listen "127.0.0.1:$GW_ADMIN_PORT" --audit-log "$AUDIT_LOG" >"$RUN/llmgate.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_ADMIN_PORT/readyz" "$GW_PID" llmgate
GW_RSS_IDLE=$(rss_kib "$GW_PID")
log "llmgate on 127.0.0.1:$GW_PORT (pid $GW_PID)"

# --- nginx (reference) --------------------------------------------------------------------------
NGINX_PID=
if [[ -n $NGINX_BIN ]]; then
  NGX=$RUN/nginx
  mkdir -p "$NGX/logs" "$NGX/tmp"
  free_port NGX_PORT
  NGX_USER=
  [[ $(id -u) == 0 ]] && NGX_USER="user root;"
  cat >"$NGX/nginx.conf" <<EOF
$NGX_USER
worker_processes auto;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp/client;
  proxy_temp_path $NGX/tmp/proxy;
  fastcgi_temp_path $NGX/tmp/fastcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi;
  scgi_temp_path $NGX/tmp/scgi;
  upstream fake {
    server $FAKE_ADDR;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$NGX_PORT;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
  "$NGINX_BIN" -p "$NGX" -e "$NGX/logs/error.log" -c "$NGX/nginx.conf" -g 'daemon off;' \
    >"$RUN/nginx.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  # Ready once it accepts connections; the sanity requests below check the proxying.
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NGX_PORT") 2>/dev/null && break
    alive "$NGINX_PID" || die "nginx exited during start-up (see $RUN/nginx.log, $NGX/logs/error.log)"
    sleep 0.05
  done
  (exec 3<>"/dev/tcp/127.0.0.1/$NGX_PORT") 2>/dev/null || die "nginx not listening on $NGX_PORT after 10 s"
  log "nginx on 127.0.0.1:$NGX_PORT (pid $NGINX_PID)"
fi

# Every process of a target whose CPU time counts: llmgate, or nginx's master and workers.
proxy_pids() {
  case $1 in
    llmgate | llmgate-anthropic | llmgate-azure) echo "$GW_PID" ;;
    nginx) if [[ -n $NGINX_PID ]]; then echo "$NGINX_PID" $(pgrep -P "$NGINX_PID" || true); fi ;;
    *) ;;
  esac
}

TARGETS=(direct llmgate)
[[ -n $NGINX_PID ]] && TARGETS+=(nginx)
declare -A URL KEY SBODY
URL[direct]=http://$FAKE_ADDR
URL[llmgate]=http://127.0.0.1:$GW_PORT
KEY[direct]=$UPSTREAM_KEY
KEY[llmgate]=$GATEWAY_KEY
SBODY[direct]=$STREAM_BODY_DIRECT
SBODY[llmgate]=$STREAM_BODY_GATEWAY
if [[ -n $NGINX_PID ]]; then
  URL[nginx]=http://127.0.0.1:$NGX_PORT
  KEY[nginx]=$UPSTREAM_KEY
  SBODY[nginx]=$STREAM_BODY_DIRECT
fi
# Streams only: llmgate translating to Anthropic's Messages API, and to Azure's URLs.
STREAM_TARGETS=("${TARGETS[@]}" llmgate-anthropic llmgate-azure)
for t in llmgate-anthropic llmgate-azure; do
  URL[$t]=${URL[llmgate]}
  KEY[$t]=$GATEWAY_KEY
done
SBODY[llmgate-anthropic]=$STREAM_BODY_ANTHROPIC
SBODY[llmgate-azure]=$STREAM_BODY_AZURE

# --- sanity: one request of each kind through each target must succeed -------------------------
for t in "${STREAM_TARGETS[@]}"; do
  bodies=("${SBODY[$t]}")
  [[ $t == llmgate-* ]] || bodies+=("$CHAT_BODY")
  for body in "${bodies[@]}"; do
    code=$(curl -sS -o "$RUN/raw/sanity-$t.out" -w '%{http_code}' --max-time 10 \
      -H "Authorization: Bearer ${KEY[$t]}" -H 'Content-Type: application/json' \
      -d "$body" "${URL[$t]}/v1/chat/completions") || code=000
    [[ $code == 200 ]] || die "sanity request to $t answered $code: $(head -c 500 "$RUN/raw/sanity-$t.out")"
  done
done
log "sanity requests passed; load average now $(cut -d' ' -f1-3 /proc/loadavg)"

# --- measurements -------------------------------------------------------------------------------
# CPU used by other processes during the measurements: the machine's user+system time minus
# that of the processes of this run (the servers, and wrk, stream-bench and the other
# foreground children of this shell, which `times` counts once they have exited).
machine_ticks() { # user+nice+system ticks of all CPUs, then all ticks
  local a
  read -ra a < <(head -n1 /proc/stat)
  echo "$((a[1] + a[2] + a[3])) $((a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7] + a[8]))"
}
children_ticks() {
  times >"$RUN/.times" # a builtin in this shell: $(times) would report a subshell
  awk -v hz="$CLK_TCK" 'END {t = 0; for (i = 1; i <= 2; i++) {split($i, p, /[ms]/); t += p[1] * 60 + p[2]} printf "%d", t * hz}' "$RUN/.times"
}
own_ticks() {
  # shellcheck disable=SC2046
  echo $(($(cpu_ticks "$FAKE_PID" "$GW_PID" $(proxy_pids nginx)) + $(children_ticks)))
}
read -r MACHINE_BUSY_A MACHINE_ALL_A < <(machine_ticks)
OWN_A=$(own_ticks)

FAILED=()
declare -A RPS P50 P99 CPU SRPS TTFB50 TTFB99 TOT50 TOT99 SCPU

run_wrk() { # target conns seconds outfile
  local threads=$((WRK_THREADS < $2 ? WRK_THREADS : $2)) # wrk needs connections >= threads
  BENCH_KEY=${KEY[$1]} BENCH_BODY=$CHAT_BODY wrk -t"$threads" -c"$2" -d"${3}s" --latency \
    -s "$ROOT/bench/chat.lua" "${URL[$1]}/v1/chat/completions" >"$4" 2>&1
}

field() { # key file: value of key=value on the BENCH_RESULT line
  awk -v k="$1" '/^BENCH_RESULT / {for (i = 2; i <= NF; i++) {split($i, kv, "="); if (kv[1] == k) print kv[2]}}' "$2"
}

jfield() { # key file: numeric value of "key": in a one-line JSON object
  grep -o "\"$1\":[0-9.]*" "$2" | head -n1 | cut -d: -f2
}

# cpu_per_req TICKS REQUESTS: milliseconds of CPU per request.
cpu_per_req() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n > 0) printf "%.3f", t * 1000 / hz / n; else print "-"}'; }

# The servers share the terminal's process group, so Ctrl-C stops them as well as the running
# wrk; wrk then exits normally and the shell carries on, so every run first checks them.
require_alive() {
  local pid
  for pid in "$FAKE_PID" "$GW_PID" ${NGINX_PID:+"$NGINX_PID"}; do
    alive "$pid" || die "a server process ($pid) has exited (interrupted?); logs in $RUN"
  done
}

if [[ $WARMUP != 0 ]]; then
  for t in "${TARGETS[@]}"; do
    require_alive
    log "warm-up $t (${WARMUP} s)"
    run_wrk "$t" 16 "$WARMUP" "$RUN/raw/warmup-$t.txt" || die "wrk failed on $t warm-up: $(cat "$RUN/raw/warmup-$t.txt")"
  done
fi

for c in $CONNECTIONS; do
  for t in "${TARGETS[@]}"; do
    require_alive
    log "wrk $t, $c connections, ${DURATION} s"
    out=$RUN/raw/wrk-$t-c$c.txt
    pids=$(proxy_pids "$t")
    # shellcheck disable=SC2086
    [[ -n $pids ]] && before=$(cpu_ticks $pids)
    run_wrk "$t" "$c" "$DURATION" "$out" || { FAILED+=("wrk exited non-zero on $t c=$c: $(tail -n1 "$out")"); continue; }
    # shellcheck disable=SC2086
    [[ -n $pids ]] && after=$(cpu_ticks $pids)
    grep -q '^BENCH_RESULT ' "$out" || { FAILED+=("no result from wrk on $t c=$c"); continue; }
    n=$(field requests "$out")
    RPS[$t,$c]=$(field rps "$out")
    P50[$t,$c]=$(field p50_us "$out")
    P99[$t,$c]=$(field p99_us "$out")
    CPU[$t,$c]=-
    [[ -n $pids ]] && CPU[$t,$c]=$(cpu_per_req $((after - before)) "$n")
    errs=$(($(field err_connect "$out") + $(field err_read "$out") + $(field err_write "$out") + $(field err_timeout "$out")))
    if grep -q 'Non-2xx' "$out" || [[ $(field err_status "$out") != 0 ]]; then
      FAILED+=("$t c=$c: $(grep 'Non-2xx' "$out" | sed 's/^ *//') of $n")
    fi
    ((errs == 0)) || FAILED+=("$t c=$c: $(grep 'Socket errors' "$out" | sed 's/^ *//')")
    [[ $n -gt 0 ]] || FAILED+=("$t c=$c: no request completed")
  done
done

for c in $STREAM_CONNECTIONS; do
  for t in "${STREAM_TARGETS[@]}"; do
    require_alive
    log "stream-bench $t, $c connections, ${DURATION} s"
    out=$RUN/raw/stream-$t-c$c.json
    pids=$(proxy_pids "$t")
    # shellcheck disable=SC2086
    [[ -n $pids ]] && before=$(cpu_ticks $pids)
    if ! "$BIN/stream-bench" --url "${URL[$t]}/v1/chat/completions" --key "${KEY[$t]}" \
      --body "${SBODY[$t]}" -c "$c" -d "$DURATION" --warmup 1 >"$out" 2>"$RUN/raw/stream-$t-c$c.err"; then
      why=$(grep -o '"first_error":"[^"]*"' "$out" || head -c 300 "$RUN/raw/stream-$t-c$c.err")
      FAILED+=("stream $t c=$c: $(jfield errors "$out") errors of $(jfield requests "$out") requests, $why")
    fi
    # shellcheck disable=SC2086
    [[ -n $pids ]] && after=$(cpu_ticks $pids)
    grep -q '"rps"' "$out" || continue
    SRPS[$t,$c]=$(jfield rps "$out")
    TTFB50[$t,$c]=$(jfield ttfb_p50_ms "$out")
    TTFB99[$t,$c]=$(jfield ttfb_p99_ms "$out")
    TOT50[$t,$c]=$(jfield total_p50_ms "$out")
    TOT99[$t,$c]=$(jfield total_p99_ms "$out")
    SCPU[$t,$c]=-
    [[ -n $pids ]] && SCPU[$t,$c]=$(cpu_per_req $((after - before)) "$(jfield requests "$out")")
  done
done

require_alive
GW_RSS_AFTER=$(rss_kib "$GW_PID")
AUDIT_DROPPED=$(curl -fsS --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" 2>/dev/null |
  awk '$1 ~ /audit_records_dropped_total$/ {print $2; exit}' || true)
NGX_RSS=
if [[ -n $NGINX_PID ]]; then
  NGX_RSS=0
  for p in $(proxy_pids nginx); do NGX_RSS=$((NGX_RSS + $(rss_kib "$p"))); done
fi
read -r MACHINE_BUSY_B MACHINE_ALL_B < <(machine_ticks)
OWN_B=$(own_ticks)
OTHER_PCT=$(calc "o = ($MACHINE_BUSY_B - $MACHINE_BUSY_A) - ($OWN_B - $OWN_A); a = $MACHINE_ALL_B - $MACHINE_ALL_A; printf \"%.0f\", (a > 0 && o > 0) ? 100 * o / a : 0")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

AUDIT_LOG_DESC="\`$AUDIT_LOG\`"
if [[ $AUDIT_LOG == "$RUN/audit.log" ]]; then
  AUDIT_LOG_DESC="a file in the run directory ($(wc -l <"$AUDIT_LOG") records)"
  [[ ${BENCH_KEEP_AUDIT:-0} == 1 ]] || rm -f "$AUDIT_LOG"
fi

# --- report -------------------------------------------------------------------------------------
ms() { [[ -n ${1:-} ]] && calc "printf \"%.3f\", $1 / 1000" || echo -; }
NPROC=$(nproc)
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{print $2}' || true)
BUSY=$(calc "print (($OTHER_PCT > 10 || $BUSY_START > 25) ? 1 : 0)")

{
  echo "# llmgate benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- commit: \`$COMMIT\`$DIRTY"
  echo "- machine: $NPROC cores${CPU_MODEL:+ ($CPU_MODEL)}, $(uname -sr); load average at start: $LOAD_START, at end: $LOAD_END; CPU busy in the second before the run: ${BUSY_START} %; CPU used by other processes during the measurements: ${OTHER_PCT} % of the machine"
  if [[ $BUSY == 1 ]]; then
    echo "- **note: other work was running on the machine (${BUSY_START} % of the CPU busy before the run, ${OTHER_PCT} % used by other processes during it): it competed for the CPU, so the numbers are noisy and pessimistic.**"
  fi
  echo "- wrk ${WRK_VERSION:-?} -t$WRK_THREADS, ${DURATION} s per run after a ${WARMUP} s warm-up per target; load generator, proxies and fake upstream share the same cores"
  echo "- llmgate audit log: $AUDIT_LOG_DESC; records dropped because the sink could not keep up: ${AUDIT_DROPPED:-unknown}"
  echo "- llmgate RSS: $((GW_RSS_IDLE / 1024)) MiB idle, $((GW_RSS_AFTER / 1024)) MiB after the runs${NGX_RSS:+; nginx (master + workers): $((NGX_RSS / 1024)) MiB}"
  echo
  echo "## Non-streaming POST /v1/chat/completions"
  echo
  echo "| target | conns | req/s | × direct | p50 ms | p99 ms | added p50 µs | proxy CPU ms/req |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for c in $CONNECTIONS; do
    for t in "${TARGETS[@]}"; do
      [[ -n ${RPS[$t,$c]:-} ]] || { echo "| $t | $c | failed | | | | | |"; continue; }
      ratio=-
      added=-
      if [[ -n ${RPS[direct,$c]:-} ]]; then
        ratio=$(calc "printf \"%.2f\", ${RPS[$t,$c]} / ${RPS[direct,$c]}")
        [[ $t == direct ]] || added=$(calc "printf \"%+d\", ${P50[$t,$c]} - ${P50[direct,$c]}")
      fi
      echo "| $t | $c | $(calc "printf \"%.0f\", ${RPS[$t,$c]}") | $ratio | $(ms "${P50[$t,$c]}") | $(ms "${P99[$t,$c]}") | $added | ${CPU[$t,$c]} |"
    done
  done
  echo
  echo "## Streaming chat completions (20 content chunks)"
  echo
  echo "TTFB is the time to the first body byte (the first SSE event); total is the time to the end of the stream."
  echo
  echo "| target | conns | req/s | × direct | TTFB p50 ms | TTFB p99 ms | added TTFB p50 ms | total p50 ms | total p99 ms | proxy CPU ms/req |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for c in $STREAM_CONNECTIONS; do
    for t in "${STREAM_TARGETS[@]}"; do
      [[ -n ${SRPS[$t,$c]:-} ]] || { echo "| $t | $c | failed | | | | | | | |"; continue; }
      ratio=-
      added=-
      if [[ -n ${SRPS[direct,$c]:-} ]]; then
        ratio=$(calc "printf \"%.2f\", ${SRPS[$t,$c]} / ${SRPS[direct,$c]}")
        [[ $t == direct ]] || added=$(calc "printf \"%+.3f\", ${TTFB50[$t,$c]} - ${TTFB50[direct,$c]}")
      fi
      echo "| $t | $c | $(calc "printf \"%.0f\", ${SRPS[$t,$c]}") | $ratio | ${TTFB50[$t,$c]} | ${TTFB99[$t,$c]} | $added | ${TOT50[$t,$c]} | ${TOT99[$t,$c]} | ${SCPU[$t,$c]} |"
    done
  done
  echo
  echo "## Targets"
  echo
  verdict() { calc "print (($1) ? \"met\" : \"**missed**\")"; }
  if [[ -n ${RPS[llmgate,64]:-} && -n ${RPS[direct,64]:-} ]]; then
    r=$(calc "printf \"%.2f\", ${RPS[llmgate,64]} / ${RPS[direct,64]}")
    echo "- throughput at 64 connections ≥ 0.5× direct: ${r}× — $(verdict "$r >= 0.5")"
  else
    echo "- throughput at 64 connections ≥ 0.5× direct: not measured"
  fi
  if [[ -n ${P50[llmgate,16]:-} && -n ${P50[direct,16]:-} ]]; then
    a=$((${P50[llmgate,16]} - ${P50[direct,16]}))
    echo "- added p50 latency at 16 connections ≤ 100 µs: ${a} µs — $(verdict "$a <= 100")"
  else
    echo "- added p50 latency at 16 connections ≤ 100 µs: not measured"
  fi
  if [[ -n ${TTFB50[llmgate,16]:-} && -n ${TTFB50[direct,16]:-} ]]; then
    a=$(calc "printf \"%.3f\", ${TTFB50[llmgate,16]} - ${TTFB50[direct,16]}")
    echo "- added time to first byte (p50) on streams at 16 connections ≤ 0.2 ms: ${a} ms — $(verdict "$a <= 0.2")"
  else
    echo "- added time to first byte (p50) on streams at 16 connections ≤ 0.2 ms: not measured"
  fi
  if ((${#FAILED[@]})); then
    echo
    echo "## Failures"
    echo
    for f in "${FAILED[@]}"; do echo "- $f"; done
  fi
} >"$RUN/table.md"

cat "$RUN/table.md"
log "results in $RUN"
if ((${#FAILED[@]})); then
  log "FAILED: some requests did not succeed (see the Failures section and $RUN/raw)"
  exit 1
fi
