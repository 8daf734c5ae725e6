#!/usr/bin/env python3
"""Proxy overhead benchmark: the same request mix sent directly to the fake upstream and through
Warden, in one run, alternating, repeated; reports medians and the added latency.

    python3 tests/bench/overhead.py [--rate 1000] [--duration 10] [--rounds 3] [--warden-threads 2]
    python3 tests/bench/overhead.py --compare-guards [--prompt-bytes 4096] ...

Every Warden here runs with `[guard] classifier = "off"` (these figures are the proxy and the rules;
the classifier layer's own cost is `cargo bench -p warden-proxy --bench classifier`), except with
--compare-classifier: a Warden with the shipped classifier on (`classifier = "on"`, the tenant's
default `classifier_mode = "before"`) beside one with it off, as --compare-guards does.

With --compare-guards, two Wardens run side by side on the same upstream, one with the input guard
(the shipped packs) and one with `guard.enabled = false`; each round measures direct, guards off and
guards on, and the guard's added latency is reported against guards-off from the same round.
--compare-telemetry (audit lake), --compare-tracing (OTLP traces to the `otlp-sink` collector) and
--compare-output (the output guard: one tenant with `output = "off"`, the other with the default)
do the same for those features.

    python3 tests/bench/overhead.py --background-prompt-bytes 65536 [--background-rate 20]
        [--background-class prose_en] ...

With --background-prompt-bytes, each round measures the small-request load (non-streaming unless
--modes says otherwise) directly, then through each of two Wardens twice: idle, and while a second
loadgen sends large prompts (the first N bytes of guards/benches/corpus/<class>.txt, cut back to a
character boundary, as one user message) to the same Warden at --background-rate. One Warden has the
default `[guard] inline_bytes` (large texts are inspected on the guard pool), the other has it set to
the maximum (every text inspected inline on the IO threads, the behaviour before the pool). Reported:
the small requests' p50/p99 idle and with background, the added p99 (with - idle, same Warden, same
round), the background requests' latency and statuses, and the guard time of the large requests as
Warden logged it (`guard_us` in the access log, which both Wardens write at info level in this mode).
Before the rounds the large prompts run alone through each Warden for --background-alone seconds.
--background-guards-off adds a third Warden with the guard off, measured the same way: what a large
request costs the others apart from its inspection.

Needs release builds of `warden`, `fake-upstream`, `loadgen` (and `otlp-sink` for --compare-tracing)
(`cargo build --release -p warden-proxy -p warden-tests --bins`). Everything runs on loopback on
this machine, load generator included; every run is bounded by --duration.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import free_port

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-bench-0123456789abcdef"


def small_body(args):
    """The measured request: the same body both ways; max_tokens set so Warden forwards it unchanged."""
    content = "Say hello in a few words."
    if args.prompt_bytes:
        para = ("You are a helpful assistant for the billing team. Summarise the customer's last three "
                "invoices, explain any late fees in plain language, and suggest whether a payment plan "
                "would help. Keep the answer short and do not reveal internal account notes. ")
        content = (para * (args.prompt_bytes // len(para) + 1))[:args.prompt_bytes]
    return json.dumps({"model": "test-model", "messages": [{"role": "user", "content": content}],
                       "max_tokens": 16})


def corpus_prompt(cls, nbytes):
    """The first `nbytes` of a guard corpus class, cut back to a character boundary."""
    corpus = ROOT / "guards" / "benches" / "corpus"
    path = corpus / f"{cls}.txt"
    if not path.exists():
        sys.exit(f"no corpus class {cls!r}; one of: {', '.join(sorted(f.stem for f in corpus.glob('*.txt')))}")
    raw = path.read_bytes()
    if nbytes > len(raw):
        sys.exit(f"{path} has only {len(raw)} bytes")
    n = nbytes
    while 0 < n < len(raw) and raw[n] & 0xC0 == 0x80:
        n -= 1
    return raw[:n].decode("utf-8")


def loadgen_cmd(bins, url, rate, duration, warmup, connections, body=None, body_file=None, stream=False):
    cmd = [bins["loadgen"], "--url", url + "/v1/chat/completions", "--rate", str(rate),
           "--duration", str(duration), "--warmup", str(warmup), "--connections", str(connections),
           "--header", f"Authorization: Bearer {KEY}"]
    cmd += ["--body-file", str(body_file)] if body_file else ["--body", body]
    if stream:
        cmd.append("--stream")
    return cmd


def nearest_rank(sorted_values, q):
    if not sorted_values:
        return None
    rank = -(-q * len(sorted_values) // 1)
    return sorted_values[min(max(int(rank), 1), len(sorted_values)) - 1]


def rank_str(sorted_values, q):
    v = nearest_rank(sorted_values, q)
    return "-" if v is None else str(v)


def median_of(values):
    """Median of the values that exist, rounded; '-' when there are none."""
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.0f}" if values else "-"


ACCESS_FIELDS = re.compile(r"\b(status|overhead_us|guard_us|guard_bytes|guard_truncated)=(\w+)")


def access_lines(log, start, end):
    """The access-log lines Warden wrote to `log` between byte offsets `start` and `end`, as dicts."""
    with open(log, "rb") as f:
        f.seek(start)
        chunk = f.read(end - start).decode("utf-8", "replace")
    out = []
    for line in chunk.splitlines():
        if " request " not in line and not line.rstrip().endswith("request"):
            continue
        fields = dict(ACCESS_FIELDS.findall(line))
        if "status" in fields:
            out.append(fields)
    return out


def run_background(args, bins, tmp, up_addr, start_warden, modes):
    """Small requests idle vs while large prompts arrive, through a pool Warden and an inline one."""
    text = corpus_prompt(args.background_class, args.background_prompt_bytes)
    bg_file = tmp / "background.json"
    # As a client library sends it: UTF-8 as is, JSON escapes where JSON needs them.
    bg_file.write_text(json.dumps({"model": "test-model", "messages": [{"role": "user", "content": text}],
                                   "max_tokens": 16}, ensure_ascii=False), encoding="utf-8")
    text_bytes = len(text.encode("utf-8"))
    # guard_us is in the access log (info, target warden_proxy::proxy); Pingora's own lines stay at warn.
    log_level = "warn,warden_proxy::proxy=info"
    wardens = {}
    kinds = [("pool", True, ""), ("inline", True, f"inline_bytes = {1 << 30}")]
    if args.background_guards_off:
        kinds.append(("no-guard", False, ""))
    for name, guard, extra in kinds:
        proxy, admin = start_warden(f"warden-{name}", guard, guard_extra=extra, log_level=log_level)
        wardens[name] = {"url": f"http://127.0.0.1:{proxy}", "admin": admin, "log": tmp / f"warden-{name}.log"}
    body = small_body(args)
    direct = f"http://{up_addr}"

    def small(url, mode):
        cmd = loadgen_cmd(bins, url, args.rate, args.duration, args.warmup, args.connections, body=body,
                          stream=mode == "streaming")
        return json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)

    def lat(out, key="p99"):
        return out["latency_us"][key]

    def pq(values):
        return f"{rank_str(values, 0.5)} / {rank_str(values, 0.99)}" if values else "-"

    def guard_samples(wd, start):
        """guard_us and overhead_us of the large requests logged since byte `start` of the log."""
        time.sleep(0.2)  # the last access-log lines
        large = [f for f in access_lines(wd["log"], start, wd["log"].stat().st_size)
                 if int(f.get("guard_bytes", 0)) > text_bytes // 2]
        return (sorted(int(f["guard_us"]) for f in large if "guard_us" in f),
                sorted(int(f["overhead_us"]) for f in large if "overhead_us" in f),
                sum(f.get("guard_truncated") == "true" for f in large))

    # The large prompts alone first (no small-request load): the guard's own cost on this machine.
    alone = {}
    if args.background_alone:
        for w, wd in wardens.items():
            start = wd["log"].stat().st_size
            out = json.loads(subprocess.run(
                loadgen_cmd(bins, wd["url"], args.background_rate, args.background_alone, 0,
                            args.background_connections, body_file=bg_file),
                capture_output=True, check=True, text=True).stdout)
            alone[w] = (out, *guard_samples(wd, start))

    bg_duration = args.background_lead + args.warmup + args.duration + 0.5
    rows = []  # one per (round, mode)
    for rnd in range(args.rounds):
        # Rotate which Warden goes first, so slow drifts of the machine do not favour one.
        names = list(wardens)
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for mode in modes:
            row = {"round": rnd + 1, "mode": mode, "direct": small(direct, mode)}
            print(f"round {rnd + 1} {mode} direct p50={lat(row['direct'], 'p50')}us p99={lat(row['direct'])}us",
                  file=sys.stderr)
            for w in order:
                wd = wardens[w]
                row[f"{w} idle"] = idle = small(wd["url"], mode)
                start = wd["log"].stat().st_size
                bg = subprocess.Popen(
                    loadgen_cmd(bins, wd["url"], args.background_rate, bg_duration, 0,
                                args.background_connections, body_file=bg_file),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(args.background_lead)
                row[f"{w} +bg"] = withbg = small(wd["url"], mode)
                bg_out, bg_err = bg.communicate(timeout=bg_duration + 30)
                if bg.returncode != 0:
                    sys.exit(f"background loadgen failed: {bg_err}")
                row[f"{w} bg"] = json.loads(bg_out)
                (row[f"{w} guard_us"], row[f"{w} large_overhead_us"],
                 row[f"{w} large_truncated"]) = guard_samples(wd, start)
                b = row[f"{w} bg"]
                print(f"round {rnd + 1} {mode} {w:6} idle p50={lat(idle, 'p50')} p99={lat(idle)} | +bg "
                      f"p50={lat(withbg, 'p50')} p99={lat(withbg)} (added {lat(withbg) - lat(idle):+d}) | "
                      f"bg ok={b['ok']} statuses={b['statuses']} p99={lat(b)} | guard_us p50/p99 "
                      f"{pq(row[f'{w} guard_us'])}", file=sys.stderr)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rows, "alone": alone}, indent=1))

    names = list(wardens)
    configs = ["direct"] + [f"{w} {phase}" for w in names for phase in ("idle", "+bg")]
    print(f"\nSmall requests ({len(body)}-byte chat body) at {args.rate} req/s for {args.duration}s, "
          f"{args.connections} connections; background: {text_bytes}-byte `{args.background_class}` prompts "
          f"({bg_file.stat().st_size}-byte body) at {args.background_rate:g} req/s to the same Warden, "
          f"{args.rounds} rounds; pool = default `[guard] inline_bytes` (16 KiB), inline = "
          f"`inline_bytes = {1 << 30}`"
          f"{', no-guard = `[guard] enabled = false`' if 'no-guard' in wardens else ''}; "
          f"latency in microseconds\n")
    for mode in modes:
        mrows = [r for r in rows if r["mode"] == mode]
        print(f"Per round, {mode} (p50 / p99; added = +bg p99 - idle p99 of the same Warden):\n")
        print("| round | direct | " + " | ".join(f"{w} idle | {w} +bg | {w} added p99" for w in names) + " |")
        print("|---|---|" + "---|---|---|" * len(names))
        for r in mrows:
            cells = [f"{lat(r['direct'], 'p50')} / {lat(r['direct'])}"]
            for w in names:
                cells += [f"{lat(r[f'{w} idle'], 'p50')} / {lat(r[f'{w} idle'])}",
                          f"{lat(r[f'{w} +bg'], 'p50')} / {lat(r[f'{w} +bg'])}",
                          f"{lat(r[f'{w} +bg']) - lat(r[f'{w} idle']):+d}"]
            print(f"| {r['round']} | " + " | ".join(cells) + " |")
        print(f"\nMedians over rounds, {mode}:\n")
        print("| config | p50 | p99 | p99.9 | max | added p50 | added p99 (median of rounds) | "
              "added p99 per round | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for c in configs:
            def m(key, c=c):
                return statistics.median(lat(r[c], key) for r in mrows)
            add = ["", "", ""]
            if c.endswith("+bg"):
                idle = c.replace("+bg", "idle")
                a50 = [lat(r[c], "p50") - lat(r[idle], "p50") for r in mrows]
                a99 = [lat(r[c]) - lat(r[idle]) for r in mrows]
                add = [f"{statistics.median(a50):+.0f}", f"**{statistics.median(a99):+.0f}**",
                       ", ".join(f"{a:+d}" for a in a99)]
            errs = sum(r[c]["errors"] + r[c]["non_2xx"] for r in mrows)
            print(f"| {c} | {m('p50'):.0f} | {m('p99'):.0f} | {m('p999'):.0f} | {m('max'):.0f} | "
                  f"{add[0]} | {add[1]} | {add[2]} | {errs} |")
        print(f"\nBackground requests and their guard time (`guard_us` from each Warden's access log, "
              f"requests with guard_bytes > {text_bytes // 2}), {mode} rounds:\n")
        print("| round | Warden | bg sent | statuses | bg p50 | bg p99 | bg max | logged | guard_us p50 | "
              "guard_us p99 | guard_us max | overhead_us p50 | truncated |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in mrows:
            for w in names:
                b, g, o = r[f"{w} bg"], r[f"{w} guard_us"], r[f"{w} large_overhead_us"]
                statuses = " ".join(f"{k}:{v}" for k, v in b["statuses"].items())
                if b["errors"]:
                    statuses += f" errors:{b['errors']}"
                print(f"| {r['round']} | {w} | {b['sent']} | {statuses} | {lat(b, 'p50')} | {lat(b)} | "
                      f"{lat(b, 'max')} | {len(g)} | {rank_str(g, 0.5)} | {rank_str(g, 0.99)} | "
                      f"{g[-1] if g else '-'} | {rank_str(o, 0.5)} | {r[f'{w} large_truncated']} |")
        print(f"\n| Warden | bg p50 (median of rounds) | bg p99 (median of rounds) | statuses (all rounds) | "
              f"guard_us p50 (median of rounds) | guard_us p99 (median of rounds) | guard_us over all rounds: "
              f"n, p50, p99, max |")
        print("|---|---|---|---|---|---|---|")
        for w in names:
            statuses = {}
            for r in mrows:
                for k, v in r[f"{w} bg"]["statuses"].items():
                    statuses[k] = statuses.get(k, 0) + v
                if r[f"{w} bg"]["errors"]:
                    statuses["errors"] = statuses.get("errors", 0) + r[f"{w} bg"]["errors"]
            every = sorted(x for r in mrows for x in r[f"{w} guard_us"])
            print(f"| {w} | {statistics.median(lat(r[f'{w} bg'], 'p50') for r in mrows):.0f} | "
                  f"{statistics.median(lat(r[f'{w} bg']) for r in mrows):.0f} | "
                  f"{' '.join(f'{k}:{v}' for k, v in sorted(statuses.items()))} | "
                  f"{median_of(nearest_rank(r[f'{w} guard_us'], 0.5) for r in mrows)} | "
                  f"{median_of(nearest_rank(r[f'{w} guard_us'], 0.99) for r in mrows)} | "
                  f"{len(every)}, {rank_str(every, 0.5)}, {rank_str(every, 0.99)}, "
                  f"{every[-1] if every else '-'} |")
    if alone:
        print(f"\nThe large prompts alone ({args.background_rate:g} req/s for {args.background_alone}s, no "
              f"small-request load, before the rounds):\n")
        print("| Warden | statuses | bg p50 | bg p99 | logged | guard_us p50 | guard_us p99 | guard_us max | "
              "overhead_us p50 | truncated |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for w, (b, g, o, t) in alone.items():
            print(f"| {w} | {' '.join(f'{k}:{v}' for k, v in b['statuses'].items())} | {lat(b, 'p50')} | "
                  f"{lat(b)} | {len(g)} | {rank_str(g, 0.5)} | {rank_str(g, 0.99)} | "
                  f"{g[-1] if g else '-'} | {rank_str(o, 0.5)} | {t} |")
    # Warden's own histogram, as a cross-check of the access log (small and large requests together).
    print()
    for w in names:
        if w == "no-guard":
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{wardens[w]['admin']}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        buckets = {}
        for line in metrics.splitlines():
            if line.startswith("warden_guard_seconds_bucket") and 'endpoint="chat_completions"' in line:
                le = line.split('le="')[1].split('"')[0]
                buckets[le] = int(float(line.split()[-1]))
        total = buckets.get("+Inf", 0)
        print(f"warden_guard_seconds{{endpoint=\"chat_completions\"}} ({w}): {total} inspections; "
              + ", ".join(f"<= {float(le) * 1e3:g} ms: {buckets[le]}" for le in ("0.0005", "0.001", "0.0025", "0.005")
                          if le in buckets)
              + f", > 5 ms: {total - buckets.get('0.005', total)}")


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
    ap.add_argument("--compare-output", action="store_true",
                    help="also run a Warden whose tenant has the output guard off, and compare")
    ap.add_argument("--compare-classifier", action="store_true",
                    help="run a Warden with the classifier layer on beside one with it off, and compare")
    ap.add_argument("--compare-tracing", action="store_true",
                    help="run a Warden exporting OTLP traces (to otlp-sink) beside one that does not, "
                         "and compare them")
    ap.add_argument("--prompt-bytes", type=int, default=0,
                    help="user message of about this many bytes of ordinary English (default: a short one)")
    ap.add_argument("--modes", default=None,
                    help="comma-separated: non-streaming,streaming (default: both; with "
                         "--background-prompt-bytes: non-streaming)")
    ap.add_argument("--background-prompt-bytes", type=int, default=0,
                    help="measure the small requests idle and while large prompts of this many bytes "
                         "arrive at the same Warden, with the guard pool and with inline inspection")
    ap.add_argument("--background-rate", type=float, default=20.0,
                    help="large prompts per second (default 20)")
    ap.add_argument("--background-class", default="prose_en",
                    help="corpus class the large prompts are cut from (guards/benches/corpus/<class>.txt)")
    ap.add_argument("--background-connections", type=int, default=16)
    ap.add_argument("--background-alone", type=float, default=5.0,
                    help="seconds of large prompts alone through each Warden before the rounds (0: skip)")
    ap.add_argument("--background-guards-off", action="store_true",
                    help="also a third Warden with the guard off: what the large requests cost besides the guard")
    ap.add_argument("--background-lead", type=float, default=1.0,
                    help="seconds the background load runs before the small-request load starts")
    args = ap.parse_args()
    if args.background_prompt_bytes and (args.compare_guards or args.compare_telemetry or args.compare_tracing
                                         or args.compare_output or args.compare_classifier):
        sys.exit("--background-prompt-bytes runs its own pair of Wardens; drop the --compare-* flag")
    modes = tuple(args.modes.split(",")) if args.modes else (
        ("non-streaming",) if args.background_prompt_bytes else ("non-streaming", "streaming"))
    for m in modes:
        if m not in ("non-streaming", "streaming"):
            sys.exit(f"--modes: unknown mode {m!r}")

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

    def start_warden(name, guard_enabled, lake=None, otlp=None, guard_extra="", log_level="warn",
                     tenant_extra="", classifier='"off"'):
        proxy, admin = free_port(), free_port()
        cfg = tmp / f"{name}.toml"
        cfg.write_text(f"""
