//! # A choice as the kernel that runs it
//!
//! [`deploy_kernel`] builds the [`LayerKernel`] that computes a matmul layer (a linear layer, or a
//! convolution on its im2col patches) under a [`Choice`] as it is deployed on candle's CPU backend:
//! what `mpsearch measure` times, and, for the GGML block formats, what the evaluator measures
//! quality on (so the quality of a q-format layer is that of the kernel that ships).
//!
//! | choice | kernel |
//! | --- | --- |
//! | q-formats (`q4_k`…) | [`LayerKernel::Quantized`]: candle's `QMatMul` on the weight quantized by candle's own quantizer ([`super::ggml::quantize`]); the kernel quantizes its input on the fly (Q8_K / Q8_0 blocks) |
//! | `f16` | [`LayerKernel::F16`]: the f16 weight, candle's f16 matmul |
//! | `bf16` | dense f32 of the bf16 values: candle has no bf16 gemm on CPU (it widens both operands) |
//! | `int*` | dense f32 of the dequantized weight: candle's only integer kernels are the q-formats' |
//! | `sparse<P>`, `N:M` | the format's kernel on the pruned weight, computed dense: candle has no sparse kernels |
//! | `rank<P>` | [`LayerKernel::Factored`]: two smaller kernels `A [out, k]` and `B [k, in]`, each in the format's kernel |
//! | `channels<P>` | [`LayerKernel::Rows`]: the kept rows only (of `W`, or of `A`), a smaller matrix whose outputs are scattered back; the removed outputs are exactly zero |
//! | `tucker<P>`, `cp<P>` | [`LayerKernel::Chain`]: the factors as a chain of candle `conv2d`s (1×1 → kh×kw → 1×1, or 1×1 → kh×1 → 1×kw depthwise → 1×1), each in f32 holding the format's (dequantized, or f16-rounded) values: candle has no integer convolution, and its f16 path is a matmul's |
//!
//! Without `rank<P>` or `channels<P>`, an f32, bf16 or int* layer's kernel is [`LayerKernel::Dense`]
//! in the weight's own shape ([`deploys_dense`]): the very tensor the evaluator runs (a convolution
//! then runs candle's `conv2d`).
//!
//! The steps are [`super::apply`]'s, in its order: factorize, decide what to remove, quantize. A block
//! format is quantized by candle from the unquantized (factorized) weight; the kept rows of a
//! `channels<P>` choice quantize to exactly the blocks they have in the full matrix (a block never
//! spans two rows), so `Rows` of a q-format is the masked matrix's `QMatMul` without its zero rows.
//! The evaluator runs that same `Rows` kernel rather than one `QMatMul` of the masked matrix: candle's
//! x86 kernels pick their path (repacked 16-row tiles or not) by the number of rows, and the two paths
//! round differently.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::apply::{compress_with, prepare, CompressSettings};
use super::convfactor;
use super::ggml;
use super::importance::WeightScores;
use super::matrix::WeightMatrix;
use super::stats::InputStats;
use crate::error::{Error, Result};
use crate::model::{ChainConv, LayerKernel};
use crate::space::{Choice, ConvFactor, GgmlFormat, Sparsity, WeightQuant};

/// Whether `choice` changes a layer's weight at all (else only its activations, or nothing).
pub fn changes_weight(choice: &Choice) -> bool {
    choice.weights != WeightQuant::F32
        || choice.sparsity != Sparsity::None
        || choice.rank.is_some()
        || choice.conv.is_some()
}

/// Whether the deployed kernel of a matmul layer under `choice` is the dense compressed weight in the
/// weight's own shape (the tensor the evaluator runs): f32, bf16 and int* formats without `rank<P>`
/// or `channels<P>`.
pub fn deploys_dense(choice: &Choice) -> bool {
    matches!(
        choice.weights,
        WeightQuant::F32 | WeightQuant::Bf16 | WeightQuant::Int { .. }
    ) && choice.rank.is_none()
        && choice.conv.is_none()
        && !matches!(choice.sparsity, Sparsity::Channels(_))
}

