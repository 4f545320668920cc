//! Proxy evaluations (`search --fidelity F`): each trial is first evaluated on the first ⌈F·n⌉
//! samples of the search split (its own cache key, [`EvalSplit::Proxy`]), and evaluated in full only
//! if that proxy quality could put it on the front — successive halving with one rung, the rung's
//! bar set by the trials already measured both ways.
//!
//! **The rule** ([`Gate::promotes`]). The trials finished before the batch (never its own: a
//! decision must not depend on the order a batch's evaluations finish in, so that `--jobs` and a
//! resume decide alike) give two things: the measured front (full quality against the minimised
//! cost), and the ratios full / proxy quality of the trials evaluated both ways. A candidate with
//! proxy quality `p` is credited the optimistic full quality `p · r`, `r` the lower decile of those
//! ratios (the proxy's most flattering tenth for the candidate); it is **pruned** when a measured
//! front point no dearer is better than that, or when even that quality breaks `--max-drop`, or when
//! its cost breaks a cost limit (no quality puts it on the front). Until [`MIN_PAIRS`] trials are
//! measured both ways (both qualities above 0) there is no ratio to trust and every trial is
//! evaluated in full; the space's
//! baselines always are. A pruned trial keeps its proxy quality: strategies learn from it as an
//! estimate, fronts and reports never show it.

use crate::error::{Error, Result};
use crate::eval::{EvalSplit, Evaluator};
use crate::store::{TrialRecord, TrialState};
use crate::strategy::Problem;

/// Trials measured both ways before any is pruned.
pub const MIN_PAIRS: usize = 8;

/// The quantile of the full / proxy ratios a candidate is credited with.
pub const RATIO_QUANTILE: f64 = 0.1;

/// The proxy a run evaluates on, from its `--fidelity` share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Proxy {
    /// Search samples it takes (the first ones of the split).
    pub samples: u32,
    /// `samples` over the search split's samples.
    pub share: f64,
}

impl Proxy {
    /// The proxy of `fidelity` (a share in (0, 1)) of `evaluator`'s search split: its first
    /// ⌈fidelity · n⌉ samples, at least one.
    pub fn new(fidelity: f64, evaluator: &dyn Evaluator) -> Result<Proxy> {
        check_fidelity(fidelity)?;
        let Some(n) = evaluator.search_samples() else {
            return Err(Error::search(
                "--fidelity: this evaluator cannot evaluate a proxy (it has no search samples to \
                 take a share of)",
            ));
        };
        let samples = ((fidelity * n as f64).ceil() as usize).clamp(1, n.max(1));
        if samples >= n {
            return Err(Error::search(format!(
                "--fidelity {fidelity}: a proxy of {samples} samples is the whole search split ({n}): \
                 a proxy must be smaller than what it stands for; give a smaller share (e.g. 0.25) or \
                 leave --fidelity out"
            )));
        }
        Ok(Proxy {
            samples: samples as u32,
            share: samples as f64 / n.max(1) as f64,
        })
    }

    /// The split its evaluations are made and cached on.
    pub fn split(&self) -> EvalSplit {
        EvalSplit::Proxy(self.samples)
    }
}

/// Refuses a fidelity outside (0, 1).
pub fn check_fidelity(fidelity: f64) -> Result<()> {
    if fidelity.is_finite() && fidelity > 0.0 && fidelity < 1.0 {
        Ok(())
    } else {
        Err(Error::search(format!(
            "--fidelity {fidelity}: give the share of the search split a proxy evaluation takes, \
             above 0 and below 1 (e.g. 0.25); without --fidelity every trial is evaluated in full"
        )))
    }
}

/// What decides, for one batch, which trials go on to a full evaluation.
#[derive(Clone, Debug)]
pub struct Gate {
    pub proxy: Proxy,
    /// The measured feasible front before the batch: (cost, full quality).
    front: Vec<[f64; 2]>,
    /// The ratio a proxy quality is multiplied by for its optimistic full quality (`None` until
    /// [`MIN_PAIRS`] trials were measured both ways).
    ratio: Option<f64>,
}

impl Gate {
    /// The gate for the batch after `finished` (the run's trials before it).
    pub fn new(proxy: Proxy, problem: &Problem, finished: &[TrialRecord]) -> Gate {
        let measured: Vec<[f64; 2]> = finished
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .filter_map(|t| {
                let q = t.quality?;
                (problem.violation(&t.point, Some(q)) == 0.0).then(|| [problem.cost(&t.point), q])
            })
            .collect();
        let front = crate::pareto::front_2d(&measured)
            .into_iter()
            .map(|i| measured[i])
            .collect();
        let mut ratios: Vec<f64> = crate::store::proxy_and_full(finished)
            .filter(|&(p, f)| p > 0.0 && f > 0.0)
            .map(|(p, f)| f / p)
            .collect();
        let ratio = (ratios.len() >= MIN_PAIRS).then(|| {
            ratios.sort_by(f64::total_cmp);
            ratios[((ratios.len() - 1) as f64 * RATIO_QUANTILE).floor() as usize]
        });
        Gate {
            proxy,
            front,
            ratio,
        }
    }

