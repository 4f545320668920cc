//! # Layer sensitivity
//!
//! Predicts the quality of any assignment in microseconds, so that the strategies need not spend a real
//! evaluation on every idea. The parts, each its own file:
//!
//! | file | job |
//! | --- | --- |
//! | `stats.rs` | [`LayerStats`]: a layer's input second moment `H = XᵀX` from calibration data and the relative output error of any compressed weight from it, plus the output error of quantizing its input; [`cheap_errors`] over a space |
//! | `fisher.rs` | [`FisherDiagonal`]: the diagonal empirical Fisher and mean gradient of the calibration loss by backprop (labelled models); [`fisher_errors`] over a space, an alternative input to the predictor |
//! | `checkpoint.rs` | [`Checkpoint`]: where a long analysis keeps each group's cheap errors and each measurement as it goes, so a stopped one continues |
//! | `measure.rs` | one-at-a-time measurements: the real metric with a single group compressed, cached in memory |
//! | `predictor.rs` | [`Predictor`]: per-group scales of the cheap errors fitted to the measurements, summed over groups |
//! | `rank.rs` | how far to trust it: Spearman, Kendall τ-b, mean absolute error of predicted vs measured |
//!
//! ## References
//!
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990.
//! - Z. Dong et al., "HAWQ: Hessian AWare Quantization of neural networks with mixed-precision",
//!   ICCV 2019; "HAWQ-V2", NeurIPS 2020.
//! - E. Frantar, D. Alistarh, "Optimal Brain Compression", NeurIPS 2022.

pub mod analysis;
mod checkpoint;
pub mod fisher;
mod measure;
mod predictor;
pub mod rank;
mod stats;

pub use checkpoint::{Checkpoint, NoCheckpoint};
pub use fisher::{fisher_errors, FisherDiagonal};
pub use measure::{
    measure, one_at_a_time, one_at_a_time_assignment, pick_pairs, MeasurementCache, Pairs,
};
pub use predictor::{Fit, Measurement, Predictor};
pub use stats::{cheap_errors, cheap_errors_with_progress, ActRanges, LayerStats};
