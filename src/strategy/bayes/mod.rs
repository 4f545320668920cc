//! # The Bayesian strategy: a Gaussian process on the predictor's residual, expected hypervolume improvement
//!
//! The additive sensitivity model already predicts most of a point's quality drop; what it misses is
//! the interaction between groups (errors compound) and its own mis-scaling. So the Gaussian process
//! models only the **residual** `r(p) = quality(p) − problem.predict(p)`, and a point's quality is
//! believed to be `predict(p) + r(p)` with `r(p) ~ N(μ(p), σ²(p))`. Cost is known exactly, so the
//! acquisition is the **expected hypervolume improvement** (EHVI) of the measured front with uncertainty
//! in the quality coordinate only, which has a cheap closed form.
//!
//! The Gaussian process itself (kernel, fit, hyperparameter grid, posterior) is in `gp.rs`, the exact
//! 2-D EHVI in `ehvi.rs`; this module encodes points, chooses the training set and the candidates, and
//! picks batches.
//!
//! ## Model
//!
//! - **Encoding.** Each searchable group `g` (more than one choice) gives two coordinates: its predicted
//!   term `table[g][c] − min_c table[g][·]` and its cost share `cost[g][c] − min_c cost[g][·]`, each
//!   divided by the largest such range over all groups (so the most sensitive group spans [0, 1] and an
//!   insensitive one a sliver of it), the cost coordinate weighted by [`COST_WEIGHT`]. Distances are thus
//!   sensitivity-aware: changing a group the predictor deems harmless barely moves a point, and choices
//!   the predictor cannot tell apart (both predicted 0, say f32 and f16) still differ by their cost.
//! - **Kernel and hyperparameters.** A Gaussian process with a Matérn 5/2 kernel on the encoded points,
//!   its lengthscale and noise chosen on the grid [`LENGTHSCALES`] × [`NOISE_RATIOS`] by the log marginal
//!   likelihood (`gp.rs`). The grid is searched once per [`REFIT`] trials, on the history up to the last
//!   multiple of it (memoised per predictor revision; a function of the history and the problem alone,
//!   so resumed runs choose the same); the
//!   asks in between fit the chosen cell only.
//! - **Training set.** The complete trials (finite quality). Beyond `max_points` of them: the measured
//!   front (thinned in spread order to at most half of `max_points`), then the most recent others. The
//!   model is refitted from scratch on each `ask`, so the per-ask cost is bounded by `max_points`, not by
//!   the length of the history.
//!
//! ## Acquisition
//!
//! In the hypervolume's normalised coordinates (cost / reference cost, quality / reference quality),
//! with the quality reference lowered to `max_quality` when there is one, the expected hypervolume
//! improvement of a point of known cost and quality `N(μ, σ²)` over the measured feasible front, exact
//! and O(front) per candidate (`ehvi.rs` gives the closed form). Points that break a cost limit are never
//! candidates; a quality above `max_quality` improves nothing, so EHVI counts the chance of meeting that
//! limit by itself.
//!
//! ## Candidates and batches
//!
//! Each `ask` scores up to `candidates` distinct, untried, cost-feasible points: up to a quarter from the
//! exact predicted front (untried ones, in cost-spread order: cheapest, dearest, then midpoints in
//! cost, so they cover the whole predicted front, its dear end included), then mutations (one or two
//! searchable groups set to another choice) of measured-front points up to seven eighths in all — each
//! parent the front point nearest in cost to a uniform draw over the front's cost range, so the
//! mutations spread along the whole front rather than crowd where its points do —, then uniformly random
//! points for the rest (each source has a bounded number of attempts, so a nearly exhausted or tightly
//! limited space yields fewer candidates, and an `ask` that finds none returns none). A batch
//! of `n` is picked greedily with the **kriging believer**: after each pick its believed quality (the
//! posterior mean) joins the front and its fantasised observation shrinks the posterior variance of the
//! other candidates (a rank-one update; the mean is unchanged by a fantasy equal to it), so the next
//! pick goes where the batch has not already looked. Until `initial` trials are complete the strategy
//! proposes the exact front's points in cost-spread order, then random points. A run's first trials
//! are the space's uniform baselines (all-f32, all-f16, all-int8…, see [`super::untried_baselines`]),
//! so the measured front starts with both of its ends.
//!
//! ## Cost
//!
//! Per `ask`: one `m × d` distance product and one Cholesky factorisation of at most `max_points` rows
//! (the fit; the whole grid, `LENGTHSCALES × NOISE_RATIOS` factorisations, once per [`REFIT`] trials),
//! one triangular solve with `candidates` right-hand sides (the posterior), and the batch picked
//! **lazily**: a pick only lowers the others' EHVI, so each candidate's last score bounds its current
//! one and only the candidate on top of the heap is rescored (with its believer updates, each
//! O(`max_points` + batch)) until the top is fresh — the batch a full scan would pick, with about one rescoring
//! per pick instead of `candidates` (the same batch but where two candidates' EHVIs tie to within
//! rounding). EHVI sums skip the steps more than [`CERTAIN_Z`] standard
//! deviations from the mean by prefix sums. Measured in release (`cargo bench --bench strategy`, a warm
//! strategy at a 2,000-trial history, ask 8 + tell 8): 3.3 ms on a demo-shaped problem, 5.8 ms on a
//! MiniLM-shaped one — 0.4 to 0.7 ms per trial.
//!
//! ## State and determinism
//!
//! `ask` is a function of the problem and the history only; its random generator is
//! `rng_for(seed, "bayes", history.len())`. The state is the number of trials told, so any split of
//! `tell` calls leaves the same state, and a snapshot is `{"told": n}`.
//!
//! ## References
//!
//! - C. E. Rasmussen, C. K. I. Williams, "Gaussian processes for machine learning", MIT Press, 2006
//!   (algorithm 2.1, the Matérn class §4.2, the marginal likelihood §5.4).
//! - D. Ginsbourger, R. Le Riche, L. Carraro, "Kriging is well-suited to parallelize optimization",
//!   Computational Intelligence in Expensive Optimization Problems, Springer, 2010 (kriging believer).
//! - M. Emmerich, A. Deutz, J. W. Klinkenberg, "Hypervolume-based expected improvement: monotonicity
//!   properties and exact computation", CEC 2011 (the exact 2-D EHVI; more in `ehvi.rs`).

