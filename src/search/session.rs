//! Setting a run up: the model, data and evaluator, the space, the cost tables, the feasibility check
//! of every limit ([`Loaded`]), then the sensitivity model (from the store when it has it, continued
//! from the run's checkpoints when a set-up was stopped) and the strategy's problem
//! ([`Loaded::set_up`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::cached::CachingEvaluator;
use super::frugal;
use crate::cost::feasibility::{BudgetFit, Limit};
use crate::cost::model::Objective;
use crate::cost::{CostModel, CostTable, HardwareProfile};
use crate::error::{Error, Result};
use crate::eval::{CandleEvaluator, EvalSettings, Evaluator};
use crate::sensitivity::{analysis, one_at_a_time, pick_pairs, Checkpoint, Pairs, Predictor};
use crate::space::{Assignment, Point, SearchSpace};
use crate::store::{
    sensitivity_key, EvalCount, Evaluations, Fingerprints, RunConfig, RunManifest, RunStatus,
    SensitivityRecord, SetupSummary, Store, COST_REFERENCE, QUALITY_REFERENCE, SCHEMA_VERSION,
};
use crate::strategy::{CostLimit, Problem};

/// What a phase of the set-up is doing, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupPhase {
    /// Pruning importance scores (`--importance taylor|fisher`), counted in calibration samples.
    Importance,
    /// Cheap per-layer errors (counted in groups).
    CheapErrors,
    /// One-at-a-time measurements (counted in pairs).
    Measurements,
    /// One-at-a-time measurements of the frugal set-up, counted against its budget (it usually stops
    /// well before).
    Frugal,
}

/// Everything a run needs, ready.
pub struct Session {
    pub config: RunConfig,
    pub evaluator: Arc<CandleEvaluator>,
    pub space: SearchSpace,
    pub profile: HardwareProfile,
    pub cost_model: CostModel,
    pub table: CostTable,
    pub objective: Objective,
    pub problem: Problem,
    /// The fingerprints of the inputs, as the manifest records them.
    pub fingerprints: Fingerprints,
    /// Things the user should know (a budget that constrains nothing, a sensitivity model reused…).
    pub notes: Vec<String>,
    /// Seconds the f32 reference forward took (one evaluation's order of magnitude).
    pub forward_seconds: f64,
    /// How the set-up built the sensitivity model.
    pub setup: SetupSummary,
    /// The set-up's cheap errors and one-at-a-time measurements (what trials refine the predictor
    /// with; see [`crate::strategy::refine`]).
    pub sensitivity: SensitivityRecord,
    /// The evaluations this session's set-up spent (its measurements and the baselines outside the
    /// trials).
    pub evaluations: Evaluations,
}

/// A run's inputs loaded and checked — model, data and evaluator, space, hardware profile, cost
/// tables, every limit — and not yet set up: what a new run's manifest records before its set-up
/// starts ([`Loaded::manifest`]).
pub struct Loaded {
    config: RunConfig,
    evaluator: Arc<CandleEvaluator>,
    space: SearchSpace,
    profile: HardwareProfile,
    cost_model: CostModel,
    table: CostTable,
    objective: Objective,
    cost_limits: Vec<CostLimit>,
    /// The run's hypervolume reference `[cost, quality]`.
    reference: [f64; 2],
    fingerprints: Fingerprints,
    notes: Vec<String>,
    forward_seconds: f64,
    /// When loading started: the set-up's time counts from here.
    started: Instant,
}

