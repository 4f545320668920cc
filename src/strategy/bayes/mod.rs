//! # The Bayesian strategy: a Gaussian process on the predictor's residual, expected hypervolume improvement
//!
//! The additive sensitivity model already predicts most of a point's quality drop; what it misses is
//! the interaction between groups (errors compound) and its own mis-scaling. So the Gaussian process
//! models only the **residual** `r(p) = quality(p) − problem.predict(p)`, and a point's quality is
//! believed to be `predict(p) + r(p)` with `r(p) ~ N(μ(p), σ²(p))`. Cost is known exactly, so the
//! acquisition is the **expected hypervolume improvement** (EHVI) of the measured front with uncertainty
//! in the quality coordinate only, which has a cheap closed form.
//!
//! ## Model
//!
//! - **Encoding.** Each searchable group `g` (more than one choice) gives two coordinates: its predicted
//!   term `table[g][c] − min_c table[g][·]` and its cost share `cost[g][c] − min_c cost[g][·]`, each
//!   divided by the largest such range over all groups (so the most sensitive group spans [0, 1] and an
//!   insensitive one a sliver of it), the cost coordinate weighted by [`COST_WEIGHT`]. Distances are thus
//!   sensitivity-aware: changing a group the predictor deems harmless barely moves a point, and choices
//!   the predictor cannot tell apart (both predicted 0, say f32 and f16) still differ by their cost.
//! - **Kernel.** Matérn 5/2 on the Euclidean distance, `k(r) = s²(1 + √5 r/ℓ + 5r²/3ℓ²) e^{−√5 r/ℓ}`, plus
//!   a noise term `s²λ` on the diagonal. Residuals are standardised (mean 0, standard deviation 1).
//! - **Hyperparameters.** `ℓ` is chosen from [`LENGTHSCALES`] × the median pairwise training distance and
//!   `λ` from [`NOISE_RATIOS`], by maximising the log marginal likelihood (Rasmussen & Williams eq. 2.30);
//!   the signal variance `s²` is profiled out in closed form (`s² = yᵀ(C + λI)⁻¹y / n`). One Cholesky
//!   factorisation (faer, sequential) per grid cell. The grid is searched once per [`REFIT`] trials, on
//!   the history up to the last multiple of it (memoised; a function of the history alone, so resumed
//!   runs choose the same); the asks in between fit the chosen cell only.
//! - **Training set.** The complete trials (finite quality). Beyond `max_points` of them: the measured
//!   front (thinned in spread order to at most half of `max_points`), then the most recent others. The
//!   model is refitted from scratch on each `ask`, so the per-ask cost is bounded by `max_points`, not by
//!   the length of the history.
//!
//! ## Acquisition
//!
//! In the hypervolume's normalised coordinates (cost / reference cost, quality / reference quality),
//! with the quality reference lowered to `max_quality` when there is one, the measured feasible front is
//! a staircase: right of cost `c` its attained level is `L_j` on steps of width `w_j` (the level is the
//! reference until a front point is reached). Adding `(c, q)` improves the hypervolume by
//! `Σ_j w_j (L_j − q)⁺`, so for `q ~ N(μ, σ²)`
//!
//! `EHVI = Σ_j w_j [(L_j − μ) Φ(z_j) + σ φ(z_j)]`, `z_j = (L_j − μ) / σ`
//!
//! — exact, O(front) per candidate (Emmerich et al. give the general 2-D form; here one coordinate is
//! certain). Points that break a cost limit are never candidates; a quality above `max_quality` improves
//! nothing, so EHVI counts the chance of meeting that limit by itself.
//!
//! ## Candidates and batches
//!
//! Each `ask` scores up to `candidates` distinct, untried, cost-feasible points: up to a quarter from the
//! exact predicted front (untried ones, in spread order), then mutations (one or two searchable groups
//! set to another choice) of measured-front points up to seven eighths in all, then uniformly random
//! points for the rest (each source has a bounded number of attempts, so a nearly exhausted or tightly
//! limited space yields fewer candidates, and an `ask` that finds none returns none). A batch
//! of `n` is picked greedily with the **kriging believer**: after each pick its believed quality (the
//! posterior mean) joins the front and its fantasised observation shrinks the posterior variance of the
//! other candidates (a rank-one update; the mean is unchanged by a fantasy equal to it), so the next
//! pick goes where the batch has not already looked. Until `initial` trials are complete the strategy
//! proposes the exact front's points in spread order, then random points.
//!
//! ## Cost
//!
//! Per `ask`: one `m × d` distance product and one Cholesky factorisation of at most `max_points` rows
//! (the fit; the whole grid, `LENGTHSCALES × NOISE_RATIOS` factorisations, once per [`REFIT`] trials),
//! one triangular solve with `candidates` right-hand sides (the posterior), and per pick
//! O(`candidates` · (`max_points` + batch)) for the believer plus the EHVI sums, which skip the steps
//! more than [`CERTAIN_Z`] standard deviations from the mean by prefix sums. Measured in release
//! (`cargo bench --bench strategy`, a warm strategy at a 2,000-trial history, ask 8 + tell 8): about
//! 6 ms on a demo-shaped problem, 8 ms on a MiniLM-shaped one — under 1 ms per trial.
//!
//! ## State and determinism
//!
//! `ask` is a function of the problem and the history only; its random generator is
//! `rng_for(seed, "bayes", history.len())`. The state is the number of trials told, so any split of
//! `tell` calls leaves the same state, and a snapshot is `{"told": n}`.
//!
//! The standard normal CDF uses the Chebyshev-fitted `erfc` of Numerical Recipes (§6.2, `erfcc`), whose
//! **relative** error is below 1.2·10⁻⁷ everywhere, tails included.
//!
//! ## References
//!
//! - M. T. M. Emmerich, K. C. Giannakoglou, B. Naujoks, "Single- and multiobjective evolutionary
//!   optimization assisted by Gaussian random field metamodels", IEEE TEC 10(4), 2006 (EHVI), and
//!   M. Emmerich, A. Deutz, J. W. Klinkenberg, "Hypervolume-based expected improvement: monotonicity
//!   properties and exact computation", CEC 2011 (the exact 2-D EHVI).
//! - C. E. Rasmussen, C. K. I. Williams, "Gaussian processes for machine learning", MIT Press, 2006
//!   (algorithm 2.1, the Matérn class §4.2, the marginal likelihood §5.4).
//! - D. Ginsbourger, R. Le Riche, L. Carraro, "Kriging is well-suited to parallelize optimization",
//!   Computational Intelligence in Expensive Optimization Problems, Springer, 2010 (kriging believer).
//! - W. H. Press et al., "Numerical recipes in C", 2nd ed., Cambridge University Press, 1992, §6.2
//!   (the `erfc` approximation).

