//! # The evolution strategy: NSGA-II
//!
//! A genetic search over points (one choice per group) with two minimised objectives, the cost and the
//! measured quality drop, under Deb's constraint-domination (a feasible trial beats an infeasible one;
//! a failed trial is infeasible with infinite violation). As in Optuna's NSGA-II sampler, the
//! population is a function of the stored trials: generations are cut by trial *counts*, not by call
//! boundaries. Generation 0 is the first `population` trials — up to `population / 2` points of the
//! exact predicted front in spread order, the rest random. Each time another `population` trials have
//! been told, environmental selection keeps `population` of the parents and those trials: fronts of the
//! non-dominated sort in order, the last one cut by crowding distance (largest first, then the earlier
//! trial). The state is just the parents (trial indices) and the number of trials told, so telling
//! `a..b` then `b..c` is the same as telling `a..c`, and a resumed run needs no special code.
//!
//! Offspring: two binary tournaments on (rank, crowding) among the parents, uniform crossover with
//! probability `crossover`, then per-group mutation of the searchable groups to another choice. A child
//! already tried or already in the batch is mutated afresh (at least one group changed) up to
//! [`MUTATION_RETRIES`] times, then replaced by a random untried point.
//!
//! ## References
//!
//! - K. Deb, A. Pratap, S. Agarwal, T. Meyarivan, "A fast and elitist multiobjective genetic algorithm:
//!   NSGA-II", IEEE Transactions on Evolutionary Computation 6(2), 2002.
//! - Optuna's `NSGAIISampler` (`optuna/samplers/nsgaii/_sampler.py`): the population rebuilt from the
//!   stored trials; uniform crossover and per-parameter mutation as separate parts.

use std::collections::HashSet;
use std::ops::Range;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::random::{random_unseen, REDRAWS};
use super::{History, Observed, Problem, Strategy};
use crate::error::{Error, Result};
use crate::pareto::{crowding_distance, non_dominated_sort};
use crate::space::Point;

/// Fresh mutations of a child that was already tried, before falling back to a random point.
pub const MUTATION_RETRIES: usize = 50;

/// The settings of [`EvolutionStrategy`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvolutionConfig {
    /// Parents kept per generation, and trials per generation (≥ 2).
    pub population: usize,
    /// Probability of uniform crossover of the two tournament winners (else the first is copied).
    pub crossover: f64,
    /// Per-group mutation probability; `None` for 1 / the number of searchable groups.
    pub mutation: Option<f64>,
    /// Whether generation 0 starts with up to `population / 2` points of the exact predicted front.
    pub seeded: bool,
}

impl Default for EvolutionConfig {
    fn default() -> EvolutionConfig {
        EvolutionConfig {
            population: 16,
            crossover: 0.9,
            mutation: None,
            seeded: true,
        }
    }
}

impl EvolutionConfig {
    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.population < 2 {
            return Err(Error::search(format!(
                "evolution: population must be at least 2, not {}",
                self.population
            )));
        }
        if !(0.0..=1.0).contains(&self.crossover) {
            return Err(Error::search(format!(
                "evolution: crossover is a probability in [0, 1], not {}",
                self.crossover
            )));
        }
        if let Some(m) = self.mutation {
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::search(format!(
                    "evolution: mutation is a probability in [0, 1] (or unset for 1 / searchable \
                     groups), not {m}"
                )));
            }
        }
        Ok(())
    }
}

/// What the strategy has learnt: the parents (trial indices, increasing) and the trials told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    parents: Vec<usize>,
    told: usize,
}

/// NSGA-II over the trial history (see the module docs).
#[derive(Clone, Debug)]
pub struct EvolutionStrategy {
    config: EvolutionConfig,
    state: State,
}

impl EvolutionStrategy {
    /// A strategy with `config`, which is validated.
    pub fn new(config: EvolutionConfig) -> Result<EvolutionStrategy> {
        config.validate()?;
        Ok(EvolutionStrategy {
            config,
            state: State::default(),
        })
    }

    pub fn config(&self) -> &EvolutionConfig {
        &self.config
    }

