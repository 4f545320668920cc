//! # Weight quantization
//!
//! Uniform (linear) quantization of a weight to `b` bits, 2 ≤ b ≤ 8, on its matrix view
//! ([`WeightMatrix`]). For a scale group with scale `s > 0` and zero point `z`:
//!
//! ```text
//! q  = clamp(round(x / s) + z, qmin, qmax)        round = to nearest, ties to even
//! x' = (q − z) · s
//! ```
//!
//! - **Symmetric**: `z = 0` and the *restricted* signed range `q ∈ [−(2^(b−1)−1), 2^(b−1)−1]`
//!   (int8: −127…127, int4: −7…7, int2: −1…1), so the grid is symmetric about zero and `−x` quantizes to
//!   `−x'`. Min/max scale: `s = max|x| / (2^(b−1)−1)`.
//! - **Asymmetric** (affine): `q ∈ [0, 2^b−1]`. The range is widened to include zero,
//!   `lo = min(min x, 0)`, `hi = max(max x, 0)`, so that zero is exactly representable; min/max scale
//!   `s = (hi − lo) / (2^b−1)` and `z = clamp(round(−lo / s), 0, 2^b−1)`.
//!
//! A group whose values are all zero gets `s = 1`, `z = 0` for asymmetric or the middle code for
//! symmetric storage (any scale reproduces zeros exactly).
//!
//! **Granularity** decides which values share `(s, z)`: the whole tensor; one output channel (a row);
//! or a group of `N` consecutive input columns within a row (`g<N>`; the last group of a row is shorter
//! when `N` does not divide the columns). Scales are stored row-major: group `j` of row `r` is
//! `scales[r · groups_per_row + j]`.
//!
//! **Scale method**: [`ScaleMethod::MinMax`] uses the full range above. [`ScaleMethod::Mse`] searches
//! clip ratios `c ∈ {0.500, 0.525, …, 1.000}` ([`MSE_CLIP_RATIOS`], 21 candidates) per scale group,
//! shrinks the range to `c·lo … c·hi` (symmetric: `c·max|x|`), and keeps the ratio with the least
//! squared error `Σ (x − x')²` over the group (ties keep the larger ratio). Clipping a few outliers
//! buys a finer grid for the many small weights.
//!
//! [`ScaleMethod::Output`] searches the same ratios but keeps, per scale group, the one with the
//! least **output** error on the layer's calibration inputs, `Δw H Δwᵀ` with `H = XᵀX`
//! ([`InputStats`]; activation-aware clipping): a weight that multiplies large inputs counts for more
//! than one that multiplies small ones, and correlated inputs let errors cancel or add up.
//!
//! - **per channel**: a row's output error is exactly `Δw H Δwᵀ` (the error decomposes over rows);
//!   all rows are evaluated at once, one product `ΔW H` per ratio.
//! - **per group**: a group's own block of `H` (`H_gg`, the group's columns): `Δw_g H_gg Δw_gᵀ`. The
//!   cross terms `2 Δw_g H_gh Δw_hᵀ` between the groups of a row are left out, so each group is fitted
//!   on its own (as AWQ's clipping search does, which measures each group's partial output): with them,
//!   the groups of a row would be one joint problem over `21^groups` ratio combinations. The cross terms
//!   have no sign bias (rounding errors of different groups are nearly independent), so dropping them
//!   changes which ratio wins far less than the diagonal blocks do.
//! - **per tensor**: the whole layer's `trace(ΔW H ΔWᵀ)`, one product per ratio.
//! - **embeddings** (`H` is the diagonal of look-up counts): a row's count multiplies its whole error,
//!   so per row and per group the choice is the MSE one; per tensor, rows are weighted by their counts.
//!
//! **Integer form**: [`QuantizedWeight`] stores the codes as unsigned bytes in offset binary: an
//! asymmetric code is `q` itself; a symmetric code is stored as `q + 2^(b−1)` and its zero point is
//! recorded as `2^(b−1)`, so that both schemes dequantize with the same `x' = (c − z) · s`.
//!
//! Rounding is to nearest with ties to even, as `std::nearbyint` in PyTorch's fake quantization, and
//! is computed without a libm call (adding and subtracting 1.5·2²³), so the loops vectorise.
//!
//! **Masks**: when a pruning mask is given, scales are fitted to the surviving (kept) weights only,
//! and pruned positions get code `z` (dequantizing to exactly 0). Because every range includes zero
//! and zero quantizes to exactly zero, this is the same as quantizing the weights with the pruned
//! ones set to zero, which is how it is computed.
//!
//! The float formats are not integer quantization: f16 and bf16 round every value through candle's
//! `to_dtype` (round to nearest even), f32 is the identity.
//!
//! ## References
//!
//! - B. Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
//!   Inference", CVPR 2018 (the affine scheme `x = s·(q − z)`).
//! - R. Banner, Y. Nahshan, D. Soudry, "Post training 4-bit quantization of convolutional networks for
//!   rapid-deployment", NeurIPS 2019 (clipping the range to minimise the mean squared error).
//! - J. Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration",
//!   MLSys 2024 (per-group grid search over clip ratios).

