#!/usr/bin/env bash
# Assembles Apache Kafka 4.x from Maven Central, starts one KRaft broker+controller on
# 127.0.0.1 (free ports) and prints `KAFKA_BOOTSTRAP=127.0.0.1:<port>` as its last line.
# The Kafka connector tests (connectors/tests/kafka*.rs) read that address from env
# KAFKA_BOOTSTRAP or from $KAFKA_HOME/bootstrap.
#
# Idempotent: the jars are cached in $KAFKA_HOME/lib (resolved once with
# `mvn dependency:copy-dependencies` on a generated pom), and when the broker started by an
# earlier call still answers on all its listeners and $KAFKA_HOME/secure.env is there, it is
# reused as is. A live broker without them (started by an older version of this script) is
# stopped and replaced, so that no broker is left running without a pid file.
#
#   KAFKA_HOME     cache dir (default: $HOME/.cache/statefun-rs/kafka)
#   KAFKA_VERSION  the kafka_2.13 version (default 4.4.0; if it does not resolve, the newest
#                  4.x in FALLBACK_VERSIONS that does is used and announced on stderr)
#   KAFKA_STOP=1   stop the broker started by an earlier call (waiting for it to exit) and
#                  exit; the pid file's process is only killed when its command line is a
#                  kafka.Kafka on $KAFKA_HOME/lib, never a process that reused the pid
#
# Listeners, each on its own free port of 127.0.0.1 (no authorizer: every authenticated
# principal may do everything, so transactions and consumer groups work on all of them):
#   PLAINTEXT       no TLS, no SASL. Also the inter-broker listener; the CONTROLLER listener
#                   is plaintext too. Its address is in `bootstrap` and on the last stdout line.
#   SSL             server TLS only; the client needs the test CA (KAFKA_CA_PEM).
#   MTLS            security protocol SSL with listener.name.mtls.ssl.client.auth=required:
#                   the client must present a certificate signed by the same test CA
#                   (KAFKA_CLIENT_CERT_PEM + KAFKA_CLIENT_KEY_PEM, or KAFKA_CLIENT_P12).
#   SASL_SSL        TLS as SSL, plus SASL SCRAM-SHA-512, SCRAM-SHA-256 (user KAFKA_SCRAM_USER,
#                   created with `StorageTool format --add-scram`) and PLAIN (KAFKA_PLAIN_USER).
#   SASL_PLAINTEXT  no TLS; SASL PLAIN (KAFKA_PLAIN_USER) and OAUTHBEARER with Kafka's default
#                   *unsecured* validator (OAuthBearerUnsecuredValidatorCallbackHandler): it
#                   accepts unsigned JWTs (header {"alg":"none"}, empty signature part) that
#                   have `sub` and an `exp` in the future; `iat` and `scope` are optional. A
#                   token with a signature or another alg fails with SASL authentication
#                   error {"status":"invalid_token"}.
#                   JAAS options set: unsecuredLoginStringClaim_sub="kafka-broker" (the
#                   broker's own login token, required by the login module), and for the
#                   validator unsecuredValidatorPrincipalClaimName="sub",
#                   unsecuredValidatorScopeClaimName="scope",
#                   unsecuredValidatorAllowableClockSkewMs="30000"; no
#                   unsecuredValidatorRequiredScope, so any scope (or none) is accepted. A
#                   librdkafka client with sasl.oauthbearer.method=oidc works against a local
#                   token endpoint that returns {"access_token": "<unsigned JWT>", ...}.
# The broker's TLS material is given inline in PEM (ssl.keystore.type=PEM with
# ssl.keystore.certificate.chain/ssl.keystore.key, ssl.truststore.type=PEM with
# ssl.truststore.certificates); no keytool, no JKS.
#
# $KAFKA_HOME/tls/ (made with openssl once per KAFKA_HOME, then reused; key files, the
# PKCS#12 file and the password files are mode 600; the passwords are throwaway test
# secrets from /dev/urandom):
#   ca.pem ca.key                   test CA (RSA 2048, 10 years)
#   broker.pem broker.key           broker cert, SAN IP:127.0.0.1 and DNS:localhost
#   client.pem client.key           client cert (CN=statefun-rs-test-client) for MTLS
#   client.p12 client.p12.password  the same client cert+key (+ CA) as PKCS#12
#   untrusted-ca.pem untrusted-ca.key  an unrelated CA, for negative tests
#   scram.password plain.password   the SASL passwords
#
# $KAFKA_HOME/secure.env (mode 600) is written once the broker is up: `KEY=value` lines,
# values never quoted (the script refuses a KAFKA_HOME whose path would need quoting), so it
# can be sourced by a shell or split at the first `=`. Keys:
#   KAFKA_BOOTSTRAP KAFKA_SSL_BOOTSTRAP KAFKA_MTLS_BOOTSTRAP KAFKA_SASL_SSL_BOOTSTRAP
#   KAFKA_SASL_PLAINTEXT_BOOTSTRAP KAFKA_TLS_DIR KAFKA_CA_PEM KAFKA_UNTRUSTED_CA_PEM
#   KAFKA_CLIENT_CERT_PEM KAFKA_CLIENT_KEY_PEM KAFKA_CLIENT_P12 KAFKA_CLIENT_P12_PASSWORD
#   KAFKA_SCRAM_USER KAFKA_SCRAM_PASSWORD KAFKA_SCRAM_MECHANISMS KAFKA_PLAIN_USER
#   KAFKA_PLAIN_PASSWORD KAFKA_OAUTHBEARER_VALIDATOR (=unsecured)
# The secure addresses are printed on stderr as well; stdout stays the one KAFKA_BOOTSTRAP
# line.
set -euo pipefail

