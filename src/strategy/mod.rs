//! # Search strategies
//!
//! A [`Strategy`] proposes points of a search space (one choice index per group, [`Point`]) and learns
//! from their measured quality. It works on a [`Problem`]: the number of choices of each group, the
//! exact additive cost of every (group, choice) under the hardware profile, the cost and quality limits,
//! the additive sensitivity [`Predictor`], the run's seed and the hypervolume reference point. It never
//! sees candle, the store or the clock, so every strategy is tested with a fake evaluator in
//! milliseconds.
//!
//! The trial [`History`] is the truth: strategies read it, they do not own it. A strategy's state is a
//! function of the problem and the history it has been told, and is the same however the history was
//! split into `tell` calls — so a resumed run rebuilds its strategy by telling it the stored trials, and
//! asks exactly what the uninterrupted run would have asked. Randomness comes from [`rng_for`], seeded
//! by the run seed, the strategy and the number of the first trial being asked, never from entropy.
//!
//! Two objectives are minimised: the cost (the profile's latency, the size or the BOPs) and the quality
//! drop. A point's constraint *violation* ([`Problem::violation`]) is 0 when it meets every limit.

pub mod bayes;
pub mod evolution;
pub mod exact;
pub mod random;
pub mod refine;
pub mod synthetic;

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use self::bayes::{BayesConfig, BayesStrategy};
pub use self::evolution::{EvolutionConfig, EvolutionStrategy};
pub use self::exact::{ExactStrategy, FrontPoint};
pub use self::random::RandomStrategy;
use crate::error::{Error, Result};
use crate::pareto;
use crate::sensitivity::Predictor;
use crate::space::Point;

/// A limit on an additive cost other than (or as well as) the objective.
#[derive(Clone, Debug)]
pub struct CostLimit {
    /// What it limits, for messages (`latency`, `size`, `bops`).
    pub name: String,
    /// `table[group][choice]`: the group's share of this cost.
    pub table: Vec<Vec<f64>>,
    /// The largest allowed total.
    pub max: f64,
}

/// Everything a strategy may know about the search.
#[derive(Debug)]
pub struct Problem {
    /// Number of choices of each group (1 for a pinned or excluded group).
    pub choices: Vec<u16>,
    /// `cost[group][choice]`: the minimised cost's share of each group; totals add up.
    pub cost: Vec<Vec<f64>>,
    pub cost_limits: Vec<CostLimit>,
    /// The largest allowed quality drop.
    pub max_quality: Option<f64>,
    /// Predicted quality drop (additive).
    pub predictor: Predictor,
    pub seed: u64,
    /// Hypervolume reference point `[cost, quality]` (see [`History::hypervolume`]).
    pub reference: [f64; 2],
    /// The space's uniform baselines (all-f32, all-f16, all-int8…): the first trials of every run,
    /// before the strategy is asked anything (see [`untried_baselines`]).
    baselines: Vec<Point>,
    /// Which predictor this is: 0 for the set-up's, else the number of trials that refined it (see
    /// [`Problem::with_predictor`]); what a strategy memoising anything derived from the predictor keys
    /// it by.
    revision: usize,
    exact: OnceLock<Result<Vec<FrontPoint>>>,
    spread: OnceLock<Vec<usize>>,
}

impl Problem {
    /// A problem; checks that the tables agree with `choices` and the limits are positive.
    pub fn new(
        choices: Vec<u16>,
        cost: Vec<Vec<f64>>,
        cost_limits: Vec<CostLimit>,
        max_quality: Option<f64>,
        predictor: Predictor,
        seed: u64,
        reference: [f64; 2],
    ) -> Result<Problem> {
        let shape_ok = |t: &[Vec<f64>]| {
            t.len() == choices.len() && t.iter().zip(&choices).all(|(r, &c)| r.len() == c as usize)
        };
        if choices.is_empty() || choices.contains(&0) {
            return Err(Error::search(
                "a problem needs at least one group, each with a choice",
            ));
        }
        if !shape_ok(&cost) || !shape_ok(predictor.table()) {
            return Err(Error::search(
                "cost and predictor tables must have one row per group and one entry per choice",
            ));
        }
        for l in &cost_limits {
            if !shape_ok(&l.table) || l.max.is_nan() || l.max <= 0.0 {
                return Err(Error::search(format!(
                    "limit on {}: needs a table shaped like the space and a positive maximum, not {}",
                    l.name, l.max
                )));
            }
        }
        if max_quality.is_some_and(|q| q.is_nan() || q <= 0.0)
            || !reference.iter().all(|r| *r > 0.0)
        {
            return Err(Error::search(
                "the quality limit and the reference point must be positive",
            ));
        }
        Ok(Problem {
            choices,
            cost,
            cost_limits,
            max_quality,
            predictor,
            seed,
            reference,
            baselines: Vec::new(),
            revision: 0,
            exact: OnceLock::new(),
            spread: OnceLock::new(),
        })
    }

