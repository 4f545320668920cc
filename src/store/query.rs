//! # Run queries
//!
//! What the stored records of a run say, computed from the store alone — no model, no evaluator, no
//! search controller: the run of a name, a name for a new run, the measured front of a run's trials and
//! its hypervolume, a trial's held-out evaluation (from the evaluation cache) and the front's
//! search-vs-held-out gap, a run's status as listed, the store key of a sensitivity analysis, and
//! what a run's latency measurements say (predicted against measured, per setting).
//! `runs`, `trials`, reports and exports read runs through these, and the search controller writes
//! runs that they describe.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cost::Objective;
use crate::error::{Error, Result};
use crate::eval::{evaluation_key_on, EvalSplit};
use crate::pareto;
use crate::space::SearchSpace;

use super::{
    Controller, EvalCount, MeasuredSource, MeasurementRecord, RunConfig, RunManifest, RunStatus,
    Store, TrialRecord, TrialState,
};

/// Quality reference of the hypervolume when no `--max-drop` is given, in the objective's units: a KL
/// divergence of 0.1 nat (the demo loses about 4 points of accuracy there) or a cosine distance of 0.1
/// (embeddings at cosine 0.9 to the originals). Points worse than this add nothing to the hypervolume:
/// it measures the region where a compressed model is still worth shipping. Both axes are normalised
/// by their reference, so hypervolumes lie in [0, 1].
pub const QUALITY_REFERENCE: f64 = 0.1;
/// Cost reference of the hypervolume, as a multiple of the dearest reachable cost (so that the
/// uncompressed model, the dearest point, still counts).
pub const COST_REFERENCE: f64 = 1.1;

/// The stored run `name`, or an error listing the runs there are.
pub fn find_run(store: &dyn Store, name: &str) -> Result<RunManifest> {
    if let Some(m) = store.run(name)? {
        return Ok(m);
    }
    let names: Vec<String> = store.runs()?.into_iter().map(|m| m.name).collect();
    Err(Error::store(
        store.location(),
        if names.is_empty() {
            format!("has no run `{name}` (it holds no runs yet; start one with `mpsearch search`)")
        } else {
            format!("has no run `{name}`; its runs are: {}", names.join(", "))
        },
    ))
}

/// A name for a new run: `<space>-<profile>-<n>` with the first free n.
pub fn default_run_name(store: &dyn Store, space: &str, profile: &str) -> Result<String> {
    let clean = |s: &str| -> String {
        let stem = std::path::Path::new(s)
            .file_stem()
            .map_or(s.to_string(), |x| x.to_string_lossy().into_owned());
        stem.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let base = format!("{}-{}", clean(space), clean(profile));
    let taken: std::collections::HashSet<String> =
        store.runs()?.into_iter().map(|m| m.name).collect();
    Ok((1..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(base))
}

/// The measured front of a run's trials: complete trials within the run's limits that no other such
/// trial dominates in (cost, quality), sorted by cost. Needs no model: `runs` and reports use it.
pub fn front<'a>(config: &RunConfig, trials: &'a [TrialRecord]) -> Vec<&'a TrialRecord> {
    let o = config.objective;
    let ok: Vec<&TrialRecord> = trials.iter().filter(|t| feasible(config, t)).collect();
    let pts: Vec<[f64; 2]> = ok
        .iter()
        .map(|t| [cost_of(o, t), t.quality.unwrap_or(f64::INFINITY)])
        .collect();
    let mut f: Vec<&TrialRecord> = pareto::front_2d(&pts).into_iter().map(|i| ok[i]).collect();
    f.sort_by(|a, b| {
        cost_of(o, a)
            .total_cmp(&cost_of(o, b))
            .then(a.number.cmp(&b.number))
    });
    f
}

/// Whether a trial can be on a run's front: complete, with a quality, and within every limit of the
/// run (costs as journaled in the trial).
pub fn feasible(config: &RunConfig, t: &TrialRecord) -> bool {
    let c = &t.cost;
    t.state == TrialState::Complete
        && t.quality.is_some()
        && config.max_latency_us.is_none_or(|m| c.latency_us <= m)
        && config.max_bytes.is_none_or(|m| c.bytes as f64 <= m)
        && config.max_bops.is_none_or(|m| c.bops <= m)
        && t.quality.zip(config.max_drop).is_none_or(|(q, m)| q <= m)
}

