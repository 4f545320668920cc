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
        CostTable { groups }
    }

    /// The total cost of a point (one choice index per group).
    pub fn cost(&self, point: &[u16]) -> Cost {
        let mut total = Cost::default();
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
