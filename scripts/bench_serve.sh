#!/usr/bin/env bash
# bench_serve.sh: bin/serve under load on the CPU default model, loopback
# only. Two servers of the same checkpoint, one after the other: dynamic
# batching (--max-batch 64 --max-wait 20ms) and one request at a time
# (--max-batch 1: a batch is one request's image), each under 1, 8 and 64
# concurrent clients for SECONDS (60) each, one image a request
# (scripts/serveload); then 10,000 requests at 64 clients against the
# batching server, its resident memory read every 1,000. A JSON line per
# run in runs/bench_serve/load.jsonl and a Markdown table on stdout.
#
#   scripts/bench_serve.sh [CHECKPOINT]   (default runs/mnist_cond_cpu;
#                                          the README's first command makes it)
# Run it alone on the machine: the server's two cores are the measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
ck=${1:-runs/mnist_cond_cpu}
secs=${SECONDS_EACH:-60}
out=runs/bench_serve
mkdir -p "$out"
: >"$out/load.jsonl"
[[ -e $ck ]] || { echo "bench_serve: no $ck: train it first (bin/train -config configs/mnist_cond_cpu.yaml)" >&2; exit 1; }
go build -o "$out/serveload" ./scripts/serveload
port=18080
serve() { # serve NAME FLAGS...: start a server, wait until it is ready
  local name=$1
  shift
  bin/serve --checkpoint "$ck" --addr 127.0.0.1:$port --queue 4096 --max-n 64 "$@" 2>"$out/$name.log" &
  pid=$!
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:$port/readyz >/dev/null && return 0
    sleep 0.2
  done
  echo "bench_serve: $name did not become ready: $(cat "$out/$name.log")" >&2
  exit 1
}
stop() {
  kill -TERM "$pid"
  wait "$pid"
}
for mode in batching single; do
  if [[ $mode == batching ]]; then serve $mode --max-batch 64 --max-wait 20ms; else serve $mode --max-batch 1 --max-wait 0s; fi
  "$out/serveload" -url http://127.0.0.1:$port -clients 8 -for 10s -label warm >/dev/null
  for c in 1 8 64; do
    "$out/serveload" -url http://127.0.0.1:$port -clients $c -for "${secs}s" -label "$mode" | tee -a "$out/load.jsonl"
  done
  if [[ $mode == batching ]]; then
    "$out/serveload" -url http://127.0.0.1:$port -clients 64 -for 30m -requests "${REQUESTS:-10000}" -label "batching-10k" | tee -a "$out/load.jsonl"
  fi
  stop
done
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /CPU: /'
/usr/bin/python3 - "$out/load.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
single = {r["clients"]: r for r in rows if r["label"] == "single"}
print("| server | clients | images/s | vs one at a time | p50 ms | p99 ms | errors |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    base = single.get(r["clients"])
    ratio = f'{r["images_per_s"] / base["images_per_s"]:.1f}x' if base and r["label"] != "single" else "1.0x" if base else "-"
    print(f'| {r["label"]} | {r["clients"]} | {r["images_per_s"]:.1f} | {ratio} | {r["p50_ms"]:.0f} | {r["p99_ms"]:.0f} | {sum(r["errors"].values()) or 0} |')
for r in rows:
    if r["label"] == "batching-10k":
        print(f'\n{r["requests"]} requests at 64 clients: resident memory (MiB) ' + ", ".join(f"{v:.0f}" for v in r["rss_mib"]))
EOF
