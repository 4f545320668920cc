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
//! grows beyond [`MAX_PARTIAL`] points; then it is thinned to the best quality per cost bin of width
//! `δ = TOLERANCE × (dearest − cheapest total)`, and the result is exact up to a cost error of at most
//! `groups × δ`. Neither shipped space comes near the cap.
//!
//! As a strategy it proposes the front's points in *spread order* (cheapest, dearest, then midpoints,
//! recursively), so any prefix covers the whole front evenly; when every front point has been tried it
//! has nothing left and the run ends.
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
    let groups = problem.groups();
    let dims = 2 + problem.cost_limits.len();
    let min_rest = min_rest(problem);
    let range: f64 = (0..groups)
        .map(|g| {
            let (lo, hi) = min_max(&problem.cost[g]);
            hi - lo
        })
        .sum();
    let bin = TOLERANCE * range.max(f64::MIN_POSITIVE);

    let mut stages: Vec<Vec<Partial>> = Vec::with_capacity(groups + 1);
    stages.push(vec![Partial {
        values: vec![0.0; dims],
        parent: 0,
        choice: 0,
    }]);
    for g in 0..groups {
        let mut kept = prune(extend(problem, g, &stages[g], &min_rest[g + 1]));
        if kept.len() > MAX_PARTIAL {
            kept = thin(kept, bin);
        }
        if kept.len() > u32::MAX as usize {
            return Err(Error::search("exact front: too many partial sums"));
        }
        stages.push(kept);
    }
    Ok(front_of(&stages))
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

/// Keeps the best predicted quality in each cost bin of width `bin` (and, with limits, the best per bin
/// of each limited cost as well, so feasibility is not lost).
fn thin(all: Vec<Partial>, bin: f64) -> Vec<Partial> {
    use std::collections::BTreeMap;
    let mut best: BTreeMap<Vec<i64>, Partial> = BTreeMap::new();
    for p in all {
        let mut key: Vec<i64> = vec![(p.values[0] / bin).floor() as i64];
        key.extend(p.values[2..].iter().map(|v| (v / bin).floor() as i64));
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

/// Proposes the predicted front's points in spread order (see the module docs); stateless.
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
        Ok(spread_order(front.len())
            .into_iter()
            .map(|i| &front[i].point)
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
    use crate::strategy::CostLimit;

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
