# Prerequisite checks shared by the ci/install-*.sh scripts. Source it, declare what the
# script needs, then call `prereq_install` and `prereq_report`.
#
# Why by package status: a file glob matches files other packages ship too (the glob for
# libclang matched libclang-cpp.so.14, which is not libclang, and a fresh machine then failed
# minutes into the build). So a Debian package is present when dpkg says "install ok
# installed"; a tool that does not come from a Debian package here (java, go, node) is present
# when the tool itself answers with its version.
#
#   prereq_pkg PACKAGE WHY         need Debian package PACKAGE (installed with apt if missing)
#   prereq_tool NAME PKG WHY CMD…  need a tool that answers CMD…; PKG installs it ("-": none)
#   prereq_install                 installs what is missing (apt-get update once), or exits 1
#   prereq_report                  one line per prerequisite: name, how detected, outcome
#
# Every line goes to stderr, so scripts that print a result on stdout keep doing so.

_PREREQ_NAMES=()
_PREREQ_HOW=()
_PREREQ_STATE=()
_PREREQ_MISSING_PKGS=()
_PREREQ_SCRIPT="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

_prereq_log() { echo "$_PREREQ_SCRIPT: $*" >&2; }

prereq_pkg_installed() { # PACKAGE -> 0 when dpkg has it installed
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

prereq_pkg() { # PACKAGE WHY
  local pkg="$1" why="$2"
  _PREREQ_NAMES+=("$pkg ($why)")
  _PREREQ_HOW+=("dpkg package status")
  if prereq_pkg_installed "$pkg"; then
    _PREREQ_STATE+=("found: $(dpkg-query -W -f='${Version}' "$pkg")")
  else
    _PREREQ_STATE+=("missing")
    _PREREQ_MISSING_PKGS+=("$pkg")
  fi
}

prereq_tool() { # NAME PKG WHY CMD...
  local name="$1" pkg="$2" why="$3"
  shift 3
  local out
  _PREREQ_NAMES+=("$name ($why)")
  _PREREQ_HOW+=("\`$*\`")
  if command -v "$1" >/dev/null 2>&1 && out=$("$@" 2>&1) && [ -n "$out" ]; then
    _PREREQ_STATE+=("found: ${out%%$'\n'*}")
  elif [ "$pkg" = "-" ]; then
    _PREREQ_STATE+=("missing")
    _prereq_log "error: $name is missing and no Debian package installs it here; install it ($why) and re-run"
    prereq_report
    exit 1
  else
    _PREREQ_STATE+=("missing")
    _PREREQ_MISSING_PKGS+=("$pkg")
  fi
}

prereq_install() {
  [ ${#_PREREQ_MISSING_PKGS[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo -n"
    else
      _prereq_log "error: need ${_PREREQ_MISSING_PKGS[*]} but am not root and have no sudo; run: apt-get install ${_PREREQ_MISSING_PKGS[*]}"
      prereq_report
      exit 1
    fi
  fi
  _prereq_log "installing ${_PREREQ_MISSING_PKGS[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null 2>&1 || _prereq_log "warning: apt-get update failed; trying the install anyway"
  if ! $sudo apt-get install -y -qq --no-install-recommends "${_PREREQ_MISSING_PKGS[@]}" >/dev/null; then
    _prereq_log "error: apt-get install ${_PREREQ_MISSING_PKGS[*]} failed; install them by hand and re-run"
    prereq_report
    exit 1
  fi
  local i
  for i in "${!_PREREQ_STATE[@]}"; do
    [ "${_PREREQ_STATE[$i]}" = "missing" ] && _PREREQ_STATE[$i]="installed now"
  done
  for pkg in "${_PREREQ_MISSING_PKGS[@]}"; do
    if ! prereq_pkg_installed "$pkg"; then
      _prereq_log "error: apt-get reported success but dpkg does not list $pkg as installed"
      exit 1
    fi
  done
  _PREREQ_MISSING_PKGS=()
}

prereq_report() {
  local i
  for i in "${!_PREREQ_NAMES[@]}"; do
    _prereq_log "prerequisite ${_PREREQ_NAMES[$i]} — detected by ${_PREREQ_HOW[$i]} — ${_PREREQ_STATE[$i]}"
  done
}