impl Loaded {
    /// Loads and checks everything `config` names, and checks every limit against the range the
    /// space reaches, before anything is evaluated. `resuming` is the stored run this continues: its
    /// inputs' fingerprints are checked ([`Error::RunChanged`] names what changed).
    pub fn load(config: RunConfig, resuming: Option<&RunManifest>) -> Result<Loaded> {
        let started = Instant::now();
        let objective = config.objective;
        let (net, data) =
            crate::eval::load_run_data(&config.model, config.data.as_deref(), config.samples)?;
        let space = crate::shipped::space(&config.space, &net.inventory().layers)?;
        let profile = crate::shipped::profile(&config.profile)?;
        let cost_model =
            CostModel::new(profile.clone(), config.batch)?.for_model(&net.inventory().layers);
        let table = CostTable::new(&cost_model, &space);
        let mut notes = Vec::new();

        // Every limit is checked against the reachable range before anything is evaluated.
        let cost_limits = limits(&config, &table, &space, &profile, &mut notes)?;

        let settings = evaluator_settings(&config);
        let t0 = Instant::now();
        let evaluator = Arc::new(CandleEvaluator::new(net, data, settings)?);
        let forward_seconds = t0.elapsed().as_secs_f64();

        let fingerprints = fingerprints(&evaluator, &space, &profile);
        if let Some(m) = resuming {
            let changes = super::changed(&m.fingerprints, &fingerprints);
            if !changes.is_empty() {
                return Err(Error::RunChanged {
                    run: m.name.clone(),
                    changes,
                });
            }
        }
        let feasibility = table.feasibility(objective);
        let objective_limit = cost_limits
            .iter()
            .find(|l| l.name == objective.to_string())
            .map(|l| l.max);
        let reference = [
            objective_limit.unwrap_or(feasibility.max * COST_REFERENCE),
            config.max_drop.unwrap_or(QUALITY_REFERENCE),
        ];
        Ok(Loaded {
            config,
            evaluator,
            space,
            profile,
            cost_model,
            table,
            objective,
            cost_limits,
            reference,
            fingerprints,
            notes,
            forward_seconds,
            started,
        })
    }

    /// The manifest of a new run `name` of these inputs, in its set-up (status `setting-up`, no
    /// set-up summary yet, nothing spent).
    pub fn manifest(&self, name: &str) -> RunManifest {
        RunManifest {
            schema: SCHEMA_VERSION,
            name: name.to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            status: RunStatus::SettingUp,
            elapsed_seconds: 0.0,
            config: self.config.clone(),
            reference: self.reference,
            fingerprints: self.fingerprints.clone(),
            splits: Some(self.evaluator.data().sizes),
            setup: None,
            setup_seconds: Some(0.0),
            evaluations: Some(Evaluations::default()),
        }
    }

