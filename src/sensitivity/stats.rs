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
//! ## Activation quantization
//!
//! Quantizing the layer's input replaces `X` by `Q(X)`, which `H` cannot see: each layer also
//! accumulates `‖(X − Q(X)) Wᵀ‖²` for `act8-dynamic` and, when the evaluator's calibrated range is
//! given, for `act8-static` — with the evaluator's own quantizer ([`quantize_activation`]: dynamic
//! ranges per sample or token, static ranges from the calibration split), on the same rows `X` as `H`
//! (im2col for convolutions). [`LayerStats::capture_with_ranges`] accumulates it in the same pass over
//! the calibration batches as `H`; [`LayerStats::with_activation`] adds it to statistics built from
//! input statistics accumulated before (the evaluator's, whose static ranges must be known before the
//! static term can be measured, so this is one more pass). [`LayerStats::activation_error`] is that
//! energy over `trace(W H Wᵀ)`: the relative output error of the activation quantization alone.
//! Embeddings have none: their input is ids, and search spaces refuse activation quantization on them.
//!
//! With both, the layer's output error is `X ΔWᵀ + ΔX W′ᵀ` (`ΔX = X − Q(X)`), and the cheap error of a
//! choice is **the sum of the weight term and the activation term**:
//!
//! ```text
//! ‖X ΔWᵀ + ΔX W′ᵀ‖² = ‖X ΔWᵀ‖² + ‖ΔX W′ᵀ‖² + 2⟨X ΔWᵀ, ΔX W′ᵀ⟩
//!                   ≈ ‖X ΔWᵀ‖² + ‖ΔX Wᵀ‖²
//! ```
//!
//! Two approximations, both measured (`tests/it/sensitivity.rs` computes the exact joint error on the
//! demo's layers): the cross term is dropped — the input's rounding error and the weight's come from
//! independent roundings, so their correlation averages out over many outputs — and `W′` is replaced by
//! `W` in the activation term, which changes it by `ΔX ΔWᵀ`, a product of two small errors. Keeping the
//! term independent of the weight choice (and of its rounding) costs one number per layer and mode
//! instead of one `in × in` matrix (`ΔXᵀΔX`, and `XᵀΔX` for the cross term) per layer and mode.
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
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use super::{Checkpoint, NoCheckpoint};
use crate::compress::{
    input_rows, quantize_activation, CompressSettings, InputAccumulator, InputStats, LayerInputs,
    LayerScores, WeightScores,
};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::space::{ActQuant, LayerInfo, LayerKind};

/// Static activation ranges (min, max) by layer name, as the evaluator calibrates them.
pub type ActRanges = HashMap<String, (f32, f32)>;

/// `‖(X − Q(X)) Wᵀ‖²` accumulated over a layer's calibration inputs, per activation quantization.
#[derive(Clone, Copy, Debug, Default)]
struct ActEnergy {
    dynamic: f64,
    /// `None` when no static range was given.
    fixed: Option<f64>,
}

/// What one layer's calibration inputs say about its output error under compression.
#[derive(Clone, Debug)]
pub struct LayerStats {
    info: LayerInfo,
    /// The original weight, row-major, in its matrix view (rows = dim 0).
    weight: Vec<f32>,
    rows: usize,
    cols: usize,
    inputs: Arc<InputStats>,
    /// Pruning importance scores of the weight, when compression ranks by a gradient importance
    /// ([`LayerStats::with_scores`]).
    scores: Option<Arc<WeightScores>>,
    /// `trace(W H Wᵀ)`: the squared norm of the weight's part of the calibration outputs.
    reference: f64,
    /// The activation quantization's output energy (`None` for an embedding, or when the statistics
    /// were built without it).
    act: Option<ActEnergy>,
}

impl LayerStats {
    /// Runs `model` on the calibration `batches`, capturing every compressible layer's input, and
    /// accumulates each layer's statistics batch by batch (only one batch's inputs are held at a time).
    /// Statistics come in inventory order. A layer that never saw an input is an error. The
    /// activation term is accumulated for `act8-dynamic` only; see [`LayerStats::capture_with_ranges`].
    pub fn capture(model: &dyn Model, batches: &[Batch]) -> Result<Vec<LayerStats>> {
        Self::capture_with_ranges(model, batches, &ActRanges::new())
    }