KAFKA_HOME="${KAFKA_HOME:-$HOME/.cache/statefun-rs/kafka}"
WANTED="${KAFKA_VERSION:-4.4.0}"
FALLBACK_VERSIONS="4.3.0 4.2.0 4.1.1 4.1.0 4.0.1 4.0.0"
LIB="$KAFKA_HOME/lib"
LOG4J=2.25.5
PIDFILE="$KAFKA_HOME/broker.pid"
BOOTFILE="$KAFKA_HOME/bootstrap"
SECURE_ENV="$KAFKA_HOME/secure.env"
TLS="$KAFKA_HOME/tls"
SCRAM_USER=alice
PLAIN_USER=bob
mkdir -p "$KAFKA_HOME"

source "$(dirname "$0")/lib/prereq.sh"
prereq_tool java openjdk-17-jre-headless "running the broker" java -version
prereq_pkg maven "resolving the Kafka jars from Maven Central"
prereq_tool python3 - "picking free ports" python3 --version
prereq_pkg openssl "making the test CA and certificates"
prereq_install
prereq_report

log() { echo "install-kafka: $*" >&2; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

env_get() { # KEY -> its value in $SECURE_ENV
  sed -n "s/^$1=//p" "$SECURE_ENV" | tail -1
}

our_broker() { # pid -> 0 when it is a broker on the jars of this KAFKA_HOME (not a reused pid)
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *"-cp $LIB/* "*" kafka.Kafka "*) return 0 ;; *) return 1 ;; esac
}

broker_alive() { # the broker of the pid file runs and answers on every listener
  [ -f "$PIDFILE" ] && [ -f "$BOOTFILE" ] || return 1
  local pid boot key
  pid=$(cat "$PIDFILE")
  boot=$(cat "$BOOTFILE")
  our_broker "$pid" || return 1
  port_open "${boot%:*}" "${boot##*:}" || return 1
  [ -f "$SECURE_ENV" ] || return 1
  for key in KAFKA_SSL_BOOTSTRAP KAFKA_MTLS_BOOTSTRAP KAFKA_SASL_SSL_BOOTSTRAP \
      KAFKA_SASL_PLAINTEXT_BOOTSTRAP; do
    boot=$(env_get "$key")
    [ -n "$boot" ] && port_open "${boot%:*}" "${boot##*:}" || return 1
  done
}

stop_broker() { # stops the broker of the pid file (waits up to 30 s) and forgets its files
  local pid
  if [ -f "$PIDFILE" ] && pid=$(cat "$PIDFILE") && our_broker "$pid"; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    log "stopped broker $pid"
  fi
  rm -f "$PIDFILE" "$BOOTFILE" "$SECURE_ENV"
}

if [ "${KAFKA_STOP:-}" = 1 ]; then
  stop_broker
  exit 0
fi

