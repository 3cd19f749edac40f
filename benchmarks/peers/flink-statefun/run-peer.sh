#!/usr/bin/env bash
# Runs the Apache Flink StateFun 3.3.0 peer of `statefun bench` (see ../README.md).
#
#   run-peer.sh [--xmx 2g] [--build-only] [PeerBench options]
#   run-peer.sh --remote [--xmx 2g] [RemotePeerBench options]
#   run-peer.sh --module [--xmx 2g] --module-yaml PATH [--flink-conf-dir DIR]
#
# PeerBench options: --records N --keys K --value-size B --parallelism P
#   --state heap|rocksdb --checkpoint-interval 1s --rocksdb-managed-mb 64
#   --linger S --timeout S
# RemotePeerBench options (the remote-function peer, see ../run-remote.sh):
#   --module-yaml PATH --stats-url http://127.0.0.1:PORT --records N --keys K
#   --value-size B --parallelism P --timeout S [--rate R] [--stamp] [--buffer-timeout MS]
# --module runs a module.yaml (remote functions, Kafka/Kinesis I/O) with the settings of
#   DIR/flink-conf.yaml until the JVM is stopped (ModulePeer; examples/migration/run-on-flink.sh).
#
# Builds the Maven project on first use (downloads ~330 MB from Maven Central
# into ~/.m2 the first time; offline afterwards), then replaces itself with the
# JVM (exec), so /usr/bin/time around this script measures the JVM alone.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
xmx=2g
build_only=0
main_class=statefun.peer.PeerBench
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --xmx) [ $# -ge 2 ] || { echo "run-peer.sh: --xmx needs a value" >&2; exit 2; }
           xmx=$2; shift 2 ;;
    --xmx=*) xmx=${1#--xmx=}; shift ;;
    --build-only) build_only=1; shift ;;
    --remote) main_class=statefun.peer.RemotePeerBench; shift ;;
    --module) main_class=statefun.peer.ModulePeer; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "run-peer.sh: '$tool' not found: the Flink StateFun peer needs a JDK (17 tested) and Maven 3" >&2
    exit 127
  fi
done

classes=$here/target/classes
cpfile=$here/target/classpath.txt

# Up to date when the class path file and the main class are newer than every source.
up_to_date() {
  [ -s "$cpfile" ] && [ -f "$classes/statefun/peer/PeerBench.class" ] || return 1
  [ -z "$(find "$here/pom.xml" "$here/src" -newer "$classes/statefun/peer/PeerBench.class" -type f 2>/dev/null)" ]
}

# Maven, quiet, without its terminal colour codes, onto stderr.
mvn_compile() {
  (cd "$here" && mvn -B -q -Dstyle.color=never "$@" compile </dev/null 2>&1) \
    | sed 's/\x1b\[[0-9;]*m//g' >&2
}

if ! up_to_date; then
  if [ -s "$cpfile" ]; then
    echo "run-peer.sh: rebuilding the peer (mvn -q -o compile)" >&2
    if ! mvn_compile -o; then
      echo "run-peer.sh: offline build failed, retrying online" >&2
      mvn_compile
    fi
  else
    echo "run-peer.sh: first build of the Flink StateFun 3.3.0 peer: Maven downloads" \
      "a few hundred MB (~330 MB: StateFun, Flink 1.16.2, RocksDB) into ~/.m2 once" >&2
    mvn_compile
  fi
  # The class file may be unchanged (javac skips), so mark the build as fresh.
  touch "$classes/statefun/peer/PeerBench.class"
fi
[ "$build_only" = 1 ] && exit 0

# The module opens Flink 1.18's scripts pass on Java 17 (env.java.opts.all);
# Flink 1.16's Kryo/serializers and the MiniCluster need several of them.
jvm_opens=(
  --add-exports=java.base/sun.net.util=ALL-UNNAMED
  --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.lang.invoke=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.math=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED
  --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
  --add-opens=java.sql/java.sql=ALL-UNNAMED
  --add-opens=java.rmi/sun.rmi.transport=ALL-UNNAMED
)

exec java -Xmx"$xmx" "${jvm_opens[@]}" \
  -cp "$classes:$(cat "$cpfile")" \
  "$main_class" ${args[@]+"${args[@]}"} </dev/null
