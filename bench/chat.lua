-- wrk script for bench/run.sh: POST /v1/chat/completions with a fixed body.
--   BENCH_KEY   API key sent as `Authorization: Bearer KEY` (required)
--   BENCH_BODY  request body (default: a one-message chat for model "fast")
-- At the end it prints one machine-readable line, `BENCH_RESULT key=value ...`, with latencies
-- in microseconds; run.sh parses that line rather than wrk's human-readable report.

local key = os.getenv("BENCH_KEY")
if key == nil or key == "" then
  error("BENCH_KEY is not set")
end

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
  or '{"model":"fast","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
