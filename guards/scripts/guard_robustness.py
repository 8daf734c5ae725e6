#!/usr/bin/env python3
"""How often a detected attack flips to allowed under harmless changes, through the whole guard.

Takes the attacks of an evaluation set (``build_eval.py``'s JSONL) that ``warden rules eval``
blocks as they are, then writes variants of each and runs ``warden rules eval`` on them again:

* ``+N words`` (N = 2, 10, 50): N benign words appended, drawn from a fixed word list with a seed;
* the normaliser's disguises: Cyrillic homoglyphs for Latin letters, a zero-width space inside
  every word, fullwidth letters, alternating case;
* disguises the normaliser reads as separate views: one word spaced out (``i g n o r e``) and one
  word in leetspeak.

A flip is a blocked attack that a variant lets through. Prints one line per variant, and with
``--json`` the same as JSON. Stdlib only; the guard is the ``warden`` binary given.

Usage: ``python3 guards/scripts/guard_robustness.py --warden target/release/warden
--input target/guard-eval/dev.jsonl [--layers all|rules|classifier] [--blocking-paranoia 2]
[--classifier-dir DIR]``
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

WORDS = ("the report was ready by noon and everyone agreed that the weather was pleasant for a "
         "walk along the river before lunch with friends who had arrived from the coast on the "
         "early train carrying bread cheese apples and a map of the old town").split()

HOMOGLYPHS = str.maketrans({"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х",
                            "i": "і", "y": "у"})
LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def fullwidth(text):
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


def alternate(text):
    return "".join(ch.upper() if i % 2 else ch.lower() for i, ch in enumerate(text))


def zero_width(text):
    return " ".join(w[:len(w) // 2] + "\u200b" + w[len(w) // 2:] if len(w) > 1 else w
                    for w in text.split(" "))


def longest_word(text, f):
    words = text.split(" ")
    k = max(range(len(words)), key=lambda i: len(words[i]))
    words[k] = f(words[k])
    return " ".join(words)


def variants(rng):
    def words(n):
        return lambda t: t + " " + " ".join(rng.choice(WORDS) for _ in range(n))
    return [
        ("+2 words", words(2)),
        ("+10 words", words(10)),
        ("+50 words", words(50)),
        ("homoglyphs", lambda t: t.translate(HOMOGLYPHS)),
        ("zero-width", zero_width),
        ("fullwidth", fullwidth),
        ("alternating case", alternate),
        ("spaced word", lambda t: longest_word(t, lambda w: " ".join(w))),
        ("leet word", lambda t: longest_word(t, lambda w: w.translate(LEET))),
    ]


def run_eval(warden, path, layers, errors, paranoia, classifier_dir=None):
    cmd = [warden, "rules", "eval", "--input", path, "--format", "json", "--layers", layers,
           "--errors", errors, "--blocking-paranoia", str(paranoia)]
    if classifier_dir:
        cmd += ["--classifier-dir", classifier_dir]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    report = json.loads(out.stdout)
    with open(errors, encoding="utf-8") as fh:
        missed = [json.loads(l) for l in fh if l.strip()]
    return report, missed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warden", default="target/release/warden")
    ap.add_argument("--input", default="target/guard-eval/dev.jsonl")
    ap.add_argument("--layers", default="all", choices=("all", "rules", "classifier"))
    ap.add_argument("--blocking-paranoia", type=int, default=2,
                    help="the policy's blocking level (2: the classifier blocks)")
    ap.add_argument("--classifier-dir", help="the classifier to load (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    with open(args.input, encoding="utf-8") as fh:
        rows = [json.loads(l) for l in fh if l.strip()]
    attacks = [r for r in rows if r["label"] == 1]
    work = tempfile.mkdtemp(prefix="warden-robustness-")
    base = os.path.join(work, "base.jsonl")
    with open(base, "w", encoding="utf-8") as fh:
        for r in attacks:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    _, missed = run_eval(args.warden, base, args.layers, os.path.join(work, "base-errors.jsonl"),
                         args.blocking_paranoia, args.classifier_dir)
    missed_texts = {m["text"] for m in missed}
    detected = [r for r in attacks if r["text"] not in missed_texts]
    result = {"layers": args.layers, "attacks": len(attacks), "detected": len(detected),
              "variants": {}}
    rng = random.Random(args.seed)
    for name, f in variants(rng):
        path = os.path.join(work, "variant.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for r in detected:
                fh.write(json.dumps(dict(r, text=f(r["text"])), ensure_ascii=False) + "\n")
        _, flipped = run_eval(args.warden, path, args.layers, os.path.join(work, "v-errors.jsonl"),
                              args.blocking_paranoia, args.classifier_dir)
        result["variants"][name] = {"flipped": len(flipped),
                                    "share": len(flipped) / max(len(detected), 1)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("layers %s: %d attacks, %d detected as they are" % (args.layers, len(attacks),
                                                                  len(detected)))
        for name, v in result["variants"].items():
            print("  %-18s %5d flipped (%.1f%%)" % (name, v["flipped"], 100 * v["share"]))


if __name__ == "__main__":
    sys.exit(main())
