//! The plain data of a report, built from a run's stored trials before anything is drawn: every
//! evaluated point (on the front, dominated, or outside the run's limits), the front with each
//! point's per-layer allocation and its held-out quality, the search-vs-held-out gap, the baselines,
//! the hypervolume after each trial of every comparable run, the sensitivity model's
//! predicted-vs-measured pairs, and the run's measured end-to-end latencies against the predicted ones
//! (per batch size, from `mpsearch measure`).
//!
//! Nothing here evaluates a model: qualities come from the trial journal and the evaluation cache
//! (held-out ones too: a front point the cache has no held-out evaluation for is shown without one,
//! and a note says so), layers from the model's safetensors header, costs from the journal or — under
//! another hardware profile — from the cost model ([`load`] with `profile`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cost::{Cost, CostModel, CostTable, Objective};
use crate::data::SplitSizes;
use crate::error::{Error, Result};
use crate::model::{ModelKind, ModelSource};
use crate::sensitivity::{pick_pairs, rank::spearman, Pairs, Predictor};
use crate::space::{Assignment, AssignmentJson, Choice, LayerInfo, SearchSpace};
use crate::store::{
    self, find_run, live_status, sensitivity_key, Fidelity, HeldOut, HeldOutGap, MeasuredSetting,
    MeasuredSource, MeasurementRecord, RunManifest, Store, TrialRecord, TrialState, COST_REFERENCE,
};

/// Everything a report shows.
#[derive(Clone, Debug, Serialize)]
pub struct ReportData {
    pub run: String,
    /// The run's status as listed (`complete`, `interrupted`, …).
    pub status: String,
    pub model: String,
    pub space: String,
    pub strategy: String,
    /// The hardware profile the costs are under.
    pub profile: String,
    /// The run's own profile, when the costs were recomputed under another one.
    pub recosted_from: Option<String>,
    pub objective: Objective,
    pub quality: QualityMeasure,
    pub limits: Limits,
    /// Trials journaled (any state) and failed.
    pub trials: usize,
    pub failed: usize,
    /// Every complete trial with a quality, in trial order.
    pub points: Vec<PlotPoint>,
    /// The front, sorted by cost; `number` 1, 2, … is how plots and tables refer to a point.
    pub front: Vec<FrontPoint>,
    /// The front's qualities on the held-out split against the search split.
    pub held_out: HeldOutSummary,
    /// Names of the model's compressible layers, in model order (the rows of the allocation chart).
    pub layers: Vec<String>,
    pub baselines: Vec<Baseline>,
    /// One series per comparable run of the store (this run first).
    pub hypervolume: Vec<HypervolumeSeries>,
    /// The run's model evaluations by what they were for.
    pub evaluations: store::EvaluationCounts,
    /// How its proxy evaluations went (`--fidelity`; `None` without).
    pub proxy: Option<store::ProxySummary>,
    pub sensitivity: Option<SensitivityFit>,
    /// Measured against predicted latency, one panel per setting (host, batch); empty when the run
    /// has no measurements.
    pub latency: Vec<LatencyPanel>,
    /// Every recovered variant of the run (`mpsearch recover`), by trial then key.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<store::RecoveredRecord>,
    /// What the reader should know (a baseline missing from the cache, a file changed since the run…).
    pub notes: Vec<String>,
}

/// The quality objective: its metric name and how to say it.
#[derive(Clone, Debug, Serialize)]
pub struct QualityMeasure {
    /// `kl_divergence` or `cosine_distance`.
    pub name: String,
    /// For axis titles, e.g. "KL divergence to the f32 model (nats)".
    pub label: String,
    /// The second metric tables show: `accuracy` or `mean_cosine`.
    pub secondary: String,
}

/// The run's limits, in the units of the journal.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Limits {
    pub max_latency_us: Option<f64>,
    pub max_bytes: Option<f64>,
    pub max_bops: Option<f64>,
    pub max_drop: Option<f64>,
}

impl Limits {
    /// The limit on cost objective `o`, if any.
    pub fn on(&self, o: Objective) -> Option<f64> {
        match o {
            Objective::Latency => self.max_latency_us,
            Objective::Size => self.max_bytes,
            Objective::Bops => self.max_bops,
        }
    }
}