    /// The problem with `baselines` as the first trials of every run (duplicates dropped, order
    /// kept); an error if one is not a point of the space.
    pub fn with_baselines(mut self, baselines: Vec<Point>) -> Result<Problem> {
        let mut seen = HashSet::new();
        for b in baselines {
            let fits =
                b.len() == self.choices.len() && b.iter().zip(&self.choices).all(|(&c, &n)| c < n);
            if !fits {
                return Err(Error::search(format!(
                    "baseline {b:?} is not a point of this {}-group space",
                    self.choices.len()
                )));
            }
            if seen.insert(b.clone()) {
                self.baselines.push(b);
            }
        }
        Ok(self)
    }

    /// The same problem with another `predictor` (of the same shape), as revision `revision` (the number
    /// of trials that refined it): the search controller's way of letting trials refine the predictor.
    pub fn with_predictor(&self, predictor: Predictor, revision: usize) -> Result<Problem> {
        let mut p = Problem::new(
            self.choices.clone(),
            self.cost.clone(),
            self.cost_limits.clone(),
            self.max_quality,
            predictor,
            self.seed,
            self.reference,
        )?;
        p.baselines = self.baselines.clone();
        p.revision = revision;
        Ok(p)
    }

    /// Which predictor the problem has: 0 for the set-up's, else the number of trials that refined it.
    pub fn revision(&self) -> usize {
        self.revision
    }

    /// The uniform baselines every run starts with.
    pub fn baselines(&self) -> &[Point] {
        &self.baselines
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.choices.len()
    }

    /// Groups with more than one choice.
    pub fn searchable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.choices.len()).filter(|&g| self.choices[g] > 1)
    }

    /// The minimised cost of `point`.
    pub fn cost(&self, point: &[u16]) -> f64 {
        sum(&self.cost, point)
    }

    /// The predicted quality drop of `point`.
    pub fn predict(&self, point: &[u16]) -> f64 {
        self.predictor.predict(point)
    }

    /// How far `point` misses the cost limits: the sum of relative excesses (0 = within all of them).
    pub fn cost_violation(&self, point: &[u16]) -> f64 {
        self.cost_limits
            .iter()
            .map(|l| ((sum(&l.table, point) - l.max) / l.max).max(0.0))
            .sum()
    }

    /// The violation of a trial: cost excess plus the relative excess of its quality over the quality
    /// limit; infinite for a failed trial (`quality` `None`).
    pub fn violation(&self, point: &[u16], quality: Option<f64>) -> f64 {
        let Some(q) = quality else {
            return f64::INFINITY;
        };
        let qv = self.max_quality.map_or(0.0, |m| ((q - m) / m).max(0.0));
        self.cost_violation(point) + qv
    }

    /// The exact front of predicted quality against cost, within the cost limits (computed once; see
    /// [`exact`]).
    pub fn exact_front(&self) -> Result<&[FrontPoint]> {
        match self.exact.get_or_init(|| exact::solve(self)) {
            Ok(f) => Ok(f),
            Err(e) => Err(Error::search(format!("exact front: {e}"))),
        }
    }

    /// Indices of [`Problem::exact_front`] in cost-spread order ([`exact::spread_by_cost`]: cheapest,
    /// dearest, then midpoints in cost), computed once: the order every strategy seeds from.
    pub fn exact_spread(&self) -> Result<&[usize]> {
        let front = self.exact_front()?;
        Ok(self.spread.get_or_init(|| {
            let costs: Vec<f64> = front.iter().map(|f| f.cost).collect();
            exact::spread_by_cost(&costs)
        }))
    }

    /// A uniformly random point.
    pub fn random_point(&self, rng: &mut impl rand::Rng) -> Point {
        self.choices
            .iter()
            .map(|&c| rng.random_range(0..c))
            .collect()
    }
}