    /// [`LayerStats::capture`], also accumulating the `act8-static` term of every layer that has a
    /// range in `ranges` (the evaluator's, [`CandleEvaluator::ranges`]), in the same pass as `H`.
    ///
    /// [`CandleEvaluator::ranges`]: crate::eval::CandleEvaluator::ranges
    pub fn capture_with_ranges(
        model: &dyn Model,
        batches: &[Batch],
        ranges: &ActRanges,
    ) -> Result<Vec<LayerStats>> {
        let mut act = ActAccumulators::new(model, ranges)?;
        let inputs = crate::model::capture_input_stats_with(model, batches, &mut |name, x| {
            act.add(name, x)
        })?;
        Ok(act.attach(LayerStats::for_model(model, &inputs)?))
    }

    /// `stats` (as [`LayerStats::for_model`] builds them, without the activation term) with the
    /// activation term of every layer accumulated on `batches` — the calibration batches `H` was
    /// accumulated on — in one capture; `act8-static` for the layers with a range in `ranges`.
    pub fn with_activation(
        stats: Vec<LayerStats>,
        model: &dyn Model,
        batches: &[Batch],
        ranges: &ActRanges,
    ) -> Result<Vec<LayerStats>> {
        let mut act = ActAccumulators::new(model, ranges)?;
        for batch in batches {
            for (name, xs) in crate::model::capture_inputs(model, batch)? {
                for x in &xs {
                    act.add(&name, x)?;
                }
            }
        }
        Ok(act.attach(stats))
    }

    /// The statistics of every layer of `model`, in inventory order, from input statistics already
    /// accumulated (an evaluator's [`input_stats`](crate::eval::CandleEvaluator::input_stats)),
    /// without the activation term ([`LayerStats::with_activation`] adds it).
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
    /// (see [`InputStats`] for what each kind expects), with the activation term. `weight` has the
    /// layer's stored shape; `range`, if given, is the layer's static activation range.
    pub fn from_inputs(
        info: &LayerInfo,
        weight: &Tensor,
        inputs: &[Tensor],
        range: Option<(f32, f32)>,
    ) -> Result<LayerStats> {
        let mut a = InputAccumulator::new(info)?;
        let mut act = ActAccumulator::new(info, weight, range)?;
        for x in inputs {
            a.add(x)?;
            if let Some(act) = act.as_mut() {
                act.add(x)?;
            }
        }
        let mut stats = LayerStats::from_inputs_stats(info, weight, Arc::new(a.finish()?))?;
        stats.act = act.map(|a| a.energy);
        Ok(stats)
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
            scores: None,
            reference,
            act: None,
        })
    }

    /// `stats` with every layer's pruning importance scores from `scores` (an error names a layer
    /// without any), for compression settings with a gradient importance.
    pub fn with_scores(stats: Vec<LayerStats>, scores: &LayerScores) -> Result<Vec<LayerStats>> {
        stats
            .into_iter()
            .map(|mut s| {
                let found = scores.get(&s.info.name).ok_or_else(|| {
                    Error::sensitivity(format!("no importance scores for layer `{}`", s.info.name))
                })?;
                s.scores = Some(Arc::clone(found));
                Ok(s)
            })
            .collect()
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

    /// The relative output error `‖(X − Q(X)) Wᵀ‖² / ‖X Wᵀ‖²` of quantizing the layer's input as
    /// `act` says, the weight unchanged (see the module docs); 0 for no activation quantization. An
    /// error for an embedding (its input is ids), for statistics built without the activation term,
    /// and for `act8-static` when the statistics were captured without the layer's static range.
    pub fn activation_error(&self, act: ActQuant) -> Result<f64> {
        let energy = match (act, self.act) {
            (ActQuant::None, _) => return Ok(0.0),
            (_, None) if self.info.kind == LayerKind::Embedding => {
                return Err(Error::sensitivity(format!(
                    "layer `{}` is an {}: its input is ids, which {act} would scramble; it has no \
                     activation quantization error",
                    self.info.name, self.info.kind
                )))
            }
            (_, None) => {
                return Err(Error::sensitivity(format!(
                    "layer `{}`: the statistics were built without the activation term, so the \
                     error of {act} is unknown (add it with LayerStats::with_activation)",
                    self.info.name
                )))
            }
            (ActQuant::Int8Dynamic, Some(e)) => e.dynamic,
            (ActQuant::Int8Static, Some(e)) => e.fixed.ok_or_else(|| {
                Error::sensitivity(format!(
                    "layer `{}`: the statistics were captured without its static activation range, \
                     so the error of act8-static is unknown (capture them with \
                     LayerStats::capture_with_ranges and the evaluator's ranges)",
                    self.info.name
                ))
            })?,
        };
        Ok(energy / self.reference)
    }
}

