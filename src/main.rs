//! The `mpsearch` command line: parses arguments into plain values, resolves them into ready objects
//! through the library, runs one library call, prints, and returns an exit code.
//!
//! Exit codes: 0 success (also when the reader of standard output goes away: a broken pipe is not an
//! error), 1 an error in the input or the run (the message says which file and what to fix), 2 bad
//! command-line usage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

mod cli {
    pub mod export;
    pub mod report;
    pub mod search;
    pub mod sensitivity;
}
use clap::{Args, Parser, Subcommand};
use cli::search::{resume_cmd, runs_cmd, search_cmd, trials_cmd};
use cli::sensitivity::sensitivity_cmd;
use mpsearch::cost::calibrate::{self, CalibrateOptions};
use mpsearch::cost::{model::parse_budget, CostModel, CostTable, HardwareProfile, Objective};
use mpsearch::model::{self, Inventory, ModelSource};
use mpsearch::shipped::{self, Kind};
use mpsearch::space::{Assignment, Choice, SearchSpace};

#[derive(Parser)]
#[command(
    name = "mpsearch",
    version,
    about = "Automated mixed-precision search for neural-network compression",
    long_about = "Searches per-layer bit-width x sparsity x low-rank assignments of a model against a hardware \
                  cost model. Models: `--model demo` (embedded) or a Hugging Face folder (config.json + \
                  model.safetensors). Search spaces and hardware profiles: a path, or the bare name of a \
                  shipped one (`mpsearch profiles` lists profiles)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Export(cli::export::ExportArgs),
    /// Draw a run's Pareto front, per-layer allocation, hypervolume and sensitivity plots (SVG and
    /// PNG) and write one self-contained HTML page; with --profile, re-cost the run under another
    /// hardware profile first (no evaluation is run).
    Report(ReportArgs),
    /// List the shipped hardware profiles and the local ones in ./hardware-profiles/.
    Profiles,
    /// Measure this machine's candle CPU kernels and write a hardware profile.
    Calibrate(CalibrateArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// `demo` (the embedded demo CNN) or a Hugging Face model folder.
    #[arg(long, default_value = "demo")]
    model: String,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Search space (path or shipped name): adds each layer's choices, group and status.
    #[arg(long)]
    space: Option<String>,
    /// Print JSON: {"model", "layers": [{"name", "kind", "shape", "params", "macs", "choices", "group"}]}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CostArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Search space (path or shipped name); default: the model's own (`demo`, or `bert-base`).
    #[arg(long)]
    space: Option<String>,
    /// Hardware profile (path or shipped name, see `mpsearch profiles`).
    #[arg(long)]
    profile: String,
    /// Assignment JSON file: {"default": "<choice>", "layers": {"<layer>": "<choice>"}}.
    #[arg(long)]
    assignment: Option<PathBuf>,
    /// Samples per inference (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Check a latency budget against the reachable range (e.g. 800us, 2.5ms).
    #[arg(long, value_name = "LATENCY")]
    max_latency: Option<String>,
    /// Check a size budget against the reachable range (e.g. 300000, 512KiB, 2MB).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Check a bit-operations budget against the reachable range (e.g. 1.2G).
    #[arg(long, value_name = "BOPS")]
    max_bops: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["assignment", "stdin"])))]
struct EvalArgs {
    #[command(flatten)]
    setup: EvaluatorArgs,
    /// One assignment JSON file: {"default": "<choice>", "layers": {"<layer>": "<choice>"}}.
    #[arg(long)]
    assignment: Option<PathBuf>,
    /// Read assignments from standard input, one JSON per line; answer each line as it arrives.
    #[arg(long)]
    stdin: bool,
    /// Also cost each assignment under this hardware profile.
    #[arg(long)]
    profile: Option<String>,
    /// Samples per inference for the cost (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    batch: u32,
}

/// What every command that evaluates needs: the model, its space and data, and the evaluator settings.
#[derive(Args)]
struct EvaluatorArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Search space (path or shipped name); default: the model's own (`demo`, or `bert-base`).
    #[arg(long)]
    space: Option<String>,
    /// Encoders: a sentence file (one per line); default: the shipped sentences.
    #[arg(long)]
    data: Option<PathBuf>,
    /// How weight quantization picks its scales: min/max, or MSE-optimal clipping.
    #[arg(long, value_enum, default_value_t = ScaleArg::Mse)]
    scale: ScaleArg,
    /// Memory for memoised compressed weights, in MiB (least recently used ones are dropped first).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    cache_mb: usize,
}

