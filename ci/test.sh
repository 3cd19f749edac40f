#!/usr/bin/env bash
# Installs what the tests need and runs every test. CI (.ci/run) calls exactly this.
#
# One cargo profile (release) for tests and benchmarks, and a target dir that
# survives between runs on the same machine, so a warm CI is quick and a cold
# one still fits the limit.
set -euo pipefail
cd "$(dirname "$0")/.."

# Under CI no test may pass by skipping (testkit::unavailable fails instead). Set here, so
# the README's test command on a developer's machine behaves exactly like CI.
export CI=true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statefun-rs/target}"
export CARGO_TERM_COLOR=never
export RUST_LOG="${RUST_LOG:-warn}"

step() { printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "toolchain"
cargo --version
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "install: build dependencies (checked by package before cargo starts)"
bash ci/install-build-deps.sh

step "install: StateFun Python SDK (remote-function interop tests)"
bash ci/install-python-sdk.sh

step "install: StateFun Go SDK (second-SDK interop test)"
bash ci/install-go-sdk.sh

step "install: Kinesis emulator (kinesis-local, on 127.0.0.1)"
bash ci/install-kinesis.sh

step "install: Apache Kafka 4.x broker (KRaft, on 127.0.0.1)"
bash ci/install-kafka.sh

step "format"
cargo fmt --all -- --check

step "Kubernetes manifests (strict decoding into k8s.io/api; docs/DEPLOY.md)"
bash ci/check-manifests.sh

step "clippy"
cargo clippy --release --workspace --all-targets -- -D warnings

step "tests"
cargo test --release --workspace 2>&1 | tee /tmp/statefun-rs-tests.log

# The test build above already built these binaries (with the workspace's
# unified features); running them directly avoids a second build.
bin="$CARGO_TARGET_DIR/release"

step "bench smoke run"
"$bin/statefun" bench --records 300000 --keys 10000
"$bin/statefun" bench --latency --hops 20000 -w 2

step "quick start"
greetings=$("$bin/example-greeter" run examples/greeter/module.yaml | wc -l)
echo "the greeter printed $greetings greetings"
expected=$(grep -c . examples/greeter/names.txt)
[ "$greetings" -eq "$expected" ] || { echo "error: the quick start printed $greetings greetings, expected $expected" >&2; exit 1; }

step "shipped binary"
ls -l "$bin/statefun" | awk '{printf "statefun: %.1f MB\n", $5/1e6}'
du -sh "$CARGO_TARGET_DIR" | awk '{print "target dir: " $1}'

# Only libtest's summary lines count (log lines of the tests may say "N failed" too).
results() { grep -E '^test result:' /tmp/statefun-rs-tests.log | grep -Eo "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
passed=$(results passed)
failed=$(results failed)
echo "all: ${passed} passed, ${failed} failed"
