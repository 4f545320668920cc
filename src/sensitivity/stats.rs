//! # Layer output error from the input second moment
//!
//! A compressible layer maps inputs `x` (one row of `X` per sample, token or output pixel) to
//! `y = W x`. Replacing `W` by a compressed `W′` changes the outputs on the calibration inputs by
//! `X (W − W′)ᵀ`, and
//!
//! ```text
//! ‖X ΔWᵀ‖²_F / ‖X Wᵀ‖²_F  =  trace(ΔW H ΔWᵀ) / trace(W H Wᵀ),   H = XᵀX,  ΔW = W − W′.
//! ```
//!
//! So the layer's inputs are needed only once, to accumulate `H`; afterwards the relative output error
//! of any `W′` costs one `out × in × in` product, without running the model. `H` and how it is
//! accumulated per layer kind (linear, im2col for conv2d, look-up counts for embeddings) are
//! [`InputStats`]' (`compress::stats`), which GPTQ and output-error scales use too: a
//! [`CandleEvaluator`](crate::eval::CandleEvaluator) accumulates them once on its calibration data
//! and the analysis shares them ([`LayerStats::from_inputs_stats`]).
//!
//! For an embedding (a linear layer with one-hot inputs, `H` diagonal) the error is
//! `Σ_r count_r ‖ΔW_r‖² / Σ_r count_r ‖W_r‖²` — token-frequency weighted, and exactly the relative
//! output error of the lookup (rows never looked up count for nothing).
//!
//! **The weights measured are the ones the evaluator runs**: each choice is compressed with the
//! evaluator's [`CompressSettings`] — scale method and rounding (round-to-nearest or GPTQ) — so the
//! cheap errors, and the predictions built on them, follow the rounding.
//!
//! Biases are kept in f32 by every choice, so they cancel in `ΔW` and are left out of the denominator
//! as well (the error is relative to the weight's part of the output).
//!
//! ## References
//!
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990 (second-order saliency of a
//!   weight change; with a squared-error loss on a layer's outputs its Hessian is `H = XᵀX`).
//! - E. Frantar, D. Alistarh, "Optimal Brain Compression", NeurIPS 2022, and E. Frantar et al.,
//!   "GPTQ", ICLR 2023 (the layer-wise objective `‖W X − W′ X‖²` and its Hessian `2 X Xᵀ`).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::compress::{CompressSettings, InputAccumulator, InputStats, LayerInputs};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::space::LayerInfo;

/// What one layer's calibration inputs say about its output error under compression.
#[derive(Clone, Debug)]
pub struct LayerStats {
    info: LayerInfo,
    /// The original weight, row-major, in its matrix view (rows = dim 0).
    weight: Vec<f32>,
    rows: usize,
    cols: usize,
    inputs: Arc<InputStats>,
    /// `trace(W H Wᵀ)`: the squared norm of the weight's part of the calibration outputs.
    reference: f64,
}

impl LayerStats {
    /// Runs `model` on the calibration `batches`, capturing every compressible layer's input, and
    /// accumulates each layer's statistics batch by batch (only one batch's inputs are held at a time).
    /// Statistics come in inventory order. A layer that never saw an input is an error.
    pub fn capture(model: &dyn Model, batches: &[Batch]) -> Result<Vec<LayerStats>> {
        let inputs = crate::model::capture_input_stats(model, batches)?;
        LayerStats::for_model(model, &inputs)
    }

    /// The statistics of every layer of `model`, in inventory order, from input statistics already
    /// accumulated (an evaluator's [`input_stats`](crate::eval::CandleEvaluator::input_stats)).
    pub fn for_model(model: &dyn Model, inputs: &LayerInputs) -> Result<Vec<LayerStats>> {
        model
            .inventory()
            .layers
            .iter()
            .map(|l| {
                let s = inputs.get(&l.name).ok_or_else(|| {
                    Error::sensitivity(format!("no input statistics for layer `{}`", l.name))
                })?;
                LayerStats::from_inputs_stats(l, &model.weight(&l.name)?, Arc::clone(s))
            })
            .collect()
    }

    /// Statistics of one layer from its inputs, as the model's forward hands them to the layer
    /// (see [`InputStats`] for what each kind expects). `weight` has the layer's stored shape.
    pub fn from_inputs(info: &LayerInfo, weight: &Tensor, inputs: &[Tensor]) -> Result<LayerStats> {
        let mut a = InputAccumulator::new(info)?;
        for x in inputs {
            a.add(x)?;
        }
        LayerStats::from_inputs_stats(info, weight, Arc::new(a.finish()?))
    }

    /// Statistics of one layer from its accumulated input statistics.
    pub fn from_inputs_stats(
        info: &LayerInfo,
        weight: &Tensor,
        inputs: Arc<InputStats>,
    ) -> Result<LayerStats> {
        if weight.dims() != info.shape.as_slice() {
            return Err(Error::sensitivity(format!(
                "layer `{}`: weight has shape {:?}, the inventory says {:?}",
                info.name,
                weight.dims(),
                info.shape
            )));
        }
        let (rows, cols) = matrix_dims(&info.shape);
        inputs
            .check_fits(rows, cols, &format!("layer `{}`", info.name))
            .map_err(|e| Error::sensitivity(e.to_string()))?;
        let weight = weight
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let reference = inputs.energy(&weight, rows, cols);
        if !(reference > 0.0 && reference.is_finite()) {
            return Err(Error::sensitivity(format!(
                "layer `{}`: its calibration outputs are {reference} (zero weights or inputs?): a \
                 relative error needs a positive reference",
                info.name
            )));
        }
        Ok(LayerStats {
            info: info.clone(),
            weight,
            rows,
            cols,
            inputs,
            reference,
        })
    }

    /// The layer.
    pub fn info(&self) -> &LayerInfo {
        &self.info
    }

    /// Rows of `X` the statistics were accumulated from.
    pub fn samples(&self) -> usize {
        self.inputs.samples()
    }

    /// The layer's input statistics.
    pub fn inputs(&self) -> &Arc<InputStats> {
        &self.inputs
    }

    /// The relative output error `trace(ΔW H ΔWᵀ) / trace(W H Wᵀ)` of replacing the layer's weight by
    /// `w_prime` (same shape as the original). 0 for the original weight; 1 for an all-zero weight.
    pub fn output_error(&self, w_prime: &Tensor) -> Result<f64> {
        if w_prime.dims() != self.info.shape.as_slice() {
            return Err(Error::sensitivity(format!(
                "layer `{}`: the compressed weight has shape {:?}, the layer's is {:?}",
                self.info.name,
                w_prime.dims(),
                self.info.shape
            )));
        }
        let w2 = w_prime
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let delta: Vec<f32> = self.weight.iter().zip(&w2).map(|(a, b)| a - b).collect();
        Ok(self.inputs.energy(&delta, self.rows, self.cols) / self.reference)
    }
}

/// `(dim 0, product of the rest)` of a weight shape.
fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    let rows = shape.first().copied().unwrap_or(1);
    (rows, shape.iter().skip(1).product())
}

