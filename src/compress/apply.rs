//! # A choice applied to a weight
//!
//! [`apply_choice`] turns a layer's f32 weight and its [`Choice`] into the dense f32 weight the
//! evaluator runs, of the same shape. The steps always run in this order:
//!
//! 1. **factorize** (if `rank<P>`): `W ≈ A·B` by truncated SVD ([`truncated_svd`]). The SVD needs the
//!    dense, unquantized matrix: factorizing a pruned or quantized weight would spend rank on
//!    reproducing pruning holes and rounding noise.
//! 2. **remove output channels** (if `channels<P>`): the rows of smallest L2 norm *in the original
//!    weight* are zeroed — in `W`, or in `A` when factorized (a zero row of `A` is a zero row of
//!    `A·B`). Ranking by the original weight makes the removed channels the same whatever the rank,
//!    and it is the importance of the channel in the model being compressed.
//! 3. **prune** (if `sparse<P>` or `N:M`): each factor on its own (`A` and `B`, or `W`) — the
//!    factors are what is stored and multiplied, so that is where the pattern must hold (an N:M kernel
//!    runs on `A` and on `B`; `A·B` itself is dense in general). N:M groups run along input channels
//!    at a fixed kernel position ([`factor_kernel`]: `B` of a convolution keeps its kernel, `A` is a
//!    1×1 layer over the rank dimension).
//! 4. **quantize** each factor, with scales fitted to the surviving weights only (pruned zeros would
//!    otherwise stretch or shift the range), then re-apply the pruning mask so that pruned weights
//!    stay exactly zero even where an asymmetric zero point is not a code of zero. With
//!    [`Rounding::Gptq`] an integer format is rounded by GPTQ ([`super::gptq`]) over the kept weights,
//!    the mask applied inside its loop (pruned weights become exactly zero and their error is
//!    compensated by the kept weights after them, as SparseGPT does).
//! 5. **multiply** the factors back: `A·B`, reshaped to the weight's shape.
//!
//! **Input statistics** ([`InputStats`], `H = XᵀX` of the layer's calibration inputs) are needed by
//! [`ScaleMethod::Output`] and [`Rounding::Gptq`] on integer formats ([`CompressSettings::needs_inputs`]).
//! Each factor is quantized with its own: `B` (or `W`) sees the layer's inputs `X`, so its `H` is the
//! layer's; `A` sees `B̂x`, the output of the *quantized* `B`, so `H_A = B̂ H B̂ᵀ` (`k × k`), and `B` is
//! quantized first. Embeddings: a look-up's `H` is diagonal (how often each row was read), and with a
//! diagonal `H` GPTQ moves no error — it is round-to-nearest, which is what they get; output-error
//! scales weigh their rows by those counts (a factorized table's `B` by weight MSE).
//! Float formats (f32, f16, bf16) ignore both settings: GPTQ rounds to an integer grid, and pruning
//! alone keeps its mask without compensation.
//!
//! Pruning comes before quantization because the mask is a decision about the weights, and the
//! quantizer should spend its grid on the weights that remain: fitting scales first and pruning after
//! would size the grid for values that are then thrown away. This is also how the cost model counts
//! bytes ([`crate::cost::CostModel`]): each factor stored pruned and quantized, `k = rank_k(…)`.
//!
//! **Convolution factorizations** (`tucker<P>`, `cp<P>`) replace step 1 by Tucker-2 or CP of the
//! kernel ([`super::convfactor`]: three or four factor matrices), take no step 2 or 3 (the notation
//! refuses sparsity parts with them) and quantize each factor on its own in step 4, round-to-nearest
//! with the run's scale method: the factors have no input statistics of their own here, so
//! output-error scales fall back to MSE scales and GPTQ to round-to-nearest (as a factorized
//! embedding's `B` does). Step 5 multiplies the chain back into the kernel it computes
//! ([`super::convfactor::reconstruct`]): the evaluator scores that kernel, the same linear map as the
//! chain of convolutions `measure` runs.
//!
//! Activation quantization is not part of the weight: the evaluator passes `choice.act` to
//! [`quantize_activation`](super::quantize_activation) at run time.

use candle_core::Tensor;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use serde::{Deserialize, Serialize};

use super::convfactor;
use super::gptq::{self, Format, Rounding};
use super::importance::{Importance, WeightScores};
use super::lowrank::truncated_svd;
use super::matrix::WeightMatrix;
use super::prune;
use super::quant::{quantize_matrix, QuantizedWeight, ScaleMethod};
use super::stats::InputStats;
use crate::error::{Error, Result};
use crate::space::{Choice, ConvFactor, Sparsity, WeightQuant};