    /// Whether `trial` (proposed by `strategy`, at `point`), whose proxy quality is `proxy_quality`,
    /// is evaluated in full (see the module docs for the rule).
    pub fn promotes(
        &self,
        problem: &Problem,
        strategy: &str,
        point: &[u16],
        proxy_quality: f64,
    ) -> bool {
        if strategy == crate::strategy::BASELINE {
            return true;
        }
        let Some(ratio) = self.ratio else {
            return true;
        };
        let best = proxy_quality * ratio;
        if problem.violation(point, Some(best)) > 0.0 {
            return false;
        }
        let cost = problem.cost(point);
        !self
            .front
            .iter()
            .any(|&[c, q]| c <= cost && q <= best && (c < cost || q < best))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::AssignmentJson;
    use crate::store::{CostRecord, ProxyRecord, SCHEMA_VERSION};
    use crate::strategy::synthetic::Synthetic;

    const PROXY: Proxy = Proxy {
        samples: 60,
        share: 0.25,
    };

    /// A trial at `point`, complete with `full` quality when given (else pruned), its proxy
    /// quality `proxy`.
    fn trial(number: u64, point: Vec<u16>, proxy: f64, full: Option<f64>) -> TrialRecord {
        TrialRecord {
            schema: SCHEMA_VERSION,
            number,
            strategy: "bayes".into(),
            state: if full.is_some() {
                TrialState::Complete
            } else {
                TrialState::Pruned
            },
            point,
            assignment: AssignmentJson {
                default: None,
                layers: Default::default(),
            },
            hash: String::new(),
            key: String::new(),
            quality: full,
            metrics: Default::default(),
            error: None,
            cost: CostRecord::default(),
            cached: false,
            seconds: 0.0,
            batch: None,
            proxy: Some(ProxyRecord {
                samples: PROXY.samples,
                share: PROXY.share,
                quality: proxy,
                metrics: Default::default(),
                cached: false,
                seconds: 0.0,
            }),
        }
    }

    /// Every point of a 2-group, 4-choice space, by cost.
    fn points_by_cost(s: &Synthetic) -> Vec<Vec<u16>> {
        let mut points: Vec<Vec<u16>> = (0..4u16)
            .flat_map(|a| (0..4u16).map(move |b| vec![a, b]))
            .collect();
        points.sort_by(|a, b| s.problem.cost(a).total_cmp(&s.problem.cost(b)));
        points
    }

    #[test]
    fn a_candidate_is_pruned_only_when_a_measured_point_no_dearer_beats_its_best_case() {
        let s = Synthetic::new(2, 4, 3);
        let p = &s.problem;
        let points = points_by_cost(&s);
        // Eight trials measured both ways on the dearer half of the space: full = 2 × proxy, but
        // for one trial where full = proxy — the lower decile of the ratios is then 1.
        let measured: Vec<TrialRecord> = (0..8)
            .map(|i| {
                let proxy = 0.01 * (8 - i) as f64;
                let ratio = if i == 5 { 1.0 } else { 2.0 };
                trial(i as u64, points[8 + i].clone(), proxy, Some(proxy * ratio))
            })
            .collect();
        let gate = Gate::new(PROXY, p, &measured);
        assert_eq!(gate.ratio, Some(1.0));
        // A pruned trial is neither a pair nor a front point, however good its proxy.
        let mut with_pruned = measured.clone();
        with_pruned.push(trial(8, points[0].clone(), 1e-9, None));
        let g = Gate::new(PROXY, p, &with_pruned);
        assert_eq!((g.ratio, &g.front), (gate.ratio, &gate.front));
        let dearest = &measured[7];
        let full = dearest.quality.unwrap();
        // At the dearest measured point's own cost: pruned when its best case (proxy × 1) is worse
        // than that point's full quality, promoted when it is better.
        assert!(!gate.promotes(p, "bayes", &dearest.point, full * 1.5));
        assert!(gate.promotes(p, "bayes", &dearest.point, full * 0.5));
        // Cheaper than every measured point: nothing measured is no dearer, so it is promoted however
        // bad its proxy.
        assert!(gate.promotes(p, "bayes", &points[0], 1e3));
        // The space's baselines always are.
        assert!(gate.promotes(p, crate::strategy::BASELINE, &dearest.point, 1e3));
        // With one pair fewer, no ratio is trusted yet: everything is promoted.
        let gate = Gate::new(PROXY, p, &measured[..7]);
        assert_eq!(gate.ratio, None);
        assert!(gate.promotes(p, "bayes", &dearest.point, 1e3));
    }

    #[test]
    fn a_best_case_beyond_the_quality_limit_is_pruned() {
        let s = Synthetic::new(2, 4, 3);
        let points = points_by_cost(&s);
        let p = Problem::new(
            s.problem.choices.clone(),
            s.problem.cost.clone(),
            Vec::new(),
            Some(0.05),
            s.problem.predictor.clone(),
            3,
            s.problem.reference,
        )
        .unwrap();
        let measured: Vec<TrialRecord> = (0..8)
            .map(|i| trial(i, points[15].clone(), 0.01, Some(0.02)))
            .collect();
        let gate = Gate::new(PROXY, &p, &measured);
        // Cheaper than everything measured, but even at the best ratio (2) its quality breaks the
        // limit of 0.05.
        assert!(!gate.promotes(&p, "bayes", &points[0], 0.03));
        assert!(gate.promotes(&p, "bayes", &points[0], 0.02));
    }

    #[test]
    fn a_fidelity_outside_the_open_unit_interval_is_refused() {
        for f in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            assert!(check_fidelity(f).is_err(), "{f}");
        }
        assert!(check_fidelity(0.25).is_ok());
    }
}