#[derive(Args)]
struct SensitivityArgs {
    #[command(flatten)]
    setup: EvaluatorArgs,
    /// At most this many (group, choice) pairs are measured one at a time (a seeded sample if the
    /// space has more).
    #[arg(long, default_value_t = 400)]
    pairs: usize,
    /// Also measure N random assignments and report how well the prediction ranks them.
    #[arg(long, value_name = "N")]
    validate: Option<usize>,
    /// Seed of the pair sample and of the validation assignments.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StoreArgs {
    /// The store folder (created if missing); one process at a time may use it.
    #[arg(long, default_value = "mpsearch-store", value_name = "DIR")]
    store: PathBuf,
}

#[derive(Args)]
struct SearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Search space (path or shipped name); default: the model's own (`demo`, or `bert-base`).
    #[arg(long)]
    space: Option<String>,
    /// Hardware profile (path or shipped name, see `mpsearch profiles`).
    #[arg(long, default_value = "cortex-a76")]
    profile: String,
    /// Encoders: a sentence file (one per line); default: the shipped sentences.
    #[arg(long)]
    data: Option<PathBuf>,
    /// auto (= bayes; see README), exact, evolution, bayes or random.
    #[arg(long, default_value = "auto")]
    strategy: String,
    /// The cost to minimise against quality.
    #[arg(long, default_value = "latency")]
    objective: String,
    /// Latency limit (e.g. 800us, 2.5ms).
    #[arg(long, value_name = "LATENCY")]
    max_latency: Option<String>,
    /// Size limit (e.g. 300000, 512KiB, 2MB).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Bit-operations limit (e.g. 1.2G).
    #[arg(long, value_name = "BOPS")]
    max_bops: Option<String>,
    /// Quality limit, in the quality objective's units (KL divergence for classifiers, cosine distance
    /// for encoders).
    #[arg(long, value_name = "DROP")]
    max_drop: Option<f64>,
    /// Trial budget; default 500, or none when --time is given (the run then ends with its time).
    #[arg(long)]
    trials: Option<u64>,
    /// Wall-time budget (e.g. 8h, 90m); the run ends at whichever budget is spent first.
    #[arg(long, value_name = "DURATION")]
    time: Option<String>,
    /// Seed of the strategy and of the sensitivity sample: same seed, same trials.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluations at once. 1 lets candle use every core inside each evaluation; results are the same
    /// whatever the number.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Points asked of the strategy at a time (part of the run: fixed when it starts).
    #[arg(long, default_value_t = 8)]
    ask: usize,
    /// Run name; default: <space>-<profile>-<n>.
    #[arg(long)]
    run: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// Samples per inference the cost model assumes (images, or tokens of a sequence).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Sensitivity: at most this many (group, choice) pairs measured one at a time before the search.
    #[arg(long, default_value_t = 400)]
    pairs: usize,
    /// How weight quantization picks its scales.
    #[arg(long, value_enum, default_value_t = ScaleArg::Mse)]
    scale: ScaleArg,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("extend").args(["trials", "time"])))]
struct ResumeArgs {
    /// The run's name (see `mpsearch runs`).
    run: String,
    /// Run N more trials (default: finish the run's budget).
    #[arg(long, value_name = "N")]
    trials: Option<u64>,
    /// Run for this much more wall time (e.g. 2h).
    #[arg(long, value_name = "DURATION")]
    time: Option<String>,
    /// Evaluations at once.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct RunsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON: [{"name", "status", "trials", "evaluated", "cache_hits", "profile", "objective", "front"}].
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrialsArgs {
    /// The run's name (see `mpsearch runs`).
    run: String,
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON line per trial: {"trial", "state", "strategy", "quality", "cost", "hash", "assignment", "cached", "seconds"}.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// The run's name (see `mpsearch runs`).
    run: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Re-cost the run's evaluated points under this hardware profile (path or shipped name) and
    /// draw them there; qualities come from the store, nothing is evaluated.
    #[arg(long, value_name = "P")]
    profile: Option<String>,
    /// Output folder; default: mpsearch-reports/<run>/ (mpsearch-reports/<run>@<profile>/ with --profile).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScaleArg {
    Minmax,
    Mse,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Measure the distinct layer shapes of this model (`demo` or a folder); default: a standard grid
    /// of transformer-sized matrices.
    #[arg(long)]
    model: Option<String>,
    /// Where to write the profile; default: hardware-profiles/calibrated-<host>.toml.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Profile name; default: the output file's stem.
    #[arg(long)]
    name: Option<String>,
    /// Timed repetitions per measurement (at most; a measurement also stops after its time budget).
    #[arg(long, default_value_t = 30)]
    repetitions: usize,
    /// The larger batch measured besides batch 1.
    #[arg(long, default_value_t = 32)]
    batch: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Cost(a) => cost(a),
        Command::Eval(a) => eval_cmd(a),
        Command::Sensitivity(a) => sensitivity_cmd(a),
        Command::Search(a) => search_cmd(*a),
        Command::Resume(a) => resume_cmd(a),
        Command::Runs(a) => runs_cmd(a),
        Command::Trials(a) => trials_cmd(a),
        Command::Export(a) => cli::export::export_cmd(a),
        Command::Report(a) => cli::report::report_cmd(a),
        Command::Profiles => profiles(),
        Command::Calibrate(a) => calibrate_cmd(a),
    }
}

