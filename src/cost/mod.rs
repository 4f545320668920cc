//! # Cost model
//!
//! Hardware profiles ([`profile`]), what a layer choice and an assignment cost under one ([`model`]),
//! precomputed per-group tables with the exact cheapest and dearest reachable totals of a search space
//! ([`feasibility`]), and `calibrate`, which measures this machine with candle's kernels.

pub mod calibrate;
pub mod feasibility;
pub mod kernel;
pub mod model;
pub mod profile;

pub use feasibility::{CostTable, Feasibility};
pub use kernel::{Kernel, KernelPath, NmCompute, NmDense};
pub use model::{Cost, CostModel, LayerCost, Objective};
pub use profile::{HardwareProfile, Precision};
