//! # The exact strategy: the predicted front by dynamic programming
//!
//! Under the additive sensitivity model a point's predicted quality drop and its cost are both sums of
//! per-group terms, so the front of predicted quality against cost is a multiple-choice knapsack. It is
//! solved by the classic Pareto dynamic programme over groups: the set of non-dominated partial sums of
//! groups `0..g` is merged with every choice of group `g`, dominated and limit-breaking partial sums are
//! dropped, and the survivors keep a back-pointer so each point of the final front is recovered.
//!
//! **Exactness.** Partial sums carry every limited cost as well as the objective cost and the predicted
//! quality, and a partial sum is dropped only if another one is no worse in all of them (then every
//! completion of the first is matched by the same completion of the second) or if it cannot meet a limit
//! even with the cheapest remaining choices. So the result is exactly the front, until a partial front
//! grows beyond [`MAX_PARTIAL`] points; then it is thinned to the best predicted quality per cell of
//! cost bins, **each cost binned on its own scale** ([`bin_widths`]): the objective cost's bin is
//! `δ₀ = TOLERANCE × (its dearest − its cheapest total)`, and the `k`th limited cost's is
//! `δₖ = TOLERANCE × (its dearest − its cheapest total)`, however different their units and ranges.
//! A thinned partial sum is replaced by one of its cell, no worse in predicted quality and less than one
//! bin away in each cost, and the errors add up over at most `groups` thinnings. So the error bound is,
//! per cost: every point of the true front whose `k`th limited cost is at most its limit − `groups × δₖ`
//! (for every `k`) is matched by a found point at most `groups × δ₀` dearer in the objective cost and no
//! worse in predicted quality; and every found point meets every limit exactly (the feasibility test is
//! never thinned). Neither shipped space comes near the cap.
//!
//! As a strategy it proposes the front's points in *cost-spread order* ([`spread_by_cost`]: cheapest,
//! dearest, then the point nearest the middle of the widest cost gap, again and again), so any prefix
//! covers the whole cost range evenly, the dear end included, however the front's points crowd; when
//! every front point has been tried it has nothing left and the run ends.
//!
//! ## References
//!
//! - P. Sinha, A. A. Zoltners, "The multiple-choice knapsack problem", Operations Research 27(3), 1979.
//! - Z. Dong et al., "HAWQ-V3: dyadic neural network quantization", ICML 2021 (bit allocation as an
//!   integer programme over an additive sensitivity model).

use serde::{Deserialize, Serialize};

use super::{History, Problem, Strategy};
use crate::error::{Error, Result};
use crate::space::Point;

/// Largest partial front kept before thinning by cost bins.
pub const MAX_PARTIAL: usize = 20_000;
/// Bin width of the thinning, as a share of the reachable cost range.
pub const TOLERANCE: f64 = 1e-5;

/// A point of the predicted front.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontPoint {
    pub cost: f64,
    pub predicted: f64,
    pub point: Point,
}

/// One partial sum: `values = [cost, predicted, limit costs…]`, and how it was reached.
#[derive(Clone)]
struct Partial {
    values: Vec<f64>,
    /// Index into the previous stage, and the choice taken at this stage.
    parent: u32,
    choice: u16,
}

/// Solves the problem's predicted front (see the module docs): points sorted by increasing cost, with
/// strictly decreasing predicted quality; empty if no point meets the cost limits.
pub fn solve(problem: &Problem) -> Result<Vec<FrontPoint>> {
    solve_capped(problem, MAX_PARTIAL)
}

/// [`solve`] with partial fronts thinned beyond `cap` points (tests use a small cap).
fn solve_capped(problem: &Problem, cap: usize) -> Result<Vec<FrontPoint>> {
    let groups = problem.groups();
    let dims = 2 + problem.cost_limits.len();
    let min_rest = min_rest(problem);
    let bins = bin_widths(problem);

    let mut stages: Vec<Vec<Partial>> = Vec::with_capacity(groups + 1);
    stages.push(vec![Partial {
        values: vec![0.0; dims],
        parent: 0,
        choice: 0,
    }]);
    for g in 0..groups {
        let mut kept = prune(extend(problem, g, &stages[g], &min_rest[g + 1]));
        if kept.len() > cap {
            kept = thin(kept, &bins);
        }
        if kept.len() > u32::MAX as usize {
            return Err(Error::search("exact front: too many partial sums"));
        }
        stages.push(kept);
    }
    Ok(front_of(&stages))
}

