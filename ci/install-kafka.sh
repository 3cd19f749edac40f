#!/usr/bin/env bash
# Assembles Apache Kafka 4.x from Maven Central, starts one KRaft broker+controller on
# 127.0.0.1 (free ports) and prints `KAFKA_BOOTSTRAP=127.0.0.1:<port>` as its last line.
# The Kafka connector tests (connectors/tests/kafka*.rs) read that address from env
# KAFKA_BOOTSTRAP or from $KAFKA_HOME/bootstrap.
#
# Idempotent: the jars are cached in $KAFKA_HOME/lib (resolved once with
# `mvn dependency:copy-dependencies` on a generated pom), and when the broker started by an
# earlier call still answers, it is reused as is.
#
#   KAFKA_HOME     cache dir (default: $HOME/.cache/statefun-rs/kafka)
#   KAFKA_VERSION  the kafka_2.13 version (default 4.4.0; if it does not resolve, the newest
#                  4.x in FALLBACK_VERSIONS that does is used and announced on stderr)
#   KAFKA_STOP=1   stop the broker started by an earlier call and exit
set -euo pipefail

KAFKA_HOME="${KAFKA_HOME:-$HOME/.cache/statefun-rs/kafka}"
WANTED="${KAFKA_VERSION:-4.4.0}"
FALLBACK_VERSIONS="4.3.0 4.2.0 4.1.1 4.1.0 4.0.1 4.0.0"
LIB="$KAFKA_HOME/lib"
LOG4J=2.25.5
PIDFILE="$KAFKA_HOME/broker.pid"
BOOTFILE="$KAFKA_HOME/bootstrap"
mkdir -p "$KAFKA_HOME"

source "$(dirname "$0")/lib/prereq.sh"
prereq_tool java openjdk-17-jre-headless "running the broker" java -version
prereq_pkg maven "resolving the Kafka jars from Maven Central"
prereq_tool python3 - "picking free ports" python3 --version
prereq_install
prereq_report

log() { echo "install-kafka: $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

broker_alive() {
  [ -f "$PIDFILE" ] && [ -f "$BOOTFILE" ] || return 1
  local pid boot
  pid=$(cat "$PIDFILE")
  boot=$(cat "$BOOTFILE")
  kill -0 "$pid" 2>/dev/null || return 1
  port_open "${boot%:*}" "${boot##*:}"
}

if [ "${KAFKA_STOP:-}" = 1 ]; then
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    log "stopped broker $(cat "$PIDFILE")"
  fi
  rm -f "$PIDFILE" "$BOOTFILE"
  exit 0
fi

if broker_alive; then
  log "reusing the running broker (pid $(cat "$PIDFILE"))"
  echo "KAFKA_BOOTSTRAP=$(cat "$BOOTFILE")"
  exit 0
fi

# ---- jars ---------------------------------------------------------------------------------
resolve() { # version -> 0 when the jars of that version are in $LIB
  local v="$1" dir="$KAFKA_HOME/pom-$1"
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>statefun-rs</groupId>
  <artifactId>kafka-broker-for-tests</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-server</artifactId><version>$v</version></dependency>
    <!-- Kafka 4.x logs through slf4j 1.7 to log4j2; the broker classes (kafka.Kafka,
         kafka.tools.StorageTool) are in kafka_2.13, so kafka-tools is not needed. -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIB.tmp"
  if mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIB.tmp" -DincludeScope=runtime >"$dir/mvn.log" 2>&1; then
    rm -rf "$LIB" && mv "$LIB.tmp" "$LIB" && echo "$v" >"$KAFKA_HOME/version"
    return 0
  fi
  return 1
}

if [ -f "$KAFKA_HOME/version" ] && [ -d "$LIB" ]; then
  VERSION=$(cat "$KAFKA_HOME/version")
else
  VERSION=""
  for v in "$WANTED" $FALLBACK_VERSIONS; do
    log "resolving org.apache.kafka:kafka_2.13:$v from Maven Central"
    if resolve "$v"; then VERSION="$v"; break; fi
    log "kafka_2.13:$v did not resolve (see $KAFKA_HOME/pom-$v/mvn.log)"
  done
  [ -n "$VERSION" ] || { log "error: no Kafka 4.x version resolved"; exit 1; }
  [ "$VERSION" = "$WANTED" ] || log "NOTE: using Kafka $VERSION instead of $WANTED"
fi
log "Kafka $VERSION jars in $LIB"

# ---- config -------------------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PORT=$(free_port)
CPORT=$(free_port)
while [ "$CPORT" = "$PORT" ]; do CPORT=$(free_port); done
RUN=$(mktemp -d "${TMPDIR:-/tmp}/statefun-kafka.XXXXXX")
cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$CPORT
log.dirs=$RUN/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
cat >"$RUN/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName=$RUN/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.apache.name=org.apache.kafka
logger.apache.level=INFO
EOF

JAVA_OPTS=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$RUN/log4j2.properties")
if java -cp "$LIB/*" -XX:+IgnoreUnrecognizedVMOptions "${JAVA_OPTS[@]}" \
    kafka.tools.StorageTool version >/dev/null 2>&1; then
  STORAGE=kafka.tools.StorageTool
else
  STORAGE=org.apache.kafka.tools.StorageTool
fi
CLUSTER_ID=$(java -cp "$LIB/*" "${JAVA_OPTS[@]}" "$STORAGE" random-uuid | tail -1)
java -cp "$LIB/*" "${JAVA_OPTS[@]}" "$STORAGE" format -t "$CLUSTER_ID" \
  -c "$RUN/server.properties" >"$RUN/format.log" 2>&1 || {
  log "error: formatting KRaft storage failed:"; cat "$RUN/format.log" >&2; exit 1; }

# ---- start --------------------------------------------------------------------------------
nohup java -cp "$LIB/*" "${JAVA_OPTS[@]}" kafka.Kafka "$RUN/server.properties" \
  >"$RUN/stdout.log" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$PIDFILE"
log "broker pid $PID, logs in $RUN (server.log, stdout.log)"

for _ in $(seq 1 120); do
  if ! kill -0 "$PID" 2>/dev/null; then
    log "error: the broker exited during startup:"
    tail -50 "$RUN/stdout.log" "$RUN/server.log" >&2 2>/dev/null || true
    rm -f "$PIDFILE"
    exit 1
  fi
  if grep -q "Kafka Server started" "$RUN/server.log" 2>/dev/null \
      && port_open 127.0.0.1 "$PORT"; then
    echo "127.0.0.1:$PORT" >"$BOOTFILE"
    log "broker up on 127.0.0.1:$PORT"
    echo "KAFKA_BOOTSTRAP=127.0.0.1:$PORT"
    exit 0
  fi
  sleep 0.5
done
log "error: the broker did not start within 60 s; see $RUN/server.log"
kill "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
exit 1
