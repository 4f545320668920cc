//! # Measure: end-to-end latency on this machine
//!
//! What a front predicts is only worth what the device then does. `mpsearch measure` builds chosen
//! points of a stored run as real compressed models on candle and times whole forward passes, so that
//! the cost model's prediction can be held against a measured latency, and every point gets a
//! measured speed-up over the uncompressed model.
//!
//! 1. [`plan`]: which assignments — front points, any complete trials, random assignments of the run's
//!    space (seeded; measured, not trials) — checked before anything is loaded: a point that is not
//!    there, a trial that failed or has not finished, a format this machine has no kernel for (a
//!    block format whose blocks do not tile a matrix's rows) are errors naming the point.
//! 2. [`load_run`]: the run's model, data and evaluator loaded again from its manifest, as `resume`
//!    and `export` do, and checked against the recorded fingerprints (a model folder that is gone or
//!    changed is an error naming the run); its hardware profile for the predictions.
//! 3. [`input::from_search_split`]: a batch of the run's search split (a sentence of exactly 32 tokens
//!    for an encoder, by default).
//! 4. [`time_targets`]: each point built by the deployment builder
//!    ([`CandleEvaluator::deploy_overrides`]: q-formats through candle's `QMatMul`, f16 through its
//!    f16 matmul, low rank as two matmuls, removed channels as a smaller matrix; sparse patterns dense,
//!    candle having no sparse kernels) and timed with the all-f32 model as the reference, in rounds
//!    over all of them ([`timing`]): a burst of load from another process costs one round of many
//!    points, not every round of one, and each figure is its fastest pass.
//! 5. [`records`]: one [`MeasurementRecord`] per assignment, with the profile's prediction at the
//!    batch measured, for the store.
//!
//! Nothing is written here: the caller stores the records once every point has been measured, so an
//! error leaves the store as it was.

pub mod input;
pub mod timing;

use std::sync::Arc;

use rand::SeedableRng;

use self::timing::{CpuSample, Timing};
use crate::cost::{CostModel, HardwareProfile};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::eval::{CandleEvaluator, Evaluator};
use crate::model::{ForwardCtx, LayerKernel, Model, ModelKind, ModelSource, Overrides};
use crate::space::{rank_k, Assignment, Choice, GgmlFormat, LayerInfo, LayerKind, SearchSpace};
use crate::space::{Sparsity, WeightQuant};
use crate::store::{MeasuredSource, MeasurementRecord, RunManifest, TrialRecord, TrialState};
use crate::timing::Schedule;

/// A point of a run to measure, as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The K-th point (1-based) of the run's front in cost order (`export --point K`).
    Point(usize),
    /// A trial by its number (`export --trial N`).
    Trial(u64),
}

/// Which assignments of a run to measure. Nothing picked measures the front.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub picks: Vec<Pick>,
    /// Every point of the run's front.
    pub front: bool,
    /// This many random assignments of the run's space …
    pub random: usize,
    /// … drawn with this seed.
    pub seed: u64,
}

/// One assignment to measure, and where it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub source: MeasuredSource,
    pub assignment: Assignment,
}

/// What [`plan`] found: the assignments to measure (each once, in the order asked) and what the
/// person should know about them.
#[derive(Clone, Debug)]
pub struct Plan {
    pub targets: Vec<Target>,
    /// The model's compressible layers (from its files' headers).
    pub layers: Vec<LayerInfo>,
    /// What the model computes: a classifier takes images, an encoder token sequences.
    pub kind: ModelKind,
    pub notes: Vec<String>,
}