use std::ops::Range;

use candle_core::{DType, Tensor};
use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::matrix::WeightMatrix;
use super::stats::{row_energies, InputStats};
use crate::error::{Error, Result};
use crate::space::{Granularity, QuantScheme, WeightQuant, BITS, GROUP_SIZES};

/// How the scale (and zero point) of each group is chosen (`minmax`, `mse`, `output`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMethod {
    /// The full range of the group's values.
    #[default]
    MinMax,
    /// The clip ratio of [`MSE_CLIP_RATIOS`] with the least squared error.
    Mse,
    /// The clip ratio of [`MSE_CLIP_RATIOS`] with the least output error `Δw H Δwᵀ` on the layer's
    /// calibration inputs (activation-aware clipping; needs the layer's [`InputStats`]).
    Output,
}

impl ScaleMethod {
    /// Whether choosing scales this way needs the layer's input statistics.
    pub fn needs_inputs(self) -> bool {
        self == ScaleMethod::Output
    }
}

impl std::fmt::Display for ScaleMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScaleMethod::MinMax => "minmax",
            ScaleMethod::Mse => "mse",
            ScaleMethod::Output => "output",
        })
    }
}

/// Clip ratios tried by [`ScaleMethod::Mse`]: 0.500 to 1.000 in steps of 0.025.
pub const MSE_CLIP_RATIOS: [f32; 21] = {
    let mut r = [0.0f32; 21];
    let mut i = 0;
    while i < 21 {
        r[i] = 0.5 + 0.025 * i as f32;
        i += 1;
    }
    r
};

/// The integer grid of one bit-width and scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntGrid {
    bits: u8,
    scheme: QuantScheme,
}

impl IntGrid {
    /// A grid; `bits` must be in 2..=8.
    pub fn new(bits: u8, scheme: QuantScheme) -> Result<IntGrid> {
        if !BITS.contains(&bits) {
            return Err(Error::compress(format!(
                "bit-width {bits} is not in {}..={}",
                BITS.start(),
                BITS.end()
            )));
        }
        Ok(IntGrid { bits, scheme })
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Symmetric or asymmetric.
    pub fn scheme(&self) -> QuantScheme {
        self.scheme
    }

    /// Smallest and largest code `q` (symmetric: `±(2^(b−1)−1)`; asymmetric: `0, 2^b−1`).
    pub fn qrange(&self) -> (i32, i32) {
        match self.scheme {
            QuantScheme::Symmetric => {
                let m = (1i32 << (self.bits - 1)) - 1;
                (-m, m)
            }
            QuantScheme::Asymmetric => (0, (1i32 << self.bits) - 1),
        }
    }

    /// Offset added to a code `q` to store it as an unsigned byte (`2^(b−1)` symmetric, 0 asymmetric).
    pub(crate) fn storage_offset(&self) -> i32 {
        match self.scheme {
            QuantScheme::Symmetric => 1i32 << (self.bits - 1),
            QuantScheme::Asymmetric => 0,
        }
    }

    /// Scale and zero point (an integer-valued f32) for values in `lo..=hi` (with `lo ≤ 0 ≤ hi`)
    /// shrunk by `ratio`.
    pub(crate) fn params(&self, lo: f32, hi: f32, ratio: f32) -> (f32, f32) {
        let (_, qmax) = self.qrange();
        let qmax = qmax as f32;
        match self.scheme {
            QuantScheme::Symmetric => {
                let amax = lo.abs().max(hi.abs()) * ratio;
                if amax > 0.0 {
                    (amax / qmax, 0.0)
                } else {
                    (1.0, 0.0)
                }
            }
            QuantScheme::Asymmetric => {
                let (lo, hi) = (lo * ratio, hi * ratio);
                if hi > lo {
                    let s = (hi - lo) / qmax;
                    (s, round_even(-lo / s).clamp(0.0, qmax))
                } else {
                    (1.0, 0.0)
                }
            }
        }
    }

    /// The grid's code bounds as f32.
    pub(crate) fn bounds(&self) -> (f32, f32) {
        let (qmin, qmax) = self.qrange();
        (qmin as f32, qmax as f32)
    }
}

/// Round to nearest, ties to even, for `|v| ≤ 2²²`: adding 1.5·2²³ lands in [2²³, 2²⁴], where f32
/// steps are 1, so IEEE round-to-nearest-even does the rounding; subtracting it back is exact.
#[inline]
pub(crate) fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// The code `clamp(round(x / s) + z, qmin, qmax)`, as an integer-valued f32. `x / s` is first clamped
/// to `qmin − z − 1 … qmax − z + 1`, which the outer clamp makes harmless and which keeps
/// [`round_even`] in its range.
#[inline]
pub(crate) fn code(x: f32, s: f32, z: f32, qmin: f32, qmax: f32) -> f32 {
    let t = (x / s).clamp(qmin - z - 1.0, qmax - z + 1.0);
    (round_even(t) + z).clamp(qmin, qmax)
}

/// A weight in integer form: codes, per-group scales and zero points.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<u8>,
    rows: usize,
    cols: usize,
    shape: Vec<usize>,
    bits: u8,
    scheme: QuantScheme,
    granularity: Granularity,
}

