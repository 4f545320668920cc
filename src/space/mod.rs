//! # Search spaces
//!
//! The types every other module speaks: a layer's [`Choice`] (weight quantization, activation
//! quantization, sparsity, rank) and its notation, [`LayerInfo`], an [`Assignment`] of choices to layers
//! with its canonical encoding and content hash, and the [`SearchSpace`] read from a TOML file and
//! resolved against a model's layers (per-layer choice sets, pins, groups, exclusions).
//!
//! This module depends on nothing else of ours.

mod choice;
mod layer;

pub use choice::{
    ActQuant, Choice, Granularity, QuantScheme, Sparsity, WeightQuant, BITS, GROUP_SIZES, MAX_M, PERCENT,
};
pub use layer::{LayerInfo, LayerKind};
