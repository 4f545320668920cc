//! # Arguments
//!
//! Every flag of every command, as clap parses them: plain values with their defaults and help. Groups
//! that several commands share are one struct each, flattened in (`--model`/`--space`, `--data`/`--scale`,
//! the three `--max-*` budgets, `--store`). Names from a fixed list (`--strategy`, `--objective`,
//! `--scale`, `--format`) are `ValueEnum`s, so clap refuses a bad one with the allowed list (exit 2);
//! each converts to what the library takes in one function here. The checks of values clap cannot judge
//! (a budget's unit, a duration, a count that must be positive) are the `check`/`parse` methods below;
//! every command runs them first, before it loads or runs anything (exit 1 with a message naming the flag).
//! This is the only file of the crate that touches clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mpsearch::compress::{GptqOptions, Importance, Rounding, ScaleMethod};
use mpsearch::cost::model::parse_budget;
use mpsearch::cost::Objective;
use mpsearch::store::Location;
use mpsearch::strategy::StrategyKind;

#[derive(Parser)]
#[command(
    name = "mpsearch",
    version,
    about = "Automated mixed-precision search for neural-network compression",
    long_about = "Searches per-layer bit-width x sparsity x low-rank assignments of a model against a hardware \
                  cost model. Models: `--model demo` (embedded), a Hugging Face folder (config.json + \
                  model.safetensors), or a llama.cpp GGUF file (FILE.gguf). Search spaces and hardware profiles: a path, or the bare name of a \
                  shipped one (`mpsearch profiles` lists profiles)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// List a model's compressible layers (name, kind, shape, params, MACs) and, with --space, each
    /// layer's allowed choices and group.
    Inspect(InspectArgs),
    /// Predicted latency, weight bytes and bit operations of an assignment (or of the baselines and the
    /// reachable range of a search space) under a hardware profile.
    Cost(CostArgs),
    /// Evaluate assignments with the candle evaluator: one assignment JSON per line in (--stdin) or one
    /// file, one result JSON per line out.
    Eval(EvalArgs),
    /// Layer sensitivity: cheap per-layer errors, one-at-a-time measurements, the fitted predictor of
    /// any assignment's quality and, with --validate, how far to trust it.
    Sensitivity(SensitivityArgs),
    /// Search per-layer assignments for the Pareto front of quality against cost (the main job). Runs are
    /// journaled in the store: `resume` continues one after a crash or Ctrl-C.
    Search(Box<SearchArgs>),
    /// Continue a stored run (after Ctrl-C, a crash or a reboot), or extend its budget.
    Resume(ResumeArgs),
    /// List the runs of a store: status, trials, evaluations and cache hits, front.
    Runs(RunsArgs),
    /// List the trials of a run in trial order.
    Trials(TrialsArgs),
    /// Export a point of a run: its assignment JSON, llama.cpp --tensor-type lines, or its compressed
    /// weights as safetensors (default point: the best one; see README).
    Export(ExportArgs),
    /// Fine-tune a point of a run (quantization-aware training with distillation from the f32
    /// model) and store the result in the run as a recovered variant of the point (see README).
    Recover(RecoverArgs),
    /// Draw a run's Pareto front, per-layer allocation, hypervolume and sensitivity plots (SVG and
    /// PNG) and write one self-contained HTML page; with --profile, re-cost the run under another
    /// hardware profile first (no evaluation is run).
    Report(ReportArgs),
    /// Build points of a run as real compressed models on candle and time whole forward passes on
    /// this machine, against the latency the run's profile predicts (stored with the run).
    Measure(MeasureArgs),
    /// List the shipped hardware profiles and the local ones in ./hardware-profiles/.
    Profiles,
    /// Measure this machine's candle CPU kernels and write a hardware profile.
    Calibrate(CalibrateArgs),
    /// Whole stores: `store copy FROM TO` copies every record between folders (sled) and
    /// PostgreSQL databases.
    Store(StoreCommandArgs),
    /// Evaluate the trials that runs of a shared (PostgreSQL) store queue for workers (`search
    /// --workers`), on any machine that has their model, data and profile, until Ctrl-C.
    Worker(WorkerArgs),
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The shared store: postgres://USER@HOST/DATABASE.
    #[arg(long, value_name = "URL", value_parser = LocationParser)]
    pub store: Location,
    /// Evaluations at once (1 lets candle use every core inside each).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// How old a claim's heartbeat may be before another worker takes its evaluation over (this
    /// worker beats four times per lease).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub lease: String,
    /// Stop after this long without anything to evaluate (default: wait until Ctrl-C).
    #[arg(long, value_name = "DURATION")]
    pub idle: Option<String>,
}