impl QuantizedWeight {
    /// Quantizes `w` (any rank ≥ 1, any float dtype) to the integer format `format`; an error if
    /// `format` is a float format or out of range.
    pub fn new(w: &Tensor, format: &WeightQuant, method: ScaleMethod) -> Result<QuantizedWeight> {
        let WeightQuant::Int {
            bits,
            scheme,
            granularity,
        } = *format
        else {
            return Err(Error::compress(format!(
                "{format} is a float format; an integer form needs int<b>-<scheme>-<granularity>"
            )));
        };
        let m = WeightMatrix::from_tensor(w)?;
        let mut q = QuantizedWeight::from_matrix(&m, bits, scheme, granularity, method, None)?;
        q.shape = w.dims().to_vec();
        Ok(q)
    }

    /// Quantizes a matrix; with `keep` (row-major, one flag per value), scales are fitted to the kept
    /// values only and the others get the zero code. [`ScaleMethod::Output`] needs the layer's input
    /// statistics: use [`QuantizedWeight::from_matrix_with`].
    pub fn from_matrix(
        m: &WeightMatrix,
        bits: u8,
        scheme: QuantScheme,
        granularity: Granularity,
        method: ScaleMethod,
        keep: Option<&[bool]>,
    ) -> Result<QuantizedWeight> {
        QuantizedWeight::from_matrix_with(m, bits, scheme, granularity, method, keep, None)
    }

    /// [`QuantizedWeight::from_matrix`] with the layer's input statistics (`H` of the matrix's
    /// columns, or an embedding's row counts), which [`ScaleMethod::Output`] chooses its clipping by;
    /// the other methods ignore them. Rounding is to nearest.
    pub fn from_matrix_with(
        m: &WeightMatrix,
        bits: u8,
        scheme: QuantScheme,
        granularity: Granularity,
        method: ScaleMethod,
        keep: Option<&[bool]>,
        inputs: Option<&InputStats>,
    ) -> Result<QuantizedWeight> {
        let grid = check_format(m, bits, scheme, granularity, method, keep, inputs)?;
        let data = masked(m, keep);
        let params = fit_params(
            &grid,
            &data,
            m.rows(),
            m.cols(),
            granularity,
            method,
            inputs,
        );
        let offset = grid.storage_offset() as f32;
        let (qmin, qmax) = grid.bounds();
        let mut codes = vec![0u8; m.len()];
        for (span, &(s, z)) in groups(m.rows(), m.cols(), granularity)
            .into_iter()
            .zip(&params)
        {
            for (c, &x) in codes[span.clone()].iter_mut().zip(&data[span]) {
                *c = (code(x, s, z, qmin, qmax) + offset) as u8;
            }
        }
        Ok(QuantizedWeight::from_parts(
            &grid,
            granularity,
            m.rows(),
            m.cols(),
            codes,
            &params,
        ))
    }