/// Resolves `selection` against run `manifest` and its `trials`, reading only the model's layer
/// shapes (and the run's space for random assignments), and checks that this machine has a kernel for
/// every layer of every point. Errors name the point.
pub fn plan(manifest: &RunManifest, trials: &[TrialRecord], selection: &Selection) -> Result<Plan> {
    let c = &manifest.config;
    let inventory = crate::model::inventory(&ModelSource::parse(&c.model)).map_err(|e| {
        Error::measure(format!(
            "run `{}`: its model `{}` cannot be read ({e}); restore the model the run searched to \
             build its points",
            manifest.name, c.model
        ))
    })?;
    let (layers, kind) = (inventory.layers, inventory.kind);
    let mut notes = Vec::new();
    let mut targets = picked(manifest, trials, &layers, selection)?;
    if selection.random > 0 {
        let space = run_space(manifest, &layers)?;
        targets.extend(random(&space, selection.random, selection.seed));
    }
    let mut seen = std::collections::HashSet::new();
    let asked = targets.len();
    targets.retain(|t| seen.insert(t.assignment.hash()));
    if targets.len() < asked {
        notes.push(format!(
            "{} of the {asked} assignments asked repeat earlier ones (a point named twice, a trial on \
             the front, a random draw met again): each is measured once",
            asked - targets.len()
        ));
    }
    for t in &targets {
        check_kernels(t, &layers)?;
    }
    notes.extend(kernel_notes(&targets));
    Ok(Plan {
        targets,
        layers,
        kind,
        notes,
    })
}

/// The front points and trials `selection` picks (the front when it picks nothing).
fn picked(
    manifest: &RunManifest,
    trials: &[TrialRecord],
    layers: &[LayerInfo],
    selection: &Selection,
) -> Result<Vec<Target>> {
    let front = crate::store::front(&manifest.config, trials);
    let point_of = |n: u64| front.iter().position(|t| t.number == n).map(|i| i + 1);
    let target = |t: &TrialRecord| -> Result<Target> {
        let source = MeasuredSource::Trial {
            trial: t.number,
            point: point_of(t.number),
        };
        let assignment = t
            .assignment
            .over(layers)
            .map_err(|e| Error::measure(format!("{source} of run `{}`: {e}", manifest.name)))?;
        if assignment.hash_hex() != t.hash {
            return Err(Error::measure(format!(
                "{source} of run `{}`: its journaled assignment no longer decodes to the one \
                 evaluated (hash {} → {}): the model's layers changed since the run",
                manifest.name,
                short(&t.hash),
                short(&assignment.hash_hex())
            )));
        }
        Ok(Target { source, assignment })
    };
    let nothing = selection.picks.is_empty() && !selection.front && selection.random == 0;
    let mut out = Vec::new();
    if selection.front || nothing {
        if front.is_empty() {
            return Err(Error::measure(format!(
                "run `{}` has no front yet (no complete trial within its limits): pick trials with \
                 --trial N (see `mpsearch trials {}`)",
                manifest.name, manifest.name
            )));
        }
        for t in &front {
            out.push(target(t)?);
        }
    }
    for pick in &selection.picks {
        let t = match *pick {
            Pick::Point(k) => *front.get(k.wrapping_sub(1)).ok_or_else(|| {
                Error::measure(format!(
                    "run `{}` has {} front point{}: there is no point {k} (points are numbered \
                     from 1 in cost order, as `mpsearch runs` and `trials` show them; --trial N \
                     takes any trial)",
                    manifest.name,
                    front.len(),
                    if front.len() == 1 { "" } else { "s" }
                ))
            })?,
            Pick::Trial(n) => trial(manifest, trials, n)?,
        };
        out.push(target(t)?);
    }
    Ok(out)
}

/// Trial `n` of the run, which must be complete.
fn trial<'t>(manifest: &RunManifest, trials: &'t [TrialRecord], n: u64) -> Result<&'t TrialRecord> {
    let Some(t) = trials.iter().find(|t| t.number == n) else {
        return Err(Error::measure(format!(
            "run `{}` has no trial {n} (its trials are numbered 0 to {})",
            manifest.name,
            trials.len().saturating_sub(1)
        )));
    };
    match t.state {
        // A pruned trial's model is as real as a complete one's: only its quality was not measured
        // in full, and measuring times the model, not its quality.
        TrialState::Complete | TrialState::Pruned => Ok(t),
        TrialState::Failed => Err(Error::measure(format!(
            "trial {n} of run `{}` failed ({}): there is no evaluated model to measure; pick a \
             complete trial",
            manifest.name,
            t.error.as_deref().unwrap_or("no message")
        ))),
        TrialState::Running => Err(Error::measure(format!(
            "trial {n} of run `{}` has not finished (it is journaled as running): resume the run \
             first, or pick a complete trial",
            manifest.name
        ))),
    }
}

