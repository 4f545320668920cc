//! # Store records
//!
//! The records the store keeps. Each carries the schema version it was written with; a record of
//! another version is an error that says which mpsearch wrote it, never a silent misread.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sensitivity::Measurement;
use crate::space::AssignmentJson;

/// Version of every record layout below; bump it when one changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// A process is running it (or was, until it died: `resume` continues it).
    Running,
    /// Stopped by Ctrl-C or a signal; `resume` continues it.
    Interrupted,
    /// Its budget (trials or time) is spent; `resume --trials N` extends it.
    Complete,
    /// The strategy had nothing left to propose (the exact strategy's whole front is measured).
    Exhausted,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Complete => "complete",
            RunStatus::Exhausted => "exhausted",
        })
    }
}

/// What a run needs to be resumed: its inputs as the user gave them, and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `demo` or a model folder.
    pub model: String,
    /// Evaluation sentences file for encoders (`None`: the shipped ones).
    pub data: Option<String>,
    /// Search space as given (path or shipped name).
    pub space: String,
    /// Hardware profile as given (path or shipped name).
    pub profile: String,
    /// Batch size the cost model assumes.
    pub batch: u32,
    /// Strategy name (`exact`, `evolution`, `bayes`, `random`), resolved from `auto`.
    pub strategy: String,
    /// `latency`, `size` or `bops`.
    pub objective: String,
    pub max_latency_us: Option<f64>,
    pub max_bytes: Option<f64>,
    pub max_bops: Option<f64>,
    pub max_drop: Option<f64>,
    pub seed: u64,
    /// Points asked of the strategy at a time (fixed for the run, whatever `--jobs` is).
    pub ask_batch: usize,
    /// Trial budget (`None`: until the time budget or the strategy ends it).
    pub trials: Option<u64>,
    /// Wall-time budget in seconds.
    pub time_seconds: Option<f64>,
    /// Weight scale method (`mse`, `minmax`).
    pub scale: String,
    /// Sensitivity pairs measured one at a time before the search.
    pub pairs: usize,
}

/// One run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub schema: u32,
    pub name: String,
    pub created_unix: u64,
    pub status: RunStatus,
    /// Wall time spent searching, over every session of the run.
    pub elapsed_seconds: f64,
    pub config: RunConfig,
    /// Hypervolume reference `[cost, quality]` of the run (see `search`), so listings report the
    /// hypervolume without loading the model.
    pub reference: [f64; 2],
    /// Fingerprints of the inputs (`model`, `evaluator`, `space`, `profile` → hex), checked on resume.
    pub fingerprints: BTreeMap<String, String>,
}

/// A trial's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Asked and journaled; its result is not in yet.
    Running,
    Complete,
    Failed,
}

impl std::fmt::Display for TrialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
        })
    }
}

/// Cost of an assignment under the run's profile (journaled with the trial, never cached with quality).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostRecord {
    pub latency_us: f64,
    pub bytes: u64,
    pub bops: f64,
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub schema: u32,
    pub number: u64,
    /// The strategy that proposed it.
    pub strategy: String,
    pub state: TrialState,
    /// One choice index per group of the run's space.
    pub point: Vec<u16>,
    /// The assignment itself, so the journal reads on its own (`trials`, `runs`, reports) even if the
    /// space file changes later.
    pub assignment: AssignmentJson,
    /// The assignment's canonical hash (hex).
    pub hash: String,
    /// The evaluation cache key (hex).
    pub key: String,
    pub quality: Option<f64>,
    pub metrics: BTreeMap<String, f64>,
    pub error: Option<String>,
    pub cost: CostRecord,
    /// Whether the quality came from the evaluation cache.
    pub cached: bool,
    /// Seconds the evaluation took (when it was computed).
    pub seconds: f64,
}

/// A cached evaluation: hardware-independent metrics, by content key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedEvaluation {
    pub schema: u32,
    pub objective: String,
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
}

/// A strategy's state after `trials` trials, as [`crate::strategy::Strategy::snapshot`] wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: u32,
    pub strategy: String,
    pub trials: u64,
    pub state: String,
}

/// The sensitivity analysis of a (model, data, settings, space): cheap errors and one-at-a-time
/// measurements, so that a resumed or repeated search does not redo them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRecord {
    pub schema: u32,
    /// `errors[group][choice]`.
    pub errors: Vec<Vec<f64>>,
    pub measurements: Vec<Measurement>,
}
