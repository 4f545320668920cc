//! # Cost model
//!
//! Hardware profiles and what an assignment costs under one: latency, weight storage and bit operations.

pub mod profile;

pub use profile::{HardwareProfile, Precision};
