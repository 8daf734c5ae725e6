#!/usr/bin/env bash
# The whole test suite: Rust unit and end-to-end tests, then the OpenAI Python SDK against the
# real binaries. Sets up anything missing first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
tests/scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --workspace --bins --locked
cargo test --workspace --locked
WARDEN_BIN="$CARGO_TARGET_DIR/debug/warden" FAKE_UPSTREAM_BIN="$CARGO_TARGET_DIR/debug/fake-upstream" \
  tests/.venv/bin/python -m pytest -q -p no:cacheprovider tests/python
