#!/usr/bin/env bash
# The migration example on both runtimes, side by side: the same module.yaml and functions.py
# run by `statefun run` (statefun-rs) and by Apache Flink StateFun 3.3.0 (its Harness, a Flink
# MiniCluster in one JVM, with flink-conf.yaml), against the same Kafka broker, on the same
# input; then the receipts each wrote (read back with read_committed) are compared.
#
#   examples/migration/run-on-flink.sh [--bootstrap HOST:PORT] [--timeout S] [--xmx 2g] [--keep]
#
# Defaults: the broker of ci/install-kafka.sh ($KAFKA_BOOTSTRAP, else
# ~/.cache/statefun-rs/kafka/bootstrap), 180 s per side to produce every receipt, -Xmx 2g;
# --keep keeps the work directory (modules, logs, receipts) and prints where it is.
# Ours:   ${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun}
#         run module.yaml --config statefun.yaml --state-dir <tmp> -w 2
# Theirs: benchmarks/peers/flink-statefun/run-peer.sh --module (ModulePeer; built with Maven
#         on first use) with flink-conf.yaml (parallelism 2, RocksDB, checkpoints every 1 s).
# Python: ${STATEFUN_VENV:-$HOME/.cache/statefun-rs/venv} (bash ci/install-python-sdk.sh).
# Exits 0 when both sides wrote every receipt exactly once and the receipts are identical.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
peers=$repo/benchmarks/peers
bin=${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun}
venv=${STATEFUN_VENV:-$HOME/.cache/statefun-rs/venv}
py=$venv/bin/python
bootstrap=${KAFKA_BOOTSTRAP:-}
run_timeout=180
xmx=2g
keep=0
users=40
requests_per_user=25
partitions=4

me=run-on-flink.sh
help_lines=2,17
# shellcheck source=../../benchmarks/peers/lib.sh
. "$peers/lib.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) need "$@"; bootstrap=$2; shift 2 ;;
    --timeout) need "$@"; run_timeout=$2; shift 2 ;;
    --xmx) need "$@"; xmx=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage ;;
    *) echo "$me: unknown option $1" >&2; usage ;;
  esac
done
case "$run_timeout" in ''|*[!0-9]*) echo "$me: --timeout takes seconds, not '$run_timeout'" >&2; exit 2 ;; esac

# --- prerequisites ------------------------------------------------------------------
require_peer_tools
if [ -z "$bootstrap" ] && [ -s "$HOME/.cache/statefun-rs/kafka/bootstrap" ]; then
  bootstrap=$(head -n 1 "$HOME/.cache/statefun-rs/kafka/bootstrap")
fi
if [ -z "$bootstrap" ]; then
  echo "$me: no Kafka broker: run 'bash ci/install-kafka.sh' from $repo (or pass --bootstrap)" >&2
  exit 127
fi
if [ ! -x "$py" ] || ! "$py" -c 'import statefun, aiohttp' </dev/null >/dev/null 2>&1; then
  echo "$me: no Python venv with the StateFun SDK (apache-flink-statefun 3.3.0) and aiohttp at $venv;" \
    "run 'bash ci/install-python-sdk.sh' from $repo first (or set STATEFUN_VENV)" >&2
  exit 127
fi
if [ ! -x "$bin" ]; then
  echo "$me: no statefun binary at $bin: build it with" \
    "'cargo build --release -p statefun-engine --bin statefun' (or set STATEFUN_BIN)" >&2
  exit 127
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/statefun-migration.XXXXXX")
server_pid=''
runtime_pid=''

# stop PID: SIGTERM (ours drains; the JVM runs its shutdown hooks), SIGKILL after 10 s.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$runtime_pid" ] || stop "$runtime_pid"
  [ -z "$server_pid" ] || stop "$server_pid"
  if [ "$keep" = 1 ]; then
    echo "$me: kept $tmp (modules, runtime logs, receipts)" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$peers/flink-statefun/run-peer.sh" --build-only </dev/null
peer_cp="$peers/flink-statefun/target/classes:$(cat "$peers/flink-statefun/target/classpath.txt")"
kafka_tool() { java -cp "$peer_cp" statefun.peer.KafkaTool "$@"; }

# The input of tests/migration.rs: user i's j-th request (PARTITION<TAB>KEY<TAB>JSON lines).
"$py" - "$users" "$requests_per_user" "$partitions" >"$tmp/input.tsv" <<'EOF'
import json, sys
users, per_user, partitions = map(int, sys.argv[1:])
items = ["apple", "bread", None, "coffee", "milk", "unicorn"]
for j in range(per_user):
    for i in range(users):
        user = f"u{i:02}"
        item = items[(i + j) % 6] or f"limited-{user}"
        value = {"request_id": f"{user}-{j + 1}", "item_id": item, "quantity": 1 + (i + 2 * j) % 3}
        print(f"{i % partitions}\t{user}\t{json.dumps(value)}")
EOF
expected=$((users * requests_per_user))

