#!/usr/bin/env bash
# Retrains the demo CNN from its fixed seed (mpsearch::model::demo::{SEED, EPOCHS}) and rewrites
# src/model/demo.safetensors, refusing weights below 97% test accuracy. Takes seconds of training,
# after a release build. Extra arguments go to cargo (e.g. --offline).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release "$@" --test it -- --ignored --exact demo::regenerate_demo_weights --nocapture
