#!/usr/bin/env bash
# Runs `statefun bench` (ours) and the Apache Flink StateFun 3.3.0 peer
# (flink-statefun/, theirs) back to back on the same workload and prints one
# table: records/s, records per CPU-second, peak RSS, start-up time, ratios.
#
#   benchmarks/peers/run.sh [--records N] [--keys K] [--parallelism P]
#                           [--state heap|rocksdb] [--xmx 2g]
#                           [--value-size B] [--checkpoint-interval 1s]
#
# Ours:   ${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun}
#         bench --skip-baseline --keys K --records N -w P [--state-dir <tmp>]
# Theirs: flink-statefun/run-peer.sh (built with Maven on first use).
# Each process runs under /usr/bin/time -f '%e %U %S %M'. See README.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
records=10000000
keys=1000000
parallelism=1
state=heap
xmx=2g
value_size=100
checkpoint_interval=1s
bin=${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun}

me=run.sh
help_lines=2,13
# shellcheck source=lib.sh
. "$here/lib.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --records) need "$@"; records=$2; shift 2 ;;
    --keys) need "$@"; keys=$2; shift 2 ;;
    --parallelism|-p|-w) need "$@"; parallelism=$2; shift 2 ;;
    --state) need "$@"; state=$2; shift 2 ;;
    --xmx) need "$@"; xmx=$2; shift 2 ;;
    --value-size) need "$@"; value_size=$2; shift 2 ;;
    --checkpoint-interval) need "$@"; checkpoint_interval=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown option $1" >&2; usage ;;
  esac
done
for n in "$records" "$keys" "$parallelism" "$value_size"; do
  case "$n" in ''|*[!0-9]*) echo "run.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
case "$state" in heap|rocksdb) ;; *) echo "run.sh: --state must be heap or rocksdb" >&2; exit 2 ;; esac

require_peer_tools

