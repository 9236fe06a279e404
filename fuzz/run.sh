#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a number of seconds each, then
# minimises each corpus. New crashes are left in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # default 60 s, every target
#   JOBS=2 fuzz/run.sh 600                 # two targets at a time
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). Logs go to fuzz/logs/<target>.log;
# the last libFuzzer status line of each (executions, coverage `cov`, features `ft`, corpus
# size) is printed at the end.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
jobs="${JOBS:-1}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run.sh needs nightly and cargo-fuzz: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# Seed the corpora of the format targets with valid examples.
(cd .. && cargo test -q -p silver-p2p-core --features fuzzing --test fuzz_replay -- --ignored write_seed_corpus >/dev/null)
cargo +nightly fuzz build -O
mkdir -p logs
run_one() {
    local t="$1"
    mkdir -p "corpus/$t"
    # -rss_limit_mb: the targets' memory is bounded by small configurations; 2 GiB is a leak.
    # -len_control=0: the structured targets need inputs of a few hundred bytes from the start
    # (libFuzzer otherwise grows the length limit slowly from 4 bytes).
    if cargo +nightly fuzz run -O "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=4096 -len_control=0 -print_final_stats=1 >"logs/$t.log" 2>&1; then
        echo "$t: ok"
    else
        echo "$t: FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
    fi
    cargo +nightly fuzz cmin -O "$t" >>"logs/$t.log" 2>&1 || true
}
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
for t in "${targets[@]}"; do
    printf '%-22s %s\n' "$t" "$(grep -E '^#[0-9]+' "logs/$t.log" | grep -v -E 'INITED|pulse' | tail -1 | cut -c1-110)"
done
