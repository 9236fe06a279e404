#!/usr/bin/env bash
# Runs silver-p2p's end-to-end scenarios and the rust-libp2p anchor's matching ones,
# interleaved, ROUNDS times (default 3), then prints the median headline of each side.
#
#   benches/compare.sh                       # from the repository root
#   ANCHOR_DIR=../shared/anchors/libp2p-bench ROUNDS=3 OUT=/tmp/compare.jsonl benches/compare.sh
#   CIPHERS="auto chacha20-poly1305" benches/compare.sh   # our suite once per --cipher
#   PINNING="off on" benches/compare.sh      # both sides as scheduled, then with pinned workers
#
# PINNING "on" runs both implementations under benches/pin_workers.py, which gives each
# tokio worker thread a CPU of its own (see that script for why); their lines then carry
# "pinned": true. The default, "off", leaves the scheduling to the kernel.
#
# Builds both in release first (the anchor is a standalone cargo project: about 3 minutes
# the first time). Every line of OUT is one scenario run as JSON, with a "round" field. Run
# it on an idle machine: each line's host_cpu_during.other_pct says how contaminated it is.
set -euo pipefail
cd "$(dirname "$0")/.."
anchor_dir="${ANCHOR_DIR:-../shared/anchors/libp2p-bench}"
rounds="${ROUNDS:-3}"
ciphers="${CIPHERS:-auto}"
pinning="${PINNING:-off}"
out="${OUT:-target/compare.jsonl}"
cargo build --release -q -p silver-p2p-bench
(cd "$anchor_dir" && cargo build --release -q)
ours=target/release/silver-p2p-bench
anchor="$anchor_dir/target/release/libp2p-bench"
anchor_scenarios=(
  "connect --n 200 --warmup 10"
  "rtt --n 10000 --warmup 500 --size 64"
  "rtt-stream --n 10000 --warmup 500 --size 64"
  "throughput --bytes 1073741824 --write-size 65536 --read-size 65536 --repeats 3"
  "msgrate --size 256 --duration-s 5 --writer direct"
  "msgrate --size 256 --duration-s 5 --writer buffered"
  "broadcast --pubsub floodsub --subscribers 100 --rounds 50 --warmup 5 --size 1024"
  "broadcast --pubsub floodsub --subscribers 1000 --rounds 50 --warmup 5 --size 1024"
  "conn-mem --conns 1000 --batch 100 --settle-ms 1000"
)
: >"$out"
for r in $(seq 1 "$rounds"); do
  for p in $pinning; do
    case $p in
      on) run=(benches/pin_workers.py) tag="\"round\":$r,\"pinned\":true," ;;
      off) run=() tag="\"round\":$r," ;;
      *) echo "PINNING takes off and on, not $p" >&2; exit 2 ;;
    esac
    for c in $ciphers; do
      echo "round $r: silver-p2p --cipher $c, pinning $p" >&2
      timeout 900 "${run[@]}" "$ours" all --cipher "$c" | sed "s/^{/{$tag/" >>"$out"
    done
    for a in "${anchor_scenarios[@]}"; do
      echo "round $r: rust-libp2p $a, pinning $p" >&2
      # shellcheck disable=SC2086 # the scenario string holds several arguments
      timeout 170 "${run[@]}" "$anchor" $a | sed "s/^{/{$tag/" >>"$out" || true
    done
  done
done
python3 - "$out" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def headline(d):
    r, s = d["results"], d["scenario"]
    return {"connect": lambda: r["connect_us"]["median"], "rtt": lambda: r["rtt_us"]["median"],
            "rtt-stream": lambda: r["rtt_us"]["median"], "throughput": lambda: r["rx_mb_per_s_median"],
            "msgrate": lambda: r["msgs_per_sec"], "broadcast": lambda: r["all_received_ms"]["median"],
            "conn-mem": lambda: r["kib_per_endpoint"], "floor-connect": lambda: r["connect_us"]["median"],
            "floor-rtt": lambda: r["rtt_us"]["median"], "floor-broadcast": lambda: r["all_received_ms"]["median"]}[s]()
groups = collections.OrderedDict()
for d in rows:
    p = d.get("params") or {}
    key = (d["scenario"], p.get("writer"), p.get("subscribers"), d["impl"], d.get("transport_aead"), d.get("pinned", False))
    groups.setdefault(key, []).append(d)
for (scenario, writer, subs, impl, aead, pinned), ds in groups.items():
    values = sorted(headline(d) for d in ds)
    other = max(d.get("host_cpu_during", {}).get("other_pct", 0) for d in ds)
    label = scenario + (f" {writer}" if writer else "") + (f" P={subs}" if subs else "")
    impl = impl + (f" {aead}" if aead else "") + (" pinned" if pinned else "")
    print(f"{label:28} {impl:30} median {values[len(values)//2]:>12} runs {values} max other_pct {other}")
PY
