#!/usr/bin/env python3
"""Rebuilds src/data/digits.bin from scikit-learn's copy of the UCI optical digits (8x8) set.

Usage: scripts/make-digits.py [SCIKIT_LEARN_WHEEL]

Without an argument it runs `pip download --no-deps scikit-learn` into a temporary folder. It takes
`sklearn/datasets/data/digits.csv.gz` out of the wheel (a zip), checks its sha256 against the one recorded
in src/data/DIGITS-LICENSE.txt (a different file is reported, not silently used), and writes 1797 records of
65 bytes: 64 pixel values (0..=16, row-major 8x8) then the label (0..=9), in the csv's row order.
Only the Python standard library is needed.
"""

import csv
import gzip
import hashlib
import io
import pathlib
import subprocess
import sys
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "src" / "data" / "digits.bin"
NOTE = ROOT / "src" / "data" / "DIGITS-LICENSE.txt"
MEMBER = "sklearn/datasets/data/digits.csv.gz"
SAMPLES, PIXELS = 1797, 64


def wheel_path(argv):
    if len(argv) > 1:
        return pathlib.Path(argv[1])
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="make-digits-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "scikit-learn", "-d", str(tmp)],
        check=True,
    )
    wheels = sorted(tmp.glob("scikit_learn-*.whl"))
    if not wheels:
        sys.exit(f"no scikit-learn wheel in {tmp}")
    return wheels[0]


def recorded_sha256():
    if not NOTE.exists():
        return None
    for line in NOTE.read_text().splitlines():
        if line.startswith("sha256 of digits.csv.gz:"):
            return line.split(":", 1)[1].strip()
    return None


def main(argv):
    wheel = wheel_path(argv)
    gz = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(gz).hexdigest()
    print(f"{wheel.name}: {MEMBER} sha256 {digest}")
    expected = recorded_sha256()
    if expected and expected != digest:
        print(f"warning: the recorded sha256 is {expected}; update {NOTE.name} if this file is meant to replace it")
    rows = list(csv.reader(io.StringIO(gzip.decompress(gz).decode("ascii"))))
    if len(rows) != SAMPLES:
        sys.exit(f"expected {SAMPLES} rows, found {len(rows)}")
    out = bytearray()
    for i, row in enumerate(rows):
        values = [int(float(v)) for v in row]
        if len(values) != PIXELS + 1:
            sys.exit(f"row {i + 1}: expected {PIXELS + 1} values, found {len(values)}")
        pixels, label = values[:PIXELS], values[PIXELS]
        if not all(0 <= p <= 16 for p in pixels) or not 0 <= label <= 9:
            sys.exit(f"row {i + 1}: a pixel outside 0..=16 or a label outside 0..=9")
        out += bytes(pixels) + bytes([label])
    OUT.write_bytes(out)
    print(f"wrote {OUT.relative_to(ROOT)}: {len(out)} bytes, sha256 {hashlib.sha256(out).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv)
