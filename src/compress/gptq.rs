//! # GPTQ: rounding that compensates each column's error in the columns not yet rounded
//!
//! Round-to-nearest quantizes every weight on its own. GPTQ quantizes a layer's weight matrix one input
//! column at a time and, after each column, moves that column's rounding error onto the columns not yet
//! quantized, in the direction that the layer's input statistics `H = XᵀX` ([`InputStats`]) say
//! minimises the output error `trace(ΔW H ΔWᵀ)`. The steps, as the published algorithm (IST-DASLab
//! `gptq.py`, `fasterquant`) runs them:
//!
//! 1. **Dead inputs**: a column whose input is always zero (`H_ii = 0`) gets `H_ii = 1` and its weights
//!    are set to zero (they never reach the output on the calibration data).
//! 2. **Act-order** (optional, `act_order`): columns are processed by decreasing `H_ii` (ties by column
//!    index), so the inputs with the most energy are quantized first, while the most columns are
//!    left to absorb their error.
//! 3. **Dampening**: `H += damp · mean(diag H) · I` (default `damp` = 0.01), which keeps the inverse
//!    well conditioned. Should the Cholesky factorization still fail, the dampening is multiplied by 10
//!    (up to five times) before giving up.
//! 4. `U` = the upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), computed in f64 (faer) and kept in f32.
//! 5. Columns in blocks of 128 (lazy batch updates): for column `i`, `q = Q(w_i)`,
//!    `e = (w_i − q) / U_ii`, `w_j −= e · U_ij` for the later columns `j` of the block; after the
//!    block, the later blocks get `W[:, after] −= E · U[block, after]` in one product.
//!
//! **Scales** come from the chosen [`ScaleMethod`] (min/max, MSE or output error): per tensor and per
//! channel they are fitted once, on the whole weight, before the first column; per group, **when the
//! group's first column is reached**, on the group's current weights — as the reference does, that is
//! the weights as updated by the earlier *blocks* (the reference fits on its global `W`, which the
//! current block's column updates reach only when the block ends). With act-order the groups are
//! **static** (the reference's `static_groups`): fitted before the first column on the weight's own,
//! contiguous column groups, so a group's columns, quantized at different times, share the parameters
//! the stored format records. Scales are fitted after dead columns are zeroed (the reference fits
//! per-channel scales before), so the grid is not sized for weights that are then dropped.
//!
//! **Pruning masks** (chosen before quantization, see [`super::apply_choice`]): a pruned weight is
//! "quantized" to exactly zero inside the same loop, so its error `(w − 0) / U_ii` is compensated by the
//! columns after it, as SparseGPT compensates its pruned weights; unlike SparseGPT, the mask itself is
//! the one chosen before (by magnitude on the dense weight), not re-chosen inside the loop. Scales are
//! fitted on the kept weights only. Pruned weights stay exactly zero.
//!
//! With `H = I` (no correlation between inputs, equal energy) every off-diagonal `U_ij` is 0, no error
//! moves, and GPTQ returns exactly the round-to-nearest codes with the same scales.
//!
//! `U` depends only on `H` and the options, not on the format: it is computed once per layer and kept
//! with the layer's statistics, so the formats of a search share it.
//!
//! ## References
//!
//! - E. Frantar, S. Ashkboos, T. Hoefler, D. Alistarh, "GPTQ: Accurate Post-Training Quantization for
//!   Generative Pre-trained Transformers", ICLR 2023 (and IST-DASLab/gptq, `gptq.py`).
//! - E. Frantar, D. Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
//!   One-Shot", ICML 2023 (the same update for pruned weights).
//! - B. Hassibi, D. Stork, "Second order derivatives for network pruning: Optimal Brain Surgeon",
//!   NIPS 1992.

use std::sync::Arc;

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::{Deserialize, Serialize};

use super::matrix::WeightMatrix;
use super::quant::{
    check_format, code, fit_columns, fit_params, masked, IntGrid, QuantizedWeight, ScaleMethod,
};
use super::stats::InputStats;
use crate::error::{Error, Result};
use crate::space::{Granularity, QuantScheme};

/// Columns per lazy batch update.
pub const BLOCK: usize = 128;
/// The default dampening, as a fraction of the mean of `diag H`.
pub const DEFAULT_DAMP: f64 = 0.01;
/// Times the dampening is multiplied by 10 when `H` is not positive definite.
const DAMP_RETRIES: usize = 5;

