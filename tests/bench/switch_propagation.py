#!/usr/bin/env python3
"""How fast a kill switch reaches a fleet: three `warden serve` sharing one `redis-server`.

    python3 tests/bench/switch_propagation.py [--flips 200] [--sidecars 3]

Each flip sets (or clears) a switch on one sidecar, taking turns, through the admin API; from the
moment that call returns, a thread per sidecar polls its `GET /admin/switches` until it reports
the new board version. Reported: per-sidecar delays (the sidecar that made the change sees it at
once), p50 / p99 / max over every (flip, other sidecar) pair. The fleet re-reads the board on
every pub/sub message, and every 3 s in any case.

Needs release builds of `warden` and `fake-upstream`
(`cargo build --release -p warden-proxy -p warden-tests --bins`) and `redis-server`
(`tests/scripts/setup.sh`). Everything runs on loopback on this machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchlib import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-bench-oncall-0123456789abcdef"


def call(admin, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flips", type=int, default=200)
    ap.add_argument("--sidecars", type=int, default=3)
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    warden, fake = str(target / "warden"), str(target / "fake-upstream")
    for b in (warden, fake):
        if not Path(b).exists():
            sys.exit(f"{b} missing: cargo build --release -p warden-proxy -p warden-tests --bins")
    tmp = Path(tempfile.mkdtemp(prefix="warden-prop-"))
    procs = []
    try:
        rport = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL))
        up = subprocess.Popen([fake, "--listen", "127.0.0.1:0", "--model", "m"], stdout=subprocess.PIPE, text=True)
        procs.append(up)
        up_addr = up.stdout.readline().strip().removeprefix("listening on ")
        key_hash = subprocess.run([warden, "keys", "hash"], input=KEY.encode(), capture_output=True,
                                  check=True).stdout.decode().strip()
        admins = []
        for i in range(args.sidecars):
            proxy, admin = free_port(), free_port()
            cfg = tmp / f"w{i}.toml"
            cfg.write_text(f"""
[server]
listen = "127.0.0.1:{proxy}"
threads = 1
[admin]
listen = "127.0.0.1:{admin}"
[[admin.keys]]
name = "bench"
key_hash = "{key_hash}"
role = "oncall"
[logging]
level = "warn"
[switchboard]
redis_url = "redis://127.0.0.1:{rport}"
[[upstreams]]
name = "fake"
address = "{up_addr}"
models = ["m"]
[[tenants]]
name = "t"
api_keys = ["{key_hash}"]
""")
            procs.append(subprocess.Popen([warden, "serve", "--config", str(cfg)],
                                          stderr=open(tmp / f"w{i}.log", "wb")))
            admins.append(admin)
        deadline = time.time() + 30
        for admin in admins:
            while True:
                try:
                    if call(admin, "GET", "/admin/status")["redis"] is True:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    sys.exit("a sidecar did not connect to Redis:\n" + (tmp / "w0.log").read_text())
                time.sleep(0.05)

        delays = []
        for flip in range(args.flips):
            who = flip % len(admins)
            body = ({"scope": "model:m", "state": "off", "reason": f"flip {flip}"} if flip % 2 == 0 else
                    {"scope": "model:m", "reason": f"flip {flip}"})
            path = "/admin/switches" if flip % 2 == 0 else "/admin/switches/clear"
            version = call(admins[who], "POST", path, body)["version"]
            t0 = time.perf_counter()
            seen = {}

            def watch(i, admin):
                while call(admin, "GET", "/admin/switches")["version"] < version:
                    pass
                seen[i] = time.perf_counter() - t0

            threads = [threading.Thread(target=watch, args=(i, a)) for i, a in enumerate(admins) if i != who]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=10)
            delays.extend(seen.values())
        ms = sorted(d * 1e3 for d in delays)
        p = lambda q: ms[min(len(ms) - 1, int(q * (len(ms) - 1) + 0.5))]
        print(f"{args.flips} flips, {args.sidecars} sidecars, {len(ms)} (flip, other sidecar) pairs:")
        print(f"| p50 | p90 | p99 | max |\n|---|---|---|---|\n| {p(0.5):.1f} ms | {p(0.9):.1f} ms | {p(0.99):.1f} ms | {ms[-1]:.1f} ms |")
        print(f"mean {statistics.mean(ms):.1f} ms")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
