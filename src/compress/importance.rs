//! # Which weights pruning removes: magnitude or gradient importance
//!
//! Pruning ([`super::prune`]) removes the least important weights. [`Importance`] says how that is
//! measured:
//!
//! - **`magnitude`** (the default): `|w|`, and for a whole output channel its L2 norm — no data needed.
//! - **`taylor`**: the first-order Taylor estimate of the loss change of removing the weight,
//!   `|g·w|` (Molchanov et al. 2019). `g` is the gradient of the calibration loss, taken per chunk
//!   of samples (one sample by default): at a trained model the *mean* gradient is close to zero, so
//!   the score is the sample-weighted mean of the per-chunk magnitudes, `Σ_c n_c |g_c·w| / N`. A whole
//!   output channel (row) scores `Σ_c n_c |Σ_row g_c·w| / N`, the first-order change of removing the
//!   row at once.
//! - **`fisher`**: the Optimal Brain Damage saliency `½·F·w²`, with `F = Σ_c n_c g_c² / N` the diagonal
//!   empirical Fisher (the usual stand-in for the Hessian's diagonal); a row scores the sum of its
//!   weights' saliencies (the diagonal approximation ignores the cross terms).
//!
//! The calibration loss is the model's own: cross-entropy against the labels for a classifier; for an
//! encoder (no labels), the distillation loss of its normalised embedding against the f32 model's,
//! with a seeded Gaussian target ([`crate::model::gradients`] says why that is the distillation
//! loss's curvature). Gradients come from the calibration split only, never the search or held-out
//! split. [`ImportanceSums`] accumulates the per-chunk gradients; [`WeightScores`] is one layer's
//! result, handed to the pruning masks.
//!
//! Scores belong to a layer's original weight. A factorized weight (`rank<P>`) prunes its factors
//! `A` and `B`, which are not parameters of the model and have no gradient: they are pruned by
//! magnitude whatever the setting; `channels<P>` still ranks the rows of the original weight by
//! their scores.
//!
//! ## References
//!
//! - P. Molchanov, A. Mallya, S. Tyree, I. Frosio, J. Kautz, "Importance Estimation for Neural Network
//!   Pruning", CVPR 2019 (first-order Taylor importance of weights and filters).
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990 (the saliency `½ h_kk w_k²`).
//! - M. Kurtic et al., "The Optimal BERT Surgeon", EMNLP 2022 (the empirical Fisher as the pruning
//!   Hessian of a language encoder).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How pruning ranks weights (a run setting, part of the evaluator's fingerprint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Importance {
    /// `|w|`; rows by their L2 norm.
    #[default]
    Magnitude,
    /// `|g·w|` from the calibration loss's per-chunk gradients.
    Taylor,
    /// `½·F·w²`, `F` the diagonal empirical Fisher.
    Fisher,
}

impl Importance {
    /// All of them, in the order the CLI lists them.
    pub const ALL: [Importance; 3] = [
        Importance::Magnitude,
        Importance::Taylor,
        Importance::Fisher,
    ];

    /// Whether this is `magnitude` (the default, which needs no gradients).
    pub fn is_magnitude(&self) -> bool {
        *self == Importance::Magnitude
    }

    /// Whether the scores come from gradients of the calibration loss.
    pub fn needs_gradients(self) -> bool {
        !self.is_magnitude()
    }
}

impl fmt::Display for Importance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Importance::Magnitude => "magnitude",
            Importance::Taylor => "taylor",
            Importance::Fisher => "fisher",
        })
    }
}

impl FromStr for Importance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Importance> {
        Importance::ALL
            .into_iter()
            .find(|i| i.to_string() == s)
            .ok_or_else(|| {
                Error::compress(format!(
                    "`{s}` is not a pruning importance; use magnitude, taylor or fisher"
                ))
            })
    }
}

/// One layer's importance scores: one per weight (row-major in the weight's matrix view, the order
/// of the flattened weight) and one per row (output channel). Larger is more important.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightScores {
    values: Vec<f64>,
    rows: Vec<f64>,
}