    /// Sets up run `manifest` (stored, with these inputs): its sensitivity analysis — the run's own
    /// from the store when its set-up is done, else built, continuing from what an earlier session of
    /// the run kept —, the space's baselines, and the strategy's problem.
    ///
    /// While the set-up of a run in `setting-up` runs, each group's cheap errors and each one-at-a-time
    /// measurement is durable when done: the manifest (with what the set-up has spent so far) is written
    /// after each, which flushes them. `stop` is checked there too: when set, the set-up ends with
    /// [`Error::Interrupted`], everything it did kept, and `resume` continues it. When it ends, the
    /// manifest says what it built and spent, and a run in `setting-up` becomes `running`.
    /// `progress(phase, done, total)` reports the analysis.
    pub fn set_up(
        mut self,
        store: &dyn Store,
        manifest: &mut RunManifest,
        stop: &AtomicBool,
        progress: &mut dyn FnMut(SetupPhase, usize, usize),
    ) -> Result<Session> {
        let fresh = manifest.status == RunStatus::SettingUp;
        if fresh && stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted {
                run: manifest.name.clone(),
            });
        }
        let known = manifest.setup.clone();
        let before = manifest.evaluations;
        let seconds_before = manifest.setup_seconds.unwrap_or(0.0);
        let mut notes = std::mem::take(&mut self.notes);
        // Gradient importance scores, when a choice of the space needs them: taken here, as a phase
        // of their own with its progress, rather than silently inside the first pruned compression.
        if self.evaluator.space_needs_scores(&self.space) {
            self.evaluator
                .weight_scores_with(&mut |d, t| progress(SetupPhase::Importance, d, t))?;
            if fresh && stop.load(Ordering::SeqCst) {
                return Err(Error::Interrupted {
                    run: manifest.name.clone(),
                });
            }
        }
        let build = |predictor: Predictor| self.problem(predictor);
        let measurer = CachingEvaluator::new(self.evaluator.as_ref(), store);
        let (record, setup) = {
            let mut checkpoint = RunCheckpoint {
                store,
                manifest: &mut *manifest,
                measurer: &measurer,
                before,
                seconds_before: fresh.then_some(seconds_before),
                started: self.started,
                stop,
                fingerprints: (self.evaluator.fingerprint(), self.space.fingerprint()),
            };
            sensitivity(
                &SetupInputs {
                    ev: &self.evaluator,
                    space: &self.space,
                    config: &self.config,
                    store,
                    known: known.as_ref(),
                    forward_seconds: self.forward_seconds,
                    started: self.started,
                    seconds_before,
                    build: &build,
                    measurer: &measurer,
                },
                &mut checkpoint,
                &mut notes,
                progress,
            )?
        };
        // The analysis is the run's from here on: recorded at once, with it (which the write flushes),
        // so that a kill before the end finds it as the run's own and not as one another run built.
        if fresh {
            manifest.setup = Some(setup.clone());
            store.put_run(manifest)?;
        }
        let mut evaluations = Evaluations {
            setup: measurer.counts(),
            ..Evaluations::default()
        };
        let baselines = baselines(
            self.evaluator.as_ref(),
            &self.space,
            store,
            &mut evaluations.baselines,
            &mut notes,
        );
        let problem = build(fit(&record)?)?.with_baselines(baselines)?;
        predicted_drop(&problem, &self.objective, &mut notes)?;
        // What this session's set-up spent is the run's too (nothing when its analysis was found; a
        // run recorded before evaluations were counted keeps not counting them, rather than count a
        // part).
        if let (Some(e), Some(b)) = (manifest.evaluations.as_mut(), before) {
            e.setup = b.setup;
            e.setup.add(evaluations.setup);
            e.baselines = b.baselines;
            e.baselines.add(evaluations.baselines);
        }
        // The analysis this session uses (the run's own, or, if the store lost it, the one built now).
        manifest.setup = Some(setup.clone());
        if fresh {
            manifest.setup_seconds = Some(seconds_before + self.started.elapsed().as_secs_f64());
            manifest.status = RunStatus::Running;
        }
        store.put_run(manifest)?;
        self.notes = notes;
        Ok(self.into_session(problem, setup, record, evaluations))
    }
}

impl Loaded {
    /// The session of run `manifest` (stored, its set-up done, with these inputs) for a process that
    /// evaluates its trials without driving it (`mpsearch worker`): the run's own sensitivity
    /// analysis read back and its problem built, nothing evaluated and nothing written. An error when
    /// the run's set-up is not done or its analysis is not in the store.
    pub fn attach(self, store: &dyn Store, manifest: &RunManifest) -> Result<Session> {
        let Some(setup) = manifest.setup.clone() else {
            return Err(Error::search(format!(
                "run `{}` has not finished its set-up (its controller builds the sensitivity model \
                 before any trial is queued)",
                manifest.name
            )));
        };
        let record = blake3::Hash::from_hex(&setup.key)
            .ok()
            .map(|k| store.sensitivity(&k))
            .transpose()?
            .flatten()
            .ok_or_else(|| {
                Error::search(format!(
                    "run `{}`: its sensitivity analysis (key {}) is not in the store; resume the \
                     run to build it again",
                    manifest.name,
                    setup.key.chars().take(12).collect::<String>()
                ))
            })?;
        let (baselines, _) = baseline_points(&self.space);
        let problem = self.problem(fit(&record)?)?.with_baselines(baselines)?;
        Ok(self.into_session(problem, setup, record, Evaluations::default()))
    }