/// Writes `text` to standard output at once.
fn emit(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn load_model(arg: &str) -> anyhow::Result<Inventory> {
    Ok(model::inventory(&ModelSource::parse(arg))?)
}

fn load_space(arg: Option<&str>, inv: &Inventory) -> anyhow::Result<SearchSpace> {
    Ok(shipped::space(
        arg.unwrap_or(inv.default_space),
        &inv.layers,
    )?)
}

/// Left-aligns the first `left` columns, right-aligns the rest.
fn table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i < left {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let inv = load_model(&a.model.model)?;
    let space = a
        .space
        .as_deref()
        .map(|s| load_space(Some(s), &inv))
        .transpose()?;
    if a.json {
        let layers: Vec<serde_json::Value> = inv
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut v = serde_json::json!({
                    "name": l.name, "kind": l.kind, "shape": l.shape, "params": l.params(), "macs": l.macs,
                });
                if let Some(s) = &space {
                    let g = &s.groups[s.layers[i].group];
                    v["choices"] = g.choices.iter().map(|c| c.to_string()).collect();
                    v["group"] = g.name.clone().into();
                    v["status"] = s.layers[i].status.to_string().into();
                }
                v
            })
            .collect();
        let mut doc = serde_json::json!({
            "model": inv.name, "model_kind": inv.kind, "architecture": inv.architecture,
            "totals": {"layers": inv.layers.len(), "params": inv.params(), "macs": inv.macs()},
            "layers": layers,
        });
        if let Some(s) = &space {
            doc["space"] = s.name.clone().into();
        }
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = format!(
        "model {} ({}, {}): {} compressible layers, {} weights, {} MACs per sample\n\n",
        inv.name,
        inv.architecture,
        inv.kind,
        inv.layers.len(),
        thousands(inv.params()),
        thousands(inv.macs())
    );
    let mut header = vec!["layer", "kind", "shape", "params", "MACs"];
    if space.is_some() {
        header.extend(["status", "choices", "group"]);
    }
    let rows: Vec<Vec<String>> = inv
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut r = vec![
                l.name.clone(),
                l.kind.to_string(),
                l.shape_string(),
                thousands(l.params()),
                thousands(l.macs),
            ];
            if let Some(s) = &space {
                let g = &s.groups[s.layers[i].group];
                r.push(s.layers[i].status.to_string());
                r.push(g.choices.len().to_string());
                r.push(if g.members.len() > 1 {
                    g.name.clone()
                } else {
                    "-".into()
                });
            }
            r
        })
        .collect();
    out.push_str(&table(&header, &rows, 3));
    out.push_str(&format!(
        "total: {} weights, {} MACs per sample\n",
        thousands(inv.params()),
        thousands(inv.macs())
    ));
    if let Some(s) = &space {
        out.push_str(&format!(
            "\nsearch space `{}` ({}): {} groups, {} searchable, {:.3e} assignments\n",
            s.name,
            s.origin.display(),
            s.groups.len(),
            s.searchable_groups().count(),
            s.size()
        ));
        for g in &s.groups {
            let names: Vec<&str> = g
                .members
                .iter()
                .map(|&m| s.layers[m].info.name.as_str())
                .collect();
            out.push_str(&format!(
                "\n{} [{}, {} choices]\n",
                names.join(" + "),
                g.status,
                g.choices.len()
            ));
            let all: Vec<String> = g.choices.iter().map(|c| c.to_string()).collect();
            out.push_str(&wrap(&all, 100, "    "));
        }
    }
    emit(&out)
}

