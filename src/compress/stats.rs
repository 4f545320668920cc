//! # Layer input statistics
//!
//! A compressible layer maps inputs `x` (one row of `X` per sample, token or output pixel) to
//! `y = W x`. Replacing `W` by `W′` changes its outputs on those inputs by `X ΔWᵀ` (`ΔW = W − W′`), and
//!
//! ```text
//! ‖X ΔWᵀ‖²_F = trace(ΔW H ΔWᵀ) = Σ_rows Δw H Δwᵀ,     H = XᵀX.
//! ```
//!
//! So a layer's calibration inputs are needed once, to accumulate `H`; afterwards the output error of
//! any compressed weight, the output-error clipping of [`ScaleMethod::Output`](super::ScaleMethod) and
//! GPTQ's error compensation ([`super::gptq`]) all work from `H` alone. [`InputStats`] is that
//! statistic for one layer; [`InputAccumulator`] builds it from captured inputs (the capture itself is
//! the model's: [`crate::model::capture_input_stats`]).
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
//!   often each row of the table was looked up: only those counts are kept ([`InputStats::row_counts`]);
//!   the output error is `Σ_r count_r ‖ΔW_r‖²` (rows of the matrix view are the table's rows).
//!
//! **Precision and memory**: each batch's `XᵀX` is computed in f64 and added into an f32 `H` (the
//! statistics of a 3072-input layer are 36 MB). Products with `H` ([`InputStats::energy`]) run in f32
//! with the final sums in f64.
//!
//! ## References
//!
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990 (second-order saliency; with a
//!   squared-error loss on a layer's outputs its Hessian is `H = XᵀX`).
//! - E. Frantar, D. Alistarh, "Optimal Brain Compression", NeurIPS 2022, and E. Frantar et al.,
//!   "GPTQ", ICLR 2023 (the layer-wise objective `‖W X − W′ X‖²`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use crate::error::{Error, Result};
use crate::space::{LayerInfo, LayerKind};

/// The input statistics of every layer of a model, by layer name. Layers that read the same input
/// tensor (a transformer block's query, key and value) share one [`InputStats`].
pub type LayerInputs = HashMap<String, Arc<InputStats>>;

/// The second moment of one layer's calibration inputs.
#[derive(Debug)]
pub struct InputStats {
    moment: Moment,
    /// Rows of `X` accumulated (samples, tokens or output pixels).
    samples: usize,
    /// GPTQ's prepared factor of `H⁻¹`, made once per options and shared by every format
    /// ([`super::gptq`]).
    pub(crate) prepared: Mutex<Option<Arc<super::gptq::Prepared>>>,
}

#[derive(Clone, Debug)]
enum Moment {
    /// `H = XᵀX`, `in × in` (linear; conv2d through im2col).
    Full(Mat<f32>),
    /// The diagonal of `H` for one-hot inputs: how often each row of an embedding was looked up.
    Rows(Vec<f64>),
}

impl InputStats {
    /// Statistics from a given `H` (square, symmetric positive semi-definite; not checked beyond its
    /// shape and finiteness) accumulated from `samples` rows.
    pub fn from_hessian(h: Mat<f32>, samples: usize) -> Result<InputStats> {
        if h.nrows() != h.ncols() {
            return Err(Error::compress(format!(
                "input statistics need a square H, got {}×{}",
                h.nrows(),
                h.ncols()
            )));
        }
        for j in 0..h.ncols() {
            for i in 0..h.nrows() {
                if !h[(i, j)].is_finite() {
                    return Err(Error::compress(format!(
                        "H[{i}, {j}] is {}: input statistics must be finite",
                        h[(i, j)]
                    )));
                }
            }
        }
        Ok(InputStats::new(Moment::Full(h), samples))
    }

    /// Statistics of an embedding from how often each of its rows was looked up.
    pub fn from_row_counts(counts: Vec<f64>) -> Result<InputStats> {
        if let Some(c) = counts.iter().find(|c| !(c.is_finite() && **c >= 0.0)) {
            return Err(Error::compress(format!(
                "a look-up count of {c}: counts are finite and not negative"
            )));
        }
        let samples = counts.iter().sum::<f64>() as usize;
        Ok(InputStats::new(Moment::Rows(counts), samples))
    }

    fn new(moment: Moment, samples: usize) -> InputStats {
        InputStats {
            moment,
            samples,
            prepared: Mutex::new(None),
        }
    }

    /// Rows of `X` the statistics were accumulated from.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// `H` (`in × in`), for linear and convolution layers.
    pub fn hessian(&self) -> Option<MatRef<'_, f32>> {
        match &self.moment {
            Moment::Full(h) => Some(h.as_ref()),
            Moment::Rows(_) => None,
        }
    }

    /// How often each row was looked up, for embeddings.
    pub fn row_counts(&self) -> Option<&[f64]> {
        match &self.moment {
            Moment::Rows(c) => Some(c),
            Moment::Full(_) => None,
        }
    }

    /// Whether these statistics fit a `rows × cols` weight matrix (`H` is `cols × cols`; an
    /// embedding's counts are one per row); an error names `what` otherwise.
    pub(crate) fn check_fits(&self, rows: usize, cols: usize, what: &str) -> Result<()> {
        let (n, axis, want) = match &self.moment {
            Moment::Full(h) => (h.ncols(), "columns", cols),
            Moment::Rows(c) => (c.len(), "rows", rows),
        };
        if n != want {
            return Err(Error::compress(format!(
                "{what}: input statistics of size {n} do not fit a {rows}×{cols} weight ({axis} {want})"
            )));
        }
        Ok(())
    }

    /// `trace(D H Dᵀ)` for a row-major `rows × cols` matrix `D` (for an embedding,
    /// `Σ_r count_r ‖D_r‖²`): the squared output change of a weight change `D`.
    pub fn energy(&self, d: &[f32], rows: usize, cols: usize) -> f64 {
        debug_assert_eq!(d.len(), rows * cols);
        match &self.moment {
            Moment::Full(h) => {
                let dm = Mat::from_fn(rows, cols, |i, j| d[i * cols + j]);
                row_energies(dm.as_ref(), h.as_ref()).iter().sum()
            }
            Moment::Rows(counts) => counts
                .iter()
                .zip(d.chunks(cols.max(1)))
                .filter(|(&c, _)| c > 0.0)
                .map(|(&c, row)| c * row.iter().map(|&v| f64::from(v * v)).sum::<f64>())
                .sum(),
        }
    }
}