/// How a choice's integer formats are fitted and rounded (the scale method and the rounding), and
/// how pruning ranks weights (the importance). Part of the evaluator's fingerprint and of the
/// compressed-weight cache key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompressSettings {
    pub scale: ScaleMethod,
    pub rounding: Rounding,
    /// Magnitude is not written, so settings serialised before this field existed read back equal.
    #[serde(default, skip_serializing_if = "Importance::is_magnitude")]
    pub importance: Importance,
}

impl From<ScaleMethod> for CompressSettings {
    /// `scale` with round-to-nearest.
    fn from(scale: ScaleMethod) -> CompressSettings {
        CompressSettings {
            scale,
            rounding: Rounding::Rtn,
            importance: Importance::Magnitude,
        }
    }
}

impl CompressSettings {
    /// Whether compressing a weight under `choice` needs the layer's input statistics.
    pub fn needs_inputs(&self, choice: &Choice) -> bool {
        matches!(choice.weights, WeightQuant::Int { .. })
            && choice.conv.is_none()
            && (self.scale.needs_inputs() || self.rounding.needs_inputs())
    }

    /// Whether compressing any layer may need input statistics.
    pub fn uses_inputs(&self) -> bool {
        self.scale.needs_inputs() || self.rounding.needs_inputs()
    }

    /// Whether compressing a weight under `choice` needs the layer's importance scores: a gradient
    /// importance and a choice that prunes the layer's own weight — `channels<P>` always (it ranks
    /// the original rows), `sparse<P>` and `N:M` only without `rank<P>` (the factors of a low-rank
    /// pair are pruned by magnitude).
    pub fn needs_scores(&self, choice: &Choice) -> bool {
        self.importance.needs_gradients()
            && match choice.sparsity {
                Sparsity::None => false,
                Sparsity::Channels(_) => true,
                _ => choice.rank.is_none(),
            }
    }
}

/// A compressed weight before its factors are multiplied back: one factor (`W`) or two (`A`, `B`),
/// each pruned and fake-quantized, with its keep mask and, for integer formats, its integer form.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedWeight {
    factors: Vec<WeightMatrix>,
    masks: Vec<Vec<bool>>,
    quantized: Vec<Option<QuantizedWeight>>,
    shape: Vec<usize>,
    /// The convolution factorization the factors come from, if any.
    conv: Option<ConvFactor>,
}

impl CompressedWeight {
    /// `[W]`, or `[A, B]` when factorized, or a convolution factorization's three (Tucker-2) or four
    /// (CP) factors ([`super::convfactor`]), as dequantized f32 matrices.
    pub fn factors(&self) -> &[WeightMatrix] {
        &self.factors
    }

    /// The keep mask of each factor (row-major, `false` where pruned).
    pub fn masks(&self) -> &[Vec<bool>] {
        &self.masks
    }

    /// The integer form of each factor (codes, scales, zero points; pruned values hold their group's
    /// zero code), `None` for the float formats. `factors()[i]` is exactly its dequantized values with
    /// the mask applied. Exports store this.
    pub fn quantized(&self) -> &[Option<QuantizedWeight>] {
        &self.quantized
    }

    /// The shape of the original weight.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The convolution factorization the factors come from (`tucker<P>`, `cp<P>`), if any.
    pub fn conv(&self) -> Option<ConvFactor> {
        self.conv
    }

    /// The dense matrix: `W`, or `A·B`, or the kernel a convolution factorization's chain computes.
    pub fn product(&self) -> Result<WeightMatrix> {
        if let Some(f) = self.conv {
            return convfactor::reconstruct(f, &self.shape, &self.factors);
        }
        match self.factors.as_slice() {
            [a, b] => a.matmul(b),
            [w] => Ok(w.clone()),
            _ => unreachable!("a compressed weight has one or two factors"),
        }
    }

    /// The dense f32 weight in the original shape.
    pub fn to_tensor(&self) -> Result<Tensor> {
        self.product()?.to_tensor(&self.shape)
    }
}

/// Applies `choice` to `w` (steps 1–4 of the module docs), keeping the factors apart, with
/// round-to-nearest and `scale` (which must not need input statistics: see [`compress_with`]).
pub fn compress_factors(
    w: &Tensor,
    choice: &Choice,
    scale: ScaleMethod,
) -> Result<CompressedWeight> {
    compress_with(w, choice, &scale.into(), None, None)
}

