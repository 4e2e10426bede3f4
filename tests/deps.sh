#!/usr/bin/env bash
# Installs the Debian 12 packages mpq builds and tests with (apt-get; sudo when not root).
# Sourced by examples/setup.sh and tests/run.sh. Does nothing when all are present.
mpq_packages=(build-essential cmake pkg-config libglpk-dev libsqlite3-dev libopenblas-dev libopenblas-pthread-dev
              liblapacke-dev libcjson-dev check sqlite3 clang libclang-rt-14-dev libopenmpi-dev openmpi-bin)

mpq_install_deps() {
  local missing=()
  for p in "${mpq_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "mpq: need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  echo "mpq: installing ${missing[*]}" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The shared models and data must sit beside the project (../shared from its root).
mpq_check_shared() {
  local root=$1 need=(models/stories260K/stories260K.bin models/stories260K/tok512.bin
                      data/tinystories-calib.tok512.u16 data/tinystories-eval.tok512.u16)
  for f in "${need[@]}"; do
    if [ ! -f "$root/../shared/$f" ]; then
      echo "mpq: missing ../shared/$f (the shared models and data must be checked out beside the project, at $(cd "$root/.." && pwd)/shared)" >&2
      return 1
    fi
  done
}