/// `d_r H d_rᵀ` for every row `d_r` of `d` (`rows × n`, `h` is `n × n`): one f32 product `D H`, then
/// each row's dot product summed in f64.
pub(crate) fn row_energies(d: MatRef<'_, f32>, h: MatRef<'_, f32>) -> Vec<f64> {
    let mut dh = Mat::<f32>::zeros(d.nrows(), d.ncols());
    matmul(dh.as_mut(), Accum::Replace, d, h, 1.0f32, Par::Seq);
    let mut out = vec![0.0f64; d.nrows()];
    for j in 0..d.ncols() {
        for (i, o) in out.iter_mut().enumerate() {
            *o += f64::from(dh[(i, j)] * d[(i, j)]);
        }
    }
    out
}

/// Statistics being accumulated from a layer's captured inputs.
#[derive(Debug)]
pub struct InputAccumulator {
    name: String,
    kind: LayerKind,
    shape: Vec<usize>,
    moment: Moment,
    samples: usize,
}

impl InputAccumulator {
    /// An empty accumulator for `info`'s layer (its kind and weight shape decide what an input is).
    pub fn new(info: &LayerInfo) -> Result<InputAccumulator> {
        let Some((&rows, rest)) = info.shape.split_first() else {
            return Err(Error::compress(format!(
                "layer `{}` has a scalar weight; input statistics need a matrix",
                info.name
            )));
        };
        let cols: usize = rest.iter().product();
        let moment = match info.kind {
            LayerKind::Embedding => Moment::Rows(vec![0.0; rows]),
            LayerKind::Linear | LayerKind::Conv2d => Moment::Full(Mat::zeros(cols, cols)),
        };
        Ok(InputAccumulator {
            name: info.name.clone(),
            kind: info.kind,
            shape: info.shape.clone(),
            moment,
            samples: 0,
        })
    }