/// The kernel that computes a matmul layer's weight `w` (`[out, in]`, or a convolution's
/// `[out, c, kh, kw]`) under `choice` as deployed on candle (see the module docs), or `None` when the
/// choice leaves the weight as it is. `settings`, `inputs` and `scores` are [`compress_with`]'s
/// (integer formats; `scores` also rank the rows `channels<P>` removes); block formats take candle's
/// quantizer as is. A block format that does not fit a factor's
/// in-features is an error that says why.
pub fn deploy_kernel(
    w: &Tensor,
    choice: &Choice,
    settings: &CompressSettings,
    inputs: Option<&InputStats>,
    scores: Option<&WeightScores>,
) -> Result<Option<LayerKernel>> {
    if !changes_weight(choice) {
        return Ok(None);
    }
    if let Some(f) = choice.conv {
        return chain_kernel(w, choice, f, settings).map(Some);
    }
    let (factors, kept, leaf) = match choice.weights {
        WeightQuant::Ggml(g) => {
            if !matches!(choice.sparsity, Sparsity::None | Sparsity::Channels(_)) {
                return Err(Error::compress(format!(
                    "{choice}: a block format stores every weight of a block, so it takes no \
                     `sparse<P>` or `N:M` part"
                )));
            }
            // Unquantized factors; removed rows are dropped below, so the masks are not applied.
            let p = prepare(w, choice, settings, scores)?;
            (p.factors, p.kept_rows, Leaf::Block(g))
        }
        format => {
            let c = compress_with(w, choice, settings, inputs, scores)?;
            if deploys_dense(choice) {
                return Ok(Some(LayerKernel::Dense(c.to_tensor()?)));
            }
            let kept = match choice.sparsity {
                Sparsity::Channels(_) => Some(kept_rows(&c.masks()[0], c.factors()[0].cols())),
                _ => None,
            };
            let leaf = if format == WeightQuant::F16 {
                Leaf::F16
            } else {
                Leaf::Dense
            };
            (c.factors().to_vec(), kept, leaf)
        }
    };
    let mut factors = factors;
    let kept = match kept {
        Some(rows) => {
            factors[0] = select_rows(&factors[0], &rows)?;
            Some(rows)
        }
        None => None,
    };
    let kernel = match factors.as_slice() {
        [f] => leaf.kernel(f)?,
        [a, b] => LayerKernel::Factored {
            a: Box::new(leaf.kernel(a)?),
            b: Box::new(leaf.kernel(b)?),
        },
        _ => unreachable!("a compressed weight has one or two factors"),
    };
    Ok(Some(match kept {
        Some(rows) => {
            let out = rows.len();
            let idx: Vec<u32> = (0..out as u32).filter(|&r| rows[r as usize]).collect();
            LayerKernel::Rows {
                kept: Tensor::new(idx.as_slice(), &Device::Cpu)?,
                out,
                kernel: Box::new(kernel),
            }
        }
        None => kernel,
    }))
}