mod ehvi;
mod gp;

use std::collections::{BinaryHeap, HashSet};

use rand::Rng;
use serde::{Deserialize, Serialize};

use self::ehvi::Staircase;
pub use self::ehvi::CERTAIN_Z;
use self::gp::{Gp, Grid};
pub use self::gp::{LENGTHSCALES, NOISE_RATIOS};
use super::exact::spread_order;
use super::{rng_for, History, Problem, Strategy};
use crate::error::{Error, Result};
use crate::space::Point;

/// Weight of a group's cost-share coordinate relative to its predicted-quality coordinate.
pub const COST_WEIGHT: f64 = 0.25;
/// The hyperparameters are chosen on the whole grid once per this many trials (on the history up to
/// the last multiple), and kept fixed in between: one Cholesky factorisation per `ask` instead of
/// `LENGTHSCALES × NOISE_RATIOS`.
pub const REFIT: usize = 64;

/// Settings of [`BayesStrategy`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayesConfig {
    /// Complete trials before the Gaussian process is used: until then, exact-front points in spread
    /// order, then random ones.
    pub initial: usize,
    /// The most trials the Gaussian process is trained on (its cost grows as the cube of this).
    pub max_points: usize,
    /// Candidate points scored per `ask`.
    pub candidates: usize,
}

impl Default for BayesConfig {
    fn default() -> Self {
        BayesConfig {
            initial: 8,
            max_points: 256,
            candidates: 256,
        }
    }
}

impl BayesConfig {
    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, value: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(Error::search(format!(
                    "bayes: {name} must be in {lo}..={hi}, not {value}"
                )))
            }
        };
        check("initial", self.initial, 2, 100_000)?;
        check("max_points", self.max_points, 8, 2_048)?;
        check("candidates", self.candidates, 1, 100_000)
    }
}

/// The Bayesian strategy (see the module docs).
#[derive(Clone, Debug)]
pub struct BayesStrategy {
    config: BayesConfig,
    state: State,
    /// Memo of the hyperparameters chosen at a multiple of [`REFIT`] trials, with the revision of the
    /// problem's predictor they were chosen under (a pure function of the history and the problem, so
    /// not part of the state).
    hyper: Option<(usize, usize, Grid)>,
}

/// Everything `tell` learns: the number of trials told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    told: u64,
}