use std::collections::HashSet;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatRef, Par};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::exact::spread_order;
use super::{rng_for, History, Problem, Strategy};
use crate::error::{Error, Result};
use crate::space::Point;

/// Weight of a group's cost-share coordinate relative to its predicted-quality coordinate.
pub const COST_WEIGHT: f64 = 0.25;
/// Lengthscales tried, as multiples of the median pairwise distance of the training points.
pub const LENGTHSCALES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
/// Noise variances tried, as fractions of the signal variance.
pub const NOISE_RATIOS: [f64; 3] = [1e-6, 1e-3, 1e-1];
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
    /// Memo of the hyperparameters chosen at a multiple of [`REFIT`] trials (a pure function of the
    /// history, so not part of the state).
    hyper: Option<(usize, Grid)>,
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
    /// history as it was at the last multiple of [`REFIT`] trials (memoised), or the full grid before
    /// the first one. A function of the history only, so resumed and uninterrupted runs agree.
    fn grid(&mut self, problem: &Problem, history: &History, encoder: &Encoder) -> Grid {
        let at = history.len() / REFIT * REFIT;
        if at == 0 {
            return Grid::Full;
        }
        if let Some((memo_at, grid)) = self.hyper {
            if memo_at == at {
                return grid;
            }
        }
        let mut prefix = History::new();
        for t in &history.trials()[..at] {
            prefix.push(t.clone());
        }
        let gp = fit(
            problem,
            &prefix,
            self.config.max_points,
            encoder,
            Grid::Full,
        );
        let grid = Grid::Fixed {
            factor: gp.factor,
            noise_ratio: gp.noise_ratio,
        };
        self.hyper = Some((at, grid));
        grid
    }
}

