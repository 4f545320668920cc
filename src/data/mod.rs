//! # Data sets
//!
//! Evaluation, calibration and training data, held as candle tensors ready for a [`Model`]'s forward
//! pass: a sample of Fashion-MNIST (28×28) that the demo model is evaluated on ([`FashionMnist`]), and
//! sentence files plus the shipped sentences for encoders ([`text`]), token windows of a text for language models ([`windows`]). A [`Batch`] is one batch of model
//! input, as every data set hands it out.
//!
//! Every model's evaluation data comes in three deterministic splits ([`SplitSizes`]): a
//! **calibration** split (static activation ranges, layer statistics for the sensitivity model), a
//! **search** split (the quality strategies see and the front is chosen on) and a **held-out** split
//! (the quality the front is reported on, data it was not chosen on).
//!
//! | data | calibration | search | held-out |
//! |---|---|---|---|
//! | demo: Fashion-MNIST (900 embedded test images) | 300 | 200 | 400 |
//! | sentences (shipped 400, or a `--data` file of n ≥ 4) | every 4th from the 1st (100) | the 2nd and 3rd of every 4 (200) | every 4th from the 4th (100) |
//! | text windows of 128 tokens for language models ([`windows`]; shipped text or a `--data` file) | every 4th window from the 1st, at most 8 | the 2nd and 3rd of every 4, at most 8 | every 4th from the 4th, at most 8 |
//!
//! [`Model`]: crate::model::Model

mod batch;
mod fashion;
pub mod text;
pub mod windows;

use serde::{Deserialize, Serialize};

pub use batch::Batch;
pub use fashion::{
    default_dir as fashion_dir, FashionMnist, FullSet, Split, CLASSES, CLASS_NAMES, EMBEDDED, SIDE,
    SPLIT_SEED,
};

/// How many samples (images or sentences) each split of a model's evaluation data holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    /// Samples that calibrate (static activation ranges, layer statistics).
    pub calibration: usize,
    /// Samples the search measures quality on.
    pub search: usize,
    /// Samples the front is reported on, never searched or calibrated on.
    pub held_out: usize,
}