impl WorkerArgs {
    /// Checks every value; returns the lease and the idle time in seconds.
    pub fn check(&self) -> anyhow::Result<(f64, Option<f64>)> {
        positive(self.jobs as u64, "--jobs")?;
        anyhow::ensure!(
            matches!(self.store, Location::Postgres(_)),
            "a worker needs the store its runs' controllers share: --store \
             postgres://USER@HOST/DATABASE (the sled store {} belongs to one process)",
            self.store
        );
        let lease = parse_duration(&self.lease, "--lease")?;
        anyhow::ensure!(
            lease >= 1.0,
            "--lease {}: a claim's lease must be at least 1s (the worker beats four times per lease)",
            self.lease
        );
        let idle = self
            .idle
            .as_deref()
            .map(|t| parse_duration(t, "--idle"))
            .transpose()?;
        Ok((lease, idle))
    }
}

// ---- shared groups ----

#[derive(Args)]
pub struct ModelArgs {
    /// `demo` (the embedded demo CNN), a Hugging Face model folder, or a GGUF file (`*.gguf`: a
    /// Llama-family decoder).
    #[arg(long, default_value = "demo")]
    pub model: String,
}

/// The model and the search space over its layers.
#[derive(Args)]
pub struct ModelSpaceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Search space (path or shipped name); default: the model's own (`demo`, or `bert-base`).
    #[arg(long)]
    pub space: Option<String>,
}

/// What the evaluator reads and how it compresses.
#[derive(Args)]
pub struct DataArgs {
    /// Encoders: a sentence file (one per line); default: the shipped sentences.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How weight quantization picks its scales: min/max, MSE-optimal clipping, or the clipping with
    /// the least output error on the calibration inputs.
    #[arg(long, value_enum, default_value_t = ScaleArg::Mse)]
    pub scale: ScaleArg,
    /// How integer weights are rounded: by GPTQ (each column's rounding error compensated in the
    /// later columns through the calibration inputs' statistics), or to nearest.
    // GPTQ is the default by measurement (BENCHMARKS.md, "Rounding"): at 2–4 bits it lowers the demo's
    // KL 2–27× and raises MiniLM's cosine at every choice, for a few seconds of set-up.
    #[arg(long, value_enum, default_value_t = RoundingArg::Gptq)]
    pub rounding: RoundingArg,
    /// GPTQ's dampening of H, as a fraction of the mean of its diagonal.
    #[arg(long, default_value_t = mpsearch::compress::gptq::DEFAULT_DAMP, value_name = "FRACTION")]
    pub gptq_damp: f64,
    /// GPTQ quantizes the columns in order of decreasing input energy (group scales are then fitted
    /// up front).
    #[arg(long)]
    pub act_order: bool,
    /// What pruning (sparse<P>, N:M, channels<P>) ranks weights by: their magnitude, or the
    /// calibration loss's gradients — taylor |g·w|, fisher ½·F·w² (cross-entropy on the labels for
    /// a classifier, distillation of the embeddings for an encoder; one backward pass per
    /// calibration sample).
    #[arg(long, value_enum, default_value_t = ImportanceArg::Magnitude)]
    pub importance: ImportanceArg,
    /// Measure quality on the first N samples of the search split and of the held-out split only
    /// (default: all of them): quicker, coarser evaluations (see README). A run records it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub samples: Option<u64>,
}

impl DataArgs {
    /// The rounding, its options checked (an error names the flag).
    pub fn rounding(&self) -> anyhow::Result<Rounding> {
        let gptq_flags = self.act_order || self.gptq_damp != mpsearch::compress::gptq::DEFAULT_DAMP;
        match self.rounding {
            RoundingArg::Rtn => {
                anyhow::ensure!(
                    !gptq_flags,
                    "--gptq-damp and --act-order apply to --rounding gptq only"
                );
                Ok(Rounding::Rtn)
            }
            RoundingArg::Gptq => Ok(Rounding::Gptq(
                GptqOptions::new(self.gptq_damp, self.act_order)
                    .map_err(|e| anyhow::anyhow!("--gptq-damp: {e}"))?,
            )),
        }
    }
}

