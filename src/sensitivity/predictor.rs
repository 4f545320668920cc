//! # The additive predictor
//!
//! The predicted quality drop of a point is a sum of per-group terms, `Σ_g table[g][point[g]]`, read
//! from a precomputed group × choice table: predicting costs one load and one add per group, and
//! allocates nothing.
//!
//! [`Predictor::fit`] builds the table from a cheap error per (group, choice) — the layers' relative
//! output errors ([`LayerStats`](super::LayerStats)) — and one-at-a-time measurements of the real
//! quality drop. Each group `g` gets a scale `s_g`, and `table[g][c] = s_g · e_g(c)`:
//!
//! - a group with measurements gets the least-squares fit **through the origin** of measured drop
//!   against cheap error, `s_g = Σ m·e / Σ e²` (a choice that changes nothing has error 0 and drop 0,
//!   so the line has no intercept);
//! - a group without measurements (or whose measured errors are all 0) gets the **median** of the
//!   fitted scales — its layers are assumed as sensitive as a typical measured one.
//!
//! [`Predictor::refine`] fits the same scales to the one-at-a-time measurements and to **trials**
//! jointly: a trial is a measurement of every group at once, `quality = Σ_g term_g`, so with the
//! measured pairs' terms known, it is one linear equation in the scales of the groups at unmeasured
//! choices. Every measurement and every trial is one least-squares row, in absolute or relative terms
//! ([`Fit`]); each group also gets one pseudo-row — its term at its median positive cheap error equal
//! to what the set-up's scale gives, weighed like a trial of the median quality — so that a group the
//! trials barely move stays near its set-up scale; scales are kept ≥ 0 (a group whose least-squares
//! scale is negative is set to 0 and the rest solved again).
//!
//! The quality drop is relative to the uncompressed model; with the evaluator's default objectives
//! (KL divergence and cosine distance to the f32 model's outputs) the f32 model scores 0, so the drop
//! is the quality itself.
//!
//! ## References
//!
//! - Z. Dong et al., "HAWQ: Hessian AWare Quantization of neural networks with mixed-precision",
//!   ICCV 2019, and "HAWQ-V3", ICML 2021 (a layer's sensitivity times its quantization perturbation,
//!   summed over layers, as the objective a bit allocation minimises).

use std::collections::HashMap;

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

use crate::cpu::clear_upper_avx;
use crate::error::{Error, Result};

/// One one-at-a-time measurement: the quality of the model with only `group` compressed, at its
/// choice number `choice`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measurement {
    pub group: usize,
    pub choice: u16,
    /// The measured quality (drop from the uncompressed model; lower is better).
    pub quality: f64,
}

/// Which errors a refit ([`Predictor::refine`]) minimises the squares of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// `prediction − measured`: the large qualities decide.
    Absolute,
    /// `(prediction − measured) / measured`: every order of magnitude counts alike.
    Relative,
}

/// Predicts the quality drop of a point as a sum of per-group terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Predictor {
    /// `table[group][choice]`: the predicted quality term.
    table: Vec<Vec<f64>>,
    /// The scale of each group (1 for a predictor built from a table).
    scales: Vec<f64>,
    /// Whether each group's scale was fitted to its own measurements (else the median).
    fitted: Vec<bool>,
}

impl Predictor {
    /// A predictor from a ready table (`table[group][choice]`, finite values).
    pub fn from_table(table: Vec<Vec<f64>>) -> Result<Predictor> {
        check_table(&table, "table")?;
        let n = table.len();
        Ok(Predictor {
            table,
            scales: vec![1.0; n],
            fitted: vec![false; n],
        })
    }