/// The run's search space, resolved against `layers`, if it is still the one the run searched.
fn run_space(manifest: &RunManifest, layers: &[LayerInfo]) -> Result<SearchSpace> {
    let name = &manifest.config.space;
    let space = crate::shipped::space(name, layers).map_err(|e| {
        Error::measure(format!(
            "run `{}`: --random draws from the run's search space `{name}`, which cannot be read \
             ({e})",
            manifest.name
        ))
    })?;
    if space.fingerprint().to_hex().as_str() != manifest.fingerprints.space {
        return Err(Error::measure(format!(
            "run `{}`: --random draws from the run's search space `{name}`, which changed since the \
             run; restore it (front points and trials need no space)",
            manifest.name
        )));
    }
    Ok(space)
}

/// `n` assignments of `space`, each group's choice drawn uniformly with a generator seeded by `seed`.
pub fn random(space: &SearchSpace, n: usize, seed: u64) -> Vec<Target> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|index| {
            let point: Vec<u16> = space
                .groups
                .iter()
                .map(|g| rand::Rng::random_range(&mut rng, 0..g.choices.len() as u16))
                .collect();
            Target {
                source: MeasuredSource::Random { seed, index },
                assignment: space.assignment(&point),
            }
        })
        .collect()
}

/// The block format of `choice` and the in-features of each matrix it multiplies on `layer`: both
/// factors of a factorized layer (`B` reads the layer's input, `A` the rank-k intermediate).
fn ggml_matrices(layer: &LayerInfo, choice: &Choice) -> Option<(GgmlFormat, Vec<u64>)> {
    let WeightQuant::Ggml(g) = choice.weights else {
        return None;
    };
    // A look-up gathers rows and dequantizes them: no matrix kernel is involved.
    if layer.kind == LayerKind::Embedding {
        return None;
    }
    let (rows, cols) = (layer.rows(), layer.cols());
    Some(match choice.rank {
        Some(r) => (g, vec![cols, rank_k(rows, cols, r)]),
        None => (g, vec![cols]),
    })
}

/// An error naming `target` when one of its layers takes a block format whose blocks do not tile the
/// layer's matrix: candle has no kernel for that (its dot products would read past a row, or panic).
fn check_kernels(target: &Target, layers: &[LayerInfo]) -> Result<()> {
    for l in layers {
        let Some(choice) = target.assignment.get(&l.name) else {
            continue;
        };
        let Some((g, matrices)) = ggml_matrices(l, choice) else {
            continue;
        };
        if let Some(why) = matrices.iter().find_map(|&cols| g.misfit(cols)) {
            return Err(Error::measure(format!(
                "{}: layer `{}` ({}) takes `{choice}`, which this machine has no kernel for: {why}; \
                 nothing was measured",
                target.source,
                l.name,
                l.shape_string()
            )));
        }
    }
    Ok(())
}

/// What the person should know about how the targets run here: sparse patterns computed dense, and
/// block formats without a SIMD kernel.
fn kernel_notes(targets: &[Target]) -> Vec<String> {
    let choices = || {
        targets
            .iter()
            .flat_map(|t| t.assignment.iter().map(|(_, c)| *c))
    };
    let mut notes = Vec::new();
    if choices().any(|c| matches!(c.sparsity, Sparsity::Unstructured(_) | Sparsity::NM { .. })) {
        notes.push(
            "sparse<P> and N:M patterns are computed dense here: candle has no sparse kernels, so \
             those layers are timed as their dense matrices (removed channels, channels<P>, are \
             smaller matrices and do run faster)"
                .into(),
        );
    }
    if choices().any(|c| c.conv.is_some()) {
        notes.push(
            "tucker<P> and cp<P> layers run their chain of convolutions (candle conv2d, depthwise \
             ones grouped), each factor's values in f32: candle has no integer or f16 convolution \
             kernel on CPU, so an int or f16 chain is timed as f32"
                .into(),
        );
    }
    let scalar: Vec<&str> = [GgmlFormat::Q4_1, GgmlFormat::Q5_0, GgmlFormat::Q5_1]
        .into_iter()
        .filter(|g| choices().any(|c| c.weights == WeightQuant::Ggml(*g)))
        .map(|g| g.name())
        .collect();
    if !scalar.is_empty() {
        notes.push(format!(
            "{} ha{} no SIMD kernel in candle: {} scalar code, several times slower than f32",
            scalar.join(", "),
            if scalar.len() == 1 { "s" } else { "ve" },
            if scalar.len() == 1 {
                "it runs"
            } else {
                "they run"
            }
        ));
    }
    notes
}