    /// The run's problem with `predictor`.
    fn problem(&self, predictor: Predictor) -> Result<Problem> {
        let choices: Vec<u16> = self
            .space
            .groups
            .iter()
            .map(|g| g.choices.len() as u16)
            .collect();
        Problem::new(
            choices,
            per_group(&self.table, self.objective),
            self.cost_limits.clone(),
            self.config.max_drop,
            predictor,
            self.config.seed,
            self.reference,
        )
    }

    fn into_session(
        self,
        problem: Problem,
        setup: SetupSummary,
        sensitivity: SensitivityRecord,
        evaluations: Evaluations,
    ) -> Session {
        Session {
            config: self.config,
            evaluator: self.evaluator,
            space: self.space,
            profile: self.profile,
            cost_model: self.cost_model,
            table: self.table,
            objective: self.objective,
            problem,
            fingerprints: self.fingerprints,
            notes: self.notes,
            forward_seconds: self.forward_seconds,
            setup,
            sensitivity,
            evaluations,
        }
    }
}

/// The set-up's [`Checkpoint`] in the run's store: a group's cheap errors under their own key
/// ([`cheap_group_key`]), a measurement's evaluation in the evaluation cache (the measurer's), and
/// after each the run's manifest with what the set-up has spent so far — a flushing write, which
/// makes both durable — and then the user's stop, if asked for.
struct RunCheckpoint<'a> {
    store: &'a dyn Store,
    manifest: &'a mut RunManifest,
    measurer: &'a CachingEvaluator<'a>,
    /// The run's evaluations before this session.
    before: Option<Evaluations>,
    /// The set-up's seconds before this session (`None` when the run's set-up was done before:
    /// rebuilding an analysis the store lost is not the set-up's time).
    seconds_before: Option<f64>,
    started: Instant,
    stop: &'a AtomicBool,
    /// The evaluator's and the space's fingerprints, which key each group's cheap errors.
    fingerprints: (blake3::Hash, blake3::Hash),
}

impl RunCheckpoint<'_> {
    fn save(&mut self) -> Result<()> {
        if let (Some(e), Some(b)) = (self.manifest.evaluations.as_mut(), self.before) {
            e.setup = b.setup;
            e.setup.add(self.measurer.counts());
        }
        if let Some(s) = self.seconds_before {
            self.manifest.setup_seconds = Some(s + self.started.elapsed().as_secs_f64());
        }
        self.store.put_run(self.manifest)?;
        if self.stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted {
                run: self.manifest.name.clone(),
            });
        }
        Ok(())
    }
}

impl Checkpoint for RunCheckpoint<'_> {
    fn cheap_row(&mut self, group: usize) -> Result<Option<Vec<f64>>> {
        let key = cheap_group_key(self.fingerprints, group);
        Ok(self
            .store
            .sensitivity(&key)?
            .and_then(|r| r.errors.into_iter().next()))
    }

    fn keep_cheap_row(&mut self, group: usize, row: &[f64]) -> Result<()> {
        let key = cheap_group_key(self.fingerprints, group);
        self.store.put_sensitivity(
            &key,
            &SensitivityRecord {
                schema: SCHEMA_VERSION,
                errors: vec![row.to_vec()],
                measurements: Vec::new(),
            },
        )?;
        self.save()
    }

    fn measured(&mut self) -> Result<()> {
        self.save()
    }

    fn captured(&mut self) -> Result<()> {
        self.save()
    }
}

