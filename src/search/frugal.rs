//! # The frugal set-up (`--pairs auto`)
//!
//! On an expensive model the budget of a search is full-model evaluations, and a set-up that measures
//! every (group, choice) pair one at a time spends most of it before the first trial. What the search
//! needs from the set-up is a predictor that gets the **front** right: the pairs the predicted front is
//! made of, and the ones that could replace them. So the set-up measures those only, in rounds:
//!
//! 1. **Round 0.** The predictor is the cheap errors themselves (no evaluation). Each searchable group
//!    gets one measurement, to fit its scale: the pair of that group used on the predicted front with
//!    the largest cheap error (a large error fits a scale through the origin best), else the group's
//!    pair of median cheap error.
//! 2. **Later rounds.** The predictor is refitted (per-group scales, measured pairs predicted as
//!    measured, see [`Predictor`]) and its exact front solved again. The round measures as many pairs
//!    as there are searchable groups (from any groups): first the unmeasured pairs the front uses (most used first, then the largest
//!    predicted term), then their **neighbours** — the choices next to a used one on its group's own
//!    front of cost against predicted term (the choices that could take its place if the prediction is
//!    wrong).
//! 3. **Stop** when the front's membership (its set of points) is the same after a round as before it
//!    ([`FrugalStop::Stable`]), when no candidate is left ([`FrugalStop::Covered`]), when the
//!    set-up's budget is spent ([`FrugalStop::Budget`]), or — with a time budget — when the set-up
//!    has taken its share of it, cheap errors included ([`FrugalStop::Time`]; a measurement costs more
//!    than the base forward the budget is counted in, so the count alone cannot promise the share).
//!
//! The set-up's budget ([`setup_budget`]) is [`SETUP_SHARE`] of the run's: a fifth of its trial budget,
//! or of the evaluations its time budget affords at one evaluation's time, whichever is smaller — at
//! least one per searchable group, at most every pair. Everything here is a function of the cheap
//! errors, the cost tables and the measured qualities, so a seeded run measures the same pairs whatever
//! `--jobs` is, and a killed set-up replays its measurements from the evaluation cache.
//!
//! ## References
//!
//! - The same spirit as successive refinement in Bayesian-optimisation set-ups and in HAWQ-V3's
//!   measured sensitivities: measure where the decision is made, not everywhere.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::error::Result;
use crate::sensitivity::{Measurement, Predictor};
use crate::space::Point;
use crate::strategy::Problem;

/// Rivals of a used pair measured (see [`candidates`]).
const RIVALS: usize = 2;

/// The share of a run's budget its frugal set-up may spend.
pub const SETUP_SHARE: f64 = 0.2;

/// Why the frugal set-up stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrugalStop {
    /// The predicted front's membership did not change over the last round.
    Stable,
    /// Every pair the front uses, and every neighbour of one, is measured.
    Covered,
    /// The set-up's budget is spent.
    Budget,
    /// The set-up's share of the run's time budget is spent (`--time`).
    Time,
}

impl FrugalStop {
    /// Its one-word name, as a run's manifest records it.
    pub fn name(self) -> &'static str {
        match self {
            FrugalStop::Stable => "stable",
            FrugalStop::Covered => "covered",
            FrugalStop::Budget => "budget",
            FrugalStop::Time => "time",
        }
    }
}

impl std::fmt::Display for FrugalStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrugalStop::Stable => "the predicted front's membership is stable",
            FrugalStop::Covered => "every pair the predicted front uses or neighbours is measured",
            FrugalStop::Budget => "the set-up's budget is spent",
            FrugalStop::Time => "the set-up's share of the time budget is spent",
        })
    }
}

/// What the frugal set-up measured.
#[derive(Clone, Debug)]
pub struct Frugal {
    /// The one-at-a-time measurements, in the order made.
    pub measurements: Vec<Measurement>,
    /// Rounds of measurements.
    pub rounds: usize,
    pub stop: FrugalStop,
    /// Points of the final predicted front.
    pub front: usize,
}

/// The set-up's budget in one-at-a-time measurements (see the module docs): [`SETUP_SHARE`] of the
/// trial budget `trials` and of the evaluations `time_seconds` affords at `eval_seconds` each, the
/// smaller; at least `groups` (one per searchable group), at most `pairs` (every measurable pair).
pub fn setup_budget(
    trials: Option<u64>,
    time_seconds: Option<f64>,
    eval_seconds: f64,
    groups: usize,
    pairs: usize,
) -> usize {
    let by_trials = trials.map(|t| (SETUP_SHARE * t as f64).ceil());
    let by_time = time_seconds
        .filter(|_| eval_seconds > 0.0)
        .map(|s| (SETUP_SHARE * s / eval_seconds).floor());
    let share = match (by_trials, by_time) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => pairs as f64,
    };
    (share.max(groups.max(1) as f64) as usize).min(pairs)
}