/// Where an evaluated point stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointStatus {
    /// On the front, with its number (1-based, by cost).
    Front(usize),
    /// Within the limits, but another point is as cheap and better, or cheaper and as good.
    Dominated,
    /// Outside one of the run's limits.
    Infeasible,
}

/// One evaluated trial.
#[derive(Clone, Debug, Serialize)]
pub struct PlotPoint {
    pub trial: u64,
    pub quality: f64,
    pub cost: Cost,
    pub status: PointStatus,
}

/// One point of the front.
#[derive(Clone, Debug, Serialize)]
pub struct FrontPoint {
    /// 1, 2, … by cost.
    pub number: usize,
    pub trial: u64,
    /// Quality on the search split (what the front was chosen on).
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Quality and metrics on the held-out split, when the evaluation cache holds them.
    pub held_out: Option<HeldOut>,
    pub cost: Cost,
    pub hash: String,
    /// One choice per entry of [`ReportData::layers`].
    pub choices: Vec<Choice>,
    /// Its best recovered variant (`mpsearch recover`: same assignment and cost, fine-tuned
    /// weights), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<RecoveredPoint>,
}

/// A front point's recovered variant, for the plot's before → after arrow and the table.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveredPoint {
    /// The variant's content key (hex).
    pub key: String,
    /// `complete` or `interrupted`.
    pub state: String,
    /// Quality and metrics on the search split.
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    /// Quality and metrics on the held-out split.
    pub held_out_quality: Option<f64>,
    pub held_out_metrics: BTreeMap<String, f64>,
}

/// How the front's held-out qualities compare with its search qualities.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HeldOutSummary {
    /// Samples in each split of the evaluation data (`None` for runs recorded before the splits).
    pub splits: Option<SplitSizes>,
    /// Front points without a held-out evaluation in the store.
    pub missing: usize,
    /// The gap over the front points that have one (`None` if none has).
    pub gap: Option<HeldOutGap>,
}

/// A uniform reference assignment (all-f32, all-int8, …) with its cached quality.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub label: String,
    pub choice: Choice,
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
    pub cost: Cost,
}

/// The normalised hypervolume of a run's front after each of its trials.
#[derive(Clone, Debug, Serialize)]
pub struct HypervolumeSeries {
    pub run: String,
    pub strategy: String,
    /// Whether this is the reported run.
    pub current: bool,
    /// `values[i]`: after the first `i + 1` trials.
    pub values: Vec<f64>,
    /// `evaluations[i]`: model evaluations computed when trial `i` had finished, set-up and baselines
    /// included, a proxy counted as its share ([`store::evaluations_at_each_trial`]).
    pub evaluations: Vec<f64>,
    /// Whether the run counted its set-up's evaluations (runs recorded before: trials only).
    pub counted: bool,
}

impl HypervolumeSeries {
    /// The series of run `manifest` with `trials`.
    pub fn of(manifest: &RunManifest, trials: &[TrialRecord], current: bool) -> HypervolumeSeries {
        HypervolumeSeries {
            run: manifest.name.clone(),
            strategy: manifest.config.strategy.to_string(),
            current,
            values: hypervolume_history(manifest, trials),
            evaluations: store::evaluations_at_each_trial(manifest, trials),
            counted: manifest.evaluations.is_some(),
        }
    }

    /// The evaluations (set-up included) after which the front first reached `share` of its final
    /// hypervolume; `None` before any feasible point.
    pub fn evaluations_to(&self, share: f64) -> Option<f64> {
        let last = *self.values.last()?;
        if last <= 0.0 {
            return None;
        }
        let i = self.values.iter().position(|&v| v >= share * last)?;
        self.evaluations.get(i).copied()
    }
}

/// How well the sensitivity model predicted the measured qualities of the run's trials.
#[derive(Clone, Debug, Serialize)]
pub struct SensitivityFit {
    pub pairs: Vec<SensitivityPair>,
    /// Spearman's ρ between predicted and measured (`None` with fewer than 2 distinct values).
    pub spearman: Option<f64>,
    /// One-at-a-time measurements the model was fitted to.
    pub measurements: usize,
}

/// One trial's predicted and measured quality.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SensitivityPair {
    pub trial: u64,
    pub predicted: f64,
    pub measured: f64,
}