tmp=$(mktemp -d "${TMPDIR:-/tmp}/statefun-peers.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Build the peer outside the measured run (downloads on first use; see run-peer.sh).
"$here/flink-statefun/run-peer.sh" --build-only </dev/null

echo "workload: $records records, $keys keys, ${value_size}-byte values, parallelism $parallelism, state $state" \
  "$([ "$state" = rocksdb ] && echo "(checkpoints every $checkpoint_interval)")"

# timed NAME MARKER COMMAND...: runs COMMAND under GNU time (into $tmp/NAME.time,
# its output into $tmp/NAME.out and .err), shows its output, and succeeds when
# it exited 0 and printed a line matching MARKER.
timed() {
  local name=$1 marker=$2 rc=0
  shift 2
  /usr/bin/time -f '%e %U %S %M' -o "$tmp/$name.time" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null || rc=$?
  sed 's/^/  | /' "$tmp/$name.out"
  if [ "$rc" -ne 0 ]; then
    echo "run.sh: $name failed (exit $rc):" >&2
    tail -n 30 "$tmp/$name.err" >&2
    return 1
  fi
  if ! grep -q "$marker" "$tmp/$name.out"; then
    echo "run.sh: $name printed no line matching '$marker'" >&2
    return 1
  fi
}

# --- ours ---------------------------------------------------------------------
ours_ok=0
if [ -x "$bin" ]; then
  ours_args=(bench --skip-baseline --keys "$keys" --records "$records" --value-size "$value_size" -w "$parallelism")
  if [ "$state" = rocksdb ]; then
    ours_args+=(--state-dir "$tmp/ours-state" --checkpoint-interval "$checkpoint_interval")
  fi
  echo "ours:   $bin ${ours_args[*]}"
  timed ours '^engine:' "$bin" "${ours_args[@]}" && ours_ok=1
else
  echo "ours:   SKIPPED: no statefun binary at $bin (build it with cargo build --release, or set STATEFUN_BIN)"
fi

# --- theirs -------------------------------------------------------------------
peer_args=(--xmx "$xmx" --records "$records" --keys "$keys" --value-size "$value_size"
  --parallelism "$parallelism" --state "$state")
if [ "$state" = rocksdb ]; then
  peer_args+=(--checkpoint-interval "$checkpoint_interval")
fi
echo "theirs: flink-statefun/run-peer.sh ${peer_args[*]}"
peer_ok=0
timed peer '^peer: records=' "$here/flink-statefun/run-peer.sh" "${peer_args[@]}" && peer_ok=1

# --- table ----------------------------------------------------------------------
# field NAME FILE: the value of NAME=... on the peer's result line.
field() { sed -n "s/^peer: records=.* $1=\([^ ]*\).*/\1/p" "$2" | tail -n 1; }

if [ "$ours_ok" = 1 ]; then
  # the last line: GNU time puts "Command exited with non-zero status" before it
  read -r o_wall o_user o_sys o_rss_kb < <(tail -n 1 "$tmp/ours.time") || true
  # "engine: <records/s> records/s (<seconds> s)[, cpu ...]"
  o_rate='' o_secs=''
  read -r o_rate o_secs < <(sed -n 's/^engine: *\([0-9.]*\) records\/s (\([0-9.]*\) s).*/\1 \2/p' "$tmp/ours.out" | tail -n 1) || true
  [ -n "${o_secs:-}" ] || { o_rate=NA; o_secs=NA; }
else
  o_wall=NA o_user=NA o_sys=NA o_rss_kb=NA o_secs=NA o_rate=NA
fi
if [ "$peer_ok" = 1 ]; then
  # the last line: GNU time puts "Command exited with non-zero status" before it
  read -r p_wall p_user p_sys p_rss_kb < <(tail -n 1 "$tmp/peer.time") || true
  p_secs=$(field seconds "$tmp/peer.out")
  p_rate=$(field records_per_s "$tmp/peer.out")
  p_startup_ms=$(field startup_ms "$tmp/peer.out")
else
  p_wall=NA p_user=NA p_sys=NA p_rss_kb=NA p_secs=NA p_rate=NA p_startup_ms=NA
fi

echo
awk -v n="$records" \
  -v ow="$o_wall" -v ou="$o_user" -v os="$o_sys" -v orss="$o_rss_kb" -v osecs="$o_secs" -v orate="$o_rate" \
  -v pw="$p_wall" -v pu="$p_user" -v ps="$p_sys" -v prss="$p_rss_kb" -v psecs="$p_secs" -v prate="$p_rate" \
  -v pstart="$p_startup_ms" '
  function na(x) { return x == "NA" || x == "" }
  function num(x, fmt) { return na(x) ? "n/a" : sprintf(fmt, x) }
  function ratio(a, b) {
    if (na(a) || na(b) || b == 0) return "n/a"
    return sprintf(a / b >= 1 ? "%.2f" : "%.2g", a / b)
  }
  function row(label, a, b, fmt, note) {
    printf "%-28s %16s %16s %12s  %s\n", label, num(a, fmt), num(b, fmt), ratio(a, b), note
  }
  BEGIN {
    o_rate = orate  # as printed by each side
    p_rate = prate
    o_cpu = na(ou) ? "NA" : ou + os
    p_cpu = na(pu) ? "NA" : pu + ps
    o_rpc = (na(o_cpu) || o_cpu == 0) ? "NA" : n / o_cpu
    p_rpc = (na(p_cpu) || p_cpu == 0) ? "NA" : n / p_cpu
    o_mib = na(orss) ? "NA" : orss / 1024
    p_mib = na(prss) ? "NA" : prss / 1024
    o_start = (na(ow) || na(osecs)) ? "NA" : (ow - osecs) * 1000
    printf "%-28s %16s %16s %12s\n", "", "statefun-rs", "flink-statefun", "ours/theirs"
    row("records/s", o_rate, p_rate, "%.0f", "(higher is better)")
    row("records per CPU-second", o_rpc, p_rpc, "%.0f", "(whole process, user+sys; higher is better)")
    row("CPU seconds (user+sys)", o_cpu, p_cpu, "%.2f", "")
    row("measured seconds", osecs, psecs, "%.3f", "(ours: engine run; theirs: first record -> last id complete)")
    row("process wall seconds", ow, pw, "%.2f", "")
    row("peak RSS (MiB)", o_mib, p_mib, "%.0f", "(lower is better)")
    row("start-up (ms)", o_start, pstart, "%.0f", "(lower is better; see notes)")
  }'
echo
echo "notes: ours' start-up is the process wall time minus the engine seconds (statefun bench"
echo "       does not print the time to its first record): process start and module load plus"
echo "       teardown. Theirs is JVM start -> first record in the function (MiniCluster start,"
echo "       job submission, task deployment). Theirs runs with -Xmx$xmx; the JVM's RSS includes"
echo "       heap it has not returned, metaspace, JIT, and RocksDB native memory with --state rocksdb."
echo "       Figures from a shared or busy machine are indicative only."

[ "$peer_ok" = 1 ] || exit 1
if [ -x "$bin" ] && [ "$ours_ok" != 1 ]; then exit 1; fi
exit 0