/// What every command that evaluates in one go needs: the model, its space and data, and the evaluator
/// settings.
#[derive(Args)]
pub struct EvaluatorArgs {
    #[command(flatten)]
    pub input: ModelSpaceArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Memory for memoised compressed weights, in MiB (least recently used ones are dropped first).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub cache_mb: usize,
}

/// Limits on the three costs, as written on the command line (parsed by [`BudgetArgs::parse`]).
#[derive(Args)]
pub struct BudgetArgs {
    /// Latency limit (e.g. 800us, 2.5ms), checked against the space's reachable range first.
    #[arg(long, value_name = "LATENCY")]
    pub max_latency: Option<String>,
    /// Size limit (e.g. 300000, 512KiB, 2MB, or 4.5bpw: bits per weight as llama.cpp counts them),
    /// checked against the space's reachable range first.
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Bit-operations limit (e.g. 1.2G), checked against the space's reachable range first.
    #[arg(long, value_name = "BOPS")]
    pub max_bops: Option<String>,
}

#[derive(Args)]
pub struct StoreArgs {
    /// The store: a folder (sled, created if missing; one process at a time writes it) or a
    /// postgres://USER@HOST/DATABASE URL (shared; its tables are created on first use).
    #[arg(long, default_value = "mpsearch-store", value_name = "DIR|URL", value_parser = LocationParser)]
    pub store: Location,
}

/// Parses a store location without clap's usual "invalid value '<the text>'": a postgres:// URL can
/// hold a password, which only [`Location`]'s own (redacted) message may show.
#[derive(Clone)]
struct LocationParser;

impl clap::builder::TypedValueParser for LocationParser {
    type Value = Location;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Location, clap::Error> {
        let name = arg.map_or_else(|| "the store".to_string(), |a| a.to_string());
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidUtf8,
                format!("{name}: a store location must be UTF-8 text\n"),
            )
        })?;
        text.parse().map_err(|e: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{name}: {e}\n"),
            )
        })
    }
}

// ---- named values ----

/// `--strategy`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    // Bayes (see README: the best on the benchmarks).
    Auto,
    // Exact front of the sensitivity model (dynamic programming), then measured.
    Exact,
    // NSGA-II.
    Evolution,
    // Gaussian process on the sensitivity model's residuals, expected hypervolume improvement.
    Bayes,
    // Uniform random draws (the baseline).
    Random,
}

/// The strategy `--strategy auto` picks, and why (the comparison is in BENCHMARKS.md: the best
/// hypervolume on MiniLM-L6 and on the synthetic problem, within 0.2% of the exact front on the demo, whose
/// sensitivity model is nearly exact; and unlike `exact` it goes on improving once the predicted front is
/// measured).
pub const AUTO: StrategyKind = StrategyKind::Bayes;
pub const AUTO_WHY: &str =
    "Gaussian process on the sensitivity model's residuals, seeded with its exact front";

impl StrategyArg {
    /// The library's strategy (`auto` is [`AUTO`]).
    pub fn kind(self) -> StrategyKind {
        match self {
            StrategyArg::Auto => AUTO,
            StrategyArg::Exact => StrategyKind::Exact,
            StrategyArg::Evolution => StrategyKind::Evolution,
            StrategyArg::Bayes => StrategyKind::Bayes,
            StrategyArg::Random => StrategyKind::Random,
        }
    }
}

/// `--objective`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectiveArg {
    // Predicted latency under the profile.
    Latency,
    // Weight bytes.
    Size,
    // Bit operations.
    Bops,
}

impl ObjectiveArg {
    /// The library's objective.
    pub fn objective(self) -> Objective {
        match self {
            ObjectiveArg::Latency => Objective::Latency,
            ObjectiveArg::Size => Objective::Size,
            ObjectiveArg::Bops => Objective::Bops,
        }
    }
}

/// `eval --split`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Search,
    HeldOut,
}

impl SplitArg {
    /// The library's split.
    pub fn split(self) -> mpsearch::eval::EvalSplit {
        match self {
            SplitArg::Search => mpsearch::eval::EvalSplit::Search,
            SplitArg::HeldOut => mpsearch::eval::EvalSplit::HeldOut,
        }
    }
}