    /// A quantized weight from its stored codes and the `(scale, zero point)` of each group (the zero
    /// point as an integer-valued f32 code, before the storage offset).
    pub(crate) fn from_parts(
        grid: &IntGrid,
        granularity: Granularity,
        rows: usize,
        cols: usize,
        codes: Vec<u8>,
        params: &[(f32, f32)],
    ) -> QuantizedWeight {
        let offset = grid.storage_offset() as f32;
        QuantizedWeight {
            codes,
            scales: params.iter().map(|p| p.0).collect(),
            zero_points: params.iter().map(|p| (p.1 + offset) as u8).collect(),
            rows,
            cols,
            shape: vec![rows, cols],
            bits: grid.bits,
            scheme: grid.scheme,
            granularity,
        }
    }

    /// Dequantized values `x' = (c − z) · s`, row-major.
    pub fn dequantize_values(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.codes.len()];
        for (g, span) in groups(self.rows, self.cols, self.granularity)
            .into_iter()
            .enumerate()
        {
            let (s, z) = (self.scales[g], i32::from(self.zero_points[g]));
            for (o, &c) in out[span.clone()].iter_mut().zip(&self.codes[span]) {
                *o = (i32::from(c) - z) as f32 * s;
            }
        }
        out
    }

    /// The dequantized weight as an f32 tensor of the original shape.
    pub fn dequantize(&self) -> Result<Tensor> {
        let m = self.dequantize_matrix()?;
        m.to_tensor(&self.shape)
    }

    /// The dequantized weight as a matrix.
    pub fn dequantize_matrix(&self) -> Result<WeightMatrix> {
        WeightMatrix::new(self.rows, self.cols, self.dequantize_values())
    }

    /// Stored codes, row-major, unsigned offset binary (see the module docs).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    /// One scale per group.
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    /// One zero point per group, in the codes' unsigned storage (symmetric: always `2^(b−1)`).
    pub fn zero_points(&self) -> &[u8] {
        &self.zero_points
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The shape the weight had (and `dequantize` returns).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn bits(&self) -> u8 {
        self.bits
    }
    pub fn scheme(&self) -> QuantScheme {
        self.scheme
    }
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }
}

/// Fake-quantizes `w` to `format` and returns the dequantized f32 tensor of the same shape: integer
/// formats through [`QuantizedWeight`]; f16/bf16 through candle's `to_dtype` and back; GGML block
/// formats through candle's quantizer and back ([`super::ggml`]); f32 unchanged.
pub fn quantize_weight(w: &Tensor, format: &WeightQuant, method: ScaleMethod) -> Result<Tensor> {
    match format {
        WeightQuant::F32 => Ok(w.to_dtype(DType::F32)?),
        WeightQuant::F16 => Ok(w.to_dtype(DType::F16)?.to_dtype(DType::F32)?),
        WeightQuant::Bf16 => Ok(w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?),
        WeightQuant::Int { .. } => QuantizedWeight::new(w, format, method)?.dequantize(),
        WeightQuant::Ggml(g) => {
            super::ggml::fake_quantize(&WeightMatrix::from_tensor(w)?, *g)?.to_tensor(w.dims())
        }
    }
}

/// Fake-quantizes a matrix in place to `format` (float formats round through candle); with `keep`,
/// integer scales are fitted to the kept values and the others become exactly zero.
pub(crate) fn quantize_matrix(
    m: &WeightMatrix,
    format: &WeightQuant,
    method: ScaleMethod,
    keep: Option<&[bool]>,
) -> Result<WeightMatrix> {
    match *format {
        WeightQuant::F32 => Ok(m.clone()),
        WeightQuant::F16 | WeightQuant::Bf16 => {
            let t = m.to_tensor(&[m.rows(), m.cols()])?;
            let t = quantize_weight(&t, format, method)?;
            WeightMatrix::from_tensor(&t)
        }
        WeightQuant::Int {
            bits,
            scheme,
            granularity,
        } => QuantizedWeight::from_matrix(m, bits, scheme, granularity, method, keep)?
            .dequantize_matrix(),
        // Block formats take no pruning but whole rows (`channels<P>`), whose zeros every block grid
        // keeps; the caller re-applies the mask all the same.
        WeightQuant::Ggml(g) => super::ggml::fake_quantize(m, g),
    }
}