impl BayesStrategy {
    /// A strategy with a validated `config`.
    pub fn new(config: BayesConfig) -> Result<BayesStrategy> {
        config.validate()?;
        Ok(BayesStrategy {
            config,
            state: State::default(),
            hyper: None,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &BayesConfig {
        &self.config
    }
}

impl BayesStrategy {
    /// The hyperparameter grid for an `ask` at this history: the cell the full grid chose on the
    /// history as it was at the last multiple of [`REFIT`] trials (memoised for this predictor
    /// revision), or the full grid before the first one. A function of the history and the problem
    /// only, so resumed and uninterrupted runs agree.
    fn grid(&mut self, problem: &Problem, history: &History, encoder: &Encoder) -> Grid {
        let at = history.len() / REFIT * REFIT;
        if at == 0 {
            return Grid::Full;
        }
        if let Some((memo_at, revision, grid)) = self.hyper {
            if memo_at == at && revision == problem.revision() {
                return grid;
            }
        }
        let mut prefix = History::new();
        for t in &history.trials()[..at] {
            prefix.push(t.clone());
        }
        let front = prefix.front(problem);
        let gp = fit(
            problem,
            &prefix,
            &front,
            self.config.max_points,
            encoder,
            Grid::Full,
        );
        let grid = Grid::Fixed {
            factor: gp.factor,
            noise_ratio: gp.noise_ratio,
        };
        self.hyper = Some((at, problem.revision(), grid));
        grid
    }
}

/// The GP of the residuals `quality − predicted` of `history`'s training set; `front` is `history`'s
/// measured front.
fn fit(
    problem: &Problem,
    history: &History,
    front: &[usize],
    cap: usize,
    encoder: &Encoder,
    grid: Grid,
) -> Gp {
    let training = training_set(problem, history, front, cap);
    let mut x = Vec::with_capacity(training.len() * encoder.dim);
    let mut y = Vec::with_capacity(training.len());
    for &i in &training {
        let t = &history.trials()[i];
        encoder.encode_into(&t.point, &mut x);
        // `training_set` keeps finite qualities only.
        y.push(t.quality.unwrap_or(0.0) - problem.predict(&t.point));
    }
    Gp::fit(x, encoder.dim, &y, grid)
}

impl Strategy for BayesStrategy {
    fn name(&self) -> &'static str {
        "bayes"
    }

    fn ask(&mut self, problem: &Problem, history: &History, n: usize) -> Result<Vec<Point>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        check_history(problem, history)?;
        let mut rng = rng_for(problem.seed, "bayes", history.len() as u64);
        let complete = history
            .trials()
            .iter()
            .filter(|t| t.quality.is_some_and(f64::is_finite))
            .count();
        if complete < self.config.initial {
            return seeds(problem, history, n, &mut rng);
        }
        let encoder = Encoder::new(problem);
        let grid = self.grid(problem, history, &encoder);
        // The measured front, once: the training set, the candidates' parents and the EHVI use it.
        let front = history.front(problem);
        let gp = fit(
            problem,
            history,
            &front,
            self.config.max_points,
            &encoder,
            grid,
        );
        let candidates = candidates(problem, history, &front, self.config.candidates, &mut rng)?;
        Ok(pick_batch(
            problem, history, &front, &encoder, &gp, candidates, n,
        ))
    }

    fn tell(&mut self, _: &Problem, history: &History, told: std::ops::Range<usize>) -> Result<()> {
        if told.end > history.len() || told.start > told.end {
            return Err(Error::search(format!(
                "bayes: told trials {}..{} of a history of {}",
                told.start,
                told.end,
                history.len()
            )));
        }
        self.state.told = self.state.told.max(told.end as u64);
        Ok(())
    }

    fn snapshot(&self) -> Result<String> {
        serde_json::to_string(&self.state)
            .map_err(|e| Error::search(format!("bayes: cannot write the snapshot: {e}")))
    }

    fn restore(&mut self, snapshot: &str) -> Result<()> {
        self.state = serde_json::from_str(snapshot).map_err(|e| {
            Error::search(format!(
                "bayes: the snapshot is not a bayes state ({{\"told\": n}}): {e}"
            ))
        })?;
        Ok(())
    }
}

/// Every trial's point must belong to `problem`'s space (the model indexes its tables with them).
fn check_history(problem: &Problem, history: &History) -> Result<()> {
    for t in history.trials() {
        let fits = t.point.len() == problem.groups()
            && t.point.iter().zip(&problem.choices).all(|(&c, &n)| c < n);
        if !fits {
            return Err(Error::search(format!(
                "bayes: trial {} has point {:?}, which is not in this {}-group space",
                t.number,
                t.point,
                problem.groups()
            )));
        }
    }
    Ok(())
}

/// Before the model is used: untried exact-front points in spread order, then random cost-feasible ones.
fn seeds(problem: &Problem, history: &History, n: usize, rng: &mut impl Rng) -> Result<Vec<Point>> {
    let front = problem.exact_front()?;
    let mut out: Vec<Point> = Vec::with_capacity(n);
    for &i in problem.exact_spread()? {
        if out.len() == n {
            return Ok(out);
        }
        let p = &front[i].point;
        if !history.contains(p) && !out.contains(p) {
            out.push(p.clone());
        }
    }
    for _ in 0..n * 64 {
        if out.len() == n {
            break;
        }
        let p = problem.random_point(rng);
        if !history.contains(&p) && !out.contains(&p) && problem.cost_violation(&p) <= 0.0 {
            out.push(p);
        }
    }
    Ok(out)
}

/// Indices of the trials the model is trained on, ascending (see the module docs); `front` is
/// `history`'s measured front.
fn training_set(problem: &Problem, history: &History, front: &[usize], cap: usize) -> Vec<usize> {
    let trials = history.trials();
    let complete: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].quality.is_some_and(f64::is_finite))
        .collect();
    if complete.len() <= cap {
        return complete;
    }
    let mut front: Vec<usize> = front
        .iter()
        .copied()
        .filter(|&i| trials[i].quality.is_some_and(f64::is_finite))
        .collect();
    front.sort_by(|&a, &b| {
        problem
            .cost(&trials[a].point)
            .total_cmp(&problem.cost(&trials[b].point))
            .then(a.cmp(&b))
    });
    let mut chosen: HashSet<usize> = spread_order(front.len())
        .into_iter()
        .take(cap / 2)
        .map(|k| front[k])
        .collect();
    for &i in complete.iter().rev() {
        if chosen.len() >= cap {
            break;
        }
        chosen.insert(i);
    }
    let mut out: Vec<usize> = chosen.into_iter().collect();
    out.sort_unstable();
    out
}