/// A run's latencies measured on one machine at one batch size, against the predicted ones.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyPanel {
    pub setting: MeasuredSetting,
    /// The hardware profile of the predictions.
    pub profile: String,
    pub fidelity: Option<Fidelity>,
    /// The latest measurement of each assignment, in the order measured.
    pub points: Vec<LatencyPoint>,
}

/// One measured assignment.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyPoint {
    /// `all-f32`, `point 3 (trial 17)`, `trial 12`, `random 4 (seed 0)`.
    pub label: String,
    pub trial: Option<u64>,
    /// Its number on this report's front.
    pub point: Option<usize>,
    /// The all-f32 reference.
    pub reference: bool,
    pub predicted_us: f64,
    pub measured_us: f64,
    /// Interquartile range of the measured passes (of the round with the lowest median).
    pub spread_us: f64,
    /// The all-f32 model's measured latency over this one's.
    pub speedup: f64,
}

// ---------------------------------------------------------------------------------------------------
// Pure parts: from trials to report data.

/// The quality measure of a model kind.
pub fn quality_measure(kind: ModelKind) -> QualityMeasure {
    match kind {
        ModelKind::Classifier => QualityMeasure {
            name: "kl_divergence".into(),
            label: "KL divergence to the f32 model (nats)".into(),
            secondary: "accuracy".into(),
        },
        ModelKind::Encoder => QualityMeasure {
            name: "cosine_distance".into(),
            label: "cosine distance to the f32 embeddings".into(),
            secondary: "mean_cosine".into(),
        },
        ModelKind::LanguageModel => QualityMeasure {
            name: "kl_divergence".into(),
            label: "mean per-token KL divergence to the base model (nats)".into(),
            secondary: "perplexity".into(),
        },
    }
}

/// The assignment a trial journaled, over `layers`: a listed layer takes its choice, the others the
/// default (f32 without one). Needs no search space, so a report survives a changed space file.
pub fn decode(json: &AssignmentJson, layers: &[LayerInfo]) -> Result<Assignment> {
    json.over(layers)
}

/// The trials with their costs recomputed by `model` (every other field unchanged).
pub fn recost(
    trials: &[TrialRecord],
    layers: &[LayerInfo],
    model: &CostModel,
) -> Result<Vec<TrialRecord>> {
    trials
        .iter()
        .map(|t| {
            let a = decode(&t.assignment, layers)?;
            let (_, c) = model.assignment(layers, &a);
            Ok(TrialRecord {
                cost: c.into(),
                ..t.clone()
            })
        })
        .collect()
}

