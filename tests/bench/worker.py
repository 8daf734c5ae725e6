#!/usr/bin/env python3
"""Worker benchmark, one run, all cells measured back to back on this machine:

1. Generated tokens/s at concurrency 1, 4 and 16: continuous batching (--max-batch 64) against
   one request at a time (--max-batch 1). Each request: a short prompt, 64 greedy tokens.
2. Time to first token for requests sharing a long system prompt, prefix cache on (default)
   against off (--prefix-cache-mib 0). Each request has a different question after the shared
   system prompt; TTFT is measured on the stream, median of the requests after the first.

    python3 tests/bench/worker.py [--requests 32] [--model inference/model]

Needs a release build (`cargo build --release -p warden-proxy`) and the ONNX Runtime library
(`tests/scripts/setup.sh`). Traffic goes to loopback only; every phase is bounded.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchlib import free_port

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, binary, model, *extra):
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "worker", "--model", model, "--listen", f"127.0.0.1:{self.port}",
                                      "--served-model-name", "warden-tiny", *extra],
                                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("worker did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


def complete(port, body, stream=False):
    """Returns (completion_tokens, ttft_seconds, total_seconds)."""
    body = dict(body, stream=stream)
    if stream:
        body["stream_options"] = {"include_usage": True}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{r.status}: {r.read()[:200]}")
    if not stream:
        data = json.loads(r.read())
        return data["usage"]["completion_tokens"], None, time.perf_counter() - t0
    ttft, tokens = None, 0
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        ev = json.loads(line[6:])
        if ttft is None and ev.get("choices") and ev["choices"][0].get("text"):
            ttft = time.perf_counter() - t0
        if ev.get("usage"):
            tokens = ev["usage"]["completion_tokens"]
    return tokens, ttft, time.perf_counter() - t0


def throughput(port, concurrency, requests):
    prompts = [f"Verse {i}: And it came to pass that" for i in range(requests)]
    lock, results, idx = threading.Lock(), [], iter(range(requests))

    def run():
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            n, _, _ = complete(port, {"model": "warden-tiny", "prompt": prompts[i], "max_tokens": 64,
                                      "temperature": 0, "ignore_eos": True})
            with lock:
                results.append(n)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results) / (time.perf_counter() - t0)


# About 360 tokens, 70% of the model's 512-token context: the "long shared system prompt".
SYSTEM = ("You are the keeper of an old library. You answer every question in the plain and measured "
          "style of the old books, with patience and care, and you never hurry. ") * 9


def ttft(port, requests):
    out = []
    for i in range(requests):
        prompt = f"{SYSTEM}\nQuestion {i}: what shall we do on day {i}?\nAnswer:"
        _, t, _ = complete(port, {"model": "warden-tiny", "prompt": prompt, "max_tokens": 4, "temperature": 0},
                           stream=True)
        out.append(t)
    return statistics.median(out[1:])  # the first request fills the cache


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "inference/model"))
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    binary = str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "warden")
    if not Path(binary).exists():
        sys.exit(f"{binary} missing: cargo build --release -p warden-proxy")

    # Both workers stay up; cells are interleaved over rounds (the idle one costs nothing) so the
    # machine's drift hits both schedulers alike. Medians over rounds are reported.
    workers = {"continuous batching": Worker(binary, args.model), "one at a time": Worker(binary, args.model, "--max-batch", "1")}
    cells = {}
    try:
        for w in workers.values():
            complete(w.port, {"model": "warden-tiny", "prompt": "warm up", "max_tokens": 8})
        for _ in range(args.rounds):
            for c in (1, 4, 16):
                for label, w in workers.items():
                    cells.setdefault((label, c), []).append(throughput(w.port, c, args.requests))
    finally:
        for w in workers.values():
            w.stop()
    print(f"Generated tokens/s ({args.requests} requests of 64 greedy tokens per cell, median of {args.rounds} rounds)\n")
    print("| scheduler | concurrency 1 | concurrency 4 | concurrency 16 |")
    print("|---|---|---|---|")
    for label in workers:
        print(f"| {label} | " + " | ".join(f"{statistics.median(cells[(label, c)]):.0f}" for c in (1, 4, 16)) + " |")
    ratios = {c: [b / s for b, s in zip(cells[("continuous batching", c)], cells[("one at a time", c)])] for c in (1, 4, 16)}
    print("\nBatching speed-up (median of per-round ratios): " + ", ".join(
        f"x{statistics.median(r):.2f} at {c} (rounds: {', '.join(f'{x:.2f}' for x in r)})" for c, r in ratios.items()))

    res = {}
    ttft_workers = {"prefix cache on": Worker(binary, args.model),
                    "prefix cache off": Worker(binary, args.model, "--prefix-cache-mib", "0")}
    try:
        for _ in range(args.rounds):
            for label, w in ttft_workers.items():
                res.setdefault(label, []).append(ttft(w.port, 12))
    finally:
        for w in ttft_workers.values():
            w.stop()
    res = {k: statistics.median(v) for k, v in res.items()}
    print(f"\nTime to first token, shared system prompt of {len(SYSTEM)} characters "
          f"(~360 tokens), median of 11 requests per round, median of {args.rounds} rounds\n")
    print("| prefix cache | TTFT |")
    print("|---|---|")
    for label, t in res.items():
        print(f"| {label.removeprefix('prefix cache ')} | {t * 1000:.1f} ms |")
    print(f"\nPrefix cache speed-up: x{res['prefix cache off'] / res['prefix cache on']:.1f}")


if __name__ == "__main__":
    main()
