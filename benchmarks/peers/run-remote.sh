#!/usr/bin/env bash
# Remote functions side by side: `statefun run` (ours) and Apache Flink StateFun 3.3.0's
# Harness (flink-statefun/, theirs) against the same Python function server
# (remote/counter_server.py: the official SDK on aiohttp, `bench/remote-counter`), and one
# table: records/s, runtime CPU per record, function-server CPU, requests, end-to-end
# latency percentiles, ratios.
#
#   benchmarks/peers/run-remote.sh [--records N] [--keys K] [--batch B[,B...]]
#                                  [--parallelism P] [--value-size B] [--xmx 2g]
#                                  [--timeout S] [--rate R] [--warmup S]
#                                  [--flink-buffer-timeout MS]
#
# Defaults: 100000 records over 10000 keys, --batch 1000 (maxNumBatchRequests; a
# comma-separated list runs each, e.g. --batch 1,1000), parallelism 1, 100-character
# strings, the peer's -Xmx 2g, 600 s per run, unpaced. Each run gets a fresh function server.
# Both sources stamp each value with its due time (values of 16 characters or more) and the
# server measures due time -> invocation; --rate R paces both sources at R records/s in all
# (each record's due time is its place in that schedule), which is how latency is measured
# meaningfully: unpaced, it is mostly the time a record waits behind the ones before it.
# --warmup S leaves the records due in the first S seconds out of the latency percentiles
# (not out of the "all" p99 and max, which include the start-up; default 0).
# --flink-buffer-timeout MS sets the peer's execution.buffer-timeout (Flink's default, 100 ms,
# lets a network buffer that is not full wait that long before it is sent: at low rates the
# peer's latency is mostly that wait).
# Ours:   ${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun} run <module.yaml> -w P
# Theirs: flink-statefun/run-peer.sh --remote (built with Maven on first use).
# Python: ${STATEFUN_VENV:-$HOME/.cache/statefun-rs/venv} (bash ci/install-python-sdk.sh).
# See README.md, "Remote functions".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
records=100000
keys=10000
batches=1000
parallelism=1
value_size=100
xmx=2g
run_timeout=600
rate=0
buffer_timeout=''
warmup=0
bin=${STATEFUN_BIN:-$HOME/.cache/statefun-rs/target/release/statefun}
venv=${STATEFUN_VENV:-$HOME/.cache/statefun-rs/venv}
py=$venv/bin/python

me=run-remote.sh
help_lines=2,29
# shellcheck source=lib.sh
. "$here/lib.sh"
while [ $# -gt 0 ]; do
  case "$1" in
    --records) need "$@"; records=$2; shift 2 ;;
    --keys) need "$@"; keys=$2; shift 2 ;;
    --batch|--max-batch) need "$@"; batches=$2; shift 2 ;;
    --parallelism|-p|-w) need "$@"; parallelism=$2; shift 2 ;;
    --value-size) need "$@"; value_size=$2; shift 2 ;;
    --xmx) need "$@"; xmx=$2; shift 2 ;;
    --timeout) need "$@"; run_timeout=$2; shift 2 ;;
    --rate) need "$@"; rate=$2; shift 2 ;;
    --flink-buffer-timeout) need "$@"; buffer_timeout=$2; shift 2 ;;
    --warmup) need "$@"; warmup=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "run-remote.sh: unknown option $1" >&2; usage ;;
  esac
done
for n in "$records" "$keys" "$parallelism" "$value_size" "$run_timeout"; do
  case "$n" in ''|*[!0-9]*) echo "run-remote.sh: '$n' is not a number" >&2; exit 2 ;; esac
done
IFS=, read -r -a batch_list <<<"$batches"
[ "${#batch_list[@]}" -gt 0 ] || { echo "run-remote.sh: --batch needs a value" >&2; exit 2; }
for b in "${batch_list[@]}"; do
  case "$b" in ''|*[!0-9]*|0) echo "run-remote.sh: --batch takes positive numbers, not '$b'" >&2; exit 2 ;; esac