/// `--scale`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScaleArg {
    // The full range of each group's values.
    Minmax,
    // The clipping ratio with the least squared error.
    Mse,
    // The clipping ratio with the least output error on the calibration inputs.
    Output,
}

impl ScaleArg {
    /// The library's scale method.
    pub fn method(self) -> ScaleMethod {
        match self {
            ScaleArg::Minmax => ScaleMethod::MinMax,
            ScaleArg::Mse => ScaleMethod::Mse,
            ScaleArg::Output => ScaleMethod::Output,
        }
    }
}

/// `--importance`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportanceArg {
    // |w|, rows by their L2 norm.
    Magnitude,
    // |g·w| from per-sample gradients of the calibration loss.
    Taylor,
    // ½·F·w², F the diagonal empirical Fisher.
    Fisher,
}

impl ImportanceArg {
    /// The library's importance.
    pub fn importance(self) -> Importance {
        match self {
            ImportanceArg::Magnitude => Importance::Magnitude,
            ImportanceArg::Taylor => Importance::Taylor,
            ImportanceArg::Fisher => Importance::Fisher,
        }
    }
}

/// `--rounding`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoundingArg {
    // Round to nearest.
    Rtn,
    // GPTQ.
    Gptq,
}

/// `export --format`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Assignment JSON, accepted by `eval --assignment` and `cost --assignment`.
    Json,
    /// `--tensor-type NAME=TYPE` lines for llama-quantize.
    LlamaCpp,
    /// The compressed weights (compact form) as a safetensors file.
    Safetensors,
    /// A language model as a llama.cpp GGUF file: each tensor in its chosen type, re-quantized from the
    /// base, the source's metadata kept.
    Gguf,
}

// ---- commands ----

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Search space (path or shipped name): adds each layer's choices, group and status.
    #[arg(long)]
    pub space: Option<String>,
    /// Print JSON: {"model", "layers": [{"name", "kind", "shape", "params", "macs", "choices", "group"}]}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CostArgs {
    #[command(flatten)]
    pub input: ModelSpaceArgs,
    /// Hardware profile (path or shipped name, see `mpsearch profiles`).
    #[arg(long)]
    pub profile: String,
    /// Assignment JSON file: {"default": "<choice>", "layers": {"<layer>": "<choice>"}}.
    #[arg(long)]
    pub assignment: Option<PathBuf>,
    /// Samples per inference (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["assignment", "stdin", "recipe", "from_gguf"])))]
pub struct EvalArgs {
    #[command(flatten)]
    pub setup: EvaluatorArgs,
    /// One assignment JSON file: {"default": "<choice>", "layers": {"<layer>": "<choice>"}}.
    #[arg(long)]
    pub assignment: Option<PathBuf>,
    /// Read assignments from standard input, one JSON per line; answer each line as it arrives.
    #[arg(long)]
    pub stdin: bool,
    /// Evaluate llama.cpp's standard mix instead of an assignment: Q3_K_M, Q4_K_M or Q5_K_M (language
    /// models; the types llama-quantize gives each tensor, as an assignment of the space).
    #[arg(long, value_name = "RECIPE")]
    pub recipe: Option<String>,
    /// Evaluate the types a GGUF file exported from this model stores (`export --format gguf`), its
    /// blocks checked to be the ones mpsearch builds from the base.
    #[arg(long, value_name = "FILE.gguf")]
    pub from_gguf: Option<PathBuf>,
    /// The split to measure on: search (what a search sees) or held-out (what reports quote).
    #[arg(long, value_enum, default_value_t = SplitArg::Search)]
    pub split: SplitArg,
    /// Also cost each assignment under this hardware profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Samples per inference for the cost (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
}

