//! # Store records
//!
//! The records the store keeps. Each carries the schema version it was written with; a record of
//! another version is an error that says which mpsearch wrote it, never a silent misread.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compress::{Importance, Rounding, ScaleMethod};
use crate::cost::{Cost, Objective};
use crate::data::SplitSizes;
use crate::sensitivity::{Measurement, Pairs};
use crate::space::AssignmentJson;
use crate::strategy::StrategyKind;

/// Version of every record layout below; bump it when one changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Its set-up (the sensitivity analysis) is under way, or was until it was stopped or its process
    /// died: `resume` continues the set-up where it stopped (see [`crate::search`]).
    #[serde(rename = "setting-up")]
    SettingUp,
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
            RunStatus::SettingUp => "setting-up",
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
    /// The strategy (`auto` is resolved before a run is recorded).
    pub strategy: StrategyKind,
    /// The cost minimised against quality.
    pub objective: Objective,
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
    /// How weight quantization picks its scales.
    pub scale: ScaleMethod,
    /// How integer weights are rounded (manifests written before this setting existed: to nearest).
    /// Round-to-nearest is not written, so that those manifests are rewritten byte for byte.
    #[serde(default, skip_serializing_if = "Rounding::is_rtn")]
    pub rounding: Rounding,
    /// How pruning ranks weights (manifests written before this setting existed: by magnitude).
    /// Magnitude is not written, so that those manifests are rewritten byte for byte.
    #[serde(default, skip_serializing_if = "Importance::is_magnitude")]
    pub importance: Importance,
    /// Sensitivity pairs measured one at a time before the search: `auto` (the frugal set-up) or at
    /// most a number (manifests written before `auto` existed hold a number).
    pub pairs: Pairs,
    /// Proxy evaluations (`--fidelity`): the share of the search split a trial is first evaluated
    /// on; `None`: every trial in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<f64>,
    /// Whether finished trials refine the predictor the strategy is asked with (at 16, 32, 64…
    /// trials; see `strategy::refine`). Manifests written before this setting existed did not, and are
    /// resumed as they were run; `false` is not written, so that they are rewritten byte for byte.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refine: bool,
    /// `--samples N`: quality measured on the first N samples of the search and held-out splits
    /// (`None`: all of them; not written, so manifests written before it are rewritten byte for
    /// byte).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
}

impl Default for RunConfig {
    /// What `mpsearch search` runs without flags: the demo model and its space on the Cortex-A76
    /// profile, `auto` (bayes) minimising latency, no limits, seed 0, 8 points asked at a time, 300
    /// trials, MSE scales, the frugal set-up (`--pairs auto`), trials refining the predictor.
    fn default() -> RunConfig {
        RunConfig {
            model: "demo".into(),
            data: None,
            space: "demo".into(),
            profile: "cortex-a76".into(),
            batch: 1,
            strategy: StrategyKind::Bayes,
            objective: Objective::Latency,
            max_latency_us: None,
            max_bytes: None,
            max_bops: None,
            max_drop: None,
            seed: 0,
            ask_batch: 8,
            trials: Some(300),
            time_seconds: None,
            scale: ScaleMethod::Mse,
            rounding: Rounding::Rtn,
            importance: Importance::Magnitude,
            pairs: Pairs::Auto,
            fidelity: None,
            refine: true,
            samples: None,
        }
    }
}

/// Fingerprints (BLAKE3, hex) of a run's inputs, recorded in its manifest and checked on resume.
///
/// The fields are in alphabetical order, so the JSON is the map `{"evaluator", "model", "profile",
/// "space"}` that manifests have always held.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    /// The evaluator: model, evaluation data and settings (what the evaluation cache is keyed by).
    pub evaluator: String,
    /// The model's weights and architecture.
    pub model: String,
    /// The hardware profile's contents.
    pub profile: String,
    /// The resolved search space: each group's layers and allowed choices.
    pub space: String,
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
    /// Fingerprints of the inputs, checked on resume.
    pub fingerprints: Fingerprints,
    /// Samples in the calibration, search and held-out splits of the evaluation data (`None` in
    /// runs recorded before the data had a held-out split; then left out of the record, as they
    /// wrote it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splits: Option<SplitSizes>,
    /// The set-up's sensitivity analysis: where it is stored and how its pairs were chosen (`None` in
    /// runs recorded before this was kept; the analysis is then found by its fixed pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupSummary>,
    /// Wall seconds the set-up took (loading the inputs included), over every session that worked on
    /// it: what a set-up stopped part-way has spent of its share of `--time`. `None` in runs recorded
    /// before the set-up was checkpointed, and in runs whose set-up was read back whole from the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_seconds: Option<f64>,
    /// The model evaluations the run spent outside its trials (`None` in runs recorded before they
    /// were counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Evaluations>,
}

/// Evaluations of one kind: computed, and answered from the evaluation cache (free).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalCount {
    pub evaluated: u64,
    pub cached: u64,
}

impl EvalCount {
    /// Both counts added.
    pub fn add(&mut self, other: EvalCount) {
        self.evaluated += other.evaluated;
        self.cached += other.cached;
    }
}