/// The cheap error of every (group, choice) of `space`: the sum over the group's layers of their
/// relative output errors with the weight compressed as the choice says ([`apply_with`] with
/// `settings` — a [`ScaleMethod`](crate::compress::ScaleMethod) alone means round-to-nearest — and the
/// layer's own input statistics). `stats` must hold every layer of the space (as
/// [`LayerStats::capture`] returns them). Only the weight counts: a choice that differs from another
/// only in activation quantization gets the same error, and an uncompressed choice gets 0.
///
/// [`apply_with`]: crate::compress::apply_with
pub fn cheap_errors(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    settings: impl Into<CompressSettings>,
) -> Result<Vec<Vec<f64>>> {
    cheap_errors_with_progress(space, stats, settings, &mut |_, _| {})
}

/// [`cheap_errors`], calling `progress(done, total)` after each group.
pub fn cheap_errors_with_progress(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    settings: impl Into<CompressSettings>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    errors_per_choice(
        space,
        stats,
        &settings.into(),
        "calibration statistics",
        progress,
    )
}

/// A per-layer error measure of a compressed weight ([`LayerStats`]' output error, the Fisher
/// estimate's Taylor drop), for [`errors_per_choice`].
pub(crate) trait LayerMeasure: Sync {
    fn layer_name(&self) -> &str;
    /// The original weight, f32, in the layer's shape.
    fn original(&self) -> Result<Tensor>;
    /// The measure of replacing the weight by `w_prime`.
    fn error(&self, w_prime: &Tensor) -> Result<f64>;
    /// The layer's input statistics, for compression settings that need them.
    fn inputs(&self) -> Option<&InputStats> {
        None
    }
}