/// The dense f32 weight, of `w`'s shape, that the evaluator uses for a layer under `choice`:
/// factorize, remove channels, prune, quantize, multiply back (in that order; see the module docs),
/// with round-to-nearest and `scale`. `choice.act` plays no part here.
pub fn apply_choice(w: &Tensor, choice: &Choice, scale: ScaleMethod) -> Result<Tensor> {
    compress_factors(w, choice, scale)?.to_tensor()
}

/// [`apply_choice`] with `settings`, the layer's input statistics (needed when
/// [`CompressSettings::needs_inputs`] says so) and its importance scores (needed when
/// [`CompressSettings::needs_scores`] says so); an error names what is missing.
pub fn apply_with(
    w: &Tensor,
    choice: &Choice,
    settings: &CompressSettings,
    inputs: Option<&InputStats>,
    scores: Option<&WeightScores>,
) -> Result<Tensor> {
    compress_with(w, choice, settings, inputs, scores)?.to_tensor()
}

/// [`compress_factors`] with `settings`, the layer's input statistics and its importance scores
/// (see the module docs and [`apply_with`]).
pub fn compress_with(
    w: &Tensor,
    choice: &Choice,
    settings: &CompressSettings,
    inputs: Option<&InputStats>,
    scores: Option<&WeightScores>,
) -> Result<CompressedWeight> {
    let original = WeightMatrix::from_tensor(w)?;
    if let Some(f) = choice.conv {
        return compress_conv(w.dims(), &original, choice, f, settings);
    }
    let scores = layer_scores(&original, choice, settings, scores)?;
    let inputs = if settings.needs_inputs(choice) {
        let s = inputs.ok_or_else(|| {
            Error::compress(format!(
                "{choice} with {} scales and {} rounding needs the layer's input statistics \
                 (calibration data); none were given",
                settings.scale, settings.rounding
            ))
        })?;
        s.check_fits(original.rows(), original.cols(), &choice.to_string())?;
        Some(s)
    } else {
        None
    };
    let Prepared {
        mut factors, masks, ..
    } = prepare_matrix(w.dims(), &original, choice, scores)?;
    // 4. Quantize what survives, the last factor first (the first factor's inputs are its output).
    let mut quantized = vec![None; factors.len()];
    for i in (0..factors.len()).rev() {
        let keep = &masks[i];
        let stats = factor_inputs(inputs, &factors, i)?;
        let mut settings = *settings;
        if stats.is_none() && settings.scale.needs_inputs() {
            // A factorized embedding's `B`: its rows are not the table's (see the module docs).
            settings.scale = ScaleMethod::Mse;
        }
        let stats = stats.as_ref().map(FactorInputs::get);
        let q = quantize_factor(&factors[i], keep, &choice.weights, &settings, stats)?;
        factors[i] = match &q {
            Some(q) => q.dequantize_matrix()?,
            None => {
                let mut f = factors[i].clone();
                f.apply_mask(keep);
                quantize_matrix(&f, &choice.weights, settings.scale, Some(keep))?
            }
        };
        factors[i].apply_mask(keep);
        quantized[i] = q;
    }
    Ok(CompressedWeight {
        factors,
        masks,
        quantized,
        shape: w.dims().to_vec(),
        conv: None,
    })
}

/// A convolution factorization under `choice` (see the module docs): the factors, each quantized
/// round-to-nearest on its own (output-error scales as MSE scales), none pruned.
fn compress_conv(
    dims: &[usize],
    original: &WeightMatrix,
    choice: &Choice,
    f: ConvFactor,
    settings: &CompressSettings,
) -> Result<CompressedWeight> {
    if choice.sparsity != Sparsity::None || choice.weights.ggml().is_some() {
        return Err(Error::compress(format!(
            "{choice}: {f} takes float or integer weights and no sparsity part"
        )));
    }
    let mut factors = convfactor::factorize(original, dims, f)?;
    let masks: Vec<Vec<bool>> = factors.iter().map(|m| vec![true; m.len()]).collect();
    let mut settings = CompressSettings {
        rounding: Rounding::Rtn,
        ..*settings
    };
    if settings.scale.needs_inputs() {
        settings.scale = ScaleMethod::Mse;
    }
    let mut quantized = Vec::with_capacity(factors.len());
    for (factor, keep) in factors.iter_mut().zip(&masks) {
        let q = quantize_factor(factor, keep, &choice.weights, &settings, None)?;
        *factor = match &q {
            Some(q) => q.dequantize_matrix()?,
            None => quantize_matrix(factor, &choice.weights, settings.scale, None)?,
        };
        quantized.push(q);
    }
    Ok(CompressedWeight {
        factors,
        masks,
        quantized,
        shape: dims.to_vec(),
        conv: Some(f),
    })
}

