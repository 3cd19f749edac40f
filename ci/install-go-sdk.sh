#!/usr/bin/env bash
# Downloads the official StateFun Go SDK (github.com/apache/flink-statefun/statefun-sdk-go/v3)
# for the Go greeter interop test (examples/go-greeter). Idempotent: Go caches modules.
set -euo pipefail
source "$(dirname "$0")/lib/prereq.sh"
# Go comes with the machine (not from a Debian package here); Debian's golang is older than
# the SDK's go.mod asks for, so a missing toolchain is an error with the fix, not an apt install.
prereq_tool go - "the Go SDK's toolchain (https://go.dev/doc/install)" go version
cd "$(dirname "$0")/../examples/go-greeter"
go mod download
go build -o /dev/null .
prereq_report
echo "Go SDK ready: $(go list -m github.com/apache/flink-statefun/statefun-sdk-go/v3)"