done
case "$rate" in ''|*[!0-9.]*|*.*.*) echo "run-remote.sh: --rate takes records per second (a number >= 0), not '$rate'" >&2; exit 2 ;; esac
case "$warmup" in ''|*[!0-9.]*|*.*.*) echo "run-remote.sh: --warmup takes seconds (a number >= 0), not '$warmup'" >&2; exit 2 ;; esac
peer_buffer=()
if [ -n "$buffer_timeout" ]; then
  case "$buffer_timeout" in *[!0-9]*) echo "run-remote.sh: --flink-buffer-timeout takes milliseconds, not '$buffer_timeout'" >&2; exit 2 ;; esac
  peer_buffer=(--buffer-timeout "$buffer_timeout")
fi
# Values of 16 characters or more carry their due time (see the top of this file).
stamped=false server_stamp=() peer_stamp=()
if [ "$value_size" -ge 16 ]; then
  stamped=true server_stamp=(--stamped --warmup "$warmup") peer_stamp=(--stamp)
fi
if [ "$records" -lt 1 ] || [ "$keys" -lt 1 ] || [ "$parallelism" -lt 1 ]; then
  echo "run-remote.sh: --records, --keys and --parallelism must be >= 1" >&2
  exit 2
fi

# --- prerequisites ------------------------------------------------------------------
if [ ! -x "$py" ] || ! "$py" -c 'import statefun, aiohttp' </dev/null >/dev/null 2>&1; then
  echo "run-remote.sh: no Python venv with the StateFun SDK (apache-flink-statefun 3.3.0) and aiohttp at $venv" >&2
  echo "run-remote.sh: run 'bash ci/install-python-sdk.sh' from $repo first (or set STATEFUN_VENV)" >&2
  exit 127
fi
require_peer_tools
if ! command -v curl >/dev/null 2>&1; then
  echo "run-remote.sh: 'curl' not found (it talks to the function server); install the 'curl' package" >&2
  exit 127
fi
if ! command -v timeout >/dev/null 2>&1 || ! command -v pgrep >/dev/null 2>&1; then
  echo "run-remote.sh: 'timeout' (coreutils) and 'pgrep' (procps) are needed" >&2
  exit 127
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/statefun-remote-peers.XXXXXX")
server_pid=''
runtime_pid=''