/// Distinct, untried, cost-feasible candidates (see the module docs); `front` is `history`'s measured
/// front.
fn candidates(
    problem: &Problem,
    history: &History,
    front: &[usize],
    count: usize,
    rng: &mut impl Rng,
) -> Result<Vec<Point>> {
    let mut out: Vec<Point> = Vec::with_capacity(count);
    let mut seen: HashSet<Point> = HashSet::with_capacity(count);
    let mut offer = |p: Point, out: &mut Vec<Point>| {
        if out.len() < count
            && !history.contains(&p)
            && problem.cost_violation(&p) <= 0.0
            && seen.insert(p.clone())
        {
            out.push(p);
        }
    };
    let exact = problem.exact_front()?;
    let exact_quota = count.div_ceil(4);
    for &i in problem.exact_spread()? {
        if out.len() >= exact_quota {
            break;
        }
        offer(exact[i].point.clone(), &mut out);
    }
    let searchable: Vec<usize> = problem.searchable().collect();
    let mut parents: Vec<&Point> = front.iter().map(|&i| &history.trials()[i].point).collect();
    if parents.is_empty() {
        // Nothing feasible measured yet: mutate the least infeasible complete trials.
        let mut by_violation: Vec<(f64, usize)> = history
            .trials()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.quality.is_some_and(f64::is_finite))
            .map(|(i, t)| (problem.violation(&t.point, t.quality), i))
            .collect();
        by_violation.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        parents = by_violation
            .iter()
            .take(8)
            .map(|&(_, i)| &history.trials()[i].point)
            .collect();
    }
    // Parents are drawn evenly in cost along the measured front (the nearest in cost to a uniform
    // cost), not uniformly among its points, which crowd where the front is dense.
    parents.sort_by(|a, b| problem.cost(a).total_cmp(&problem.cost(b)).then(a.cmp(b)));
    let parent_costs: Vec<f64> = parents.iter().map(|p| problem.cost(p)).collect();
    let random_quota = count / 8;
    let mutation_target = count.saturating_sub(random_quota);
    if !searchable.is_empty() && !parents.is_empty() {
        for _ in 0..4 * count {
            if out.len() >= mutation_target {
                break;
            }
            let mut p = parents[nearest_in_cost(&parent_costs, rng)].clone();
            for _ in 0..rng.random_range(1..=2usize) {
                let g = searchable[rng.random_range(0..searchable.len())];
                let other = rng.random_range(0..problem.choices[g] - 1);
                p[g] = if other >= p[g] { other + 1 } else { other };
            }
            offer(p, &mut out);
        }
    }
    for _ in 0..4 * count {
        if out.len() >= count {
            break;
        }
        offer(problem.random_point(rng), &mut out);
    }
    Ok(out)
}

