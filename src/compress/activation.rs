//! # Activation quantization
//!
//! Fake quantization of a layer's input to int8, affine, one scale for the whole tensor. From a range
//! `(lo, hi)` widened to include zero (`lo ≤ 0 ≤ hi`, so zero padding and ReLU zeros stay exact):
//!
//! ```text
//! s  = (hi − lo) / 255,   z = clamp(round(−lo / s), 0, 255)
//! q  = clamp(round(x / s) + z, 0, 255),   x' = (q − z) · s
//! ```
//!
//! rounding to nearest with ties to even, as the weight quantizer does.
//!
//! Inside the range the error is at most `s/2` per element; outside it values clamp to the nearest
//! end of the grid. A range of width zero (`lo = hi = 0`) maps everything to 0.
//!
//! - **dynamic** ([`ActQuant::Int8Dynamic`]): the range is `min x … max x` of this very tensor (batch);
//! - **static** ([`ActQuant::Int8Static`]): the range is calibrated once ([`calibrate_range`]) on
//!   captured inputs and passed in; values outside it clamp;
//! - **none**: the identity.
//!
//! [`calibrate_range`] pools all values of the samples: [`RangeMethod::MinMax`] takes their extremes,
//! [`RangeMethod::Percentile`]`(p)` the nearest-rank p-th percentile for `hi` and the (100 − p)-th for
//! `lo`, which ignores rare outliers.
//!
//! ## References
//!
//! - B. Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
//!   Inference", CVPR 2018.
//! - H. Wu, P. Judd, X. Zhang, M. Isaev, P. Micikevicius, "Integer Quantization for Deep Learning
//!   Inference: Principles and Empirical Evaluation", arXiv:2004.09602, 2020 (max and percentile
//!   calibration).

use candle_core::{DType, Tensor};

use super::quant::{code, round_even};
use crate::error::{Error, Result};
use crate::space::ActQuant;

/// Largest code of the 8-bit activation grid (codes are 0..=255).
const QMAX: f32 = 255.0;

/// How a static activation range is calibrated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// Smallest and largest value seen.
    MinMax,
    /// The p-th and (100 − p)-th percentiles, `p` in (50, 100] (e.g. 99.99).
    Percentile(f32),
}

/// Scale and zero point of the int8 affine grid for `(lo, hi)`; `None` for a range of width zero.
pub fn activation_params(lo: f32, hi: f32) -> Option<(f32, f32)> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi <= lo {
        return None;
    }
    let s = (hi - lo) / QMAX;
    let z = round_even(-lo / s).clamp(0.0, QMAX);
    Some((s, z))
}

/// Fake-quantizes activations `x` to int8 (affine, range from `range` for static quantization or from
/// `x` itself for dynamic), returning dequantized values of `x`'s shape and dtype.
pub fn quantize_activation(x: &Tensor, act: ActQuant, range: Option<(f32, f32)>) -> Result<Tensor> {
    if act == ActQuant::None {
        return Ok(x.clone());
    }
    let values = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let (lo, hi) = match (act, range) {
        (ActQuant::Int8Static, Some(r)) => check_range(r)?,
        (ActQuant::Int8Static, None) => {
            return Err(Error::compress(
                "act8-static needs a calibrated input range (min, max) and none was given; \
                 calibrate it on captured inputs with calibrate_range, or use act8-dynamic",
            ))
        }
        _ => value_range(&values)?,
    };
    let out: Vec<f32> = match activation_params(lo, hi) {
        None => vec![0.0; values.len()],
        Some((s, z)) => values
            .iter()
            .map(|&v| (code(v, s, z, 0.0, QMAX) - z) * s)
            .collect(),
    };
    Ok(Tensor::from_vec(out, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// The range of static activation quantization from calibration samples (all values pooled).
pub fn calibrate_range(samples: &[Tensor], method: RangeMethod) -> Result<(f32, f32)> {
    if let RangeMethod::Percentile(p) = method {
        if !(p > 50.0 && p <= 100.0) {
            return Err(Error::compress(format!(
                "percentile {p} is not in (50, 100]; e.g. 99.99 keeps all but the top and bottom 0.01%"
            )));
        }
    }
    let mut values = Vec::new();
    for t in samples {
        values.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    if values.is_empty() {
        return Err(Error::compress(
            "cannot calibrate an activation range from no values",
        ));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::compress(format!(
            "calibration sample holds the non-finite value {v}"
        )));
    }
    match method {
        RangeMethod::MinMax => Ok(min_max(&values)),
        RangeMethod::Percentile(p) => {
            let n = values.len();
            // Nearest rank: the q-th percentile is the smallest value with at least q% of the values
            // at or below it, the value of (1-based) rank ⌈q·n/100⌉.
            let rank = |q: f64| ((q / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1;
            let (lo_at, hi_at) = (rank(100.0 - f64::from(p)), rank(f64::from(p)));
            let (_, &mut hi, _) = values.select_nth_unstable_by(hi_at, f32::total_cmp);
            let (_, &mut lo, _) = values.select_nth_unstable_by(lo_at, f32::total_cmp);
            Ok((lo, hi))
        }
    }
}

/// Smallest and largest value of a non-empty slice.
fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// `min x … max x` of this batch, refusing non-finite values (0…0 when empty).
fn value_range(values: &[f32]) -> Result<(f32, f32)> {
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::compress(format!(
            "act8-dynamic cannot quantize an input holding the non-finite value {v}"
        )));
    }
    if values.is_empty() {
        return Ok((0.0, 0.0));
    }
    Ok(min_max(values))
}

/// A static range must be finite with `lo ≤ hi`.
fn check_range((lo, hi): (f32, f32)) -> Result<(f32, f32)> {
    if lo.is_finite() && hi.is_finite() && lo <= hi {
        Ok((lo, hi))
    } else {
        Err(Error::compress(format!(
            "calibrated activation range ({lo}, {hi}) must be two finite values with min <= max"
        )))
    }
}