/// The normalised hypervolume of a run's measured front (as the progress bar shows it): the area the
/// front dominates in (cost / reference cost, quality / reference quality), between 0 and 1.
pub fn hypervolume(manifest: &RunManifest, trials: &[TrialRecord]) -> f64 {
    let o = manifest.config.objective;
    let [rc, rq] = manifest.reference;
    let pts: Vec<[f64; 2]> = front(&manifest.config, trials)
        .iter()
        .map(|t| [cost_of(o, t) / rc, t.quality.unwrap_or(f64::INFINITY) / rq])
        .collect();
    pareto::hypervolume_2d(&pts, [1.0, 1.0])
}

/// A run's model evaluations by what they were for (see [`evaluations`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct EvaluationCounts {
    /// The set-up's one-at-a-time measurements.
    pub setup: EvalCount,
    /// The space's uniform baselines: those run as the first trials and those evaluated for the
    /// report's reference lines only.
    pub baselines: EvalCount,
    /// The strategy's trials (complete or failed with a quality).
    pub trials: EvalCount,
    /// Front points evaluated on the held-out split.
    pub held_out: EvalCount,
    /// Trials' proxy evaluations (`--fidelity`), each on a share of the search split.
    pub proxy: EvalCount,
    /// Evaluations computed in all, proxies included (the cache's answers are free and not counted
    /// here).
    pub total: u64,
    /// The same in full evaluations: a proxy counts as its share of the search split (what the
    /// evaluations cost, in units of one full evaluation).
    pub full_equivalent: f64,
    /// Whether the run counted its evaluations outside the trials (runs recorded before they were
    /// counted show their trials only).
    pub complete: bool,
}

/// The evaluations run `manifest` spent, from its manifest and its `trials`.
pub fn evaluations(manifest: &RunManifest, trials: &[TrialRecord]) -> EvaluationCounts {
    let outside = manifest.evaluations.unwrap_or_default();
    let mut c = EvaluationCounts {
        setup: outside.setup,
        baselines: outside.baselines,
        held_out: outside.held_out,
        complete: manifest.evaluations.is_some(),
        ..EvaluationCounts::default()
    };
    let mut proxy_cost = 0.0;
    for t in trials {
        if let Some(p) = &t.proxy {
            c.proxy.add(EvalCount {
                evaluated: u64::from(!p.cached),
                cached: u64::from(p.cached),
            });
            proxy_cost += proxy_cost_of(t);
        }
        let Some(count) = trial_evaluation(t) else {
            continue;
        };
        if t.strategy == crate::strategy::BASELINE {
            c.baselines.add(count);
        } else {
            c.trials.add(count);
        }
    }
    let full =
        c.setup.evaluated + c.baselines.evaluated + c.trials.evaluated + c.held_out.evaluated;
    c.total = full + c.proxy.evaluated;
    c.full_equivalent = full as f64 + proxy_cost;
    c
}

/// What a trial's proxy evaluation cost, in full evaluations: its share of the search split when it
/// was computed, 0 when the cache answered or there was none.
fn proxy_cost_of(t: &TrialRecord) -> f64 {
    t.proxy
        .as_ref()
        .filter(|p| !p.cached)
        .map_or(0.0, |p| p.share)
}

/// What a finished trial cost: one evaluation, computed or from the cache (`None` while it runs, or
/// when it failed before its model ran).
fn trial_evaluation(t: &TrialRecord) -> Option<EvalCount> {
    let ran = t.state == TrialState::Complete || (t.state == TrialState::Failed && t.seconds > 0.0);
    ran.then_some(EvalCount {
        evaluated: u64::from(!t.cached),
        cached: u64::from(t.cached),
    })
}

/// The evaluations computed when each of `trials` had finished, set-up and baselines included, in
/// full evaluations (a proxy counts as its share of the search split): the x axis of the hypervolume
/// against evaluations. Held-out evaluations come after the search and are not included.
pub fn evaluations_at_each_trial(manifest: &RunManifest, trials: &[TrialRecord]) -> Vec<f64> {
    let outside = manifest.evaluations.unwrap_or_default();
    let mut n = (outside.setup.evaluated + outside.baselines.evaluated) as f64;
    trials
        .iter()
        .map(|t| {
            n += trial_evaluation(t).map_or(0, |c| c.evaluated) as f64 + proxy_cost_of(t);
            n
        })
        .collect()
}