    /// Fits per-group scales of the cheap `errors` (`errors[group][choice]`, finite, ≥ 0) to
    /// `measurements` (see the module docs). At least one group must have a measurement at a choice
    /// with a positive error.
    pub fn fit(errors: &[Vec<f64>], measurements: &[Measurement]) -> Result<Predictor> {
        check_table(errors, "errors")?;
        let mut em = vec![0.0; errors.len()];
        let mut ee = vec![0.0; errors.len()];
        for m in measurements {
            let e = errors
                .get(m.group)
                .and_then(|row| row.get(m.choice as usize))
                .ok_or_else(|| {
                    Error::sensitivity(format!(
                        "measurement of group {} choice {} is outside the {}-group error table",
                        m.group,
                        m.choice,
                        errors.len()
                    ))
                })?;
            if !m.quality.is_finite() {
                return Err(Error::sensitivity(format!(
                    "measurement of group {} choice {} is {} (not finite)",
                    m.group, m.choice, m.quality
                )));
            }
            em[m.group] += e * m.quality;
            ee[m.group] += e * e;
        }
        let fitted: Vec<bool> = ee.iter().map(|&v| v > 0.0).collect();
        let mut known: Vec<f64> = (0..errors.len())
            .filter(|&g| fitted[g])
            .map(|g| em[g] / ee[g])
            .collect();
        if known.is_empty() {
            return Err(Error::sensitivity(
                "no measurement at a choice with a positive cheap error: no scale can be fitted",
            ));
        }
        known.sort_by(f64::total_cmp);
        let mid = known.len() / 2;
        let median = if known.len() % 2 == 1 {
            known[mid]
        } else {
            (known[mid - 1] + known[mid]) / 2.0
        };
        let scales: Vec<f64> = (0..errors.len())
            .map(|g| if fitted[g] { em[g] / ee[g] } else { median })
            .collect();
        Ok(Predictor::scaled(errors, scales, fitted))
    }

    /// The predictor `table[g][c] = scales[g] · errors[g][c]`.
    fn scaled(errors: &[Vec<f64>], scales: Vec<f64>, fitted: Vec<bool>) -> Predictor {
        let table = errors
            .iter()
            .zip(&scales)
            .map(|(row, s)| row.iter().map(|e| s * e).collect())
            .collect();
        Predictor {
            table,
            scales,
            fitted,
        }
    }

    /// The predictor fitted to `measurements` and to `trials` (each a point and its measured quality
    /// drop) jointly (see the module docs), measured pairs predicted as measured; `self` is the
    /// set-up's predictor of the same cheap `errors`, whose scales are the prior. Trials of another
    /// space or with a non-finite quality are an error.
    pub fn refine(
        &self,
        errors: &[Vec<f64>],
        measurements: &[Measurement],
        trials: &[(&[u16], f64)],
        errors_are: Fit,
    ) -> Result<Predictor> {
        check_table(errors, "errors")?;
        let groups = errors.len();
        if self.scales.len() != groups {
            return Err(Error::sensitivity(format!(
                "a {}-group predictor cannot be refined with a {groups}-group error table",
                self.scales.len()
            )));
        }
        let mut measured: HashMap<(usize, u16), f64> = HashMap::new();
        for m in measurements {
            if errors
                .get(m.group)
                .and_then(|r| r.get(m.choice as usize))
                .is_none()
                || !m.quality.is_finite()
            {
                return Err(Error::sensitivity(format!(
                    "measurement of group {} choice {} ({}) does not fit the {groups}-group error table",
                    m.group, m.choice, m.quality
                )));
            }
            measured.insert((m.group, m.choice), m.quality);
        }
        let mut qualities: Vec<f64> = trials.iter().map(|t| t.1).filter(|q| *q > 0.0).collect();
        qualities.sort_by(f64::total_cmp);
        let typical = qualities.get(qualities.len() / 2).copied().unwrap_or(1.0);
        let largest = qualities
            .iter()
            .chain(measurements.iter().map(|m| &m.quality))
            .copied()
            .filter(|q| q.is_finite())
            .fold(0.0, f64::max);
        let weight = |q: f64| match errors_are {
            Fit::Absolute => Some(1.0),
            Fit::Relative => relative_weight(q, RELATIVE_FLOOR * largest),
        };
        // Normal equations `a s = b` of the least-squares rows (see the module docs).
        let mut a = vec![vec![0.0; groups]; groups];
        let mut b = vec![0.0; groups];
        for (g, row) in errors.iter().enumerate() {
            let mut positive: Vec<f64> = row.iter().copied().filter(|&e| e > 0.0).collect();
            if positive.is_empty() {
                continue;
            }
            positive.sort_by(f64::total_cmp);
            // A row like a trial's: the group's term at its median error, weighed as a trial of
            // typical quality is.
            let e = positive[positive.len() / 2];
            let w = weight(typical).unwrap_or(1.0);
            a[g][g] += w * e * e;
            b[g] += w * e * e * self.scales[g];
        }
        for m in measurements {
            let e = errors[m.group][m.choice as usize];
            if let Some(w) = weight(m.quality) {
                a[m.group][m.group] += w * e * e;
                b[m.group] += w * e * m.quality;
            }
        }
        let mut informed = vec![false; groups];
        let mut row: Vec<(usize, f64)> = Vec::with_capacity(groups);
        for (t, &(point, quality)) in trials.iter().enumerate() {
            let fits = point.len() == groups
                && point
                    .iter()
                    .zip(errors)
                    .all(|(&c, r)| (c as usize) < r.len());
            if !fits || !quality.is_finite() {
                return Err(Error::sensitivity(format!(
                    "trial {t} (point {point:?}, quality {quality}) does not fit the {groups}-group \
                     error table"
                )));
            }
            let Some(w) = weight(quality) else {
                continue;
            };
            let mut y = quality;
            row.clear();
            for (g, &c) in point.iter().enumerate() {
                match measured.get(&(g, c)) {
                    Some(m) => y -= m,
                    None if errors[g][c as usize] > 0.0 => row.push((g, errors[g][c as usize])),
                    None => {}
                }
            }
            for &(i, ei) in &row {
                informed[i] = true;
                b[i] += w * ei * y;
                for &(j, ej) in &row {
                    a[i][j] += w * ei * ej;
                }
            }
        }
        let scales = nonnegative_solve(&a, &b, &self.scales)?;
        let fitted = (0..groups).map(|g| self.fitted(g) || informed[g]).collect();
        Ok(Predictor::scaled(errors, scales, fitted).with_measured(measurements))
    }