/// The model evaluations a run spent outside its trials (the trials' own are in their records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluations {
    /// One-at-a-time measurements of the set-up (zero evaluated when its analysis was reused).
    pub setup: EvalCount,
    /// The space's baselines that cannot be trials, evaluated for the report's reference lines.
    pub baselines: EvalCount,
    /// Front points evaluated on the held-out split.
    pub held_out: EvalCount,
}

/// How a run's set-up built its sensitivity model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetupSummary {
    /// Store key of the sensitivity analysis (hex).
    pub key: String,
    /// One-at-a-time measurements the analysis holds.
    pub measured: usize,
    /// The frugal set-up's budget in measurements (`None` for a fixed `--pairs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<usize>,
    /// The frugal set-up's rounds and why it stopped (`None` for a fixed `--pairs`, or when the
    /// analysis was reused from the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Whether the analysis was found in the store (computed by an earlier run).
    pub reused: bool,
}

/// A trial's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    /// Asked and journaled; its result is not in yet.
    Running,
    Complete,
    Failed,
    /// Evaluated on the proxy only (`search --fidelity`): its proxy quality showed it could not
    /// reach the front, so it was never evaluated in full (no quality; see [`TrialRecord::proxy`]).
    Pruned,
}

impl std::fmt::Display for TrialState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Failed => "failed",
            TrialState::Pruned => "pruned",
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

impl From<Cost> for CostRecord {
    fn from(c: Cost) -> CostRecord {
        CostRecord {
            latency_us: c.latency_us,
            bytes: c.bytes,
            bops: c.bops,
        }
    }
}

impl From<CostRecord> for Cost {
    fn from(c: CostRecord) -> Cost {
        Cost {
            latency_us: c.latency_us,
            bytes: c.bytes,
            bops: c.bops,
        }
    }
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
    /// Its proxy evaluation, in a run with `--fidelity` (evaluated before the full one, which only
    /// runs if the proxy says the point could reach the front).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyRecord>,
    /// The number of the first trial of the batch it was asked in, in a run with proxies: the batch's
    /// gate is built from the trials before it, also when a resume finds some of the batch finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
}

/// A trial's evaluation on the proxy (the first samples of the search split, `search --fidelity`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProxyRecord {
    /// Search samples it took.
    pub samples: u32,
    /// Their share of the search split: what a proxy costs, in full evaluations.
    pub share: f64,
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Whether it came from the evaluation cache.
    pub cached: bool,
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

/// Where a measured assignment came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MeasuredSource {
    /// The uncompressed model (every layer f32), timed in every measuring session as the reference
    /// of its speed-ups.
    Reference,
    /// A trial of the run; `point` is its 1-based position on the run's front when it was measured
    /// (`None` off the front).
    Trial { trial: u64, point: Option<usize> },
    /// An assignment drawn at random from the run's search space (not a trial of the run): the
    /// `index`-th (0-based) of those drawn with `seed`.
    Random { seed: u64, index: usize },
}

impl std::fmt::Display for MeasuredSource {
    /// `all-f32`, `point 3 (trial 17)`, `trial 12`, `random 4 (seed 0)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MeasuredSource::Reference => f.write_str("all-f32"),
            MeasuredSource::Trial {
                trial,
                point: Some(k),
            } => write!(f, "point {k} (trial {trial})"),
            MeasuredSource::Trial { trial, point: None } => write!(f, "trial {trial}"),
            MeasuredSource::Random { seed, index } => write!(f, "random {index} (seed {seed})"),
        }
    }
}

/// One assignment of a run built as a real compressed model and timed end to end on this machine
/// (`mpsearch measure`): whole forward passes on a batch of the run's search split, against the
/// latency the run's hardware profile predicts for it.
///
/// A run's measurements are numbered 0, 1, … in the order they were stored; measuring again adds
/// records, it never replaces one. Times are in microseconds of wall clock per forward pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasurementRecord {
    pub schema: u32,
    /// Its number within the run (the store's key, with the run's name).
    pub number: u64,
    /// What was measured: the f32 reference, a trial, or a random assignment of the run's space.
    pub source: MeasuredSource,
    /// The assignment built, as assignment JSON.
    pub assignment: AssignmentJson,
    /// Its canonical hash (hex): the trial's `hash` for a trial.
    pub hash: String,
    /// Samples per forward pass (images, or sentences).
    pub batch: u32,
    /// Tokens per sentence of a sequence model (every sentence exactly this long); `None` for images.
    pub tokens: Option<u32>,
    /// Samples per inference as the cost model counts them (images, or tokens: `batch × tokens`):
    /// the batch the prediction was made at.
    pub cost_batch: u32,
    /// Timed forward passes per round.
    pub repetitions: usize,
    /// The fastest timed pass of all rounds: the figure ([`MeasurementRecord::figure_us`]; `None` in
    /// records written before it was kept, whose figure is `median_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fastest_us: Option<f64>,
    /// Median of the timed passes of the round with the lowest median.
    pub median_us: f64,
    /// Interquartile range of that round's timed passes.
    pub spread_us: f64,
    /// The median of every round, in the order they ran (other processes slow whole rounds).
    pub round_medians_us: Vec<f64>,
    /// The all-f32 model's median in the same session (as `median_us`).
    pub reference_us: f64,
    /// The all-f32 model's fastest pass in the same session (as `fastest_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_fastest_us: Option<f64>,
    /// Share of the machine's CPU time (0..1) other processes used while this assignment's rounds
    /// ran, from `/proc/stat` (`None` where it cannot be told).
    pub other_load: Option<f64>,
    /// The machine: host name, CPU model, logical cores.
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    /// The threads candle ran on (`None` in records written before it was recorded).
    #[serde(default)]
    pub threads: Option<usize>,
    /// The candle-core version whose kernels ran.
    pub candle_version: String,
    /// The hardware profile the prediction is from (as the run names it) and its contents'
    /// fingerprint (hex).
    pub profile: String,
    pub profile_fingerprint: String,
    /// Its predicted latency at `cost_batch`, µs.
    pub predicted_us: f64,
    /// When it was measured (seconds since the Unix epoch).
    pub measured_unix: u64,
}

