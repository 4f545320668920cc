//! # Data sets
//!
//! Evaluation, calibration and training data, held as candle tensors ready for a [`Model`]'s forward
//! pass: the embedded UCI optical digits (8×8) that the demo model is trained on ([`Digits`]), and
//! sentence files plus the shipped sentences for encoders ([`text`]). A [`Batch`] is one batch of model
//! input, as every data set hands it out.
//!
//! [`Model`]: crate::model::Model

mod batch;
mod digits;
pub mod text;

pub use batch::Batch;
pub use digits::{Digits, Split, CLASSES, SAMPLES, SIDE, SPLIT_SEED};