/// How integer weights are rounded to their grid (`rtn`, `gptq`). Float formats are not affected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// Round to nearest, every weight on its own.
    #[default]
    Rtn,
    /// GPTQ: each column's error compensated in the columns after it (needs input statistics).
    Gptq(GptqOptions),
}

impl Rounding {
    /// GPTQ with the default options.
    pub fn gptq() -> Rounding {
        Rounding::Gptq(GptqOptions::default())
    }

    /// Whether this is round-to-nearest (the default).
    pub fn is_rtn(&self) -> bool {
        *self == Rounding::Rtn
    }

    /// Whether this rounding needs the layer's input statistics.
    pub fn needs_inputs(self) -> bool {
        matches!(self, Rounding::Gptq(_))
    }
}

impl std::fmt::Display for Rounding {
    /// `rtn`, `gptq` (default options), or `gptq(damp=0.05,act-order)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rounding::Rtn => f.write_str("rtn"),
            Rounding::Gptq(o) if *o == GptqOptions::default() => f.write_str("gptq"),
            Rounding::Gptq(o) => {
                write!(f, "gptq(damp={}", o.damp())?;
                if o.act_order {
                    f.write_str(",act-order")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// GPTQ's settings: dampening and act-order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GptqOptions {
    /// Dampening in millionths of the mean of `diag H` (an integer, so that settings hash exactly).
    damp_ppm: u32,
    /// Columns in order of decreasing `diag H`, with static groups.
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damp_ppm: (DEFAULT_DAMP * 1e6) as u32,
            act_order: false,
        }
    }
}

impl GptqOptions {
    /// Options with dampening `damp` (a fraction of the mean of `diag H`, in `0.000001..=1`, kept to
    /// the millionth) and act-order.
    pub fn new(damp: f64, act_order: bool) -> Result<GptqOptions> {
        if !(1e-6..=1.0).contains(&damp) {
            return Err(Error::compress(format!(
                "GPTQ dampening {damp} is not in 0.000001..=1 (a fraction of the mean diagonal of H; \
                 the default is {DEFAULT_DAMP})"
            )));
        }
        Ok(GptqOptions {
            damp_ppm: (damp * 1e6).round() as u32,
            act_order,
        })
    }

    /// The dampening, as a fraction of the mean of `diag H`.
    pub fn damp(&self) -> f64 {
        f64::from(self.damp_ppm) / 1e6
    }
}

/// What GPTQ needs from `H`, computed once per layer and options.
#[derive(Debug)]
pub struct Prepared {
    options: GptqOptions,
    /// The processing order: position `p` quantizes column `order[p]`.
    order: Vec<usize>,
    /// Columns whose input is always zero.
    dead: Vec<bool>,
    /// Upper Cholesky factor of `(H + λI)⁻¹`, rows and columns in processing order.
    u: Mat<f32>,
}

/// The prepared factor of `stats` for `options`: the one kept with the statistics, or computed and
/// kept (a layer keeps one: that of the last options asked for).
pub(crate) fn prepared(stats: &InputStats, options: GptqOptions) -> Result<Arc<Prepared>> {
    let lock = |s: &InputStats| s.prepared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(p) = lock(stats).filter(|p| p.options == options) {
        return Ok(p);
    }
    let h = stats
        .hessian()
        .ok_or_else(|| Error::compress("GPTQ needs a full H (linear or convolution inputs)"))?;
    let p = Arc::new(prepare(h, options)?);
    *stats.prepared.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&p));
    Ok(p)
}

/// Steps 1–4 of the module docs.
pub(crate) fn prepare(h: MatRef<'_, f32>, options: GptqOptions) -> Result<Prepared> {
    let n = h.nrows();
    let dead: Vec<bool> = (0..n).map(|i| h[(i, i)] == 0.0).collect();
    let diag = |i: usize| if dead[i] { 1.0 } else { f64::from(h[(i, i)]) };
    let mut order: Vec<usize> = (0..n).collect();
    if options.act_order {
        // Stable: equal diagonals keep their column order.
        order.sort_by(|&a, &b| diag(b).total_cmp(&diag(a)));
    }
    let hp = Mat::<f64>::from_fn(n, n, |i, j| {
        let (a, b) = (order[i], order[j]);
        if a == b {
            diag(a)
        } else {
            f64::from(h[(a, b)])
        }
    });
    let mean = (0..n).map(diag).sum::<f64>() / n.max(1) as f64;
    let mut damp = options.damp() * mean;
    for _ in 0..=DAMP_RETRIES {
        if let Some(u) = inverse_upper_factor(&hp, damp) {
            return Ok(Prepared {
                options,
                order,
                dead,
                u,
            });
        }
        damp *= 10.0;
    }
    Err(Error::compress(format!(
        "GPTQ: H + λI is not positive definite even with λ = {damp:e} ({n} inputs); are the \
         calibration inputs finite?"
    )))
}

