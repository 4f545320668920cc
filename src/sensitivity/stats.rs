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
//! So the layer's inputs are needed only once, to accumulate `H` (in f64); afterwards the relative
//! output error of any `W′` costs one `out × in × in` product, without running the model.
//!
//! What `X` is, per layer kind:
//!
//! - **linear**: the captured input, every leading dimension flattened into rows (`[n, in]`, or the
//!   packed real tokens of an encoder).
//! - **conv2d**: the im2col matrix of the captured input feature map `[n, c, h, w]`: one row per output
//!   pixel holding the `c·kh·kw` input values under the kernel, in the weight's `[c, kh, kw]` order.
//!   The kernel size comes from the weight; **stride 1 and "same" zero padding (`kh/2`, `kw/2`) and one
//!   group are assumed**, which is what the demo's 3×3, padding-1 convolutions do. A weight whose
//!   in-channels differ from the input's channels (a grouped convolution) is an error, not a guess.
//! - **embedding**: a lookup is a linear layer with one-hot inputs, so `H` is diagonal and holds how
//!   often each row was looked up in the calibration data: the error is
//!   `Σ_r count_r ‖ΔW_r‖² / Σ_r count_r ‖W_r‖²` — token-frequency weighted, and exactly the relative
//!   output error of the lookup (rows never looked up count for nothing).
//!
//! Biases are kept in f32 by every choice, so they cancel in `ΔW` and are left out of the denominator
//! as well (the error is relative to the weight's part of the output).
//!
//! ## Activation quantization
//!
//! Quantizing the layer's input replaces `X` by `Q(X)`, which `H` cannot see: while the inputs are
//! captured, each layer also accumulates `‖(X − Q(X)) Wᵀ‖²` for `act8-dynamic` and, when the
//! evaluator's calibrated range is given ([`LayerStats::capture_with_ranges`]), for `act8-static` —
//! with the evaluator's own quantizer ([`quantize_activation`]: dynamic ranges per sample or token,
//! static ranges from the calibration data), on the same rows `X` as `H` (im2col for convolutions).
//! [`LayerStats::activation_error`] is that energy over `trace(W H Wᵀ)`: the relative output error of
//! the activation quantization alone. Embeddings have none: their input is ids, and search spaces
//! refuse activation quantization on them.
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
//! term independent of the weight choice costs one number per layer and mode instead of one
//! `in × in` matrix (`ΔXᵀΔX`, and `XᵀΔX` for the cross term) per layer and mode.
//!
//! ## References
//!
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990 (second-order saliency of a
//!   weight change; with a squared-error loss on a layer's outputs its Hessian is `H = XᵀX`).
//! - E. Frantar, D. Alistarh, "Optimal Brain Compression", NeurIPS 2022, and E. Frantar et al.,
//!   "GPTQ", ICLR 2023 (the layer-wise objective `‖W X − W′ X‖²` and its Hessian `2 X Xᵀ`).

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use crate::compress::quantize_activation;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::space::{ActQuant, LayerInfo, LayerKind};

/// Static activation ranges (min, max) by layer name, as the evaluator calibrates them.
pub type ActRanges = HashMap<String, (f32, f32)>;

/// The accumulated second moment of a layer's inputs.
#[derive(Clone, Debug)]
enum Moment {
    /// `H = XᵀX`, `in × in` (linear, conv2d through im2col).
    Full(Mat<f64>),
    /// The diagonal of `H` for one-hot inputs: how often each row of an embedding was looked up.
    Rows(Vec<f64>),
}

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
    /// The original weight as an `out × in` f64 matrix (matrix view: rows = dim 0).
    weight: Mat<f64>,
    moment: Moment,
    /// Rows of `X` accumulated (samples, tokens or output pixels).
    samples: usize,
    /// `trace(W H Wᵀ)`: the squared norm of the weight's part of the calibration outputs.
    reference: f64,
    /// The activation quantization's output energy (`None` for an embedding).
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
    /// range in `ranges` (the evaluator's, [`CandleEvaluator::ranges`]).
    ///
    /// [`CandleEvaluator::ranges`]: crate::eval::CandleEvaluator::ranges
    pub fn capture_with_ranges(
        model: &dyn Model,
        batches: &[Batch],
        ranges: &ActRanges,
    ) -> Result<Vec<LayerStats>> {
        let layers = &model.inventory().layers;
        let mut acc: Vec<Accumulator> = layers
            .iter()
            .map(|l| Accumulator::new(l, &model.weight(&l.name)?, ranges.get(&l.name).copied()))
            .collect::<Result<_>>()?;
        for batch in batches {
            let mut captured = crate::model::capture_inputs(model, batch)?;
            for a in &mut acc {
                for x in captured.remove(&a.info.name).unwrap_or_default() {
                    a.add(&x)?;
                }
            }
        }
        acc.into_iter().map(Accumulator::finish).collect()
    }

    /// Statistics of one layer from its inputs, as the model's forward hands them to the layer
    /// (see the module docs for what each kind expects). `weight` has the layer's stored shape;
    /// `range`, if given, is the layer's static activation range.
    pub fn from_inputs(
        info: &LayerInfo,
        weight: &Tensor,
        inputs: &[Tensor],
        range: Option<(f32, f32)>,
    ) -> Result<LayerStats> {
        let mut a = Accumulator::new(info, weight, range)?;
        for x in inputs {
            a.add(x)?;
        }
        a.finish()
    }

    /// The layer.
    pub fn info(&self) -> &LayerInfo {
        &self.info
    }

    /// Rows of `X` the statistics were accumulated from.
    pub fn samples(&self) -> usize {
        self.samples
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
        let w2 = matrix_view(w_prime)?;
        let (out, inp) = (self.weight.nrows(), self.weight.ncols());
        let delta = Mat::from_fn(out, inp, |i, j| self.weight[(i, j)] - w2[(i, j)]);
        Ok(self.energy(&delta) / self.reference)
    }

    /// The relative output error `‖(X − Q(X)) Wᵀ‖² / ‖X Wᵀ‖²` of quantizing the layer's input as
    /// `act` says, the weight unchanged (see the module docs); 0 for no activation quantization. An
    /// error for an embedding (its input is ids), and for `act8-static` when the statistics were
    /// captured without the layer's static range.
    pub fn activation_error(&self, act: ActQuant) -> Result<f64> {
        let energy = match (act, self.act) {
            (ActQuant::None, _) => return Ok(0.0),
            (_, None) => {
                return Err(Error::sensitivity(format!(
                    "layer `{}` is an {}: its input is ids, which {act} would scramble; it has no \
                     activation quantization error",
                    self.info.name, self.info.kind
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

    /// `trace(D H Dᵀ)` for an `out × in` matrix `D`.
    fn energy(&self, d: &Mat<f64>) -> f64 {
        match &self.moment {
            Moment::Full(h) => {
                let mut dh = Mat::<f64>::zeros(d.nrows(), d.ncols());
                matmul(
                    dh.as_mut(),
                    Accum::Replace,
                    d.as_ref(),
                    h.as_ref(),
                    1.0,
                    Par::Seq,
                );
                let mut sum = 0.0;
                for j in 0..d.ncols() {
                    for i in 0..d.nrows() {
                        sum += dh[(i, j)] * d[(i, j)];
                    }
                }
                sum
            }
            Moment::Rows(counts) => {
                let mut sum = 0.0;
                for (r, &c) in counts.iter().enumerate() {
                    if c > 0.0 {
                        let norm: f64 = (0..d.ncols()).map(|j| d[(r, j)] * d[(r, j)]).sum();
                        sum += c * norm;
                    }
                }
                sum
            }
        }
    }
}

/// A weight tensor as its `dim 0 × rest` matrix view, in f64.
fn matrix_view(w: &Tensor) -> Result<Mat<f64>> {
    let rows = w.dims().first().copied().unwrap_or(1);
    let cols = w.elem_count() / rows.max(1);
    let data = w.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(Mat::from_fn(rows, cols, |i, j| data[i * cols + j]))
}

/// Statistics being accumulated.
struct Accumulator {
    info: LayerInfo,
    weight: Mat<f64>,
    moment: Moment,
    samples: usize,
    act: Option<ActEnergy>,
    /// The static activation range, if known.
    range: Option<(f32, f32)>,
}

impl Accumulator {
    fn new(info: &LayerInfo, weight: &Tensor, range: Option<(f32, f32)>) -> Result<Accumulator> {
        if weight.dims() != info.shape.as_slice() {
            return Err(Error::sensitivity(format!(
                "layer `{}`: weight has shape {:?}, the inventory says {:?}",
                info.name,
                weight.dims(),
                info.shape
            )));
        }
        let weight = matrix_view(weight)?;
        let moment = match info.kind {
            LayerKind::Embedding => Moment::Rows(vec![0.0; weight.nrows()]),
            _ => Moment::Full(Mat::zeros(weight.ncols(), weight.ncols())),
        };
        let act = (info.kind != LayerKind::Embedding).then(|| ActEnergy {
            dynamic: 0.0,
            fixed: range.map(|_| 0.0),
        });
        Ok(Accumulator {
            info: info.clone(),
            weight,
            moment,
            samples: 0,
            act,
            range,
        })
    }

    fn error(&self, message: String) -> Error {
        Error::sensitivity(format!("layer `{}`: {message}", self.info.name))
    }

    /// Adds one captured input.
    fn add(&mut self, x: &Tensor) -> Result<()> {
        if self.info.kind == LayerKind::Embedding {
            return self.add_ids(x);
        }
        let x_rows = self.rows(x)?;
        let Moment::Full(h) = &mut self.moment else {
            unreachable!("linear and conv2d layers accumulate a full moment");
        };
        matmul(
            h.as_mut(),
            Accum::Add,
            x_rows.transpose(),
            x_rows.as_ref(),
            1.0,
            Par::Seq,
        );
        self.samples += x_rows.nrows();
        self.add_activation_error(x)
    }

    /// An embedding's input: counts how often each row is looked up.
    fn add_ids(&mut self, x: &Tensor) -> Result<()> {
        let Moment::Rows(counts) = &mut self.moment else {
            unreachable!("an embedding accumulates row counts");
        };
        let ids = x.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        for &id in &ids {
            let c = counts.get_mut(id as usize).ok_or_else(|| {
                Error::sensitivity(format!(
                    "layer `{}`: id {id} is outside the table's {} rows",
                    self.info.name,
                    self.weight.nrows()
                ))
            })?;
            *c += 1.0;
        }
        self.samples += ids.len();
        Ok(())
    }

    /// The rows of `X` for one captured input of a linear or conv2d layer (see the module docs).
    fn rows(&self, x: &Tensor) -> Result<Mat<f64>> {
        match self.info.kind {
            LayerKind::Conv2d => self.im2col(x),
            _ => {
                let cols = self.weight.ncols();
                if x.dims().last() != Some(&cols) {
                    return Err(self.error(format!(
                        "input of shape {:?} does not end in the weight's {cols} inputs",
                        x.dims()
                    )));
                }
                let data = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let rows = data.len() / cols;
                Ok(Mat::from_fn(rows, cols, |i, j| data[i * cols + j]))
            }
        }
    }

    /// Adds `‖(X − Q(X)) Wᵀ‖²` of one captured input for each known activation quantization.
    fn add_activation_error(&mut self, x: &Tensor) -> Result<()> {
        let Some(mut act) = self.act else {
            return Ok(());
        };
        act.dynamic += self.quantization_energy(x, ActQuant::Int8Dynamic, None)?;
        if let (Some(fixed), Some(range)) = (act.fixed.as_mut(), self.range) {
            *fixed += self.quantization_energy(x, ActQuant::Int8Static, Some(range))?;
        }
        self.act = Some(act);
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
        let dx_rows = self.rows(&dx)?;
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

    /// The im2col matrix of an input feature map `[n, c, h, w]` (stride 1, same padding).
    fn im2col(&self, x: &Tensor) -> Result<Mat<f64>> {
        let (c_out_in, kh, kw) = match self.info.shape.as_slice() {
            &[_, c, kh, kw] => (c, kh, kw),
            s => return Err(self.error(format!("a conv2d weight has rank 4, got {s:?}"))),
        };
        let (n, c, h, w) = match x.dims() {
            &[n, c, h, w] => (n, c, h, w),
            d => return Err(self.error(format!("a conv2d input is [n, c, h, w], got {d:?}"))),
        };
        if c != c_out_in {
            return Err(self.error(format!(
                "input has {c} channels, the weight {c_out_in} per group: only ungrouped convolutions \
                 are supported"
            )));
        }
        let (ph, pw) = ((kh / 2) as isize, (kw / 2) as isize);
        let data = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let cols = c * kh * kw;
        let mut out = Mat::<f64>::zeros(n * h * w, cols);
        for s in 0..n {
            for y in 0..h {
                for xo in 0..w {
                    let row = (s * h + y) * w + xo;
                    for ci in 0..c {
                        for ky in 0..kh {
                            let yi = y as isize + ky as isize - ph;
                            if yi < 0 || yi >= h as isize {
                                continue;
                            }
                            for kx in 0..kw {
                                let xi = xo as isize + kx as isize - pw;
                                if xi < 0 || xi >= w as isize {
                                    continue;
                                }
                                let v = data[((s * c + ci) * h + yi as usize) * w + xi as usize];
                                out[(row, (ci * kh + ky) * kw + kx)] = v;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<LayerStats> {
        if self.samples == 0 {
            return Err(self.error(
                "no calibration input reached this layer; its output error cannot be measured"
                    .into(),
            ));
        }
        let mut stats = LayerStats {
            info: self.info,
            weight: self.weight,
            moment: self.moment,
            samples: self.samples,
            reference: 0.0,
            act: self.act,
        };
        stats.reference = stats.energy(&stats.weight);
        if !(stats.reference > 0.0 && stats.reference.is_finite()) {
            return Err(Error::sensitivity(format!(
                "layer `{}`: its calibration outputs are {} (zero weights or inputs?): a relative \
                 error needs a positive reference",
                stats.info.name, stats.reference
            )));
        }
        Ok(stats)
    }
}

/// The cheap error of every (group, choice) of `space`: the sum over the group's layers of their
/// relative output errors with the weight compressed as the choice says ([`apply_choice`] with
/// `scale`) plus, when the choice quantizes activations, the layer's
/// [`activation_error`](LayerStats::activation_error) (see the module docs). `stats` must hold every
/// layer of the space (as [`LayerStats::capture`] returns them; with the static ranges for
/// `act8-static` choices). A choice with activation quantization costs more than its weight-only
/// twin; an uncompressed choice gets 0.
///
/// [`apply_choice`]: crate::compress::apply_choice
pub fn cheap_errors(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    scale: crate::compress::ScaleMethod,
) -> Result<Vec<Vec<f64>>> {
    cheap_errors_with_progress(space, stats, scale, &mut |_, _| {})
}

/// [`cheap_errors`], calling `progress(done, total)` after each group.
pub fn cheap_errors_with_progress(
    space: &crate::space::SearchSpace,
    stats: &[LayerStats],
    scale: crate::compress::ScaleMethod,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    let mut errors = errors_per_choice(space, stats, scale, "calibration statistics", progress)?;
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
}

/// `measure` of every (group, choice) of `space`, summed over the group's layers, with the weight
/// compressed as the choice says (`apply_choice` with `scale`); `progress(done, total)` after each
/// group. Only the weight counts: choices that differ only in their activation part share one
/// compression and one number, and an uncompressed choice gets 0. The distinct weight choices of a
/// layer are compressed in parallel (rayon), each deterministically, so the result does not depend on
/// the thread count. `what` names the measure in the error for a layer `measures` lacks.
pub(crate) fn errors_per_choice<M: LayerMeasure>(
    space: &crate::space::SearchSpace,
    measures: &[M],
    scale: crate::compress::ScaleMethod,
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
                .map(|c| s.error(&crate::compress::apply_choice(&original, c, scale)?))
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
        let (r, c) = (self.weight.nrows(), self.weight.ncols());
        let mut data = Vec::with_capacity(r * c);
        for i in 0..r {
            for j in 0..c {
                data.push(self.weight[(i, j)] as f32);
            }
        }
        Ok(Tensor::from_vec(
            data,
            self.info.shape.as_slice(),
            &candle_core::Device::Cpu,
        )?)
    }
}
