#!/usr/bin/env python3
"""Writes src/data/sentences.txt, mpsearch's shipped English sentences, from Ambrose Bierce's
"The Devil's Dictionary" (1911; public domain) as Debian's package dict-devil ships it
(/usr/share/dictd/devil.dict.dz, the Internet Wiretap 1st Online Edition of 1993).

    python3 scripts/make-sentences.py [dict-devil_*.deb]

Without an argument it runs `apt-get download dict-devil` in a temporary folder. The text is only cut
into sentences: prose paragraphs (verse and quotations are indented in the source, and are skipped) are
joined, split where the source puts two spaces after a sentence's end, and kept when 5 to 60 words
long; `_` italics markers are dropped. 400 sentences are taken evenly spaced from the whole book, in its
order, for sentences.txt; every other one goes to tune-sentences.txt, in the book's order (what `recover`
distils an encoder on: never a sentence of the 400, so never one of their held-out split).
Deterministic: the same package gives the same files.
"""

import gzip
import os
import re
import subprocess
import sys
import tempfile

COUNT = 400
MIN_WORDS, MAX_WORDS = 5, 60
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "data")
OUT = os.path.join(DATA, "sentences.txt")
TUNE = os.path.join(DATA, "tune-sentences.txt")


def dict_text(deb: str | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        if deb is None:
            subprocess.run(["apt-get", "download", "dict-devil"], cwd=tmp, check=True)
            deb = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".deb"))
        subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "x")], check=True)
        with gzip.open(os.path.join(tmp, "x", "usr", "share", "dictd", "devil.dict.dz"), "rt", encoding="latin-1") as f:
            return f.read()


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs of the dictionary body (from the first entry), lines joined."""
    body = text[text.index("ABASEMENT, n.") :]
    out = []
    for block in re.split(r"\n\s*\n", body):
        lines = block.split("\n")
        if not lines[0] or lines[0][0].isspace():
            continue  # verse, quotations, signatures
        joined = ""
        for line in lines:
            if line[:1].isspace():
                break  # a quotation follows in the same block
            line = line.rstrip("\n")
            if not joined:
                joined = line
            elif joined.endswith("-") and not joined.endswith("--"):
                joined += line  # a word hyphenated at a line end keeps its hyphen: "cannon-shot"
            elif re.search(r"[.!?][\"')_]*\s*$", joined):
                joined = joined.rstrip() + "  " + line  # a sentence ended at the line end
            else:
                joined = joined.rstrip() + " " + line
        out.append(joined)
    return out


def sentences(paragraph: str) -> list[str]:
    """Splits where the source puts two spaces after a sentence's end; the headword and its part of speech
    stay with the entry's first sentence ("ABATIS, n.  Rubbish in ..." -> "ABATIS, n. Rubbish in ...")."""
    out: list[str] = []
    pending = ""
    for i, frag in enumerate(re.split(r"\s{2,}", paragraph)):
        frag = (pending + " " + frag).strip() if pending else frag
        pending = ""
        is_headword = i == 0 and re.fullmatch(r"[A-Z][A-Z' ,.-]*, [a-z. &]+\.", frag)
        if is_headword or not re.search(r"[.!?][\"')_]{0,2}$", frag):
            pending = frag
            continue
        out.append(frag)
    if pending:
        out.append(pending)
    return [re.sub(r"\s+", " ", s.replace("_", "")).strip() for s in out]


def main() -> None:
    text = dict_text(sys.argv[1] if len(sys.argv) > 1 else None)
    pool = []
    for p in paragraphs(text):
        for s in sentences(p):
            words = len(s.split())
            if MIN_WORDS <= words <= MAX_WORDS and s.isascii() and s[-1] in ".!?\"')":
                pool.append(s)
    pool = list(dict.fromkeys(pool))  # no duplicates, first occurrence kept
    if len(pool) < COUNT:
        sys.exit(f"only {len(pool)} sentences found, want {COUNT}")
    picked = {i * len(pool) // COUNT for i in range(COUNT)}
    chosen = [pool[i] for i in sorted(picked)]
    rest = [s for i, s in enumerate(pool) if i not in picked]
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("\n".join(chosen) + "\n")
    with open(TUNE, "w", encoding="utf-8") as f:
        f.write("\n".join(rest) + "\n")
    print(f"wrote {os.path.normpath(OUT)}: {COUNT} of {len(pool)} sentences", file=sys.stderr)
    print(f"wrote {os.path.normpath(TUNE)}: the other {len(rest)}", file=sys.stderr)


if __name__ == "__main__":
    main()