/// Importance scores by layer name.
pub type LayerScores = HashMap<String, Arc<WeightScores>>;

impl WeightScores {
    /// Scores of a weight with `rows.len()` rows; `values.len()` must be a multiple of it and every
    /// score finite.
    pub fn new(values: Vec<f64>, rows: Vec<f64>) -> Result<WeightScores> {
        if rows.is_empty() || values.len() % rows.len() != 0 {
            return Err(Error::compress(format!(
                "importance scores: {} values do not fill {} rows",
                values.len(),
                rows.len()
            )));
        }
        if let Some(x) = values.iter().chain(&rows).find(|x| !x.is_finite()) {
            return Err(Error::compress(format!(
                "importance scores: a score is {x} (the calibration gradients are not finite)"
            )));
        }
        Ok(WeightScores { values, rows })
    }

    /// One score per weight, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// One score per row.
    pub fn rows(&self) -> &[f64] {
        &self.rows
    }

    /// An error unless these are the scores of a `rows × cols` weight.
    pub(crate) fn check_fits(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        if self.rows.len() != rows || self.values.len() != rows * cols {
            return Err(Error::compress(format!(
                "{what}: importance scores of {} values in {} rows do not fit a {rows}×{cols} weight",
                self.values.len(),
                self.rows.len()
            )));
        }
        Ok(())
    }
}

/// The running sums behind [`WeightScores`] for one layer of `rows` output channels, fed with each
/// chunk's gradient of the mean calibration loss.
#[derive(Clone, Debug)]
pub struct ImportanceSums {
    importance: Importance,
    /// Weights, flattened.
    weight: Vec<f32>,
    rows: usize,
    /// `Σ n_c |g_c·w|` (taylor) or `Σ n_c g_c²` (fisher), per weight.
    values: Vec<f64>,
    /// `Σ n_c |Σ_row g_c·w|` per row (taylor only).
    row_sums: Vec<f64>,
    samples: usize,
}

impl ImportanceSums {
    /// Sums for a weight of `rows` rows (`weight` flattened row-major) under a gradient importance.
    pub fn new(importance: Importance, weight: Vec<f32>, rows: usize) -> Result<ImportanceSums> {
        if !importance.needs_gradients() {
            return Err(Error::compress(format!(
                "{importance} importance needs no gradients"
            )));
        }
        if rows == 0 || weight.len() % rows != 0 {
            return Err(Error::compress(format!(
                "importance: a weight of {} values does not have {rows} equal rows",
                weight.len()
            )));
        }
        Ok(ImportanceSums {
            importance,
            values: vec![0.0; weight.len()],
            row_sums: vec![0.0; rows],
            weight,
            rows,
            samples: 0,
        })
    }

    /// Adds the gradient `g` (flattened like the weight) of the mean loss over a chunk of `size`
    /// samples.
    pub fn add(&mut self, g: &[f32], size: usize) -> Result<()> {
        if g.len() != self.weight.len() {
            return Err(Error::compress(format!(
                "importance: a gradient of {} values for a weight of {}",
                g.len(),
                self.weight.len()
            )));
        }
        let n = size as f64;
        let cols = self.weight.len() / self.rows;
        match self.importance {
            Importance::Taylor => {
                for (r, row_sum) in self.row_sums.iter_mut().enumerate() {
                    let span = r * cols..(r + 1) * cols;
                    let mut row = 0.0;
                    for ((v, &gi), &w) in self.values[span.clone()]
                        .iter_mut()
                        .zip(&g[span.clone()])
                        .zip(&self.weight[span])
                    {
                        let gw = f64::from(gi) * f64::from(w);
                        *v += n * gw.abs();
                        row += gw;
                    }
                    *row_sum += n * row.abs();
                }
            }
            Importance::Fisher => {
                for (v, &gi) in self.values.iter_mut().zip(g) {
                    *v += n * f64::from(gi) * f64::from(gi);
                }
            }
            Importance::Magnitude => unreachable!("checked in ImportanceSums::new"),
        }
        self.samples += size;
        Ok(())
    }