/// How a run's proxy evaluations (`--fidelity`) went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProxySummary {
    /// Search samples a proxy takes, and their share of the split.
    pub samples: u32,
    pub share: f64,
    /// Trials evaluated on the proxy, then in full (promoted), and on the proxy only (pruned).
    pub proxies: u64,
    pub promoted: u64,
    pub pruned: u64,
    /// Spearman's ρ between proxy and full quality over the promoted trials (`None` with fewer than
    /// two, or constant qualities).
    pub spearman: Option<f64>,
}

/// (proxy, full) quality of every trial evaluated both ways.
pub fn proxy_and_full(trials: &[TrialRecord]) -> impl Iterator<Item = (f64, f64)> + '_ {
    trials.iter().filter_map(|t| {
        let p = t.proxy.as_ref()?;
        (t.state == TrialState::Complete).then_some((p.quality, t.quality?))
    })
}

/// The summary of `trials`' proxy evaluations; `None` when no trial had one.
pub fn proxy_summary(trials: &[TrialRecord]) -> Option<ProxySummary> {
    let first = trials.iter().find_map(|t| t.proxy.as_ref())?;
    let both: Vec<(f64, f64)> = proxy_and_full(trials).collect();
    let (p, f): (Vec<f64>, Vec<f64>) = both.iter().copied().unzip();
    Some(ProxySummary {
        samples: first.samples,
        share: first.share,
        proxies: trials.iter().filter(|t| t.proxy.is_some()).count() as u64,
        promoted: both.len() as u64,
        pruned: trials
            .iter()
            .filter(|t| t.state == TrialState::Pruned)
            .count() as u64,
        spearman: crate::sensitivity::rank::spearman(&p, &f).ok(),
    })
}

/// The value of cost objective `o` in a trial's journaled cost.
pub fn cost_of(o: Objective, t: &TrialRecord) -> f64 {
    o.of(&t.cost.into())
}

/// A trial's quality and metrics on the held-out split.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldOut {
    pub quality: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// The evaluation-cache key of a trial's held-out evaluation, from the run's evaluator fingerprint
/// and the trial's assignment hash (`None` if either is not valid hex, as in a damaged record).
pub fn held_out_key(manifest: &RunManifest, trial: &TrialRecord) -> Option<blake3::Hash> {
    let fingerprint = blake3::Hash::from_hex(&manifest.fingerprints.evaluator).ok()?;
    let assignment = blake3::Hash::from_hex(&trial.hash).ok()?;
    Some(evaluation_key_on(
        &fingerprint,
        EvalSplit::HeldOut,
        &assignment,
    ))
}

/// A trial's evaluation on the held-out split, if the evaluation cache holds it (the end of a run,
/// `resume`, `report` and `export` evaluate front points there).
pub fn held_out(
    store: &dyn Store,
    manifest: &RunManifest,
    trial: &TrialRecord,
) -> Result<Option<HeldOut>> {
    let Some(key) = held_out_key(manifest, trial) else {
        return Ok(None);
    };
    Ok(store.cached(&key)?.map(|c| HeldOut {
        quality: c.quality,
        metrics: c.metrics,
    }))
}

/// How far a front's held-out qualities are from its search qualities: held-out − search, in the
/// objective's units, over the front points that have a held-out evaluation. Positive means the
/// search split flattered the point (selection on noise shows up as a positive mean).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HeldOutGap {
    /// Front points with a held-out quality (the gap is over these).
    pub points: usize,
    /// Front points without one.
    pub missing: usize,
    /// Mean of held-out − search quality.
    pub mean: f64,
    /// Largest held-out − search quality (the point the search split flattered most), and its trial.
    pub worst: f64,
    pub worst_trial: u64,
    /// Mean of held-out / search quality − 1 over the points whose search quality is above 0 (`None`
    /// if there is none): the gap relative to the quality.
    pub mean_relative: Option<f64>,
    /// Mean search and held-out quality over the same points.
    pub mean_search: f64,
    pub mean_held_out: f64,
}