#[derive(Args)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub setup: EvaluatorArgs,
    /// At most this many (group, choice) pairs are measured one at a time (a seeded sample if the
    /// space has more).
    #[arg(long, default_value_t = 400)]
    pub pairs: usize,
    /// Also measure N random assignments and report how well the prediction ranks them.
    #[arg(long, value_name = "N")]
    pub validate: Option<usize>,
    /// Seed of the pair sample and of the validation assignments.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub input: ModelSpaceArgs,
    /// Hardware profile (path or shipped name, see `mpsearch profiles`).
    #[arg(long, default_value = "cortex-a76")]
    pub profile: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// The search strategy; auto is bayes (see README).
    #[arg(long, value_enum, default_value_t = StrategyArg::Auto)]
    pub strategy: StrategyArg,
    /// The cost to minimise against quality.
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Latency)]
    pub objective: ObjectiveArg,
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Quality limit, in the quality objective's units (KL divergence for classifiers, cosine distance
    /// for encoders).
    #[arg(long, value_name = "DROP")]
    pub max_drop: Option<f64>,
    /// Trial budget; default 300, or none when --time is given (the run then ends with its time).
    #[arg(long)]
    pub trials: Option<u64>,
    /// Wall-time budget (e.g. 8h, 90m); the run ends at whichever budget is spent first.
    #[arg(long, value_name = "DURATION")]
    pub time: Option<String>,
    /// Seed of the strategy and of the sensitivity sample: same seed, same trials.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluations at once. 1 lets candle use every core inside each evaluation; results are the same
    /// whatever the number.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Points asked of the strategy at a time (part of the run: fixed when it starts).
    #[arg(long, default_value_t = 8)]
    pub ask: usize,
    /// Have `mpsearch worker` processes, on this or other machines, evaluate the trials: each batch
    /// is queued in the (PostgreSQL) store and told to the strategy in trial order, so the trials are
    /// those of a run without workers.
    #[arg(long)]
    pub workers: bool,
    /// Run name; default: <space>-<profile>-<n>.
    #[arg(long)]
    pub run: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Samples per inference the cost model assumes (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Sensitivity pairs measured one at a time before the search: `auto` (only those the predicted
    /// front needs, at most a fifth of the run's budget; see README) or at most N (a seeded sample).
    #[arg(long, value_name = "auto|N", default_value = "auto")]
    pub pairs: mpsearch::sensitivity::Pairs,
    /// Proxy evaluations: each trial is first evaluated on this share of the search split (its first
    /// samples, e.g. 0.25), and in full only if that could put it on the front (see README).
    #[arg(long, value_name = "SHARE")]
    pub fidelity: Option<f64>,
    /// Keep the set-up's predictor for the whole run: by default finished trials refine it (at 16,
    /// 32, 64… trials; see README).
    #[arg(long)]
    pub no_refine: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("extend").args(["trials", "time"])))]
pub struct ResumeArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    /// Run N more trials (default: finish the run's budget).
    #[arg(long, value_name = "N")]
    pub trials: Option<u64>,
    /// Run for this much more wall time (e.g. 2h).
    #[arg(long, value_name = "DURATION")]
    pub time: Option<String>,
    /// Evaluations at once.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Have `mpsearch worker` processes evaluate the trials (a PostgreSQL store only); see `search`.
    #[arg(long)]
    pub workers: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args)]
pub struct RunsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print JSON: [{"name", "status", "trials", "evaluated", "cache_hits", "profile", "objective", "front"}].
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TrialsArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// One JSON line per trial: {"trial", "state", "strategy", "quality", "cost", "hash", "assignment", "cached", "seconds"}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("which").args(["point", "trial"])))]
pub struct ExportArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    /// The K-th point of the run's front in cost order (the `point` column of the front table);
    /// default: the best point (see README: the cheapest within --max-drop, the most accurate within
    /// cost limits, else the knee of the front).
    #[arg(long, value_name = "K")]
    pub point: Option<usize>,
    /// Any complete trial, by number (see `mpsearch trials RUN`).
    #[arg(long, value_name = "N")]
    pub trial: Option<u64>,
    /// Export the point's recovered variant (`mpsearch recover`) instead: its fine-tuned weights
    /// (the variant with the best held-out quality, if the point has several).
    #[arg(long)]
    pub recovered: bool,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output file (written atomically). Default: standard output for json and llama-cpp;
    /// RUN-pointK.safetensors (or RUN-trialN.safetensors) in the current folder for safetensors.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args)]