/// The run's cost limits, each checked against the range the space reaches under the profile (an
/// unreachable one is an error, one that constrains nothing a note), and its quality limit checked.
fn limits(
    config: &RunConfig,
    table: &CostTable,
    space: &SearchSpace,
    profile: &HardwareProfile,
    notes: &mut Vec<String>,
) -> Result<Vec<CostLimit>> {
    let limits = [
        (Objective::Latency, config.max_latency_us),
        (Objective::Size, config.max_bytes),
        (Objective::Bops, config.max_bops),
    ];
    let mut cost_limits = Vec::new();
    for (o, max) in limits {
        let Some(max) = max else { continue };
        let fit = table
            .feasibility(o)
            .check_max(max, &space.name, profile.name())?;
        if fit == BudgetFit::NonBinding {
            notes.push(format!(
                "max {o} {} constrains nothing: every assignment of space `{}` meets it under `{}`",
                o.format(max),
                space.name,
                profile.name()
            ));
        }
        cost_limits.push(CostLimit {
            name: o.to_string(),
            table: per_group(table, o),
            max,
        });
    }
    let joint: Vec<Limit> = limits
        .iter()
        .filter_map(|&(objective, max)| {
            Some(Limit {
                objective,
                max: max?,
            })
        })
        .collect();
    if !table.check_joint(&joint, &space.name, profile.name())? {
        notes.push(format!(
            "the limits were checked one at a time only: the space is too large to check {} together",
            joint.iter().map(Limit::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    if let Some(d) = config.max_drop {
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::search(format!(
                "--max-drop must be a positive number, not {d}"
            )));
        }
    }
    Ok(cost_limits)
}

/// The points of the space's baselines (all-f32, all-f16, all-int8, …), which become the run's first
/// trials. A baseline the space does not allow everywhere (all-f32 where a group has no f32) cannot be
/// a trial: it is evaluated into the evaluation cache instead, for the report's reference lines; a
/// failure there only loses that line (a note), never the run.
fn baselines(
    evaluator: &dyn Evaluator,
    space: &SearchSpace,
    store: &dyn Store,
    count: &mut EvalCount,
    notes: &mut Vec<String>,
) -> Vec<Point> {
    let cached = CachingEvaluator::new(evaluator, store);
    let (points, others) = baseline_points(space);
    for (label, a) in others {
        if let Err(e) = cached.evaluate(&a) {
            notes.push(format!("baseline {label} could not be evaluated: {e}"));
        }
    }
    count.add(cached.counts());
    points
}

/// The space's baselines that are points of it (the run's first trials), and the others, by label.
fn baseline_points(space: &SearchSpace) -> (Vec<Point>, Vec<(String, Assignment)>) {
    let mut points = Vec::new();
    let mut others = Vec::new();
    for (label, _, a) in space.baselines() {
        match space.point(&a) {
            Ok(p) => points.push(p),
            Err(_) => others.push((label.to_string(), a)),
        }
    }
    (points, others)
}

/// `--max-drop` cannot be checked before evaluation (quality is measured, not known); it is checked
/// against the sensitivity model's prediction instead, as a warning only: a note when no assignment
/// within the cost limits is predicted to meet it.
fn predicted_drop(problem: &Problem, objective: &Objective, notes: &mut Vec<String>) -> Result<()> {
    let Some(max) = problem.max_quality else {
        return Ok(());
    };
    let front = problem.exact_front()?;
    if let Some(best) = front.last().filter(|b| b.predicted > max) {
        notes.push(format!(
            "--max-drop {max}: the sensitivity model predicts no assignment within the cost limits \
             meets it (the best predicted is {:.4e}, at {} {}); the search goes on, since only \
             evaluations decide, but its front may stay empty",
            best.predicted,
            objective,
            objective.format(best.cost)
        ));
    }
    Ok(())
}

/// The evaluator settings a run's configuration asks for (what its evaluator fingerprint covers):
/// a session and [`super::held_out::run_evaluator`] build the same evaluator from it.
pub fn evaluator_settings(config: &RunConfig) -> EvalSettings {
    EvalSettings {
        scale: config.scale,
        rounding: config.rounding,
        importance: config.importance,
        ..EvalSettings::default()
    }
}

/// One objective's table, `[group][choice]`: the problem's per-group shares of `o`, which add up to the table's totals: the first group's
/// carry the table's base (the model's non-matmul work) on every choice.
fn per_group(table: &CostTable, o: Objective) -> Vec<Vec<f64>> {
    let base = o.of(&table.base);
    table
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            g.iter()
                .map(|c| o.of(c) + if i == 0 { base } else { 0.0 })
                .collect()
        })
        .collect()
}