fn sum(table: &[Vec<f64>], point: &[u16]) -> f64 {
    table.iter().zip(point).map(|(r, &c)| r[c as usize]).sum()
}

/// A trial as strategies see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub number: u64,
    pub point: Point,
    /// Measured quality drop; `None` for a failed trial.
    pub quality: Option<f64>,
    /// Whether `quality` is a proxy's estimate (a trial pruned on its proxy evaluation, `search
    /// --fidelity`): strategies learn from it; the measured front and its hypervolume ignore it.
    pub proxy: bool,
}

/// The trials so far, in trial order, with a set of the points already tried.
#[derive(Clone, Debug, Default)]
pub struct History {
    trials: Vec<Observed>,
    seen: HashSet<Point>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Appends a trial (numbers must follow on).
    pub fn push(&mut self, t: Observed) {
        debug_assert_eq!(t.number, self.trials.len() as u64, "trials out of order");
        self.seen.insert(t.point.clone());
        self.trials.push(t);
    }

    pub fn trials(&self) -> &[Observed] {
        &self.trials
    }

    pub fn len(&self) -> usize {
        self.trials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.trials.is_empty()
    }

    /// Whether `point` was tried already.
    pub fn contains(&self, point: &[u16]) -> bool {
        self.seen.contains(point)
    }

    /// Indices of the trials on the measured front: complete, feasible and not dominated in
    /// (cost, quality).
    pub fn front(&self, problem: &Problem) -> Vec<usize> {
        let feasible: Vec<(usize, [f64; 2])> = self
            .trials
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.proxy)
            .filter_map(|(i, t)| {
                let q = t.quality?;
                (problem.violation(&t.point, Some(q)) == 0.0)
                    .then(|| (i, [problem.cost(&t.point), q]))
            })
            .collect();
        let pts: Vec<[f64; 2]> = feasible.iter().map(|f| f.1).collect();
        pareto::front_2d(&pts)
            .into_iter()
            .map(|k| feasible[k].0)
            .collect()
    }

    /// Hypervolume of the feasible complete trials in (cost / reference cost, quality / reference
    /// quality): 0 for nothing better than the reference, at most 1.
    pub fn hypervolume(&self, problem: &Problem) -> f64 {
        let [rc, rq] = problem.reference;
        let pts: Vec<[f64; 2]> = self
            .trials
            .iter()
            .filter(|t| !t.proxy)
            .filter_map(|t| {
                let q = t.quality?;
                (problem.violation(&t.point, Some(q)) == 0.0)
                    .then(|| [problem.cost(&t.point) / rc, q / rq])
            })
            .collect();
        pareto::hypervolume_2d(&pts, [1.0, 1.0])
    }
}

/// A search strategy (see the module docs for the contract).
pub trait Strategy: Send {
    /// The name stored in the journal and the run manifest.
    fn name(&self) -> &'static str;

    /// Proposes up to `n` points not in `history`, for trials `history.len()..`. Fewer (even none) when
    /// it has nothing left to propose; the run then ends. Deterministic given the problem, the history
    /// and what the strategy has been told.
    fn ask(&mut self, problem: &Problem, history: &History, n: usize) -> Result<Vec<Point>>;

    /// Learns trials `told` of `history` (already pushed, in trial order). Telling `a..b` then `b..c`
    /// leaves the same state as telling `a..c`. `problem` is always the run's set-up problem, also when
    /// `ask` is given one whose predictor trials refined ([`refine`]): what `tell` learns must not
    /// depend on the predictor, so that a resumed run, which tells its whole history at once, is in
    /// the state of the uninterrupted one. A strategy whose proposals depend on the history alone
    /// (read at each `ask`) keeps this default, which learns nothing.
    fn tell(
        &mut self,
        _problem: &Problem,
        _history: &History,
        _told: std::ops::Range<usize>,
    ) -> Result<()> {
        Ok(())
    }