/// The index of the cost in `costs` (ascending, not empty) nearest a uniform draw between the first and
/// the last.
fn nearest_in_cost(costs: &[f64], rng: &mut impl Rng) -> usize {
    let (lo, hi) = (costs[0], costs[costs.len() - 1]);
    if costs.len() == 1 || hi <= lo {
        return rng.random_range(0..costs.len());
    }
    let u = lo + rng.random::<f64>() * (hi - lo);
    let above = costs.partition_point(|&c| c < u).min(costs.len() - 1);
    if above > 0 && u - costs[above - 1] <= costs[above] - u {
        above - 1
    } else {
        above
    }
}

/// Picks up to `n` of `candidates` greedily by EHVI with the kriging believer (see the module docs);
/// `front` is `history`'s measured front.
fn pick_batch(
    problem: &Problem,
    history: &History,
    front: &[usize],
    encoder: &Encoder,
    gp: &Gp,
    candidates: Vec<Point>,
    n: usize,
) -> Vec<Point> {
    let m = candidates.len();
    if m == 0 {
        return Vec::new();
    }
    let [rc, rq] = problem.reference;
    let level_cap = problem.max_quality.map_or(1.0, |mq| mq.min(rq) / rq);
    let mut xs = Vec::with_capacity(m * encoder.dim);
    for p in &candidates {
        encoder.encode_into(p, &mut xs);
    }
    let post = gp.predict(&xs);
    let cost: Vec<f64> = candidates.iter().map(|p| problem.cost(p) / rc).collect();
    let mean: Vec<f64> = candidates
        .iter()
        .zip(&post.mean)
        .map(|(p, r)| (problem.predict(p) + r) / rq)
        .collect();
    // Variances in normalised quality units.
    let unit = 1.0 / (rq * rq);
    let var: Vec<f64> = post.var.iter().map(|v| v * unit).collect();
    let noise = gp.noise_variance() * unit;
    let measured: Vec<[f64; 2]> = front
        .iter()
        .filter_map(|&i| {
            let t = &history.trials()[i];
            Some([problem.cost(&t.point) / rc, t.quality? / rq])
        })
        .collect();
    let mut stairs = Staircase::new(&measured, level_cap);
    // The believer's variances, brought up to date lazily: candidate `i`'s `factors[i][k]` is its
    // entry of the k-th pick's rank-one update (its covariance with that pick, less the earlier
    // updates', scaled), computed only when `i` is scored after that pick — the same arithmetic, in
    // the same order, as updating every candidate at every pick.
    let mut believer = Believer {
        var,
        factors: vec![Vec::new(); m],
        picks: Vec::new(),
    };
    let score = |believer: &mut Believer, stairs: &Staircase, i: usize| {
        believer.update(i, |a, b| gp.cov(&xs, &post, a, b) * unit);
        stairs.ehvi(cost[i], mean[i], believer.var[i].max(0.0).sqrt())
    };
    // Lazy greedy: a pick only lowers the others' EHVI (its fantasy lowers the staircase, its
    // update their variance, and EHVI grows with both), so a value computed at an earlier pick bounds
    // the current one from above. The heap holds each candidate's latest value and the pick it was
    // computed at; the top, once fresh, is the candidate of largest EHVI (lowest index among equals),
    // as a full scan would find (up to rounding: the staircase's prefix sums are recomputed on each
    // insert, so a value may rise by an ulp), with a few recomputations per pick instead of all.
    let mut heap: BinaryHeap<Scored> = (0..m)
        .map(|i| Scored {
            value: score(&mut believer, &stairs, i),
            index: i,
            at: 0,
        })
        .collect();
    let mut out = Vec::with_capacity(n.min(m));
    while out.len() < n.min(m) {
        let Some(top) = heap.pop() else { break };
        if top.at != out.len() {
            heap.push(Scored {
                value: score(&mut believer, &stairs, top.index),
                at: out.len(),
                ..top
            });
            continue;
        }
        let b = top.index;
        out.push(candidates[b].clone());
        stairs.insert(cost[b], mean[b]);
        // Fantasy at b: Σ₁(x, x) = Σ(x, x) − Σ(x, b)² / (Σ(b, b) + noise).
        let own = believer.residual(b, b, gp.cov(&xs, &post, b, b) * unit);
        let denom = (own + noise).max(f64::MIN_POSITIVE);
        believer.picks.push((b, denom.sqrt().recip()));
    }
    out
}