/// The row-major spans of the scale groups of a `rows × cols` matrix (each group is contiguous).
pub(crate) fn groups(rows: usize, cols: usize, granularity: Granularity) -> Vec<Range<usize>> {
    match granularity {
        Granularity::Tensor => std::iter::once(0..rows * cols).collect(),
        Granularity::Channel => (0..rows).map(|r| r * cols..(r + 1) * cols).collect(),
        Granularity::Group(g) => {
            let g = (g as usize).max(1);
            let per_row = cols.div_ceil(g);
            let mut out = Vec::with_capacity(rows * per_row);
            for r in 0..rows {
                for j in 0..per_row {
                    out.push(r * cols + j * g..r * cols + ((j + 1) * g).min(cols));
                }
            }
            out
        }
    }
}

/// The grid of an integer format, after checking the format's parts, the mask's length and that the
/// input statistics needed by `method` are there and fit the matrix.
pub(crate) fn check_format(
    m: &WeightMatrix,
    bits: u8,
    scheme: QuantScheme,
    granularity: Granularity,
    method: ScaleMethod,
    keep: Option<&[bool]>,
    inputs: Option<&InputStats>,
) -> Result<IntGrid> {
    let grid = IntGrid::new(bits, scheme)?;
    if let Granularity::Group(g) = granularity {
        if !GROUP_SIZES.contains(&g) {
            return Err(Error::compress(format!(
                "group size {g} is not in {}..={}",
                GROUP_SIZES.start(),
                GROUP_SIZES.end()
            )));
        }
    }
    if let Some(k) = keep {
        if k.len() != m.len() {
            return Err(Error::compress(format!(
                "a mask of {} flags cannot mask a {}×{} matrix",
                k.len(),
                m.rows(),
                m.cols()
            )));
        }
    }
    match inputs {
        Some(s) => s.check_fits(m.rows(), m.cols(), "quantizing a weight")?,
        None if method.needs_inputs() => {
            return Err(Error::compress(format!(
            "scale method `{method}` chooses clipping by the layer's output error and needs the \
                 layer's input statistics (calibration data); none were given"
        )))
        }
        None => {}
    }
    Ok(grid)
}

/// The matrix's values with pruned ones (`keep` false) as zeros: zero is in every range and quantizes
/// to exactly zero.
pub(crate) fn masked(m: &WeightMatrix, keep: Option<&[bool]>) -> Vec<f32> {
    match keep {
        Some(k) => m
            .data()
            .iter()
            .zip(k)
            .map(|(&x, &k)| if k { x } else { 0.0 })
            .collect(),
        None => m.data().to_vec(),
    }
}

/// The `(scale, zero point)` of every scale group of the row-major `rows × cols` matrix `data`, in
/// [`groups`] order (see the module docs for each method and granularity).
pub(crate) fn fit_params(
    grid: &IntGrid,
    data: &[f32],
    rows: usize,
    cols: usize,
    granularity: Granularity,
    method: ScaleMethod,
    inputs: Option<&InputStats>,
) -> Vec<(f32, f32)> {
    match granularity {
        Granularity::Tensor => vec![fit_tensor(grid, data, rows, cols, method, inputs)],
        Granularity::Channel => {
            let h = inputs.and_then(InputStats::hessian);
            fit_columns(grid, data, rows, cols, 0..cols, method, h)
        }
        Granularity::Group(g) => {
            let g = (g as usize).max(1);
            let per_row = cols.div_ceil(g);
            let mut out = vec![(1.0, 0.0); rows * per_row];
            for j in 0..per_row {
                let span = j * g..((j + 1) * g).min(cols);
                let h = inputs
                    .and_then(InputStats::hessian)
                    .map(|h| h.submatrix(span.start, span.start, span.len(), span.len()));
                for (r, p) in fit_columns(grid, data, rows, cols, span, method, h)
                    .into_iter()
                    .enumerate()
                {
                    out[r * per_row + j] = p;
                }
            }
            out
        }
    }
}