[server]
listen = "127.0.0.1:{proxy}"
threads = {args.warden_threads}
[admin]
listen = "127.0.0.1:{admin}"
[logging]
level = "{log_level}"
[guard]
enabled = {"true" if guard_enabled else "false"}
classifier = {classifier}
{guard_extra}
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
{tenant_extra}
""")
        env = dict(os.environ, ORT_DYLIB_PATH=str(ROOT / "inference" / ".ort" / "libonnxruntime.so.1.31.1"))
        proc = subprocess.Popen([bins["warden"], "serve", "--config", str(cfg)],
                                stderr=open(tmp / f"{name}.log", "wb"), env=env)
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
        if args.background_prompt_bytes:
            run_background(args, bins, tmp, up_addr, start_warden, modes)
            return
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
        elif args.compare_output:
            off_proxy, _ = start_warden("warden-nooutput", True,
                                        tenant_extra='[tenants.guard]\noutput = "off"')
            paths = [("direct", f"http://{up_addr}"), ("output-off", f"http://127.0.0.1:{off_proxy}"),
                     ("output-on", f"http://127.0.0.1:{proxy}")]
        elif args.compare_classifier:
            model = ROOT / "guards" / "models" / "classifier"
            on_proxy, _ = start_warden("warden-classifier", True,
                                       classifier=f'"on"\nclassifier_dir = "{model}"')
            paths = [("direct", f"http://{up_addr}"), ("classifier-off", f"http://127.0.0.1:{proxy}"),
                     ("classifier-on", f"http://127.0.0.1:{on_proxy}")]
        elif args.compare_telemetry:
            on_proxy, _ = start_warden("warden-telemetry", True, lake=tmp / "lake")
            paths = [("direct", f"http://{up_addr}"), ("telemetry-off", f"http://127.0.0.1:{proxy}"),
                     ("telemetry-on", f"http://127.0.0.1:{on_proxy}")]
        body = small_body(args)
        results = {}
        for rnd in range(args.rounds):
            for mode in modes:
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
            for mode in modes:
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
        for mode in modes:
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
        for mode in modes:
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
        if args.compare_classifier:
            print("\nClassifier on vs off (paired per round against the classifier-off Warden):\n")
            paired_table("classifier", "classifier-off", "classifier-on")
        if args.compare_output:
            print("\nOutput guard on vs off (paired per round against the output-off Warden):\n")
            paired_table("output guard", "output-off", "output-on")
            print("\n| mode | TTFB p50 output off | TTFB p50 output on | TTFB p99 off | TTFB p99 on |")
            print("|---|---|---|---|---|")
            for mode in modes:
                print(f"| {mode} | {med(mode, 'output-off', 'p50', 'ttfb_us'):.0f} us | "
                      f"{med(mode, 'output-on', 'p50', 'ttfb_us'):.0f} us | "
                      f"{med(mode, 'output-off', 'p99', 'ttfb_us'):.0f} us | "
                      f"{med(mode, 'output-on', 'p99', 'ttfb_us'):.0f} us |")
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
