#!/usr/bin/env python3
"""Proxy overhead benchmark: the same request mix sent directly to the fake upstream and through
Warden, in one run, alternating, repeated; reports medians and the added latency.

    python3 tests/bench/overhead.py [--rate 1000] [--duration 10] [--rounds 3] [--warden-threads 2]
    python3 tests/bench/overhead.py --compare-guards [--prompt-bytes 4096] ...

With --compare-guards, two Wardens run side by side on the same upstream, one with the input guard
(the shipped packs) and one with `guard.enabled = false`; each round measures direct, guards off and
guards on, and the guard's added latency is reported against guards-off from the same round.
--compare-telemetry (audit lake) and --compare-tracing (OTLP traces to the `otlp-sink` collector)
do the same for those features.

Needs release builds of `warden`, `fake-upstream`, `loadgen` (and `otlp-sink` for --compare-tracing)
(`cargo build --release -p warden-proxy -p warden-tests --bins`). Everything runs on loopback on
this machine, load generator included; every run is bounded by --duration.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-bench-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--warden-threads", type=int, default=2)
    ap.add_argument("--json", help="also write all raw results to this file")
    ap.add_argument("--compare-guards", action="store_true",
                    help="run a guards-off Warden beside the guards-on one and compare them")
    ap.add_argument("--compare-telemetry", action="store_true",
                    help="run a Warden writing the audit lake beside one that does not, and compare them")
    ap.add_argument("--compare-tracing", action="store_true",
                    help="run a Warden exporting OTLP traces (to otlp-sink) beside one that does not, "
                         "and compare them")
    ap.add_argument("--prompt-bytes", type=int, default=0,
                    help="user message of about this many bytes of ordinary English (default: a short one)")
    args = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    needed = ("warden", "fake-upstream", "loadgen") + (("otlp-sink",) if args.compare_tracing else ())
    bins = {n: str(target / n) for n in needed}
    for path in bins.values():
        if not Path(path).exists():
            sys.exit(f"{path} missing: cargo build --release -p warden-proxy -p warden-tests --bins")

    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    up = subprocess.Popen([bins["fake-upstream"], "--listen", "127.0.0.1:0", "--model", "test-model"],
                          stdout=subprocess.PIPE, text=True)
    up_addr = up.stdout.readline().strip().removeprefix("listening on ")
    key_hash = subprocess.run([bins["warden"], "keys", "hash"], input=KEY.encode(), capture_output=True,
                              check=True).stdout.decode().strip()

    def start_warden(name, guard_enabled, lake=None, otlp=None):
        proxy, admin = free_port(), free_port()
        cfg = tmp / f"{name}.toml"
        cfg.write_text(f"""