# run_side NAME COMMAND...: topics of its own, a fresh function server, module.yaml with this
# run's broker, port and topic, the input; COMMAND runs the app until every receipt is read.
run_side() {
  local name=$1 run port i
  shift
  run="migration-$name-$$-$(date +%s)"
  mkdir -p "$tmp/$name"
  kafka_tool create-topics "$bootstrap" "$run-add-to-cart:$partitions" "$run-receipts:2" </dev/null
  RECEIPTS_TOPIC="$run-receipts" "$py" "$here/functions.py" --port 0 \
    >"$tmp/$name/server.out" 2>"$tmp/$name/server.err" </dev/null &
  server_pid=$!
  for i in $(seq 1 300); do
    grep -q '^READY' "$tmp/$name/server.out" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { echo "$me: functions.py exited:" >&2; tail -n 20 "$tmp/$name/server.err" >&2; return 1; }
    sleep 0.1
  done
  port=$(sed -n 's/^PORT //p' "$tmp/$name/server.out")
  [ -n "$port" ] || { echo "$me: functions.py did not start within 30 s" >&2; return 1; }
  sed -e "s/localhost:9092/$bootstrap/" -e "s/localhost:8000/127.0.0.1:$port/" \
    -e "s/topic: add-to-cart/topic: $run-add-to-cart/" -e "s/consumerGroupId: shop/consumerGroupId: $run/" \
    "$here/module.yaml" >"$tmp/$name/module.yaml"
  kafka_tool produce "$bootstrap" "$run-add-to-cart" <"$tmp/input.tsv"
  echo "$name: $* (module $tmp/$name/module.yaml)"
  "$@" >"$tmp/$name/runtime.log" 2>&1 </dev/null &
  runtime_pid=$!
  local started rc=0
  started=$(date +%s)
  kafka_tool read-committed "$bootstrap" "$run-receipts" "$expected" 10 "$run_timeout" \
    >"$tmp/$name.receipts" </dev/null || rc=$?
  echo "$name: $(wc -l <"$tmp/$name.receipts") receipts read in $(($(date +%s) - started)) s (incl. 10 s of settling)"
  if ! kill -0 "$runtime_pid" 2>/dev/null; then
    echo "$me: $name: the runtime exited early:" >&2
    rc=1
  fi
  if [ "$rc" -ne 0 ]; then
    sed 's/\x1b\[[0-9;]*m//g' "$tmp/$name/runtime.log" | grep -v '^[[:space:]]*at ' | tail -n 30 >&2
  fi
  stop "$runtime_pid"
  runtime_pid=''
  stop "$server_pid"
  server_pid=''
  return "$rc"
}

ours_conf="$tmp/ours-state"
run_side ours "$bin" run "$tmp/ours/module.yaml" --config "$here/statefun.yaml" \
  --state-dir "$ours_conf" -w 2

mkdir -p "$tmp/theirs/conf"
sed "s|^state.checkpoints.dir:.*|state.checkpoints.dir: file://$tmp/theirs/checkpoints|" \
  "$here/flink-conf.yaml" >"$tmp/theirs/conf/flink-conf.yaml"
run_side theirs "$peers/flink-statefun/run-peer.sh" --module --xmx "$xmx" \
  --module-yaml "$tmp/theirs/module.yaml" --flink-conf-dir "$tmp/theirs/conf"

# --- compare ------------------------------------------------------------------------
"$py" - "$tmp/ours.receipts" "$tmp/theirs.receipts" "$expected" <<'EOF'
import json, sys
ours_path, theirs_path, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])

def load(path, side):
    receipts, problems = {}, []
    for line in open(path, encoding="utf-8"):
        key, value = line.rstrip("\n").split("\t", 1)
        r = json.loads(value)
        if r["user_id"] != key:
            problems.append(f"key {key} for {value}")
        k = (r["user_id"], r["receipt"])
        if k in receipts:
            problems.append(f"duplicate {k}")
        receipts[k] = r
    if len(receipts) != expected:
        problems.append(f"{len(receipts)} distinct receipts, expected {expected}")
    for p in problems[:10]:
        print(f"{side}: {p}")
    return receipts, not problems

ours, ours_ok = load(ours_path, "ours")
theirs, theirs_ok = load(theirs_path, "theirs")
differ = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
for k in differ[:10]:
    print(f"differs {k}: ours {json.dumps(ours.get(k), sort_keys=True)}")
    print(f"{' ' * (len(str(k)) + 9)}theirs {json.dumps(theirs.get(k), sort_keys=True)}")
reserved = sum(r["status"] == "reserved" for r in ours.values())
same_bytes = sorted(open(ours_path, encoding="utf-8")) == sorted(open(theirs_path, encoding="utf-8"))
print(f"ours:   {len(ours)} receipts, each exactly once: {ours_ok}")
print(f"theirs: {len(theirs)} receipts, each exactly once: {theirs_ok}")
print(f"identical: {not differ} ({len(differ)} differ; {reserved} reserved, {len(ours) - reserved} out of stock;"
      f" keys and values byte for byte: {same_bytes})")
sys.exit(0 if ours_ok and theirs_ok and not differ else 1)
EOF
