#!/usr/bin/env python3
"""Choose the classifier's operating point: its score on every text of an evaluation set, then
recall and false positives for each pair of thresholds (user text, retrieved content).

``warden rules eval --layers classifier --errors`` writes the probability of every line it gets
wrong; run once on the set and once with every label flipped, the two error files hold every
line's score. The sweep reports, for the classifier alone, recall overall and on the weakest
source, the false-positive rate on all benign texts (as ``rules eval`` counts it) and on
PIGuard's hard negatives alone (``source == "piguard"``), and with ``--benign`` the share of another benign set blocked; the
pair it picks has the highest recall within ``--max-fpr`` and ``--max-piguard-fpr``. Write the
pick into ``train_classifier.py`` (``USER_THRESHOLD``, ``TOOL_THRESHOLD``) and run it with
``--thresholds-only``. Stdlib only.

Usage: ``python3 guards/scripts/classifier_thresholds.py --warden target/release/warden
--classifier-dir guards/models/classifier [--input target/guard-eval/dev.jsonl]
[--benign target/guard-eval/benign.jsonl]``
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

USER = (0.95, 0.98, 0.99, 0.992, 0.993, 0.9935, 0.994, 0.9945, 0.995, 0.996, 0.997, 0.998, 0.999)
TOOL = (0.99, 0.995, 0.997, 0.9975, 0.998, 0.9985, 0.999)


def scores(warden, model, rows):
    """Each row with its ``score`` (``None`` where the classifier did not score it)."""
    got = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flip in (False, True):
            path = os.path.join(tmp, "in.jsonl")
            with open(path, "w", encoding="utf-8") as fh:
                for r in rows:
                    label = 1 - r["label"] if flip else r["label"]
                    fh.write(json.dumps(dict(r, label=label), ensure_ascii=False) + "\n")
            errors = os.path.join(tmp, "errors.jsonl")
            subprocess.run([warden, "rules", "eval", "--input", path, "--layers", "classifier",
                            "--blocking-paranoia", "2", "--classifier", "on", "--classifier-dir", model,
                            "--errors", errors], check=True, stdout=subprocess.DEVNULL)
            with open(errors, encoding="utf-8") as fh:
                for line in fh:
                    e = json.loads(line)
                    got[(e["text"], e.get("role") or "user")] = e["classifier_score"]
    return [dict(r, score=got.get((r["text"], r.get("role") or "user"))) for r in rows]


def sweep(rows, benign, max_fpr, max_piguard):
    attacks = [r for r in rows if r["label"] == 1]
    negatives = [r for r in rows if r["label"] == 0]
    piguard = [r for r in rows if r["label"] == 0 and r["source"] == "piguard"]
    by_source = collections.defaultdict(list)
    for r in attacks:
        by_source[r["source"]].append(r)
    best = None
    print("%7s %7s %7s %6s %8s %8s  %s" % ("user", "tool", "recall", "fpr", "piguard",
                                          "benign" if benign else "", "weakest source"))
    for u in USER:
        for t in TOOL:
            def hit(r):
                return r["score"] is not None and r["score"] >= (t if r.get("role") == "tool" else u)

            def rate(rs):
                return 100.0 * sum(map(hit, rs)) / len(rs) if rs else 0.0

            weakest = min((rate(rs), s) for s, rs in by_source.items())
            row = (rate(attacks), rate(negatives), rate(piguard), rate(benign) if benign else 0.0)
            print("%7.4f %7.4f %6.1f%% %5.2f%% %7.1f%% %7s  %s %.1f%%" % (
                u, t, row[0], row[1], row[2], "%.1f%%" % row[3] if benign else "", weakest[1],
                weakest[0]))
            if row[1] <= max_fpr and row[2] <= max_piguard and (best is None or row[0] > best[2][0]):
                best = (u, t, row)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warden", required=True)
    ap.add_argument("--classifier-dir", required=True)
    ap.add_argument("--input", default="target/guard-eval/dev.jsonl")
    ap.add_argument("--benign", help="another benign set (label 0) to report, e.g. the review sets")
    ap.add_argument("--max-fpr", type=float, default=1.0, help="percent (default: %(default)s)")
    ap.add_argument("--max-piguard-fpr", type=float, default=5.0, help="percent (default: %(default)s)")
    args = ap.parse_args()

    def load(path):
        with open(path, encoding="utf-8") as fh:
            return [json.loads(l) for l in fh if l.strip()]

    rows = scores(args.warden, args.classifier_dir, load(args.input))
    benign = scores(args.warden, args.classifier_dir, load(args.benign)) if args.benign else []
    best = sweep(rows, benign, args.max_fpr, args.max_piguard_fpr)
    if best is None:
        print("no pair meets FPR <= %.1f%% and PIGuard FPR <= %.1f%%" % (args.max_fpr,
                                                                       args.max_piguard_fpr))
        sys.exit(1)
    u, t, (recall, fpr, pg, _) = best
    print("pick: USER_THRESHOLD = %s, TOOL_THRESHOLD = %s (recall %.1f%%, FPR %.2f%%, PIGuard %.1f%%)"
          % (u, t, recall, fpr, pg))


if __name__ == "__main__":
    main()