/// A stored run's evaluator and hardware profile, loaded again.
pub struct RunModel {
    pub evaluator: CandleEvaluator,
    /// The run's hardware profile as the file is now.
    pub profile: HardwareProfile,
    pub notes: Vec<String>,
}

/// Loads the model, data and evaluator of run `manifest` from its manifest and checks them against
/// its fingerprints (model weights, then data and evaluator settings), and its hardware profile.
/// Errors name the run and say what to restore.
pub fn load_run(manifest: &RunManifest) -> Result<RunModel> {
    let c = &manifest.config;
    let (model, data) = crate::eval::load_run_data(&c.model, c.data.as_deref(), c.samples)
        .map_err(|e| {
            Error::measure(format!(
                "run `{}`: its model and data cannot be loaded ({e}); restore the files the run \
             searched to build its points",
                manifest.name
            ))
        })?;
    let now = model.fingerprint().to_hex().to_string();
    if now != manifest.fingerprints.model {
        return Err(Error::measure(format!(
            "run `{}`: model `{}` changed since the run searched it (fingerprint {} → {}): its points \
             would be built from other weights than the ones evaluated. Restore the model, or search \
             it again",
            manifest.name,
            c.model,
            short(&manifest.fingerprints.model),
            short(&now)
        )));
    }
    let evaluator = CandleEvaluator::new(model, data, crate::search::evaluator_settings(c))?;
    let now = evaluator.fingerprint().to_hex().to_string();
    if now != manifest.fingerprints.evaluator {
        return Err(Error::measure(format!(
            "run `{}`: its evaluation data or evaluator settings changed since it searched \
             (fingerprint {} → {}): its points would not be built (nor fed) as they were evaluated; \
             restore the data file",
            manifest.name,
            short(&manifest.fingerprints.evaluator),
            short(&now)
        )));
    }
    let profile = crate::shipped::profile(&c.profile).map_err(|e| {
        Error::measure(format!(
            "run `{}`: its hardware profile `{}` cannot be loaded ({e}); the predictions need it",
            manifest.name, c.profile
        ))
    })?;
    let mut notes = Vec::new();
    if profile.fingerprint().to_hex().as_str() != manifest.fingerprints.profile {
        notes.push(format!(
            "hardware profile `{}` changed since the run: the predictions are under the file as it is \
             now",
            c.profile
        ));
    }
    Ok(RunModel {
        evaluator,
        profile,
        notes,
    })
}

/// How [`time_targets`] times.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Warm-up and timed passes of each assignment in each round.
    pub schedule: Schedule,
    /// Rounds over all assignments; each figure is the fastest pass of all of them.
    pub rounds: usize,
    /// Built models held at once (bytes of their weights): the targets are timed in groups that fit.
    pub chunk_bytes: usize,
}

/// Rounds of a measurement: each point's fastest pass is taken over all of them, and more rounds give
/// it more chances at a quiet moment of a shared machine (BENCHMARKS.md, "Which figure": 9 rounds of
/// 30 passes ranked 58 demo points alike to Spearman 0.95 in two measurements, 3 rounds of 20 to 0.76).
pub const ROUNDS: usize = 9;
/// Timed passes of a point per round, at most …
pub const REPETITIONS: usize = 30;
/// … and none started after this many seconds once the round's share of
/// [`crate::timing::MIN_PASSES`] is done.
pub const MAX_SECONDS: f64 = 1.0;

impl Default for Options {
    fn default() -> Options {
        Options {
            schedule: Schedule {
                warmup: 2,
                warmup_seconds: 0.05,
                repetitions: REPETITIONS,
                max_seconds: MAX_SECONDS,
                least: Schedule::least_per_round(ROUNDS),
            },
            rounds: ROUNDS,
            chunk_bytes: 512 << 20,
        }
    }
}

/// The timings of a measurement: the all-f32 reference's (timed with every group of targets, in
/// every round) and each target's, in order.
#[derive(Clone, Debug)]
pub struct Measured {
    pub reference: Timing,
    pub targets: Vec<Timing>,
}

