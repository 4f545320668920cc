//! # Cost tables and feasibility
//!
//! Every cost is additive over layers and a group's members share one choice, so a search space's cost
//! is a sum of independent per-group terms. A [`CostTable`] precomputes each group's cost for each of its
//! choices; an assignment then costs one table lookup per group, and the exact cheapest and dearest
//! reachable totals are the sums of the per-group minima and maxima ([`Feasibility`]).

use serde::Serialize;

use super::model::{Cost, CostModel, Objective};
use crate::error::{Error, Result};
use crate::space::{Point, SearchSpace};

/// Cost of each group of a space under each of its choices.
#[derive(Clone, Debug)]
pub struct CostTable {
    /// What every assignment costs besides its groups: the model's non-matmul work
    /// ([`CostModel::non_matmul_us`]).
    pub base: Cost,
    /// `groups[g][c]`: total cost of group g's members under its choice c.
    pub groups: Vec<Vec<Cost>>,
}

impl CostTable {
    /// Costs every choice of every group of `space` under `model`.
    pub fn new(model: &CostModel, space: &SearchSpace) -> CostTable {
        let groups = space
            .groups
            .iter()
            .map(|g| {
                g.choices
                    .iter()
                    .map(|c| {
                        g.members
                            .iter()
                            .map(|&m| model.layer(&space.layers[m].info, c).cost)
                            .sum()
                    })
                    .collect()
            })
            .collect();
        CostTable {
            base: Cost {
                latency_us: model.non_matmul_us(),
                ..Cost::default()
            },
            groups,
        }
    }

    /// The total cost of a point (one choice index per group), the base included.
    pub fn cost(&self, point: &[u16]) -> Cost {
        let mut total = self.base;
        for (g, &c) in self.groups.iter().zip(point) {
            total += g[c as usize];
        }
        total
    }

    /// The exact cheapest and dearest reachable totals of `objective`.
    pub fn feasibility(&self, objective: Objective) -> Feasibility {
        let mut cheapest = Vec::with_capacity(self.groups.len());
        let mut dearest = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let by = |a: &(usize, &Cost), b: &(usize, &Cost)| {
                objective.of(a.1).total_cmp(&objective.of(b.1))
            };
            cheapest.push(g.iter().enumerate().min_by(by).map_or(0, |(i, _)| i as u16));
            dearest.push(g.iter().enumerate().max_by(by).map_or(0, |(i, _)| i as u16));
        }
        Feasibility {
            objective,
            min: objective.of(&self.cost(&cheapest)),
            max: objective.of(&self.cost(&dearest)),
            cheapest,
            dearest,
        }
    }
}

/// The reachable range of one objective over a space.
#[derive(Clone, Debug, Serialize)]
pub struct Feasibility {
    pub objective: Objective,
    pub min: f64,
    pub max: f64,
    /// A point that reaches `min`.
    pub cheapest: Point,
    /// A point that reaches `max`.
    pub dearest: Point,
}

/// How a budget relates to the reachable range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetFit {
    /// Some but not all assignments meet it.
    Binding,
    /// Every assignment meets it: it constrains nothing.
    NonBinding,
}

impl Feasibility {
    /// Checks a maximum `budget` of this objective: an error stating the reachable range if even the
    /// cheapest assignment exceeds it. A budget at or above the dearest total is allowed but constrains
    /// nothing, which the caller should say.
    pub fn check_max(&self, budget: f64, space: &str, profile: &str) -> Result<BudgetFit> {
        let o = self.objective;
        if !(budget.is_finite() && budget > 0.0) {
            return Err(Error::Infeasible {
                message: format!("max {o} must be a positive number, not {budget}"),
            });
        }
        if budget < self.min {
            return Err(Error::Infeasible {
                message: format!(
                    "max {o} {} is impossible: the cheapest assignment of search space `{space}` under profile \
                     `{profile}` needs {} (reachable: {} to {}). Raise the budget, allow cheaper choices in the \
                     search space, or pick another profile.",
                    o.format(budget),
                    o.format(self.min),
                    o.format(self.min),
                    o.format(self.max)
                ),
            });
        }
        Ok(if budget >= self.max {
            BudgetFit::NonBinding
        } else {
            BudgetFit::Binding
        })
    }
}

