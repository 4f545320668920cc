//! # One-at-a-time measurements
//!
//! The real quality of the model with a single group compressed (at one of its choices) and every
//! other layer left f32 — pins and exclusions included, so that each measurement isolates one group.
//! These are what [`Predictor::fit`](super::Predictor::fit) fits its per-group scales to.
//!
//! Which pairs to measure: every compressing (group, choice) pair of the searchable groups when they
//! are few enough, else a seeded uniform sample of a fixed size ([`pick_pairs`]), so that the same seed
//! always measures the same pairs.
//!
//! ## References
//!
//! - Z. Dong et al., "HAWQ-V2: Hessian aware trace-weighted quantization", NeurIPS 2020 (validating a
//!   sensitivity measure against the measured effect of quantizing one layer at a time).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Measurement;
use crate::error::Result;
use crate::eval::Evaluator;
use crate::space::{Assignment, Choice, LayerStatus, SearchSpace};

/// The assignment with only `group` at its choice `choice` and every other layer f32.
pub fn one_at_a_time_assignment(space: &SearchSpace, group: usize, choice: u16) -> Assignment {
    let g = &space.groups[group];
    let c = g.choices[choice as usize];
    Assignment::new(space.layers.iter().map(|l| {
        let pick = if l.group == group { c } else { Choice::F32 };
        (l.info.name.clone(), pick)
    }))
}

/// The measured quality with only `group` compressed at its choice `choice` (see the module docs).
/// Panics if `group` or `choice` is outside `space`.
pub fn one_at_a_time(
    evaluator: &dyn Evaluator,
    space: &SearchSpace,
    group: usize,
    choice: u16,
) -> Result<f64> {
    let a = one_at_a_time_assignment(space, group, choice);
    Ok(evaluator.evaluate(&a)?.quality)
}

/// The (group, choice) pairs to measure: every pair of a searchable group whose choice compresses
/// something, in (group, choice) order if there are at most `max`; else `max` of them drawn uniformly
/// without replacement from a ChaCha8 generator seeded with `seed`, in (group, choice) order.
pub fn pick_pairs(space: &SearchSpace, max: usize, seed: u64) -> Vec<(usize, u16)> {
    let all: Vec<(usize, u16)> = space
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| g.status == LayerStatus::Searchable)
        .flat_map(|(gi, g)| {
            g.choices
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.is_uncompressed())
                .map(move |(ci, _)| (gi, ci as u16))
        })
        .collect();
    if all.len() <= max {
        return all;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked: Vec<usize> = rand::seq::index::sample(&mut rng, all.len(), max).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| all[i]).collect()
}

/// Measures each pair one at a time (in order); the first failure stops and is returned.
pub fn measure(
    evaluator: &dyn Evaluator,
    space: &SearchSpace,
    pairs: &[(usize, u16)],
) -> Result<Vec<Measurement>> {
    pairs
        .iter()
        .map(|&(group, choice)| {
            Ok(Measurement {
                group,
                choice,
                quality: one_at_a_time(evaluator, space, group, choice)?,
            })
        })
        .collect()
}