impl LayerMeasure for LayerStats {
    fn layer_name(&self) -> &str {
        &self.info.name
    }
    fn original(&self) -> Result<Tensor> {
        self.weight_tensor()
    }
    fn error(&self, w_prime: &Tensor) -> Result<f64> {
        self.output_error(w_prime)
    }
    fn inputs(&self) -> Option<&InputStats> {
        Some(&self.inputs)
    }
}

/// `measure` of every (group, choice) of `space`, summed over the group's layers, with the weight
/// compressed as the choice says (`apply_with` with `settings`); `progress(done, total)` after each
/// group. Only the weight counts: choices that differ only in their activation part share one
/// compression and one number, and an uncompressed choice gets 0. The distinct weight choices of a
/// layer are compressed in parallel (rayon), each deterministically, so the result does not depend on
/// the thread count. `what` names the measure in the error for a layer `measures` lacks.
pub(crate) fn errors_per_choice<M: LayerMeasure>(
    space: &crate::space::SearchSpace,
    measures: &[M],
    settings: &CompressSettings,
    what: &str,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    let by_name: HashMap<&str, &M> = measures.iter().map(|s| (s.layer_name(), s)).collect();
    let mut out = Vec::with_capacity(space.groups.len());
    for (gi, g) in space.groups.iter().enumerate() {
        let weight_only: Vec<crate::space::Choice> = g
            .choices
            .iter()
            .map(|c| crate::space::Choice {
                act: crate::space::ActQuant::None,
                ..*c
            })
            .collect();
        let mut distinct: Vec<crate::space::Choice> = weight_only
            .iter()
            .copied()
            .filter(|c| !c.is_uncompressed())
            .collect();
        distinct.sort();
        distinct.dedup();
        let mut error: HashMap<crate::space::Choice, f64> = HashMap::new();
        for &m in &g.members {
            let name = &space.layers[m].info.name;
            let s = by_name
                .get(name.as_str())
                .ok_or_else(|| Error::sensitivity(format!("no {what} for layer `{name}`")))?;
            let original = s.original()?;
            let errs: Vec<f64> = distinct
                .par_iter()
                .map(|c| {
                    let w = crate::compress::apply_with(&original, c, settings, s.inputs())?;
                    s.error(&w)
                })
                .collect::<Result<_>>()?;
            for (c, e) in distinct.iter().zip(errs) {
                *error.entry(*c).or_default() += e;
            }
        }
        out.push(
            weight_only
                .iter()
                .map(|c| error.get(c).copied().unwrap_or(0.0))
                .collect(),
        );
        progress(gi + 1, space.groups.len());
    }
    Ok(out)
}

impl LayerStats {
    /// The original weight, f32, in the layer's shape.
    fn weight_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.weight,
            self.info.shape.as_slice(),
            &candle_core::Device::Cpu,
        )?)
    }
}
