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
//! | `quant.rs` | weight quantization: schemes, granularities, min/max, MSE and output-error scales, integer form |
//! | `stats.rs` | a layer's input statistics `H = XᵀX`, accumulated from captured inputs |
//! | `ggml.rs` | GGML block formats through candle's own quantizer |
//! | `gptq.rs` | GPTQ rounding: each column's error compensated through `H` |
//! | `importance.rs` | what pruning ranks weights by: magnitude, or Taylor / Fisher scores from calibration gradients |
//! | `prune.rs` | unstructured, N:M (along input channels) and output-channel pruning masks |
//! | `lowrank.rs` | truncated SVD into two factors |
//! | `convfactor.rs` | Tucker-2 (HOSVD + HOOI) and CP (ALS) of a convolution kernel into a chain of smaller convolutions |
//! | `apply.rs` | a whole [`Choice`](crate::space::Choice) on a weight, in one fixed order |
//! | `kernel.rs` | a whole choice as the kernel that runs it on candle (QMatMul, f16, factors, kept rows) |
//! | `activation.rs` | int8 activation fake quantization and range calibration |
//! | `cache.rs` | the byte-bounded LRU cache of compressed weights and kernels |
//!
//! Each file's docs give its formulas and references; `apply.rs` gives the order of the steps and why.

mod activation;
mod apply;
mod cache;
pub mod convfactor;
pub mod ggml;
pub mod gptq;
mod importance;
mod kernel;
mod lowrank;
mod matrix;
pub mod prune;
mod quant;
mod stats;

pub use activation::{activation_params, calibrate_range, quantize_activation, RangeMethod};
pub use apply::{
    apply_choice, apply_with, compress_factors, compress_with, factor_kernel, CompressSettings,
    CompressedWeight,
};
pub(crate) use apply::{fake_quantize_masked, prepare};
pub use cache::{CacheForm, CacheKey, CacheStats, CompressCache, DEFAULT_CACHE_BYTES};
pub use gptq::{GptqOptions, Rounding};
pub use importance::{Importance, ImportanceSums, LayerScores, WeightScores};
pub use kernel::{block_kernel, changes_weight, deploy_kernel, deploys_dense};
pub use lowrank::{truncated_svd, LowRank};
pub use matrix::WeightMatrix;
pub use quant::{quantize_weight, IntGrid, QuantizedWeight, ScaleMethod, MSE_CLIP_RATIOS};
pub(crate) use stats::input_rows;
pub use stats::{InputAccumulator, InputStats, LayerInputs};
