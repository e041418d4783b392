-- wrk script of scripts/serve_load.sh: POSTs one JSON body (SERVE_BODY) and prints one summary line:
-- requests/s, latency p50/p90/p99 in ms, and the failed requests (socket errors and non-2xx answers).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("SERVE_BODY") or '{"text": "the c_t sat on the m_t"}'

function done(summary, latency, requests)
  local e = summary.errors
  local failed = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format("requests/s %.1f  p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  requests %d  failed %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, summary.requests, failed))
end
