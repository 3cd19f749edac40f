#!/usr/bin/env bash
# Installs what `cargo build` needs before it starts, so a missing prerequisite fails in
# seconds with the fix instead of minutes into compiling C++:
#   - libclang-dev: bindgen (librocksdb-sys) loads libclang.so to generate RocksDB's bindings;
#   - g++: RocksDB's C++ is compiled from the crate's sources (Debian's librocksdb is too old);
#   - gcc, make: librdkafka is configured and built from rdkafka-sys's sources;
#   - pkg-config, zlib1g-dev: librdkafka links the system zlib (found with pkg-config);
#   - libssl-dev, libsasl2-dev, libcurl4-openssl-dev, libzstd-dev: librdkafka's TLS, SASL
#     GSSAPI (cyrus-sasl), OIDC token fetching (curl) and zstd codec, linked dynamically
#     against Debian's libraries (see docs/CONNECTORS.md, "Secured clusters", for why not
#     vendored); libsasl2-modules-gssapi-mit is cyrus-sasl's Kerberos plugin, loaded at run
#     time by `sasl.mechanisms: GSSAPI`.
# Detection is by dpkg package status (ci/lib/prereq.sh says why). After installing, it checks
# libclang the way bindgen will use it: a libclang.so that loads.
# Idempotent, and quick when everything is present. Ends with one line per prerequisite.
set -euo pipefail
source "$(dirname "$0")/lib/prereq.sh"

prereq_pkg libclang-dev "bindgen for RocksDB's bindings"
prereq_pkg g++ "RocksDB's C++"
prereq_pkg gcc "librdkafka's C"
prereq_pkg make "librdkafka's build"
prereq_pkg pkg-config "finding zlib for librdkafka"
prereq_pkg zlib1g-dev "librdkafka's gzip codec"
prereq_pkg libssl-dev "librdkafka's TLS (security.protocol SSL, SASL_SSL)"
prereq_pkg libsasl2-dev "librdkafka's SASL GSSAPI (Kerberos) through cyrus-sasl"
prereq_pkg libsasl2-modules-gssapi-mit "cyrus-sasl's Kerberos plugin for sasl.mechanisms GSSAPI"
prereq_pkg libcurl4-openssl-dev "librdkafka's OIDC token requests (sasl.oauthbearer.method oidc)"
prereq_pkg libzstd-dev "librdkafka's zstd codec"
prereq_tool cargo - "the Rust toolchain (rustup)" cargo --version
prereq_install

# bindgen (clang-sys) looks in `llvm-config --libdir`, then /usr/lib/llvm-*/lib, for a
# libclang.so it can dlopen. Check exactly that, not a glob that other packages also match.
libclang=""
for dir in $(llvm-config --libdir 2>/dev/null || true) /usr/lib/llvm-*/lib; do
  if [ -e "$dir/libclang.so" ]; then libclang="$dir/libclang.so"; break; fi
done
if [ -z "$libclang" ]; then
  prereq_report
  echo "install-build-deps: error: libclang-dev is installed but no libclang.so was found in /usr/lib/llvm-*/lib; set LIBCLANG_PATH to the directory holding libclang.so" >&2
  exit 1
fi
if ! python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$libclang" 2>/dev/null; then
  prereq_report
  echo "install-build-deps: error: $libclang does not load (dlopen failed); reinstall it: apt-get install --reinstall libclang-dev \$(dpkg -S $libclang | cut -d: -f1)" >&2
  exit 1
fi
prereq_report
echo "install-build-deps: libclang for bindgen: $libclang (loads)" >&2
echo "build dependencies present"
