#!/usr/bin/env bash
# Fetches Fashion-MNIST (Zalando SE, MIT licence) for retraining the embedded demo CNN and rebuilding its
# embedded images (scripts/train-demo.sh, scripts/make-fashion.py). Searching the demo needs neither: its
# evaluation images and trained weights are embedded in the binary.
#
# The data comes from Debian's `dataset-fashion-mnist` package (0.0~git20200523.55506a9-1, 30.9 MB): taken
# from /usr/share/datasets/fashion-mnist when the package is installed, else downloaded with
# `apt-get download` (no root needed) and unpacked with `dpkg-deb -x`. The four .gz files are checked
# against their known sha256 and decompressed to
#   ${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte
# Running it again when those files are there does nothing. On success the folder is the last line printed.
#
# Needs: apt-get and dpkg-deb (Debian or Ubuntu), sha256sum, gunzip.
set -euo pipefail

CACHE="${MPSEARCH_CACHE:-$HOME/.cache/mpsearch}"
DEST="$CACHE/fashion-mnist"
SYSTEM=/usr/share/datasets/fashion-mnist
declare -A SHA256=(
    [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
    [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
    [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
    [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)
# Sizes of the decompressed files: idx headers (16 bytes for images, 8 for labels) plus the data.
declare -A SIZE=(
    [train-images-idx3-ubyte]=47040016
    [train-labels-idx1-ubyte]=60008
    [t10k-images-idx3-ubyte]=7840016
    [t10k-labels-idx1-ubyte]=10008
)

die() {
    echo "fetch-fashion-mnist: error: $*" >&2
    exit 1
}

complete() {
    local f
    for f in "${!SIZE[@]}"; do
        [[ -f "$DEST/$f" && "$(stat -c %s "$DEST/$f")" == "${SIZE[$f]}" ]] || return 1
    done
}

if complete; then
    echo "fetch-fashion-mnist: already present" >&2
    echo "$DEST"
    exit 0
fi

SRC="$SYSTEM"
if [[ ! -d "$SRC" ]]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
        die "needs apt-get and dpkg-deb (Debian's dataset-fashion-mnist package), or the package installed"
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    (cd "$TMP" && apt-get download dataset-fashion-mnist >&2) ||
        die "apt-get download dataset-fashion-mnist failed (run apt-get update first?)"
    dpkg-deb -x "$TMP"/dataset-fashion-mnist_*.deb "$TMP/root"
    SRC="$TMP/root/usr/share/datasets/fashion-mnist"
fi

mkdir -p "$DEST"
for gz in "${!SHA256[@]}"; do
    [[ -f "$SRC/$gz" ]] || die "$SRC/$gz is missing"
    got="$(sha256sum "$SRC/$gz" | cut -d' ' -f1)"
    [[ "$got" == "${SHA256[$gz]}" ]] || die "$SRC/$gz has sha256 $got, expected ${SHA256[$gz]}"
    gunzip -c "$SRC/$gz" > "$DEST/${gz%.gz}.part"
    mv "$DEST/${gz%.gz}.part" "$DEST/${gz%.gz}"
done
complete || die "the decompressed files in $DEST do not have the expected sizes"
echo "fetch-fashion-mnist: Fashion-MNIST in $DEST" >&2
echo "$DEST"