/// One `(scale, zero point)` per row for each row's values in the columns `span` of the row-major
/// `rows × cols` matrix `data`; `h` is the `span × span` block of `H` ([`ScaleMethod::Output`] without
/// it, for an embedding, makes the MSE choice: see the module docs).
pub(crate) fn fit_columns(
    grid: &IntGrid,
    data: &[f32],
    rows: usize,
    cols: usize,
    span: Range<usize>,
    method: ScaleMethod,
    h: Option<MatRef<'_, f32>>,
) -> Vec<(f32, f32)> {
    let row = |r: usize| &data[r * cols + span.start..r * cols + span.end];
    match (method, h) {
        (ScaleMethod::Output, Some(h)) => {
            fit_output_rows(grid, &(0..rows).map(row).collect::<Vec<_>>(), h)
        }
        (ScaleMethod::Output, None) => (0..rows)
            .map(|r| fit_group(grid, row(r), ScaleMethod::Mse))
            .collect(),
        (m, _) => (0..rows).map(|r| fit_group(grid, row(r), m)).collect(),
    }
}

/// The clip ratio of each row with the least `Δw H Δwᵀ` (`h` is the rows' `n × n` block of `H`).
fn fit_output_rows(grid: &IntGrid, rows: &[&[f32]], h: MatRef<'_, f32>) -> Vec<(f32, f32)> {
    let n = h.nrows();
    let ranges: Vec<(f32, f32)> = rows.iter().map(|xs| range(xs)).collect();
    let mut best: Vec<(f32, f32)> = ranges
        .iter()
        .map(|&(lo, hi)| grid.params(lo, hi, 1.0))
        .collect();
    let mut best_err = vec![f64::INFINITY; rows.len()];
    let (qmin, qmax) = grid.bounds();
    // From ratio 1 down; a later ratio must be strictly better to win, so ties keep the larger range.
    for &ratio in MSE_CLIP_RATIOS.iter().rev() {
        let params: Vec<(f32, f32)> = ranges
            .iter()
            .map(|&(lo, hi)| grid.params(lo, hi, ratio))
            .collect();
        let delta = Mat::from_fn(rows.len(), n, |r, j| {
            let (s, z) = params[r];
            let x = rows[r][j];
            x - (code(x, s, z, qmin, qmax) - z) * s
        });
        for (r, e) in row_energies(delta.as_ref(), h).into_iter().enumerate() {
            if ranges[r].0 != ranges[r].1 && e < best_err[r] {
                best_err[r] = e;
                best[r] = params[r];
            }
        }
    }
    best
}

/// The one `(scale, zero point)` of a whole matrix.
fn fit_tensor(
    grid: &IntGrid,
    data: &[f32],
    rows: usize,
    cols: usize,
    method: ScaleMethod,
    inputs: Option<&InputStats>,
) -> (f32, f32) {
    let Some(stats) = inputs.filter(|_| method == ScaleMethod::Output) else {
        return fit_group(grid, data, method);
    };
    let (lo, hi) = range(data);
    let full = grid.params(lo, hi, 1.0);
    if lo == hi {
        return full;
    }
    let (qmin, qmax) = grid.bounds();
    let (mut best, mut best_err) = (full, f64::INFINITY);
    let mut delta = vec![0.0f32; data.len()];
    for &ratio in MSE_CLIP_RATIOS.iter().rev() {
        let (s, z) = grid.params(lo, hi, ratio);
        for (d, &x) in delta.iter_mut().zip(data) {
            *d = x - (code(x, s, z, qmin, qmax) - z) * s;
        }
        let err = stats.energy(&delta, rows, cols);
        if err < best_err {
            best_err = err;
            best = (s, z);
        }
    }
    best
}

