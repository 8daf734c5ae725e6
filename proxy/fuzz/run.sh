#!/usr/bin/env bash
# Fuzz Warden's HTTP/1 edge (request heads and chunked bodies) for a bounded time, then replay
# the seeds and regressions on stable. A crash is copied to regressions/<target>-<hash>, where
# `cargo test -p warden-proxy --test http1_regressions` keeps replaying it once fixed.
#
#   proxy/fuzz/run.sh [SECONDS_PER_TARGET]     (default 300; for a nightly job)
#
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz, which this
# installs from crates.io when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS_PER_TARGET="${1:-300}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
status=0
for target in http1_request chunked_body; do
  mkdir -p "corpus/$target" "artifacts/$target"
  if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -timeout=10; then
    status=1
    for crash in artifacts/"$target"/crash-* artifacts/"$target"/timeout-*; do
      [ -e "$crash" ] || continue
      cp "$crash" "regressions/$target-$(basename "$crash" | cut -c1-20)"
      echo "kept $crash as a regression" >&2
    done
  fi
done
(cd ../.. && cargo test -p warden-proxy --test http1_regressions)
exit "$status"