impl MeasurementRecord {
    /// Its measured latency, µs: the fastest pass (see [`crate::timing`]), or the median of the
    /// fastest round in records written before the fastest pass was kept.
    pub fn figure_us(&self) -> f64 {
        self.fastest_us.unwrap_or(self.median_us)
    }

    /// The all-f32 model's latency in the same session, as [`MeasurementRecord::figure_us`].
    pub fn reference_figure_us(&self) -> f64 {
        self.reference_fastest_us.unwrap_or(self.reference_us)
    }

    /// The all-f32 model's latency over this one's (above 1: faster than f32), by their figures.
    pub fn speedup(&self) -> f64 {
        self.reference_figure_us() / self.figure_us()
    }
}

/// How a point was fine-tuned (`mpsearch recover`): the hyper-parameters, the seed and what it was
/// trained on. Part of a recovered variant's content key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoverRecipe {
    /// Passes over the training data.
    pub epochs: usize,
    /// AdamW's peak learning rate (cosine decay to 0 over the run).
    pub lr: f64,
    /// Samples per step.
    pub batch: usize,
    /// Classifiers: weight of the hard-label cross-entropy (`1 − alpha` goes to distillation).
    pub alpha: f64,
    /// Classifiers: distillation temperature.
    pub temperature: f64,
    /// Encoders: the embedding distillation loss (`cosine` or `mse`).
    pub loss: String,
    /// The seed of the sample order.
    pub seed: u64,
    /// What it was trained on, in words (`digits training split (1 257 images)`).
    pub data: String,
    /// Hash (hex) of the training data's content.
    pub data_fingerprint: String,
}

/// How a recovery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveredState {
    /// Every epoch ran.
    Complete,
    /// Stopped (Ctrl-C) before the last epoch: the best checkpoint so far was kept.
    Interrupted,
}

impl std::fmt::Display for RecoveredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecoveredState::Complete => "complete",
            RecoveredState::Interrupted => "interrupted",
        })
    }
}

/// A recovered variant of a run's point: the point's assignment with fine-tuned weights
/// (`mpsearch recover`), evaluated like any point. Its weights are a blob ([`crate::store::Store::blob`])
/// under `weights`. A run's variants are keyed by `key`; storing a key again replaces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveredRecord {
    pub schema: u32,
    /// The variant's content key (hex): the evaluator's fingerprint, the point's assignment hash and
    /// the recipe.
    pub key: String,
    /// The trial it fine-tunes, and that trial's assignment hash (hex).
    pub trial: u64,
    pub hash: String,
    pub recipe: RecoverRecipe,
    pub state: RecoveredState,
    /// Optimizer steps run, of the recipe's total.
    pub steps: u64,
    pub total_steps: u64,
    /// The step whose weights were kept (the best validation loss), and that loss; the validation
    /// loss of the point before fine-tuning.
    pub best_step: u64,
    pub validation_loss: f64,
    pub initial_validation_loss: f64,
    /// What the validation loss was measured on, in words.
    pub validation: String,
    /// Quality and metrics on the search split.
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Quality and metrics on the held-out split (`None`: the data has none).
    pub held_out_quality: Option<f64>,
    pub held_out_metrics: BTreeMap<String, f64>,
    /// The point's held-out quality and metrics before fine-tuning (same evaluator).
    pub before_held_out_quality: Option<f64>,
    pub before_held_out_metrics: BTreeMap<String, f64>,
    /// How its weights are quantized — in training and in its evaluation and export:
    /// round-to-nearest (GPTQ is a post-training rounding that fine-tuning replaces) with the run's
    /// scale method, or MSE-optimal clipping where the run's needs input statistics.
    pub scale: ScaleMethod,
    pub rounding: Rounding,
    /// Blob key (hex) of the fine-tuned weights.
    pub weights: String,
    /// Seconds of training, and the threads candle ran on.
    pub seconds: f64,
    pub threads: usize,
    /// When it was stored (seconds since the Unix epoch).
    pub created_unix: u64,
}