/// The gap of front points given as `(trial, search quality, held-out quality)`; `None` when no point
/// has a held-out quality.
pub fn held_out_gap(points: &[(u64, f64, Option<f64>)]) -> Option<HeldOutGap> {
    let both: Vec<(u64, f64, f64)> = points
        .iter()
        .filter_map(|&(t, s, h)| Some((t, s, h?)))
        .collect();
    let n = both.len();
    if n == 0 {
        return None;
    }
    let (worst_trial, worst) =
        both.iter()
            .map(|&(t, s, h)| (t, h - s))
            .fold((both[0].0, f64::NEG_INFINITY), |best, x| {
                if x.1 > best.1 {
                    x
                } else {
                    best
                }
            });
    let relative: Vec<f64> = both
        .iter()
        .filter(|x| x.1 > 0.0)
        .map(|&(_, s, h)| h / s - 1.0)
        .collect();
    let mean = |f: fn(&(u64, f64, f64)) -> f64| both.iter().map(f).sum::<f64>() / n as f64;
    Some(HeldOutGap {
        points: n,
        missing: points.len() - n,
        mean: mean(|x| x.2 - x.1),
        worst,
        worst_trial,
        mean_relative: (!relative.is_empty())
            .then(|| relative.iter().sum::<f64>() / relative.len() as f64),
        mean_search: mean(|x| x.1),
        mean_held_out: mean(|x| x.2),
    })
}

/// The held-out evaluation of each of `front`'s trials (in order), and the front's gap.
pub fn front_held_out(
    store: &dyn Store,
    manifest: &RunManifest,
    front: &[&TrialRecord],
) -> Result<(Vec<Option<HeldOut>>, Option<HeldOutGap>)> {
    let held: Vec<Option<HeldOut>> = front
        .iter()
        .map(|t| held_out(store, manifest, t))
        .collect::<Result<_>>()?;
    let pairs: Vec<(u64, f64, Option<f64>)> = front
        .iter()
        .zip(&held)
        .map(|(t, h)| {
            (
                t.number,
                t.quality.unwrap_or(f64::NAN),
                h.as_ref().map(|h| h.quality),
            )
        })
        .collect();
    Ok((held, held_out_gap(&pairs)))
}

/// The normalised hypervolume (as [`hypervolume`]) of `front`'s points at their held-out qualities
/// `held` (in order): the front the search chose, judged on data it never saw. `None` unless every
/// point has one.
pub fn held_out_hypervolume(
    manifest: &RunManifest,
    front: &[&TrialRecord],
    held: &[Option<HeldOut>],
) -> Option<f64> {
    let o = manifest.config.objective;
    let [rc, rq] = manifest.reference;
    let pts: Vec<[f64; 2]> = front
        .iter()
        .zip(held)
        .map(|(t, h)| Some([cost_of(o, t) / rc, h.as_ref()?.quality / rq]))
        .collect::<Option<_>>()?;
    (!pts.is_empty()).then(|| pareto::hypervolume_2d(&pts, [1.0, 1.0]))
}

/// A run's status as listed when no process drives it: a run still marked `running` was left by a
/// process that died; it is resumable like an interrupted one.
pub fn listed_status(m: &RunManifest) -> RunStatus {
    match m.status {
        RunStatus::Running | RunStatus::SettingUp => RunStatus::Interrupted,
        s => s,
    }
}

/// A run's status as listed, knowing which runs are driven right now ([`Store::controllers`]):
/// `setting-up` or `running` only while a controller drives it, else as [`listed_status`] says.
pub fn live_status(m: &RunManifest, controllers: &[Controller]) -> RunStatus {
    match m.status {
        s @ (RunStatus::Running | RunStatus::SettingUp)
            if controllers.iter().any(|c| c.run == m.name) =>
        {
            s
        }
        _ => listed_status(m),
    }
}

/// Whether run `m` stopped (or is) in its set-up: its manifest says `setting-up`.
pub fn in_set_up(m: &RunManifest) -> bool {
    m.status == RunStatus::SettingUp
}

/// The store key of the sensitivity analysis of `space` measured at `pairs` by an evaluator with
/// `fingerprint` (computable without the model: reports read the analysis back with it).
pub fn sensitivity_key(
    fingerprint: &blake3::Hash,
    space: &SearchSpace,
    pairs: &[(usize, u16)],
) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-sensitivity-v1\n");
    h.update(fingerprint.as_bytes());
    h.update(space.fingerprint().as_bytes());
    for (g, c) in pairs {
        h.update(&(*g as u64).to_le_bytes());
        h.update(&c.to_le_bytes());
    }
    h.finalize()
}

/// Where and at what size latencies were measured: measurements are compared (and drawn) within one
/// setting only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct MeasuredSetting {
    pub host: String,
    /// Samples per forward pass.
    pub batch: u32,
    /// Tokens per sample of a sequence model.
    pub tokens: Option<u32>,
}

impl MeasuredSetting {
    /// The setting of `m`.
    pub fn of(m: &MeasurementRecord) -> MeasuredSetting {
        MeasuredSetting {
            host: m.host.clone(),
            batch: m.batch,
            tokens: m.tokens,
        }
    }
}