/// Step 4 alone with round-to-nearest: `f` masked by `keep`, quantized under `weights` with `scale`
/// fitted to the kept values only, the mask applied again — what [`compress_with`] does to each
/// factor. Fine-tuning ([`crate::recover`]) runs it on the current weights at every step (fake
/// quantization with re-derived scales). `scale` must not need input statistics.
pub(crate) fn fake_quantize_masked(
    f: &WeightMatrix,
    keep: &[bool],
    weights: &WeightQuant,
    scale: ScaleMethod,
) -> Result<WeightMatrix> {
    let settings = CompressSettings::from(scale);
    let mut out = match quantize_factor(f, keep, weights, &settings, None)? {
        Some(q) => q.dequantize_matrix()?,
        None => {
            let mut m = f.clone();
            m.apply_mask(keep);
            quantize_matrix(&m, weights, scale, Some(keep))?
        }
    };
    out.apply_mask(keep);
    Ok(out)
}

/// A weight after steps 1–3 of the module docs: its factors (`[W]` or `[A, B]`), not yet quantized
/// and not yet masked, and what is removed from them.
pub(crate) struct Prepared {
    /// `[W]`, or `[A, B]` from the truncated SVD.
    pub factors: Vec<WeightMatrix>,
    /// The keep mask of each factor (row-major, `false` where pruned or removed).
    pub masks: Vec<Vec<bool>>,
    /// For `channels<P>`: which output channels (rows of `W`, or of `A`) are kept.
    pub kept_rows: Option<Vec<bool>>,
}

/// The scores pruning ranks `original`'s values by under `settings` (`None`: magnitude), checked to
/// fit; an error when `choice` needs them and none were given.
fn layer_scores<'a>(
    original: &WeightMatrix,
    choice: &Choice,
    settings: &CompressSettings,
    scores: Option<&'a WeightScores>,
) -> Result<Option<&'a WeightScores>> {
    if !settings.needs_scores(choice) {
        return Ok(None);
    }
    let s = scores.ok_or_else(|| {
        Error::compress(format!(
            "{choice} with {} importance needs the layer's importance scores (gradients on the \
             calibration data); none were given",
            settings.importance
        ))
    })?;
    s.check_fits(original.rows(), original.cols(), &choice.to_string())?;
    Ok(Some(s))
}

/// Steps 1–3 of the module docs on `w`: factorize, then decide what to remove (ranked by `scores`
/// when `settings` asks for a gradient importance; see [`apply_with`]).
pub(crate) fn prepare(
    w: &Tensor,
    choice: &Choice,
    settings: &CompressSettings,
    scores: Option<&WeightScores>,
) -> Result<Prepared> {
    let original = WeightMatrix::from_tensor(w)?;
    let scores = layer_scores(&original, choice, settings, scores)?;
    prepare_matrix(w.dims(), &original, choice, scores)
}

/// Steps 1–3; `scores` (when given) rank `original`'s values and rows in place of magnitude. The
/// factors of a low-rank pair are pruned by magnitude: they are not the model's parameters and have
/// no scores of their own ([`super::Importance`]).
fn prepare_matrix(
    dims: &[usize],
    original: &WeightMatrix,
    choice: &Choice,
    scores: Option<&WeightScores>,
) -> Result<Prepared> {
    // 1. Factorize the dense weight.
    let factors = match choice.rank {
        Some(p) => {
            let lr = truncated_svd(original, p)?;
            vec![lr.a, lr.b]
        }
        None => vec![original.clone()],
    };
    // 2 and 3. Decide what to remove: whole rows by the original's norms, or a pattern per factor.
    let kept_rows = match choice.sparsity {
        Sparsity::Channels(p) => Some(prune::channel_mask_scored(original, p, scores)?),
        _ => None,
    };
    let factor_scores = if factors.len() == 1 { scores } else { None };
    let masks = masks(dims, &factors, choice, kept_rows.as_deref(), factor_scores)?;
    Ok(Prepared {
        factors,
        masks,
        kept_rows,
    })
}

