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

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Measurement;
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::space::{Assignment, Choice, LayerStatus, SearchSpace};

/// The assignment with only `group` at its choice `choice` and every other layer f32; an error if
/// the space has no such group or choice.
pub fn one_at_a_time_assignment(
    space: &SearchSpace,
    group: usize,
    choice: u16,
) -> Result<Assignment> {
    let c = space
        .groups
        .get(group)
        .and_then(|g| g.choices.get(choice as usize))
        .ok_or_else(|| {
            Error::sensitivity(format!(
                "search space `{}` has no group {group} with a choice {choice}",
                space.name
            ))
        })?;
    Ok(Assignment::new(space.layers.iter().map(|l| {
        let pick = if l.group == group { *c } else { Choice::F32 };
        (l.info.name.clone(), pick)
    })))
}

/// The measured quality with only `group` compressed at its choice `choice` (see the module docs).
pub fn one_at_a_time(
    evaluator: &dyn Evaluator,
    space: &SearchSpace,
    group: usize,
    choice: u16,
) -> Result<f64> {
    let a = one_at_a_time_assignment(space, group, choice)?;
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
    MeasurementCache::default().measure(evaluator, space, pairs)
}

/// One-at-a-time qualities kept in memory by evaluation key ([`Evaluator::key`]: the evaluator's
/// fingerprint and the assignment's hash), so a pair is measured once per model, data and settings,
/// whichever space it came from. The store will persist them; until then they live as long as this.
#[derive(Clone, Debug, Default)]
pub struct MeasurementCache {
    by_key: HashMap<blake3::Hash, f64>,
    hits: u64,
}

impl MeasurementCache {
    /// Measures each pair one at a time (in order), evaluating only those not measured before; the
    /// first failure stops and is returned.
    pub fn measure(
        &mut self,
        evaluator: &dyn Evaluator,
        space: &SearchSpace,
        pairs: &[(usize, u16)],
    ) -> Result<Vec<Measurement>> {
        pairs
            .iter()
            .map(|&(group, choice)| {
                let a = one_at_a_time_assignment(space, group, choice)?;
                let key = evaluator.key(&a);
                let quality = match self.by_key.get(&key) {
                    Some(&q) => {
                        self.hits += 1;
                        q
                    }
                    None => {
                        let q = evaluator.evaluate(&a)?.quality;
                        self.by_key.insert(key, q);
                        q
                    }
                };
                Ok(Measurement {
                    group,
                    choice,
                    quality,
                })
            })
            .collect()
    }

    /// Measurements held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Pairs answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// How many (group, choice) pairs a search's set-up measures one at a time.
///
/// Stored in a run's configuration as `"auto"` or a number (manifests written before `auto` existed
/// hold a number, and read as [`Pairs::Fixed`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pairs {
    /// Only the pairs the predicted front needs, refined round by round until the front's membership
    /// is stable or the set-up's share of the run's budget is spent (the search's frugal set-up).
    #[default]
    Auto,
    /// At most this many, a seeded uniform sample when the space has more ([`pick_pairs`]).
    Fixed(usize),
}

impl std::fmt::Display for Pairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pairs::Auto => f.write_str("auto"),
            Pairs::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Pairs {
    type Err = Error;

    /// `auto` or a positive whole number.
    fn from_str(s: &str) -> Result<Pairs> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Pairs::Auto);
        }
        match s.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Pairs::Fixed(n)),
            _ => Err(Error::sensitivity(format!(
                "`{s}` is not a number of pairs: give `auto` or a whole number of at least 1 (the \
                 predictor is fitted to one-at-a-time measurements)"
            ))),
        }
    }
}

impl serde::Serialize for Pairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Pairs::Auto => s.serialize_str("auto"),
            Pairs::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Pairs, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(usize),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string().parse().map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}
