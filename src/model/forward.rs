//! The contract between models and everything that runs them: a [`Model`] owns its forward pass and
//! computes each compressible layer through a [`ForwardCtx`] ([`ForwardCtx::linear`],
//! [`ForwardCtx::conv2d`], [`ForwardCtx::lookup`]), so that compressed weights, real low-bit kernels,
//! activation quantization and input capture work the same way in every architecture.
//!
//! A layer's [`LayerOverride`] says how it runs differently from the f32 model: its input's activation
//! quantization, and the [`LayerKernel`] that computes its weight matrix — a dense f32 weight (the
//! evaluator's fake-quantized values), f16 weights on candle's f16 path, candle's quantized matmul
//! (`QMatMul`, for the GGML block formats: the kernel quantizes its input on the fly), two kernels for
//! a factorized weight, or a smaller matrix for removed output channels, its rows scattered back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor, TensorId};

use super::Inventory;
use crate::compress::{InputAccumulator, InputStats, LayerInputs};
use crate::data::Batch;
use crate::error::Result;
use crate::space::ActQuant;

/// How a layer's weight matrix is computed. Every kernel maps an input `[.., in]` to `[.., out]`
/// (`in` the weight's columns: `c·kh·kw` of a convolution, applied to its im2col patches).
#[derive(Clone, Debug)]
pub enum LayerKernel {
    /// An f32 weight of the original's shape (fake-quantized values), multiplied as the f32 model
    /// does (a convolution by candle's `conv2d`, a look-up by row selection).
    Dense(Tensor),
    /// An f16 weight `[out, in]`: the input cast to f16, candle's f16 matmul, the output cast back.
    F16(Tensor),
    /// candle's quantized matmul of a block-quantized `[out, in]` weight: the input is quantized on
    /// the fly to the format's dot-product partner (Q8_K or Q8_0 blocks).
    Quantized(Arc<QMatMul>),
    /// The arithmetic of [`LayerKernel::Quantized`] computed densely, as the evaluator runs a GGML
    /// block-format layer: the input quantized to the kernel's activation blocks with candle's
    /// quantizer arithmetic (Q8_0, Q8_1 or Q8_K, exactly as `QMatMul` quantizes it; the `q8` module)
    /// and dequantized, the weight's blocks dequantized, one f32 gemm. The same integer weights times
    /// the same integer activations with the same scales as the kernel; only f32 rounding differs —
    /// the order of the sums and, for Q4_1/Q5_1, the rounding of each dequantized `d·q + m` and the
    /// cancellation of its `m` against the input block sum (relative difference of the outputs
    /// ~1e-7, tested). Why: candle's quantized matmul is one dot product per output and
    /// input row, 4× slower than the f32 gemm on the 1 024-row inputs of a language model's windows.
    /// The weight is dequantized on every product (a pass over its blocks, a few percent of the
    /// product's time), so that a cached kernel holds the format's bytes, not an f32 copy.
    Emulated(Arc<QTensor>),
    /// A factorized weight `A·B`: `x → b → a`.
    Factored {
        a: Box<LayerKernel>,
        b: Box<LayerKernel>,
    },
    /// Removed output channels: `kernel` computes the kept rows only (`kept`, u32 indices into the
    /// `out` outputs, ascending); the others are exactly zero.
    Rows {
        kept: Tensor,
        out: usize,
        kernel: Box<LayerKernel>,
    },
    /// A convolution kernel factorized into a chain of smaller convolutions (`tucker<P>`, `cp<P>`),
    /// run one after another by candle's `conv2d` ([`ForwardCtx::conv2d`]). `dense` is the kernel the
    /// chain computes, `[out, in·kh·kw]`, for every use that is not a convolution (a matmul on im2col
    /// patches, [`LayerKernel::to_dense`]); it is not counted in [`LayerKernel::bytes`].
    Chain {
        convs: Vec<ChainConv>,
        dense: Tensor,
    },
}

/// One convolution of a [`LayerKernel::Chain`], in the order they run.
#[derive(Clone, Debug)]
pub struct ChainConv {
    /// `[out, in / groups, kh, kw]` (f32).
    pub weight: Tensor,
    /// 1, or the channels of a depthwise convolution.
    pub groups: usize,
}

