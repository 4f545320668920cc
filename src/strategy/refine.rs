//! # Trials refine the predictor
//!
//! The set-up measures a few (group, choice) pairs one at a time; every trial after it measures every
//! group at once. So finished trials refit the predictor's per-group scales, jointly with the set-up's
//! measurements ([`Predictor::refine`]), and the strategy is asked with the refit: the exact strategy
//! proposes its front, evolution seeds from it, bayes models what it still misses.
//!
//! **Only when it predicts better.** A refit can also make things worse: trials are not additive
//! (compressing two layers costs more, or less, than the sum), and on a real model the set-up's
//! one-at-a-time scales often rank the trials near perfectly already (Spearman 0.995 on
//! all-MiniLM-L6-v2, where an unchecked absolute refit fell to 0.72–0.76). So each refinement is checked:
//! two refits — of absolute and of relative errors ([`Fit`]) — are fitted on the first half of the
//! trials and scored on the second half by the mean squared log error of their predictions
//! ([`LOG_FLOOR`]); the better one replaces the set-up's predictor (fitted again on all the trials)
//! only if it beats the set-up's own error there by [`MIN_GAIN`]; otherwise the set-up's predictor is
//! kept, and nothing the strategy sees changes.
//!
//! **When.** At [`FIRST`] finished trials, then each time their number doubles (16, 32, 64, 128…):
//! each refit rests on twice the trials of the one before, and the predictor an `ask` sees is a
//! function of the history alone — the one chosen on the first `at` trials, `at` the largest such
//! number not above the history's length — so a resumed run asks what the uninterrupted run asked.
//! The bayes strategy re-chooses its hyperparameters once per 64 trials, under the predictor's
//! revision ([`Problem::revision`]); from 64 on, the refinements fall on those same multiples.
//!
//! **What.** Complete trials only: failed ones have no quality, and a pruned trial's proxy quality
//! (`--fidelity`) is on other samples.
//!
//! **Cost.** Three least-squares solves over the groups per refinement (microseconds on the demo,
//! milliseconds for hundreds of tensors), and, when a refit is adopted, the new predictor's exact
//! front (about 24 s on all-MiniLM-L6-v2's `bert-base` space, whose front has 10,429 points; part of
//! the strategy time the run reports). A refused refit costs no new front: the set-up's problem is
//! kept as it is.

use super::{History, Observed, Problem};
use crate::error::Result;
use crate::sensitivity::{Fit, Measurement, Predictor};

/// Finished trials at the first refinement.
pub const FIRST: usize = 16;

/// The number of first trials the predictor for an `ask` after `finished` trials is refined on:
/// the largest of 16, 32, 64… not above `finished`; `None` below 16.
pub fn refinement_at(finished: usize) -> Option<usize> {
    (finished >= FIRST).then(|| {
        let mut at = FIRST;
        while at * 2 <= finished {
            at *= 2;
        }
        at
    })
}

/// What the predictor is refined from besides the trials: the set-up's cheap errors and
/// one-at-a-time measurements (those the problem's predictor was fitted to).
#[derive(Clone, Copy, Debug)]
pub struct Refiner<'a> {
    pub errors: &'a [Vec<f64>],
    pub measurements: &'a [Measurement],
}

impl Refiner<'_> {
    /// Brings `refined` up to date for an `ask` after `history`: at each [`refinement_at`] point, the
    /// refit the first trials choose, if any, replaces the predictor of `base` (the set-up's problem);
    /// nothing is recomputed between them. What was chosen, when a choice was made.
    pub fn update(
        &self,
        base: &Problem,
        history: &History,
        refined: &mut Refined,
    ) -> Option<Choice> {
        let at = refinement_at(history.len());
        if at == refined.checked {
            return None;
        }
        refined.checked = at;
        let Some(at) = at else {
            refined.problem = None;
            return None;
        };
        // A refit that cannot be computed (a least-squares system too ill-conditioned to solve, say)
        // leaves the set-up's predictor in place: it must never end an overnight run.
        let (problem, chosen) = match self.refine(base, &history.trials()[..at]) {
            Ok(done) => done,
            Err(e) => (
                None,
                Choice {
                    at,
                    fit: None,
                    error: f64::NAN,
                    set_up_error: f64::NAN,
                    checked: 0,
                    failure: Some(e.to_string()),
                },
            ),
        };
        refined.problem = problem;
        Some(chosen)
    }

    /// `base` with its predictor refined on the complete trials of `trials` (the first
    /// `trials.len()` of the run), as revision `trials.len()` — `None` when the trials say no refit
    /// predicts better than the set-up's (see the module docs) — and what was chosen. Failed trials
    /// have no quality, and a pruned trial's proxy quality (`--fidelity`) is measured on other
    /// samples: both are left out.
    pub fn refine(&self, base: &Problem, trials: &[Observed]) -> Result<(Option<Problem>, Choice)> {
        let chosen = self.choose(base, trials)?;
        let Some(fit) = chosen.fit else {
            return Ok((None, chosen));
        };
        let predictor =
            base.predictor
                .refine(self.errors, self.measurements, &complete(trials), fit)?;
        Ok((Some(base.with_predictor(predictor, trials.len())?), chosen))
    }

    /// Which refit, if any, predicts the second half of `trials` best when fitted on the first.
    pub fn choose(&self, base: &Problem, trials: &[Observed]) -> Result<Choice> {
        let half = trials.len() / 2;
        let (fit_on, check_on) = (complete(&trials[..half]), complete(&trials[half..]));
        let largest = fit_on
            .iter()
            .chain(&check_on)
            .map(|t| t.1)
            .fold(0.0, f64::max);
        let error = |p: &Predictor| log_error(p, &check_on, LOG_FLOOR * largest);
        let set_up_error = error(&base.predictor);
        let mut chosen = Choice {
            at: trials.len(),
            fit: None,
            error: set_up_error,
            set_up_error,
            checked: check_on.len(),
            failure: None,
        };
        if check_on.is_empty() {
            return Ok(chosen);
        }
        for fit in [Fit::Relative, Fit::Absolute] {
            let candidate = base
                .predictor
                .refine(self.errors, self.measurements, &fit_on, fit)?;
            let e = error(&candidate);
            if e < chosen.error && e < (1.0 - MIN_GAIN) * chosen.set_up_error {
                chosen.fit = Some(fit);
                chosen.error = e;
            }
        }
        Ok(chosen)
    }
}