    /// The same predictor with each measured (group, choice) predicted as its measurement: a measured
    /// one-at-a-time quality is the best estimate of that term; the fitted scale serves the rest.
    /// Measurements outside the table are ignored.
    pub fn with_measured(mut self, measurements: &[Measurement]) -> Predictor {
        for m in measurements {
            if let Some(v) = self
                .table
                .get_mut(m.group)
                .and_then(|row| row.get_mut(m.choice as usize))
            {
                *v = m.quality;
            }
        }
        self
    }

    /// The predicted quality drop of `point` (one choice index per group). Panics if `point` has a
    /// choice outside the table (a point of another space).
    #[inline]
    pub fn predict(&self, point: &[u16]) -> f64 {
        debug_assert_eq!(point.len(), self.table.len(), "point of another space");
        self.table
            .iter()
            .zip(point)
            .map(|(row, &c)| row[c as usize])
            .sum()
    }

    /// `table[group][choice]`.
    pub fn table(&self) -> &[Vec<f64>] {
        &self.table
    }

    /// Each group's scale.
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// Whether `group`'s scale was fitted to its own measurements (or, refined, to trials; else it is
    /// the set-up's median).
    pub fn fitted(&self, group: usize) -> bool {
        self.fitted.get(group).copied().unwrap_or(false)
    }
}

/// Below this share of the largest quality, a relative fit weighs a row as if its quality were that
/// share: differences far below every quality that matters do not decide the scales (and a quality of
/// 10⁻²⁰⁰ cannot make a weight overflow).
pub const RELATIVE_FLOOR: f64 = 1e-6;

/// The least-squares weight of a row whose measured (or prior) quality is `q`: `1/max(q, floor)²`, so
/// that each row counts its **relative** error — qualities on one front span orders of magnitude (a KL
/// of 10⁻⁸ and one of 0.3), and absolute errors would let the few large ones decide every scale.
/// `None` for a quality of 0 (or below), which has no relative error to fit.
fn relative_weight(q: f64, floor: f64) -> Option<f64> {
    (q > 0.0).then(|| 1.0 / q.max(floor).powi(2))
}

