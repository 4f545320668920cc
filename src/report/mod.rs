//! # Reports and exports
//!
//! What a finished (or running) search leaves for people and other tools: exports of a chosen point
//! ([`export`]: assignment JSON, llama.cpp `--tensor-type` lines, compressed weights as safetensors).

pub mod export;
