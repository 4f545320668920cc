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
//! - **dynamic** ([`ActQuant::Int8Dynamic`]): one range **per sample**, `min x … max x` of that sample,
//!   as a kernel computes it at run time — per image for a convolution's input `[n, c, h, w]` (rank
//!   4: one range over the image's `c·h·w` values), and per vector along the last dimension for any
//!   other input: per sample of `[n, in]`, **per token** of `[T, hidden]` (packed tokens) or of
//!   `[b, s, hidden]` (one range per `(b, s)`). So one sample's outliers never cost another sample
//!   its precision, and the result of a sample does not depend on the batch it came in
//!   ([`dynamic_range_len`]);
//! - **static** ([`ActQuant::Int8Static`]): one range for the whole tensor, calibrated once
//!   ([`calibrate_range`]) on the layer's inputs captured on the **calibration** data (the evaluator
//!   never calibrates on the data it scores) and passed in; values outside it clamp;
//! - **none**: the identity.
//!
//! Only float inputs are quantized: an integer tensor (an embedding's token ids) is refused with an
//! error, never cast — ids through an 8-bit grid would come back as other ids. Search spaces refuse
//! `act8-*` on embeddings at load ([`crate::space::file`]).
//!
//! Both modes run in one pass over the values (per row: range, then codes) rather than a chain of
//! tensor operations, each of which would allocate and traverse the whole tensor again; rows are
//! spread over threads when the tensor is large. Every value's result depends only on its own row, so
//! the output is the same whatever the thread count.
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

/// Values per parallel task of [`quantize_activation`] (smaller tensors run on the calling thread).
const PARALLEL_CHUNK: usize = 1 << 15;

/// Fake-quantizes activations `x` to int8 (affine; for static quantization one range, `range`, for
/// the whole tensor; for dynamic one range per sample or token of `x` itself, see the module docs),
/// returning dequantized values of `x`'s shape and dtype. Integer inputs are refused.
pub fn quantize_activation(x: &Tensor, act: ActQuant, range: Option<(f32, f32)>) -> Result<Tensor> {
    if act == ActQuant::None {
        return Ok(x.clone());
    }
    if x.dtype().is_int() {
        return Err(Error::compress(format!(
            "{act} cannot quantize an integer input ({:?} tensor of shape {:?}): integer inputs are \
             indices such as an embedding's token ids, and an 8-bit grid would turn them into other \
             ids; activation quantization applies to float inputs only (give such a layer \
             activations = [\"none\"] in the search space)",
            x.dtype(),
            x.dims()
        )));
    }
    let mut values = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    match act {
        ActQuant::Int8Static => {
            let r = range.ok_or_else(|| {
                Error::compress(
                    "act8-static needs a calibrated input range (min, max) and none was given; \
                     calibrate it on captured inputs with calibrate_range, or use act8-dynamic",
                )
            })?;
            let (lo, hi) = check_range(r)?;
            let params = activation_params(lo, hi);
            // One range for all: any split into rows gives the same values.
            for_each_row(&mut values, PARALLEL_CHUNK, |row| {
                fake_quantize(row, params);
                Ok(())
            })?;
        }
        _ => {
            let len = dynamic_range_len(x.dims());
            for_each_row(&mut values, len, |row| {
                let (lo, hi) = row_range(row)?;
                let params = activation_params(lo, hi);
                fake_quantize(row, params);
                Ok(())
            })?;
        }
    }
    Ok(Tensor::from_vec(values, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// How many consecutive values share one dynamic range in an input of shape `dims`: a sample's
/// `c·h·w` for a rank-4 feature map `[n, c, h, w]`, else the last dimension (one token or one sample
/// vector); the whole tensor for rank 0 or 1.
pub fn dynamic_range_len(dims: &[usize]) -> usize {
    let len = match dims.len() {
        0 | 1 => dims.iter().product(),
        2 | 3 => dims[dims.len() - 1],
        _ => dims[1..].iter().product(),
    };
    len.max(1)
}

/// Runs `f` on every `len`-value row of `values`, in parallel for large tensors.
fn for_each_row(
    values: &mut [f32],
    len: usize,
    f: impl Fn(&mut [f32]) -> Result<()> + Sync + Send,
) -> Result<()> {
    use rayon::prelude::*;
    if values.len() <= PARALLEL_CHUNK {
        return values.chunks_mut(len).try_for_each(f);
    }
    let rows_per_task = (PARALLEL_CHUNK / len).max(1);
    values
        .par_chunks_mut(len * rows_per_task)
        .try_for_each(|task| task.chunks_mut(len).try_for_each(&f))
}

/// Replaces `row` by its values on the grid `(s, z)` (all zeros for a range of width zero).
fn fake_quantize(row: &mut [f32], params: Option<(f32, f32)>) {
    match params {
        None => row.fill(0.0),
        Some((s, z)) => {
            for v in row {
                *v = (code(*v, s, z, 0.0, QMAX) - z) * s;
            }
        }
    }
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

/// `min x … max x` of one sample, refusing non-finite values (0…0 when empty), in one pass.
fn row_range(values: &[f32]) -> Result<(f32, f32)> {
    if values.is_empty() {
        return Ok((0.0, 0.0));
    }
    // `v · 0` is 0 for every finite `v` and NaN for NaN or ±∞, so `poison` flags any non-finite
    // value (which `min`/`max` alone would skip, for NaN).
    let (mut lo, mut hi, mut poison) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        poison += v * 0.0;
    }
    if poison != 0.0 {
        let v = values
            .iter()
            .find(|v| !v.is_finite())
            .copied()
            .unwrap_or(poison);
        return Err(Error::compress(format!(
            "act8-dynamic cannot quantize an input holding the non-finite value {v}"
        )));
    }
    Ok((lo, hi))
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