pub struct RecoverArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    /// The K-th point of the run's front in cost order (as `export --point K`).
    #[arg(long, value_name = "K")]
    pub point: usize,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Passes over the training data (default: 10 for classifiers, 3 for encoders).
    #[arg(long, value_name = "E")]
    pub epochs: Option<usize>,
    /// AdamW's peak learning rate, decayed to 0 by a cosine (default: 1e-3 for classifiers, 1e-4
    /// for encoders).
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// Samples per step (default: 64 images, 16 sentences).
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Classifiers: weight of the hard-label cross-entropy; 1 − ALPHA goes to distillation.
    #[arg(long, default_value_t = 0.5, value_name = "A")]
    pub alpha: f64,
    /// Classifiers: distillation temperature.
    #[arg(long, default_value_t = 4.0, value_name = "T")]
    pub temperature: f64,
    /// Seed of the sample order.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Encoders: the embedding distillation loss.
    #[arg(long, default_value = "cosine", value_parser = ["cosine", "mse"])]
    pub loss: String,
    /// Encoders: sentences to distil on, one per line (default: the run's calibration and search
    /// sentences; never the held-out ones).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Print the stored variant as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ReportArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Re-cost the run's evaluated points under this hardware profile (path or shipped name) and
    /// draw them there; qualities come from the store, nothing is evaluated.
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// Output folder; default: mpsearch-reports/<run>/ (mpsearch-reports/<run>@<profile>/ with --profile).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct MeasureArgs {
    /// The run's name (see `mpsearch runs`).
    pub run: String,
    /// The K-th point of the run's front in cost order (as `export --point K`); repeatable.
    #[arg(long = "point", value_name = "K")]
    pub points: Vec<usize>,
    /// Any complete trial, by number (see `mpsearch trials RUN`); repeatable.
    #[arg(long = "trial", value_name = "N")]
    pub trials: Vec<u64>,
    /// Every point of the run's front (the default when nothing else is picked).
    #[arg(long)]
    pub front: bool,
    /// Also N random assignments of the run's search space (seeded by --seed; stored as measured
    /// assignments, not as trials).
    #[arg(long, value_name = "N")]
    pub random: Option<usize>,
    /// Seed of the --random assignments.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per forward pass, from the run's search split (images, or sentences).
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Tokens per sentence for sequence models: every sentence is exactly this long (default 32).
    #[arg(long, value_name = "T")]
    pub tokens: Option<u32>,
    /// Timed forward passes of a point per round, at most (see --seconds).
    #[arg(long, default_value_t = mpsearch::measure::REPETITIONS)]
    pub repetitions: usize,
    /// Per point and round, no timed pass is started after this many seconds once 3 are done (a
    /// large model at a large batch takes a second a pass).
    #[arg(long, value_name = "S", allow_negative_numbers = true, default_value_t = mpsearch::measure::MAX_SECONDS)]
    pub seconds: f64,
    /// Rounds over all the points; each point's figure is its fastest pass of all rounds. More rounds
    /// give each point more chances at a quiet moment on a busy machine.
    #[arg(long, default_value_t = mpsearch::measure::ROUNDS)]
    pub rounds: usize,
    /// Print JSON: {"run", "machine", "input", "profile", "measurements": [...], "summary": [...]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args)]
pub struct StoreCommandArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy every run (manifest, trials, snapshot), cached evaluation and sensitivity analysis of
    /// store FROM into store TO. TO may hold other runs; one of the same name must be identical, else
    /// nothing is copied.
    Copy(StoreCopyArgs),
}

#[derive(Args)]
pub struct StoreCopyArgs {
    /// The store copied from: a folder (sled) or a postgres:// URL.
    #[arg(value_name = "FROM", value_parser = LocationParser)]
    pub from: Location,
    /// The store copied into (created if missing): a folder (sled) or a postgres:// URL.
    #[arg(value_name = "TO", value_parser = LocationParser)]
    pub to: Location,
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Measure this model (`demo` or a folder) where it runs: its layers inside whole forward passes
    /// on its own data, kernel by kernel, and its non-matmul work (`[[model]]`); default: a standard
    /// grid of transformer-sized matrices timed alone.
    #[arg(long)]
    pub model: Option<String>,
    /// With --model: the sentences file the model's batches come from (as for `search --data`).
    #[arg(long, requires = "model")]
    pub data: Option<PathBuf>,
    /// With --model: the search space whose structured variants (act8-*, channels<P>, rank<P>) are
    /// also timed inside the model; default: the model's own space.
    #[arg(long, requires = "model")]
    pub space: Option<String>,
    /// With --model, for a sequence model: tokens in every sentence of a batch (the cost batch is
    /// sentences x tokens).
    #[arg(long, requires = "model")]
    pub tokens: Option<u32>,
    /// Where to write the profile; default: hardware-profiles/calibrated-<host>.toml.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Profile name; default: the output file's stem.
    #[arg(long)]
    pub name: Option<String>,
    /// Timed repetitions per measurement over all its rounds (at most; a measurement also stops
    /// after its time budget).
    #[arg(long, default_value_t = mpsearch::cost::calibrate::REPETITIONS)]
    pub repetitions: usize,
    /// Rounds over every kernel (and, with --model, every deployment) in turn; each figure is its
    /// fastest run of all rounds. More rounds give each more chances at a quiet moment on a busy
    /// machine.
    #[arg(long, default_value_t = mpsearch::cost::calibrate::ROUNDS)]
    pub rounds: usize,
    /// The larger batch measured besides batch 1: rows of x for the standard grid; with --model,
    /// samples (images, or sentences of --tokens tokens), as `measure --batch` counts them.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
}