/// Solves `a s = b` (symmetric, positive semi-definite) for `s ≥ 0`: groups whose row is empty
/// keep their `prior` scale; a group whose solution is negative is set to 0 and the others solved
/// again, until none is.
fn nonnegative_solve(a: &[Vec<f64>], b: &[f64], prior: &[f64]) -> Result<Vec<f64>> {
    let mut s = prior.to_vec();
    let mut free: Vec<usize> = (0..b.len()).filter(|&g| a[g][g] > 0.0).collect();
    while !free.is_empty() {
        let n = free.len();
        let m = Mat::from_fn(n, n, |i, j| a[free[i]][free[j]]);
        // Rows of groups set to 0 drop out; those of other fixed groups (empty rows) have no
        // coupling, so the right-hand side is `b` itself.
        let rhs = Mat::from_fn(n, 1, |i, _| b[free[i]]);
        // Positive definite: every free group has its pseudo-row on the diagonal.
        let x = m.llt(Side::Lower).map(|llt| llt.solve(&rhs));
        clear_upper_avx();
        let x = x.map_err(|e| {
            Error::sensitivity(format!(
                "the trials' least-squares system cannot be solved: {e:?}"
            ))
        })?;
        let mut negative = false;
        for (i, &g) in free.iter().enumerate() {
            let v = x[(i, 0)];
            if !v.is_finite() {
                return Err(Error::sensitivity(format!(
                    "the trials' least-squares scale of group {g} is {v}"
                )));
            }
            s[g] = v.max(0.0);
            negative |= v < 0.0;
        }
        if !negative {
            break;
        }
        free.retain(|&g| s[g] > 0.0);
    }
    Ok(s)
}