/// The thinning's bin width of each cost, on its own scale: `[objective cost, limited costs…]`, each
/// [`TOLERANCE`] × (its dearest − its cheapest total).
pub fn bin_widths(problem: &Problem) -> Vec<f64> {
    let width = |table: &[Vec<f64>]| {
        let range: f64 = table
            .iter()
            .map(|row| {
                let (lo, hi) = min_max(row);
                hi - lo
            })
            .sum();
        TOLERANCE * range.max(f64::MIN_POSITIVE)
    };
    std::iter::once(width(&problem.cost))
        .chain(problem.cost_limits.iter().map(|l| width(&l.table)))
        .collect()
}

/// `min_rest[g][k]`: the cheapest the `k`th limited cost can still get from groups `g..` (for
/// dropping hopeless sums).
fn min_rest(problem: &Problem) -> Vec<Vec<f64>> {
    let groups = problem.groups();
    let mut min_rest = vec![vec![0.0; problem.cost_limits.len()]; groups + 1];
    for g in (0..groups).rev() {
        for (k, l) in problem.cost_limits.iter().enumerate() {
            let m = l.table[g].iter().copied().fold(f64::INFINITY, f64::min);
            min_rest[g][k] = min_rest[g + 1][k] + m;
        }
    }
    min_rest
}

/// Every partial sum of `prev` extended by each choice of group `g`, but those that cannot meet a
/// cost limit even with the cheapest rest (`min_rest`, from group `g + 1` on).
fn extend(problem: &Problem, g: usize, prev: &[Partial], min_rest: &[f64]) -> Vec<Partial> {
    let term = |c: usize| -> Vec<f64> {
        let mut v = Vec::with_capacity(2 + problem.cost_limits.len());
        v.push(problem.cost[g][c]);
        v.push(problem.predictor.table()[g][c]);
        v.extend(problem.cost_limits.iter().map(|l| l.table[g][c]));
        v
    };
    let mut next = Vec::with_capacity(prev.len() * problem.choices[g] as usize);
    for (pi, p) in prev.iter().enumerate() {
        for c in 0..problem.choices[g] as usize {
            let t = term(c);
            let values: Vec<f64> = p.values.iter().zip(&t).map(|(a, b)| a + b).collect();
            let hopeless = problem
                .cost_limits
                .iter()
                .enumerate()
                .any(|(k, l)| values[2 + k] + min_rest[k] > l.max * (1.0 + 1e-12));
            if !hopeless {
                next.push(Partial {
                    values,
                    parent: pi as u32,
                    choice: c as u16,
                });
            }
        }
    }
    next
}

/// The front of the final stage (non-dominated in all coordinates): its 2-D part, by cost.
fn front_of(stages: &[Vec<Partial>]) -> Vec<FrontPoint> {
    let last = &stages[stages.len() - 1];
    let mut order: Vec<usize> = (0..last.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&last[a].values, &last[b].values);
        x[0].total_cmp(&y[0]).then(x[1].total_cmp(&y[1]))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for i in order {
        let v = &last[i].values;
        if v[1] < best {
            best = v[1];
            front.push(FrontPoint {
                cost: v[0],
                predicted: v[1],
                point: backtrack(stages, i),
            });
        }
    }
    front
}

