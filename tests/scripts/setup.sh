#!/usr/bin/env bash
# Install what Warden's build and tests need, from package registries only (Debian/Ubuntu apt,
# PyPI). Idempotent: a second run installs nothing.
#   --no-python   skip the test clients' virtualenv (enough to build and run Warden)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WITH_PYTHON=1
[[ "${1:-}" == "--no-python" ]] && WITH_PYTHON=0

command -v cargo >/dev/null || { echo "setup: Rust is required (https://rustup.rs), then re-run" >&2; exit 1; }

pkgs=()
command -v cmake >/dev/null || pkgs+=(cmake)            # Pingora builds zlib-ng with it
command -v cc >/dev/null || pkgs+=(build-essential)
if ((WITH_PYTHON)) && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then pkgs+=(python3-venv); fi
if ((${#pkgs[@]})); then
  sudo=""; [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  echo "setup: installing ${pkgs[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

if ((WITH_PYTHON)); then
  venv="$ROOT/tests/.venv"
  req="$ROOT/tests/python/requirements.txt"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  stamp="$venv/.requirements.sha256"
  if ! (cd "$ROOT" && sha256sum --status -c "$stamp" 2>/dev/null); then
    echo "setup: installing pinned Python test clients into tests/.venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    (cd "$ROOT" && sha256sum tests/python/requirements.txt > "$stamp")
  fi
fi