impl LayerKernel {
    /// `x [.., in]` times the kernel's weight transposed: `[.., out]`.
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            LayerKernel::Dense(w) => dense_matmul(x, &w.flatten_from(1)?)?,
            LayerKernel::F16(w) => x
                .to_dtype(DType::F16)?
                .broadcast_matmul(&w.t()?)?
                .to_dtype(x.dtype())?,
            // candle's quantized matmul takes contiguous inputs only.
            LayerKernel::Quantized(q) => q.forward(&x.contiguous()?)?,
            LayerKernel::Emulated(q) => super::emulate::emulate(q, x)?,
            LayerKernel::Factored { a, b } => a.matmul(&b.matmul(x)?)?,
            LayerKernel::Chain { dense, .. } => dense_matmul(x, dense)?,
            LayerKernel::Rows { kept, out, kernel } => {
                let y = kernel.matmul(x)?;
                let last = y.rank() - 1;
                let mut dims = y.dims().to_vec();
                dims[last] = *out;
                Tensor::zeros(dims, y.dtype(), y.device())?.index_add(kept, &y, last)?
            }
        })
    }

    /// Bytes of the weights it holds: the tensors' values, a quantized weight's blocks, a `Rows`
    /// kernel's indices. (candle's x86 quantized matmul may also keep a repacked copy of a Q4K, Q6K or
    /// Q8_0 weight after its first product; that copy is candle's own and not counted.)
    pub fn bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match self {
            LayerKernel::Dense(t) | LayerKernel::F16(t) => tensor(t),
            LayerKernel::Quantized(q) => match q.as_ref() {
                QMatMul::QTensor(t) => t.storage_size_in_bytes(),
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor(t),
            },
            LayerKernel::Emulated(q) => q.storage_size_in_bytes(),
            LayerKernel::Factored { a, b } => a.bytes() + b.bytes(),
            LayerKernel::Rows { kept, kernel, .. } => tensor(kept) + kernel.bytes(),
            LayerKernel::Chain { convs, .. } => convs.iter().map(|c| tensor(&c.weight)).sum(),
        }
    }

    /// The kernel's weight as one dense f32 matrix `[out, in]`: dequantized, widened from f16, its
    /// factors multiplied out, removed rows zero.
    pub fn to_dense(&self) -> Result<Tensor> {
        Ok(match self {
            LayerKernel::Dense(w) => w.flatten_from(1)?,
            LayerKernel::F16(w) => w.to_dtype(DType::F32)?,
            LayerKernel::Quantized(q) => match q.as_ref() {
                QMatMul::QTensor(t) => super::emulate::dequantize(t)?,
                QMatMul::Tensor(t) => t.to_dtype(DType::F32)?,
                QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
            },
            LayerKernel::Emulated(q) => super::emulate::dequantize(q)?,
            LayerKernel::Factored { a, b } => a.to_dense()?.matmul(&b.to_dense()?)?,
            LayerKernel::Chain { dense, .. } => dense.clone(),
            LayerKernel::Rows { kept, out, kernel } => {
                let rows = kernel.to_dense()?;
                Tensor::zeros((*out, rows.dim(1)?), DType::F32, rows.device())?
                    .index_add(kept, &rows, 0)?
            }
        })
    }

    /// Rows `ids` (u32, any shape) of the kernel's weight as dense f32 values, `[ids.., in]`: what a
    /// look-up reads. A block-quantized weight dequantizes the gathered rows only, as every runtime's
    /// row look-up does (the same values as the rows of [`Self::to_dense`], without materialising a
    /// vocabulary-sized table).
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        let block_rows = |q: &QTensor| -> Result<Tensor> { Ok(q.embedding(ids)?) };
        match self {
            LayerKernel::Emulated(q) => block_rows(q),
            LayerKernel::Quantized(q) => match q.as_ref() {
                QMatMul::QTensor(t) => block_rows(t),
                _ => gather(&self.to_dense()?, ids),
            },
            LayerKernel::Dense(w) => gather(&w.flatten_from(1)?, ids),
            LayerKernel::F16(w) => Ok(gather(w, ids)?.to_dtype(DType::F32)?),
            LayerKernel::Factored { .. } | LayerKernel::Rows { .. } | LayerKernel::Chain { .. } => {
                gather(&self.to_dense()?, ids)
            }
        }
    }

    /// This kernel with every candle `QMatMul` of a block-quantized weight replaced by its dense
    /// emulation ([`LayerKernel::Emulated`], sharing the blocks): what the evaluator runs.
    pub fn emulated(&self) -> LayerKernel {
        match self {
            LayerKernel::Quantized(q) => match q.as_ref() {
                QMatMul::QTensor(t) => LayerKernel::Emulated(t.clone()),
                _ => self.clone(),
            },
            LayerKernel::Factored { a, b } => LayerKernel::Factored {
                a: Box::new(a.emulated()),
                b: Box::new(b.emulated()),
            },
            LayerKernel::Rows { kept, out, kernel } => LayerKernel::Rows {
                kept: kept.clone(),
                out: *out,
                kernel: Box::new(kernel.emulated()),
            },
            LayerKernel::Dense(_)
            | LayerKernel::F16(_)
            | LayerKernel::Emulated(_)
            | LayerKernel::Chain { .. } => self.clone(),
        }
    }

    /// The dense weight of a [`LayerKernel::Dense`] kernel.
    fn dense(&self) -> Option<&Tensor> {
        match self {
            LayerKernel::Dense(w) => Some(w),
            _ => None,
        }
    }
}