fn min_max(row: &[f64]) -> (f64, f64) {
    row.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn backtrack(stages: &[Vec<Partial>], mut i: usize) -> Point {
    let groups = stages.len() - 1;
    let mut point = vec![0u16; groups];
    for g in (1..=groups).rev() {
        let p = &stages[g][i];
        point[g - 1] = p.choice;
        i = p.parent as usize;
    }
    point
}

/// Drops every partial sum that another one weakly dominates (ties keep the first in sweep order).
fn prune(mut all: Vec<Partial>) -> Vec<Partial> {
    all.sort_by(|a, b| {
        a.values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    if all.first().is_some_and(|p| p.values.len() == 2) {
        // Sorted by cost then quality: keep the strict quality records.
        let mut best = f64::INFINITY;
        all.retain(|p| {
            let keep = p.values[1] < best;
            best = best.min(p.values[1]);
            keep
        });
        return all;
    }
    // More coordinates: a point can only be weakly dominated by one earlier in lexicographic order.
    let mut kept: Vec<Partial> = Vec::with_capacity(all.len());
    for p in all {
        let dominated = kept
            .iter()
            .any(|k| k.values.iter().zip(&p.values).all(|(a, b)| a <= b));
        if !dominated {
            kept.push(p);
        }
    }
    kept
}

/// Keeps the best predicted quality in each cell of cost bins: `bins[0]` wide for the objective cost,
/// `bins[1 + k]` for the `k`th limited cost (each on its own scale, so feasibility is not lost).
fn thin(all: Vec<Partial>, bins: &[f64]) -> Vec<Partial> {
    use std::collections::BTreeMap;
    let mut best: BTreeMap<Vec<i64>, Partial> = BTreeMap::new();
    for p in all {
        let costs = std::iter::once(&p.values[0]).chain(&p.values[2..]);
        let key: Vec<i64> = costs
            .zip(bins)
            .map(|(v, b)| (v / b).floor() as i64)
            .collect();
        match best.get(&key) {
            Some(b) if b.values[1] <= p.values[1] => {}
            _ => {
                best.insert(key, p);
            }
        }
    }
    prune(best.into_values().collect())
}

/// Indices `0..len` in spread order: the ends, then midpoints of the gaps, widest gaps first.
pub fn spread_order(len: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    out.push(0);
    if len == 1 {
        return out;
    }
    out.push(len - 1);
    let mut gaps = std::collections::VecDeque::from([(0usize, len - 1)]);
    while let Some((a, b)) = gaps.pop_front() {
        if b - a < 2 {
            continue;
        }
        let m = a + (b - a) / 2;
        out.push(m);
        gaps.push_back((a, m));
        gaps.push_back((m, b));
    }
    out
}

/// Indices of `costs` (ascending, the costs of a front's points) in *cost-spread order*: the cheapest
/// and the dearest, then again and again the point nearest the middle (in cost) of the widest cost gap
/// between points already taken. Any prefix covers the whole cost range evenly, the dear end included,
/// however the points crowd (an index-based spread would follow the crowd).
pub fn spread_by_cost(costs: &[f64]) -> Vec<usize> {
    use std::collections::BinaryHeap;
    let len = costs.len();
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    out.push(0);
    if len == 1 {
        return out;
    }
    out.push(len - 1);
    let mut gaps = BinaryHeap::from([Gap::new(costs, 0, len - 1)]);
    while let Some(Gap { a, b, .. }) = gaps.pop() {
        if b - a < 2 {
            continue;
        }
        let mid = (costs[a] + costs[b]) / 2.0;
        // The first inner point at or above the middle, or the one before it if nearer.
        let above = a + 1 + costs[a + 1..b].partition_point(|&c| c < mid);
        let m = if above >= b || (above > a + 1 && mid - costs[above - 1] <= costs[above] - mid) {
            above - 1
        } else {
            above
        };
        out.push(m);
        gaps.push(Gap::new(costs, a, m));
        gaps.push(Gap::new(costs, m, b));
    }
    out
}

/// A cost gap between front points `a < b` already taken, ordered widest first, then cheapest.
#[derive(Clone, Copy, Debug)]
struct Gap {
    width: f64,
    a: usize,
    b: usize,
}

impl Gap {
    fn new(costs: &[f64], a: usize, b: usize) -> Gap {
        Gap {
            width: costs[b] - costs[a],
            a,
            b,
        }
    }
}

impl PartialEq for Gap {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Gap {}

impl PartialOrd for Gap {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Gap {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.width
            .total_cmp(&other.width)
            .then(other.a.cmp(&self.a))
    }
}

/// Proposes the predicted front's points in cost-spread order (see the module docs); stateless.
#[derive(Clone, Debug, Default)]
pub struct ExactStrategy;

impl ExactStrategy {
    pub fn new() -> ExactStrategy {
        ExactStrategy
    }
}

impl Strategy for ExactStrategy {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn ask(&mut self, problem: &Problem, history: &History, n: usize) -> Result<Vec<Point>> {
        let front = problem.exact_front()?;
        Ok(problem
            .exact_spread()?
            .iter()
            .map(|&i| &front[i].point)
            .filter(|p| !history.contains(p))
            .take(n)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::synthetic::Synthetic;
    use crate::strategy::{sum, CostLimit};

    /// Every point of a small problem, enumerated.
    fn all_points(choices: &[u16]) -> Vec<Point> {
        let mut out = vec![vec![]];
        for &c in choices {
            out = out
                .into_iter()
                .flat_map(|p: Point| {
                    (0..c).map(move |x| {
                        let mut q = p.clone();
                        q.push(x);
                        q
                    })
                })
                .collect();
        }
        out
    }

    /// The front of (cost, predicted) over feasible points by brute force, as (cost, predicted) pairs.
    fn brute(problem: &Problem) -> Vec<(f64, f64)> {
        let pts: Vec<(f64, f64)> = all_points(&problem.choices)
            .iter()
            .filter(|p| problem.cost_violation(p) == 0.0)
            .map(|p| (problem.cost(p), problem.predict(p)))
            .collect();
        let mut front: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|a| {
                !pts.iter()
                    .any(|b| b.0 <= a.0 && b.1 <= a.1 && (b.0 < a.0 || b.1 < a.1))
            })
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        front.dedup();
        front
    }

    const EPS: f64 = 1e-9;

    fn check(problem: &Problem) {
        let got = solve(problem).unwrap();
        let want = brute(problem);
        assert_eq!(got.len(), want.len(), "front sizes: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.cost - w.0).abs() < EPS && (g.predicted - w.1).abs() < EPS,
                "{g:?} vs {w:?}"
            );
            assert!(
                (problem.cost(&g.point) - g.cost).abs() < EPS,
                "backtracked point costs what it says"
            );
            assert!((problem.predict(&g.point) - g.predicted).abs() < EPS);
        }
    }

    #[test]
    fn front_equals_brute_force_enumeration() {
        for seed in 0..20 {
            let s = Synthetic::new(5, 4, seed);
            check(&s.problem);
        }
    }

    #[test]
    fn front_respects_limits_on_other_costs_exactly() {
        for seed in 0..10 {
            let s = Synthetic::new(5, 4, seed);
            let mut p = s.problem;
            // A size-like second cost that disagrees with the objective cost.
            let table: Vec<Vec<f64>> = p
                .cost
                .iter()
                .map(|r| r.iter().rev().map(|x| x * 0.7 + 1.0).collect())
                .collect();
            let total_min: f64 = table.iter().map(|r| min_max(r).0).sum();
            let total_max: f64 = table.iter().map(|r| min_max(r).1).sum();
            p.cost_limits.push(CostLimit {
                name: "size".into(),
                table,
                max: (total_min + total_max) / 2.0,
            });
            check(&p);
        }
    }

    /// A problem whose objective cost is a lattice (many partial sums share a cost) and whose limited
    /// second cost spans a range about 1000× smaller, running against it, limited at `at` of its range.
    fn lattice_with_small_limited_cost(seed: u64, at: f64) -> Problem {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (groups, choices) = (10usize, 3u16);
        let cost: Vec<Vec<f64>> = (0..groups)
            .map(|_| (0..choices).map(f64::from).collect())
            .collect();
        let predicted: Vec<Vec<f64>> = (0..groups)
            .map(|_| {
                let s: f64 = rng.random_range(0.1..1.0);
                (0..choices)
                    .map(|c| s * (1.0 - f64::from(c) / 2.0).powi(2))
                    .collect()
            })
            .collect();
        let small: Vec<Vec<f64>> = (0..groups)
            .map(|_| {
                (0..choices)
                    .map(|c| 1e-3 * (f64::from(choices - 1 - c) + rng.random_range(0.0..1.0)))
                    .collect()
            })
            .collect();
        let lo: f64 = small.iter().map(|r| min_max(r).0).sum();
        let hi: f64 = small.iter().map(|r| min_max(r).1).sum();
        let objective_range = 2.0 * groups as f64;
        assert!(
            (objective_range / (hi - lo) - 1000.0).abs() < 400.0,
            "ranges {objective_range} and {}",
            hi - lo
        );
        let predictor = crate::sensitivity::Predictor::from_table(predicted).unwrap();
        Problem::new(
            vec![choices; groups],
            cost,
            vec![CostLimit {
                name: "size".into(),
                table: small,
                max: lo + at * (hi - lo),
            }],
            None,
            predictor,
            seed,
            [30.0, 10.0],
        )
        .unwrap()
    }

    /// Thinned partial fronts (a cap far below the partial fronts' size) keep the error bound of the
    /// module docs on every cost's own scale: every point of the brute-force front that meets the limit
    /// with a margin of `groups × δ_limit` is matched by a found point at most `groups × δ_cost` dearer
    /// and no worse in predicted quality. With one bin width for all costs (the objective's), the
    /// limited cost would be binned at 1% of its range, and such points lost.
    #[test]
    fn thinning_bins_each_cost_on_its_own_scale() {
        let mut checked = 0;
        for seed in 0..8 {
            for at in [0.3, 0.5, 0.7] {
                let problem = lattice_with_small_limited_cost(seed, at);
                let limit = &problem.cost_limits[0];
                // The bound of the module docs, each cost's bin from its own range.
                let range = |t: &[Vec<f64>]| -> f64 {
                    t.iter()
                        .map(|r| {
                            let (lo, hi) = min_max(r);
                            hi - lo
                        })
                        .sum()
                };
                let bins = [
                    TOLERANCE * range(&problem.cost),
                    TOLERANCE * range(&limit.table),
                ];
                assert_eq!(bin_widths(&problem), bins);
                let g = problem.groups() as f64;
                let got = solve_capped(&problem, 4).unwrap();
                for f in &got {
                    assert!(
                        problem.cost_violation(&f.point) == 0.0,
                        "{f:?} breaks the limit"
                    );
                }
                // The brute-force front of the points meeting the limit with the margin.
                let mut inside: Vec<(f64, f64)> = all_points(&problem.choices)
                    .into_iter()
                    .filter(|p| sum(&limit.table, p) <= limit.max - g * bins[1])
                    .map(|p| (problem.cost(&p), problem.predict(&p)))
                    .collect();
                inside.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                let mut best = f64::INFINITY;
                for (c, q) in inside {
                    if q >= best {
                        continue;
                    }
                    best = q;
                    checked += 1;
                    assert!(
                        got.iter()
                            .any(|f| f.cost <= c + g * bins[0] + EPS && f.predicted <= q + EPS),
                        "seed {seed}, limit at {at}: front point (cost {c}, predicted {q}) of the \
                         brute force has no match in {got:?}"
                    );
                }
            }
        }
        assert!(checked >= 100, "only {checked} front points checked");
    }

    #[test]
    fn spread_order_visits_every_index_once_ends_first() {
        for len in 0..40 {
            let o = spread_order(len);
            let mut s = o.clone();
            s.sort_unstable();
            assert_eq!(s, (0..len).collect::<Vec<_>>(), "len {len}");
            if len >= 2 {
                assert_eq!(&o[..2], &[0, len - 1]);
            }
        }
    }

    #[test]
    fn cost_spread_covers_the_cost_range_evenly_where_index_spread_follows_the_crowd() {
        // 100 front points crowded at the cheap end: cost i² (0 to 9801).
        let costs: Vec<f64> = (0..100).map(|i| f64::from(i * i)).collect();
        let order = spread_by_cost(&costs);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>(), "every index once");
        assert_eq!(&order[..2], &[0, 99], "cheapest and dearest first");
        // The widest cost gap left by the first k points, as a share of the range.
        let widest_gap = |picked: &[usize]| {
            let mut c: Vec<f64> = picked.iter().map(|&i| costs[i]).collect();
            c.sort_by(f64::total_cmp);
            c.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max) / costs[99]
        };
        for k in [3, 5, 9, 17] {
            let by_cost = widest_gap(&order[..k]);
            let by_index = widest_gap(&spread_order(100)[..k]);
            assert!(
                by_cost <= 1.5 / (k - 1) as f64,
                "{k} points by cost leave a gap of {by_cost:.3} of the range"
            );
            assert!(
                by_index > 1.5 / (k - 1) as f64,
                "the index spread leaves {by_index:.3}: the case does not test the crowding"
            );
        }
        assert!(spread_by_cost(&[]).is_empty());
        assert_eq!(spread_by_cost(&[3.0]), [0]);
        assert_eq!(spread_by_cost(&[1.0, 1.0, 1.0]), [0, 2, 1]);
    }

    #[test]
    fn exact_strategy_proposes_the_front_then_stops() {
        let s = Synthetic::new(4, 3, 7);
        let front = solve(&s.problem).unwrap();
        let h = crate::strategy::drive(&mut ExactStrategy::new(), &s.problem, 1000, 4, |p| {
            Some(s.quality(p))
        })
        .unwrap();
        assert_eq!(
            h.len(),
            front.len(),
            "one trial per front point, then the run ends"
        );
    }
}