/// Every evaluated point of `trials` with its status, and the front (sorted by cost, numbered from 1).
pub fn classify(
    manifest: &RunManifest,
    trials: &[TrialRecord],
    layers: &[LayerInfo],
) -> Result<(Vec<PlotPoint>, Vec<FrontPoint>)> {
    let front = store::front(&manifest.config, trials);
    let number: BTreeMap<u64, usize> = front
        .iter()
        .enumerate()
        .map(|(i, t)| (t.number, i + 1))
        .collect();
    let points = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| {
            let quality = t.quality?;
            let status = match number.get(&t.number) {
                Some(&n) => PointStatus::Front(n),
                None if store::feasible(&manifest.config, t) => PointStatus::Dominated,
                None => PointStatus::Infeasible,
            };
            Some(PlotPoint {
                trial: t.number,
                quality,
                cost: t.cost.into(),
                status,
            })
        })
        .collect();
    let front = front
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let a = decode(&t.assignment, layers)?;
            Ok(FrontPoint {
                number: i + 1,
                trial: t.number,
                quality: t.quality.unwrap_or(f64::NAN),
                metrics: t.metrics.clone(),
                held_out: None,
                cost: t.cost.into(),
                hash: t.hash.clone(),
                choices: layers
                    .iter()
                    .map(|l| a.get(&l.name).copied().unwrap_or(Choice::F32))
                    .collect(),
                recovered: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((points, front))
}

/// The normalised hypervolume of the run's front after each trial (the value
/// [`store::hypervolume`] gives for the trials up to it): non-decreasing, since a trial only adds
/// a point.
pub fn hypervolume_history(manifest: &RunManifest, trials: &[TrialRecord]) -> Vec<f64> {
    let o = manifest.config.objective;
    let [rc, rq] = manifest.reference;
    let mut front: Vec<[f64; 2]> = Vec::new();
    let mut hv = 0.0;
    let mut out = Vec::with_capacity(trials.len());
    for t in trials {
        if store::feasible(&manifest.config, t) {
            let p = [
                store::cost_of(o, t) / rc,
                t.quality.unwrap_or(f64::INFINITY) / rq,
            ];
            if !front.iter().any(|q| q[0] <= p[0] && q[1] <= p[1]) {
                front.retain(|q| !(p[0] <= q[0] && p[1] <= q[1]));
                front.push(p);
                hv = crate::pareto::hypervolume_2d(&front, [1.0, 1.0]);
            }
        }
        out.push(hv);
    }
    out
}

/// Whether run `b`'s hypervolume can be drawn against run `a`'s: the same model, evaluator, space
/// and profile, objective, limits and batch (so the same reference and the same units).
pub fn comparable(a: &RunManifest, b: &RunManifest) -> bool {
    let (x, y) = (&a.config, &b.config);
    a.fingerprints == b.fingerprints
        && x.objective == y.objective
        && x.batch == y.batch
        && x.max_latency_us == y.max_latency_us
        && x.max_bytes == y.max_bytes
        && x.max_bops == y.max_bops
        && x.max_drop == y.max_drop
}

/// The predicted and measured quality of every evaluated trial, with their rank correlation.
pub fn sensitivity_fit(
    predictor: &Predictor,
    trials: &[TrialRecord],
    measurements: usize,
) -> SensitivityFit {
    let groups = predictor.table().len();
    let pairs: Vec<SensitivityPair> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.point.len() == groups)
        .filter_map(|t| {
            Some(SensitivityPair {
                trial: t.number,
                predicted: predictor.predict(&t.point),
                measured: t.quality.filter(|q| q.is_finite())?,
            })
        })
        .collect();
    let (p, m): (Vec<f64>, Vec<f64>) = pairs.iter().map(|x| (x.predicted, x.measured)).unzip();
    SensitivityFit {
        spearman: spearman(&p, &m).ok(),
        pairs,
        measurements,
    }
}

/// The latency panels of a run's `measurements` (see [`crate::store::latest_measurements`]): the
/// latest measurement of each assignment per setting, labelled with its number on `front`. The
/// predictions are the recorded ones, or recomputed under `repredict` (a report re-costed under
/// another profile) at the batch each was measured at.
pub fn latency_panels(
    measurements: &[MeasurementRecord],
    front: &[FrontPoint],
    layers: &[LayerInfo],
    repredict: Option<&crate::cost::HardwareProfile>,
) -> Result<Vec<LatencyPanel>> {
    let mut models: BTreeMap<u32, CostModel> = BTreeMap::new();
    let mut panels = Vec::new();
    for (setting, ms) in store::latest_measurements(measurements) {
        // The all-f32 model is the reference even where a later trial of the same assignment
        // (the all-f32 baseline) replaced its record.
        let reference: std::collections::BTreeSet<&str> = measurements
            .iter()
            .filter(|m| {
                m.source == MeasuredSource::Reference && store::MeasuredSetting::of(m) == setting
            })
            .map(|m| m.hash.as_str())
            .collect();
        let mut points = Vec::with_capacity(ms.len());
        for m in &ms {
            let predicted_us = match repredict {
                Some(p) => {
                    let model = match models.entry(m.cost_batch) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(CostModel::new(p.clone(), m.cost_batch)?.for_model(layers))
                        }
                    };
                    model
                        .assignment(layers, &decode(&m.assignment, layers)?)
                        .1
                        .latency_us
                }
                None => m.predicted_us,
            };
            let trial = match m.source {
                MeasuredSource::Trial { trial, .. } => Some(trial),
                _ => None,
            };
            let point = trial.and_then(|n| front.iter().find(|f| f.trial == n).map(|f| f.number));
            let label = match (&m.source, point) {
                (MeasuredSource::Trial { trial, .. }, Some(k)) => {
                    format!("point {k} (trial {trial})")
                }
                (MeasuredSource::Trial { trial, .. }, None) => format!("trial {trial}"),
                (other, _) => other.to_string(),
            };
            points.push(LatencyPoint {
                label,
                trial,
                point,
                reference: reference.contains(m.hash.as_str()),
                predicted_us,
                measured_us: m.figure_us(),
                spread_us: m.spread_us,
                speedup: m.speedup(),
            });
        }
        let pairs: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.predicted_us, p.measured_us))
            .collect();
        let profile = match repredict {
            Some(p) => p.name().to_string(),
            None => ms
                .iter()
                .max_by_key(|m| m.number)
                .map_or_else(String::new, |m| m.profile.clone()),
        };
        panels.push(LatencyPanel {
            fidelity: store::fidelity(&pairs),
            setting,
            profile,
            points,
        });
    }
    Ok(panels)
}