/// Bytes of the weights a built model holds besides the original ones.
pub fn overrides_bytes(o: &Overrides) -> usize {
    o.values()
        .filter_map(|l| l.kernel.as_ref())
        .map(LayerKernel::bytes)
        .sum()
}

/// Times whole forward passes of `model` on `input`: the all-f32 model (no overrides) and each of
/// `targets` as `build` builds it (the deployment builder), in `opts.rounds` rounds (see the module
/// docs). `progress(done, total, what)` is called before each timed target. A target that cannot be
/// built is an error naming it.
pub fn time_targets(
    model: &dyn Model,
    input: &Batch,
    targets: &[Target],
    build: &dyn Fn(&Assignment) -> Result<Overrides>,
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Measured> {
    let rounds = opts.rounds.max(1);
    let total = rounds * targets.len();
    let mut done = 0;
    let pass = |o: Option<&Overrides>| -> Result<()> {
        let ctx = ForwardCtx {
            overrides: o,
            capture: None,
            timer: None,
        };
        std::hint::black_box(model.forward(input, &ctx)?);
        Ok(())
    };
    let mut reference: Vec<(Vec<f64>, Option<f64>)> = Vec::new();
    let mut timed: Vec<Vec<(Vec<f64>, Option<f64>)>> = vec![Vec::new(); targets.len()];
    let mut next = 0;
    while next < targets.len() || (targets.is_empty() && reference.is_empty()) {
        // A group of built targets that fits in `chunk_bytes` (at least one).
        let mut group: Vec<(usize, Overrides)> = Vec::new();
        let mut bytes = 0;
        while next < targets.len() && (group.is_empty() || bytes < opts.chunk_bytes) {
            let t = &targets[next];
            let o = build(&t.assignment).map_err(|e| {
                Error::measure(format!(
                    "{}: it cannot be built on this machine ({e}); nothing was measured",
                    t.source
                ))
            })?;
            bytes += overrides_bytes(&o);
            group.push((next, o));
            next += 1;
        }
        for round in 0..rounds {
            let before = CpuSample::now();
            let mut times = Vec::with_capacity(group.len() + 1);
            times.push(opts.schedule.time(|| pass(None))?);
            for (i, o) in &group {
                progress(
                    done,
                    total,
                    &format!("round {}/{rounds}: {}", round + 1, targets[*i].source),
                );
                done += 1;
                times.push(opts.schedule.time(|| pass(Some(o)))?);
            }
            let load = match (before, CpuSample::now()) {
                (Some(b), Some(a)) => b.others_until(&a),
                _ => None,
            };
            let mut times = times.into_iter();
            reference.extend(times.next().map(|t| (t, load)));
            for ((i, _), t) in group.iter().zip(times) {
                timed[*i].push((t, load));
            }
        }
    }
    progress(done, total, "done");
    let figure = |rounds: &[(Vec<f64>, Option<f64>)]| {
        Timing::of_rounds(rounds).ok_or_else(|| Error::measure("no round was timed"))
    };
    Ok(Measured {
        reference: figure(&reference)?,
        targets: timed.iter().map(|r| figure(r)).collect::<Result<_>>()?,
    })
}

/// The machine a measurement ran on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub host: String,
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// The threads candle runs on (`RAYON_NUM_THREADS`, else the physical cores).
    pub threads: usize,
    pub candle_version: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        Machine {
            host: crate::store::host_name(),
            cpu: crate::cost::calibrate::cpu_model(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            threads: candle_core::utils::get_num_threads(),
            candle_version: crate::cost::calibrate::CANDLE_VERSION.to_string(),
        }
    }
}

/// Whether a hardware profile describes the machine a measurement runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileMatch {
    /// Calibrated (`mpsearch calibrate`) on a machine with this CPU and as many cores.
    ThisMachine,
    /// Calibrated on another machine (its CPU and cores, in words).
    OtherMachine(String),
    /// Calibrated here, with candle on another number of threads than now.
    OtherThreads { calibrated: usize, here: usize },
    /// A model of another device (not calibrated here at all).
    OtherDevice,
}