/// The kriging believer's posterior variances after the batch's picks so far, kept lazily (see
/// [`pick_batch`]).
struct Believer {
    /// Each candidate's variance after its first `factors[i].len()` picks' updates.
    var: Vec<f64>,
    /// `factors[i][k]`: candidate `i`'s entry of pick `k`'s rank-one update.
    factors: Vec<Vec<f64>>,
    /// Each pick and the scale of its update, `1 / √(Σ(b, b) + noise)`.
    picks: Vec<(usize, f64)>,
}

impl Believer {
    /// `cov` (the posterior covariance of `i` and `b` before any pick) less the updates of the first
    /// `factors[b].len()` picks — the covariance after them. `i`'s factors must reach that far.
    fn residual(&self, i: usize, b: usize, cov: f64) -> f64 {
        let mut c = cov;
        for (ui, ub) in self.factors[i].iter().zip(&self.factors[b]) {
            c -= ui * ub;
        }
        c
    }

    /// Brings candidate `i`'s factors and variance up to date with every pick so far; `cov(a, b)` is
    /// the covariance of two candidates before any pick.
    fn update(&mut self, i: usize, cov: impl Fn(usize, usize) -> f64) {
        while self.factors[i].len() < self.picks.len() {
            let k = self.factors[i].len();
            let (b, scale) = self.picks[k];
            // Pick k was fresh when taken, so its own factors reach exactly k.
            let u = self.residual(i, b, cov(i, b)) * scale;
            self.factors[i].push(u);
            self.var[i] = (self.var[i] - u * u).max(0.0);
        }
    }
}

/// A candidate's EHVI as computed at pick `at` of a batch, ordered by value, then lower index first.
#[derive(Clone, Copy, Debug)]
struct Scored {
    value: f64,
    index: usize,
    at: usize,
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value
            .total_cmp(&other.value)
            .then(other.index.cmp(&self.index))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Scored {}

/// The sensitivity-aware encoding of a point (see the module docs).
#[derive(Clone, Debug)]
struct Encoder {
    /// Per searchable group: its number and its coordinates for each choice.
    columns: Vec<(usize, Vec<[f64; 2]>)>,
    dim: usize,
}

impl Encoder {
    fn new(problem: &Problem) -> Encoder {
        let table = problem.predictor.table();
        let range = |row: &[f64]| {
            let lo = row.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi - lo)
        };
        let searchable: Vec<usize> = problem.searchable().collect();
        let widest = |t: &[Vec<f64>]| {
            let w = searchable
                .iter()
                .map(|&g| range(&t[g]).1)
                .fold(0.0, f64::max);
            if w > 0.0 && w.is_finite() {
                w
            } else {
                1.0
            }
        };
        let (wq, wc) = (widest(table), widest(&problem.cost));
        let columns: Vec<(usize, Vec<[f64; 2]>)> = searchable
            .iter()
            .map(|&g| {
                let (ql, _) = range(&table[g]);
                let (cl, _) = range(&problem.cost[g]);
                let coords = table[g]
                    .iter()
                    .zip(&problem.cost[g])
                    .map(|(q, c)| [(q - ql) / wq, COST_WEIGHT * (c - cl) / wc])
                    .collect();
                (g, coords)
            })
            .collect();
        let dim = 2 * columns.len();
        Encoder { columns, dim }
    }

    fn encode_into(&self, point: &[u16], out: &mut Vec<f64>) {
        for (g, coords) in &self.columns {
            out.extend_from_slice(&coords[point[*g] as usize]);
        }
    }
}

#[cfg(test)]
mod tests;