/// How one layer runs differently from the f32 model.
#[derive(Clone, Debug, Default)]
pub struct LayerOverride {
    /// What computes the layer's weight matrix instead of the original f32 weight.
    pub kernel: Option<LayerKernel>,
    /// Activation quantization of the layer's input.
    pub act: ActQuant,
    /// For [`ActQuant::Int8Static`]: the input range (min, max) calibrated on the calibration data.
    pub act_range: Option<(f32, f32)>,
    /// Training ([`crate::recover`]): the input's activation quantization passes gradients straight
    /// through (`x + (q(x) − x).detach()`: the forward value is `q(x)` up to one rounding, the
    /// gradient the identity). Off, the quantized input is a constant, as the evaluator runs it.
    pub straight_through: bool,
}

impl LayerOverride {
    /// The dense weight that replaces the original, if the kernel is [`LayerKernel::Dense`].
    pub fn dense_weight(&self) -> Option<&Tensor> {
        self.kernel.as_ref().and_then(LayerKernel::dense)
    }
}

/// Per-layer overrides by layer name; layers not listed run as in the f32 model.
pub type Overrides = HashMap<String, LayerOverride>;

/// What a forward pass does besides computing the output.
#[derive(Default)]
pub struct ForwardCtx<'a> {
    pub overrides: Option<&'a Overrides>,
    /// Layers whose inputs to record, and where they go (one tensor per call, in call order).
    pub capture: Option<&'a Mutex<HashMap<String, Vec<Tensor>>>>,
    /// Where to add up the wall-clock time of each layer's weight product ([`LayerTimes`]).
    pub timer: Option<&'a LayerTimes>,
}

/// The wall-clock seconds each layer's weight product took, summed over calls: its input's activation
/// quantization, then the kernel (a dense matmul or candle's `conv2d`, a quantized matmul, a
/// factorized or row-reduced product — with the im2col patches and the output layout of a non-dense
/// convolution) or the look-up; not the bias. What a forward pass spends outside them is the model's
/// non-matmul work (attention, norms, activations, residual adds, biases): `calibrate --model`
/// measures it as a forward's time minus its layers'.
#[derive(Debug, Default)]
pub struct LayerTimes(Mutex<HashMap<String, f64>>);