// ---------------------------------------------------------------------------------------------------
// Loading: the run, its trials and the cache from a store.

/// How the costs of a report are computed.
struct Costing {
    model: CostModel,
    /// Whether the costs are recomputed (another profile than the run's).
    recost: bool,
}

/// Builds the report data of run `run` in `store`; with `profile` (a path or shipped name other than
/// the run's), every cost is recomputed under that profile from the journaled assignments — qualities
/// come from the journal and the cache, so not a single evaluation is run.
pub fn load(store: &dyn Store, run: &str, profile: Option<&str>) -> Result<ReportData> {
    let mut manifest = find_run(store, run)?;
    let config = manifest.config.clone();
    let inventory = crate::model::inventory(&ModelSource::parse(&config.model)).map_err(|e| {
        Error::report(format!(
            "run `{run}` needs its model's layer shapes ({}): {e}. Restore the model at that path \
             to report this run.",
            config.model
        ))
    })?;
    let layers = inventory.layers.clone();
    let mut notes = Vec::new();
    let space = matching_space(&manifest, &layers, &mut notes);
    let costing = costing(&manifest, profile, &layers, &mut notes)?;
    let mut trials = store.trials(run)?;
    if costing.recost {
        trials = recost(&trials, &layers, &costing.model)?;
        manifest.reference[0] = recosted_reference(&manifest, &costing.model, space.as_ref())?;
    }
    let (points, mut front) = classify(&manifest, &trials, &layers)?;
    let held_out = held_out(store, &manifest, &trials, &mut front, &mut notes)?;
    let recovered = store.recovered(run)?;
    add_recovered(&recovered, &mut front);
    let hypervolume = hypervolume_series(store, &manifest, &trials, &layers, &costing)?;
    let baselines = match &space {
        Some(s) => baselines(store, &manifest, s, &layers, &costing.model, &mut notes)?,
        None => Vec::new(),
    };
    let sensitivity = match &space {
        Some(s) => sensitivity(store, &manifest, s, &trials, &mut notes)?,
        None => None,
    };
    let measurements = store.measurements(run)?;
    let repredict = costing.recost.then_some(&costing.model.profile);
    let latency = latency_panels(&measurements, &front, &layers, repredict)?;
    Ok(ReportData {
        run: manifest.name.clone(),
        status: live_status(&manifest, &store.controllers()?).to_string(),
        model: config.model.clone(),
        space: config.space.clone(),
        strategy: config.strategy.to_string(),
        profile: costing.model.profile.name().to_string(),
        recosted_from: costing.recost.then(|| config.profile.clone()),
        objective: config.objective,
        quality: quality_measure(inventory.kind),
        limits: Limits {
            max_latency_us: config.max_latency_us,
            max_bytes: config.max_bytes,
            max_bops: config.max_bops,
            max_drop: config.max_drop,
        },
        failed: trials
            .iter()
            .filter(|t| t.state == TrialState::Failed)
            .count(),
        trials: trials.len(),
        points,
        front,
        held_out,
        layers: layers.iter().map(|l| l.name.clone()).collect(),
        baselines,
        proxy: store::proxy_summary(&trials),
        hypervolume,
        evaluations: store::evaluations(&manifest, &trials),
        sensitivity,
        latency,
        recovered,
        notes,
    })
}