/// The keep mask of each factor of a weight of shape `dims`: the kept `rows` of the first factor
/// (`channels<P>`), or a pattern per factor (N:M along input channels, [`factor_kernel`]), ranked by
/// `scores` when given (a single factor, `W`).
fn masks(
    dims: &[usize],
    factors: &[WeightMatrix],
    choice: &Choice,
    rows: Option<&[bool]>,
    scores: Option<&WeightScores>,
) -> Result<Vec<Vec<bool>>> {
    match rows {
        Some(rows) => Ok(factors
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if i == 0 {
                    prune::expand_rows(rows, f.cols())
                } else {
                    vec![true; f.len()]
                }
            })
            .collect()),
        None => factors
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let kernel = factor_kernel(dims, factors.len(), i);
                prune::mask_scored(f, &choice.sparsity, kernel, scores)
            })
            .collect(),
    }
}

/// The integer form of one (dense, unmasked) factor under an integer format, or `None` for a float
/// format: GPTQ when asked for and `H` is full, else round-to-nearest on the masked factor.
fn quantize_factor(
    f: &WeightMatrix,
    keep: &[bool],
    weights: &WeightQuant,
    settings: &CompressSettings,
    stats: Option<&InputStats>,
) -> Result<Option<QuantizedWeight>> {
    let WeightQuant::Int {
        bits,
        scheme,
        granularity,
    } = *weights
    else {
        return Ok(None);
    };
    if let (Rounding::Gptq(options), Some(s)) = (settings.rounding, stats) {
        if s.hessian().is_some() {
            let format = Format {
                bits,
                scheme,
                granularity,
                method: settings.scale,
            };
            let prep = gptq::prepared(s, options)?;
            return gptq::quantize(f, &format, Some(keep), s, &prep).map(Some);
        }
    }
    let mut masked = f.clone();
    masked.apply_mask(keep);
    QuantizedWeight::from_matrix_with(
        &masked,
        bits,
        scheme,
        granularity,
        settings.scale,
        Some(keep),
        stats,
    )
    .map(Some)
}

/// A factor's input statistics: the layer's, or computed for the factor.
enum FactorInputs<'a> {
    Layer(&'a InputStats),
    Projected(InputStats),
}

impl FactorInputs<'_> {
    fn get(&self) -> &InputStats {
        match self {
            FactorInputs::Layer(s) => s,
            FactorInputs::Projected(s) => s,
        }
    }
}

/// The input statistics of factor `i` of `factors` (`[W]` or `[A, B̂]`, `B̂` already quantized), from
/// the layer's: `W` and `B` see the layer's inputs `x`; `A` sees `B̂x`, so `H_A = B̂ H B̂ᵀ`. For an
/// embedding (look-up counts per table row) `W` and `A` keep the counts, `B` gets none.
fn factor_inputs<'a>(
    inputs: Option<&'a InputStats>,
    factors: &[WeightMatrix],
    i: usize,
) -> Result<Option<FactorInputs<'a>>> {
    let Some(stats) = inputs else {
        return Ok(None);
    };
    let last = i + 1 == factors.len();
    Ok(match (stats.hessian(), last) {
        (Some(_), true) => Some(FactorInputs::Layer(stats)),
        (Some(h), false) => Some(FactorInputs::Projected(project(
            h,
            &factors[i + 1],
            stats.samples(),
        )?)),
        (None, _) if i == 0 => Some(FactorInputs::Layer(stats)),
        (None, _) => None,
    })
}

/// `B H Bᵀ`.
fn project(h: MatRef<'_, f32>, b: &WeightMatrix, samples: usize) -> Result<InputStats> {
    let bm = b.to_faer();
    let mut bh = Mat::<f32>::zeros(bm.nrows(), h.ncols());
    matmul(
        bh.as_mut(),
        Accum::Replace,
        bm.as_ref(),
        h,
        1.0f32,
        Par::Seq,
    );
    let mut ha = Mat::<f32>::zeros(bm.nrows(), bm.nrows());
    matmul(
        ha.as_mut(),
        Accum::Replace,
        bh.as_ref(),
        bm.transpose(),
        1.0f32,
        Par::Seq,
    );
    InputStats::from_hessian(ha, samples)
}

/// Kernel positions per input channel of factor `index` of a weight of shape `dims` split into
/// `count` factors: the weight's own (`kh·kw` for a convolution) for `W` and for `B` (whose columns are
/// the weight's), 1 for `A` (its columns are the rank dimension). N:M groups run along the input
/// channels at each kernel position ([`prune::nm_mask`]).
pub fn factor_kernel(dims: &[usize], count: usize, index: usize) -> usize {
    if count == 2 && index == 0 {
        1
    } else {
        prune::kernel_positions(dims)
    }
}