/// A limit on one cost: at most `max` of `objective`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Limit {
    pub objective: Objective,
    pub max: f64,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max {} {}",
            self.objective,
            self.objective.format(self.max)
        )
    }
}

/// Partial sums kept per stage by [`CostTable::cheapest_within`] before it gives up (no space shipped
/// comes near it; a bigger one is left unchecked rather than checked slowly).
pub const MAX_JOINT_PARTIAL: usize = 200_000;

/// The outcome of [`CostTable::cheapest_within`].
#[derive(Clone, Debug, PartialEq)]
pub enum Within {
    /// The point with the least `objective` of those meeting every other limit, and its costs.
    Cheapest { point: Point, cost: Cost },
    /// No point meets the other limits.
    Nothing,
    /// A partial front outgrew [`MAX_JOINT_PARTIAL`]: not decided.
    TooLarge,
}

impl CostTable {
    /// The point with the least `objective` among those that meet every limit of `others`, found
    /// exactly: a Pareto dynamic programme over groups on `(objective, others…)` (at most three costs)
    /// that drops a partial sum when another is no worse in every coordinate or when it cannot meet a
    /// limit even with the cheapest remaining choices — a multiple-choice knapsack with side limits.
    pub fn cheapest_within(&self, objective: Objective, others: &[Limit]) -> Within {
        let axes: Vec<Objective> = std::iter::once(objective)
            .chain(others.iter().map(|l| l.objective))
            .collect();
        let value = |g: usize, c: usize| -> Vec<f64> {
            axes.iter().map(|o| o.of(&self.groups[g][c])).collect()
        };
        // The cheapest each limited cost can still get from group g on.
        let mut min_rest = vec![vec![0.0; others.len()]; self.groups.len() + 1];
        for g in (0..self.groups.len()).rev() {
            for (k, l) in others.iter().enumerate() {
                let m = self.groups[g]
                    .iter()
                    .map(|c| l.objective.of(c))
                    .fold(f64::INFINITY, f64::min);
                min_rest[g][k] = min_rest[g + 1][k] + m;
            }
        }
        let mut stages: Vec<Vec<Sum>> = vec![vec![Sum {
            values: axes.iter().map(|o| o.of(&self.base)).collect(),
            parent: 0,
            choice: 0,
        }]];
        for g in 0..self.groups.len() {
            let mut next = Vec::new();
            for (pi, p) in stages[g].iter().enumerate() {
                for c in 0..self.groups[g].len() {
                    let values: Vec<f64> = p
                        .values
                        .iter()
                        .zip(value(g, c))
                        .map(|(a, b)| a + b)
                        .collect();
                    let hopeless = others
                        .iter()
                        .enumerate()
                        .any(|(k, l)| values[1 + k] + min_rest[g + 1][k] > l.max * (1.0 + 1e-12));
                    if !hopeless {
                        next.push(Sum {
                            values,
                            parent: pi as u32,
                            choice: c as u16,
                        });
                    }
                }
            }
            let kept = non_dominated(next);
            if kept.len() > MAX_JOINT_PARTIAL {
                return Within::TooLarge;
            }
            stages.push(kept);
        }
        let last = &stages[stages.len() - 1];
        let Some(best) =
            (0..last.len()).min_by(|&a, &b| last[a].values[0].total_cmp(&last[b].values[0]))
        else {
            return Within::Nothing;
        };
        let mut point = vec![0u16; self.groups.len()];
        let mut i = best;
        for g in (1..stages.len()).rev() {
            point[g - 1] = stages[g][i].choice;
            i = stages[g][i].parent as usize;
        }
        Within::Cheapest {
            cost: self.cost(&point),
            point,
        }
    }

