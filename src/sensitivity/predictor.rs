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
//! The quality drop is relative to the uncompressed model; with the evaluator's default objectives
//! (KL divergence and cosine distance to the f32 model's outputs) the f32 model scores 0, so the drop
//! is the quality itself.
//!
//! ## References
//!
//! - Z. Dong et al., "HAWQ: Hessian AWare Quantization of neural networks with mixed-precision",
//!   ICCV 2019, and "HAWQ-V3", ICML 2021 (a layer's sensitivity times its quantization perturbation,
//!   summed over layers, as the objective a bit allocation minimises).

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
        let table = errors
            .iter()
            .zip(&scales)
            .map(|(row, s)| row.iter().map(|e| s * e).collect())
            .collect();
        Ok(Predictor {
            table,
            scales,
            fitted,
        })
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

    /// Whether `group`'s scale was fitted to its own measurements (else it is the median).
    pub fn fitted(&self, group: usize) -> bool {
        self.fitted.get(group).copied().unwrap_or(false)
    }
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