fn check_table(table: &[Vec<f64>], what: &str) -> Result<()> {
    for (g, row) in table.iter().enumerate() {
        if row.is_empty() {
            return Err(Error::sensitivity(format!(
                "{what}: group {g} has no choice"
            )));
        }
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::sensitivity(format!(
                "{what}: group {g} choice {c} is {} (not finite)",
                row[c]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Cheap errors of `groups` groups × `choices` choices (the last uncompressed, error 0) and the
    /// true per-group scales: a truly additive model the cheap errors mis-scale.
    fn additive(groups: usize, choices: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let errors = (0..groups)
            .map(|_| {
                (0..choices)
                    .map(|c| {
                        let x = 1.0 - c as f64 / (choices - 1) as f64;
                        x * x * rng.random_range(0.5..2.0)
                    })
                    .collect()
            })
            .collect();
        let scales = (0..groups).map(|_| rng.random_range(0.01..0.5)).collect();
        (errors, scales)
    }

    fn truth(errors: &[Vec<f64>], scales: &[f64], point: &[u16]) -> f64 {
        point
            .iter()
            .enumerate()
            .map(|(g, &c)| scales[g] * errors[g][c as usize])
            .sum()
    }

    fn random_points(groups: usize, choices: usize, n: usize, seed: u64) -> Vec<Vec<u16>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..groups)
                    .map(|_| rng.random_range(0..choices as u16))
                    .collect()
            })
            .collect()
    }

    /// Mean absolute error of `p` on `points` under the true model.
    fn error(p: &Predictor, errors: &[Vec<f64>], scales: &[f64], points: &[Vec<u16>]) -> f64 {
        points
            .iter()
            .map(|x| (p.predict(x) - truth(errors, scales, x)).abs())
            .sum::<f64>()
            / points.len() as f64
    }

    #[test]
    fn trials_refine_the_scales_the_set_up_could_not_measure() {
        let (groups, choices) = (12, 6);
        for (seed, fit) in (0..4).zip([Fit::Absolute, Fit::Relative].into_iter().cycle()) {
            let (errors, scales) = additive(groups, choices, seed);
            // The set-up measured one pair of a third of the groups; the rest get the median scale.
            let measurements: Vec<Measurement> = (0..groups)
                .step_by(3)
                .map(|g| Measurement {
                    group: g,
                    choice: 1,
                    quality: scales[g] * errors[g][1],
                })
                .collect();
            let setup = Predictor::fit(&errors, &measurements)
                .unwrap()
                .with_measured(&measurements);
            // `setup` refitted on `n` random trials of the true model.
            let refit = |n: usize, seed: u64| {
                let trials = random_points(groups, choices, n, seed);
                let observed: Vec<(&[u16], f64)> = trials
                    .iter()
                    .map(|x| (x.as_slice(), truth(&errors, &scales, x)))
                    .collect();
                setup
                    .refine(&errors, &measurements, &observed, fit)
                    .unwrap()
            };
            let refined = refit(60, seed + 100);
            let unseen = random_points(groups, choices, 200, seed + 200);
            let (before, after) = (
                error(&setup, &errors, &scales, &unseen),
                error(&refined, &errors, &scales, &unseen),
            );
            assert!(
                after * 5.0 < before,
                "seed {seed}: mean absolute error {before:.4} before, {after:.4} after"
            );
            for m in &measurements {
                assert_eq!(refined.table()[m.group][m.choice as usize], m.quality);
            }
            assert!((0..groups).all(|g| refined.fitted(g)));
            // More trials, less pull from the prior: the scales converge on the truth.
            let refined = refit(2_000, seed + 300);
            for (g, (s, want)) in refined.scales().iter().zip(&scales).enumerate() {
                assert!(
                    (s - want).abs() < 0.02 * want,
                    "seed {seed} group {g}: scale {s} against {want}"
                );
            }
        }
    }

    #[test]
    fn without_trials_the_refined_predictor_is_the_set_ups() {
        let (errors, scales) = additive(6, 5, 9);
        let measurements: Vec<Measurement> = [(0, 0), (0, 2), (3, 1)]
            .iter()
            .map(|&(group, choice)| Measurement {
                group,
                choice,
                quality: scales[group] * errors[group][choice as usize] * 1.3,
            })
            .collect();
        let setup = Predictor::fit(&errors, &measurements)
            .unwrap()
            .with_measured(&measurements);
        for fit in [Fit::Absolute, Fit::Relative] {
            let refined = setup.refine(&errors, &measurements, &[], fit).unwrap();
            for (a, b) in setup
                .table()
                .iter()
                .flatten()
                .zip(refined.table().iter().flatten())
            {
                assert!((a - b).abs() <= 1e-12 * a.abs().max(1e-12), "{a} vs {b}");
            }
        }
        let refined = setup
            .refine(&errors, &measurements, &[], Fit::Relative)
            .unwrap();
        assert_eq!(
            (0..6).map(|g| refined.fitted(g)).collect::<Vec<_>>(),
            (0..6).map(|g| setup.fitted(g)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_scale_the_trials_push_below_zero_is_zero() {
        // Two groups; trials say group 1 costs nothing beyond group 0's measured term, and less.
        let errors = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        let measurements = [Measurement {
            group: 0,
            choice: 0,
            quality: 0.5,
        }];
        let setup = Predictor::fit(&errors, &measurements).unwrap();
        let trials: Vec<(Vec<u16>, f64)> = (0..50).map(|_| (vec![0, 0], 0.2)).collect();
        let observed: Vec<(&[u16], f64)> = trials.iter().map(|(x, q)| (x.as_slice(), *q)).collect();
        let refined = setup
            .refine(&errors, &measurements, &observed, Fit::Absolute)
            .unwrap();
        assert_eq!(refined.scales()[1], 0.0);
        assert_eq!(refined.table()[0][0], 0.5);
        assert!(refined.scales().iter().all(|&s| s >= 0.0));
    }

    #[test]
    fn trials_of_another_space_are_refused() {
        let errors = vec![vec![1.0, 0.0]; 3];
        let setup = Predictor::from_table(errors.clone()).unwrap();
        for (point, q) in [
            (vec![0u16, 1], 0.1),
            (vec![0, 2, 0], 0.1),
            (vec![0, 0, 0], f64::NAN),
        ] {
            let e = setup
                .refine(&errors, &[], &[(point.as_slice(), q)], Fit::Relative)
                .unwrap_err()
                .to_string();
            assert!(e.contains("does not fit"), "{e}");
        }
    }
}