// ---- value checks (run first by every command; they never do work) ----

/// The cost limits of [`BudgetArgs`], parsed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Budgets {
    pub latency_us: Option<f64>,
    pub bytes: Option<f64>,
    pub bops: Option<f64>,
    /// `--max-size` given in bits per weight (`4.5bpw`): turned into `bytes` once the model's weights
    /// are counted ([`Budgets::resolve`]).
    pub bits_per_weight: Option<f64>,
}

impl Budgets {
    /// A `--max-size` in bits per weight as bytes of `layers`' weights (`bpw × weights / 8`, llama.cpp's
    /// accounting).
    pub fn resolve(&mut self, layers: &[mpsearch::space::LayerInfo]) {
        if let Some(bpw) = self.bits_per_weight.take() {
            let params: u64 = layers.iter().map(|l| l.params()).sum();
            self.bytes = Some(bpw * params as f64 / 8.0);
        }
    }

    /// The limits given, in [`Objective::ALL`] order.
    pub fn given(&self) -> Vec<(Objective, f64)> {
        [
            (Objective::Latency, self.latency_us),
            (Objective::Size, self.bytes),
            (Objective::Bops, self.bops),
        ]
        .into_iter()
        .filter_map(|(o, v)| Some((o, v?)))
        .collect()
    }
}

impl BudgetArgs {
    /// Parses each limit with its unit; an error names the flag.
    pub fn parse(&self) -> anyhow::Result<Budgets> {
        let one = |o: Objective, v: &Option<String>, flag: &str| -> anyhow::Result<Option<f64>> {
            v.as_deref()
                .map(|t| parse_budget(o, t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
                .transpose()
        };
        let bpw = self.max_size.as_deref().and_then(|t| {
            let t = t.trim();
            t.len()
                .checked_sub(3)
                .filter(|&i| t.is_char_boundary(i) && t[i..].eq_ignore_ascii_case("bpw"))
                .map(|i| t[..i].trim().to_string())
        });
        let bits_per_weight = match &bpw {
            Some(n) => {
                let v: f64 = n.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--max-size: `{n}` is not a number of bits per weight (e.g. 4.5bpw)"
                    )
                })?;
                anyhow::ensure!(
                    v.is_finite() && v > 0.0 && v <= 32.0,
                    "--max-size: {v} bits per weight is out of range; give a value in (0, 32], e.g. 4.5bpw"
                );
                Some(v)
            }
            None => None,
        };
        Ok(Budgets {
            latency_us: one(Objective::Latency, &self.max_latency, "--max-latency")?,
            bytes: match bits_per_weight {
                Some(_) => None,
                None => one(Objective::Size, &self.max_size, "--max-size")?,
            },
            bops: one(Objective::Bops, &self.max_bops, "--max-bops")?,
            bits_per_weight,
        })
    }
}

/// Seconds of a wall-time flag (`90s`, `45m`, `8h`, `1h30m`); an error names the flag.
pub fn parse_duration(text: &str, flag: &str) -> anyhow::Result<f64> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        anyhow::anyhow!("{flag} `{text}`: {e}; write a duration such as 90s, 45m, 8h or 1h30m")
    })?;
    anyhow::ensure!(!d.is_zero(), "{flag} must be longer than 0");
    Ok(d.as_secs_f64())
}

/// `--workers` (or `worker`) needs a store that several processes share.
fn shared_store(workers: bool, store: &Location) -> anyhow::Result<()> {
    anyhow::ensure!(
        !workers || matches!(store, Location::Postgres(_)),
        "--workers needs a store that workers share: --store postgres://USER@HOST/DATABASE (the \
         sled store {store} belongs to one process)"
    );
    Ok(())
}