/// The predictor an `ask` sees: the set-up's, or the refit chosen at the last refinement point.
#[derive(Debug, Default)]
pub struct Refined {
    /// The last refinement point chosen at.
    checked: Option<usize>,
    /// The refined problem; `None`: the set-up's.
    problem: Option<Problem>,
}

impl Refined {
    /// The problem to ask with: the refined one, else `base`.
    pub fn problem<'a>(&'a self, base: &'a Problem) -> &'a Problem {
        self.problem.as_ref().unwrap_or(base)
    }
}

/// What [`Refiner::choose`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Trials the refit was made on (the first ones of the run).
    pub at: usize,
    /// The refit chosen; `None`: the set-up's predictor predicts best.
    pub fit: Option<Fit>,
    /// The chosen predictor's mean squared log error on the checked trials.
    pub error: f64,
    /// The set-up predictor's.
    pub set_up_error: f64,
    /// Complete trials checked (the second half).
    pub checked: usize,
    /// Why no refit could be computed (the set-up's predictor kept), if that happened.
    pub failure: Option<String>,
}

/// How much lower a refit's error on the later half must be than the set-up predictor's for it to be
/// chosen: a refit that predicts as well (the trials agree with the set-up's scales) changes nothing
/// worth changing the predictor for.
pub const MIN_GAIN: f64 = 0.05;

/// The floor added to predicted and measured qualities before their logarithm, as a share of the
/// largest measured quality: differences far below every quality that matters (a KL of 10⁻¹¹ against
/// 10⁻¹⁰ when the run's largest is 0.3) do not count.
pub const LOG_FLOOR: f64 = 1e-6;

/// The complete trials of `trials` as (point, quality).
fn complete(trials: &[Observed]) -> Vec<(&[u16], f64)> {
    trials
        .iter()
        .filter(|t| !t.proxy)
        .filter_map(|t| Some((t.point.as_slice(), t.quality.filter(|q| q.is_finite())?)))
        .collect()
}

/// Mean of `ln((predicted + floor) / (measured + floor))²` over `trials` (0 when there is none).
fn log_error(p: &Predictor, trials: &[(&[u16], f64)], floor: f64) -> f64 {
    if trials.is_empty() || floor <= 0.0 {
        return 0.0;
    }
    trials
        .iter()
        .map(|&(x, q)| {
            ((p.predict(x).max(0.0) + floor) / (q.max(0.0) + floor))
                .ln()
                .powi(2)
        })
        .sum::<f64>()
        / trials.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::synthetic::Synthetic;
    use crate::strategy::{drive_refined, BayesConfig, BayesStrategy, ExactStrategy, Strategy};

    /// The measured hypervolume after `trials` trials of `strategy` on synthetic problems, with and
    /// without the trials refining the predictor.
    fn with_and_without(make: &dyn Fn() -> Box<dyn Strategy>, trials: usize) -> Vec<(f64, f64)> {
        (0..4u64)
            .map(|seed| {
                let s = Synthetic::new(12, 8, seed);
                let errors = s.problem.predictor.table().to_vec();
                let refiner = Refiner {
                    errors: &errors,
                    measurements: &[],
                };
                let hv = |r: Option<Refiner>| {
                    let h = drive_refined(&mut *make(), &s.problem, r, trials, 8, |p| {
                        Some(s.quality(p))
                    })
                    .unwrap();
                    h.hypervolume(&s.problem)
                };
                (hv(Some(refiner)), hv(None))
            })
            .collect()
    }

    #[test]
    fn refined_predictors_lead_the_exact_strategy_to_a_better_front() {
        let hv = with_and_without(&|| Box::new(ExactStrategy), 96);
        eprintln!("exact, refined vs not: {hv:?}");
        assert!(hv.iter().all(|(r, n)| r > n), "{hv:?}");
    }

    #[test]
    fn refined_predictors_lead_bayes_to_a_better_front() {
        let hv = with_and_without(
            &|| Box::new(BayesStrategy::new(BayesConfig::default()).unwrap()),
            96,
        );
        eprintln!("bayes, refined vs not: {hv:?}");
        assert!(hv.iter().all(|(r, n)| r > n), "{hv:?}");
    }

    #[test]
    fn refinements_fall_at_16_then_each_doubling() {
        let at: Vec<Option<usize>> = [0, 15, 16, 17, 31, 32, 63, 64, 127, 128, 200, 2_000]
            .iter()
            .map(|&n| refinement_at(n))
            .collect();
        assert_eq!(
            at,
            [
                None,
                None,
                Some(16),
                Some(16),
                Some(16),
                Some(32),
                Some(32),
                Some(64),
                Some(64),
                Some(128),
                Some(128),
                Some(1_024)
            ]
        );
        // From 64 on, every refinement is a multiple of the bayes strategy's hyperparameter refit.
        for n in 64..5_000 {
            assert_eq!(refinement_at(n).unwrap() % super::super::bayes::REFIT, 0);
        }
    }
}
