//! # Data sets
//!
//! Evaluation, calibration and training data, held as candle tensors ready for a [`Model`]'s forward
//! pass: the embedded UCI optical digits (8×8) that the demo model is trained on ([`Digits`]), and
//! sentence files plus the shipped sentences for encoders ([`text`]).
//!
//! [`Model`]: crate::model::Model

mod digits;
pub mod text;

pub use digits::{Digits, Split, CLASSES, SAMPLES, SIDE, SPLIT_SEED};