# Stops what this script started, by process id. The runtime runs as
# /usr/bin/time -> timeout -> runtime: its descendants get SIGTERM (ours then stops its
# ingresses and drains; the JVM runs its shutdown hooks), and whatever is left after 5 s
# gets SIGKILL. The function server goes last, so that a draining runtime is not left
# retrying against a closed port.
descendants() { # PID: its descendants, deepest first
  local c
  for c in $(pgrep -P "$1" 2>/dev/null || true); do
    descendants "$c"
    echo "$c"
  done
}
stop_runtime() { # PID of /usr/bin/time
  local pid=$1 procs i
  procs=$(descendants "$pid")
  # shellcheck disable=SC2086 # a list of pids
  [ -z "$procs" ] || kill -TERM $procs 2>/dev/null || true
  for i in $(seq 1 50); do
    [ -n "$(descendants "$pid")" ] || break
    sleep 0.1
  done
  procs=$(descendants "$pid")
  # shellcheck disable=SC2086
  [ -z "$procs" ] || kill -KILL $procs 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$runtime_pid" ]; then
    echo "run-remote.sh: stopping the runtime (pid $runtime_pid and its children)" >&2
    stop_runtime "$runtime_pid"
  fi
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Build the peer outside the measured runs (downloads on first use; see run-peer.sh).
"$here/flink-statefun/run-peer.sh" --build-only </dev/null

# --- helpers ------------------------------------------------------------------------
now_ms() { date +%s%3N; }

# start_server NAME: a fresh function server; sets server_pid and port.
start_server() {
  local name=$1 i
  "$py" "$here/remote/counter_server.py" --records "$records" --keys "$keys" \
    --value-size "$value_size" --port 0 ${server_stamp[@]+"${server_stamp[@]}"} >"$tmp/$name.server.out" 2>"$tmp/$name.server.err" </dev/null &
  server_pid=$!
  for i in $(seq 1 300); do
    grep -q '^READY' "$tmp/$name.server.out" 2>/dev/null && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "run-remote.sh: the function server exited:" >&2
      tail -n 20 "$tmp/$name.server.err" >&2
      server_pid=''
      return 1
    fi
    sleep 0.1
  done
  port=$(sed -n 's/^PORT //p' "$tmp/$name.server.out")
  [ -n "$port" ] || { echo "run-remote.sh: the function server did not start within 30 s" >&2; return 1; }
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=''
}

# endpoint_yaml BATCH: the endpoint both runtimes use, byte for byte.
endpoint_yaml() {
  cat <<EOF
kind: io.statefun.endpoints.v2/http
spec:
  functions: bench/remote-counter
  urlPathTemplate: http://127.0.0.1:$port/statefun/{function.name}
  maxNumBatchRequests: $1
  transport:
    type: io.statefun.transports.v1/async
    call: 120s
    connect: 20s
EOF
}

# run_side NAME COMMAND...: runs COMMAND under GNU time and `timeout` against the server
# started for it, tells the server its process id (for runtime CPU), waits, saves the final
# server line in $tmp/NAME.stats. Succeeds when the runtime exited 0 and the server says ok.
run_side() {
  local name=$1 rc=0
  shift
  now_ms >"$tmp/$name.launch_ms"
  /usr/bin/time -f '%e %U %S %M' -o "$tmp/$name.time" \
    timeout --kill-after=10 "$run_timeout" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null &
  runtime_pid=$!
  curl -sf -X POST "http://127.0.0.1:$port/watch?pid=$runtime_pid" >"$tmp/$name.watch" || true
  wait "$runtime_pid" || rc=$?
  runtime_pid=''
  curl -sf "http://127.0.0.1:$port/stats" >"$tmp/$name.stats" || true
  grep '^remote-peer:' "$tmp/$name.out" | sed 's/^/  | /' || true
  sed 's/^/  | /' "$tmp/$name.stats"
  if [ "$rc" -ne 0 ]; then
    echo "run-remote.sh: $name failed (exit $rc$([ "$rc" = 124 ] && echo ": --timeout $run_timeout s")):" >&2
    sed 's/\x1b\[[0-9;]*m//g' "$tmp/$name.err" | grep -v '^[[:space:]]*at ' | tail -n 20 >&2
    return 1
  fi
  if ! grep -q ' done=true ok=true ' "$tmp/$name.stats"; then
    echo "run-remote.sh: $name: COUNT MISMATCH or incomplete: $(cat "$tmp/$name.stats")" >&2
    return 1
  fi
  # A request the runtime abandoned and sent again runs the function twice at the server
  # (the runtime applies one answer, so state stays exact): worth knowing, not an error.
  if [ "$(field invocations "$tmp/$name.stats")" != "$records" ]; then
    echo "  | note: $(field invocations "$tmp/$name.stats") invocations for $records records (retried requests)"
  fi
}

# field NAME FILE: the value of NAME=... on a key=value line in FILE.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" "$2" | tail -n 1; }

echo "workload: $records records over $keys keys, ${value_size}-character strings$($stamped && echo ' (stamped)')," \
  "$([ "$rate" = 0 ] && echo unpaced || echo "paced at $rate records/s")," \
  "parallelism $parallelism, maxNumBatchRequests ${batches}$([ -n "$buffer_timeout" ] && echo ", the peer's execution.buffer-timeout $buffer_timeout ms"); function server: $py $here/remote/counter_server.py"

if [ ! -x "$bin" ]; then
  echo "ours:   SKIPPED: no statefun binary at $bin (build it with cargo build --release, or set STATEFUN_BIN)"
fi

failed=0
for b in "${batch_list[@]}"; do
  # --- ours -------------------------------------------------------------------------
  if [ -x "$bin" ]; then
    start_server "ours-$b"
    { endpoint_yaml "$b"; cat <<EOF
---
kind: io.statefun-rs.generator.v1/ingress
spec:
  id: bench/generator
  valueType: io.statefun.types/string
  targets:
    - bench/remote-counter
  keys: $keys
  count: $records
  valueSize: $value_size
  rate: $rate
  stamp: $stamped
EOF
    } >"$tmp/ours-$b.yaml"
    echo "ours   (maxNumBatchRequests $b): $bin run <module.yaml> -w $parallelism"
    run_side "ours-$b" "$bin" run "$tmp/ours-$b.yaml" -w "$parallelism" || failed=1
    # ours' own report: "run finished ... invocations=N failed_invocations=M"
    sed 's/\x1b\[[0-9;]*m//g' "$tmp/ours-$b.err" | sed -n 's/.*run finished.*\( invocations=[0-9]*\) \(failed_invocations=[0-9]*\).*/  | statefun-rs run report:\1 \2/p' | tail -n 1
    stop_server
  fi
  # --- theirs -----------------------------------------------------------------------
  start_server "theirs-$b"
  endpoint_yaml "$b" >"$tmp/theirs-$b.yaml"
  echo "theirs (maxNumBatchRequests $b): flink-statefun/run-peer.sh --remote --xmx $xmx --parallelism $parallelism"
  run_side "theirs-$b" "$here/flink-statefun/run-peer.sh" --remote --xmx "$xmx" \
    --module-yaml "$tmp/theirs-$b.yaml" --stats-url "http://127.0.0.1:$port" \
    --records "$records" --keys "$keys" --value-size "$value_size" \
    --parallelism "$parallelism" --timeout "$run_timeout" --rate "$rate" \
    ${peer_stamp[@]+"${peer_stamp[@]}"} ${peer_buffer[@]+"${peer_buffer[@]}"} || failed=1
  stop_server
done

# --- table ----------------------------------------------------------------------------
# values SIDE: the figures of one run, space-separated, NA when missing.
values() {
  local s=$tmp/$1.stats t=$tmp/$1.time wall user sys rss launch first v
  if [ ! -s "$s" ] || ! grep -q ' done=true ok=true ' "$s"; then
    echo "NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA"
    return
  fi
  read -r wall user sys rss < <(tail -n 1 "$t") || true
  launch=$(cat "$tmp/$1.launch_ms")
  first=$(field first_unix_ms "$s")
  for v in records_per_s window_s runtime_cpu_window_s server_cpu_window_s requests invoking_requests invocations max_batch; do
    printf '%s ' "$(field "$v" "$s" | sed 's/^$/NA/')"
  done
  printf '%s ' "${user:-NA}" "${sys:-NA}" "${wall:-NA}" "${rss:-NA}" "$((first - launch))" "$(field cpu_from "$s")"
  for v in lat_p50_ms lat_p99_ms lat_p999_ms lat_max_ms lat_all_p99_ms lat_all_max_ms; do
    printf '%s ' "$(field "$v" "$s" | sed 's/^$/NA/')"
  done
  echo
}

echo
for b in "${batch_list[@]}"; do
  if [ -x "$bin" ]; then o=$(values "ours-$b"); else o="NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA NA"; fi
  t=$(values "theirs-$b")
  awk -v n="$records" -v batch="$b" -v o="$o" -v t="$t" -v warmup="$warmup" '
    function na(x) { return x == "NA" || x == "" }
    function num(x, fmt) { return na(x) ? "n/a" : sprintf(fmt, x) }
    function ratio(a, b) {
      if (na(a) || na(b) || b == 0) return "n/a"
      return sprintf(a / b >= 1 ? "%.2f" : "%.2g", a / b)
    }
    function row(label, a, b, fmt, note) {
      printf "%-40s %14s %14s %11s  %s\n", label, num(a, fmt), num(b, fmt), ratio(a, b), note
    }
    # per(x, d, scale): x * scale / d, NA when either is missing
    function per(x, d, scale) { return (na(x) || na(d) || d == 0) ? "NA" : x * scale / d }
    BEGIN {
      split(o, O, " "); split(t, T, " ")
      # 1 rate 2 window 3 rt_cpu_window 4 srv_cpu_window 5 requests 6 invoking 7 invocations
      # 8 max_batch 9 user 10 sys 11 wall 12 rss_kb 13 startup_ms 14 cpu_from
      # 15 latency p50 ms 16 p99 17 p99.9 18 max 19 p99 with the warm-up 20 max with it
      for (i = 1; i <= 20; i++) { if (!(i in O)) O[i] = "NA"; if (!(i in T)) T[i] = "NA" }
      o_cpu = na(O[9]) ? "NA" : O[9] + O[10]; t_cpu = na(T[9]) ? "NA" : T[9] + T[10]
      o_rt = na(O[5]) ? "NA" : O[5] - O[6]; t_rt = na(T[5]) ? "NA" : T[5] - T[6]
      o_mib = na(O[12]) ? "NA" : O[12] / 1024; t_mib = na(T[12]) ? "NA" : T[12] / 1024
      printf "%-40s %14s %14s %11s\n", "maxNumBatchRequests " batch, "statefun-rs", "flink-statefun", "ours/theirs"
      row("records/s", O[1], T[1], "%.0f", "(higher is better; server: first invocation -> last id complete)")
      row("runtime CPU us/record, that window", per(O[3], n, 1e6), per(T[3], n, 1e6), "%.1f", "(lower is better; runtime process only)")
      row("runtime CPU us/record, whole process", per(o_cpu, n, 1e6), per(t_cpu, n, 1e6), "%.1f", "(start-up included: the JVM start weighs on small runs)")
      row("function server CPU us/record", per(O[4], n, 1e6), per(T[4], n, 1e6), "%.1f", "(same server; its cost depends on batching)")
      row("HTTP requests", O[5], T[5], "%.0f", "")
      row("  of them state round trips", o_rt, t_rt, "%.0f", "(IncompleteInvocationContext answers, no invocation)")
      row("invocations per invoking request", per(O[7], O[6], 1), per(T[7], T[6], 1), "%.2f", "(mean batch)")
      row("largest batch", O[8], T[8], "%.0f", "")
      row("window seconds", O[2], T[2], "%.3f", "")
      row("process wall seconds", O[11], T[11], "%.2f", "")
      row("peak RSS (MiB)", o_mib, t_mib, "%.0f", "(lower is better)")
      row("start-up (ms)", O[13], T[13], "%.0f", "(launch -> first invocation at the server)")
      row("latency p50 (ms)", O[15], T[15], "%.2f", "(lower is better; due time at the source -> invocation" (warmup > 0 ? ", after the first " warmup " s)" : ")"))
      row("latency p99 (ms)", O[16], T[16], "%.2f", "")
      row("latency p99.9 (ms)", O[17], T[17], "%.2f", "")
      row("latency max (ms)", O[18], T[18], "%.2f", "")
      if (warmup > 0) {
        row("latency p99 (ms), warm-up included", O[19], T[19], "%.2f", "(start-up and the first " warmup " s too)")
        row("latency max (ms), warm-up included", O[20], T[20], "%.2f", "")
      }
      if (O[14] == "start") print "  (ours: window CPU counted from process start: the server learnt its pid after its first message)"
      print ""
    }'
done
if [ "${#batch_list[@]}" -gt 1 ]; then
  echo "maxNumBatchRequests effect (records/s; runtime CPU us/record in the window; latency p99 ms):"
  for b in "${batch_list[@]}"; do
    if [ -x "$bin" ]; then o=$(values "ours-$b"); else o="NA NA NA"; fi
    t=$(values "theirs-$b")
    awk -v n="$records" -v b="$b" -v o="$o" -v t="$t" 'BEGIN {
      split(o, O, " "); split(t, T, " ")
      printf "  batch %-6s ours %9s rec/s %7s us/rec %9s ms   theirs %9s rec/s %7s us/rec %9s ms\n", b,
        (O[1] == "NA" || O[1] == "") ? "n/a" : O[1], (O[3] == "NA" || O[3] == "") ? "n/a" : sprintf("%.1f", O[3] * 1e6 / n),
        (O[16] == "NA" || O[16] == "") ? "n/a" : O[16],
        (T[1] == "NA" || T[1] == "") ? "n/a" : T[1], (T[3] == "NA" || T[3] == "") ? "n/a" : sprintf("%.1f", T[3] * 1e6 / n),
        (T[16] == "NA" || T[16] == "") ? "n/a" : T[16]
    }'
  done
  echo
fi
echo "notes: both runtimes call the same single-process Python server (official SDK on aiohttp), restarted"
echo "       for every run, which is usually the bottleneck: records/s compares how well each runtime"
echo "       keeps it busy; runtime CPU compares the runtimes' own cost. Latency runs from each record's"
echo "       due time at its source (its place in the --rate schedule; unpaced, when it was made) to its"
echo "       invocation at the server, server queueing included; without --rate it mostly measures the"
echo "       backlog of an as-fast-as-possible run (with --rate, records/s is that rate). Theirs' source"
echo "       stays open after its last record (a bounded StateFun job ends and drops in-flight remote"
echo "       calls); it stops once the server reports every id complete. Figures from a shared or busy"
echo "       machine are indicative only."
exit "$failed"