impl std::fmt::Display for MeasuredSetting {
    /// `batch 32 × 32 tokens on host-a`, `batch 1 on host-a`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch {}", self.batch)?;
        if let Some(t) = self.tokens {
            write!(f, " × {t} tokens")?;
        }
        write!(f, " on {}", self.host)
    }
}

/// A run's measurements by setting, keeping the latest of each assignment (by number) within a
/// setting, in number order.
pub fn latest_measurements(
    records: &[MeasurementRecord],
) -> BTreeMap<MeasuredSetting, Vec<&MeasurementRecord>> {
    let mut latest: BTreeMap<MeasuredSetting, BTreeMap<&str, &MeasurementRecord>> = BTreeMap::new();
    for m in records {
        let per = latest.entry(MeasuredSetting::of(m)).or_default();
        match per.get(m.hash.as_str()) {
            Some(old) if old.number > m.number => {}
            _ => {
                per.insert(m.hash.as_str(), m);
            }
        }
    }
    latest
        .into_iter()
        .map(|(s, per)| {
            let mut v: Vec<&MeasurementRecord> = per.into_values().collect();
            v.sort_by_key(|m| m.number);
            (s, v)
        })
        .collect()
}

/// How well predicted latencies match measured ones.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fidelity {
    /// Pairs compared.
    pub points: usize,
    /// Mean absolute percentage error of the predictions: mean of |predicted − measured| / measured,
    /// in percent.
    pub mape_percent: f64,
    /// Spearman's rank correlation between predicted and measured (`None` with fewer than 2 pairs
    /// or a constant side).
    pub spearman: Option<f64>,
}

/// The [`Fidelity`] of `(predicted, measured)` pairs; `None` without a pair of positive measured
/// latency.
pub fn fidelity(pairs: &[(f64, f64)]) -> Option<Fidelity> {
    let pairs: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|&(p, m)| p.is_finite() && m.is_finite() && m > 0.0)
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let mape = pairs.iter().map(|(p, m)| (p - m).abs() / m).sum::<f64>() / pairs.len() as f64;
    let (p, m): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    Some(Fidelity {
        points: pairs.len(),
        mape_percent: 100.0 * mape,
        spearman: crate::sensitivity::rank::spearman(&p, &m).ok(),
    })
}

/// What a run's measurements in one setting say.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MeasurementSummary {
    #[serde(flatten)]
    pub setting: MeasuredSetting,
    /// The hardware profile of the predictions (of the latest measurement).
    pub profile: String,
    /// Predicted against measured, over the latest measurement of each assignment (the all-f32
    /// reference included).
    pub fidelity: Option<Fidelity>,
    /// The all-f32 model's latency (the latest), µs.
    pub reference_us: f64,
    /// The largest measured speed-up over all-f32 of a trial of the run, and that trial.
    pub best_speedup: Option<f64>,
    pub best_trial: Option<u64>,
    /// When the latest of them was measured.
    pub measured_unix: u64,
}

/// One [`MeasurementSummary`] per setting of a run's `records`.
pub fn measurement_summaries(records: &[MeasurementRecord]) -> Vec<MeasurementSummary> {
    latest_measurements(records)
        .into_iter()
        .filter_map(|(setting, ms)| {
            let last = *ms.iter().max_by_key(|m| m.number)?;
            let pairs: Vec<(f64, f64)> =
                ms.iter().map(|m| (m.predicted_us, m.figure_us())).collect();
            let best = ms
                .iter()
                .filter_map(|m| match m.source {
                    MeasuredSource::Trial { trial, .. } => Some((trial, m.speedup())),
                    _ => None,
                })
                .filter(|(_, s)| s.is_finite())
                .max_by(|a, b| a.1.total_cmp(&b.1));
            // The latest reference of the setting, also where a later trial of the all-f32
            // assignment is the latest record of that assignment.
            let reference = records
                .iter()
                .filter(|m| {
                    m.source == MeasuredSource::Reference && MeasuredSetting::of(m) == setting
                })
                .max_by_key(|m| m.number)
                .map_or(last.reference_figure_us(), |m| m.figure_us());
            Some(MeasurementSummary {
                setting,
                profile: last.profile.clone(),
                fidelity: fidelity(&pairs),
                reference_us: reference,
                best_speedup: best.map(|b| b.1),
                best_trial: best.map(|b| b.0),
                measured_unix: last.measured_unix,
            })
        })
        .collect()
}
