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
//!    stay exactly zero even where an asymmetric zero point is not a code of zero.
//! 5. **multiply** the factors back: `A·B`, reshaped to the weight's shape.
//!
//! Pruning comes before quantization because the mask is a decision about the weights, and the
//! quantizer should spend its grid on the weights that remain: fitting scales first and pruning after
//! would size the grid for values that are then thrown away. This is also how the cost model counts
//! bytes ([`crate::cost::CostModel`]): each factor stored pruned and quantized, `k = rank_k(…)`.
//!
//! Activation quantization is not part of the weight: the evaluator passes `choice.act` to
//! [`quantize_activation`](super::quantize_activation) at run time.

use candle_core::Tensor;

use super::lowrank::truncated_svd;
use super::matrix::WeightMatrix;
use super::prune;
use super::quant::{quantize_matrix, QuantizedWeight, ScaleMethod};
use crate::error::Result;
use crate::space::{Choice, Sparsity, WeightQuant};

/// A compressed weight before its factors are multiplied back: one factor (`W`) or two (`A`, `B`),
/// each pruned and fake-quantized, with its keep mask and, for integer formats, its integer form.
#[derive(Clone, Debug, PartialEq)]
pub struct CompressedWeight {
    factors: Vec<WeightMatrix>,
    masks: Vec<Vec<bool>>,
    quantized: Vec<Option<QuantizedWeight>>,
    shape: Vec<usize>,
}

impl CompressedWeight {
    /// `[W]`, or `[A, B]` when factorized, as dequantized f32 matrices.
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

    /// The dense matrix: `W`, or `A·B`.
    pub fn product(&self) -> Result<WeightMatrix> {
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

/// Applies `choice` to `w` (steps 1–4 of the module docs), keeping the factors apart.
pub fn compress_factors(
    w: &Tensor,
    choice: &Choice,
    scale: ScaleMethod,
) -> Result<CompressedWeight> {
    let original = WeightMatrix::from_tensor(w)?;
    // 1. Factorize the dense weight.
    let mut factors = match choice.rank {
        Some(p) => {
            let lr = truncated_svd(&original, p)?;
            vec![lr.a, lr.b]
        }
        None => vec![original.clone()],
    };
    // 2 and 3. Decide what to remove: whole rows by the original's norms, or a pattern per factor.
    let masks: Vec<Vec<bool>> = match choice.sparsity {
        Sparsity::Channels(p) => {
            let rows = prune::channel_mask(&original, p)?;
            factors
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    if i == 0 {
                        prune::expand_rows(&rows, f.cols())
                    } else {
                        vec![true; f.len()]
                    }
                })
                .collect()
        }
        s => factors
            .iter()
            .enumerate()
            .map(|(i, f)| prune::mask(f, &s, factor_kernel(w.dims(), factors.len(), i)))
            .collect::<Result<_>>()?,
    };
    // 4. Quantize what survives; pruned weights stay exactly zero.
    let mut quantized = Vec::with_capacity(factors.len());
    for (f, keep) in factors.iter_mut().zip(&masks) {
        f.apply_mask(keep);
        let q = match choice.weights {
            WeightQuant::Int {
                bits,
                scheme,
                granularity,
            } => Some(QuantizedWeight::from_matrix(
                f,
                bits,
                scheme,
                granularity,
                scale,
                Some(keep),
            )?),
            _ => None,
        };
        *f = match &q {
            Some(q) => q.dequantize_matrix()?,
            None => quantize_matrix(f, &choice.weights, scale, Some(keep))?,
        };
        f.apply_mask(keep);
        quantized.push(q);
    }
    Ok(CompressedWeight {
        factors,
        masks,
        quantized,
        shape: w.dims().to_vec(),
    })
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

/// The dense f32 weight, of `w`'s shape, that the evaluator uses for a layer under `choice`:
/// factorize, remove channels, prune, quantize, multiply back (in that order; see the module docs).
/// `choice.act` plays no part here.
pub fn apply_choice(w: &Tensor, choice: &Choice, scale: ScaleMethod) -> Result<Tensor> {
    compress_factors(w, choice, scale)?.to_tensor()
}