    fn error(&self, message: String) -> Error {
        Error::compress(format!("layer `{}`: {message}", self.name))
    }

    /// Adds one captured input, as the model's forward hands it to the layer (see the module docs).
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        if self.kind == LayerKind::Embedding {
            return self.add_ids(x);
        }
        let x_rows = input_rows(&self.name, self.kind, &self.shape, x)?;
        let mut xtx = Mat::<f64>::zeros(x_rows.ncols(), x_rows.ncols());
        matmul(
            xtx.as_mut(),
            Accum::Replace,
            x_rows.transpose(),
            x_rows.as_ref(),
            1.0,
            Par::Seq,
        );
        let Moment::Full(h) = &mut self.moment else {
            unreachable!("linear and conv2d layers accumulate a full moment");
        };
        for j in 0..h.ncols() {
            for i in 0..h.nrows() {
                h[(i, j)] = (f64::from(h[(i, j)]) + xtx[(i, j)]) as f32;
            }
        }
        self.samples += x_rows.nrows();
        Ok(())
    }

    /// Counts the looked-up rows of an embedding.
    fn add_ids(&mut self, x: &Tensor) -> Result<()> {
        let ids = x.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let (name, rows) = (&self.name, self.shape[0]);
        let Moment::Rows(counts) = &mut self.moment else {
            unreachable!("an embedding accumulates row counts");
        };
        for &id in &ids {
            let c = counts.get_mut(id as usize).ok_or_else(|| {
                Error::compress(format!(
                    "layer `{name}`: id {id} is outside the table's {rows} rows"
                ))
            })?;
            *c += 1.0;
        }
        self.samples += ids.len();
        Ok(())
    }

    /// Rows of `X` added so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The statistics; an error if no input was added.
    pub fn finish(self) -> Result<InputStats> {
        if self.samples == 0 {
            return Err(self.error(
                "no calibration input reached this layer; its input statistics are empty".into(),
            ));
        }
        Ok(InputStats::new(self.moment, self.samples))
    }
}

/// The rows of `X` for one captured input `x` of the linear or conv2d layer `name` whose weight has
/// `shape` (see the module docs): every leading dimension flattened for a linear layer, the im2col
/// matrix for a convolution. The sensitivity model's activation term uses the same rows as `H`.
pub(crate) fn input_rows(
    name: &str,
    kind: LayerKind,
    shape: &[usize],
    x: &Tensor,
) -> Result<Mat<f64>> {
    match kind {
        LayerKind::Conv2d => im2col(name, shape, x),
        LayerKind::Linear => {
            let cols: usize = shape[1..].iter().product();
            if x.dims().last() != Some(&cols) {
                return Err(Error::compress(format!(
                    "layer `{name}`: input of shape {:?} does not end in the weight's {cols} inputs",
                    x.dims()
                )));
            }
            let data = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let rows = data.len() / cols.max(1);
            Ok(Mat::from_fn(rows, cols, |i, j| data[i * cols + j]))
        }
        LayerKind::Embedding => Err(Error::compress(format!(
            "layer `{name}` is an embedding: its inputs are ids, not rows of X"
        ))),
    }
}

/// The im2col matrix of an input feature map `[n, c, h, w]` (stride 1, same padding).
fn im2col(name: &str, shape: &[usize], x: &Tensor) -> Result<Mat<f64>> {
    let error = |message: String| Error::compress(format!("layer `{name}`: {message}"));
    let (c_in, kh, kw) = match shape {
        &[_, c, kh, kw] => (c, kh, kw),
        s => return Err(error(format!("a conv2d weight has rank 4, got {s:?}"))),
    };
    let (n, c, h, w) = match x.dims() {
        &[n, c, h, w] => (n, c, h, w),
        d => return Err(error(format!("a conv2d input is [n, c, h, w], got {d:?}"))),
    };
    if c != c_in {
        return Err(error(format!(
            "input has {c} channels, the weight {c_in} per group: only ungrouped convolutions \
             are supported"
        )));
    }
    let (ph, pw) = ((kh / 2) as isize, (kw / 2) as isize);
    let data = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let mut out = Mat::<f64>::zeros(n * h * w, c * kh * kw);
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
