#!/usr/bin/env bash
# Set up what is missing (cmake, the ONNX Runtime library from PyPI), build Warden (release) and
# run the whole stack: `warden up` starts the worker with the bundled model and the proxy in front
# of it, on loopback, and prints the endpoint, a demo API key and a curl example. Extra arguments
# go to `warden up` (see `warden up --help`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
tests/scripts/setup.sh --no-python
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --locked -p warden-proxy
exec "$CARGO_TARGET_DIR/release/warden" up "$@"
