#!/usr/bin/env python3
"""An independent reference for mpsearch's GGUF decoder (src/model/llama/): next-token logits of a
Llama-family GGUF file, and its tokenizer, in a short numpy program that shares no code with mpsearch
or candle. The file is read with the `gguf` package (llama.cpp's own Python reader, PyPI `gguf`) and
every tensor dequantized with its `gguf.quants`; the forward runs in float64.

    python3 scripts/llama-reference.py logits FILE.gguf < prompts.json > logits.json
    python3 scripts/llama-reference.py tokenize FILE.gguf < texts.json > ids.json

prompts.json: a list of prompts, each a list of token ids. logits.json: {"logits": [prompt][position]
[vocabulary]}, the next-token logits after every token of every prompt.
texts.json: a list of strings. ids.json: {"ids": [text][token]}.

The forward is written the way Hugging Face's `LlamaForCausalLM` computes, not the way llama.cpp does,
so that agreement checks the conventions too: the q and k rows of a `llama` file, which llama.cpp's
converter permuted (`convert_hf_to_gguf.py`, `LlamaModel.permute`) for its interleaved-pair rope, are
permuted back, and rope rotates the two halves of each head (`rotate_half`). A `qwen2` file is stored
unpermuted and rotated by halves in llama.cpp too. RMSNorm `x / sqrt(mean(x²) + eps) * w`; causal
grouped-query attention (query head h reads key/value head h // (heads / kv_heads)); SwiGLU MLP
`down(silu(gate(x)) * up(x))`; the output head is `output.weight`, or the embedding table when the
file has none. Linear rope scaling and `rope_freqs.weight` are not implemented (the file is refused).

The tokenizer is a plain transcription of byte-level BPE: text split by the pre-tokenizer regex
(GPT-2's, hand-written below with unicodedata categories; for `smollm`/`starcoder`-style files every
digit is split off first, as llama.cpp's `\\p{N}` rule and Hugging Face's `Digits(individual_digits)`
do), each piece's UTF-8 bytes mapped to GPT-2's byte characters, then the lowest-ranked adjacent pair
merged until none is in `tokenizer.ggml.merges`. Control tokens in the text are not parsed (llama.cpp's
`parse_special = false`); BOS is prepended when `tokenizer.ggml.add_bos_token` is true.

Needs numpy and gguf (pip install numpy gguf==0.17.1).
"""

import json
import sys
import unicodedata

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def tensors(reader):
    """Every tensor, dequantized to float64, row-major [rows, columns] (the reverse of ggml's ne)."""
    out = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        values = dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(values, dtype=np.float64).reshape(shape)
    return out


