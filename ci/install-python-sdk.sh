#!/usr/bin/env bash
# Installs the official StateFun Python SDK (apache-flink-statefun 3.3.0) with the HTTP
# servers users serve it from (aiohttp, Flask on Werkzeug, gunicorn) into a venv, for the
# remote-function interop tests (remote/tests/python_sdk.rs, remote/tests/server_shapes.rs);
# and AWS's KPL-format record aggregator (aws-kinesis-agg, with the `six` its aggregator
# imports without declaring it), the independent producer of KPL-aggregated records for the
# Kinesis ingress tests (connectors/tests/kinesis_kpl.rs, connectors/tests/kpl/produce.py,
# examples/crash-counter/tests/kinesis_crash.rs).
#
# Idempotent: when the venv already imports the right SDK version it does nothing.
# Prints the venv's python path as its last line.
#
#   STATEFUN_VENV  where the venv lives (default: $HOME/.cache/statefun-rs/venv)
#   PYTHON         the interpreter that creates it (default: python3)
set -euo pipefail

VENV="${STATEFUN_VENV:-$HOME/.cache/statefun-rs/venv}"
PYTHON="${PYTHON:-python3}"
SDK_VERSION="3.3.0"
KPL_AGG_VERSION="1.2.3"

source "$(dirname "$0")/lib/prereq.sh"
prereq_tool "$PYTHON" - "the interpreter that creates the venv" "$PYTHON" --version
prereq_tool "$PYTHON -m venv" python3-venv "creating the venv" "$PYTHON" -c 'import ensurepip, venv; print("venv and ensurepip import")'
prereq_install

check() {
  "$VENV/bin/python" - "$SDK_VERSION" "$KPL_AGG_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import aiohttp, flask, gunicorn, statefun, google.protobuf  # noqa: F401
from aws_kinesis_agg.aggregator import RecordAggregator  # noqa: F401
assert version("apache-flink-statefun") == sys.argv[1]
assert version("aws-kinesis-agg") == sys.argv[2]
assert google.protobuf.__version__.startswith("3.20."), google.protobuf.__version__
PY
}

if [ -x "$VENV/bin/python" ] && check; then
  echo "python SDK already installed in $VENV" >&2
else
  echo "installing apache-flink-statefun==$SDK_VERSION into $VENV" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  # The SDK requires protobuf >=3.11.3,<4; its generated *_pb2 modules are tested with
  # 3.20.x (the last 3.x line, and the one the byte vectors in sdk/ were made with), so pin it.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "apache-flink-statefun==$SDK_VERSION" "protobuf>=3.20.3,<3.21" "aiohttp>=3.8,<4" \
    "flask>=3,<4" "gunicorn>=22,<24" "aws-kinesis-agg==$KPL_AGG_VERSION" "six>=1.16,<2" >&2
  if ! check; then
    echo "error: the venv at $VENV does not import statefun $SDK_VERSION with protobuf 3.20.x, aiohttp, flask, gunicorn and aws-kinesis-agg $KPL_AGG_VERSION" >&2
    exit 1
  fi
fi
prereq_report
echo "install-python-sdk: python SDK venv: $("$VENV/bin/python" -c 'from importlib.metadata import version as v; print("apache-flink-statefun", v("apache-flink-statefun"), "aiohttp", v("aiohttp"), "flask", v("flask"), "gunicorn", v("gunicorn"), "aws-kinesis-agg", v("aws-kinesis-agg"))')" >&2
echo "$VENV/bin/python"
