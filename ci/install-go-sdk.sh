#!/usr/bin/env bash
# Downloads the official StateFun Go SDK (github.com/apache/flink-statefun/statefun-sdk-go/v3)
# for the Go greeter interop test (examples/go-greeter). Idempotent: Go caches modules.
set -euo pipefail
cd "$(dirname "$0")/../examples/go-greeter"
if ! command -v go >/dev/null 2>&1; then
  echo "error: no Go toolchain on PATH; install Go (https://go.dev/doc/install or apt-get install golang)" >&2
  exit 1
fi
go mod download
go build -o /dev/null .
echo "Go SDK ready: $(go list -m github.com/apache/flink-statefun/statefun-sdk-go/v3)"
