#!/usr/bin/env bash
# Set up what is missing, build Warden (release) and run it with the example config
# (proxy/warden.example.toml, or $WARDEN_CONFIG) in front of the upstream that config names.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
tests/scripts/setup.sh --no-python
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release --locked -p warden-proxy
config="${WARDEN_CONFIG:-proxy/warden.example.toml}"
"$CARGO_TARGET_DIR/release/warden" check-config "$config"
cat >&2 <<MSG

Warden: proxy http://127.0.0.1:8080/v1, admin http://127.0.0.1:9090 (/healthz /readyz /metrics)
Demo API key (example config only): sk-warden-demo-key-do-not-use-in-production
Try:
  curl -s http://127.0.0.1:8080/v1/chat/completions \\
    -H 'Authorization: Bearer sk-warden-demo-key-do-not-use-in-production' \\
    -H 'Content-Type: application/json' \\
    -d '{"model":"warden-tiny","messages":[{"role":"user","content":"Hello"}]}'
Ctrl-C stops it (in-flight requests get the grace period).

MSG
exec "$CARGO_TARGET_DIR/release/warden" serve --config "$config"