/// The chain of convolutions of a `tucker<P>` / `cp<P>` choice on the kernel `w`.
fn chain_kernel(
    w: &Tensor,
    choice: &Choice,
    f: ConvFactor,
    settings: &CompressSettings,
) -> Result<LayerKernel> {
    let c = compress_with(w, choice, settings, None, None)?;
    let shapes = convfactor::factor_shapes(f, w.dims(), c.factors());
    // Storage order is the last applied first.
    let convs = c
        .factors()
        .iter()
        .zip(shapes)
        .rev()
        .map(|(m, (shape, groups))| {
            Ok(ChainConv {
                weight: m.to_tensor(&shape)?,
                groups,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let p = c.product()?;
    Ok(LayerKernel::Chain {
        convs,
        dense: p.to_tensor(&[p.rows(), p.cols()])?,
    })
}

/// candle's `QMatMul` of `m` quantized to `g` by candle. Built as the quantized variant directly, so
/// that candle's `CANDLE_DEQUANTIZE_ALL` switch cannot turn it into a dense f32 matmul unseen.
pub fn block_kernel(m: &WeightMatrix, g: GgmlFormat) -> Result<LayerKernel> {
    let q = ggml::quantize(m, g)?;
    Ok(LayerKernel::Quantized(Arc::new(QMatMul::QTensor(
        Arc::new(q),
    ))))
}

/// The kernel of one factor matrix.
#[derive(Clone, Copy)]
enum Leaf {
    /// candle's `QMatMul` of the factor quantized to the block format.
    Block(GgmlFormat),
    /// The factor's values (f16-exact) as an f16 weight.
    F16,
    /// The factor's (dequantized) values as an f32 weight.
    Dense,
}

impl Leaf {
    fn kernel(self, m: &WeightMatrix) -> Result<LayerKernel> {
        let t = || m.to_tensor(&[m.rows(), m.cols()]);
        Ok(match self {
            Leaf::Block(g) => block_kernel(m, g)?,
            Leaf::F16 => LayerKernel::F16(t()?.to_dtype(DType::F16)?),
            Leaf::Dense => LayerKernel::Dense(t()?),
        })
    }
}

/// Which rows a per-value mask of a `· × cols` matrix keeps whole (a `channels<P>` mask: every row is
/// kept or removed as a whole).
fn kept_rows(mask: &[bool], cols: usize) -> Vec<bool> {
    mask.chunks(cols.max(1)).map(|row| row[0]).collect()
}

/// The rows of `m` that `keep` keeps, in order.
fn select_rows(m: &WeightMatrix, keep: &[bool]) -> Result<WeightMatrix> {
    let kept: Vec<usize> = (0..m.rows()).filter(|&r| keep[r]).collect();
    let mut data = Vec::with_capacity(kept.len() * m.cols());
    for &r in &kept {
        data.extend_from_slice(m.row(r));
    }
    WeightMatrix::new(kept.len(), m.cols(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    fn weight(rows: usize, cols: usize) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 0.2)
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn shape(k: &LayerKernel) -> Vec<usize> {
        match k {
            LayerKernel::Dense(t) | LayerKernel::F16(t) => t.dims().to_vec(),
            LayerKernel::Quantized(q) => match q.as_ref() {
                QMatMul::QTensor(t) => t.shape().dims().to_vec(),
                _ => panic!("a dequantized QMatMul"),
            },
            _ => panic!("not a leaf kernel"),
        }
    }

    #[test]
    fn factors_and_kept_rows_are_smaller_matrices() {
        let w = weight(64, 512);
        let s = CompressSettings::default();
        let c: Choice = "q8_0+channels25+rank50".parse().unwrap();
        let Some(LayerKernel::Rows { kept, out, kernel }) =
            deploy_kernel(&w, &c, &s, None, None).unwrap()
        else {
            panic!("channels<P> builds kept rows")
        };
        assert_eq!((kept.dims(), out), (&[48][..], 64));
        let LayerKernel::Factored { a, b } = *kernel else {
            panic!("rank<P> builds two factors")
        };
        assert_eq!((shape(&a), shape(&b)), (vec![48, 32], vec![32, 512]));
        let c: Choice = "f16+rank50".parse().unwrap();
        let Some(LayerKernel::Factored { a, b }) = deploy_kernel(&w, &c, &s, None, None).unwrap()
        else {
            panic!("rank<P> builds two factors")
        };
        assert!(matches!(*a, LayerKernel::F16(_)) && matches!(*b, LayerKernel::F16(_)));
        let c: Choice = "int4-sym-channel+2:4".parse().unwrap();
        let k = deploy_kernel(&w, &c, &s, None, None).unwrap();
        assert!(matches!(k, Some(LayerKernel::Dense(t)) if t.dims() == [64, 512]));
        assert!(deploy_kernel(&w, &Choice::F32, &s, None, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_block_kernel_is_candles_qmatmul_and_removed_rows_are_zero() {
        let w = weight(64, 512);
        let x = weight(5, 512);
        let s = CompressSettings::default();
        let c: Choice = "q4_k+channels25".parse().unwrap();
        let k = deploy_kernel(&w, &c, &s, None, None).unwrap().unwrap();
        let y = k.matmul(&x).unwrap().to_vec2::<f32>().unwrap();
        // The masked matrix quantized by candle: the kept outputs are its outputs, the others zero.
        let keep =
            crate::compress::prune::channel_mask(&WeightMatrix::from_tensor(&w).unwrap(), 25)
                .unwrap();
        let mask = Tensor::new(
            keep.iter().map(|&k| u8::from(k)).collect::<Vec<_>>(),
            &Device::Cpu,
        )
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
        let masked = w.broadcast_mul(&mask).unwrap();
        let q = QMatMul::from_qtensor(
            candle_core::quantized::QTensor::quantize(&masked, ggml::dtype(GgmlFormat::Q4K))
                .unwrap(),
        )
        .unwrap();
        let want = q.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        for (r, (got, want)) in y.iter().zip(&want).enumerate() {
            for c in 0..64 {
                if keep[c] {
                    assert_eq!(got[c], want[c], "row {r} output {c}");
                } else {
                    assert_eq!(got[c], 0.0, "row {r} removed output {c}");
                }
            }
        }
        let bad: Choice = "q4_k+rank50".parse().unwrap();
        let msg = deploy_kernel(&w, &bad, &s, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("multiple of 256") && msg.contains("32"),
            "{msg}"
        );
    }
}
