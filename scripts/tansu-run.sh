#!/usr/bin/env bash
# The black-box run of the Kafka adapter against tansu (a Kafka-compatible broker from
# crates.io), recorded in BENCHMARKS.md ("Brokers"): installs tansu when none is found, starts
# it on a free port with its memory storage engine, runs the Kafka adapter's test suite against
# it (EVENTFOLD_KAFKA_BOOTSTRAP), then the benchmark's kafka-tansu and kafka-mock rows.
#
#   scripts/tansu-run.sh [tests|bench|all]     (default: all)
#
# Environment:
#   TANSU_BIN          a tansu binary to use (else `tansu` on PATH, else it is installed)
#   TANSU_ROOT         where `cargo install` puts it (default: ~/.cargo; the binary is in bin/)
#   TANSU_TARGET_DIR   cargo's target directory for that build (default: a temporary directory,
#                      removed afterwards; the build takes about 11 minutes on 2 cores)
#   BENCH_ARGS         extra arguments of `eventfold-bench brokers` (e.g. "--events 20000")
#
# Nothing is downloaded except tansu's crates by `cargo install` from crates.io.
set -euo pipefail

what="${1:-all}"
status=0
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

tansu="${TANSU_BIN:-}"
if [[ -z "$tansu" ]]; then
  tansu="$(command -v tansu || true)"
fi
if [[ -z "$tansu" ]]; then
  install_root="${TANSU_ROOT:-$HOME/.cargo}"
  target="${TANSU_TARGET_DIR:-}"
  remove_target=0
  if [[ -z "$target" ]]; then
    target="$(mktemp -d)"
    remove_target=1
  fi
  echo "tansu-run: installing tansu into $install_root (build in $target; about 11 minutes)" >&2
  # Without dynostore and libsql, tansu's storage engines do not build or work.
  CARGO_TARGET_DIR="$target" cargo install tansu --locked --features dynostore,libsql \
    --root "$install_root" -j "${TANSU_JOBS:-1}"
  if [[ "$remove_target" == 1 ]]; then rm -rf "$target"; fi
  tansu="$install_root/bin/tansu"
fi
echo "tansu-run: $("$tansu" --version 2>/dev/null | head -n1) at $tansu" >&2

if [[ "$what" == all || "$what" == tests ]]; then
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  log="$(mktemp -t tansu-XXXXXX.log)"
  "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "memory://tansu/" >"$log" 2>&1 &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "tansu-run: tansu exited; its log ($log):" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "tansu-run: tansu at 127.0.0.1:$port (log $log); the Kafka adapter's tests against it:" >&2
  # Every case runs, also after a failure, so the record says which pass and which fail.
  set +e
  EVENTFOLD_KAFKA_BOOTSTRAP="127.0.0.1:$port" EVENTFOLD_REQUIRE_SERVICES=1 \
    cargo test -p eventfold-transport-kafka --no-fail-fast -- --test-threads 4
  status=$?
  set -e
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
  echo "tansu-run: the suite against tansu exited with $status" >&2
fi

if [[ "$what" == all || "$what" == bench ]]; then
  # shellcheck disable=SC2086
  TANSU_BIN="$tansu" cargo run --release -p eventfold-bench -- brokers \
    --only kafka-mock,kafka-tansu ${BENCH_ARGS:-}
fi
exit "$status"