/// The run's search space if it still resolves to what the run searched (else a note, and `None`:
/// baselines and the sensitivity model need it).
fn matching_space(
    manifest: &RunManifest,
    layers: &[LayerInfo],
    notes: &mut Vec<String>,
) -> Option<SearchSpace> {
    let space = match crate::shipped::space(&manifest.config.space, layers) {
        Ok(s) => s,
        Err(e) => {
            notes.push(format!(
                "search space `{}` could not be loaded ({e}): baselines and the sensitivity plot are left out",
                manifest.config.space
            ));
            return None;
        }
    };
    if manifest.fingerprints.space != space.fingerprint().to_hex().as_str() {
        notes.push(format!(
            "search space `{}` changed since the run: baselines and the sensitivity plot are left out",
            manifest.config.space
        ));
        return None;
    }
    Some(space)
}

/// The cost model of the report: the run's own profile, or `profile` (recomputing every cost).
fn costing(
    manifest: &RunManifest,
    profile: Option<&str>,
    layers: &[LayerInfo],
    notes: &mut Vec<String>,
) -> Result<Costing> {
    let config = &manifest.config;
    let (name, recost) = match profile {
        Some(p) if p != config.profile => (p, true),
        _ => (config.profile.as_str(), false),
    };
    let hw = crate::shipped::profile(name)?;
    if recost {
        notes.push(format!(
            "costs recomputed under hardware profile `{}` from the journaled assignments (the run \
             searched under `{}`; qualities are the measured ones: no search-split evaluation was run)",
            hw.name(),
            config.profile
        ));
    } else {
        if manifest.fingerprints.profile != hw.fingerprint().to_hex().as_str() {
            notes.push(format!(
                "hardware profile `{name}` changed since the run: trial costs are as journaled, \
                 baseline costs under the current file"
            ));
        }
    }
    Ok(Costing {
        model: CostModel::new(hw, config.batch)?.for_model(layers),
        recost,
    })
}

/// The hypervolume cost reference under a recomputed profile: the run's limit on its objective, else
/// 1.1 × the dearest reachable cost under the new profile (as a search under it would use).
fn recosted_reference(
    manifest: &RunManifest,
    model: &CostModel,
    space: Option<&SearchSpace>,
) -> Result<f64> {
    let o = manifest.config.objective;
    let c = &manifest.config;
    let limit = match o {
        Objective::Latency => c.max_latency_us,
        Objective::Size => c.max_bytes,
        Objective::Bops => c.max_bops,
    };
    if let Some(l) = limit {
        return Ok(l);
    }
    let space = space.ok_or_else(|| {
        Error::report(format!(
            "run `{}`: re-costing needs the run's search space `{}` as it was (for the hypervolume \
             reference); restore it, or report under the run's own profile",
            manifest.name, c.space
        ))
    })?;
    Ok(CostTable::new(model, space).feasibility(o).max * COST_REFERENCE)
}

/// The hypervolume history of the run and of every comparable run in the store (this run first).
fn hypervolume_series(
    store: &dyn Store,
    manifest: &RunManifest,
    trials: &[TrialRecord],
    layers: &[LayerInfo],
    costing: &Costing,
) -> Result<Vec<HypervolumeSeries>> {
    let mut out = vec![HypervolumeSeries::of(manifest, trials, true)];
    for other in store.runs()? {
        if other.name == manifest.name || !comparable(manifest, &other) {
            continue;
        }
        let mut theirs = store.trials(&other.name)?;
        if costing.recost {
            theirs = recost(&theirs, layers, &costing.model)?;
        }
        let m = RunManifest {
            reference: manifest.reference,
            ..other
        };
        out.push(HypervolumeSeries::of(&m, &theirs, false));
    }
    Ok(out)
}