fn positive(value: u64, flag: &str) -> anyhow::Result<()> {
    anyhow::ensure!(value >= 1, "{flag} must be at least 1");
    Ok(())
}

impl EvaluatorArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        positive(self.cache_mb as u64, "--cache-mb")?;
        self.data.rounding().map(|_| ())
    }
}

impl CostArgs {
    /// The budgets, parsed.
    pub fn check(&self) -> anyhow::Result<Budgets> {
        positive(self.batch.into(), "--batch")?;
        self.budgets.parse()
    }
}

impl EvalArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        self.setup.check()?;
        if let Some(r) = &self.recipe {
            r.parse::<mpsearch::space::recipe::Recipe>()
                .map_err(|e| anyhow::anyhow!("--recipe: {e}"))?;
        }
        positive(self.batch.into(), "--batch")
    }
}

impl SensitivityArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        self.setup.check()?;
        anyhow::ensure!(
            self.pairs >= 1,
            "--pairs must be at least 1: the predictor is fitted to one-at-a-time measurements"
        );
        anyhow::ensure!(
            self.validate.is_none_or(|n| n >= 2),
            "--validate needs at least 2 assignments to rank"
        );
        Ok(())
    }
}

/// The values of [`SearchArgs`] that needed parsing.
pub struct SearchChecked {
    pub budgets: Budgets,
    pub time_seconds: Option<f64>,
    pub rounding: Rounding,
}

impl SearchArgs {
    /// Checks every value; returns the parsed budgets and wall time.
    pub fn check(&self) -> anyhow::Result<SearchChecked> {
        positive(self.jobs as u64, "--jobs")?;
        positive(self.ask as u64, "--ask")?;
        shared_store(self.workers, &self.store.store)?;
        anyhow::ensure!(self.trials != Some(0), "--trials must be at least 1");
        positive(self.batch.into(), "--batch")?;
        if let Some(d) = self.max_drop {
            anyhow::ensure!(
                d.is_finite() && d > 0.0,
                "--max-drop must be a positive number, not {d}"
            );
        }
        if let Some(f) = self.fidelity {
            mpsearch::search::fidelity::check_fidelity(f)?;
        }
        if let Some(n) = &self.run {
            anyhow::ensure!(
                !n.is_empty() && !n.chars().any(|c| c.is_control() || c == '/'),
                "--run `{n}`: a run name needs at least one character and no `/` or control characters"
            );
        }
        Ok(SearchChecked {
            rounding: self.data.rounding()?,
            budgets: self.budgets.parse()?,
            time_seconds: self
                .time
                .as_deref()
                .map(|t| parse_duration(t, "--time"))
                .transpose()?,
        })
    }
}

impl ResumeArgs {
    /// Checks every value; returns the parsed extra wall time.
    pub fn check(&self) -> anyhow::Result<Option<f64>> {
        positive(self.jobs as u64, "--jobs")?;
        shared_store(self.workers, &self.store.store)?;
        if let Some(n) = self.trials {
            positive(n, "--trials")?;
        }
        self.time
            .as_deref()
            .map(|t| parse_duration(t, "--time"))
            .transpose()
    }
}

impl MeasureArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        positive(self.batch.into(), "--batch")?;
        positive(self.repetitions as u64, "--repetitions")?;
        positive(self.rounds as u64, "--rounds")?;
        anyhow::ensure!(
            self.seconds.is_finite() && self.seconds >= 0.0,
            "--seconds must be a number of seconds, 0 or more (0: only the least 3 passes per point \
             and round)"
        );
        if let Some(n) = self.random {
            positive(n as u64, "--random")?;
        }
        if let Some(t) = self.tokens {
            anyhow::ensure!(
                t >= 2,
                "--tokens must be at least 2 (a sentence is [CLS] … [SEP])"
            );
        }
        anyhow::ensure!(
            !self.points.contains(&0),
            "--point counts front points from 1 (see `mpsearch runs`)"
        );
        Ok(())
    }
}

impl CalibrateArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        positive(self.repetitions as u64, "--repetitions")?;
        positive(self.rounds as u64, "--rounds")?;
        anyhow::ensure!(
            self.batch >= 2,
            "--batch is the larger batch measured besides 1: give 2 or more"
        );
        if let Some(t) = self.tokens {
            positive(u64::from(t), "--tokens")?;
        }
        Ok(())
    }
}