/// The activation term of every non-embedding layer of a model, being accumulated.
struct ActAccumulators(HashMap<String, ActAccumulator>);

impl ActAccumulators {
    fn new(model: &dyn Model, ranges: &ActRanges) -> Result<ActAccumulators> {
        let mut out = HashMap::new();
        for l in &model.inventory().layers {
            let range = ranges.get(&l.name).copied();
            if let Some(a) = ActAccumulator::new(l, &model.weight(&l.name)?, range)? {
                out.insert(l.name.clone(), a);
            }
        }
        Ok(ActAccumulators(out))
    }

    /// Adds one captured input of layer `name` (an embedding's or an unknown layer's: nothing).
    fn add(&mut self, name: &str, x: &Tensor) -> Result<()> {
        match self.0.get_mut(name) {
            Some(a) => a.add(x),
            None => Ok(()),
        }
    }

    /// `stats` with their activation terms.
    fn attach(mut self, mut stats: Vec<LayerStats>) -> Vec<LayerStats> {
        for s in &mut stats {
            s.act = self.0.remove(&s.info.name).map(|a| a.energy);
        }
        stats
    }
}

/// One layer's activation term, being accumulated.
struct ActAccumulator {
    info: LayerInfo,
    /// The original weight as an `out × in` f64 matrix (matrix view: rows = dim 0).
    weight: Mat<f64>,
    /// The static activation range, if known.
    range: Option<(f32, f32)>,
    energy: ActEnergy,
}

impl ActAccumulator {
    /// `None` for an embedding (its input is ids).
    fn new(
        info: &LayerInfo,
        weight: &Tensor,
        range: Option<(f32, f32)>,
    ) -> Result<Option<ActAccumulator>> {
        if info.kind == LayerKind::Embedding {
            return Ok(None);
        }
        let (rows, cols) = matrix_dims(&info.shape);
        if weight.elem_count() != rows * cols {
            return Err(Error::sensitivity(format!(
                "layer `{}`: weight has shape {:?}, the inventory says {:?}",
                info.name,
                weight.dims(),
                info.shape
            )));
        }
        let data = weight
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        Ok(Some(ActAccumulator {
            info: info.clone(),
            weight: Mat::from_fn(rows, cols, |i, j| data[i * cols + j]),
            range,
            energy: ActEnergy {
                dynamic: 0.0,
                fixed: range.map(|_| 0.0),
            },
        }))
    }

    /// Adds `‖(X − Q(X)) Wᵀ‖²` of one captured input for each known activation quantization.
    fn add(&mut self, x: &Tensor) -> Result<()> {
        self.energy.dynamic += self.quantization_energy(x, ActQuant::Int8Dynamic, None)?;
        if let Some(range) = self.range {
            let e = self.quantization_energy(x, ActQuant::Int8Static, Some(range))?;
            *self.energy.fixed.get_or_insert(0.0) += e;
        }
        Ok(())
    }