/// Gives each front point its best recovered variant (lowest held-out quality, else search quality;
/// complete ones first).
fn add_recovered(recovered: &[store::RecoveredRecord], front: &mut [FrontPoint]) {
    let rank = |r: &store::RecoveredRecord| {
        (
            r.state != store::RecoveredState::Complete,
            r.held_out_quality.unwrap_or(r.quality),
        )
    };
    for f in front.iter_mut() {
        f.recovered = recovered
            .iter()
            .filter(|r| r.trial == f.trial)
            .min_by(|a, b| {
                rank(a)
                    .partial_cmp(&rank(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map(|r| RecoveredPoint {
                key: r.key.clone(),
                state: r.state.to_string(),
                quality: r.quality,
                metrics: r.metrics.clone(),
                held_out_quality: r.held_out_quality,
                held_out_metrics: r.held_out_metrics.clone(),
            });
    }
}

/// Fills in each front point's held-out evaluation from the evaluation cache, and sums up the gap; a
/// note says how many points have none (the evaluation cache is read, nothing is evaluated).
fn held_out(
    store: &dyn Store,
    manifest: &RunManifest,
    trials: &[TrialRecord],
    front: &mut [FrontPoint],
    notes: &mut Vec<String>,
) -> Result<HeldOutSummary> {
    let records: Vec<&TrialRecord> = front
        .iter()
        .filter_map(|f| trials.iter().find(|t| t.number == f.trial))
        .collect();
    let (held, gap) = store::front_held_out(store, manifest, &records)?;
    for (f, h) in front.iter_mut().zip(held) {
        f.held_out = h;
    }
    let missing = front.iter().filter(|f| f.held_out.is_none()).count();
    if missing > 0 {
        notes.push(format!(
            "{missing} of {} front points have no held-out quality in the store (`mpsearch report {}` \
             evaluates them when the run's model and data are at hand); the gap is over the others",
            front.len(),
            manifest.name
        ));
    }
    Ok(HeldOutSummary {
        splits: manifest.splits,
        missing,
        gap,
    })
}

/// The evaluator fingerprint of a run, from its manifest.
fn evaluator_fingerprint(manifest: &RunManifest) -> Result<blake3::Hash> {
    blake3::Hash::from_hex(&manifest.fingerprints.evaluator).map_err(|e| {
        Error::report(format!(
            "run `{}`: its manifest has no valid evaluator fingerprint ({e})",
            manifest.name
        ))
    })
}

/// The space's baselines whose quality the evaluation cache holds (set-up caches them); a missing one
/// is left out with a note, never evaluated.
fn baselines(
    store: &dyn Store,
    manifest: &RunManifest,
    space: &SearchSpace,
    layers: &[LayerInfo],
    model: &CostModel,
    notes: &mut Vec<String>,
) -> Result<Vec<Baseline>> {
    let fp = evaluator_fingerprint(manifest)?;
    let mut out = Vec::new();
    for (label, choice, a) in space.baselines() {
        match store.cached(&crate::eval::evaluation_key(&fp, &a))? {
            Some(e) => out.push(Baseline {
                label,
                choice,
                quality: e.quality,
                metrics: e.metrics,
                cost: model.assignment(layers, &a).1,
            }),
            None => notes.push(format!(
                "baseline {label} is not in the evaluation cache (it was not evaluated when the run \
                 was set up): left out"
            )),
        }
    }
    Ok(out)
}

/// The sensitivity model of the run, from the store, against the run's measured trials.
fn sensitivity(
    store: &dyn Store,
    manifest: &RunManifest,
    space: &SearchSpace,
    trials: &[TrialRecord],
    notes: &mut Vec<String>,
) -> Result<Option<SensitivityFit>> {
    let c = &manifest.config;
    // The run's own record of where its analysis is; runs recorded before it was kept had a fixed
    // number of pairs, from which the key follows.
    let key = match (&manifest.setup, c.pairs) {
        (Some(s), _) => blake3::Hash::from_hex(&s.key).ok(),
        (None, Pairs::Fixed(n)) => Some(sensitivity_key(
            &evaluator_fingerprint(manifest)?,
            space,
            &pick_pairs(space, n, c.seed),
        )),
        (None, Pairs::Auto) => None,
    };
    let Some(rec) = key.map(|k| store.sensitivity(&k)).transpose()?.flatten() else {
        notes
            .push("the run's sensitivity analysis is not in the store: no sensitivity plot".into());
        return Ok(None);
    };
    let predictor = match Predictor::fit(&rec.errors, &rec.measurements) {
        Ok(p) => p.with_measured(&rec.measurements),
        Err(e) => {
            notes.push(format!("the sensitivity model could not be rebuilt: {e}"));
            return Ok(None);
        }
    };
    Ok(Some(sensitivity_fit(
        &predictor,
        trials,
        rec.measurements.len(),
    )))
}
