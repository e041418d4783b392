#!/usr/bin/env bash
# Load test of `linformer serve` (docs/serve.md): a server on loopback, wrk at 1, 8 and 64 concurrent
# connections, DURATION each, printing requests/s, latency p50/p90/p99 and the failed requests, then
# the mean batch size from /metrics. Not part of the test suite (wrk is Debian's `wrk`).
# Usage: bash scripts/serve_load.sh [CHECKPOINT]
#   without CHECKPOINT a tiny masked LM is trained first (README.md as text, a few seconds).
# Environment: DURATION (default 10s), CONNECTIONS (default "1 8 64"), SERVE_ARGS (extra flags for
#   serve, e.g. "--workers 2 --max-batch 32"), SERVE_BODY (the JSON body, POSTed to /v1/predict
#   unless SERVE_PATH names another route), LINFORMER_NUM_THREADS (the server's threads).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=build/linformer
duration=${DURATION:-10s}
connections=${CONNECTIONS:-1 8 64}
path=${SERVE_PATH:-/v1/predict}
[ -x "$bin" ] || { echo "serve_load: build first (bash scripts/build.sh)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "serve_load: wrk not found (apt-get install wrk, or scripts/setup.sh)" >&2; exit 1; }
work=$(mktemp -d -t linformer-serve-load.XXXXXX)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

checkpoint=${1:-}
if [ -z "$checkpoint" ]; then
  echo "serve_load: training a tiny masked LM (d_model 32, 2 layers, max_len 64, 30 steps) on README.md"
  "$bin" train --data README.md --out "$work/run" --d-model 32 --layers 2 --heads 2 --max-len 64 --seq-len 64 \
    --steps 30 --warmup 3 --batch-size 8 --eval-batches 1 --valid-fraction 0.1 --test-fraction 0.1 \
    >"$work/train.log" 2>&1 || { cat "$work/train.log" >&2; exit 1; }
  checkpoint="$work/run"
fi

# shellcheck disable=SC2086  # SERVE_ARGS is a list of flags
"$bin" serve --checkpoint "$checkpoint" --port 0 ${SERVE_ARGS:-} >"$work/serve.out" 2>"$work/serve.err" &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.]*:[0-9]*' "$work/serve.out" || true)
[ -n "$url" ] || { echo "serve_load: the server did not start:" >&2; cat "$work/serve.err" >&2; exit 1; }
echo "serve_load: $(head -1 "$work/serve.out")"
echo "serve_load: POST $path, body ${SERVE_BODY:-the default of scripts/serve_load.lua}, $duration per row"
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "serve_load: $cpu, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $connections; do
  threads=$(( c < 2 ? c : 2 ))
  printf 'connections %-3s  ' "$c"
  wrk -t "$threads" -c "$c" -d "$duration" --timeout 30s -s scripts/serve_load.lua "$url$path" | tail -1
done
metrics=$(curl -sf "$url/metrics" || wget -qO- "$url/metrics" || true)
echo "$metrics" | awk '/^linformer_batch_size_(sum|count)/ { split($1, n, "{"); v[n[1]] = $2 }
  END { if (v["linformer_batch_size_count"] > 0) printf "serve_load: %d model calls, %.2f texts per call on average\n",
        v["linformer_batch_size_count"], v["linformer_batch_size_sum"] / v["linformer_batch_size_count"] }'
echo "$metrics" | grep '^linformer_requests_total' | sed 's/^/serve_load: /'
kill -TERM "$server"
status=0
wait "$server" || status=$?
server=
echo "serve_load: the server exited with status $status after SIGTERM"
