//! # mpsearch
//!
//! Automated mixed-precision search for neural-network compression: per-layer bit-width × sparsity ×
//! low-rank assignments, scored by a candle evaluator and a hardware cost model, searched by exact,
//! evolutionary and Bayesian strategies, with the Pareto front of quality against cost as the result.
//!
//! See `DESIGN.md` in the project's shared folder for the architecture; each module's docs say its job.

pub mod compress;
pub mod cost;
pub mod cpu;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod fs;
pub mod measure;
pub mod model;
pub mod pareto;
pub mod recover;
pub mod report;
pub mod search;
pub mod sensitivity;
pub mod shipped;
pub mod space;
pub mod store;
pub mod strategy;
pub mod timing;

pub use error::{Error, Result};