/// The GP of the residuals `quality − predicted` of `history`'s training set.
fn fit(problem: &Problem, history: &History, cap: usize, encoder: &Encoder, grid: Grid) -> Gp {
    let training = training_set(problem, history, cap);
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
        let gp = fit(problem, history, self.config.max_points, &encoder, grid);
        let candidates = candidates(problem, history, self.config.candidates, &mut rng)?;
        Ok(pick_batch(problem, history, &encoder, &gp, candidates, n))
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
    for i in spread_order(front.len()) {
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

/// Indices of the trials the model is trained on, ascending (see the module docs).
fn training_set(problem: &Problem, history: &History, cap: usize) -> Vec<usize> {
    let trials = history.trials();
    let complete: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].quality.is_some_and(f64::is_finite))
        .collect();
    if complete.len() <= cap {
        return complete;
    }
    let mut front: Vec<usize> = history
        .front(problem)
        .into_iter()
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

/// Distinct, untried, cost-feasible candidates (see the module docs).
fn candidates(
    problem: &Problem,
    history: &History,
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
    for i in spread_order(exact.len()) {
        if out.len() >= exact_quota {
            break;
        }
        offer(exact[i].point.clone(), &mut out);
    }
    let searchable: Vec<usize> = problem.searchable().collect();
    let mut parents: Vec<&Point> = history
        .front(problem)
        .into_iter()
        .map(|i| &history.trials()[i].point)
        .collect();
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
    let random_quota = count / 8;
    let mutation_target = count.saturating_sub(random_quota);
    if !searchable.is_empty() && !parents.is_empty() {
        for _ in 0..4 * count {
            if out.len() >= mutation_target {
                break;
            }
            let mut p = parents[rng.random_range(0..parents.len())].clone();
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

/// Picks up to `n` of `candidates` greedily by EHVI with the kriging believer (see the module docs).
fn pick_batch(
    problem: &Problem,
    history: &History,
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
    let mut var: Vec<f64> = post.var.iter().map(|v| v * unit).collect();
    let noise = gp.noise_variance() * unit;
    let measured: Vec<[f64; 2]> = history
        .front(problem)
        .into_iter()
        .filter_map(|i| {
            let t = &history.trials()[i];
            Some([problem.cost(&t.point) / rc, t.quality? / rq])
        })
        .collect();
    let mut stairs = Staircase::new(&measured, level_cap);
    let mut taken = vec![false; m];
    let mut factors: Vec<Vec<f64>> = Vec::new();
    let mut out = Vec::with_capacity(n.min(m));
    while out.len() < n.min(m) {
        let mut best: Option<(usize, f64)> = None;
        for i in (0..m).filter(|&i| !taken[i]) {
            let a = stairs.ehvi(cost[i], mean[i], var[i].max(0.0).sqrt());
            if best.is_none_or(|(_, b)| a.total_cmp(&b).is_gt()) {
                best = Some((i, a));
            }
        }
        let Some((b, _)) = best else { break };
        taken[b] = true;
        out.push(candidates[b].clone());
        stairs.insert(cost[b], mean[b]);
        // Fantasy at b: Σ₁(x, x) = Σ(x, x) − Σ(x, b)² / (Σ(b, b) + noise).
        let mut column: Vec<f64> = (0..m).map(|i| gp.cov(&xs, &post, i, b) * unit).collect();
        for u in &factors {
            let ub = u[b];
            for (c, ui) in column.iter_mut().zip(u) {
                *c -= ui * ub;
            }
        }
        let denom = (column[b] + noise).max(f64::MIN_POSITIVE);
        let scale = denom.sqrt().recip();
        column.iter_mut().for_each(|c| *c *= scale);
        for (v, u) in var.iter_mut().zip(&column) {
            *v = (*v - u * u).max(0.0);
        }
        factors.push(column);
    }
    out
}

/// Beyond this many standard deviations a step's expected shortfall is taken as certain (`level − μ`
/// above the mean) or as zero (below it); the error is below `σ · 10⁻¹⁴` per unit of width.
pub const CERTAIN_Z: f64 = 8.0;

/// The measured front as a staircase in normalised coordinates, for EHVI.
///
/// Segment `k` runs from the cost of front point `k − 1` (from −∞ for `k = 0`) to the cost of point `k`
/// (to 1 for the last) at level `levels[k]`: the reference for `k = 0`, point `k − 1`'s quality after.
#[derive(Clone, Debug)]
struct Staircase {
    /// Front points with cost < 1 and level < cap, by increasing cost and strictly decreasing level.
    points: Vec<[f64; 2]>,
    /// The quality reference (1, or lower under a quality limit).
    cap: f64,
    levels: Vec<f64>,
    ends: Vec<f64>,
    /// Prefix sums over segments `1..k` of width and of width × level (segment 0 is never whole).
    sum_w: Vec<f64>,
    sum_wl: Vec<f64>,
}

impl Staircase {
    fn new(points: &[[f64; 2]], cap: f64) -> Staircase {
        let mut s = Staircase {
            points: points.to_vec(),
            cap,
            levels: Vec::new(),
            ends: Vec::new(),
            sum_w: Vec::new(),
            sum_wl: Vec::new(),
        };
        s.tidy();
        s
    }

    /// Keeps the non-dominated points inside the reference box and rebuilds the segments.
    fn tidy(&mut self) {
        let cap = self.cap;
        self.points
            .retain(|p| p[0] < 1.0 && p[1] < cap && p.iter().all(|v| v.is_finite()));
        self.points
            .sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        let mut level = cap;
        self.points.retain(|p| {
            let keep = p[1] < level;
            level = level.min(p[1]);
            keep
        });
        let f = self.points.len();
        self.levels = std::iter::once(cap)
            .chain(self.points.iter().map(|p| p[1]))
            .collect();
        self.ends = self
            .points
            .iter()
            .map(|p| p[0])
            .chain(std::iter::once(1.0))
            .collect();
        self.sum_w = vec![0.0; f + 2];
        self.sum_wl = vec![0.0; f + 2];
        for k in 1..=f {
            let w = self.ends[k] - self.ends[k - 1];
            self.sum_w[k + 1] = self.sum_w[k] + w;
            self.sum_wl[k + 1] = self.sum_wl[k] + w * self.levels[k];
        }
    }

    fn insert(&mut self, cost: f64, quality: f64) {
        self.points.push([cost, quality]);
        self.tidy();
    }

    /// Expected hypervolume improvement of adding a point of cost `c` and quality `N(mu, sigma²)`:
    /// `Σ_k w_k E[(level_k − q)⁺]` over the segments right of `c`, in O(log F) plus the segments within
    /// [`CERTAIN_Z`] standard deviations of `mu`.
    fn ehvi(&self, c: f64, mu: f64, sigma: f64) -> f64 {
        let usable = c < 1.0 && mu.is_finite() && sigma >= 0.0 && sigma.is_finite();
        if !usable {
            return 0.0;
        }
        let last = self.points.len();
        let s = self.points.partition_point(|p| p[0] <= c);
        let mut total = (self.ends[s] - c) * expected_shortfall(self.levels[s], mu, sigma);
        // Whole segments s+1..: levels fall, so first those surely above mu, then the uncertain ones.
        let hi = mu + CERTAIN_Z * sigma;
        let lo = mu - CERTAIN_Z * sigma;
        let e = s + 1 + self.levels[s + 1..].partition_point(|&l| l >= hi);
        total += (self.sum_wl[e] - self.sum_wl[s + 1]) - mu * (self.sum_w[e] - self.sum_w[s + 1]);
        for k in e..=last {
            if self.levels[k] <= lo {
                break;
            }
            total +=
                (self.ends[k] - self.ends[k - 1]) * expected_shortfall(self.levels[k], mu, sigma);
        }
        total.max(0.0)
    }
}

/// `E[(level − q)⁺]` for `q ~ N(mu, sigma²)`.
fn expected_shortfall(level: f64, mu: f64, sigma: f64) -> f64 {
    let d = level - mu;
    if sigma <= 1e-300 {
        return d.max(0.0);
    }
    let z = d / sigma;
    (d * normal_cdf(z) + sigma * normal_pdf(z)).max(0.0)
}

/// The standard normal density.
fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The standard normal CDF, `Φ(z) = erfc(−z/√2) / 2`.
fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// The complementary error function, relative error < 1.2e-7 (Numerical Recipes §6.2, `erfcc`).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

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

/// One cell of the hyperparameter grid, fitted.
struct Fitted {
    log_likelihood: f64,
    /// The lengthscale as a multiple of the median distance.
    factor: f64,
    lengthscale: f64,
    noise_ratio: f64,
    signal: f64,
    /// Lower Cholesky factor of `C + λI`.
    chol: Mat<f64>,
    /// `L⁻¹ y`.
    z: Mat<f64>,
}

/// Which hyperparameters a fit may choose from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Grid {
    /// Every cell of `LENGTHSCALES × NOISE_RATIOS`.
    Full,
    /// One cell, chosen earlier (see [`REFIT`]).
    Fixed { factor: f64, noise_ratio: f64 },
}

/// The grid cell (lengthscale `median × LENGTHSCALES`, noise ratio `NOISE_RATIOS`) of largest log
/// marginal likelihood for standardised targets `ys` at pairwise distances `dist`, the signal variance
/// profiled out; ties keep the first. `None` if no cell factorises.
fn select_hyperparameters(dist: &Mat<f64>, median: f64, ys: &[f64], grid: Grid) -> Option<Fitted> {
    let n = ys.len();
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(
        n,
        Par::Seq,
        Default::default(),
    ));
    let mut best: Option<Fitted> = None;
    let (factors, noises): (&[f64], &[f64]) = match &grid {
        Grid::Full => (&LENGTHSCALES, &NOISE_RATIOS),
        Grid::Fixed {
            factor,
            noise_ratio,
        } => (
            std::slice::from_ref(factor),
            std::slice::from_ref(noise_ratio),
        ),
    };
    for &factor in factors {
        let lengthscale = median * factor;
        // The lower triangle is all the factorisation reads.
        let mut corr = Mat::<f64>::zeros(n, n);
        for j in 0..n {
            let d = &dist.col_as_slice(j)[j + 1..];
            for (c, &r) in corr.col_as_slice_mut(j)[j + 1..].iter_mut().zip(d) {
                *c = matern52(r, lengthscale);
            }
        }
        for &noise_ratio in noises {
            let mut chol = corr.clone();
            for i in 0..n {
                chol[(i, i)] = 1.0 + noise_ratio;
            }
            let factored = cholesky_in_place(
                chol.as_mut(),
                Default::default(),
                Par::Seq,
                MemStack::new(&mut mem),
                Default::default(),
            );
            if factored.is_err() {
                continue;
            }
            let mut z = Mat::from_fn(n, 1, |i, _| ys[i]);
            solve_lower_triangular_in_place(chol.as_ref(), z.as_mut(), Par::Seq);
            let q: f64 = (0..n).map(|i| z[(i, 0)] * z[(i, 0)]).sum();
            let signal = (q / n as f64).max(1e-12);
            let log_det: f64 = (0..n).map(|i| chol[(i, i)].ln()).sum();
            let log_likelihood =
                -0.5 * n as f64 * (signal.ln() + 1.0 + (2.0 * std::f64::consts::PI).ln()) - log_det;
            let better = best
                .as_ref()
                .is_none_or(|b| log_likelihood.total_cmp(&b.log_likelihood).is_gt());
            if log_likelihood.is_finite() && better {
                best = Some(Fitted {
                    log_likelihood,
                    factor,
                    lengthscale,
                    noise_ratio,
                    signal,
                    chol,
                    z,
                });
            }
        }
    }
    best
}

/// Matérn 5/2 correlation at distance `r` with lengthscale `l`.
fn matern52(r: f64, l: f64) -> f64 {
    let s = 5f64.sqrt() * r / l;
    (1.0 + s + s * s / 3.0) * (-s).exp()
}

/// Euclidean distances between the `p` rows of `a` and the `q` rows of `b` (row-major, `dim` columns),
/// as a `p × q` matrix, from the Gram matrix `a bᵀ` (one faer product).
fn distances(a: &[f64], p: usize, b: &[f64], q: usize, dim: usize) -> Mat<f64> {
    let mut d = Mat::zeros(p, q);
    if dim == 0 {
        return d;
    }
    let am = MatRef::from_row_major_slice(a, p, dim);
    let bm = MatRef::from_row_major_slice(b, q, dim);
    matmul(
        d.as_mut(),
        Accum::Replace,
        am,
        bm.transpose(),
        -2.0,
        Par::Seq,
    );
    let sq = |x: &[f64]| -> Vec<f64> {
        x.chunks_exact(dim)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect()
    };
    let (na, nb) = (sq(a), sq(b));
    for (j, nbj) in nb.iter().enumerate() {
        for (v, nai) in d.col_as_slice_mut(j).iter_mut().zip(&na) {
            *v = (*v + nai + nbj).max(0.0).sqrt();
        }
    }
    d
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// A Gaussian process on standardised targets with a Matérn 5/2 kernel (see the module docs).
#[derive(Debug)]
struct Gp {
    /// The lengthscale as a multiple of the median training distance (the grid cell chosen).
    factor: f64,
    /// Training inputs, `n × dim` row-major.
    x: Vec<f64>,
    dim: usize,
    lengthscale: f64,
    /// Noise variance over signal variance.
    noise_ratio: f64,
    /// Signal variance `s²` of the standardised targets.
    signal: f64,
    /// Lower Cholesky factor of `C + λI` (only the lower triangle is meaningful).
    chol: Mat<f64>,
    /// `(C + λI)⁻¹ y` for the standardised targets.
    alpha: Vec<f64>,
    /// Targets are `offset + scale · standardised`.
    offset: f64,
    scale: f64,
}

/// The posterior at some points: mean and latent variance (target units), and `V = L⁻¹ C(train, ·)`.
struct Posterior {
    mean: Vec<f64>,
    var: Vec<f64>,
    v: Mat<f64>,
}

impl Gp {
    /// Fits `y` at `x` (`y.len() × dim`, row-major), choosing the hyperparameters on the grid by the log
    /// marginal likelihood; with no point or no usable factorisation, the prior.
    fn fit(x: Vec<f64>, dim: usize, y: &[f64], grid: Grid) -> Gp {
        let n = y.len();
        let offset = if n == 0 {
            0.0
        } else {
            y.iter().sum::<f64>() / n as f64
        };
        let sd = if n == 0 {
            0.0
        } else {
            (y.iter().map(|v| (v - offset).powi(2)).sum::<f64>() / n as f64).sqrt()
        };
        let scale = if sd > 0.0 && sd.is_finite() { sd } else { 1.0 };
        let ys: Vec<f64> = y.iter().map(|v| (v - offset) / scale).collect();
        let dist = distances(&x, n, &x, n, dim);
        let mut pairs: Vec<f64> = (0..n)
            .flat_map(|j| dist.col_as_slice(j)[..j].iter().copied())
            .filter(|&d| d > 1e-9)
            .collect();
        let median = if pairs.is_empty() {
            1.0
        } else {
            let mid = pairs.len() / 2;
            *pairs.select_nth_unstable_by(mid, f64::total_cmp).1
        };
        let best = select_hyperparameters(&dist, median, &ys, grid);
        match best {
            Some(Fitted {
                factor,
                lengthscale,
                noise_ratio,
                signal,
                chol,
                mut z,
                ..
            }) => {
                solve_upper_triangular_in_place(chol.as_ref().transpose(), z.as_mut(), Par::Seq);
                Gp {
                    x,
                    dim,
                    factor,
                    lengthscale,
                    noise_ratio,
                    signal,
                    chol,
                    alpha: (0..n).map(|i| z[(i, 0)]).collect(),
                    offset,
                    scale,
                }
            }
            None => Gp {
                x: Vec::new(),
                dim,
                factor: 1.0,
                lengthscale: 1.0,
                noise_ratio: NOISE_RATIOS[0],
                signal: 1.0,
                chol: Mat::zeros(0, 0),
                alpha: Vec::new(),
                offset,
                scale,
            },
        }
    }

    fn len(&self) -> usize {
        self.alpha.len()
    }

    /// The posterior at `xs` (`m × dim`, row-major).
    fn predict(&self, xs: &[f64]) -> Posterior {
        let n = self.len();
        let m = xs.len().checked_div(self.dim).unwrap_or(0);
        let mut v = distances(&self.x, n, xs, m, self.dim);
        for j in 0..m {
            for k in v.col_as_slice_mut(j) {
                *k = matern52(*k, self.lengthscale);
            }
        }
        let mean: Vec<f64> = (0..m)
            .map(|j| {
                let k = v.col_as_slice(j);
                let s: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
                self.offset + self.scale * s
            })
            .collect();
        solve_lower_triangular_in_place(self.chol.as_ref(), v.as_mut(), Par::Seq);
        let s2 = self.signal * self.scale * self.scale;
        let var = (0..m)
            .map(|j| {
                let explained: f64 = v.col_as_slice(j).iter().map(|a| a * a).sum();
                (s2 * (1.0 - explained)).max(0.0)
            })
            .collect();
        Posterior { mean, var, v }
    }

    /// The posterior covariance (target units) of points `a` and `b` of `xs`, given `predict(xs)`.
    fn cov(&self, xs: &[f64], post: &Posterior, a: usize, b: usize) -> f64 {
        let at = |j: usize| &xs[j * self.dim..(j + 1) * self.dim];
        let prior = matern52(distance(at(a), at(b)), self.lengthscale);
        let shared: f64 = post
            .v
            .col_as_slice(a)
            .iter()
            .zip(post.v.col_as_slice(b))
            .map(|(p, q)| p * q)
            .sum();
        self.signal * self.scale * self.scale * (prior - shared)
    }

    /// The observation noise variance (target units).
    fn noise_variance(&self) -> f64 {
        self.signal * self.noise_ratio * self.scale * self.scale
    }
}

#[cfg(test)]
mod tests;