/// `U` with `(H + damp·I)⁻¹ = UᵀU`, `None` if a factorization fails.
fn inverse_upper_factor(h: &Mat<f64>, damp: f64) -> Option<Mat<f32>> {
    let n = h.nrows();
    let mut hd = h.clone();
    for i in 0..n {
        hd[(i, i)] += damp;
    }
    let inv = hd.llt(Side::Lower).ok()?.inverse();
    let l = inv.llt(Side::Lower).ok()?;
    let l = l.L();
    let u = Mat::<f32>::from_fn(n, n, |i, j| l[(j, i)] as f32);
    (0..n)
        .all(|i| u[(i, i)].is_finite() && u[(i, i)] > 0.0)
        .then_some(u)
}

/// One integer format and how to fit its scales.
pub(crate) struct Format {
    pub bits: u8,
    pub scheme: QuantScheme,
    pub granularity: Granularity,
    pub method: ScaleMethod,
}

/// GPTQ of the matrix `m` (dense, before masking) to `format`, with the pruning mask `keep` applied
/// inside the loop, from the layer's statistics (`H` of `m`'s columns) and their prepared factor.
pub(crate) fn quantize(
    m: &WeightMatrix,
    format: &Format,
    keep: Option<&[bool]>,
    stats: &InputStats,
    prep: &Prepared,
) -> Result<QuantizedWeight> {
    let grid = check_format(
        m,
        format.bits,
        format.scheme,
        format.granularity,
        format.method,
        keep,
        Some(stats),
    )?;
    let (rows, cols) = (m.rows(), m.cols());
    if prep.order.len() != cols {
        return Err(Error::compress(format!(
            "GPTQ: a factor prepared for {} inputs cannot quantize a {rows}×{cols} weight",
            prep.order.len()
        )));
    }
    let mut run = Run::new(m, keep, &grid, format, stats, prep);
    for start in (0..cols).step_by(BLOCK) {
        run.block(start..(start + BLOCK).min(cols));
    }
    Ok(QuantizedWeight::from_parts(
        &grid,
        format.granularity,
        rows,
        cols,
        run.codes,
        &run.params,
    ))
}

/// The state of one GPTQ run.
struct Run<'a> {
    grid: &'a IntGrid,
    format: &'a Format,
    stats: &'a InputStats,
    prep: &'a Prepared,
    keep: Option<&'a [bool]>,
    rows: usize,
    cols: usize,
    /// The weights, columns in processing order (`w[:, p]` is column `order[p]`), as updated so far.
    w: Mat<f32>,
    /// `(scale, zero point)` per scale group, in [`super::quant::groups`] order.
    params: Vec<(f32, f32)>,
    /// Row-major stored codes.
    codes: Vec<u8>,
    /// Group parameters are fitted when a group's first column is reached (else: all at the start).
    lazy_groups: bool,
}