impl LayerTimes {
    fn add(&self, layer: &str, seconds: f64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(layer.to_string()).or_default() += seconds;
        }
    }

    /// The times recorded since the last call, by layer, and the timer emptied.
    pub fn take(&self) -> HashMap<String, f64> {
        self.0
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl ForwardCtx<'_> {
    /// Runs `product`, the weight product of `layer`, adding its time to the timer if there is one.
    fn timed<T>(&self, layer: &str, product: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.timer {
            None => product(),
            Some(t) => {
                let start = std::time::Instant::now();
                let out = product();
                t.add(layer, start.elapsed().as_secs_f64());
                out
            }
        }
    }

    fn kernel(&self, layer: &str) -> Option<&LayerKernel> {
        self.overrides
            .and_then(|o| o.get(layer))
            .and_then(|o| o.kernel.as_ref())
    }

    /// A dense override must keep the original weight's shape.
    fn dense<'t>(&'t self, layer: &str, original: &'t Tensor) -> Result<Option<&'t Tensor>> {
        let Some(kernel) = self.kernel(layer) else {
            return Ok(Some(original));
        };
        let Some(w) = kernel.dense() else {
            return Ok(None);
        };
        if w.dims() != original.dims() {
            return Err(crate::Error::Layer {
                layer: layer.to_string(),
                message: format!(
                    "the override weight has shape {:?}, the layer's weight has {:?}",
                    w.dims(),
                    original.dims()
                ),
            });
        }
        Ok(Some(w))
    }

    /// Rows `ids` of the weight `layer` computes with, as dense f32 values `[ids.., width]`: rows of
    /// `original` when nothing overrides it, else the kernel's rows ([`LayerKernel::rows`]: a block
    /// format dequantizes the gathered rows only). For a table that is both looked up and multiplied —
    /// a language model's embedding tied to its output head, one tensor and one layer — the look-up
    /// reads the rows of the very weight the head multiplies, dequantized as every runtime's row
    /// look-up does. Records no input.
    pub fn effective_rows(&self, layer: &str, ids: &Tensor, original: &Tensor) -> Result<Tensor> {
        let Some(k) = self.kernel(layer) else {
            return gather(original, ids);
        };
        let rows = k.rows(ids)?;
        let width = original.dim(1)?;
        if rows.dim(rows.rank() - 1)? != width {
            return Err(crate::Error::Layer {
                layer: layer.to_string(),
                message: format!(
                    "the override's rows have {} values, the layer's weight has {:?}",
                    rows.dim(rows.rank() - 1)?,
                    original.dims()
                ),
            });
        }
        Ok(rows)
    }

    /// A linear layer `y = x Wᵀ + b` (`W` stored `[out, in]`): its input through [`Self::input`],
    /// then its kernel (the original weight when not overridden), then the bias.
    pub fn linear(
        &self,
        layer: &str,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dense = self.dense(layer, weight)?;
        let y = self.timed(layer, || {
            let x = self.input(layer, x)?;
            match (dense, self.kernel(layer)) {
                (Some(w), _) => dense_matmul(&x, w),
                (None, Some(k)) => k.matmul(&x),
                (None, None) => {
                    unreachable!("`dense` is the original weight when nothing overrides it")
                }
            }
        })?;
        Ok(match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// A 2-d convolution of `x [n, c, h, w]` by `weight [out, c, kh, kw]` with square `padding` and
    /// `stride` (dilation 1, one group), plus the bias `[out]`. A dense kernel runs candle's
    /// `conv2d`; a chain of convolutions runs each by candle's `conv2d` ([`run_chain`]); any other
    /// runs on the im2col patches `[n·oh·ow, c·kh·kw]` (the weight's column order) and the result
    /// is laid back out as `[n, out, oh, ow]`.
    pub fn conv2d(
        &self,
        layer: &str,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        padding: usize,
        stride: usize,
    ) -> Result<Tensor> {
        let dense = self.dense(layer, weight)?;
        let y = self.timed(layer, || -> Result<Tensor> {
            let x = self.input(layer, x)?;
            Ok(match (dense, self.kernel(layer)) {
                (Some(w), _) => x.conv2d(w, padding, stride, 1, 1)?,
                (None, Some(LayerKernel::Chain { convs, .. })) => {
                    run_chain(&x, convs, padding, stride)?
                }
                (None, Some(k)) => {
                    let (kh, kw) = (weight.dim(2)?, weight.dim(3)?);
                    let (patches, oh, ow) = im2col(&x, kh, kw, padding, stride)?;
                    let (n, out) = (x.dim(0)?, weight.dim(0)?);
                    k.matmul(&patches)?
                        .reshape((n, oh, ow, out))?
                        .permute((0, 3, 1, 2))?
                        .contiguous()?
                }
                (None, None) => {
                    unreachable!("`dense` is the original weight when nothing overrides it")
                }
            })
        })?;
        Ok(match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => y,
        })
    }

    /// An embedding look-up: rows `ids` (u32, any shape) of `table [rows, width]`, or of its dense
    /// override. A look-up gathers rows and every runtime dequantizes the gathered rows, so it is
    /// computed on the dense values whatever the format; a non-dense kernel is an error.
    pub fn lookup(&self, layer: &str, ids: &Tensor, table: &Tensor) -> Result<Tensor> {
        // The input is the ids; activation quantization makes no sense for a look-up (search spaces
        // refuse it), and `input` refuses it for integer inputs rather than scramble the ids.
        let ids = self.input(layer, ids)?;
        let Some(t) = self.dense(layer, table)? else {
            return Err(crate::Error::Layer {
                layer: layer.to_string(),
                message: "an embedding look-up takes a dense table, not a matmul kernel".into(),
            });
        };
        self.timed(layer, || gather(t, &ids))
    }

    /// The input of `layer` as the layer sees it: recorded if asked, then activation-quantized if its
    /// override says so ([`quantize_activation`](crate::compress::quantize_activation): dynamic ranges
    /// per sample — per image of a `[n, c, h, w]` feature map, per vector along the last dimension
    /// otherwise, i.e. per token of a sequence; an integer input such as token ids is an error, never
    /// cast). Models call this on every compressible layer's input, in the shape the layer applies to.
    pub fn input(&self, layer: &str, x: &Tensor) -> Result<Tensor> {
        if let Some(cap) = self.capture {
            if let Ok(mut m) = cap.lock() {
                if let Some(v) = m.get_mut(layer) {
                    v.push(x.clone());
                }
            }
        }
        match self.overrides.and_then(|o| o.get(layer)) {
            Some(o) if o.act != ActQuant::None && o.straight_through => {
                let q = crate::compress::quantize_activation(&x.detach(), o.act, o.act_range)?;
                Ok((x + (q - x)?.detach())?)
            }
            Some(o) if o.act != ActQuant::None => {
                crate::compress::quantize_activation(x, o.act, o.act_range)
            }
            _ => Ok(x.clone()),
        }
    }
}

/// A chain of convolutions on `x [n, c, h, w]` with the layer's square `padding` and `stride`: the
/// padding of each dimension is added (as zeros) before the first convolution that extends over it
/// (before the first at all if none does: the 1×1 convolutions before it have no bias, so zeros stay
/// zeros and the result is the layer's); the stride is taken by the last convolution with a spatial
/// extent when it extends over both dimensions (Tucker-2's core), else that convolution runs at
/// stride 1 and its output is subsampled (CP's `1×kw`; a stride-`s` convolution is a stride-1
/// convolution's every `s`-th output).
pub fn run_chain(x: &Tensor, convs: &[ChainConv], padding: usize, stride: usize) -> Result<Tensor> {
    let extent =
        |c: &ChainConv| -> Result<(usize, usize)> { Ok((c.weight.dim(2)?, c.weight.dim(3)?)) };
    let extents = convs.iter().map(extent).collect::<Result<Vec<_>>>()?;
    let first_rows = extents.iter().position(|e| e.0 > 1).unwrap_or(0);
    let first_cols = extents.iter().position(|e| e.1 > 1).unwrap_or(0);
    let last = extents
        .iter()
        .rposition(|e| e.0 > 1 || e.1 > 1)
        .unwrap_or(0);
    let both = extents.get(last).is_some_and(|e| e.0 > 1 && e.1 > 1);
    let mut y = x.clone();
    for (j, c) in convs.iter().enumerate() {
        if padding > 0 && j == first_rows {
            y = y.pad_with_zeros(2, padding, padding)?;
        }
        if padding > 0 && j == first_cols {
            y = y.pad_with_zeros(3, padding, padding)?;
        }
        let s = if j == last && both { stride } else { 1 };
        y = y.conv2d(&c.weight, 0, s, 1, c.groups)?;
        if j == last && !both && stride > 1 {
            let device = y.device().clone();
            let every = |n: usize| Tensor::arange_step(0u32, n as u32, stride as u32, &device);
            let (h, w) = (y.dim(2)?, y.dim(3)?);
            y = y.index_select(&every(h)?, 2)?.index_select(&every(w)?, 3)?;
        }
    }
    Ok(y)
}

/// Rows `ids` (any shape) of the matrix `w [rows, width]`: `[ids.., width]`.
fn gather(w: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let flat = w.index_select(&ids.flatten_all()?, 0)?;
    let mut dims = ids.dims().to_vec();
    dims.push(w.dim(1)?);
    Ok(flat.reshape(dims)?)
}

/// `x Wᵀ` for a dense `[out, in]` weight: candle's plain matmul for a matrix input (what the f32
/// model always ran), broadcast over the leading dimensions otherwise.
fn dense_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(if x.rank() == 2 {
        x.matmul(&w.t()?)?
    } else {
        x.broadcast_matmul(&w.t()?)?
    })
}

