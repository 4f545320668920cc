//! Setting a run up: the model, data and evaluator, the space, the cost tables, the feasibility check
//! of every limit, the sensitivity model (from the store when it has it), and the strategy's problem.

use std::path::Path;
use std::sync::Arc;

use super::cached::CachingEvaluator;
use crate::cost::feasibility::{BudgetFit, Limit};
use crate::cost::model::Objective;
use crate::cost::{CostModel, CostTable, HardwareProfile};
use crate::error::{Error, Result};
use crate::eval::{CandleEvaluator, EvalSettings, Evaluator};
use crate::model::ModelSource;
use crate::sensitivity::{analysis, pick_pairs, Predictor};
use crate::space::{Point, SearchSpace};
use crate::store::{
    sensitivity_key, Fingerprints, RunConfig, SensitivityRecord, Store, COST_REFERENCE,
    QUALITY_REFERENCE, SCHEMA_VERSION,
};
use crate::strategy::{CostLimit, Problem};

/// What a phase of the set-up is doing, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupPhase {
    /// Cheap per-layer errors (counted in groups).
    CheapErrors,
    /// One-at-a-time measurements (counted in pairs).
    Measurements,
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
}

impl Session {
    /// Loads and checks everything `config` names; runs (or reuses from `store`) the sensitivity
    /// analysis. `progress(phase, done, total)` reports the analysis.
    pub fn prepare(
        config: RunConfig,
        store: &dyn Store,
        progress: &mut dyn FnMut(SetupPhase, usize, usize),
    ) -> Result<Session> {
        let objective = config.objective;
        let source = ModelSource::parse(&config.model);
        let (net, data) = crate::eval::load(&source, config.data.as_deref().map(Path::new))?;
        let space = crate::shipped::space(&config.space, &net.inventory().layers)?;
        let profile = crate::shipped::profile(&config.profile)?;
        let cost_model =
            CostModel::new(profile.clone(), config.batch)?.for_model(&net.inventory().layers);
        let table = CostTable::new(&cost_model, &space);
        let mut notes = Vec::new();

        // Every limit is checked against the reachable range before anything is evaluated.
        let cost_limits = limits(&config, &table, &space, &profile, &mut notes)?;

        let settings = evaluator_settings(&config);
        let t0 = std::time::Instant::now();
        let evaluator = Arc::new(CandleEvaluator::new(net, data, settings)?);
        let forward_seconds = t0.elapsed().as_secs_f64();

        let fingerprints = fingerprints(&evaluator, &space, &profile);
        let predictor = sensitivity(&evaluator, &space, &config, store, &mut notes, progress)?;
        let baselines = baselines(evaluator.as_ref(), &space, store, &mut notes);

        let feasibility = table.feasibility(objective);
        let objective_limit = cost_limits
            .iter()
            .find(|l| l.name == objective.to_string())
            .map(|l| l.max);
        let reference = [
            objective_limit.unwrap_or(feasibility.max * COST_REFERENCE),
            config.max_drop.unwrap_or(QUALITY_REFERENCE),
        ];
        let problem = Problem::new(
            space
                .groups
                .iter()
                .map(|g| g.choices.len() as u16)
                .collect(),
            per_group(&table, objective),
            cost_limits,
            config.max_drop,
            predictor,
            config.seed,
            reference,
        )?
        .with_baselines(baselines)?;
        predicted_drop(&problem, &objective, &mut notes)?;
        Ok(Session {
            config,
            evaluator,
            space,
            profile,
            cost_model,
            table,
            objective,
            problem,
            fingerprints,
            notes,
            forward_seconds,
        })
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
    notes: &mut Vec<String>,
) -> Vec<Point> {
    let cached = CachingEvaluator::new(evaluator, store);
    let mut points = Vec::new();
    for (label, _, a) in space.baselines() {
        match space.point(&a) {
            Ok(p) => points.push(p),
            Err(_) => {
                if let Err(e) = cached.evaluate(&a) {
                    notes.push(format!("baseline {label} could not be evaluated: {e}"));
                }
            }
        }
    }
    points
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

/// The fitted predictor: from the store's record of this (evaluator, space, pairs) if there is one,
/// else by running the analysis — its one-at-a-time measurements through the evaluation cache — and
/// storing the result.
fn sensitivity(
    ev: &Arc<CandleEvaluator>,
    space: &SearchSpace,
    config: &RunConfig,
    store: &dyn Store,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<Predictor> {
    let pairs = pick_pairs(space, config.pairs, config.seed);
    let key = sensitivity_key(&ev.fingerprint(), space, &pairs);
    let record = match store.sensitivity(&key)? {
        Some(r) => {
            notes.push(format!(
                "sensitivity model reused from the store ({} one-at-a-time measurements)",
                r.measurements.len()
            ));
            r
        }
        None => {
            let measurer = CachingEvaluator::new(ev.as_ref(), store);
            let an = analysis::analyse(ev, &measurer, space, &pairs, &mut |p, d, t| {
                let phase = match p {
                    analysis::Phase::CheapErrors => SetupPhase::CheapErrors,
                    analysis::Phase::Measurements => SetupPhase::Measurements,
                };
                progress(phase, d, t)
            })?;
            let r = SensitivityRecord {
                schema: SCHEMA_VERSION,
                errors: an.errors,
                measurements: an.measurements,
            };
            store.put_sensitivity(&key, &r)?;
            r
        }
    };
    Ok(Predictor::fit(&record.errors, &record.measurements)?.with_measured(&record.measurements))
}