impl<'a> Run<'a> {
    fn new(
        m: &WeightMatrix,
        keep: Option<&'a [bool]>,
        grid: &'a IntGrid,
        format: &'a Format,
        stats: &'a InputStats,
        prep: &'a Prepared,
    ) -> Run<'a> {
        let (rows, cols) = (m.rows(), m.cols());
        let mut data = m.data().to_vec();
        for r in 0..rows {
            for (c, &dead) in prep.dead.iter().enumerate() {
                if dead {
                    data[r * cols + c] = 0.0;
                }
            }
        }
        let zeroed = WeightMatrix::new(rows, cols, data).unwrap_or_else(|_| m.clone());
        let lazy_groups =
            matches!(format.granularity, Granularity::Group(_)) && !prep.options.act_order;
        let params = if lazy_groups {
            let per_row = match format.granularity {
                Granularity::Group(g) => cols.div_ceil((g as usize).max(1)),
                _ => 1,
            };
            vec![(1.0, 0.0); rows * per_row]
        } else {
            let data = masked(&zeroed, keep);
            fit_params(
                grid,
                &data,
                rows,
                cols,
                format.granularity,
                format.method,
                Some(stats),
            )
        };
        let w = Mat::from_fn(rows, cols, |r, p| zeroed.data()[r * cols + prep.order[p]]);
        Run {
            grid,
            format,
            stats,
            prep,
            keep,
            rows,
            cols,
            w,
            params,
            codes: vec![0u8; rows * cols],
            lazy_groups,
        }
    }

    /// Quantizes the columns at positions `span` and updates the columns after it.
    fn block(&mut self, span: std::ops::Range<usize>) {
        let (rows, count) = (self.rows, span.len());
        let mut w1 = self.w.submatrix(0, span.start, rows, count).to_owned();
        let mut err = Mat::<f32>::zeros(rows, count);
        for i in 0..count {
            let p = span.start + i;
            let col = self.prep.order[p];
            if self.lazy_groups {
                self.fit_group_at(col);
            }
            let d = self.prep.u[(p, p)];
            let e_i = err.col_as_slice_mut(i);
            for (r, (&x, e)) in w1.col_as_slice(i).iter().zip(e_i.iter_mut()).enumerate() {
                let q = self.quantize_one(r, col, x);
                *e = (x - q) / d;
            }
            // Column slices (faer matrices are column-major): the update vectorizes, where indexing
            // element by element did not (it was a fifth of a demo search's CPU time).
            let e_i = err.col_as_slice(i);
            for k in i + 1..count {
                let u = self.prep.u[(p, span.start + k)];
                if u != 0.0 {
                    for (w, &e) in w1.col_as_slice_mut(k).iter_mut().zip(e_i) {
                        *w -= e * u;
                    }
                }
            }
        }
        let after = self.cols - span.end;
        if after > 0 {
            matmul(
                self.w.as_mut().submatrix_mut(0, span.end, rows, after),
                Accum::Add,
                err.as_ref(),
                self.prep
                    .u
                    .as_ref()
                    .submatrix(span.start, span.end, count, after),
                -1.0f32,
                Par::Seq,
            );
        }
    }

    /// Stores the code of value `x` at (`r`, `col`) and returns its dequantized value (0 if pruned).
    fn quantize_one(&mut self, r: usize, col: usize, x: f32) -> f32 {
        let (s, z) = self.params[self.group_index(r, col)];
        let offset = self.grid.storage_offset() as f32;
        let (qmin, qmax) = self.grid.bounds();
        let kept = self.keep.is_none_or(|k| k[r * self.cols + col]);
        let c = if kept { code(x, s, z, qmin, qmax) } else { z };
        self.codes[r * self.cols + col] = (c + offset) as u8;
        (c - z) * s
    }

    fn group_index(&self, r: usize, col: usize) -> usize {
        match self.format.granularity {
            Granularity::Tensor => 0,
            Granularity::Channel => r,
            Granularity::Group(g) => {
                let g = (g as usize).max(1);
                r * self.cols.div_ceil(g) + col / g
            }
        }
    }

    /// Fits the group that starts at column `col` (natural order = processing order here), if one
    /// does, on the current weights of its columns (pruned ones as zeros).
    fn fit_group_at(&mut self, col: usize) {
        let Granularity::Group(g) = self.format.granularity else {
            return;
        };
        let g = (g as usize).max(1);
        if col % g != 0 {
            return;
        }
        let span = col..(col + g).min(self.cols);
        let width = span.len();
        let mut data = vec![0.0f32; self.rows * width];
        for r in 0..self.rows {
            for (j, c) in span.clone().enumerate() {
                let kept = self.keep.is_none_or(|k| k[r * self.cols + c]);
                data[r * width + j] = if kept { self.w[(r, c)] } else { 0.0 };
            }
        }
        let h = self
            .stats
            .hessian()
            .map(|h| h.submatrix(col, col, width, width));
        let fitted = fit_columns(
            self.grid,
            &data,
            self.rows,
            width,
            0..width,
            self.format.method,
            h,
        );
        let per_row = self.cols.div_ceil(g);
        for (r, p) in fitted.into_iter().enumerate() {
            self.params[r * per_row + col / g] = p;
        }
    }
}