fn wrap(items: &[String], width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for it in items {
        if line.len() > indent.len() && line.len() + it.len() + 1 > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        line.push_str(it);
        line.push(' ');
    }
    if line.len() > indent.len() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The baselines `cost` and reports compare against.
fn baselines() -> Vec<(&'static str, Choice)> {
    [
        ("all-f32", "f32"),
        ("all-int8", "int8-sym-channel"),
        ("all-int4", "int4-asym-g32"),
    ]
    .into_iter()
    .filter_map(|(n, c)| Some((n, c.parse().ok()?)))
    .collect()
}

fn cost(a: CostArgs) -> anyhow::Result<ExitCode> {
    let inv = load_model(&a.model.model)?;
    let space = load_space(a.space.as_deref(), &inv)?;
    let profile: HardwareProfile = shipped::profile(&a.profile)?;
    let budgets: Vec<(Objective, f64)> = [
        (Objective::Latency, &a.max_latency, "--max-latency"),
        (Objective::Size, &a.max_size, "--max-size"),
        (Objective::Bops, &a.max_bops, "--max-bops"),
    ]
    .into_iter()
    .filter_map(|(o, v, flag)| v.as_ref().map(|v| (o, v, flag)))
    .map(|(o, v, flag)| {
        parse_budget(o, v)
            .map(|b| (o, b))
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
    })
    .collect::<anyhow::Result<_>>()?;
    let model = CostModel::new(profile, a.batch)?;
    let layers: Vec<_> = inv.layers.clone();
    let profile_name = model.profile.name().to_string();

    if let Some(path) = &a.assignment {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let asg = space.parse_assignment(&text, Some(&path.display().to_string()))?;
        return print_assignment_cost(&model, &space, &layers, &asg, a.json);
    }

    let table_ = CostTable::new(&model, &space);
    let ranges: Vec<_> = Objective::ALL
        .iter()
        .map(|&o| table_.feasibility(o))
        .collect();
    let mut notes = Vec::new();
    for (o, b) in &budgets {
        let f = ranges
            .iter()
            .find(|f| f.objective == *o)
            .expect("every objective has a range");
        match f.check_max(*b, &space.name, &profile_name)? {
            mpsearch::cost::feasibility::BudgetFit::NonBinding => notes.push(format!(
                "max {o} {} is at or above the dearest reachable {}: it constrains nothing",
                o.format(*b),
                o.format(f.max)
            )),
            mpsearch::cost::feasibility::BudgetFit::Binding => notes.push(format!(
                "max {o} {} is reachable (range {} to {})",
                o.format(*b),
                o.format(f.min),
                o.format(f.max)
            )),
        }
    }
    let base: Vec<(String, Assignment, mpsearch::cost::Cost)> = baselines()
        .into_iter()
        .map(|(n, c)| {
            let asg = space.baseline(&c);
            let (_, total) = model.assignment(&layers, &asg);
            (format!("{n} ({c})"), asg, total)
        })
        .collect();
    if a.json {
        let doc = serde_json::json!({
            "model": inv.name, "space": space.name, "profile": profile_name, "batch": a.batch,
            "baselines": base.iter().map(|(n, asg, c)| serde_json::json!({
                "name": n, "hash": asg.hash_hex(), "cost": c})).collect::<Vec<_>>(),
            "reachable": ranges.iter().map(|f| serde_json::json!({
                "objective": f.objective, "min": f.min, "max": f.max,
                "cheapest": space.assignment(&f.cheapest).to_json(),
                "dearest": space.assignment(&f.dearest).to_json()})).collect::<Vec<_>>(),
            "budgets": notes,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = format!(
        "model {} · space `{}` · profile `{}` ({}) · batch {}\n\n",
        inv.name, space.name, profile_name, model.profile.file.profile.description, a.batch
    );
    let rows: Vec<Vec<String>> = base
        .iter()
        .map(|(n, _, c)| {
            vec![
                n.clone(),
                Objective::Latency.format(c.latency_us),
                Objective::Size.format(c.bytes as f64),
                Objective::Bops.format(c.bops),
            ]
        })
        .collect();
    out.push_str(
        "baselines (every searchable layer at one choice; excluded layers f32, pins kept)\n",
    );
    out.push_str(&table(&["baseline", "latency", "size", "BOPs"], &rows, 1));
    out.push_str("\nreachable range over the search space (exact)\n");
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|f| {
            vec![
                f.objective.to_string(),
                f.objective.format(f.min),
                f.objective.format(f.max),
            ]
        })
        .collect();
    out.push_str(&table(&["objective", "cheapest", "dearest"], &rows, 1));
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    out.push('\n');
    emit(&out)
}

fn print_assignment_cost(
    model: &CostModel,
    space: &SearchSpace,
    layers: &[mpsearch::space::LayerInfo],
    asg: &Assignment,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (per, total) = model.assignment(layers, asg);
    if json {
        let doc = serde_json::json!({
            "space": space.name, "profile": model.profile.name(), "batch": model.batch, "hash": asg.hash_hex(),
            "layers": layers.iter().zip(&per).map(|(l, c)| serde_json::json!({
                "name": l.name, "choice": asg.get(&l.name).map(|c| c.to_string()),
                "macs": c.macs, "bytes": c.cost.bytes, "latency_us": c.cost.latency_us, "bops": c.cost.bops,
                "runs_as": c.runs_as.to_string(), "measured": c.measured})).collect::<Vec<_>>(),
            "total": total,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .zip(&per)
        .map(|(l, c)| {
            vec![
                l.name.clone(),
                asg.get(&l.name)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "f32".into()),
                c.runs_as.to_string(),
                thousands(c.macs.round() as u64),
                thousands(c.cost.bytes),
                format!(
                    "{:.2}{}",
                    c.cost.latency_us,
                    if c.measured { "*" } else { "" }
                ),
            ]
        })
        .collect();
    let mut out = format!(
        "space `{}` · profile `{}` · batch {} · assignment {}\n\n",
        space.name,
        model.profile.name(),
        model.batch,
        &asg.hash_hex()[..16]
    );
    out.push_str(&table(
        &["layer", "choice", "runs as", "MACs", "bytes", "µs"],
        &rows,
        3,
    ));
    out.push_str(&format!(
        "total: {} · {} · {}   (* = measured entry of the profile)\n",
        Objective::Latency.format(total.latency_us),
        Objective::Size.format(total.bytes as f64),
        Objective::Bops.format(total.bops)
    ));
    emit(&out)
}

fn profiles() -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let local = shipped::local(Kind::Profile);
    for (name, text) in Kind::Profile.embedded() {
        let p = HardwareProfile::from_toml(text, format!("shipped:{name}"))?;
        let overridden = local
            .iter()
            .any(|(n, path)| n == name && std::fs::read_to_string(path).is_ok_and(|t| t != *text));
        let origin = if overridden {
            format!("shipped, overridden by ./hardware-profiles/{name}.toml")
        } else {
            "shipped".into()
        };
        rows.push(vec![
            name.to_string(),
            p.file.profile.device.to_string(),
            origin,
            p.file.profile.description.clone(),
        ]);
    }
    for (name, path) in local {
        if Kind::Profile.embedded().iter().any(|(n, _)| *n == name) {
            continue;
        }
        let (device, description) = match HardwareProfile::load(&path) {
            Ok(p) => (
                p.file.profile.device.to_string(),
                p.file.profile.description.clone(),
            ),
            Err(e) => ("?".into(), format!("does not load: {e}")),
        };
        rows.push(vec![
            name,
            device,
            format!("local {}", path.display()),
            description,
        ]);
    }
    emit(&table(
        &["profile", "device", "origin", "description"],
        &rows,
        4,
    ))
}

fn calibrate_cmd(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    let mut opts = match &a.model {
        Some(m) => {
            let inv = load_model(m)?;
            CalibrateOptions::for_layers(&inv.layers)
        }
        None => CalibrateOptions::standard_grid(),
    };
    anyhow::ensure!(a.repetitions >= 1, "--repetitions must be at least 1");
    anyhow::ensure!(
        a.batch >= 2,
        "--batch is the larger batch measured besides 1: give 2 or more"
    );
    opts.repetitions = a.repetitions;
    opts.batches = vec![1, a.batch];
    let out = a.out.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "this-machine".into());
        PathBuf::from("hardware-profiles").join(format!("calibrated-{host}.toml"))
    });
    let name = a.name.clone().unwrap_or_else(|| {
        out.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "calibrated".into())
    });
    let shapes: Vec<String> = opts.shapes.iter().map(|s| s.shape_string()).collect();
    eprintln!(
        "measuring {} shapes ({}) at batch 1 and {} with {} kernels, up to {} repetitions each",
        opts.shapes.len(),
        shapes.join(", "),
        a.batch,
        opts.kernels.len(),
        opts.repetitions
    );
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ms = calibrate::measure(&opts, &mut |done, total, what| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    })?;
    bar.finish_and_clear();
    let file = calibrate::to_profile(&ms, &opts, &name)?;
    let text = toml::to_string_pretty(&file).context("serialising the profile")?;
    // Check that what we write loads back before writing it.
    HardwareProfile::from_toml(&text, &out)?;
    mpsearch::fs::write_atomic(&out, text.as_bytes())?;
    let mut report = calibrate::table(&ms);
    if let Some(c) = &file.calibration {
        report.push_str(&format!(
            "\nbit-width -> candle type: {}\n",
            c.bit_types
                .iter()
                .map(|(b, t)| format!("{b}={t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        report.push_str(&format!(
            "no fast kernel here (slower than f32 at batch 1): {}\n",
            if c.slow_kernels.is_empty() {
                "none".into()
            } else {
                c.slow_kernels.join(", ")
            }
        ));
    }
    report.push_str(&format!(
        "\nwrote {} (use it as --profile {})\n",
        out.display(),
        if out.parent() == Some(std::path::Path::new("hardware-profiles")) {
            name
        } else {
            out.display().to_string()
        }
    ));
    emit(&report)
}

/// A ready evaluator, the space resolved against the layers the model runs, and the seconds the f32
/// reference took.
fn setup_evaluator(
    a: &EvaluatorArgs,
) -> anyhow::Result<(mpsearch::eval::CandleEvaluator, SearchSpace, f64)> {
    use mpsearch::eval::{CandleEvaluator, EvalSettings};
    let source = ModelSource::parse(&a.model.model);
    let started = std::time::Instant::now();
    let (net, data) = mpsearch::eval::load(&source, a.data.as_deref())?;
    // The space is resolved against the layers the model runs (an encoder never runs its pooler).
    let space = load_space(a.space.as_deref(), net.inventory())?;
    anyhow::ensure!(a.cache_mb >= 1, "--cache-mb must be at least 1");
    let settings = EvalSettings {
        scale: match a.scale {
            ScaleArg::Minmax => mpsearch::compress::ScaleMethod::MinMax,
            ScaleArg::Mse => mpsearch::compress::ScaleMethod::Mse,
        },
        cache_bytes: a.cache_mb.saturating_mul(1 << 20),
        ..EvalSettings::default()
    };
    let description = data.description.clone();
    let name = net.inventory().name.clone();
    let t0 = std::time::Instant::now();
    let evaluator = CandleEvaluator::new(net, data, settings)?;
    let forward = t0.elapsed().as_secs_f64();
    eprintln!(
        "model {name} ({} layers), space `{}`, data: {description}; loaded and f32 reference computed in {:.1} s",
        evaluator.model().inventory().layers.len(),
        space.name,
        started.elapsed().as_secs_f64()
    );
    Ok((evaluator, space, forward))
}

fn eval_cmd(a: EvalArgs) -> anyhow::Result<ExitCode> {
    use mpsearch::eval::Evaluator;
    let (evaluator, space, _) = setup_evaluator(&a.setup)?;
    let cost = a
        .profile
        .as_deref()
        .map(|p| -> anyhow::Result<_> { Ok(CostModel::new(shipped::profile(p)?, a.batch)?) })
        .transpose()?;
    let layers = evaluator.model().inventory().layers.clone();
    let answer = |text: &str, source: &str| -> mpsearch::Result<serde_json::Value> {
        let asg = space.parse_assignment(text, Some(source))?;
        let e = evaluator.evaluate(&asg)?;
        let mut v = serde_json::json!({
            "hash": evaluator.key(&asg).to_hex().to_string(),
            "quality": e.quality,
            "objective": evaluator.objective(),
            "metrics": e.metrics,
            "seconds": e.seconds,
        });
        if let Some(m) = &cost {
            let (_, total) = m.assignment(&layers, &asg);
            v["cost"] = serde_json::json!({"latency_us": total.latency_us, "bytes": total.bytes, "bops": total.bops});
        }
        Ok(v)
    };
    let mut out = std::io::stdout().lock();
    if let Some(path) = &a.assignment {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v = answer(&text, &path.display().to_string())?;
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    for (i, line) in std::io::BufRead::lines(stdin.lock()).enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let v = answer(&line, &format!("line {}", i + 1))
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}