def unpermute(w, heads):
    """Undoes convert_hf_to_gguf's permute(w, heads): rows (h, i, j) -> (h, j, i) for d/2 x 2 pairs."""
    rows = w.shape[0]
    d = rows // heads
    return w.reshape(heads, d // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Model:
    def __init__(self, path):
        r = GGUFReader(path)
        arch = field(r, "general.architecture")
        if arch not in ("llama", "qwen2"):
            sys.exit(f"{path}: architecture {arch!r} is not llama or qwen2")
        key = lambda k, d=None: field(r, f"{arch}.{k}", d)
        self.blocks = int(key("block_count"))
        self.heads = int(key("attention.head_count"))
        self.kv_heads = int(key("attention.head_count_kv", self.heads))
        width = int(key("embedding_length"))
        self.head_dim = int(key("attention.key_length", width // self.heads))
        self.eps = float(key("attention.layer_norm_rms_epsilon"))
        self.base = float(key("rope.freq_base", 10000.0))
        if key("rope.scaling.type", "none") != "none" or key("rope.scaling.factor") is not None:
            sys.exit(f"{path}: rope scaling is not implemented in the reference")
        self.t = tensors(r)
        if "rope_freqs.weight" in self.t:
            sys.exit(f"{path}: rope_freqs is not implemented in the reference")
        if arch == "llama":
            for b in range(self.blocks):
                q, k = f"blk.{b}.attn_q", f"blk.{b}.attn_k"
                self.t[q + ".weight"] = unpermute(self.t[q + ".weight"], self.heads)
                self.t[k + ".weight"] = unpermute(self.t[k + ".weight"], self.kv_heads)
                for name, heads in ((q, self.heads), (k, self.kv_heads)):
                    if name + ".bias" in self.t:
                        bias = self.t[name + ".bias"][:, None]
                        self.t[name + ".bias"] = unpermute(bias, heads)[:, 0]

    def linear(self, name, x):
        y = x @ self.t[name + ".weight"].T
        if name + ".bias" in self.t:
            y = y + self.t[name + ".bias"]
        return y

    def logits(self, ids):
        """Next-token logits [len(ids), vocabulary] of one prompt."""
        n, d = len(ids), self.head_dim
        h = self.t["token_embd.weight"][np.asarray(ids)]
        inv = 1.0 / self.base ** (np.arange(0, d, 2, dtype=np.float64) / d)
        angles = np.outer(np.arange(n, dtype=np.float64), inv)
        cos = np.cos(np.concatenate([angles, angles], axis=-1))
        sin = np.sin(np.concatenate([angles, angles], axis=-1))
        causal = np.triu(np.full((n, n), -np.inf), k=1)
        group = self.heads // self.kv_heads
        for b in range(self.blocks):
            p = f"blk.{b}."
            x = rms_norm(h, self.t[p + "attn_norm.weight"], self.eps)
            q = self.linear(p + "attn_q", x).reshape(n, self.heads, d).transpose(1, 0, 2)
            k = self.linear(p + "attn_k", x).reshape(n, self.kv_heads, d).transpose(1, 0, 2)
            v = self.linear(p + "attn_v", x).reshape(n, self.kv_heads, d).transpose(1, 0, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = np.repeat(k, group, axis=0)
            v = np.repeat(v, group, axis=0)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(d) + causal
            a = (softmax(scores) @ v).transpose(1, 0, 2).reshape(n, self.heads * d)
            h = h + self.linear(p + "attn_output", a)
            x = rms_norm(h, self.t[p + "ffn_norm.weight"], self.eps)
            gate = self.linear(p + "ffn_gate", x)
            silu = gate / (1.0 + np.exp(-gate))
            h = h + self.linear(p + "ffn_down", silu * self.linear(p + "ffn_up", x))
        x = rms_norm(h, self.t["output_norm.weight"], self.eps)
        head = self.t.get("output.weight", self.t["token_embd.weight"])
        return x @ head.T


# ---- tokenizer ------------------------------------------------------------------------------------


def byte_chars():
    """GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, others to U+0100 on."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def is_letter(c):
    return unicodedata.category(c).startswith("L")


def is_number(c):
    return unicodedata.category(c).startswith("N")


def is_space(c):
    # Unicode White_Space (Python's isspace also counts the separators U+001C..U+001F).
    return c.isspace() and c not in "\x1c\x1d\x1e\x1f"


def is_other(c):
    return not (is_space(c) or is_letter(c) or is_number(c))


def gpt2_split(text):
    """'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+, by hand."""
    pieces, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "'":
            suffix = next((s for s in ("s", "t", "re", "ve", "m", "ll", "d") if text.startswith(s, i + 1)), None)
            if suffix is not None:
                pieces.append(text[i : i + 1 + len(suffix)])
                i += 1 + len(suffix)
                continue
        matched = False
        for cls in (is_letter, is_number, is_other):
            start = i + 1 if text[i] == " " and i + 1 < n and cls(text[i + 1]) else i
            j = start
            while j < n and cls(text[j]):
                j += 1
            if j > start:
                pieces.append(text[i:j])
                i, matched = j, True
                break
        if matched:
            continue
        # whitespace: \s+(?!\S) takes the run but the last space before a non-space; else \s+.
        j = i
        while j < n and is_space(text[j]):
            j += 1
        if j < n and j - i > 1:
            j -= 1
        pieces.append(text[i:j])
        i = j
    return pieces


def digits_then_gpt2(text):
    pieces, run = [], ""
    for c in text:
        if is_number(c):
            if run:
                pieces += gpt2_split(run)
                run = ""
            pieces.append(c)
        else:
            run += c
    if run:
        pieces += gpt2_split(run)
    return pieces


class Tokenizer:
    def __init__(self, path):
        r = GGUFReader(path)
        if field(r, "tokenizer.ggml.model") != "gpt2":
            sys.exit(f"{path}: the reference tokenizer is byte-level BPE (gpt2) only")
        pre = field(r, "tokenizer.ggml.pre")
        if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"):
            self.split = digits_then_gpt2
        elif pre in ("gpt-2", "phi-2", "mpt", "olmo"):
            self.split = gpt2_split
        else:
            sys.exit(f"{path}: the reference tokenizer does not implement pre-tokenizer {pre!r}")
        tokens = field(r, "tokenizer.ggml.tokens")
        self.ids = {}
        for i, t in enumerate(tokens):
            self.ids.setdefault(t, i)
        self.ranks = {}
        for rank, m in enumerate(field(r, "tokenizer.ggml.merges")):
            cut = m.index(" ", 1)
            self.ranks[(m[:cut], m[cut + 1 :])] = rank
        self.bos = field(r, "tokenizer.ggml.bos_token_id") if field(r, "tokenizer.ggml.add_bos_token", False) else None
        self.chars = byte_chars()

    def bpe(self, piece):
        symbols = [self.chars[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            pairs = [(rank, i) for rank, i in pairs if rank is not None]
            if not pairs:
                break
            _, i = min(pairs)
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return [self.ids[s] for s in symbols]

    def encode(self, text):
        out = [] if self.bos is None else [self.bos]
        for piece in self.split(text):
            out += self.bpe(piece)
        return out


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("logits", "tokenize"):
        sys.exit(__doc__)
    command, path = sys.argv[1], sys.argv[2]
    request = json.load(sys.stdin)
    if command == "tokenize":
        tok = Tokenizer(path)
        json.dump({"ids": [tok.encode(t) for t in request]}, sys.stdout)
        return
    model = Model(path)
    sys.stdout.write('{"logits": [')
    for p, ids in enumerate(request):
        rows = model.logits([int(i) for i in ids])
        sys.stdout.write(("," if p else "") + "[")
        sys.stdout.write(",".join("[" + ",".join("%.9g" % v for v in row) + "]" for row in rows))
        sys.stdout.write("]")
    sys.stdout.write("]}\n")


if __name__ == "__main__":
    main()
