//! # A synthetic, non-additive search problem
//!
//! For testing and benchmarking strategies without a model: `groups` groups of `choices` choices each,
//! ordered from the most compressed (cheap, damaging) to the least (dear, harmless). Each group has a
//! size and a sensitivity drawn from a seeded generator. The **true** quality drop is not additive:
//!
//! `q(p) = Σ_g e_g + 0.5·(Σ_g e_g)² + 2·Σ_g √(e_g·e_{g+1})`, with `e_g = s_g·(1 − c/(C−1))²`,
//!
//! — errors compound, and neighbouring layers that are both compressed hurt more than the sum of their
//! parts. The **predictor** the strategies get knows only `Σ e_g`, each group's sensitivity mis-scaled
//! by a factor in [0.5, 2], as a real sensitivity model would be. Costs are exact and additive.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Problem;
use crate::sensitivity::Predictor;

/// A synthetic problem and its true quality function.
#[derive(Debug)]
pub struct Synthetic {
    pub problem: Problem,
    /// `errors[g][c]`: the true per-group error term.
    pub errors: Vec<Vec<f64>>,
}

impl Synthetic {
    /// A problem of `groups` × `choices` (≥ 2) seeded with `seed`.
    pub fn new(groups: usize, choices: u16, seed: u64) -> Synthetic {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let c = choices.max(2);
        let mut errors = Vec::with_capacity(groups);
        let mut predicted = Vec::with_capacity(groups);
        let mut cost = Vec::with_capacity(groups);
        for _ in 0..groups {
            let size: f64 = rng.random_range(1.0..10.0);
            let sensitivity: f64 = rng.random_range(0.01..0.3);
            let misscale: f64 = 2f64.powf(rng.random_range(-1.0..1.0));
            let e: Vec<f64> = (0..c)
                .map(|k| {
                    let x = 1.0 - k as f64 / (c - 1) as f64;
                    sensitivity * x * x
                })
                .collect();
            predicted.push(e.iter().map(|v| v * misscale).collect());
            // Dearer with each step, unevenly, so the cost axis is not a lattice.
            let mut total = 0.0;
            cost.push(
                (0..c)
                    .map(|k| {
                        total += if k == 0 {
                            size * 0.1
                        } else {
                            size * rng.random_range(0.1..0.5)
                        };
                        total
                    })
                    .collect(),
            );
            errors.push(e);
        }
        let max_cost: f64 = cost.iter().map(|r: &Vec<f64>| r[c as usize - 1]).sum();
        let max_q = {
            let s: f64 = errors.iter().map(|r| r[0]).sum();
            s + 0.5 * s * s + 2.0 * s
        };
        let predictor = Predictor::from_table(predicted).expect("finite synthetic table");
        let problem = Problem::new(
            vec![c; groups],
            cost,
            Vec::new(),
            None,
            predictor,
            seed,
            [max_cost * 1.01, max_q * 1.01],
        )
        .expect("a valid synthetic problem");
        Synthetic { problem, errors }
    }

    /// The true quality drop of `point`.
    pub fn quality(&self, point: &[u16]) -> f64 {
        let e: Vec<f64> = self
            .errors
            .iter()
            .zip(point)
            .map(|(r, &c)| r[c as usize])
            .collect();
        let s: f64 = e.iter().sum();
        let pairs: f64 = e.windows(2).map(|w| (w[0] * w[1]).sqrt()).sum();
        s + 0.5 * s * s + 2.0 * pairs
    }
}