if broker_alive; then
  log "reusing the running broker (pid $(cat "$PIDFILE")) and its $SECURE_ENV:"
  sed 's/^/install-kafka:   /' "$SECURE_ENV" | grep -v PASSWORD= >&2
  echo "KAFKA_BOOTSTRAP=$(cat "$BOOTFILE")"
  exit 0
fi
if [ -f "$PIDFILE" ] && our_broker "$(cat "$PIDFILE")"; then
  log "the running broker (pid $(cat "$PIDFILE")) lacks the secure listeners or secure.env" \
    "(started by an older install-kafka.sh?): replacing it"
fi
stop_broker

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

# ---- TLS material and test credentials (once per KAFKA_HOME) ------------------------------
case "$TLS" in
  *[!A-Za-z0-9_./+@,:-]*) log "error: KAFKA_HOME '$KAFKA_HOME' has characters secure.env cannot hold unquoted"; exit 1 ;;
esac
TLS_FILES="ca.pem ca.key broker.pem broker.key client.pem client.key client.p12
  client.p12.password untrusted-ca.pem untrusted-ca.key scram.password plain.password"
tls_complete() {
  local f
  for f in $TLS_FILES; do [ -s "$TLS/$f" ] || return 1; done
}
make_tls() { # a separate bash: set -e holds in it although it is called as a condition
  bash -euo pipefail -s "$TLS" <<'SCRIPT'
umask 077 # every file 600 (the certificates are made 644 at the end)
d="$1.tmp"
rm -rf "$d" && mkdir -p "$d" && cd "$d"
secret() { od -An -N18 -tx1 /dev/urandom | tr -d ' \n'; }
serial() { echo "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"; }
key() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }
ca() { # name CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -set_serial "$(serial)" \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem"
}
leaf() { # name CN extendedKeyUsage [subjectAltName]
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid,issuer"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -set_serial "$(serial)" \
    -sha256 -days 3650 -extfile "$1.ext" -out "$1.pem"
  rm -f "$1.csr" "$1.ext"
}
ca ca "statefun-rs test CA"
ca untrusted-ca "statefun-rs untrusted test CA"
leaf broker localhost serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
leaf client statefun-rs-test-client clientAuth
secret >client.p12.password
secret >scram.password
secret >plain.password
openssl pkcs12 -export -in client.pem -inkey client.key -certfile ca.pem \
  -name statefun-rs-test-client -passout file:client.p12.password -out client.p12
chmod 644 ca.pem untrusted-ca.pem broker.pem client.pem && chmod 755 .
cd .. && rm -rf "$1" && mv "$d" "$1"
SCRIPT
}
if tls_complete; then
  log "reusing the test CA, certificates and passwords in $TLS"
else
  log "making a test CA, certificates and passwords in $TLS (openssl)"
  if ! make_tls 2>"$KAFKA_HOME/tls-make.log"; then
    log "error: making the TLS material failed:"
    tail -20 "$KAFKA_HOME/tls-make.log" >&2
    exit 1
  fi
fi
SCRAM_PASSWORD=$(cat "$TLS/scram.password")
PLAIN_PASSWORD=$(cat "$TLS/plain.password")
pem_value() { # file -> its text as one properties value (newlines as \n)
  awk '{printf "%s\\n", $0}' "$1"
}