    /// Generation-0 points for up to `n` slots: unseen exact-front seeds in spread order, then random.
    fn generation_zero(
        &self,
        problem: &Problem,
        history: &History,
        batch: &mut HashSet<Point>,
        rng: &mut impl Rng,
        n: usize,
    ) -> Result<Vec<Point>> {
        let mut out = Vec::with_capacity(n);
        if self.config.seeded {
            let front = problem.exact_front()?;
            let seeds = problem
                .exact_spread()?
                .iter()
                .take(self.config.population / 2)
                .map(|&i| &front[i].point);
            for p in seeds {
                if out.len() == n {
                    break;
                }
                if !history.contains(p) && batch.insert(p.clone()) {
                    out.push(p.clone());
                }
            }
        }
        let rest = n - out.len();
        out.extend(random_batch(problem, history, batch, rng, rest));
        Ok(out)
    }

    /// Up to `n` offspring of the parents.
    fn offspring(
        &self,
        problem: &Problem,
        history: &History,
        batch: &mut HashSet<Point>,
        rng: &mut impl Rng,
        n: usize,
    ) -> Vec<Point> {
        let parents: Vec<&Observed> = self
            .state
            .parents
            .iter()
            .map(|&i| &history.trials()[i])
            .collect();
        let ranked = Ranked::new(problem, &parents);
        let searchable: Vec<usize> = problem.searchable().collect();
        let mutation = self
            .config
            .mutation
            .unwrap_or(1.0 / searchable.len().max(1) as f64);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let a = &parents[ranked.tournament(rng)].point;
            let b = &parents[ranked.tournament(rng)].point;
            let child = if rng.random::<f64>() < self.config.crossover {
                uniform_crossover(rng, a, b)
            } else {
                a.clone()
            };
            let fresh = (0..MUTATION_RETRIES)
                .map(|attempt| {
                    let mut c = child.clone();
                    mutate(rng, problem, &searchable, mutation, attempt > 0, &mut c);
                    c
                })
                .find(|c| !history.contains(c) && !batch.contains(c))
                .or_else(|| random_unseen(problem, history, batch, rng, REDRAWS));
            let Some(p) = fresh else {
                break;
            };
            batch.insert(p.clone());
            out.push(p);
        }
        out
    }

    /// Checks that the state refers only to trials of `history` (a snapshot of another run would not).
    fn check_history(&self, history: &History) -> Result<()> {
        if self.state.told > history.len() {
            return Err(Error::search(format!(
                "evolution: told {} trials but the history has only {} (a snapshot of another run?)",
                self.state.told,
                history.len()
            )));
        }
        Ok(())
    }
}

/// Up to `n` random points neither in `history` nor in `batch` (which they join).
fn random_batch(
    problem: &Problem,
    history: &History,
    batch: &mut HashSet<Point>,
    rng: &mut impl Rng,
    n: usize,
) -> Vec<Point> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let Some(p) = random_unseen(problem, history, batch, rng, REDRAWS) else {
            break;
        };
        batch.insert(p.clone());
        out.push(p);
    }
    out
}

/// The objectives `[cost, quality]` and the violation of a trial; a failed trial (or one whose quality
/// is not a finite number) is infeasible with infinite violation and infinite quality.
fn objectives(problem: &Problem, trial: &Observed) -> (Vec<f64>, f64) {
    let quality = trial.quality.filter(|q| q.is_finite());
    (
        vec![problem.cost(&trial.point), quality.unwrap_or(f64::INFINITY)],
        problem.violation(&trial.point, quality),
    )
}