/// How `profile` relates to `machine`.
pub fn profile_match(profile: &HardwareProfile, machine: &Machine) -> ProfileMatch {
    let p = &profile.file.provenance;
    if profile.file.calibration.is_none() {
        return ProfileMatch::OtherDevice;
    }
    if p.cpu.as_deref() == Some(machine.cpu.as_str()) && p.cores == Some(machine.cores) {
        // Profiles written before `threads` was recorded ran candle on every core.
        let calibrated = p.threads.unwrap_or(machine.cores);
        return if calibrated == machine.threads {
            ProfileMatch::ThisMachine
        } else {
            ProfileMatch::OtherThreads {
                calibrated,
                here: machine.threads,
            }
        };
    }
    ProfileMatch::OtherMachine(format!(
        "{}, {} threads",
        p.cpu.as_deref().unwrap_or("an unrecorded CPU"),
        p.cores.map_or("?".to_string(), |c| c.to_string())
    ))
}

/// What a measurement's records share.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    /// The number of the first record (the run's measurements so far).
    pub first: u64,
    pub input: &'a input::MeasureInput,
    pub layers: &'a [LayerInfo],
    /// The profile as the run names it, and as loaded.
    pub profile_name: &'a str,
    pub profile: &'a HardwareProfile,
    pub machine: &'a Machine,
    /// When (seconds since the Unix epoch).
    pub measured_unix: u64,
}

/// The uncompressed model's assignment over `layers`: every layer f32.
pub fn all_f32(layers: &[LayerInfo]) -> Assignment {
    Assignment::new(layers.iter().map(|l| (l.name.clone(), Choice::F32)))
}

/// The records of a measurement: the all-f32 reference first, then each target, numbered from
/// `ctx.first`, each with the profile's prediction at the batch measured.
pub fn records(
    targets: &[Target],
    measured: &Measured,
    ctx: &Context,
) -> Result<Vec<MeasurementRecord>> {
    let cost = CostModel::new(ctx.profile.clone(), ctx.input.cost_batch)?.for_model(ctx.layers);
    let reference = Target {
        source: MeasuredSource::Reference,
        assignment: all_f32(ctx.layers),
    };
    let all = std::iter::once((&reference, &measured.reference))
        .chain(targets.iter().zip(&measured.targets));
    Ok(all
        .enumerate()
        .map(|(i, (t, timing))| MeasurementRecord {
            schema: crate::store::SCHEMA_VERSION,
            number: ctx.first + i as u64,
            source: t.source.clone(),
            assignment: t.assignment.to_json(),
            hash: t.assignment.hash_hex(),
            batch: ctx.input.samples,
            tokens: ctx.input.tokens,
            cost_batch: ctx.input.cost_batch,
            repetitions: timing.repetitions,
            fastest_us: Some(timing.figure.fastest_us),
            median_us: timing.figure.median_us,
            spread_us: timing.figure.spread_us,
            round_medians_us: timing.figure.round_medians_us.clone(),
            reference_us: measured.reference.figure.median_us,
            reference_fastest_us: Some(measured.reference.figure.fastest_us),
            other_load: timing.figure.other_load,
            host: ctx.machine.host.clone(),
            cpu: ctx.machine.cpu.clone(),
            cores: ctx.machine.cores,
            threads: Some(ctx.machine.threads),
            candle_version: ctx.machine.candle_version.clone(),
            profile: ctx.profile_name.to_string(),
            profile_fingerprint: ctx.profile.fingerprint().to_hex().to_string(),
            predicted_us: cost.assignment(ctx.layers, &t.assignment).1.latency_us,
            measured_unix: ctx.measured_unix,
        })
        .collect())
}

/// The first 12 characters of a fingerprint.
fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

/// The timings of `evaluator`'s model for `plan`'s targets on `input`, built by the evaluator's
/// deployment builder: [`time_targets`] for a loaded run.
pub fn time_run(
    evaluator: &CandleEvaluator,
    input: &Batch,
    targets: &[Target],
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Measured> {
    let model: &Arc<dyn Model> = evaluator.model();
    time_targets(
        model.as_ref(),
        input,
        targets,
        &|a| evaluator.deploy_overrides(a),
        opts,
        progress,
    )
}

#[cfg(test)]
mod tests;