    /// `‖(X − Q(X)) Wᵀ‖²` of one captured input under `act`, with the evaluator's quantizer.
    fn quantization_energy(
        &self,
        x: &Tensor,
        act: ActQuant,
        range: Option<(f32, f32)>,
    ) -> Result<f64> {
        let dx = (x - quantize_activation(x, act, range)?)?;
        let dx_rows = input_rows(&self.info.name, self.info.kind, &self.info.shape, &dx)?;
        let mut y = Mat::<f64>::zeros(dx_rows.nrows(), self.weight.nrows());
        matmul(
            y.as_mut(),
            Accum::Replace,
            dx_rows.as_ref(),
            self.weight.transpose(),
            1.0,
            Par::Seq,
        );
        Ok(y.squared_norm_l2())
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
/// layer's own input statistics) plus, when the choice quantizes activations, the layer's
/// [`activation_error`](LayerStats::activation_error) (see the module docs). `stats` must hold every
/// layer of the space (as [`LayerStats::capture`] returns them; with the static ranges for
/// `act8-static` choices). A choice with activation quantization costs more than its weight-only
/// twin; an uncompressed choice gets 0.
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
    cheap_errors_checkpointed(space, stats, settings.into(), &mut NoCheckpoint, progress)
}

/// [`cheap_errors_with_progress`], taking each group's weight errors from `checkpoint` when an earlier
/// session kept them and handing it each group's when computed.
pub(crate) fn cheap_errors_checkpointed(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    settings: CompressSettings,
    checkpoint: &mut dyn Checkpoint,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    let mut errors = errors_per_choice(
        space,
        stats,
        &settings,
        "calibration statistics",
        checkpoint,
        progress,
    )?;
    add_activation_errors(space, stats, &mut errors)?;
    Ok(errors)
}

/// Adds to `errors[group][choice]` the activation error of every member layer of the group, for the
/// choices that quantize activations.
fn add_activation_errors(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    errors: &mut [Vec<f64>],
) -> Result<()> {
    let by_name: HashMap<&str, &LayerStats> =
        stats.iter().map(|s| (s.info.name.as_str(), s)).collect();
    for (g, row) in space.groups.iter().zip(errors) {
        for (c, e) in g.choices.iter().zip(row.iter_mut()) {
            if c.act == ActQuant::None {
                continue;
            }
            for &m in &g.members {
                let name = &space.layers[m].info.name;
                let s = by_name.get(name.as_str()).ok_or_else(|| {
                    Error::sensitivity(format!("no calibration statistics for layer `{name}`"))
                })?;
                *e += s.activation_error(c.act)?;
            }
        }
    }
    Ok(())
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
    /// The layer's pruning importance scores, for compression settings that need them.
    fn scores(&self) -> Option<&WeightScores> {
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
    fn scores(&self) -> Option<&WeightScores> {
        self.scores.as_deref()
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
    checkpoint: &mut dyn Checkpoint,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    use rayon::prelude::*;
    let by_name: HashMap<&str, &M> = measures.iter().map(|s| (s.layer_name(), s)).collect();
    let mut out = Vec::with_capacity(space.groups.len());
    for (gi, g) in space.groups.iter().enumerate() {
        if let Some(row) = known_row(checkpoint, space, gi)? {
            out.push(row);
            progress(gi + 1, space.groups.len());
            continue;
        }
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
                    let w = crate::compress::apply_with(
                        &original,
                        c,
                        settings,
                        s.inputs(),
                        s.scores(),
                    )?;
                    s.error(&w)
                })
                .collect::<Result<_>>()?;
            for (c, e) in distinct.iter().zip(errs) {
                *error.entry(*c).or_default() += e;
            }
        }
        let row: Vec<f64> = weight_only
            .iter()
            .map(|c| error.get(c).copied().unwrap_or(0.0))
            .collect();
        checkpoint.keep_cheap_row(gi, &row)?;
        out.push(row);
        progress(gi + 1, space.groups.len());
    }
    Ok(out)
}

/// Group `group`'s weight errors as `checkpoint` kept them, if it has a row of the group's length
/// (anything else is computed again).
pub(crate) fn known_row(
    checkpoint: &mut dyn Checkpoint,
    space: &crate::space::SearchSpace,
    group: usize,
) -> Result<Option<Vec<f64>>> {
    let choices = space.groups[group].choices.len();
    Ok(checkpoint
        .cheap_row(group)?
        .filter(|r| r.len() == choices && r.iter().all(|e| e.is_finite())))
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