/// Environmental selection: `size` of the trials `candidates`, by fronts under constraint-domination,
/// the last front cut by crowding distance (largest first, ties to the earlier trial); increasing.
fn select(problem: &Problem, history: &History, candidates: &[usize], size: usize) -> Vec<usize> {
    let (objs, violations): (Vec<Vec<f64>>, Vec<f64>) = candidates
        .iter()
        .map(|&i| objectives(problem, &history.trials()[i]))
        .unzip();
    let mut chosen = Vec::with_capacity(size);
    for front in non_dominated_sort(&objs, &violations) {
        let room = size - chosen.len();
        if front.len() <= room {
            chosen.extend(front.iter().map(|&k| candidates[k]));
        } else {
            let d = crowding_distance(&objs, &front);
            let mut order: Vec<usize> = (0..front.len()).collect();
            order.sort_by(|&a, &b| {
                d[b].total_cmp(&d[a])
                    .then(candidates[front[a]].cmp(&candidates[front[b]]))
            });
            chosen.extend(order[..room].iter().map(|&k| candidates[front[k]]));
        }
        if chosen.len() == size {
            break;
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Rank (front number) and crowding distance of each parent, for the tournaments.
struct Ranked {
    rank: Vec<usize>,
    crowding: Vec<f64>,
}

impl Ranked {
    fn new(problem: &Problem, parents: &[&Observed]) -> Ranked {
        let (objs, violations): (Vec<Vec<f64>>, Vec<f64>) =
            parents.iter().map(|t| objectives(problem, t)).unzip();
        let mut rank = vec![0; parents.len()];
        let mut crowding = vec![0.0; parents.len()];
        for (r, front) in non_dominated_sort(&objs, &violations).iter().enumerate() {
            for (&k, d) in front.iter().zip(crowding_distance(&objs, front)) {
                rank[k] = r;
                crowding[k] = d;
            }
        }
        Ranked { rank, crowding }
    }

    /// Binary tournament between two distinct parents: lower rank wins, then larger crowding, then the
    /// first drawn.
    fn tournament(&self, rng: &mut impl Rng) -> usize {
        let n = self.rank.len();
        if n < 2 {
            return 0;
        }
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n - 1);
        if b >= a {
            b += 1;
        }
        let better = self.rank[b]
            .cmp(&self.rank[a])
            .then(self.crowding[a].total_cmp(&self.crowding[b]));
        if better.is_lt() {
            b
        } else {
            a
        }
    }
}

/// Each group from either parent with probability ½.
fn uniform_crossover(rng: &mut impl Rng, a: &[u16], b: &[u16]) -> Point {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| if rng.random::<bool>() { x } else { y })
        .collect()
}

/// Moves each searchable group to another choice (uniformly) with probability `prob`; with `force`,
/// at least one group moves.
fn mutate(
    rng: &mut impl Rng,
    problem: &Problem,
    searchable: &[usize],
    prob: f64,
    force: bool,
    point: &mut [u16],
) {
    let mut moved = false;
    for &g in searchable {
        if rng.random::<f64>() < prob {
            point[g] = other_choice(rng, problem.choices[g], point[g]);
            moved = true;
        }
    }
    if force && !moved && !searchable.is_empty() {
        let g = searchable[rng.random_range(0..searchable.len())];
        point[g] = other_choice(rng, problem.choices[g], point[g]);
    }
}

/// A choice of `0..choices` other than `current`, uniformly (`choices` ≥ 2).
fn other_choice(rng: &mut impl Rng, choices: u16, current: u16) -> u16 {
    let x = rng.random_range(0..choices - 1);
    if x >= current {
        x + 1
    } else {
        x
    }
}

impl Strategy for EvolutionStrategy {
    fn name(&self) -> &'static str {
        "evolution"
    }

    fn ask(&mut self, problem: &Problem, history: &History, n: usize) -> Result<Vec<Point>> {
        self.check_history(history)?;
        let mut rng = super::rng_for(problem.seed, self.name(), history.len() as u64);
        let mut batch = HashSet::with_capacity(n);
        let zero = self.config.population.saturating_sub(history.len()).min(n);
        let mut out = self.generation_zero(problem, history, &mut batch, &mut rng, zero)?;
        let rest = n - zero;
        if rest > 0 && out.len() == zero {
            if self.state.parents.is_empty() {
                // Generation 0 asked but not yet told (asks ahead of tells): more random points.
                out.extend(random_batch(problem, history, &mut batch, &mut rng, rest));
            } else {
                out.extend(self.offspring(problem, history, &mut batch, &mut rng, rest));
            }
        }
        Ok(out)
    }

    fn tell(&mut self, problem: &Problem, history: &History, told: Range<usize>) -> Result<()> {
        if told.start != self.state.told || told.end < told.start || told.end > history.len() {
            return Err(Error::search(format!(
                "evolution: told trials {}..{}, but {} trials were told before and the history has {}; \
                 trials must be told in order, each once",
                told.start,
                told.end,
                self.state.told,
                history.len()
            )));
        }
        let p = self.config.population;
        while self.state.told < told.end {
            let boundary = (self.state.told / p + 1) * p;
            if boundary > told.end {
                self.state.told = told.end;
                break;
            }
            let mut candidates = self.state.parents.clone();
            candidates.extend(boundary - p..boundary);
            self.state.parents = select(problem, history, &candidates, p);
            self.state.told = boundary;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<String> {
        serde_json::to_string(&self.state)
            .map_err(|e| Error::search(format!("evolution: cannot write the snapshot: {e}")))
    }

    fn restore(&mut self, snapshot: &str) -> Result<()> {
        let state: State = serde_json::from_str(snapshot)
            .map_err(|e| Error::search(format!("evolution: unreadable snapshot: {e}")))?;
        let p = self.config.population;
        let generation_start = state.told / p * p;
        let want = if state.told >= p { p } else { 0 };
        let increasing = state.parents.windows(2).all(|w| w[0] < w[1]);
        if state.parents.len() != want
            || !increasing
            || state.parents.iter().any(|&i| i >= generation_start)
        {
            return Err(Error::search(format!(
                "evolution: snapshot does not fit a population of {p}: after {} trials told it needs \
                 {want} distinct parents in increasing order, each before trial {generation_start}",
                state.told
            )));
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::synthetic::Synthetic;
    use crate::strategy::{drive, CostLimit, RandomStrategy};

    /// Evolution's hypervolume must beat random's by at least this much on every seed, and unseeded
    /// evolution's on the mean (hypervolumes are normalised to [0, 1]; random reaches about 0.64).
    const HV_MARGIN: f64 = 0.05;

    fn evolution() -> EvolutionStrategy {
        EvolutionStrategy::new(EvolutionConfig::default()).unwrap()
    }

    /// The synthetic quality, with a few failed trials so failures take part in selection.
    fn evaluate(s: &Synthetic, p: &[u16]) -> Option<f64> {
        (p.iter().map(|&c| c as usize).sum::<usize>() % 11 != 3).then(|| s.quality(p))
    }

    #[test]
    fn config_checks_name_the_field() {
        let bad = [
            (
                EvolutionConfig {
                    population: 1,
                    ..Default::default()
                },
                "population",
            ),
            (
                EvolutionConfig {
                    crossover: 1.5,
                    ..Default::default()
                },
                "crossover",
            ),
            (
                EvolutionConfig {
                    mutation: Some(f64::NAN),
                    ..Default::default()
                },
                "mutation",
            ),
        ];
        for (config, field) in bad {
            let e = EvolutionStrategy::new(config).unwrap_err().to_string();
            assert!(e.contains(field), "{e:?} should name {field}");
        }
        assert!(EvolutionConfig::default().validate().is_ok());
    }

    #[test]
    fn telling_in_pieces_equals_telling_at_once() {
        let s = Synthetic::new(10, 4, 2);
        let h = drive(&mut evolution(), &s.problem, 90, 7, |p| evaluate(&s, p)).unwrap();
        assert_eq!(h.len(), 90);
        assert!(h.trials().iter().any(|t| t.quality.is_none()));
        let splits: [&[usize]; 4] = [
            &[0, 90],
            &[0, 5, 33, 90],
            &[0, 16, 32, 48, 64, 80, 90],
            &(0..=90).collect::<Vec<_>>(),
        ];
        let mut reference: Option<(State, Vec<Point>)> = None;
        for cuts in splits {
            let mut e = evolution();
            for w in cuts.windows(2) {
                e.tell(&s.problem, &h, w[0]..w[1]).unwrap();
            }
            let asked = e.ask(&s.problem, &h, 8).unwrap();
            assert_eq!(asked.len(), 8);
            match &reference {
                None => {
                    // Five selections happened: the parents are no longer generation 0.
                    assert_eq!(e.state.told, 90);
                    assert_eq!(e.state.parents.len(), 16);
                    assert_ne!(e.state.parents, (0..16).collect::<Vec<_>>());
                    reference = Some((e.state.clone(), asked));
                }
                Some((state, want)) => {
                    assert_eq!(&e.state, state, "state after tells at {cuts:?}");
                    assert_eq!(&asked, want, "next ask after tells at {cuts:?}");
                }
            }
        }
        // Telling out of order is an error, not a silent change of state.
        let mut e = evolution();
        e.tell(&s.problem, &h, 0..10).unwrap();
        assert!(e.tell(&s.problem, &h, 20..30).is_err());
        assert!(e.tell(&s.problem, &h, 10..91).is_err());
    }

    #[test]
    fn snapshot_and_restore_give_the_same_next_ask() {
        let s = Synthetic::new(10, 4, 4);
        let h = drive(&mut evolution(), &s.problem, 75, 8, |p| evaluate(&s, p)).unwrap();
        let mut a = evolution();
        a.tell(&s.problem, &h, 0..75).unwrap();
        let mut b = evolution();
        b.restore(&a.snapshot().unwrap()).unwrap();
        assert_eq!(a.state, b.state);
        assert_eq!(
            a.ask(&s.problem, &h, 8).unwrap(),
            b.ask(&s.problem, &h, 8).unwrap()
        );
        // A restored strategy goes on being told from where it was.
        assert!(b.tell(&s.problem, &h, 75..75).is_ok());

        let garbage = [
            "",
            "not json",
            "[]",
            r#"{"parents": [], "told": 40}"#,
            r#"{"parents": [3, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], "told": 40}"#,
            r#"{"parents": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 32], "told": 40}"#,
            r#"{"parents": [1], "told": 3}"#,
            r#"{"parents": [], "told": -1}"#,
            r#"{"parents": [], "told": 3, "extra": 1}"#,
        ];
        for g in garbage {
            let mut e = evolution();
            assert!(e.restore(g).is_err(), "accepted {g:?}");
            assert_eq!(
                e.state,
                State::default(),
                "a failed restore leaves the state"
            );
        }
        // A snapshot from a longer run than the history is refused when asked.
        let mut e = evolution();
        e.restore(r#"{"parents": [], "told": 9}"#).unwrap();
        assert!(e.ask(&s.problem, &History::new(), 4).is_err());
    }

    #[test]
    fn generation_zero_starts_with_the_exact_front_seeds() {
        let s = Synthetic::new(8, 4, 9);
        let front = s.problem.exact_front().unwrap();
        let seeds: Vec<Point> = s
            .problem
            .exact_spread()
            .unwrap()
            .iter()
            .take(8)
            .map(|&i| front[i].point.clone())
            .collect();
        assert_eq!(
            seeds.len(),
            8,
            "the front has more than population / 2 points"
        );
        // In two asks of 4 and then random points: generation 0 is the first 16 trials.
        let mut e = evolution();
        let h = drive(&mut e, &s.problem, 16, 4, |p| Some(s.quality(p))).unwrap();
        let first: Vec<Point> = h.trials()[..8].iter().map(|t| t.point.clone()).collect();
        assert_eq!(first, seeds);
        let front_points: HashSet<&Point> = front.iter().map(|f| &f.point).collect();
        let seeded_later = h.trials()[8..]
            .iter()
            .filter(|t| front_points.contains(&t.point))
            .count();
        assert!(seeded_later < 2, "the rest of generation 0 is random");
        assert_eq!(e.state.parents, (0..16).collect::<Vec<_>>());

        let mut unseeded = EvolutionStrategy::new(EvolutionConfig {
            seeded: false,
            ..Default::default()
        })
        .unwrap();
        let asked = unseeded.ask(&s.problem, &History::new(), 8).unwrap();
        assert_ne!(asked, seeds);
    }

    /// A problem whose second cost ("size") runs against the objective cost, so cheap points are big.
    fn with_size_limit(s: Synthetic, max: f64) -> Problem {
        let mut p = s.problem;
        let table: Vec<Vec<f64>> = p
            .cost
            .iter()
            .map(|r| r.iter().rev().copied().collect())
            .collect();
        p.cost_limits.push(CostLimit {
            name: "size".into(),
            table,
            max,
        });
        p
    }

    #[test]
    fn an_infeasible_point_never_displaces_a_feasible_one() {
        for feasible_wanted in [6, 10, 24] {
            let s = Synthetic::new(6, 4, 5);
            let mut rng = crate::strategy::rng_for(1, "test", 0);
            let points: Vec<Point> = (0..32).map(|_| s.problem.random_point(&mut rng)).collect();
            // The size limit that leaves `feasible_wanted` of the points feasible.
            let size = |p: &[u16]| -> f64 {
                let c = &s.problem.cost;
                p.iter()
                    .enumerate()
                    .map(|(g, &k)| c[g][c[g].len() - 1 - k as usize])
                    .sum()
            };
            let mut sizes: Vec<f64> = points.iter().map(|p| size(p)).collect();
            sizes.sort_by(f64::total_cmp);
            let problem = with_size_limit(s, sizes[feasible_wanted - 1]);
            // Every trial has the same quality, so the cheapest points — the big, infeasible ones —
            // dominate on the objectives alone.
            let mut h = History::new();
            for (i, point) in points.into_iter().enumerate() {
                h.push(Observed {
                    number: i as u64,
                    point,
                    quality: Some(0.5),
                    proxy: false,
                });
            }
            let mut e = evolution();
            e.tell(&problem, &h, 0..32).unwrap();
            let violation = |i: usize| problem.violation(&h.trials()[i].point, Some(0.5));
            let feasible: Vec<usize> = (0..32).filter(|&i| violation(i) == 0.0).collect();
            assert!(
                feasible.len() >= feasible_wanted && feasible.len() < 32,
                "{} feasible",
                feasible.len()
            );
            let parents = &e.state.parents;
            if feasible.len() >= 16 {
                assert!(parents.iter().all(|&i| violation(i) == 0.0), "{parents:?}");
            } else {
                assert!(feasible.iter().all(|i| parents.contains(i)), "{parents:?}");
                // The rest are the least infeasible.
                let worst_kept = parents.iter().map(|&i| violation(i)).fold(0.0, f64::max);
                let best_dropped = (0..32)
                    .filter(|i| !parents.contains(i))
                    .map(violation)
                    .fold(f64::INFINITY, f64::min);
                assert!(worst_kept <= best_dropped, "{worst_kept} > {best_dropped}");
            }
            // Not vacuous: on cost alone some dropped infeasible trial beats a kept feasible one.
            let cost = |i: usize| problem.cost(&h.trials()[i].point);
            let dearest_kept_feasible = feasible
                .iter()
                .filter(|i| parents.contains(i))
                .map(|&i| cost(i))
                .fold(0.0, f64::max);
            assert!(
                (0..32).any(|i| !parents.contains(&i) && cost(i) < dearest_kept_feasible),
                "the case does not test constraint-domination"
            );
        }
    }

    #[test]
    fn evolution_beats_random_on_hypervolume() {
        const TRIALS: usize = 300;
        const BATCH: usize = 8;
        let mut sums = [0.0; 3];
        for seed in 0..5 {
            let s = Synthetic::new(12, 6, seed);
            let hv = |strategy: &mut dyn Strategy| {
                drive(strategy, &s.problem, TRIALS, BATCH, |p| Some(s.quality(p)))
                    .unwrap()
                    .hypervolume(&s.problem)
            };
            let random = hv(&mut RandomStrategy::new());
            let seeded = hv(&mut evolution());
            let unseeded = hv(&mut EvolutionStrategy::new(EvolutionConfig {
                seeded: false,
                ..Default::default()
            })
            .unwrap());
            eprintln!(
                "seed {seed}: hypervolume random {random:.4}, evolution {seeded:.4}, \
                 evolution unseeded {unseeded:.4}"
            );
            assert!(
                seeded > random + HV_MARGIN,
                "seed {seed}: evolution {seeded:.4} must beat random {random:.4} by {HV_MARGIN}"
            );
            for (sum, v) in sums.iter_mut().zip([random, seeded, unseeded]) {
                *sum += v / 5.0;
            }
        }
        let [random, seeded, unseeded] = sums;
        eprintln!(
            "mean hypervolume over 5 seeds, {TRIALS} trials: random {random:.4}, evolution \
             {seeded:.4}, evolution unseeded {unseeded:.4}"
        );
        // Not only the exact-front seeds: the genetic search itself beats random.
        assert!(
            unseeded > random + HV_MARGIN,
            "mean: unseeded evolution {unseeded:.4} must beat random {random:.4} by {HV_MARGIN}"
        );
    }
}
