#!/usr/bin/env bash
# Runs pyeventsourcing/eventstore-benchmarks' concurrent_writers and concurrent_readers workloads
# against eventfold and UmaDB in one run, on this machine. See README.md in this folder.
#
#   HARNESS_DIR=/path/to/eventstore-benchmarks   a git checkout of the harness (commit below)
#   UMADB_SRC=/path/to/umadb                     a checkout of umadb-io/umadb
#   UMADB_BIN=$UMADB_SRC/target/release/umadb    the UmaDB server built from it (default shown)
#   EVENTFOLD_BIN=<target>/release/eventfold     `cargo build --release -p eventfold-cli`
#                                                (default: $CARGO_TARGET_DIR or ./target)
#   DATA_DIR=$HARNESS_DIR/store-data             where both stores keep their data (one disk)
#   CONFIGS="concurrent-writers concurrent-readers"   configs/<name>.yaml, run in this order
#   ROUNDS=1                                     each config this many times; even rounds run
#                                                eventfold first, odd rounds UmaDB first
#   SEED=42  JOBS=2  HARNESS_TARGET_DIR=$HARNESS_DIR/target
#
#   bench/eventstore-benchmarks/run.sh
#
# The first run applies harness.patch to the checkout, copies eventfold-adapter/ into it as
# rust/adapters/eventfold and builds es-bench (release). Later runs refresh the adapter copy
# when it changed and reuse the build.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
HARNESS_COMMIT=8d0b43294f1a38e96575d8c846d993a699ee228c

: "${HARNESS_DIR:?set HARNESS_DIR to a checkout of pyeventsourcing/eventstore-benchmarks}"
: "${UMADB_SRC:?set UMADB_SRC to a checkout of umadb-io/umadb}"
HARNESS_DIR="$(cd "$HARNESS_DIR" && pwd)"
UMADB_SRC="$(cd "$UMADB_SRC" && pwd)"
UMADB_BIN="${UMADB_BIN:-$UMADB_SRC/target/release/umadb}"
EVENTFOLD_BIN="${EVENTFOLD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/eventfold}"
DATA_DIR="${DATA_DIR:-$HARNESS_DIR/store-data}"
CONFIGS="${CONFIGS:-concurrent-writers concurrent-readers}"
ROUNDS="${ROUNDS:-1}"
SEED="${SEED:-42}"
JOBS="${JOBS:-2}"
HARNESS_TARGET_DIR="${HARNESS_TARGET_DIR:-$HARNESS_DIR/target}"

for bin in "$UMADB_BIN" "$EVENTFOLD_BIN"; do
    [ -x "$bin" ] || { echo "error: $bin is not an executable; build it first (see README.md)" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "error: jq is needed to print the table" >&2; exit 1; }

# 1. Prepare the harness checkout (once), then refresh the adapter copy.
head="$(git -C "$HARNESS_DIR" rev-parse HEAD)"
if [ "$head" != "$HARNESS_COMMIT" ]; then
    echo "warning: harness is at $head; harness.patch was made against $HARNESS_COMMIT" >&2
fi
if [ ! -f "$HARNESS_DIR/rust/bench-core/src/local_server.rs" ]; then
    git -C "$HARNESS_DIR" apply "$HERE/harness.patch"
    sed -i "s#@UMADB_SRC@#$UMADB_SRC#g" "$HARNESS_DIR/rust/adapters/umadb/Cargo.toml"
fi
# (replaced only when it differs, so that an unchanged adapter does not rebuild es-bench)
staged="$(mktemp -d)"
cp -r "$HERE/eventfold-adapter/." "$staged/"
sed -i "s#@EVENTFOLD_ROOT@#$ROOT#g" "$staged/Cargo.toml"
if ! diff -r -q "$staged" "$HARNESS_DIR/rust/adapters/eventfold" >/dev/null 2>&1; then
    rm -rf "$HARNESS_DIR/rust/adapters/eventfold"
    cp -r "$staged" "$HARNESS_DIR/rust/adapters/eventfold"
fi
rm -rf "$staged"

# 2. Build the harness (release, as its Makefile does).
(cd "$HARNESS_DIR" && CARGO_TARGET_DIR="$HARNESS_TARGET_DIR" cargo build --release -j "$JOBS" -p es-bench)
ES_BENCH="$HARNESS_TARGET_DIR/release/es-bench"

# 3. Run. Both servers are child processes of es-bench on 127.0.0.1, each with a fresh data
#    directory under $DATA_DIR, removed after its run.
mkdir -p "$DATA_DIR"
export UMADB_BIN EVENTFOLD_BIN
echo "eventfold: $EVENTFOLD_BIN ($(git -C "$ROOT" rev-parse --short HEAD))"
echo "umadb:     $UMADB_BIN ($(git -C "$UMADB_SRC" rev-parse --short HEAD))"
echo "harness:   $HARNESS_DIR ($head)"
echo "uptime before: $(uptime)"
sessions=()
for round in $(seq 1 "$ROUNDS"); do
    for name in $CONFIGS; do
        config="$HERE/configs/$name.yaml"
        run_config="$HARNESS_DIR/results/$name.round$round.yaml"
        mkdir -p "$HARNESS_DIR/results"
        if [ $((round % 2)) -eq 0 ]; then
            sed 's/^stores: \[umadb, eventfold\]$/stores: [eventfold, umadb]/' "$config" > "$run_config"
        else
            cp "$config" "$run_config"
        fi
        echo "== round $round: $name ($(grep '^stores:' "$run_config")); uptime: $(uptime)"
        log="$HARNESS_DIR/results/$name.round$round.log"
        (cd "$HARNESS_DIR" && "$ES_BENCH" run --config "$run_config" --seed "$SEED" --data-dir "$DATA_DIR") | tee "$log"
        sessions+=("$HARNESS_DIR/$(sed -n 's/^✓ Session complete: //p' "$log")")
        # es-bench names a session by the second it started: keep two sessions apart.
        sleep 1
    done
done
echo "uptime after: $(uptime)"

# 4. The table: one row per (session, workload, store) from the harness's summary.json files.
echo
printf '| %-28s | %-9s | %3s | %3s | %10s | %8s | %8s | %8s | %8s |\n' \
    workload store w r events/s p50_ms p95_ms p99_ms p999_ms
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' \
    ------------------------------ ----------- ----- ----- ------------ ---------- ---------- ---------- ----------
for s in "${sessions[@]}"; do
    for f in "$s"/*/*/summary.json; do
        jq -r '[.workload, .adapter, .writers, .readers, .throughput_eps, .latency.p50_ms,
                .latency.p95_ms, .latency.p99_ms, .latency.p999_ms] | @tsv' "$f" |
            while IFS=$'\t' read -r w a nw nr eps p50 p95 p99 p999; do
                printf '| %-28s | %-9s | %3s | %3s | %10.0f | %8.3f | %8.3f | %8.3f | %8.3f |\n' \
                    "$w" "$a" "$nw" "$nr" "$eps" "$p50" "$p95" "$p99" "$p999"
            done
    done
done
