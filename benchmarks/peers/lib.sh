# Shell helpers shared by run.sh and run-remote.sh (sourced, not run).
# Each script sets `me` (its name, for messages) and `help_lines` (the range of
# its header comment that --help prints) before sourcing this file.

usage() {
  sed -n "${help_lines}p" "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# need OPTION [VALUE...]: an option that takes a value must have one.
need() { [ $# -ge 2 ] || { echo "$me: $1 needs a value" >&2; exit 2; }; }

# require_peer_tools: what running the Flink StateFun peer and timing both sides takes.
require_peer_tools() {
  local tool
  for tool in java mvn; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "$me: '$tool' not found: the Flink StateFun peer needs a JDK (17 tested) and Maven 3" >&2
      exit 127
    fi
  done
  if [ ! -x /usr/bin/time ]; then
    echo "$me: /usr/bin/time (GNU time) not found; install the 'time' package" >&2
    exit 127
  fi
}
