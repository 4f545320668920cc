//! # The matrix view of a weight
//!
//! Every compression primitive works on a weight seen as a row-major f32 matrix with
//! `rows = dim 0` (output channels) and `cols = the product of the other dimensions` (inputs): a linear
//! `[out, in]` stays as it is, a convolution `[out, in, kh, kw]` becomes `[out, in·kh·kw]`, an embedding
//! `[vocab, dim]` stays as it is. This is the view the cost model uses
//! ([`LayerInfo::rows`](crate::space::LayerInfo::rows), [`LayerInfo::cols`](crate::space::LayerInfo::cols)).
//!
//! A [`WeightMatrix`] holds only finite values: every constructor checks, so quantizers can fit
//! scales and pruners can rank magnitudes without meeting a NaN.

use candle_core::{DType, Device, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use crate::error::{Error, Result};

/// A weight as a row-major `rows × cols` f32 matrix of finite values.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightMatrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl WeightMatrix {
    /// A matrix from row-major `data`; `data.len()` must be `rows · cols` and every value finite.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<WeightMatrix> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::compress(format!(
                "a {rows}×{cols} matrix needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::compress(format!(
                "weight value {} at row {}, column {} is not finite; only finite weights can be compressed",
                data[i],
                i / cols.max(1),
                i % cols.max(1)
            )));
        }
        Ok(WeightMatrix { rows, cols, data })
    }

    /// The matrix view of a tensor of rank ≥ 1 and any float dtype: `[dim 0, product of the rest]`
    /// (a rank-1 tensor of length n is n×1).
    pub fn from_tensor(w: &Tensor) -> Result<WeightMatrix> {
        let dims = w.dims();
        let Some((&rows, rest)) = dims.split_first() else {
            return Err(Error::compress(
                "a scalar (rank-0 tensor) has no matrix view; weights have rank 1 or more",
            ));
        };
        let cols = rest.iter().product();
        let data = w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        WeightMatrix::new(rows, cols, data)
    }

    /// The values as an f32 CPU tensor of `shape`, whose element count must be `rows · cols`.
    pub fn to_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, shape, &Device::Cpu)?)
    }

    /// Rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major values.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the matrix has no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of exactly-zero values.
    pub fn zeros(&self) -> usize {
        self.data.iter().filter(|&&v| v == 0.0).count()
    }

    /// Sets every value whose `keep` flag is false to exactly zero (`keep` is row-major, one flag per
    /// value).
    pub(crate) fn apply_mask(&mut self, keep: &[bool]) {
        debug_assert_eq!(keep.len(), self.data.len());
        for (v, &k) in self.data.iter_mut().zip(keep) {
            if !k {
                *v = 0.0;
            }
        }
    }

    /// The product `self · rhs` (`self.cols` must equal `rhs.rows`), computed by faer sequentially, so
    /// the result does not depend on the thread count.
    pub fn matmul(&self, rhs: &WeightMatrix) -> Result<WeightMatrix> {
        if self.cols != rhs.rows {
            return Err(Error::compress(format!(
                "cannot multiply a {}×{} matrix by a {}×{} matrix",
                self.rows, self.cols, rhs.rows, rhs.cols
            )));
        }
        let mut out = Mat::<f32>::zeros(self.rows, rhs.cols);
        matmul(
            out.as_mut(),
            Accum::Replace,
            self.to_faer(),
            rhs.to_faer(),
            1.0f32,
            Par::Seq,
        );
        WeightMatrix::from_faer(&out)
    }

    /// A faer copy (column-major).
    pub(crate) fn to_faer(&self) -> Mat<f32> {
        Mat::from_fn(self.rows, self.cols, |i, j| self.data[i * self.cols + j])
    }

    /// From a faer matrix (checks finiteness).
    pub(crate) fn from_faer(m: &Mat<f32>) -> Result<WeightMatrix> {
        let (rows, cols) = (m.nrows(), m.ncols());
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(m[(i, j)]);
            }
        }
        WeightMatrix::new(rows, cols, data)
    }
}