/// The fingerprints recorded in a run's manifest and checked on resume.
pub fn fingerprints(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    profile: &HardwareProfile,
) -> Fingerprints {
    Fingerprints {
        evaluator: ev.fingerprint().to_hex().to_string(),
        model: ev.model().fingerprint().to_hex().to_string(),
        profile: profile.fingerprint().to_hex().to_string(),
        space: space.fingerprint().to_hex().to_string(),
    }
}

/// What the set-up's sensitivity analysis needs.
struct SetupInputs<'a> {
    ev: &'a Arc<CandleEvaluator>,
    space: &'a SearchSpace,
    config: &'a RunConfig,
    store: &'a dyn Store,
    /// The run's own analysis, when resuming.
    known: Option<&'a SetupSummary>,
    forward_seconds: f64,
    /// When this session's set-up started (loading the model included), and the seconds earlier
    /// sessions of the run's set-up took: its share of a time budget counts both.
    started: Instant,
    seconds_before: f64,
    /// The run's problem with a given predictor.
    build: &'a dyn Fn(Predictor) -> Result<Problem>,
    /// The one-at-a-time measurements' evaluator (through the store's evaluation cache).
    measurer: &'a CachingEvaluator<'a>,
}

/// The set-up's analysis (cheap errors and measurements) and how it was had: the run's own stored analysis when resuming, else the
/// store's record of this analysis if there is one, else computed — its one-at-a-time measurements
/// through the evaluation cache, each kept by the checkpoint as it is done — and stored.
///
/// With `--pairs N`, the record is keyed by the evaluator, the space and the pairs
/// ([`sensitivity_key`]). With `--pairs auto` ([`super::frugal`]), the cheap errors are stored on
/// their own (keyed by the evaluator and the space, so every run of them shares one computation) and
/// the analysis under a key that adds the problem (cost tables, limits) and, only when it cut the
/// set-up short, the set-up's budget (see [`frugal_sensitivity`]).
fn sensitivity(
    inputs: &SetupInputs,
    checkpoint: &mut dyn Checkpoint,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<(SensitivityRecord, SetupSummary)> {
    let SetupInputs {
        ev,
        space,
        config,
        store,
        ..
    } = *inputs;
    if let Some(known) = inputs.known {
        if let Some(record) = blake3::Hash::from_hex(&known.key)
            .ok()
            .and_then(|k| store.sensitivity(&k).transpose())
        {
            let record = record?;
            return Ok((record, known.clone()));
        }
        notes.push(format!(
            "the run's own sensitivity analysis (key {}) is not in the store any more: it is built \
             again, and the trials from here on are asked with the new one",
            known.key.chars().take(12).collect::<String>()
        ));
    }
    match config.pairs {
        Pairs::Fixed(n) => {
            let pairs = pick_pairs(space, n, config.seed);
            let key = sensitivity_key(&ev.fingerprint(), space, &pairs);
            let (record, reused) = match store.sensitivity(&key)? {
                Some(r) => (r, true),
                None => {
                    let an = analysis::analyse(
                        ev,
                        inputs.measurer,
                        space,
                        &pairs,
                        checkpoint,
                        &mut |p, d, t| {
                            let phase = match p {
                                analysis::Phase::CheapErrors => SetupPhase::CheapErrors,
                                analysis::Phase::Measurements => SetupPhase::Measurements,
                            };
                            progress(phase, d, t)
                        },
                    )?;
                    let r = SensitivityRecord {
                        schema: SCHEMA_VERSION,
                        errors: an.errors,
                        measurements: an.measurements,
                    };
                    store.put_sensitivity(&key, &r)?;
                    (r, false)
                }
            };
            if reused {
                notes.push(format!(
                    "sensitivity model reused from the store ({} one-at-a-time measurements)",
                    record.measurements.len()
                ));
            }
            let summary = SetupSummary {
                key: key.to_hex().to_string(),
                measured: record.measurements.len(),
                budget: None,
                rounds: None,
                stop: None,
                reused,
            };
            Ok((record, summary))
        }
        Pairs::Auto => frugal_sensitivity(inputs, checkpoint, notes, progress),
    }
}

/// The frugal set-up of `--pairs auto` (see [`sensitivity`] and [`super::frugal`]).
fn frugal_sensitivity(
    inputs: &SetupInputs,
    checkpoint: &mut dyn Checkpoint,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<(SensitivityRecord, SetupSummary)> {
    let SetupInputs {
        ev,
        space,
        config,
        store,
        ..
    } = *inputs;
    let fingerprint = ev.fingerprint();
    let measurable = pick_pairs(space, usize::MAX, config.seed);
    // A resumed run whose set-up was cut by time, rebuilt because the store lost it, measures what
    // the cut left: the same first picks.
    let budget = match inputs.known {
        Some(k) if k.stop.as_deref() == Some(frugal::FrugalStop::Time.name()) => k.measured,
        _ => frugal::setup_budget(
            config.trials,
            config.time_seconds,
            inputs.forward_seconds,
            space.searchable_groups().count(),
            measurable.len(),
        ),
    };
    let errors_key = cheap_errors_key(&fingerprint, space);
    let errors = match store.sensitivity(&errors_key)? {
        Some(r) => r.errors,
        None => {
            let errors = analysis::cheap(ev, space, checkpoint, &mut |d, t| {
                progress(SetupPhase::CheapErrors, d, t)
            })?;
            store.put_sensitivity(
                &errors_key,
                &SensitivityRecord {
                    schema: SCHEMA_VERSION,
                    errors: errors.clone(),
                    measurements: Vec::new(),
                },
            )?;
            errors
        }
    };
    // The problem the front is solved for (its cost tables and limits) decides which pairs are
    // measured, so it is part of the key. The budget is too, unless the set-up stopped by its own
    // rule before reaching it: then any budget at least as large measures the same pairs (the budget
    // only ever cuts the set-up short), so that analysis is stored under a key without the budget and
    // serves every such run — e.g. the same problem under another trial or time budget.
    let probe = (inputs.build)(Predictor::from_table(errors.clone())?)?;
    let natural = frugal_key(&fingerprint, space, &probe, None);
    let capped = frugal_key(&fingerprint, space, &probe, Some(budget));
    let found = match store.sensitivity(&natural)? {
        Some(r) if r.measurements.len() <= budget => Some((natural, r)),
        _ => store.sensitivity(&capped)?.map(|r| (capped, r)),
    };
    if let Some((key, record)) = found {
        notes.push(format!(
            "sensitivity model reused from the store ({} one-at-a-time measurements of the frugal \
             set-up)",
            record.measurements.len()
        ));
        let summary = SetupSummary {
            key: key.to_hex().to_string(),
            measured: record.measurements.len(),
            budget: Some(budget),
            rounds: None,
            stop: None,
            reused: true,
        };
        return Ok((record, summary));
    }
    let mut done = 0;
    progress(SetupPhase::Frugal, 0, budget);
    let outcome = frugal::frugal_setup(
        &errors,
        &measurable,
        inputs.build,
        budget,
        &mut |group, choice| {
            let q = one_at_a_time(inputs.measurer, space, group, choice)?;
            checkpoint.measured()?;
            done += 1;
            progress(SetupPhase::Frugal, done, budget);
            Ok(q)
        },
        // The run's share of `--time`, from the session's start; not when rebuilding a resumed run's
        // own set-up that the store lost (it follows its count budget, as the first build did up to
        // its cut, so the rebuild is the same whatever the clock).
        &|| {
            inputs.known.is_none()
                && config.time_seconds.is_some_and(|t| {
                    inputs.seconds_before + inputs.started.elapsed().as_secs_f64()
                        >= frugal::SETUP_SHARE * t
                })
        },
    )?;
    progress(SetupPhase::Frugal, budget, budget);
    notes.push(format!(
        "frugal set-up: {} of {} (group, choice) pairs measured one at a time in {} rounds: {} \
         (budget {budget}: a fifth of the run's, at least one per searchable group); {} points on \
         the predicted front",
        outcome.measurements.len(),
        measurable.len(),
        outcome.rounds,
        outcome.stop,
        outcome.front
    ));
    let record = SensitivityRecord {
        schema: SCHEMA_VERSION,
        errors,
        measurements: outcome.measurements,
    };
    // A set-up cut by time measured the first picks of the uncut sequence: exactly what a count budget
    // of that many measures, so it is stored as that.
    let key = match outcome.stop {
        frugal::FrugalStop::Time => {
            frugal_key(&fingerprint, space, &probe, Some(record.measurements.len()))
        }
        _ if outcome.stop != frugal::FrugalStop::Budget && record.measurements.len() < budget => {
            natural
        }
        _ => capped,
    };
    store.put_sensitivity(&key, &record)?;
    let summary = SetupSummary {
        key: key.to_hex().to_string(),
        measured: record.measurements.len(),
        budget: Some(budget),
        rounds: Some(outcome.rounds),
        stop: Some(outcome.stop.name().to_string()),
        reused: false,
    };
    Ok((record, summary))
}

/// The predictor of a stored analysis (the frugal set-up's rule: the raw cheap errors when no
/// measurement can fit a scale).
fn fit(record: &SensitivityRecord) -> Result<Predictor> {
    frugal::predictor(&record.errors, &record.measurements)
}

/// Store key of the cheap errors of group `group` of a space under an evaluator, given their
/// fingerprints `(evaluator, space)`, as the set-up keeps them one group at a time (weights only: see
/// [`Checkpoint`]).
fn cheap_group_key((evaluator, space): (blake3::Hash, blake3::Hash), group: usize) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-cheap-group-v1\n");
    h.update(evaluator.as_bytes());
    h.update(space.as_bytes());
    h.update(&(group as u64).to_le_bytes());
    h.finalize()
}

/// Store key of the cheap errors of `space` under the evaluator `fingerprint`.
fn cheap_errors_key(fingerprint: &blake3::Hash, space: &SearchSpace) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-cheap-errors-v1\n");
    h.update(fingerprint.as_bytes());
    h.update(space.fingerprint().as_bytes());
    h.finalize()
}

/// Store key of a frugal set-up: the evaluator, the space, the problem's cost tables and cost limits
/// (what its exact front depends on), and the budget when it cut the set-up short (see
/// [`frugal_sensitivity`]).
fn frugal_key(
    fingerprint: &blake3::Hash,
    space: &SearchSpace,
    problem: &Problem,
    budget: Option<usize>,
) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-frugal-setup-v1\n");
    h.update(fingerprint.as_bytes());
    h.update(space.fingerprint().as_bytes());
    match budget {
        Some(b) => h.update(&(b as u64).to_le_bytes()),
        None => h.update(b"no budget reached"),
    };
    let table = |h: &mut blake3::Hasher, t: &[Vec<f64>]| {
        for row in t {
            h.update(&(row.len() as u64).to_le_bytes());
            for v in row {
                h.update(&v.to_bits().to_le_bytes());
            }
        }
    };
    table(&mut h, &problem.cost);
    for l in &problem.cost_limits {
        h.update(l.name.as_bytes());
        h.update(&l.max.to_bits().to_le_bytes());
        table(&mut h, &l.table);
    }
    h.finalize()
}
