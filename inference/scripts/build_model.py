#!/usr/bin/env python3
"""Rebuild Warden's bundled model end to end.

    data      fetch the pinned public-domain corpus (Debian packages, sha256-checked)
              and turn it into train/validation documents
    tokenizer train the byte-level BPE tokenizer -> model/tokenizer.json (+ chat_template.jinja)
    train     train the small decoder-only GPT with PyTorch on 2 CPU threads
    export    write model/model.onnx (Optimum decoder-with-past layout) + model/config.json,
              and check it against the PyTorch model
    verify    check the ONNX file with onnxruntime (incremental decoding == full pass, padded
              batches == single prompts), print greedy samples, measure sampling speed and
              write model/fixtures.json
    all       every step above, in order

Intermediate files go to inference/scripts/.build/ (git-ignored); shipped files go to
inference/model/.  See README.md beside this file for the numbers of the committed build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
MODEL_DIR = SCRIPTS.parent / "model"
BUILD = SCRIPTS / ".build"

THREADS = 2
SEED = 1234

# --- training data: King James Version (public domain), from Debian packages -------------
# bible-kjv-text ships the text in a compressed database; bible-kjv ships the `bible` program
# that prints it.  Both files are pinned by version and sha256.
DATA_PACKAGES = [
    {
        "package": "bible-kjv-text",
        "version": "4.38",
        "file": "bible-kjv-text_4.38_all.deb",
        "sha256": "d61b6aad4c51ba9e2800b825325fa6a09e99a0d02a9bb6dc4724fcc4995a1b7a",
        "role": "KJV text database (/usr/lib/bible.data)",
    },
    {
        "package": "bible-kjv",
        "version": "4.38",
        "file": "bible-kjv_4.38_amd64.deb",
        "sha256": "75a49c032a6efa9faa2beb4a9acb70974380122906329d0e100de36cc88ff02d",
        "role": "`bible` program used to print the text",
    },
]
DATA_REGISTRY = "Debian (bookworm main), fetched with `apt-get download`"
VAL_EVERY = 20  # every 20th chapter (offset 10) is held out: 5 % of the chapters

# --- tokenizer -----------------------------------------------------------------------------
VOCAB_SIZE = 4096
EOT, USER, ASSISTANT, SYSTEM = "<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = [EOT, USER, ASSISTANT, SYSTEM]  # ids 0, 1, 2, 3

# Chat template (HF style).  Written without newlines after block tags so that it renders the
# same with or without trim_blocks / lstrip_blocks (jinja2, minijinja).  Unknown roles (tool,
# developer, ...) are rendered as user turns.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = message['role'] if message['role'] in ['system', 'user', 'assistant'] "
    "else 'user' %}"
    "{{ '<|' ~ role ~ '|>\\n' ~ message['content'] ~ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are Warden's bundled model. Answer briefly.",
    "Continue the passage.",
    "You speak in the style of the King James Bible.",
]

# --- model / training ----------------------------------------------------------------------
MODEL = dict(n_layer=4, n_head=4, d_model=256, d_ff=1024, n_ctx=512, layer_norm_epsilon=1e-5)
TRAIN = dict(
    steps=1000,
    batch_size=8,
    lr=2e-3,
    min_lr=2e-4,
    warmup=50,
    weight_decay=0.1,
    betas=(0.9, 0.95),
    grad_clip=1.0,
    eval_every=100,
    chat_samples=3000,
)
OPSET = 17


def log(*a):
    print(*a, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path):
    if not path.exists():
        sys.exit(f"missing {path}: run the earlier steps first")
    return json.loads(path.read_text())


# =========================================================================================
# data
# =========================================================================================
def step_data(args) -> None:
    ddir = BUILD / "data"
    ddir.mkdir(parents=True, exist_ok=True)
    for pkg in DATA_PACKAGES:
        dest = ddir / pkg["file"]
        if args.deb_dir and not dest.exists():
            src = Path(args.deb_dir) / pkg["file"]
            if src.exists():
                shutil.copy(src, dest)
        if not dest.exists():
            spec = f"{pkg['package']}={pkg['version']}"
            log(f"apt-get download {spec}")
            r = subprocess.run(["apt-get", "download", spec], cwd=ddir)
            if r.returncode != 0 or not dest.exists():
                sys.exit(
                    f"could not download {spec}; run `apt-get update` first (or pass "
                    f"--deb-dir with {pkg['file']})"
                )
        got = sha256_of(dest)
        if got != pkg["sha256"]:
            sys.exit(f"sha256 mismatch for {dest.name}: got {got}, want {pkg['sha256']}")
        log(f"ok {dest.name} sha256={got}")

    root = ddir / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    for pkg in DATA_PACKAGES:
        subprocess.run(["dpkg-deb", "-x", str(ddir / pkg["file"]), str(root)], check=True)
    raw = subprocess.run(
        [str(root / "usr/bin/bible"), "-p", str(root / "usr/lib"), "-l100000", "-m", "8192",
         "gen1:1-rev22:21"],
        check=True, capture_output=True,
    ).stdout.decode("ascii")
    (ddir / "kjv_raw.txt").write_text(raw)

    chapters, cur = [], None
    for line in raw.split("\n"):
        if not line.strip():
            continue
        if not line.startswith(" "):  # "Genesis 1"
            cur = {"title": line.strip(), "verses": []}
            chapters.append(cur)
        else:  # "  12 And God said ..."
            num, text = line.strip().split(" ", 1)
            assert num.isdigit(), line
            cur["verses"].append(text.strip())
    for i, ch in enumerate(chapters):
        ch["split"] = "val" if i % VAL_EVERY == VAL_EVERY // 2 else "train"
    n_verses = sum(len(c["verses"]) for c in chapters)
    assert len(chapters) == 1189 and n_verses == 31102, (len(chapters), n_verses)

    stats = {"chapters": len(chapters), "verses": n_verses}
    for split in ("train", "val"):
        docs = [chapter_text(c) for c in chapters if c["split"] == split]
        stats[split] = {
            "chapters": len(docs),
            "bytes": sum(len(d) for d in docs),
            "words": sum(len(d.split()) for d in docs),
        }
    write_json(BUILD / "corpus.json", chapters)
    write_json(BUILD / "data_meta.json", {
        "registry": DATA_REGISTRY,
        "packages": [{k: p[k] for k in ("package", "version", "file", "sha256", "role")}
                     for p in DATA_PACKAGES],
        "text": "King James Version of the Bible (public domain), 66 books",
        "split": f"chapter-level; every {VAL_EVERY}th chapter held out for validation",
        "stats": stats,
    })
    log(json.dumps(stats))


def chapter_text(ch) -> str:
    """A plain-text document: the chapter heading, then one verse per line."""
    return ch["title"] + "\n" + "\n".join(ch["verses"]) + "\n"


def render_chat(messages, add_generation_prompt=True) -> str:
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=add_generation_prompt
    )


def chat_documents(chapters, n, rng: random.Random):
    """Turn passages into single-turn chats: a verse as the user turn, the 1-3 verses that follow
    it as the assistant turn (the document is followed by <|endoftext|> when packed)."""
    train = [c for c in chapters if c["split"] == "train" and len(c["verses"]) >= 4]
    docs = []
    for _ in range(n):
        ch = rng.choice(train)
        k = rng.randint(1, 3)
        i = rng.randrange(0, len(ch["verses"]) - k)
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        msgs.append({"role": "user", "content": ch["verses"][i]})
        prompt = render_chat(msgs, add_generation_prompt=True)
        docs.append(prompt + "\n".join(ch["verses"][i + 1 : i + 1 + k]) + "\n")
    return docs


# =========================================================================================
# tokenizer
# =========================================================================================
def step_tokenizer(args) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    chapters = read_json(BUILD / "corpus.json")
    texts = [chapter_text(c) for c in chapters if c["split"] == "train"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))

    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    path = MODEL_DIR / "tokenizer.json"
    tok.save(str(path))
    # Store merges as "a b" strings: every tokenizers release reads that form (byte-level
    # symbols never contain a space), newer ones also read the [a, b] pair form.
    j = json.loads(path.read_text())
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    path.write_text(json.dumps(j, ensure_ascii=False, separators=(",", ":")))
    back = Tokenizer.from_file(str(path))
    probe = texts[0][:2000] + render_chat([{"role": "user", "content": "Hi"}])
    assert back.encode(probe).ids == tok.encode(probe).ids
    assert back.decode(back.encode(probe).ids, skip_special_tokens=False) == probe
    (MODEL_DIR / "chat_template.jinja").write_text(CHAT_TEMPLATE)

    n_tokens = sum(len(e.ids) for e in back.encode_batch(texts))
    write_json(BUILD / "tokenizer_meta.json", {
        "vocab_size": back.get_vocab_size(),
        "train_tokens_plain": n_tokens,
        "bytes_per_token": sum(len(t) for t in texts) / n_tokens,
    })
    log(f"tokenizer: vocab {back.get_vocab_size()}, {n_tokens} train tokens, "
        f"{sum(len(t) for t in texts) / n_tokens:.2f} bytes/token")


# =========================================================================================
# model (PyTorch)
# =========================================================================================
def torch_model_cls():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["d_model"]
            self.n_head = c["n_head"]
            self.ln_1 = nn.LayerNorm(d, eps=c["layer_norm_epsilon"])
            self.attn_qkv = nn.Linear(d, 3 * d)
            self.attn_proj = nn.Linear(d, d)
            self.ln_2 = nn.LayerNorm(d, eps=c["layer_norm_epsilon"])
            self.mlp_fc = nn.Linear(d, c["d_ff"])
            self.mlp_proj = nn.Linear(c["d_ff"], d)

        def forward(self, x, mask=None):
            b, t, d = x.shape
            q, k, v = self.attn_qkv(self.ln_1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
            if mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
            return x + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self, c, vocab_size):
            super().__init__()
            self.c = c
            self.wte = nn.Embedding(vocab_size, c["d_model"])
            self.wpe = nn.Embedding(c["n_ctx"], c["d_model"])
            self.blocks = nn.ModuleList(Block(c) for _ in range(c["n_layer"]))
            self.ln_f = nn.LayerNorm(c["d_model"], eps=c["layer_norm_epsilon"])
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                elif "ln" in name:
                    nn.init.ones_(p)
                elif name.endswith("proj.weight"):
                    nn.init.normal_(p, std=0.02 / math.sqrt(2 * c["n_layer"]))
                else:
                    nn.init.normal_(p, std=0.02)

        def forward(self, idx, position_ids=None, mask=None):
            if position_ids is None:
                position_ids = torch.arange(idx.shape[1])[None]
            x = self.wte(idx) + self.wpe(position_ids)
            for blk in self.blocks:
                x = blk(x, mask)
            return F.linear(self.ln_f(x), self.wte.weight)  # tied output embedding

    return GPT


# =========================================================================================
# train
# =========================================================================================
def step_train(args) -> None:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    cfg = dict(MODEL)
    tcfg = dict(TRAIN)
    if args.steps:
        tcfg["steps"] = args.steps

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    eot = tok.token_to_id(EOT)
    chapters = read_json(BUILD / "corpus.json")
    train_docs = [chapter_text(c) for c in chapters if c["split"] == "train"]
    val_docs = [chapter_text(c) for c in chapters if c["split"] == "val"]
    chat_docs = chat_documents(chapters, tcfg["chat_samples"], rng)
    docs = train_docs + chat_docs
    rng.shuffle(docs)

    def pack(texts):
        out = []
        for enc in tok.encode_batch(texts):
            out.append(eot)
            out.extend(enc.ids)
        return np.array(out, dtype=np.int64)

    train_ids, val_ids = pack(docs), pack(val_docs)
    n_plain = int(sum(len(e.ids) + 1 for e in tok.encode_batch(train_docs)))
    log(f"train tokens {len(train_ids)} ({n_plain} plain text, {len(train_ids) - n_plain} chat), "
        f"val tokens {len(val_ids)}")

    GPT = torch_model_cls()
    model = GPT(cfg, tok.get_vocab_size())
    n_params = sum(p.numel() for p in model.parameters())
    log(f"parameters: {n_params}")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg["lr"], betas=tcfg["betas"],
    )
    T, B, steps = cfg["n_ctx"], tcfg["batch_size"], tcfg["steps"]

    def lr_at(s):
        if s < tcfg["warmup"]:
            return tcfg["lr"] * (s + 1) / tcfg["warmup"]
        p = (s - tcfg["warmup"]) / max(1, steps - tcfg["warmup"])
        return tcfg["min_lr"] + 0.5 * (tcfg["lr"] - tcfg["min_lr"]) * (1 + math.cos(math.pi * p))

    # fixed evaluation windows: all of validation, 48 random windows of training text
    val_windows = [val_ids[i : i + T + 1] for i in range(0, len(val_ids) - T - 1, T)]
    erng = np.random.default_rng(SEED + 1)
    train_windows = [train_ids[i : i + T + 1] for i in erng.integers(0, len(train_ids) - T - 1, 48)]

    @torch.no_grad()
    def evaluate(windows):
        model.eval()
        tot, n = 0.0, 0
        for i in range(0, len(windows), 16):
            w = torch.from_numpy(np.stack(windows[i : i + 16]))
            logits = model(w[:, :-1])
            tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1),
                                   reduction="sum").item()
            n += w[:, 1:].numel()
        model.train()
        return tot / n

    brng = np.random.default_rng(SEED)
    history, best = [], None
    t0 = time.time()
    recent = []
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        ix = brng.integers(0, len(train_ids) - T - 1, B)
        batch = torch.from_numpy(np.stack([train_ids[i : i + T + 1] for i in ix]))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        opt.step()
        recent.append(loss.item())
        if (s + 1) % tcfg["eval_every"] == 0 or s + 1 == steps:
            vl, tl = evaluate(val_windows), evaluate(train_windows)
            el = time.time() - t0
            history.append({"step": s + 1, "train_batch_loss": sum(recent) / len(recent),
                            "train_loss": tl, "val_loss": vl, "elapsed_s": round(el, 1)})
            recent = []
            log(f"step {s + 1}/{steps}  train {tl:.4f}  val {vl:.4f}  "
                f"lr {lr_at(s):.2e}  {el:.0f}s  ({(s + 1) * B * T / el:.0f} tok/s)")
            if best is None or vl < best["val_loss"]:
                best = dict(history[-1])
                torch.save(model.state_dict(), BUILD / "best.pt")
    train_time = time.time() - t0
    model.load_state_dict(torch.load(BUILD / "best.pt"))
    meta = {
        "model": cfg,
        "vocab_size": tok.get_vocab_size(),
        "parameters": n_params,
        "train": {**tcfg, "betas": list(tcfg["betas"]), "seed": SEED, "threads": THREADS,
                  "context": T, "tokens_per_step": B * T, "tokens_seen": steps * B * T,
                  "train_tokens": int(len(train_ids)), "train_tokens_plain": n_plain,
                  "val_tokens": int(len(val_ids)),
                  "epochs": round(steps * B * T / len(train_ids), 2)},
        "history": history,
        "selected": best,
        "train_loss": round(best["train_loss"], 4),
        "val_loss": round(best["val_loss"], 4),
        "val_perplexity": round(math.exp(best["val_loss"]), 2),
        "training_time_s": round(train_time, 1),
        "torch": str(torch.__version__),
        "cpu": platform.processor() or platform.machine(),
    }
    torch.save({"state_dict": model.state_dict(), "meta": meta}, BUILD / "model.pt")
    write_json(BUILD / "train_meta.json", meta)
    log(f"done in {train_time:.0f}s; selected step {best['step']}: train {best['train_loss']:.4f} "
        f"val {best['val_loss']:.4f}")


# =========================================================================================
# export (hand-built ONNX graph in the Optimum decoder-with-past layout)
# =========================================================================================
def build_onnx(state, cfg, vocab_size):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    L, H, D = cfg["n_layer"], cfg["n_head"], cfg["d_model"]
    Dh = D // H
    eps = cfg["layer_norm_epsilon"]
    W = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
    inits, nodes = [], []
    counter = [0]

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const_i64(name, vals):
        return init(name, np.array(vals, dtype=np.int64))

    def node(op, inputs, n_out=1, name=None, **attrs):
        counter[0] += 1
        base = name or f"{op}_{counter[0]}"
        outs = [base] if n_out == 1 else [f"{base}_{i}" for i in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=f"n_{base}", **attrs))
        return outs[0] if n_out == 1 else outs

    # inputs / outputs
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32,
                                             ["batch_size", "sequence_length", vocab_size])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", f32, ["batch_size", H, "past_sequence_length", Dh]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", f32, ["batch_size", H, "total_sequence_length", Dh]))

    # constants
    c_zero = const_i64("c_zero", 0)
    c_one = const_i64("c_one", 1)
    c_ax0 = const_i64("c_axes0", [0])
    c_ax1 = const_i64("c_axes1", [1])
    c_ax12 = const_i64("c_axes12", [1, 2])
    c_split = const_i64("c_split_qkv", [D, D, D])
    c_heads = const_i64("c_shape_heads", [0, 0, H, Dh])
    c_model = const_i64("c_shape_model", [0, 0, D])
    c_scale = init("c_scale", np.array(1.0 / math.sqrt(Dh), dtype=np.float32))
    c_neg = init("c_mask_value", np.array(-1e9, dtype=np.float32))
    c_half = init("c_half", np.array(0.5, dtype=np.float32))
    c_onef = init("c_one_f", np.array(1.0, dtype=np.float32))
    c_rsqrt2 = init("c_rsqrt2", np.array(1.0 / math.sqrt(2.0), dtype=np.float32))

    # attention mask: causal (with past offset) AND key not padded -> bool [B, 1, S, T]
    s_len = node("Squeeze", [node("Shape", ["input_ids"], start=1, end=2), c_ax0], name="seq_len")
    t_len = node("Squeeze", [node("Shape", ["attention_mask"], start=1, end=2), c_ax0],
                 name="total_len")
    past_len = node("Sub", [t_len, s_len], name="past_len")
    q_pos = node("Add", [node("Range", [c_zero, s_len, c_one]), past_len], name="query_pos")
    k_pos = node("Range", [c_zero, t_len, c_one], name="key_pos")
    causal = node("LessOrEqual", [node("Unsqueeze", [k_pos, c_ax0]),
                                  node("Unsqueeze", [q_pos, c_ax1])], name="causal")  # [S, T]
    keep = node("Unsqueeze", [node("Cast", ["attention_mask"], to=TensorProto.BOOL), c_ax12],
                name="key_keep")  # [B, 1, 1, T]
    allowed = node("And", [causal, keep], name="allowed")  # [B, 1, S, T]

    def layer_norm(x, prefix):
        return node("LayerNormalization",
                    [x, init(prefix + ".weight", W[prefix + ".weight"]),
                     init(prefix + ".bias", W[prefix + ".bias"])], axis=-1, epsilon=eps)

    def linear(x, prefix):
        w = init(prefix + ".weight", W[prefix + ".weight"].T)
        return node("Add", [node("MatMul", [x, w]), init(prefix + ".bias", W[prefix + ".bias"])])

    wte = init("wte.weight", W["wte.weight"])
    x = node("Add", [node("Gather", [wte, "input_ids"], axis=0),
                     node("Gather", [init("wpe.weight", W["wpe.weight"]), "position_ids"], axis=0)],
             name="embeddings")
    for i in range(L):
        p = f"blocks.{i}"
        qkv = linear(layer_norm(x, p + ".ln_1"), p + ".attn_qkv")
        q, k, v = node("Split", [qkv, c_split], n_out=3, axis=2, name=f"l{i}_qkv")

        def heads(t):
            return node("Transpose", [node("Reshape", [t, c_heads])], perm=[0, 2, 1, 3])

        present_k = node("Concat", [f"past_key_values.{i}.key", heads(k)], axis=2,
                         name=f"present.{i}.key")
        present_v = node("Concat", [f"past_key_values.{i}.value", heads(v)], axis=2,
                         name=f"present.{i}.value")
        scores = node("Mul", [node("MatMul", [heads(q), node("Transpose", [present_k],
                                                               perm=[0, 1, 3, 2])]), c_scale])
        probs = node("Softmax", [node("Where", [allowed, scores, c_neg])], axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, present_v])], perm=[0, 2, 1, 3])
        x = node("Add", [x, linear(node("Reshape", [ctx, c_model]), p + ".attn_proj")])
        h = linear(layer_norm(x, p + ".ln_2"), p + ".mlp_fc")
        gelu = node("Mul", [node("Mul", [h, c_half]),
                            node("Add", [node("Erf", [node("Mul", [h, c_rsqrt2])]), c_onef])])
        x = node("Add", [x, linear(gelu, p + ".mlp_proj")])
    x = layer_norm(x, "ln_f")
    node("MatMul", [x, node("Transpose", [wte], perm=[1, 0])], name="logits")  # tied weights

    graph = helper.make_graph(nodes, "warden-gpt", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="warden build_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def step_export(args) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer

    torch.set_num_threads(THREADS)
    ck = torch.load(BUILD / "model.pt")
    meta = ck["meta"]
    cfg = meta["model"]
    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    V = tok.get_vocab_size()
    model_proto = build_onnx(ck["state_dict"], cfg, V)
    path = MODEL_DIR / "model.onnx"
    onnx.save(model_proto, str(path))
    size = path.stat().st_size
    log(f"wrote {path} ({size} bytes)")

    # ONNX vs PyTorch on a full sequence (empty past)
    GPT = torch_model_cls()
    model = GPT(cfg, V)
    model.load_state_dict(ck["state_dict"])
    model.eval()
    ids = tok.encode("In the beginning God created the heaven and the earth.").ids
    sess = new_session(path)
    L, H, Dh = cfg["n_layer"], cfg["n_head"], cfg["d_model"] // cfg["n_head"]
    feed = make_feed(np.array([ids]), np.ones((1, len(ids)), np.int64),
                     np.arange(len(ids))[None], empty_past(1, L, H, Dh))
    onnx_logits = sess.run(["logits"], feed)[0]
    with torch.no_grad():
        torch_logits = model(torch.tensor([ids])).numpy()
    diff = float(np.abs(onnx_logits - torch_logits).max())
    log(f"max |onnx - torch| logits = {diff:.2e}")
    assert diff < 1e-3, diff

    data_meta = read_json(BUILD / "data_meta.json")
    config = {
        "model_type": "warden-gpt",
        "architecture": "decoder-only transformer, pre-LayerNorm, learned absolute positions, "
                        "causal multi-head self-attention, GELU MLP, tied input/output embeddings",
        "vocab_size": V,
        "n_layer": cfg["n_layer"],
        "n_head": cfg["n_head"],
        "head_dim": Dh,
        "d_model": cfg["d_model"],
        "d_ff": cfg["d_ff"],
        "max_position_embeddings": cfg["n_ctx"],
        "layer_norm_epsilon": cfg["layer_norm_epsilon"],
        "activation": "gelu (erf)",
        # Hugging Face-style aliases
        "num_hidden_layers": cfg["n_layer"],
        "num_attention_heads": cfg["n_head"],
        "num_key_value_heads": cfg["n_head"],
        "hidden_size": cfg["d_model"],
        "bos_token_id": tok.token_to_id(EOT),
        "eos_token_id": tok.token_to_id(EOT),
        "pad_token_id": tok.token_to_id(EOT),
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "torch_dtype": "float32",
        "onnx": {
            "file": "model.onnx",
            "bytes": size,
            "sha256": sha256_of(path),
            "opset": OPSET,
            "layout": "optimum decoder-with-past (single file, past may be empty)",
            "inputs": ["input_ids", "attention_mask", "position_ids"]
            + [f"past_key_values.{i}.{kv}" for i in range(cfg["n_layer"]) for kv in ("key", "value")],
            "outputs": ["logits"]
            + [f"present.{i}.{kv}" for i in range(cfg["n_layer"]) for kv in ("key", "value")],
            "past_shape": "[batch, n_head, past_seq, head_dim]",
            "attention_mask": "int64 [batch, past_seq + seq], 1 = attend, 0 = padding",
        },
        "tokenizer": {"file": "tokenizer.json", "type": "byte-level BPE",
                      "chat_template": "chat_template.jinja"},
        "training": {
            "data": data_meta,
            "parameters": meta["parameters"],
            "hyperparameters": meta["train"],
            "train_loss": meta["train_loss"],
            "val_loss": meta["val_loss"],
            "val_perplexity": meta["val_perplexity"],
            "selected_step": meta["selected"]["step"],
            "training_time_s": meta["training_time_s"],
            "torch": meta["torch"],
            "loss_history": meta["history"],
        },
        "built_by": "inference/scripts/build_model.py",
    }
    write_json(MODEL_DIR / "config.json", config)


# =========================================================================================
# verify (onnxruntime only: reads nothing but inference/model/)
# =========================================================================================
def new_session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def empty_past(batch, L, H, Dh):
    import numpy as np

    return [np.zeros((batch, H, 0, Dh), np.float32) for _ in range(2 * L)]


def make_feed(ids, mask, pos, past):
    import numpy as np

    feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
            "position_ids": pos.astype(np.int64)}
    for i in range(len(past) // 2):
        feed[f"past_key_values.{i}.key"] = past[2 * i]
        feed[f"past_key_values.{i}.value"] = past[2 * i + 1]
    return feed


class Runner:
    def __init__(self, model_dir: Path):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.sess = new_session(model_dir / "model.onnx")
        self.L, self.H, self.Dh = self.cfg["n_layer"], self.cfg["n_head"], self.cfg["head_dim"]
        self.out_names = [o.name for o in self.sess.get_outputs()]

    def step(self, ids, mask, pos, past):
        outs = self.sess.run(self.out_names, make_feed(ids, mask, pos, past))
        return outs[0], outs[1:]

    def greedy(self, prompt_ids, n, stop_at_eos=False):
        """Greedy decoding with the KV cache, batch 1. Returns (new ids, first-step logits,
        prefill seconds, per-token decode seconds)."""
        import numpy as np

        ids = np.array([prompt_ids])
        t0 = time.perf_counter()
        logits, past = self.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None],
                                 empty_past(1, self.L, self.H, self.Dh))
        t_prefill = time.perf_counter() - t0
        first = logits[0, -1].copy()
        out, total = [], ids.shape[1]
        t1 = time.perf_counter()
        for _ in range(n):
            nxt = int(np.argmax(logits[0, -1]))
            out.append(nxt)
            if stop_at_eos and nxt == self.cfg["eos_token_id"]:
                break
            if len(out) == n:
                break
            logits, past = self.step(np.array([[nxt]]), np.ones((1, total + 1), np.int64),
                                     np.array([[total]]), past)
            total += 1
        t_decode = time.perf_counter() - t1
        return out, first, t_prefill, t_decode / max(1, len(out) - 1)


    def sample(self, prompt_ids, n, rng, temperature=0.8, top_k=40):
        """Temperature + top-k sampling with the KV cache, batch 1; stops at eos."""
        import numpy as np

        ids = np.array([prompt_ids])
        logits, past = self.step(ids, np.ones_like(ids), np.arange(ids.shape[1])[None],
                                 empty_past(1, self.L, self.H, self.Dh))
        out, total = [], ids.shape[1]
        while len(out) < n:
            lg = logits[0, -1].astype(np.float64) / temperature
            top = np.argpartition(-lg, top_k)[:top_k]
            p = np.exp(lg[top] - lg[top].max())
            nxt = int(top[rng.choice(top_k, p=p / p.sum())])
            out.append(nxt)
            if nxt == self.cfg["eos_token_id"] or len(out) == n:
                break
            logits, past = self.step(np.array([[nxt]]), np.ones((1, total + 1), np.int64),
                                     np.array([[total]]), past)
            total += 1
        return out


def step_verify(args) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    r = Runner(MODEL_DIR)
    L, H, Dh = r.L, r.H, r.Dh
    eos = r.cfg["eos_token_id"]
    report = {}

    # (1) full pass == prefill + chunks + token-by-token with past
    ids = tok.encode("And God said, Let there be light: and there was light. And God saw the "
                     "light, that it was good: and God divided the light from the darkness.").ids
    n = len(ids)
    full, full_present = r.step(np.array([ids]), np.ones((1, n), np.int64), np.arange(n)[None],
                                empty_past(1, L, H, Dh))
    pieces, past, done = [], empty_past(1, L, H, Dh), 0
    for chunk in [5, 3] + [1] * (n - 8):
        seg = ids[done : done + chunk]
        lg, past = r.step(np.array([seg]), np.ones((1, done + chunk), np.int64),
                          np.arange(done, done + chunk)[None], past)
        pieces.append(lg)
        done += chunk
    inc = np.concatenate(pieces, axis=1)
    d1 = float(np.abs(inc - full).max())
    d1p = max(float(np.abs(a - b).max()) for a, b in zip(past, full_present))
    log(f"[1] full vs incremental ({n} tokens, chunks 5,3,1,...): max |dlogits| = {d1:.2e}, "
        f"max |dpresent| = {d1p:.2e}")
    assert inc.shape == full.shape and d1 < 1e-4 and d1p < 1e-4
    report["full_vs_incremental_max_abs_diff"] = d1

    # (2) padded batches == single prompts (left padding, then right padding), and decoding
    #     continues correctly with a padded cache
    prompts = ["The LORD is my shepherd; I shall not want.", "Blessed are the meek"]
    enc = [tok.encode(p).ids for p in prompts]
    singles = []
    for e in enc:
        out, first, _, _ = r.greedy(e, 6)
        singles.append((first, out))
    width = max(len(e) for e in enc)
    pad = r.cfg["pad_token_id"]
    worst = 0.0
    for side in ("left", "right"):
        ids_b = np.full((2, width), pad, np.int64)
        mask = np.zeros((2, width), np.int64)
        for b, e in enumerate(enc):
            sl = slice(width - len(e), width) if side == "left" else slice(0, len(e))
            ids_b[b, sl] = e
            mask[b, sl] = 1
        pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        lg, past = r.step(ids_b, mask, pos, empty_past(2, L, H, Dh))
        last = [width - 1 if side == "left" else len(e) - 1 for e in enc]
        for b in range(2):
            d = float(np.abs(lg[b, last[b]] - singles[b][0]).max())
            worst = max(worst, d)
        # keep decoding the batch for 5 more tokens through the padded cache
        nxt = [int(np.argmax(lg[b, last[b]])) for b in range(2)]
        gen = [[nxt[0]], [nxt[1]]]
        next_pos = mask.sum(1)
        for _ in range(5):
            mask = np.concatenate([mask, np.ones((2, 1), np.int64)], axis=1)
            lg, past = r.step(np.array(nxt)[:, None], mask, next_pos[:, None], past)
            next_pos = next_pos + 1
            nxt = [int(np.argmax(lg[b, -1])) for b in range(2)]
            for b in range(2):
                gen[b].append(nxt[b])
        for b in range(2):
            assert gen[b] == singles[b][1], (side, b, gen[b], singles[b][1])
        log(f"[2] {side}-padded batch of {[len(e) for e in enc]} tokens: next-token logits match "
            f"single prompts (max |d| so far {worst:.2e}); 6 greedy tokens through the padded "
            f"cache match")
    assert worst < 1e-4, worst
    report["padded_batch_max_abs_diff"] = worst

    # (3) greedy samples
    samples = []
    sample_prompts = [
        ("text", "In the beginning"),
        ("text", "And the king said unto"),
        ("text", "The wisdom of the"),
        ("chat", [{"role": "user", "content": "Tell me about the light."}]),
        ("chat", [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What shall we do with the ships?"}]),
    ]
    for kind, p in sample_prompts:
        text = p if kind == "text" else render_chat(p)
        pid = tok.encode(text).ids
        out, _, _, _ = r.greedy(pid, 40, stop_at_eos=True)
        completion = tok.decode(out, skip_special_tokens=False)
        samples.append({"kind": kind, "prompt": p, "completion": completion})
        log(f"[3] {kind} {json.dumps(p)}\n    -> {json.dumps(completion)}")
    report["greedy_samples"] = samples

    # sampled continuations (temperature 0.8, top-k 40, fixed seed): what a chat request with
    # default sampling settings looks like
    srng = np.random.default_rng(SEED)
    sampled = []
    for kind, p in sample_prompts:
        text = p if kind == "text" else render_chat(p)
        pid = tok.encode(text).ids
        out = r.sample(pid, 48, srng, temperature=0.8, top_k=40)
        completion = tok.decode(out, skip_special_tokens=False)
        sampled.append({"kind": kind, "prompt": p, "completion": completion})
        log(f"[3] sampled (T=0.8, top-k 40) {kind} {json.dumps(p)}\n    -> {json.dumps(completion)}")
    report["sampled_samples"] = sampled

    # sampling speed: greedy decoding with the KV cache, batch 1
    pid = tok.encode("And it came to pass").ids
    r.greedy(pid, 16)  # warm-up
    runs = []
    for _ in range(3):
        out, _, t_pre, t_tok = r.greedy(pid, 256)
        runs.append((t_pre, t_tok))
    t_pre = min(x[0] for x in runs)
    t_tok = min(x[1] for x in runs)
    # batch 8 decode throughput, same cache length
    b8 = np.array([pid] * 8)
    lg, past = r.step(b8, np.ones_like(b8), np.tile(np.arange(len(pid)), (8, 1)),
                      empty_past(8, L, H, Dh))
    total = len(pid)
    t0 = time.perf_counter()
    for _ in range(128):
        nxt = lg[:, -1].argmax(-1)[:, None]
        lg, past = r.step(nxt, np.ones((8, total + 1), np.int64), np.full((8, 1), total), past)
        total += 1
    b8_tps = 8 * 128 / (time.perf_counter() - t0)
    speed = {
        "threads": THREADS,
        "prompt_tokens": len(pid),
        "new_tokens": 256,
        "prefill_ms": round(t_pre * 1000, 2),
        "decode_ms_per_token": round(t_tok * 1000, 3),
        "decode_tokens_per_s_batch1": round(1.0 / t_tok, 1),
        "decode_tokens_per_s_batch8": round(b8_tps, 1),
        "cpu": platform.processor() or platform.machine(),
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    log(f"[speed] prefill {speed['prefill_ms']} ms; greedy decode with past: "
        f"{speed['decode_tokens_per_s_batch1']} tok/s (batch 1), "
        f"{speed['decode_tokens_per_s_batch8']} tok/s (batch 8), {THREADS} threads")
    report["speed"] = speed

    # fixtures for the Rust worker
    cases = []
    fixture_prompts = [
        ("text", "In the beginning God created"),
        ("text", "And the LORD spake unto Moses, saying,"),
        ("text", "Hello, world!"),
        ("chat", [{"role": "user", "content": "Who made the heaven and the earth?"}]),
        ("chat", [{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "Say something."}]),
    ]
    for kind, p in fixture_prompts:
        text = p if kind == "text" else render_chat(p)
        pid = tok.encode(text).ids
        out, first, _, _ = r.greedy(pid, 16)
        top = np.argsort(-first)[:5]
        case = {"kind": kind}
        if kind == "chat":
            case["messages"] = p
        case.update({
            "prompt": text,
            "prompt_ids": pid,
            "greedy_ids": out,
            "greedy_text": tok.decode(out, skip_special_tokens=False),
            "first_step_top5": [[int(i), round(float(first[i]), 4)] for i in top],
        })
        cases.append(case)
    write_json(MODEL_DIR / "fixtures.json", {
        "description": "Greedy decoding fixtures computed with onnxruntime (CPU, fp32) by "
                       "inference/scripts/build_model.py verify. prompt_ids come from "
                       "tokenizer.json (no special tokens added; chat prompts are rendered with "
                       "chat_template.jinja, add_generation_prompt=true). greedy_ids are the next "
                       "16 argmax tokens decoded with the KV cache, batch 1, position_ids 0.., "
                       "not stopping at eos. first_step_top5 = [token id, logit] after the "
                       "prompt (compare logits with a tolerance of ~1e-3).",
        "model_sha256": sha256_of(MODEL_DIR / "model.onnx"),
        "tokenizer_sha256": sha256_of(MODEL_DIR / "tokenizer.json"),
        "onnxruntime": speed["onnxruntime"],
        "eos_token_id": eos,
        "max_new_tokens": 16,
        "cases": cases,
    })
    total_bytes = sum(f.stat().st_size for f in MODEL_DIR.iterdir() if f.is_file())
    report["files"] = {f.name: f.stat().st_size for f in sorted(MODEL_DIR.iterdir()) if f.is_file()}
    report["total_bytes"] = total_bytes
    write_json(BUILD / "verify_report.json", report)
    log(f"files: {report['files']} total {total_bytes} bytes")
    assert total_bytes <= 20 * 1024 * 1024, "model directory exceeds 20 MB"
    log("verify: OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("step", choices=["data", "tokenizer", "train", "export", "verify", "all"])
    ap.add_argument("--steps", type=int, default=0, help="override the number of training steps")
    ap.add_argument("--deb-dir", default=os.environ.get("WARDEN_DEB_DIR"),
                    help="directory holding the pinned .deb files (skips apt-get download)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    BUILD.mkdir(parents=True, exist_ok=True)
    steps = {"data": step_data, "tokenizer": step_tokenizer, "train": step_train,
             "export": step_export, "verify": step_verify}
    for name in (list(steps) if args.step == "all" else [args.step]):
        log(f"== {name}")
        t0 = time.time()
        steps[name](args)
        log(f"== {name} done in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
