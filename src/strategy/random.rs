//! # The random strategy: the baseline
//!
//! Proposes uniformly random points of the space that have not been tried yet, drawn from a generator
//! seeded by the run seed and the number of the first trial being asked ([`super::rng_for`]), so a run
//! is reproducible and a resumed run asks what the uninterrupted one would have. It keeps no state.
//! Each slot of a batch is redrawn up to [`REDRAWS`] times when it hits a point already tried or already
//! drawn; a slot that finds nothing new ends the batch, so a small exhausted space returns fewer points,
//! and finally none, which ends the run. Every other strategy is benchmarked against it.
//!
//! ## References
//!
//! - J. Bergstra, Y. Bengio, "Random search for hyper-parameter optimization", JMLR 13, 2012 (random
//!   search as the baseline a search method has to beat).

use std::collections::HashSet;

use rand::Rng;

use super::{History, Problem, Strategy};
use crate::error::Result;
use crate::space::Point;

/// Draws per slot before the slot is given up as exhausted.
pub const REDRAWS: usize = 100;

/// A uniformly random point that is neither in `history` nor in `batch`, after at most `tries` draws;
/// `None` if every draw hit a point already seen.
pub(crate) fn random_unseen(
    problem: &Problem,
    history: &History,
    batch: &HashSet<Point>,
    rng: &mut impl Rng,
    tries: usize,
) -> Option<Point> {
    (0..tries)
        .map(|_| problem.random_point(rng))
        .find(|p| !history.contains(p) && !batch.contains(p))
}

/// Proposes uniformly random untried points (see the module docs); stateless.
#[derive(Clone, Debug, Default)]
pub struct RandomStrategy;

impl RandomStrategy {
    pub fn new() -> RandomStrategy {
        RandomStrategy
    }
}

impl Strategy for RandomStrategy {
    fn name(&self) -> &'static str {
        "random"
    }

    fn ask(&mut self, problem: &Problem, history: &History, n: usize) -> Result<Vec<Point>> {
        let mut rng = super::rng_for(problem.seed, self.name(), history.len() as u64);
        let mut batch = HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(p) = random_unseen(problem, history, &batch, &mut rng, REDRAWS) else {
                break;
            };
            batch.insert(p.clone());
            out.push(p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::synthetic::Synthetic;
    use crate::strategy::{drive, Observed};

    #[test]
    fn never_repeats_a_point_of_the_history_or_the_batch() {
        // 3 groups of 3 choices: 27 points, so 60 asked trials must collide often and be rejected.
        let s = Synthetic::new(3, 3, 11);
        let h = drive(&mut RandomStrategy::new(), &s.problem, 60, 5, |p| {
            Some(s.quality(p))
        })
        .unwrap();
        let distinct: HashSet<&Point> = h.trials().iter().map(|t| &t.point).collect();
        assert_eq!(distinct.len(), h.len(), "a point was proposed twice");
        // 27 points in all; the last few are hard to hit by chance, so the run may end just short.
        assert!(
            (20..=27).contains(&h.len()),
            "most of the space, then nothing more: {} trials",
            h.len()
        );
    }

    #[test]
    fn same_seed_and_history_give_the_same_points() {
        let s = Synthetic::new(8, 4, 3);
        let mut history = History::new();
        for (i, point) in RandomStrategy::new()
            .ask(&s.problem, &history, 5)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            history.push(Observed {
                number: i as u64,
                point,
                quality: None,
                proxy: false,
            });
        }
        let a = RandomStrategy::new().ask(&s.problem, &history, 7).unwrap();
        let b = RandomStrategy::new().ask(&s.problem, &history, 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 7);
        // Another seed draws other points.
        let other = Synthetic::new(8, 4, 4);
        let c = RandomStrategy::new()
            .ask(&other.problem, &history, 7)
            .unwrap();
        assert_ne!(a, c, "the seed must matter");
    }

    #[test]
    fn an_exhausted_tiny_space_returns_fewer_then_none() {
        // 2 groups of 2 choices: 4 points.
        let s = Synthetic::new(2, 2, 5);
        let mut r = RandomStrategy::new();
        let first = r.ask(&s.problem, &History::new(), 10).unwrap();
        assert_eq!(first.len(), 4, "all four points, no more: {first:?}");
        let mut history = History::new();
        for (i, point) in first.into_iter().enumerate() {
            history.push(Observed {
                number: i as u64,
                point,
                quality: Some(0.1),
                proxy: false,
            });
        }
        assert!(r.ask(&s.problem, &history, 3).unwrap().is_empty());
    }
}