    /// The state as text (JSON), for the store's snapshots. Default: a stateless strategy's `{}`.
    fn snapshot(&self) -> Result<String> {
        Ok("{}".into())
    }

    /// Restores a state written by [`Strategy::snapshot`]. Default: nothing to restore.
    fn restore(&mut self, _snapshot: &str) -> Result<()> {
        Ok(())
    }
}

/// The strategies the CLI offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    Exact,
    Evolution,
    Bayes,
    Random,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Exact,
        StrategyKind::Evolution,
        StrategyKind::Bayes,
        StrategyKind::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Exact => "exact",
            StrategyKind::Evolution => "evolution",
            StrategyKind::Bayes => "bayes",
            StrategyKind::Random => "random",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The strategy tag of the trials that evaluate the space's baselines.
pub const BASELINE: &str = "baseline";

/// Up to `n` of the problem's baselines that `history` has not tried, in order: what a run evaluates
/// before it asks its strategy anything, so that the measured front is never worse than a uniform
/// baseline. A function of the history only (a resumed run asks what the uninterrupted one asked; a
/// run stored before baselines were trials gets them when it is resumed).
pub fn untried_baselines(problem: &Problem, history: &History, n: usize) -> Vec<Point> {
    problem
        .baselines
        .iter()
        .filter(|b| !history.contains(b))
        .take(n)
        .cloned()
        .collect()
}

/// The random generator for the trials asked from trial `first` on, by strategy `name`, in a run seeded
/// with `seed`.
pub fn rng_for(seed: u64, name: &str, first: u64) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-rng-v1\n");
    h.update(&seed.to_le_bytes());
    h.update(name.as_bytes());
    h.update(&first.to_le_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

/// Runs `strategy` on `problem` for up to `trials` trials, asking `batch` at a time and measuring each
/// point with `evaluate` (`None` = failed): the search loop without store, threads or clock, for tests
/// and benchmarks. As in a run, the problem's baselines are the first trials.
pub fn drive(
    strategy: &mut dyn Strategy,
    problem: &Problem,
    trials: usize,
    batch: usize,
    evaluate: impl FnMut(&[u16]) -> Option<f64>,
) -> Result<History> {
    drive_refined(strategy, problem, None, trials, batch, evaluate)
}

/// [`drive`], with the trials refining the predictor as a run's do (see [`refine`]) when `refiner` is
/// given.
pub fn drive_refined(
    strategy: &mut dyn Strategy,
    problem: &Problem,
    refiner: Option<refine::Refiner>,
    trials: usize,
    batch: usize,
    mut evaluate: impl FnMut(&[u16]) -> Option<f64>,
) -> Result<History> {
    let mut history = History::new();
    let mut refined = refine::Refined::default();
    while history.len() < trials {
        let n = batch.min(trials - history.len());
        let baselines = untried_baselines(problem, &history, n);
        let asked = if baselines.is_empty() {
            if let Some(r) = refiner {
                r.update(problem, &history, &mut refined);
            }
            strategy.ask(refined.problem(problem), &history, n)?
        } else {
            baselines
        };
        if asked.is_empty() {
            break;
        }
        let start = history.len();
        for point in asked {
            let quality = evaluate(&point);
            let number = history.len() as u64;
            history.push(Observed {
                number,
                point,
                quality,
                proxy: false,
            });
        }
        strategy.tell(problem, &history, start..history.len())?;
    }
    Ok(history)
}

/// A fresh strategy of `kind` with its default settings.
pub fn build(kind: StrategyKind) -> Result<Box<dyn Strategy>> {
    Ok(match kind {
        StrategyKind::Exact => Box::new(ExactStrategy::new()),
        StrategyKind::Random => Box::new(RandomStrategy::new()),
        StrategyKind::Evolution => Box::new(EvolutionStrategy::new(EvolutionConfig::default())?),
        StrategyKind::Bayes => Box::new(BayesStrategy::new(BayesConfig::default())?),
    })
}
