#!/usr/bin/env python3
"""Time to first token through Warden in front of the real worker, with the classifier layer in
`before` mode, in `overlap` mode, and off, in one run.

    python3 tests/bench/overlap.py [--requests 15] [--rounds 3] [--max-tokens 16]

One worker (`warden worker`, the bundled warden-tiny model, prefix cache off so every prompt is
prefilled whole) and one Warden with the shipped classifier on and three tenants that differ only
in `[tenants.guard]`: `classifier = false`, `classifier_mode = "before"` and
`classifier_mode = "overlap"`. Streaming chat requests, one at a time (what a single user sees), of
prompts of several sizes cut from the benchmark corpus' English prose, the three tenants
alternating request by request; each request's text differs (distinct slices), so nothing is
cached. TTFT is measured by the client: from sending the request to the first SSE event that
carries generated text. Reported per prompt size: TTFT p50 and p90 per tenant (median over rounds)
and what the classifier adds in each mode against the tenant with it off.

Needs a release build of `warden` (`cargo build --release -p warden-proxy`) and
`tests/scripts/setup.sh` (ONNX Runtime, the worker's model). Everything runs on this machine.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"off": "sk-bench-classifier-off-0001", "before": "sk-bench-classifier-before-01",
        "overlap": "sk-bench-classifier-overlap-1"}
TENANT_GUARD = {"off": "classifier = false", "before": 'classifier_mode = "before"',
                "overlap": 'classifier_mode = "overlap"'}


def wait_http(port, path, what, log):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"{what} not ready:\n{Path(log).read_text()}")


def ttft(port, key, text, max_tokens):
    """Seconds from sending the request to the first SSE event with generated text; and the status."""
    body = json.dumps({"model": "warden-tiny", "messages": [{"role": "user", "content": text}],
                       "stream": True, "max_tokens": max_tokens, "temperature": 0})
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    t0 = time.perf_counter()
    c.request("POST", "/v1/chat/completions", body=body,
              headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                       "Connection": "close"})
    r = c.getresponse()
    if r.status != 200:
        r.read()
        return None, r.status
    first = None
    while True:
        line = r.fp.readline()
        if not line or line.startswith(b"data: [DONE]"):
            break
        if first is None and line.startswith(b"data:") and b'"content":"' in line \
                and b'"content":""' not in line:
            first = time.perf_counter() - t0
    c.close()
    return first, 200


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=15, help="requests per tenant, size and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--sizes", default="200,500,800",
                    help="prompt sizes in bytes (the worker's context is 512 tokens)")
    args = ap.parse_args()
    warden = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "warden"
    if not warden.exists():
        sys.exit(f"{warden} missing: cargo build --release -p warden-proxy")
    ort = ROOT / "inference" / ".ort" / "libonnxruntime.so.1.31.1"
    env = dict(os.environ, ORT_DYLIB_PATH=str(ort))
    tmp = Path(tempfile.mkdtemp(prefix="warden-overlap-"))
    prose = (ROOT / "guards" / "benches" / "corpus" / "prose_en.txt").read_text(encoding="utf-8")

    procs = []
    try:
        wport = free_port()
        procs.append(subprocess.Popen(
            [str(warden), "worker", "--model", str(ROOT / "inference" / "model"), "--listen",
             f"127.0.0.1:{wport}", "--served-model-name", "warden-tiny", "--prefix-cache-mib", "0"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "worker.log", "wb"), env=env))
        wait_http(wport, "/health", "worker", tmp / "worker.log")
        proxy, admin = free_port(), free_port()
        hashes = {t: subprocess.run([str(warden), "keys", "hash"], input=k.encode(), capture_output=True,
                                    check=True).stdout.decode().strip() for t, k in KEYS.items()}
        tenants = "".join(
            f'[[tenants]]\nname = "{t}"\napi_keys = ["{hashes[t]}"]\n[tenants.guard]\n{TENANT_GUARD[t]}\n'
            for t in KEYS)
        cfg = tmp / "warden.toml"
        cfg.write_text(f"""
[server]
listen = "127.0.0.1:{proxy}"
[admin]
listen = "127.0.0.1:{admin}"
[logging]
level = "warn"
[guard]
classifier = "on"
classifier_dir = "{ROOT / 'guards' / 'models' / 'classifier'}"
[[upstreams]]
name = "worker"
address = "127.0.0.1:{wport}"
models = ["warden-tiny"]
health_path = "/health"
{tenants}""")
        procs.append(subprocess.Popen([str(warden), "serve", "--config", str(cfg)],
                                      stderr=open(tmp / "warden.log", "wb"), env=env))
        wait_http(admin, "/readyz", "warden", tmp / "warden.log")

        sizes = [int(s) for s in args.sizes.split(",")]
        offset = 0

        def text_of(size):
            nonlocal offset
            piece = prose[offset:offset + size]
            offset = (offset + size) % (len(prose) - 2 * size)
            return piece

        # Warm-up: every tenant, every size.
        for size in sizes:
            for t in KEYS:
                ttft(proxy, KEYS[t], text_of(size), args.max_tokens)
        results = {}  # (size, tenant) -> [p50 per round], [p90 per round]
        for rnd in range(args.rounds):
            for size in sizes:
                samples = {t: [] for t in KEYS}
                statuses = {t: {} for t in KEYS}
                for _ in range(args.requests):
                    for t in KEYS:
                        s, status = ttft(proxy, KEYS[t], text_of(size), args.max_tokens)
                        statuses[t][status] = statuses[t].get(status, 0) + 1
                        if s is not None:
                            samples[t].append(s * 1e3)
                for t in KEYS:
                    v = sorted(samples[t])
                    if not v:
                        sys.exit(f"no successful request for {t} at {size} bytes: {statuses[t]}")
                    p50, p90 = v[len(v) // 2], v[min(len(v) - 1, int(len(v) * 0.9))]
                    results.setdefault((size, t), ([], []))
                    results[(size, t)][0].append(p50)
                    results[(size, t)][1].append(p90)
                    print(f"round {rnd + 1} {size:5} B {t:8} TTFT p50 {p50:7.1f} ms p90 {p90:7.1f} ms "
                          f"statuses {statuses[t]}", file=sys.stderr)
        print(f"\nTTFT through Warden to the real worker (warden-tiny, CPU, prefix cache off), streaming, one "
              f"request at a time, {args.requests} requests per tenant, size and round, {args.rounds} rounds; "
              f"medians over rounds, milliseconds\n")
        print("| prompt | classifier off p50 / p90 | before p50 / p90 | overlap p50 / p90 | "
              "added by the classifier, before (p50) | added, overlap (p50) |")
        print("|---|---|---|---|---|---|")
        for size in sizes:
            m = {t: (statistics.median(results[(size, t)][0]), statistics.median(results[(size, t)][1]))
                 for t in KEYS}
            print(f"| {size} bytes | {m['off'][0]:.1f} / {m['off'][1]:.1f} | "
                  f"{m['before'][0]:.1f} / {m['before'][1]:.1f} | {m['overlap'][0]:.1f} / {m['overlap'][1]:.1f} | "
                  f"{m['before'][0] - m['off'][0]:+.1f} | {m['overlap'][0] - m['off'][0]:+.1f} |")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
