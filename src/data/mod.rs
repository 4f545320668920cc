//! # Data sets
//!
//! Evaluation, calibration and training data, held as candle tensors ready for a [`Model`]'s forward
//! pass. For now one embedded set: the UCI optical digits (8×8) that the demo model is trained on
//! ([`Digits`]); text sets for encoders come later.
//!
//! [`Model`]: crate::model::Model

mod digits;

pub use digits::{Digits, Split, CLASSES, SAMPLES, SIDE, SPLIT_SEED};
