//! # Evaluation
//!
//! An [`Evaluator`] turns an assignment into a measured quality. The [`CandleEvaluator`] compresses each
//! layer's weight as its choice says (memoised per layer and choice), runs the model's candle forward
//! pass on the evaluation data, and compares the outputs with the uncompressed model's outputs on the
//! same data ([`metrics`]). Each model kind names its default quality objective, continuous so that it
//! can steer a search: KL divergence to the f32 outputs for classifiers (accuracy alone ties too often on
//! a small test split), 1 − mean cosine to the f32 embeddings for encoders.
//!
//! An evaluator measures on one of two splits of its data ([`EvalSplit`]): the **search** split, the
//! quality every strategy sees, and the **held-out** split, on which a search's front points are
//! measured again at the end so that reports quote a quality the front was not chosen on. Each split
//! has its own content key ([`evaluation_key_on`]): the split is part of the key. A **proxy**
//! ([`EvalSplit::Proxy`]) is the first `n` samples of the search split, in the split's order: a
//! cheaper evaluation (`search --fidelity`) with its own key, so proxy and full results never mix.
//!
//! A layer in a GGML block format (`q4_k`…) is evaluated through the kernel that runs it: candle's
//! `QMatMul` on the weight quantized by candle's own quantizer, its on-the-fly activation quantization
//! included. [`CandleEvaluator::deploy_overrides`] builds the real compressed model of an assignment,
//! every layer on the kernel its choice deploys to on candle (what `mpsearch measure` times), and
//! [`describe_deployment`] says what was built for each layer.
//!
//! | file | job |
//! | --- | --- |
//! | `candle.rs` | the [`CandleEvaluator`]: compressed weights through the cache, forward, metrics; calibration statistics and importance scores |
//! | `data.rs` | [`EvalData`], a model's splits in batches, and [`load`], which pairs a model with its data |
//! | `deploy.rs` | what the deployed kernels of an assignment are, for `measure` |
//! | `metrics.rs` | quality metrics against the f32 outputs |

mod candle;
mod data;
mod deploy;
pub mod metrics;

use std::collections::BTreeMap;

use serde::Serialize;

pub use self::candle::{importance_scores, CandleEvaluator, EvalSettings, IMPORTANCE_CHUNK};
pub use self::data::{check_data, load, load_run_data, EvalData, SENTENCE_BATCH, WINDOW_BATCH};
pub use self::deploy::{describe_deployment, describe_kernel, describe_layer, DeployedLayer};
use crate::error::{Error, Result};
use crate::space::Assignment;

/// Which split of the evaluation data an evaluation measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// The split strategies see: every trial's quality.
    Search,
    /// The split a front is reported on, never searched on.
    HeldOut,
    /// The first `n` samples (images, sentences, text windows) of the search split, in its order:
    /// a proxy evaluation, compared with the f32 model's outputs on the same samples.
    Proxy(u32),
}

impl EvalSplit {
    /// How messages and JSON name it: `search`, `held-out`, `proxy`.
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Search => "search",
            EvalSplit::HeldOut => "held-out",
            EvalSplit::Proxy(_) => "proxy",
        }
    }

    /// What goes into its evaluations' keys: its name, and a proxy's size (`proxy-60`).
    fn key_label(self) -> String {
        match self {
            EvalSplit::Proxy(n) => format!("proxy-{n}"),
            _ => self.name().to_string(),
        }
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalSplit::Proxy(n) => write!(f, "proxy (the first {n} search samples)"),
            _ => f.write_str(self.name()),
        }
    }
}

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

    /// Evaluates one assignment on the search split.
    fn evaluate(&self, assignment: &Assignment) -> Result<Evaluation>;

    /// Evaluates one assignment on `split`. The default answers the search split with
    /// [`Evaluator::evaluate`] and refuses the held-out split (an evaluator without one).
    fn evaluate_on(&self, split: EvalSplit, assignment: &Assignment) -> Result<Evaluation> {
        match split {
            EvalSplit::Search => self.evaluate(assignment),
            EvalSplit::HeldOut | EvalSplit::Proxy(_) => Err(Error::Eval {
                message: format!("this evaluator has no {} split", split.name()),
            }),
        }
    }

    /// Samples in the search split (what a proxy's size is a share of); `None` for an evaluator
    /// that cannot evaluate a proxy.
    fn search_samples(&self) -> Option<usize> {
        None
    }

    /// The content key of an assignment's evaluation on the search split (see
    /// [`Evaluator::key_on`]).
    fn key(&self, assignment: &Assignment) -> blake3::Hash {
        self.key_on(EvalSplit::Search, assignment)
    }

    /// The content key of an assignment's evaluation on `split`: BLAKE3 of this evaluator's
    /// fingerprint, the split and the assignment's canonical hash. Equal keys mean equal metrics,
    /// whoever computed them.
    fn key_on(&self, split: EvalSplit, assignment: &Assignment) -> blake3::Hash {
        evaluation_key_on(&self.fingerprint(), split, &assignment.hash())
    }
}

/// The content key of `assignment`'s evaluation on the search split by an evaluator with
/// `fingerprint` (see [`Evaluator::key`]); computable without the model, from a run manifest's
/// fingerprint.
pub fn evaluation_key(fingerprint: &blake3::Hash, assignment: &Assignment) -> blake3::Hash {
    evaluation_key_on(fingerprint, EvalSplit::Search, &assignment.hash())
}

/// The content key of the evaluation on `split`, by an evaluator with `fingerprint`, of the
/// assignment whose canonical hash is `assignment` (see [`Evaluator::key_on`]); computable from a
/// run manifest and a journaled trial alone.
pub fn evaluation_key_on(
    fingerprint: &blake3::Hash,
    split: EvalSplit,
    assignment: &blake3::Hash,
) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-evaluation-v2\n");
    h.update(fingerprint.as_bytes());
    h.update(split.key_label().as_bytes());
    h.update(b"\n");
    h.update(assignment.as_bytes());
    h.finalize()
}