/// Runs the frugal set-up (see the module docs).
///
/// - `errors[group][choice]`: the cheap errors;
/// - `measurable`: the pairs that may be measured (searchable groups, compressing choices);
/// - `problem(predictor)`: the run's problem (cost tables, limits) with that predictor;
/// - `measure(group, choice)`: one one-at-a-time measurement (through the evaluation cache);
/// - `out_of_time()`: whether the set-up's share of a time budget is spent (checked before each
///   measurement, so a round's exact front may run past it; always false without `--time`).
pub fn frugal_setup(
    errors: &[Vec<f64>],
    measurable: &[(usize, u16)],
    problem: &dyn Fn(Predictor) -> Result<Problem>,
    budget: usize,
    measure: &mut dyn FnMut(usize, u16) -> Result<f64>,
    out_of_time: &dyn Fn() -> bool,
) -> Result<Frugal> {
    let allowed: HashSet<(usize, u16)> = measurable.iter().copied().collect();
    let groups: BTreeSet<usize> = measurable.iter().map(|p| p.0).collect();
    let round_size = groups.len().max(1);
    let mut measurements: Vec<Measurement> = Vec::new();
    let mut measured: HashSet<(usize, u16)> = HashSet::new();
    let mut previous: Option<BTreeSet<Point>> = None;
    let mut rounds = 0;
    loop {
        let predictor = predictor(errors, &measurements)?;
        let problem = problem(predictor)?;
        let front = problem.exact_front()?;
        let members: BTreeSet<Point> = front.iter().map(|f| f.point.clone()).collect();
        let stop = if previous.as_ref() == Some(&members) {
            Some(FrugalStop::Stable)
        } else if measurements.len() >= budget {
            Some(FrugalStop::Budget)
        } else {
            None
        };
        let picks = match stop {
            Some(_) => Vec::new(),
            None if rounds == 0 => first_round(errors, measurable, &groups, &problem)?,
            None => candidates(&problem, &allowed, &measured)?,
        };
        let stop = stop.or(picks.is_empty().then_some(FrugalStop::Covered));
        if let Some(stop) = stop {
            return Ok(Frugal {
                measurements,
                rounds,
                stop,
                front: members.len(),
            });
        }
        let room = budget - measurements.len();
        for (i, (group, choice)) in picks.into_iter().take(round_size.min(room)).enumerate() {
            if out_of_time() {
                return Ok(Frugal {
                    measurements,
                    rounds: rounds + usize::from(i > 0),
                    stop: FrugalStop::Time,
                    front: members.len(),
                });
            }
            let quality = measure(group, choice)?;
            measured.insert((group, choice));
            measurements.push(Measurement {
                group,
                choice,
                quality,
            });
        }
        rounds += 1;
        previous = Some(members);
    }
}

/// The predictor fitted to `measurements` (measured pairs predicted as measured); the raw cheap errors
/// when there is none (or none at a positive error).
pub fn predictor(errors: &[Vec<f64>], measurements: &[Measurement]) -> Result<Predictor> {
    if let Ok(p) = Predictor::fit(errors, measurements) {
        return Ok(p.with_measured(measurements));
    }
    Ok(Predictor::from_table(errors.to_vec())?.with_measured(measurements))
}

/// Round 0: one pair per searchable group (see the module docs).
fn first_round(
    errors: &[Vec<f64>],
    measurable: &[(usize, u16)],
    groups: &BTreeSet<usize>,
    problem: &Problem,
) -> Result<Vec<(usize, u16)>> {
    let used: HashSet<(usize, u16)> = problem
        .exact_front()?
        .iter()
        .flat_map(|f| f.point.iter().enumerate().map(|(g, &c)| (g, c)))
        .collect();
    let err = |&(g, c): &(usize, u16)| errors[g][c as usize];
    Ok(groups
        .iter()
        .filter_map(|&g| {
            let mut own: Vec<(usize, u16)> =
                measurable.iter().copied().filter(|p| p.0 == g).collect();
            own.sort_by(|a, b| err(a).total_cmp(&err(b)).then(a.cmp(b)));
            own.iter()
                .rev()
                .find(|p| used.contains(p))
                .or_else(|| own.get(own.len() / 2))
                .copied()
        })
        .collect())
}