/// `(min(min x, 0), max(max x, 0))`.
fn range(xs: &[f32]) -> (f32, f32) {
    xs.iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// Scale and zero point of one group of values by weight error (`Output` here means its MSE choice).
fn fit_group(grid: &IntGrid, xs: &[f32], method: ScaleMethod) -> (f32, f32) {
    let (lo, hi) = range(xs);
    let full = grid.params(lo, hi, 1.0);
    if method == ScaleMethod::MinMax || lo == hi {
        return full;
    }
    // From ratio 1 down; a later ratio must be strictly better to win, so ties keep the larger range.
    let (qmin, qmax) = grid.bounds();
    let mut best = full;
    let mut best_err = f64::INFINITY;
    for &ratio in MSE_CLIP_RATIOS.iter().rev() {
        let (s, z) = grid.params(lo, hi, ratio);
        let err = squared_error(xs, s, z, qmin, qmax);
        if err < best_err {
            best_err = err;
            best = (s, z);
        }
    }
    best
}

/// `Σ (x − x')²` over `xs` quantized with `(s, z)`: eight f32 lanes over blocks of 256 values, each
/// block's sum added in f64 (a fixed order, so the result is deterministic, and the loop vectorises).
fn squared_error(xs: &[f32], s: f32, z: f32, qmin: f32, qmax: f32) -> f64 {
    let err = |x: f32| {
        let d = x - (code(x, s, z, qmin, qmax) - z) * s;
        d * d
    };
    let mut total = 0.0f64;
    for block in xs.chunks(256) {
        let mut lanes = [0.0f32; 8];
        let mut chunks = block.chunks_exact(8);
        for c in &mut chunks {
            for (lane, &x) in lanes.iter_mut().zip(c) {
                *lane += err(x);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&x| err(x)).sum();
        total += f64::from(lanes.iter().sum::<f32>() + tail);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_have_the_documented_ranges() {
        let g = |b, s| IntGrid::new(b, s).unwrap().qrange();
        assert_eq!(g(8, QuantScheme::Symmetric), (-127, 127));
        assert_eq!(g(4, QuantScheme::Symmetric), (-7, 7));
        assert_eq!(g(2, QuantScheme::Symmetric), (-1, 1));
        assert_eq!(g(8, QuantScheme::Asymmetric), (0, 255));
        assert_eq!(g(2, QuantScheme::Asymmetric), (0, 3));
        assert!(IntGrid::new(1, QuantScheme::Symmetric).is_err());
        assert!(IntGrid::new(9, QuantScheme::Asymmetric).is_err());
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        for (v, r) in [
            (2.5f32, 2.0f32),
            (3.5, 4.0),
            (-2.5, -2.0),
            (-3.5, -4.0),
            (0.49999997, 0.0),
            (1.5000001, 2.0),
            (-0.7, -1.0),
            (4_194_303.5, 4_194_304.0),
        ] {
            assert_eq!(round_even(v), r, "{v}");
            assert_eq!(round_even(v), v.round_ties_even(), "{v}");
        }
        // Far outside the grid, codes clamp instead of overflowing.
        assert_eq!(code(1e30, 1e-30, 3.0, 0.0, 15.0), 15.0);
        assert_eq!(code(-1e30, 1e-30, 3.0, 0.0, 15.0), 0.0);
    }

    #[test]
    fn clip_ratios_cover_half_to_one() {
        assert_eq!(MSE_CLIP_RATIOS[0], 0.5);
        assert_eq!(MSE_CLIP_RATIOS[20], 1.0);
        assert!(MSE_CLIP_RATIOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn groups_are_ragged_at_the_row_end() {
        let g = groups(2, 5, Granularity::Group(2));
        assert_eq!(g, vec![0..2, 2..4, 4..5, 5..7, 7..9, 9..10]);
        assert_eq!(groups(2, 5, Granularity::Channel), vec![0..5, 5..10]);
        assert_eq!(groups(2, 5, Granularity::Tensor), vec![0..10]);
    }

    #[test]
    fn zero_is_exact_and_extremes_within_half_a_step() {
        let m = WeightMatrix::new(1, 4, vec![-1.0, 0.0, 0.5, 3.0]).unwrap();
        for scheme in [QuantScheme::Symmetric, QuantScheme::Asymmetric] {
            let q = QuantizedWeight::from_matrix(
                &m,
                8,
                scheme,
                Granularity::Tensor,
                ScaleMethod::MinMax,
                None,
            )
            .unwrap();
            let v = q.dequantize_values();
            assert_eq!(v[1], 0.0, "{scheme}");
            // Symmetric: max |x| is a grid point. Asymmetric: the zero point is rounded to a code, which
            // shifts the grid by at most half a step.
            let tol = match scheme {
                QuantScheme::Symmetric => 1e-6,
                QuantScheme::Asymmetric => q.scales()[0] / 2.0 + 1e-6,
            };
            assert!((v[3] - 3.0).abs() <= tol, "{scheme}: {v:?}");
            assert!(
                (v[0] + 1.0).abs() <= q.scales()[0] / 2.0 + 1e-6,
                "{scheme}: {v:?}"
            );
        }
    }
}
