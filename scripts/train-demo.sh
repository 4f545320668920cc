#!/usr/bin/env bash
# Retrains the demo CNN from its fixed seed (mpsearch::model::demo::{SEED, EPOCHS}) on Fashion-MNIST's
# 60,000 training images and rewrites src/model/demo.safetensors, refusing weights below 90% accuracy on
# the 10,000 test images. Fetches the data set first (scripts/fetch-fashion-mnist.sh). Takes tens of
# minutes of training on 2 cores, after a release build. Extra arguments go to cargo (e.g. --offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-fashion-mnist.sh >/dev/null
cargo test --release "$@" --test it -- --ignored --exact demo::regenerate_demo_weights --nocapture