    /// Checks that `limits` (each already within the reachable range) can be met together: an
    /// [`Error::Infeasible`] naming them and, for each, the point with the least of its cost among
    /// those meeting the others (with its costs), if no assignment meets them all. `Ok(false)` when the
    /// space is too large to decide (nothing is refused then), `Ok(true)` when they can be met.
    pub fn check_joint(&self, limits: &[Limit], space: &str, profile: &str) -> Result<bool> {
        if limits.len() < 2 {
            return Ok(true);
        }
        let within = |k: usize| {
            let others: Vec<Limit> = (0..limits.len())
                .filter(|&j| j != k)
                .map(|j| limits[j])
                .collect();
            (
                others.clone(),
                self.cheapest_within(limits[k].objective, &others),
            )
        };
        match within(0).1 {
            Within::Cheapest { cost, .. } if limits[0].objective.of(&cost) <= limits[0].max => {
                return Ok(true)
            }
            Within::TooLarge => return Ok(false),
            _ => {}
        }
        let names: Vec<String> = limits.iter().map(Limit::to_string).collect();
        let mut message = format!(
            "{} are each reachable but not together by search space `{space}` under profile \
             `{profile}`:",
            and_list(&names)
        );
        for (k, l) in limits.iter().enumerate() {
            let (others, w) = within(k);
            let others = and_list(&others.iter().map(Limit::to_string).collect::<Vec<_>>());
            let o = l.objective;
            message.push_str(&match w {
                Within::Cheapest { cost, .. } => format!(
                    " the least {o} of an assignment within {others} is {} ({}, {}, {});",
                    o.format(o.of(&cost)),
                    Objective::Latency.format(cost.latency_us),
                    Objective::Size.format(cost.bytes as f64),
                    Objective::Bops.format(cost.bops)
                ),
                Within::Nothing => format!(" no assignment meets {others};"),
                Within::TooLarge => format!(" the least {o} within {others} was not found;"),
            });
        }
        message.pop();
        message.push_str(
            ". Raise one of the limits, allow cheaper choices in the search space, or pick another \
             profile.",
        );
        Err(Error::Infeasible { message })
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A partial sum of [`CostTable::cheapest_within`]: its costs, and how it was reached.
struct Sum {
    values: Vec<f64>,
    parent: u32,
    choice: u16,
}

/// The sums no other sum weakly dominates (ties keep the first in lexicographic order); at most three
/// coordinates, in O(n log n).
fn non_dominated(mut all: Vec<Sum>) -> Vec<Sum> {
    all.sort_by(|a, b| {
        a.values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    match all.first().map(|s| s.values.len()) {
        None | Some(1) => {
            all.truncate(1);
            all
        }
        Some(2) => {
            let mut best = f64::INFINITY;
            all.retain(|s| {
                let keep = s.values[1] < best;
                best = best.min(s.values[1]);
                keep
            });
            all
        }
        _ => {
            // In lexicographic order a sum can only be dominated by an earlier one: keep the staircase
            // of the kept sums' (second, third) coordinates, third decreasing as second grows.
            let mut stairs: std::collections::BTreeMap<Key, f64> = Default::default();
            all.retain(|s| {
                let (y, z) = (s.values[1], s.values[2]);
                let dominated = stairs
                    .range(..=Key(y))
                    .next_back()
                    .is_some_and(|(_, &bz)| bz <= z);
                if !dominated {
                    let covered: Vec<Key> = stairs
                        .range(Key(y)..)
                        .take_while(|(_, &bz)| bz >= z)
                        .map(|(k, _)| *k)
                        .collect();
                    for k in covered {
                        stairs.remove(&k);
                    }
                    stairs.insert(Key(y), z);
                }
                !dominated
            });
            all
        }
    }
}

/// An `f64` ordered by `total_cmp`, for the staircase's keys.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Key(f64);

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A table of `groups` groups of `choices` choices: latency grows with the choice, size shrinks
    /// with it (they disagree, so limits on both can bind together), BOPs random.
    fn table(groups: usize, choices: usize, seed: u64) -> CostTable {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        CostTable {
            base: Cost::default(),
            groups: (0..groups)
                .map(|_| {
                    let mut latency = 0.0;
                    let mut bytes = 10_000u64;
                    (0..choices)
                        .map(|_| {
                            latency += rng.random_range(1.0..10.0);
                            bytes -= rng.random_range(100..1000u64);
                            Cost {
                                latency_us: latency,
                                bytes,
                                bops: rng.random_range(1e6..1e7),
                            }
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn every_point(t: &CostTable) -> Vec<Point> {
        let mut out = vec![vec![]];
        for g in &t.groups {
            out = out
                .into_iter()
                .flat_map(|p: Point| {
                    (0..g.len() as u16).map(move |c| {
                        let mut q = p.clone();
                        q.push(c);
                        q
                    })
                })
                .collect();
        }
        out
    }

    fn meets(t: &CostTable, p: &[u16], limits: &[Limit]) -> bool {
        let c = t.cost(p);
        limits.iter().all(|l| l.objective.of(&c) <= l.max)
    }

    #[test]
    fn cheapest_within_equals_brute_force() {
        for seed in 0..12 {
            let t = table(5, 4, seed);
            let all = every_point(&t);
            let quantile = |o: Objective, q: f64| {
                let mut v: Vec<f64> = all.iter().map(|p| o.of(&t.cost(p))).collect();
                v.sort_by(f64::total_cmp);
                v[(q * (v.len() - 1) as f64) as usize]
            };
            let others = [
                Limit {
                    objective: Objective::Size,
                    max: quantile(Objective::Size, 0.3),
                },
                Limit {
                    objective: Objective::Bops,
                    max: quantile(Objective::Bops, 0.6),
                },
            ];
            for n in 1..=2 {
                let want = all
                    .iter()
                    .filter(|p| meets(&t, p, &others[..n]))
                    .map(|p| t.cost(p).latency_us)
                    .fold(f64::INFINITY, f64::min);
                match t.cheapest_within(Objective::Latency, &others[..n]) {
                    Within::Cheapest { point, cost } => {
                        assert!(meets(&t, &point, &others[..n]), "seed {seed}");
                        assert_eq!(t.cost(&point), cost);
                        assert!(
                            (cost.latency_us - want).abs() < 1e-9,
                            "seed {seed}, {n} limits: {} vs brute force {want}",
                            cost.latency_us
                        );
                    }
                    other => panic!("seed {seed}: {other:?}, brute force {want}"),
                }
            }
        }
    }

    #[test]
    fn limits_each_reachable_but_not_together_are_refused_naming_both() {
        let t = table(6, 4, 3);
        let lat = t.feasibility(Objective::Latency);
        let size = t.feasibility(Objective::Size);
        // Each at a fifth of its range from its cheapest: reachable alone, not together (cheap in
        // latency means big).
        let limits = [
            Limit {
                objective: Objective::Latency,
                max: lat.min + 0.2 * (lat.max - lat.min),
            },
            Limit {
                objective: Objective::Size,
                max: size.min + 0.2 * (size.max - size.min),
            },
        ];
        for l in &limits {
            let f = t.feasibility(l.objective);
            assert_eq!(
                f.check_max(l.max, "toy", "dev").unwrap(),
                BudgetFit::Binding
            );
        }
        assert!(every_point(&t).iter().all(|p| !meets(&t, p, &limits)));
        let err = t
            .check_joint(&limits, "toy", "dev")
            .unwrap_err()
            .to_string();
        for l in &limits {
            assert!(err.contains(&l.to_string()), "names {l}: {err}");
        }
        // For each limit, the cheapest point in its cost that meets the other, with its costs.
        let Within::Cheapest { cost, .. } = t.cheapest_within(Objective::Latency, &limits[1..])
        else {
            panic!("a point meets the size limit")
        };
        assert!(
            err.contains(&format!(
                "the least latency of an assignment within {} is {}",
                limits[1],
                Objective::Latency.format(cost.latency_us)
            )),
            "{err}"
        );
        assert!(
            err.contains(&Objective::Size.format(cost.bytes as f64)),
            "{err}"
        );
        let Within::Cheapest { cost, .. } = t.cheapest_within(Objective::Size, &limits[..1]) else {
            panic!("a point meets the latency limit")
        };
        assert!(
            err.contains(&format!(
                "the least size of an assignment within {} is {}",
                limits[0],
                Objective::Size.format(cost.bytes as f64)
            )),
            "{err}"
        );
        // Loosen one until they can be met together: accepted.
        let mut loose = limits;
        loose[1].max = size.min + 0.9 * (size.max - size.min);
        assert!(every_point(&t).iter().any(|p| meets(&t, p, &loose)));
        assert!(t.check_joint(&loose, "toy", "dev").unwrap());
    }
}