/// The im2col patches of `x [n, c, h, w]` for a `kh × kw` kernel: `[n·oh·ow, c·kh·kw]`, columns in the
/// order of a `[out, c, kh, kw]` weight's flattened rows, and the output height and width.
///
/// Built in one pass into one buffer, rows filled in parallel (padding read as zeros, never
/// materialised): the patch matrix is 9× the input for a 3×3 kernel, and building it from candle
/// tensor ops (nine shifted copies, a stack, a five-dimensional transpose) took longer than the product
/// that follows — 2–3 ms of the demo's second convolution at batch 64 — and jumped with the
/// allocator's state.
fn im2col(
    x: &Tensor,
    kh: usize,
    kw: usize,
    padding: usize,
    stride: usize,
) -> Result<(Tensor, usize, usize)> {
    use rayon::prelude::*;
    let (n, c, h, w) = x.dims4()?;
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < kh || wp < kw || stride == 0 {
        return Err(crate::Error::Eval {
            message: format!(
                "a {kh}x{kw} convolution with stride {stride} does not fit a {h}x{w} input"
            ),
        });
    }
    let (oh, ow) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
    let dtype = x.dtype();
    let src: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let cols = c * kh * kw;
    let mut out = vec![0f32; n * oh * ow * cols];
    if cols > 0 {
        out.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(row, patch)| {
                let (b, oy, ox) = (row / (oh * ow), (row / ow) % oh, row % ow);
                for ch in 0..c {
                    let plane = &src[(b * c + ch) * h * w..][..h * w];
                    for dy in 0..kh {
                        // Input row of this tap, in unpadded coordinates; outside the input reads zero.
                        let Some(iy) = (oy * stride + dy).checked_sub(padding).filter(|&y| y < h)
                        else {
                            continue;
                        };
                        for dx in 0..kw {
                            if let Some(ix) =
                                (ox * stride + dx).checked_sub(padding).filter(|&v| v < w)
                            {
                                patch[(ch * kh + dy) * kw + dx] = plane[iy * w + ix];
                            }
                        }
                    }
                }
            });
    }
    let patches = Tensor::from_vec(out, (n * oh * ow, cols), x.device())?.to_dtype(dtype)?;
    Ok((patches, oh, ow))
}

