#!/usr/bin/env bash
# bench_serve.sh: bin/serve under load on the CPU default model, loopback
# only. Two servers of the same checkpoint, up together and measured in
# turn: dynamic batching (--max-batch 64 --max-wait 50ms) and one request
# at a time (--max-batch 1: a batch is one request's image), under 1, 8 and
# 64 concurrent clients for SECONDS_EACH (60) seconds each, ROUNDS (1)
# times, one image a request (scripts/serveload); then 10,000 requests at
# 64 clients against the batching server, its resident memory read every
# 1,000; then how far merged images are from their jobs'. A JSON line per
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
make build >/dev/null # bin/serve as the source says
go build -o "$out/serveload" ./scripts/serveload
serve() { # serve NAME PORT FLAGS...: start a server, wait until it is ready; its pid in pids[NAME]
  local name=$1 port=$2
  shift 2
  bin/serve --checkpoint "$ck" --addr 127.0.0.1:$port --queue 4096 --max-n 64 "$@" 2>"$out/$name.log" &
  pids[$name]=$!
  for _ in $(seq 600); do
    curl -sf http://127.0.0.1:$port/readyz >/dev/null && return 0
    sleep 0.2
  done
  echo "bench_serve: $name did not become ready: $(cat "$out/$name.log")" >&2
  exit 1
}
stop() {
  kill -TERM "${pids[$1]}"
  wait "${pids[$1]}"
}
declare -A pids port=([batching]=18080 [single]=18081)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT # no server outlives a failed run
# Both servers are up together (one idles while the other is measured) and
# the runs alternate between them, client count by client count: these
# machines drift by 1.5x within minutes, and a ratio of two runs an hour
# apart would measure the drift.
serve batching ${port[batching]} --max-batch 64 --max-wait 50ms
serve single ${port[single]} --max-batch 1 --max-wait 0s
for mode in batching single; do
  "$out/serveload" -url http://127.0.0.1:${port[$mode]} -clients 8 -for 10s -label warm >/dev/null
done
for round in $(seq "${ROUNDS:-1}"); do
  for c in 1 8 64; do
    for mode in batching single; do
      "$out/serveload" -url http://127.0.0.1:${port[$mode]} -clients $c -for "${secs}s" -label "$mode" | tee -a "$out/load.jsonl"
    done
  done
done
stop single
"$out/serveload" -url http://127.0.0.1:${port[batching]} -clients 64 -for 30m -requests "${REQUESTS:-10000}" -label "batching-10k" | tee -a "$out/load.jsonl"
stop batching
# How far merged images are from their jobs': 16 requests of one image
# each, merged into one batch (--max-wait 2s), against bin/sample making
# each image alone (--batch 1), in fp32 and in bf16.
serve merged ${port[batching]} --max-batch 64 --max-wait 2s
for p in fp32 bf16; do
  for s in $(seq 16); do
    bin/sample --checkpoint "$ck" --n 1 --seed "$s" --labels $((s % 10)) --batch 1 --precision $p --out "$out/alone-$p-$s" >/dev/null 2>&1
  done
done
/usr/bin/python3 - "${port[batching]}" "$out" <<'EOF2' | tee "$out/merged.txt"
import base64, glob, json, sys, threading, urllib.request, zlib
port, out = sys.argv[1], sys.argv[2]
def pixels(png):  # 8-bit grey, non-interlaced: the filtered rows of the IDAT chunks
    data, i = b"", 8
    w = int.from_bytes(png[16:20], "big")
    while i < len(png):
        n = int.from_bytes(png[i:i+4], "big"); kind = png[i+4:i+8]
        if kind == b"IDAT": data += png[i+8:i+8+n]
        i += 12 + n
    raw, rows, prev = zlib.decompress(data), [], bytearray(w)
    for r in range(len(raw) // (w + 1)):
        f, line = raw[r*(w+1)], bytearray(raw[r*(w+1)+1:(r+1)*(w+1)])
        for x in range(w):
            a = line[x-1] if x else 0; b = prev[x]; c = prev[x-1] if x else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line); prev = line
    return b"".join(rows)
for prec in ("fp32", "bf16"):
    got = {}
    def ask(s):
        body = json.dumps({"n": 1, "seed": s, "labels": str(s % 10), "precision": prec}).encode()
        r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/images", data=body, headers={"Content-Type": "application/json"}), timeout=120)
        got[s] = base64.b64decode(json.load(r)["images"][0]["png"])
    ts = [threading.Thread(target=ask, args=(s,)) for s in range(1, 17)]
    [t.start() for t in ts]; [t.join() for t in ts]
    worst, same = 0, 0
    for s, png in got.items():
        alone = open(glob.glob(f"{out}/alone-{prec}-{s}/000000_label*.png")[0], "rb").read()
        same += png == alone
        worst = max(worst, max(abs(a - b) for a, b in zip(pixels(png), pixels(alone))))
    print(f"{prec}: 16 requests merged into one batch against each made alone: {same} of 16 byte-identical, at most {worst} grey levels apart")
EOF2
stop merged
grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /CPU: /'
/usr/bin/python3 - "$out/load.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# Each batching run is compared with the one-at-a-time run right after it
# (same round, same client count): the machine drifts between rounds.
single = {}
for i, r in enumerate(rows):
    if r["label"] == "single":
        single[id(rows[i - 1]) if i else None] = r
        single[id(r)] = r
print("| server | clients | images/s | vs one at a time | mean batch | p50 ms | p99 ms | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
last64 = [r for r in rows if r["label"] == "single" and r["clients"] == 64][-1:]
for r in rows:
    base = single.get(id(r)) or (last64[0] if r["label"] == "batching-10k" and last64 else None)
    ratio = f'{r["images_per_s"] / base["images_per_s"]:.1f}x' if base else "-"
    print(f'| {r["label"]} | {r["clients"]} | {r["images_per_s"]:.1f} | {ratio} | {r.get("mean_batch", 0):.1f} | {r["p50_ms"]:.0f} | {r["p99_ms"]:.0f} | {sum(r["errors"].values()) or 0} |')
for r in rows:
    if r["label"] == "batching-10k":
        print(f'\n{r["requests"]} requests at 64 clients: resident memory (MiB) ' + ", ".join(f"{v:.0f}" for v in r["rss_mib"]))
        print('the same readings of it right after the last heap trim (MiB) ' + ", ".join(f"{v:.0f}" for v in r.get("rss_trimmed_mib", [])))
        print('the same readings of the Go heap in use (MiB) ' + ", ".join(f"{v:.0f}" for v in r.get("go_heap_mib", [])))
EOF