# ---- config -------------------------------------------------------------------------------
# All six ports at once, each socket held until all are picked, so they differ.
read -r PORT CPORT SSL_PORT MTLS_PORT SASL_SSL_PORT SASL_PLAIN_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')
RUN=$(mktemp -d "${TMPDIR:-/tmp}/statefun-kafka.XXXXXX")
H=127.0.0.1
PLAIN_JAAS="org.apache.kafka.common.security.plain.PlainLoginModule required user_$PLAIN_USER=\"$PLAIN_PASSWORD\";"
SCRAM_JAAS="org.apache.kafka.common.security.scram.ScramLoginModule required;"
OAUTH_JAAS="org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required"
OAUTH_JAAS+=" unsecuredLoginStringClaim_sub=\"kafka-broker\""
OAUTH_JAAS+=" unsecuredValidatorPrincipalClaimName=\"sub\""
OAUTH_JAAS+=" unsecuredValidatorScopeClaimName=\"scope\""
OAUTH_JAAS+=" unsecuredValidatorAllowableClockSkewMs=\"30000\";"
(umask 077; touch "$RUN/server.properties") # it holds the broker key and the PLAIN passwords
cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$H:$PORT,CONTROLLER://$H:$CPORT,SSL://$H:$SSL_PORT,MTLS://$H:$MTLS_PORT,SASL_SSL://$H:$SASL_SSL_PORT,SASL_PLAINTEXT://$H:$SASL_PLAIN_PORT
advertised.listeners=PLAINTEXT://$H:$PORT,SSL://$H:$SSL_PORT,MTLS://$H:$MTLS_PORT,SASL_SSL://$H:$SASL_SSL_PORT,SASL_PLAINTEXT://$H:$SASL_PLAIN_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=1@$H:$CPORT
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
# TLS of the SSL, MTLS and SASL_SSL listeners (PEM inline; the truststore checks MTLS clients)
ssl.keystore.type=PEM
ssl.keystore.certificate.chain=$(pem_value "$TLS/broker.pem")
ssl.keystore.key=$(pem_value "$TLS/broker.key")
ssl.truststore.type=PEM
ssl.truststore.certificates=$(pem_value "$TLS/ca.pem")
ssl.client.auth=none
listener.name.mtls.ssl.client.auth=required
# SASL (no authorizer, so no super.users needed)
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$SCRAM_JAAS
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$SCRAM_JAAS
listener.name.sasl_ssl.plain.sasl.jaas.config=$PLAIN_JAAS
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN,OAUTHBEARER
listener.name.sasl_plaintext.plain.sasl.jaas.config=$PLAIN_JAAS
listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config=$OAUTH_JAAS
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
  -c "$RUN/server.properties" \
  --add-scram "SCRAM-SHA-512=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]" \
  --add-scram "SCRAM-SHA-256=[name=$SCRAM_USER,password=$SCRAM_PASSWORD]" \
  >"$RUN/format.log" 2>&1 || {
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
      && port_open $H "$PORT" && port_open $H "$SSL_PORT" && port_open $H "$MTLS_PORT" \
      && port_open $H "$SASL_SSL_PORT" && port_open $H "$SASL_PLAIN_PORT"; then
    (umask 077; cat >"$SECURE_ENV.tmp" <<EOF
KAFKA_BOOTSTRAP=$H:$PORT
KAFKA_SSL_BOOTSTRAP=$H:$SSL_PORT
KAFKA_MTLS_BOOTSTRAP=$H:$MTLS_PORT
KAFKA_SASL_SSL_BOOTSTRAP=$H:$SASL_SSL_PORT
KAFKA_SASL_PLAINTEXT_BOOTSTRAP=$H:$SASL_PLAIN_PORT
KAFKA_TLS_DIR=$TLS
KAFKA_CA_PEM=$TLS/ca.pem
KAFKA_UNTRUSTED_CA_PEM=$TLS/untrusted-ca.pem
KAFKA_CLIENT_CERT_PEM=$TLS/client.pem
KAFKA_CLIENT_KEY_PEM=$TLS/client.key
KAFKA_CLIENT_P12=$TLS/client.p12
KAFKA_CLIENT_P12_PASSWORD=$(cat "$TLS/client.p12.password")
KAFKA_SCRAM_USER=$SCRAM_USER
KAFKA_SCRAM_PASSWORD=$SCRAM_PASSWORD
KAFKA_SCRAM_MECHANISMS=SCRAM-SHA-512,SCRAM-SHA-256
KAFKA_PLAIN_USER=$PLAIN_USER
KAFKA_PLAIN_PASSWORD=$PLAIN_PASSWORD
KAFKA_OAUTHBEARER_VALIDATOR=unsecured
EOF
    ) && mv "$SECURE_ENV.tmp" "$SECURE_ENV"
    echo "$H:$PORT" >"$BOOTFILE"
    log "broker up on $H:$PORT (PLAINTEXT)"
    log "  SSL $H:$SSL_PORT, MTLS $H:$MTLS_PORT, SASL_SSL $H:$SASL_SSL_PORT" \
      "(SCRAM-SHA-512, SCRAM-SHA-256, PLAIN), SASL_PLAINTEXT $H:$SASL_PLAIN_PORT" \
      "(PLAIN, OAUTHBEARER unsecured); CA, certificates, users: $SECURE_ENV"
    echo "KAFKA_BOOTSTRAP=$H:$PORT"
    exit 0
  fi
  sleep 0.5
done
log "error: the broker did not start within 60 s; see $RUN/server.log"
kill "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
exit 1
