//! # Evaluation
//!
//! An [`Evaluator`] turns an assignment into a measured quality. The [`CandleEvaluator`] compresses each
//! layer's weight as its choice says (memoised per layer and choice), runs the model's candle forward
//! pass on the evaluation data, and compares the outputs with the uncompressed model's outputs on the
//! same data ([`metrics`]). Each model kind names its default quality objective, continuous so that it
//! can steer a search: KL divergence to the f32 outputs for classifiers (accuracy alone ties too often on
//! a small test split), 1 − mean cosine to the f32 embeddings for encoders.

mod candle;
pub mod metrics;

use std::collections::BTreeMap;

use serde::Serialize;

pub use self::candle::{load, CandleEvaluator, EvalData, EvalSettings, SENTENCE_BATCH};
use crate::error::Result;
use crate::space::Assignment;

/// The result of evaluating one assignment.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// The default objective's value; lower is better.
    pub quality: f64,
    /// Every metric, by name (`accuracy`, `kl_divergence`, `mean_cosine`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Wall time of this evaluation.
    pub seconds: f64,
}

/// Something that measures the quality of assignments.
pub trait Evaluator: Send + Sync {
    /// Identifies the model, the data and the settings: equal fingerprints give equal results.
    fn fingerprint(&self) -> blake3::Hash;

    /// Name of the quality objective (`kl_divergence` or `cosine_distance`).
    fn objective(&self) -> &'static str;

    /// Evaluates one assignment.
    fn evaluate(&self, assignment: &Assignment) -> Result<Evaluation>;

    /// The content key of an assignment's evaluation: BLAKE3 of this evaluator's fingerprint and the
    /// assignment's canonical hash. Equal keys mean equal metrics, whoever computed them.
    fn key(&self, assignment: &Assignment) -> blake3::Hash {
        evaluation_key(&self.fingerprint(), assignment)
    }
}

/// The content key of `assignment`'s evaluation by an evaluator with `fingerprint` (see
/// [`Evaluator::key`]); computable without the model, from a run manifest's fingerprint.
pub fn evaluation_key(fingerprint: &blake3::Hash, assignment: &Assignment) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-evaluation-v1\n");
    h.update(fingerprint.as_bytes());
    h.update(assignment.hash().as_bytes());
    h.finalize()
}
