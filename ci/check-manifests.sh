#!/usr/bin/env bash
# Checks deploy/kubernetes/*.yaml with ci/manifest-check: strict decoding of every document into
# the upstream k8s.io/api types (unknown or mistyped fields fail), plus what statefun needs of
# its StatefulSet (headless Service, Parallel pods, -n = replicas, --process-from-hostname,
# --hosts naming the pods, a volume claim per pod). A schema checker such as kubeconform would
# need its JSON schemas from GitHub, which cannot be reached here; the API types are the schema
# those are generated from.
set -euo pipefail
source "$(dirname "$0")/lib/prereq.sh"
prereq_tool go - "decoding the manifests with k8s.io/api (https://go.dev/doc/install)" go version
prereq_report
cd "$(dirname "$0")/manifest-check"
go run . ../../deploy/kubernetes/*.yaml