    /// The scores: the sums divided by the samples, and for `fisher` times `½w²`. An error when no
    /// sample was added.
    pub fn finish(self) -> Result<WeightScores> {
        if self.samples == 0 {
            return Err(Error::compress(
                "importance: no calibration samples, so no gradients to score the weights by",
            ));
        }
        let norm = 1.0 / self.samples as f64;
        let cols = self.weight.len() / self.rows;
        match self.importance {
            Importance::Taylor => {
                let values = self.values.iter().map(|v| v * norm).collect();
                let rows = self.row_sums.iter().map(|v| v * norm).collect();
                WeightScores::new(values, rows)
            }
            _ => {
                let values: Vec<f64> = (self.values.iter().zip(&self.weight))
                    .map(|(f, &w)| 0.5 * f * norm * f64::from(w) * f64::from(w))
                    .collect();
                let rows = values.chunks(cols).map(|r| r.iter().sum()).collect();
                WeightScores::new(values, rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation_round_trips_and_refuses_others() {
        for i in Importance::ALL {
            assert_eq!(i.to_string().parse::<Importance>().unwrap(), i);
        }
        let e = "hessian".parse::<Importance>().unwrap_err().to_string();
        assert!(e.contains("magnitude, taylor or fisher"), "{e}");
        assert_eq!(Importance::default(), Importance::Magnitude);
    }

    #[test]
    fn taylor_and_fisher_sums_by_hand() {
        // A 2×2 weight, two chunks of sizes 1 and 3.
        let w = vec![1.0f32, -2.0, 0.5, 4.0];
        let (g1, g2) = ([0.5f32, 0.25, -1.0, 0.0], [-0.5f32, 0.25, 2.0, 1.0]);
        let mut t = ImportanceSums::new(Importance::Taylor, w.clone(), 2).unwrap();
        let mut f = ImportanceSums::new(Importance::Fisher, w.clone(), 2).unwrap();
        for s in [&mut t, &mut f] {
            s.add(&g1, 1).unwrap();
            s.add(&g2, 3).unwrap();
        }
        let t = t.finish().unwrap();
        // |g·w| per chunk: (0.5, 0.5, 0.5, 0) and (0.5, 0.5, 1, 4); weighted 1 and 3, over 4.
        assert_eq!(t.values(), &[0.5, 0.5, (0.5 + 3.0) / 4.0, 3.0]);
        // Rows: chunk 1 |0.5 − 0.5| = 0, |−0.5 + 0| = 0.5; chunk 2 |−0.5 − 0.5| = 1, |1 + 4| = 5.
        assert_eq!(t.rows(), &[3.0 / 4.0, (0.5 + 15.0) / 4.0]);
        let f = f.finish().unwrap();
        // F = (g1² + 3 g2²) / 4; score ½ F w².
        let expect: Vec<f64> = (0..4)
            .map(|i| {
                let fi = (f64::from(g1[i]).powi(2) + 3.0 * f64::from(g2[i]).powi(2)) / 4.0;
                0.5 * fi * f64::from(w[i]).powi(2)
            })
            .collect();
        assert_eq!(f.values(), expect.as_slice());
        assert_eq!(f.rows(), &[expect[0] + expect[1], expect[2] + expect[3]]);
    }

    #[test]
    fn bad_sums_are_errors() {
        assert!(ImportanceSums::new(Importance::Magnitude, vec![1.0], 1).is_err());
        assert!(ImportanceSums::new(Importance::Taylor, vec![1.0; 3], 2).is_err());
        let mut s = ImportanceSums::new(Importance::Fisher, vec![1.0; 4], 2).unwrap();
        assert!(s.add(&[1.0; 3], 1).is_err());
        assert!(s.finish().is_err(), "no samples");
        let e = WeightScores::new(vec![f64::NAN, 1.0], vec![1.0]).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }
}
