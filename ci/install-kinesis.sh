#!/usr/bin/env bash
# Installs and starts the Kinesis emulator the Kinesis connector tests run against.
#
# The emulator is `kinesis-local` from npm (etspaceman/kinesis-mock compiled to JavaScript): it
# speaks the Kinesis JSON API including the ARN-based calls, resharding and throughput limits.
# It is installed into $KINESIS_HOME (default ~/.cache/statefun-rs/kinesis) once and reused.
#
# The emulator hard-codes 0.0.0.0 as its listen address; a small preload (loopback.js, written
# next to it) rewrites every listen to 127.0.0.1, so it is never reachable from other hosts.
# Ports are picked free at start. It keeps no data on disk (SHOULD_PERSIST_DATA=false).
#
# Idempotent: when the endpoint in $KINESIS_HOME/endpoint answers, that emulator is reused.
# Prints `KINESIS_ENDPOINT=http://127.0.0.1:<port>` and writes the URL to $KINESIS_HOME/endpoint;
# tests read env KINESIS_ENDPOINT or that file. Stop it with: kill "$(cat "$KINESIS_HOME/pid")".
set -euo pipefail

KINESIS_HOME="${KINESIS_HOME:-$HOME/.cache/statefun-rs/kinesis}"
VERSION="0.6"
mkdir -p "$KINESIS_HOME"

source "$(dirname "$0")/lib/prereq.sh"
prereq_tool node - "running kinesis-local (Node.js >= 18)" node --version
prereq_tool npm - "installing kinesis-local from npm" npm --version
prereq_pkg curl "asking the emulator whether it answers"
prereq_install
prereq_report

cd "$KINESIS_HOME"

# Answers a ListStreams call (any signature is accepted by the emulator, but a date is required).
answers() {
    local url="$1"
    curl -s -m 3 -X POST "$url/" \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'X-Amz-Target: Kinesis_20131202.ListStreams' \
        -H "X-Amz-Date: $(date -u +%Y%m%dT%H%M%SZ)" \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0' \
        -d '{}' 2>/dev/null | grep -q '"StreamNames"'
}

if [[ -f endpoint ]] && answers "$(cat endpoint)"; then
    echo "KINESIS_ENDPOINT=$(cat endpoint)"
    exit 0
fi


if [[ ! -f node_modules/kinesis-local/main.js ]]; then
    npm install --no-audit --no-fund --no-save "kinesis-local@$VERSION" >&2
fi

cat > loopback.js <<'JS'
// Preloaded into kinesis-local (node --require): the emulator hard-codes 0.0.0.0;
// rewrite every server listen to 127.0.0.1 so it never listens beyond loopback.
const net = require('net');
const orig = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length > 0 && typeof args[0] === 'object' && args[0] !== null && !Array.isArray(args[0])) {
    args[0] = Object.assign({}, args[0], { host: '127.0.0.1' });
  } else if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    if (typeof args[1] === 'string') { args[1] = '127.0.0.1'; } else { args.splice(1, 0, '127.0.0.1'); }
  }
  return orig.apply(this, args);
};
JS

free_port() {
    node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

# A stale emulator of ours that stopped answering: stop it before starting another.
if [[ -f pid ]] && kill -0 "$(cat pid)" 2>/dev/null; then
    kill "$(cat pid)" 2>/dev/null || true
fi
rm -f endpoint pid

PLAIN_PORT="$(free_port)"
TLS_PORT="$(free_port)"
while [[ "$TLS_PORT" == "$PLAIN_PORT" ]]; do TLS_PORT="$(free_port)"; done
URL="http://127.0.0.1:$PLAIN_PORT"

# Short stream-state transitions keep tests fast; the limits are the service's own.
KINESIS_MOCK_PLAIN_PORT="$PLAIN_PORT" KINESIS_MOCK_TLS_PORT="$TLS_PORT" \
KINESIS_MOCK_CERT_PATH="$KINESIS_HOME/node_modules/kinesis-local/server.json" \
SHOULD_PERSIST_DATA=false LOG_LEVEL="${KINESIS_LOG_LEVEL:-WARN}" \
CREATE_STREAM_DURATION=200ms DELETE_STREAM_DURATION=200ms SPLIT_SHARD_DURATION=200ms \
MERGE_SHARDS_DURATION=200ms UPDATE_SHARD_COUNT_DURATION=200ms SHARD_LIMIT=1000 \
    nohup node --require "$KINESIS_HOME/loopback.js" node_modules/kinesis-local/main.js \
    >"$KINESIS_HOME/emulator.log" 2>&1 </dev/null &
echo $! > pid

for _ in $(seq 1 120); do
    if answers "$URL"; then
        echo "$URL" > endpoint
        echo "KINESIS_ENDPOINT=$URL"
        exit 0
    fi
    if ! kill -0 "$(cat pid)" 2>/dev/null; then
        echo "install-kinesis: the emulator exited; its log ($KINESIS_HOME/emulator.log):" >&2
        tail -20 "$KINESIS_HOME/emulator.log" >&2
        exit 1
    fi
    sleep 0.5
done
echo "install-kinesis: the emulator did not answer on $URL within 60 s; log: $KINESIS_HOME/emulator.log" >&2
exit 1