/// A later round's candidates, best first: the unmeasured pairs the front uses (most used first, then
/// the largest predicted term), then the unmeasured neighbours of every used pair on its group's own
/// front.
fn candidates(
    problem: &Problem,
    allowed: &HashSet<(usize, u16)>,
    measured: &HashSet<(usize, u16)>,
) -> Result<Vec<(usize, u16)>> {
    let table = problem.predictor.table();
    let mut uses: BTreeMap<(usize, u16), usize> = BTreeMap::new();
    for f in problem.exact_front()? {
        for (g, &c) in f.point.iter().enumerate() {
            if problem.choices[g] > 1 {
                *uses.entry((g, c)).or_default() += 1;
            }
        }
    }
    let open = |p: &(usize, u16)| allowed.contains(p) && !measured.contains(p);
    let mut used: Vec<((usize, u16), usize)> = uses
        .iter()
        .filter(|(p, _)| open(p))
        .map(|(&p, &n)| (p, n))
        .collect();
    used.sort_by(|(a, na), (b, nb)| {
        nb.cmp(na)
            .then(table[b.0][b.1 as usize].total_cmp(&table[a.0][a.1 as usize]))
            .then(a.cmp(b))
    });
    let mut out: Vec<(usize, u16)> = used.into_iter().map(|(p, _)| p).collect();
    let mut seen: HashSet<(usize, u16)> = out.iter().copied().collect();
    // Neighbours, the most used pairs' first.
    let mut by_use: Vec<((usize, u16), usize)> = uses.into_iter().collect();
    by_use.sort_by(|(a, na), (b, nb)| nb.cmp(na).then(a.cmp(b)));
    let mut staircases: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    for ((g, c), _) in by_use {
        let stairs = staircases
            .entry(g)
            .or_insert_with(|| staircase(&problem.cost[g], &table[g]));
        let Some(i) = stairs.iter().position(|&s| s == c) else {
            continue;
        };
        let around = [i.checked_sub(1), Some(i + 1)];
        for j in around.into_iter().flatten() {
            if let Some(&n) = stairs.get(j) {
                let p = (g, n);
                if open(&p) && seen.insert(p) {
                    out.push(p);
                }
            }
        }
        // Rivals: the choices no dearer than the used one and dearer than the step below it, best
        // predicted first — what could take its place at its cost if they are over-predicted.
        let floor = i
            .checked_sub(1)
            .map_or(f64::NEG_INFINITY, |j| problem.cost[g][stairs[j] as usize]);
        let here = problem.cost[g][c as usize];
        let mut rivals: Vec<u16> = (0..problem.cost[g].len() as u16)
            .filter(|&r| {
                let cost = problem.cost[g][r as usize];
                r != c && cost <= here && cost > floor && open(&(g, r))
            })
            .collect();
        rivals.sort_by(|&a, &b| {
            table[g][a as usize]
                .total_cmp(&table[g][b as usize])
                .then(a.cmp(&b))
        });
        for r in rivals.into_iter().take(RIVALS) {
            if seen.insert((g, r)) {
                out.push((g, r));
            }
        }
    }
    Ok(out)
}