/// A model whose forward pass the project owns.
pub trait Model: Send + Sync {
    /// Its compressible layers.
    fn inventory(&self) -> &Inventory;
    /// The original f32 weight of a compressible layer, in its stored shape.
    fn weight(&self, layer: &str) -> Result<Tensor>;
    /// Runs a batch: logits `[n, classes]` for a classifier, embeddings `[n, dim]` for an encoder,
    /// next-token logits `[tokens, vocab]` for a language model (one row per real token of the batch,
    /// sequence by sequence, position by position; see [`crate::model::llama`]).
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor>;
    /// Bytes that identify the model's weights and architecture (hashed into fingerprints).
    fn fingerprint(&self) -> blake3::Hash;
}

/// Runs `batch` through the f32 model and returns the input every compressible layer saw, by layer name
/// (one tensor per call, in call order), as [`ForwardCtx::input`] records it.
pub fn capture_inputs(model: &dyn Model, batch: &Batch) -> Result<HashMap<String, Vec<Tensor>>> {
    let capture = Mutex::new(
        model
            .inventory()
            .layers
            .iter()
            .map(|l| (l.name.clone(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = ForwardCtx {
        overrides: None,
        capture: Some(&capture),
        timer: None,
    };
    model.forward(batch, &ctx)?;
    capture.into_inner().map_err(|_| crate::Error::Eval {
        message: "input capture was poisoned by a panic in the forward pass".into(),
    })
}

/// The input statistics ([`InputStats`], `H = XᵀX`) of every compressible layer over `batches`,
/// accumulated batch by batch from [`capture_inputs`] (one batch's inputs are held at a time). Layers
/// that read the very same input tensors (a block's query, key and value) share one statistic, counted
/// once. A layer that never saw an input is an error.
pub fn capture_input_stats(model: &dyn Model, batches: &[Batch]) -> Result<LayerInputs> {
    capture_input_stats_with(model, batches, &mut |_, _| Ok(()))
}

/// [`capture_input_stats`], also handing every captured input of every layer (by layer name, shared
/// inputs to each layer that reads them) to `observe` during the same pass, for whatever else is
/// computed from the layers' calibration inputs (the evaluator's static activation ranges, the
/// sensitivity model's activation error).
pub fn capture_input_stats_with(
    model: &dyn Model,
    batches: &[Batch],
    observe: &mut dyn FnMut(&str, &Tensor) -> Result<()>,
) -> Result<LayerInputs> {
    let layers = &model.inventory().layers;
    // `source[i]`: the layer whose accumulator layer `i` shares (itself if none).
    let mut source: Vec<usize> = (0..layers.len()).collect();
    let mut acc: Vec<Option<InputAccumulator>> = layers
        .iter()
        .map(|l| InputAccumulator::new(l).map(Some))
        .collect::<Result<_>>()?;
    for (b, batch) in batches.iter().enumerate() {
        let mut captured = capture_inputs(model, batch)?;
        let ids: Vec<Vec<TensorId>> = layers
            .iter()
            .map(|l| {
                captured
                    .get(&l.name)
                    .map(|v| v.iter().map(Tensor::id).collect())
                    .unwrap_or_default()
            })
            .collect();
        if b == 0 {
            for i in 0..layers.len() {
                source[i] = (0..i)
                    .find(|&j| {
                        source[j] == j
                            && !ids[i].is_empty()
                            && ids[j] == ids[i]
                            && layers[j].kind == layers[i].kind
                            && layers[j].shape[1..] == layers[i].shape[1..]
                            && (layers[i].kind != crate::space::LayerKind::Embedding
                                || layers[j].shape == layers[i].shape)
                    })
                    .unwrap_or(i);
                if source[i] != i {
                    acc[i] = None;
                }
            }
        }
        for l in layers {
            for x in captured.get(&l.name).into_iter().flatten() {
                observe(&l.name, x)?;
            }
        }
        for (i, l) in layers.iter().enumerate() {
            let s = source[i];
            if s != i {
                if ids[i] != ids[s] {
                    return Err(crate::Error::compress(format!(
                        "layer `{}` read the same input as `{}` in the first calibration batch but \
                         not in batch {}: input statistics cannot be shared",
                        l.name,
                        layers[s].name,
                        b + 1
                    )));
                }
                continue;
            }
            if let Some(a) = acc[i].as_mut() {
                for x in captured.remove(&l.name).unwrap_or_default() {
                    a.add(&x)?;
                }
            }
        }
    }
    let mut done: Vec<Option<Arc<InputStats>>> = vec![None; layers.len()];
    for (i, a) in acc.into_iter().enumerate() {
        if let Some(a) = a {
            done[i] = Some(Arc::new(a.finish()?));
        }
    }
    Ok(layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((l.name.clone(), Arc::clone(done[source[i]].as_ref()?))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn seq(dims: &[usize], scale: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as f32 * 0.754_877).fract() - 0.5) * scale)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn im2col_kernels_compute_what_conv2d_computes() {
        let x = seq(&[2, 3, 7, 6], 2.0);
        let w = seq(&[5, 3, 3, 3], 0.3);
        let bias = seq(&[5], 1.0);
        for (padding, stride) in [(1, 1), (0, 1), (1, 2)] {
            let plain = ForwardCtx::default()
                .conv2d("c", &x, &w, Some(&bias), padding, stride)
                .unwrap();
            // The same weight as a factored kernel with an identity first factor runs the im2col path.
            let cols = 27;
            let eye = Tensor::eye(cols, DType::F32, &Device::Cpu).unwrap();
            let kernel = LayerKernel::Factored {
                a: Box::new(LayerKernel::Dense(w.flatten_from(1).unwrap())),
                b: Box::new(LayerKernel::Dense(eye)),
            };
            let o: Overrides = [(
                "c".to_string(),
                LayerOverride {
                    kernel: Some(kernel),
                    ..LayerOverride::default()
                },
            )]
            .into();
            let ctx = ForwardCtx {
                overrides: Some(&o),
                capture: None,
                timer: None,
            };
            let via = ctx
                .conv2d("c", &x, &w, Some(&bias), padding, stride)
                .unwrap();
            assert_eq!(via.dims(), plain.dims());
            assert!(
                max_diff(&via, &plain) < 1e-5,
                "padding {padding} stride {stride}"
            );
        }
    }

    #[test]
    fn every_kernel_materialises_the_matrix_it_multiplies_by() {
        let x = seq(&[3, 64], 1.0);
        let w = seq(&[6, 64], 0.5);
        let q =
            candle_core::quantized::QTensor::quantize(&w, candle_core::quantized::GgmlDType::Q8_0)
                .unwrap();
        let a = seq(&[6, 2], 0.7);
        let b = seq(&[2, 64], 0.9);
        let kept = Tensor::new(&[1u32, 4], &Device::Cpu).unwrap();
        let kernels = [
            LayerKernel::Dense(w.clone()),
            LayerKernel::F16(w.to_dtype(DType::F16).unwrap()),
            LayerKernel::Quantized(Arc::new(QMatMul::from_qtensor(q).unwrap())),
            LayerKernel::Factored {
                a: Box::new(LayerKernel::Dense(a)),
                b: Box::new(LayerKernel::Dense(b)),
            },
            LayerKernel::Rows {
                kept: kept.clone(),
                out: 6,
                kernel: Box::new(LayerKernel::Dense(w.index_select(&kept, 0).unwrap())),
            },
        ];
        for (i, k) in kernels.iter().enumerate() {
            let dense = k.to_dense().unwrap();
            assert_eq!(dense.dims(), [6, 64], "kernel {i}");
            // The f16 and quantized kernels also round their input (to f16, to Q8_0 blocks): close,
            // not exact.
            let tol = match i {
                1 => 5e-3,
                2 => 2e-2,
                _ => 1e-5,
            };
            let via = k.matmul(&x).unwrap();
            let plain = x.matmul(&dense.t().unwrap()).unwrap();
            assert!(
                max_diff(&via, &plain) < tol,
                "kernel {i}: {}",
                max_diff(&via, &plain)
            );
        }
        // A look-up's rows are the materialised matrix's rows, exactly (a block format
        // dequantizes the gathered rows only), in the ids' shape; the emulated kernel's too.
        let ids = Tensor::new(&[[5u32, 0], [2, 2]], &Device::Cpu).unwrap();
        let flat = ids.flatten_all().unwrap();
        for (i, k) in kernels.iter().chain([&kernels[2].emulated()]).enumerate() {
            let rows = k.rows(&ids).unwrap();
            assert_eq!(rows.dims(), [2, 2, 64], "kernel {i}");
            let want = k.to_dense().unwrap().index_select(&flat, 0).unwrap();
            assert_eq!(
                max_diff(&rows.reshape((4, 64)).unwrap(), &want),
                0.0,
                "kernel {i}"
            );
        }
        // No override: the original's rows.
        let ctx = ForwardCtx::default();
        let want = w
            .index_select(&flat, 0)
            .unwrap()
            .reshape((2, 2, 64))
            .unwrap();
        assert_eq!(
            max_diff(&ctx.effective_rows("t", &ids, &w).unwrap(), &want),
            0.0
        );
    }

    #[test]
    fn removed_rows_are_zero_and_kept_rows_exact() {
        let x = seq(&[4, 8], 1.0);
        let w = seq(&[6, 8], 0.5);
        let kept = [0u32, 2, 5];
        let idx = Tensor::new(&kept[..], &Device::Cpu).unwrap();
        let small = w.index_select(&idx, 0).unwrap();
        let k = LayerKernel::Rows {
            kept: idx,
            out: 6,
            kernel: Box::new(LayerKernel::Dense(small)),
        };
        let y = k.matmul(&x).unwrap();
        let full = x.matmul(&w.t().unwrap()).unwrap();
        let y = y.to_vec2::<f32>().unwrap();
        let full = full.to_vec2::<f32>().unwrap();
        for (r, f) in y.iter().zip(&full) {
            for c in 0..6 {
                let want = if kept.contains(&(c as u32)) {
                    f[c]
                } else {
                    0.0
                };
                assert!((r[c] - want).abs() < 1e-6, "{r:?} vs {f:?}");
            }
        }
    }
}
