//! # Data sets
//!
//! Evaluation and calibration data: sentence files and the shipped sentences ([`text`]).

pub mod text;