/// A group's own front: its choices by increasing cost, each predicted strictly better than every
/// cheaper one.
fn staircase(cost: &[f64], predicted: &[f64]) -> Vec<u16> {
    let mut order: Vec<u16> = (0..cost.len() as u16).collect();
    order.sort_by(|&a, &b| {
        cost[a as usize]
            .total_cmp(&cost[b as usize])
            .then(predicted[a as usize].total_cmp(&predicted[b as usize]))
            .then(a.cmp(&b))
    });
    let mut best = f64::INFINITY;
    order
        .into_iter()
        .filter(|&c| {
            let keep = predicted[c as usize] < best;
            if keep {
                best = predicted[c as usize];
            }
            keep
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::pareto::hypervolume_2d;
    use crate::strategy::synthetic::Synthetic;

    #[test]
    fn budget_is_a_fifth_of_the_run_within_its_bounds() {
        assert_eq!(setup_budget(Some(500), None, 1.0, 4, 316), 100);
        assert_eq!(setup_budget(Some(500), Some(3600.0), 36.0, 4, 316), 20);
        assert_eq!(setup_budget(None, Some(8.0 * 3600.0), 2.4, 8, 5000), 2400);
        assert_eq!(setup_budget(Some(10), None, 1.0, 4, 316), 4);
        assert_eq!(setup_budget(Some(10), None, 1.0, 8, 6), 6);
        assert_eq!(setup_budget(None, None, 1.0, 4, 316), 316);
    }

    #[test]
    fn staircase_keeps_the_groups_own_front() {
        let cost = [4.0, 1.0, 2.0, 3.0, 2.0];
        let predicted = [0.0, 5.0, 3.0, 3.0, 1.0];
        assert_eq!(staircase(&cost, &predicted), vec![1, 4, 0]);
    }

    /// The hypervolume, under the true one-at-a-time terms `truth`, of the predicted front `problem`
    /// gives: how good a front the predictor leads to.
    fn true_hypervolume(problem: &Problem, truth: &[Vec<f64>]) -> f64 {
        let points: Vec<[f64; 2]> = problem
            .exact_front()
            .unwrap()
            .iter()
            .map(|f| {
                let q: f64 = f
                    .point
                    .iter()
                    .enumerate()
                    .map(|(g, &c)| truth[g][c as usize])
                    .sum();
                [f.cost, q]
            })
            .collect();
        let front: Vec<[f64; 2]> = crate::pareto::front_2d(&points)
            .into_iter()
            .map(|i| points[i])
            .collect();
        hypervolume_2d(&front, problem.reference)
    }

    /// A problem shaped like a real space: each group has useful choices (dearer ones better) and as
    /// many decoys (each dearer and worse than a useful one, as act8 or odd group sizes often are);
    /// the cheap errors mis-scale each group (a factor in [0.5, 2]) and mis-rank its choices (each off
    /// by a factor in [0.7, 1.4]); measuring a pair gives its true one-at-a-time term.
    struct Shaped {
        truth: Vec<Vec<f64>>,
        errors: Vec<Vec<f64>>,
        cost: Vec<Vec<f64>>,
        measurable: Vec<(usize, u16)>,
        reference: [f64; 2],
    }

    fn shaped(groups: usize, useful: usize, seed: u64) -> Shaped {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut truth, mut errors, mut cost) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..groups {
            let size: f64 = rng.random_range(1.0..10.0);
            let sensitivity: f64 = rng.random_range(0.01..0.3);
            let misscale = 2f64.powf(rng.random_range(-1.0..1.0));
            let (mut t, mut c) = (Vec::new(), Vec::new());
            let mut total = 0.0;
            for k in 0..useful {
                total += size * rng.random_range(0.1..0.5);
                let x = 1.0 - k as f64 / (useful - 1) as f64;
                t.push(sensitivity * x * x);
                c.push(total);
            }
            for k in 0..useful - 1 {
                t.push(t[k] * rng.random_range(1.2..2.0) + 1e-4);
                c.push(c[k] * rng.random_range(1.05..1.5));
            }
            let e: Vec<f64> = t
                .iter()
                .map(|v| v * misscale * rng.random_range(0.7..1.4))
                .collect();
            truth.push(t);
            errors.push(e);
            cost.push(c);
        }
        // The last useful choice (index useful - 1) is uncompressed: error 0, not measurable.
        let measurable = (0..groups)
            .flat_map(|g| {
                (0..2 * useful as u16 - 1)
                    .filter(move |&c| c as usize != useful - 1)
                    .map(move |c| (g, c))
            })
            .collect();
        let max_cost: f64 = cost
            .iter()
            .map(|r| r.iter().cloned().fold(0.0, f64::max))
            .sum();
        let max_q: f64 = truth.iter().map(|r| r[0]).sum();
        Shaped {
            truth,
            errors,
            cost,
            measurable,
            reference: [max_cost * 1.01, max_q * 1.01],
        }
    }

    #[test]
    fn measures_fewer_pairs_than_the_space_for_a_front_as_good_as_measuring_all() {
        for seed in 0..4u64 {
            let s = shaped(8, 12, seed);
            let choices = vec![s.cost[0].len() as u16; s.cost.len()];
            let build = |p: Predictor| {
                Problem::new(
                    choices.clone(),
                    s.cost.clone(),
                    Vec::new(),
                    None,
                    p,
                    seed,
                    s.reference,
                )
            };
            let mut calls = Vec::new();
            let frugal = frugal_setup(
                &s.errors,
                &s.measurable,
                &build,
                s.measurable.len(),
                &mut |g, c| {
                    calls.push((g, c));
                    Ok(s.truth[g][c as usize])
                },
                &|| false,
            )
            .unwrap();
            assert_eq!(calls.len(), frugal.measurements.len());
            let distinct: HashSet<_> = calls.iter().collect();
            assert_eq!(distinct.len(), calls.len(), "a pair measured twice");
            assert!(
                calls.len() * 4 < s.measurable.len() * 3,
                "seed {seed}: measured {} of {} pairs",
                calls.len(),
                s.measurable.len()
            );
            let all: Vec<Measurement> = s
                .measurable
                .iter()
                .map(|&(group, choice)| Measurement {
                    group,
                    choice,
                    quality: s.truth[group][choice as usize],
                })
                .collect();
            let hv = |m: &[Measurement]| {
                true_hypervolume(&build(predictor(&s.errors, m).unwrap()).unwrap(), &s.truth)
            };
            let (hv_none, hv_frugal, hv_all) = (hv(&[]), hv(&frugal.measurements), hv(&all));
            eprintln!(
                "seed {seed}: {} of {} pairs in {} rounds ({:?}); true HV none {hv_none:.5} frugal {hv_frugal:.5} all {hv_all:.5}",
                calls.len(),
                s.measurable.len(),
                frugal.rounds,
                frugal.stop
            );
            assert!(
                hv_frugal >= 0.999 * hv_all,
                "seed {seed}: {hv_frugal} vs {hv_all}"
            );
            assert!(
                hv_frugal > hv_none,
                "seed {seed}: measuring improved nothing"
            );
        }
    }

    /// The compressing pairs (all but each group's last, uncompressed choice) of a synthetic 8 × 10
    /// problem, and its predictor's table as the cheap errors.
    fn measurable_of(s: &Synthetic) -> (Vec<(usize, u16)>, Vec<Vec<f64>>) {
        let measurable = (0..8)
            .flat_map(|g| (0..9u16).map(move |c| (g, c)))
            .collect();
        (measurable, s.problem.predictor.table().to_vec())
    }

    /// `s`'s problem with predictor `p`.
    fn rebuild(s: &Synthetic, p: Predictor) -> Result<Problem> {
        Problem::new(
            s.problem.choices.clone(),
            s.problem.cost.clone(),
            Vec::new(),
            None,
            p,
            7,
            s.problem.reference,
        )
    }

    #[test]
    fn the_budget_caps_the_measurements() {
        let s = Synthetic::new(8, 10, 7);
        let (measurable, errors) = measurable_of(&s);
        let build = |p: Predictor| rebuild(&s, p);
        let mut n = 0;
        let f = frugal_setup(
            &errors,
            &measurable,
            &build,
            11,
            &mut |g, c| {
                n += 1;
                Ok(errors[g][c as usize] * 3.0 + 0.01 * (g as f64))
            },
            &|| false,
        )
        .unwrap();
        // Round 0 measures one pair of each of the 8 groups, round 1 the 3 the budget leaves.
        assert_eq!((n, f.measurements.len()), (11, 11));
        assert_eq!(f.stop, FrugalStop::Budget);
        let groups: HashSet<usize> = f.measurements[..8].iter().map(|m| m.group).collect();
        assert_eq!(groups.len(), 8, "round 0 measures every group");
    }

    #[test]
    fn the_time_share_stops_the_set_up_before_its_next_measurement() {
        let s = Synthetic::new(8, 10, 7);
        let (measurable, errors) = measurable_of(&s);
        let build = |p: Predictor| rebuild(&s, p);
        let measure = |g: usize, c: u16| Ok(errors[g][c as usize] * 3.0 + 0.01 * (g as f64));
        let full = frugal_setup(
            &errors,
            &measurable,
            &build,
            72,
            &mut |g, c| measure(g, c),
            &|| false,
        )
        .unwrap();
        assert!(full.measurements.len() > 5);
        // A clock that runs out after 5 measurements: the set-up stops there, its measurements the
        // first 5 of the uncut one's (so a count budget of 5 would measure the same).
        let made = std::cell::Cell::new(0);
        let cut = frugal_setup(
            &errors,
            &measurable,
            &build,
            72,
            &mut |g, c| {
                made.set(made.get() + 1);
                measure(g, c)
            },
            &|| made.get() >= 5,
        )
        .unwrap();
        assert_eq!(cut.stop, FrugalStop::Time);
        assert_eq!(cut.measurements, full.measurements[..5]);
        let budget = frugal_setup(
            &errors,
            &measurable,
            &build,
            5,
            &mut |g, c| measure(g, c),
            &|| false,
        )
        .unwrap();
        assert_eq!(budget.measurements, cut.measurements);
    }
}