[server]
listen = "127.0.0.1:{proxy}"
threads = {args.warden_threads}
[admin]
listen = "127.0.0.1:{admin}"
[logging]
level = "warn"
[guard]
enabled = {"true" if guard_enabled else "false"}
{f'[telemetry]{chr(10)}dir = "{lake}"' if lake else ""}
{f'[tracing]{chr(10)}otlp_endpoint = "http://{otlp}"' if otlp else ""}
[[upstreams]]
name = "fake"
address = "{up_addr}"
models = ["test-model"]
[[tenants]]
name = "bench"
api_keys = ["{key_hash}"]
max_tokens = 16
""")
        proc = subprocess.Popen([bins["warden"], "serve", "--config", str(cfg)],
                                stderr=open(tmp / f"{name}.log", "wb"))
        wardens.append(proc)
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("warden not ready:\n" + (tmp / f"{name}.log").read_text())
            time.sleep(0.1)
        return proxy, admin

    wardens = []
    try:
        proxy, admin = start_warden("warden", True)
        paths = [("direct", f"http://{up_addr}"), ("warden", f"http://127.0.0.1:{proxy}")]
        if args.compare_guards:
            off_proxy, _ = start_warden("warden-noguard", False)
            paths = [("direct", f"http://{up_addr}"), ("guards-off", f"http://127.0.0.1:{off_proxy}"),
                     ("warden", f"http://127.0.0.1:{proxy}")]
        elif args.compare_tracing:
            sink = subprocess.Popen([bins["otlp-sink"], "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                                    text=True)
            wardens.append(sink)
            sink_addr = sink.stdout.readline().strip().removeprefix("listening on ")
            on_proxy, on_admin = start_warden("warden-tracing", True, otlp=sink_addr)
            paths = [("direct", f"http://{up_addr}"), ("tracing-off", f"http://127.0.0.1:{proxy}"),
                     ("tracing-on", f"http://127.0.0.1:{on_proxy}")]
        elif args.compare_telemetry:
            on_proxy, _ = start_warden("warden-telemetry", True, lake=tmp / "lake")
            paths = [("direct", f"http://{up_addr}"), ("telemetry-off", f"http://127.0.0.1:{proxy}"),
                     ("telemetry-on", f"http://127.0.0.1:{on_proxy}")]
        # The same body both ways; max_tokens set so Warden forwards it unchanged.
        content = "Say hello in a few words."
        if args.prompt_bytes:
            para = ("You are a helpful assistant for the billing team. Summarise the customer's last three "
                    "invoices, explain any late fees in plain language, and suggest whether a payment plan "
                    "would help. Keep the answer short and do not reveal internal account notes. ")
            content = (para * (args.prompt_bytes // len(para) + 1))[:args.prompt_bytes]
        body = json.dumps({"model": "test-model", "messages": [{"role": "user", "content": content}],
                           "max_tokens": 16})
        results = {}
        for rnd in range(args.rounds):
            for mode in ("non-streaming", "streaming"):
                for path, url in paths:
                    cmd = [bins["loadgen"], "--url", url + "/v1/chat/completions", "--rate", str(args.rate),
                           "--duration", str(args.duration), "--warmup", str(args.warmup),
                           "--connections", str(args.connections), "--body", body,
                           "--header", f"Authorization: Bearer {KEY}"]
                    if mode == "streaming":
                        cmd.append("--stream")
                    out = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)
                    results.setdefault((mode, path), []).append(out)
                    print(f"round {rnd + 1} {mode:13} {path:6} ok={out['ok']} err={out['errors']} "
                          f"non2xx={out['non_2xx']} rps={out['achieved_rps']:.0f} "
                          f"p50={out['latency_us']['p50']}us p99={out['latency_us']['p99']}us", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps({f"{m}/{p}": r for (m, p), r in results.items()}, indent=1))

        def paired_table(what, base, other):
            """Each `other` run against the `base` run of the same round; medians over rounds."""
            print(f"| mode | {what} added p50 | {what} added p99 | added p99 per round | p99 ratio |")
            print("|---|---|---|---|---|")
            for mode in ("non-streaming", "streaming"):
                pairs = list(zip(results[(mode, base)], results[(mode, other)]))
                add50 = [w["latency_us"]["p50"] - d["latency_us"]["p50"] for d, w in pairs]
                add99 = [w["latency_us"]["p99"] - d["latency_us"]["p99"] for d, w in pairs]
                r99 = statistics.median(w["latency_us"]["p99"] / d["latency_us"]["p99"] for d, w in pairs)
                print(f"| {mode} | {statistics.median(add50):+.0f} us | {statistics.median(add99):+.0f} us | "
                      f"{', '.join(f'{a:+d}' for a in add99)} | {r99:.2f}x |")

        def med(mode, path, key, sub="latency_us"):
            return statistics.median(r[sub][key] for r in results[(mode, path)])

        print(f"\nWarden overhead: {args.rate} req/s for {args.duration}s x {args.rounds} rounds per cell, "
              f"{args.connections} connections, medians across rounds (latency in microseconds)\n")
        print("| mode | path | req/s | p50 | p99 | p99.9 | TTFB p50 | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for mode in ("non-streaming", "streaming"):
            for path, _ in paths:
                rs = results[(mode, path)]
                print(f"| {mode} | {path} | {statistics.median(r['achieved_rps'] for r in rs):.0f} | "
                      f"{med(mode, path, 'p50'):.0f} | {med(mode, path, 'p99'):.0f} | {med(mode, path, 'p999'):.0f} | "
                      f"{med(mode, path, 'p50', 'ttfb_us'):.0f} | {sum(r['errors'] + r['non_2xx'] for r in rs)} |")
        # Paired per round: each Warden run is compared with the direct run just before it, which
        # cancels most of the machine's slow drifts; the median over rounds is reported.
        print("\n| mode | added p50 (median of rounds) | added p99 (median of rounds) | added p99 per round | p50 ratio | p99 ratio |")
        print("|---|---|---|---|---|---|")
        last = paths[-1][0]
        for mode in ("non-streaming", "streaming"):
            pairs = list(zip(results[(mode, "direct")], results[(mode, last)]))
            add50 = [w["latency_us"]["p50"] - d["latency_us"]["p50"] for d, w in pairs]
            add99 = [w["latency_us"]["p99"] - d["latency_us"]["p99"] for d, w in pairs]
            r50 = statistics.median(w["latency_us"]["p50"] / d["latency_us"]["p50"] for d, w in pairs)
            r99 = statistics.median(w["latency_us"]["p99"] / d["latency_us"]["p99"] for d, w in pairs)
            print(f"| {mode} | {statistics.median(add50):+.0f} us | {statistics.median(add99):+.0f} us | "
                  f"{', '.join(f'{a:+d}' for a in add99)} | {r50:.2f}x | {r99:.2f}x |")
        if args.compare_telemetry:
            print("\nAudit lake on vs off (paired per round against the telemetry-off Warden):\n")
            paired_table("telemetry", "telemetry-off", "telemetry-on")
            files = sorted((tmp / "lake").glob("events/**/*.parquet"))
            print(f"\naudit lake: {len(files)} Parquet file(s), {sum(f.stat().st_size for f in files)} bytes so far")
        if args.compare_tracing:
            print("\nOTLP traces on vs off (paired per round against the tracing-off Warden):\n")
            paired_table("tracing", "tracing-off", "tracing-on")
            with urllib.request.urlopen(f"http://127.0.0.1:{on_admin}/metrics", timeout=5) as r:
                spans = [l for l in r.read().decode().splitlines() if l.startswith("warden_trace_spans_total")]
            print(f"\nspans: {', '.join(spans)}")
        if args.compare_guards:
            print("\nInput guard on vs off (paired per round against the guards-off Warden):\n")
            paired_table("guard", "guards-off", "warden")
        # Warden's own view: time in Warden excluding the wait on the upstream.
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        buckets, total, count = [], 0.0, 0
        for line in metrics.splitlines():
            if line.startswith("warden_overhead_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                buckets.append((float("inf") if le == "+Inf" else float(le), int(float(line.split()[-1]))))
            elif line.startswith("warden_overhead_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("warden_overhead_seconds_count"):
                count = int(float(line.split()[-1]))
        if count:
            def bucket_quantile(q):
                return next(le for le, c in sorted(buckets) if c >= q * count)
            print(f"\nwarden_overhead_seconds over all {count} proxied requests: mean {total / count * 1e6:.0f} us, "
                  f"p50 <= {bucket_quantile(0.5) * 1e6:.0f} us, p99 <= {bucket_quantile(0.99) * 1e6:.0f} us (histogram buckets)")
    finally:
        for w in wardens:
            w.terminate()
        up.terminate()
        for w in wardens:
            w.wait(timeout=15)
        up.wait(timeout=5)


if __name__ == "__main__":
    main()
