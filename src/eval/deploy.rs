//! # What a deployed model runs, layer by layer
//!
//! [`CandleEvaluator::deploy_overrides`](super::CandleEvaluator::deploy_overrides) builds the real
//! compressed model of an assignment on candle; [`describe_deployment`] says, for each layer, what
//! was built — the kernel, its matrices' shapes, and where candle computes something other than the
//! notation's storage format (integer weights dequantized, sparsity computed dense), so that a
//! measured time is read for what it is: `QMatMul q4_k [384x1536]`, `f16 matmul [384x1536]`,
//! `288 of 384 rows: QMatMul q4_k [288x1536]`, `dense f32 matmul [384x1536]; 2:4 computed dense:
//! candle has no sparse kernels`.

use candle_core::quantized::QMatMul;
use candle_core::Tensor;
use serde::Serialize;

use crate::compress::ggml;
use crate::model::{LayerKernel, LayerOverride, Overrides};
use crate::space::{ActQuant, Assignment, Choice, GgmlFormat, LayerInfo, LayerKind};
use crate::space::{Sparsity, WeightQuant};

/// What the deployed model runs for one layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeployedLayer {
    /// The layer's name.
    pub name: String,
    /// Its choice in the assignment.
    pub choice: Choice,
    /// What was built, for people (`QMatMul q4_k [384x1536]`).
    pub built: String,
}

/// What `overrides` (as [`deploy_overrides`](super::CandleEvaluator::deploy_overrides) built them for
/// `a`) run for each of `layers`, in order.
pub fn describe_deployment(
    layers: &[LayerInfo],
    a: &Assignment,
    overrides: &Overrides,
) -> Vec<DeployedLayer> {
    layers
        .iter()
        .map(|l| {
            let choice = a.get(&l.name).copied().unwrap_or(Choice::F32);
            DeployedLayer {
                name: l.name.clone(),
                choice,
                built: describe_layer(l, &choice, overrides.get(&l.name)),
            }
        })
        .collect()
}

/// What one layer runs under `choice` with override `o`.
pub fn describe_layer(l: &LayerInfo, choice: &Choice, o: Option<&LayerOverride>) -> String {
    let kernel = o.and_then(|o| o.kernel.as_ref());
    let mut parts = vec![match (l.kind, kernel) {
        (LayerKind::Embedding, None) => format!("f32 look-up table {}", dims(&l.shape)),
        (LayerKind::Embedding, Some(_)) => format!(
            "dense f32 look-up table {} ({choice} values: a look-up reads rows, dequantized when \
             read, as llama.cpp's get_rows does)",
            dims(&l.shape)
        ),
        (LayerKind::Conv2d, None) => format!("f32 conv2d {}", dims(&l.shape)),
        (_, None) => format!("f32 matmul {}", dims(&l.shape)),
        (LayerKind::Conv2d, Some(k @ (LayerKernel::Dense(_) | LayerKernel::Chain { .. }))) => {
            describe_kernel(k)
        }
        (LayerKind::Conv2d, Some(k)) => format!("{} on im2col patches", describe_kernel(k)),
        (_, Some(k)) => describe_kernel(k),
    }];
    let lookup = l.kind == LayerKind::Embedding;
    match choice.weights {
        WeightQuant::Int { .. } if !lookup => parts.push(format!(
            "{} dequantized to f32: candle's only integer kernels are the q-formats'",
            choice.weights
        )),
        WeightQuant::Bf16 if !lookup => {
            parts.push("bf16 values in f32: candle has no bf16 gemm on CPU".into())
        }
        WeightQuant::Ggml(g) if !lookup => parts.push(format!(
            "input quantized on the fly to {} blocks by the kernel",
            activation_blocks(g)
        )),
        _ => {}
    }
    if matches!(
        choice.sparsity,
        Sparsity::Unstructured(_) | Sparsity::NM { .. }
    ) {
        parts.push(format!(
            "{} computed dense: candle has no sparse kernels",
            choice.sparsity
        ));
    }
    match choice.act {
        ActQuant::None => {}
        ActQuant::Int8Static => parts.push("input int8 quantize-dequantize (static range)".into()),
        ActQuant::Int8Dynamic => {
            parts.push("input int8 quantize-dequantize (dynamic ranges)".into())
        }
    }
    parts.join("; ")
}

/// What a kernel computes with: `QMatMul q4_k [384x1536]`, `f16 matmul [..]`, `dense f32 matmul [..]`
/// (`conv2d` for a convolution's own weight), `factored: A · B`, `K of N rows: …`.
pub fn describe_kernel(k: &LayerKernel) -> String {
    match k {
        LayerKernel::Dense(w) if w.rank() > 2 => format!("dense f32 conv2d {}", tensor_dims(w)),
        LayerKernel::Dense(w) => format!("dense f32 matmul {}", tensor_dims(w)),
        LayerKernel::F16(w) => format!("f16 matmul {}", tensor_dims(w)),
        LayerKernel::Quantized(q) => match q.as_ref() {
            QMatMul::QTensor(t) => {
                format!(
                    "QMatMul {} {}",
                    ggml_name(t.dtype()),
                    dims(t.shape().dims())
                )
            }
            QMatMul::Tensor(w) => format!("QMatMul dequantized to f32 {}", tensor_dims(w)),
            QMatMul::TensorF16(w) => format!("QMatMul dequantized to f16 {}", tensor_dims(w)),
        },
        LayerKernel::Emulated(t) => format!(
            "{} arithmetic in one f32 gemm {}",
            ggml_name(t.dtype()),
            dims(t.shape().dims())
        ),
        LayerKernel::Factored { a, b } => {
            format!("factored: {} · {}", describe_kernel(a), describe_kernel(b))
        }
        LayerKernel::Rows { kept, out, kernel } => format!(
            "{} of {out} rows: {}",
            kept.elem_count(),
            describe_kernel(kernel)
        ),
        LayerKernel::Chain { convs, .. } => {
            let steps: Vec<String> = convs
                .iter()
                .map(|c| {
                    let d = c.weight.dims();
                    let depthwise = if c.groups > 1 { " depthwise" } else { "" };
                    format!("{}x{}{depthwise} {}", d[2], d[3], tensor_dims(&c.weight))
                })
                .collect();
            format!(
                "chain of f32 conv2d: {} (factor values in the format, run in f32)",
                steps.join(" → ")
            )
        }
    }
}

/// The notation's name of candle's block type (`q4_k`), else candle's.
fn ggml_name(t: candle_core::quantized::GgmlDType) -> String {
    GgmlFormat::ALL
        .into_iter()
        .find(|g| ggml::dtype(*g) == t)
        .map_or_else(|| format!("{t:?}"), |g| g.name().to_string())
}

/// The blocks candle's kernel quantizes a q-format layer's input to (its dot-product partner).
fn activation_blocks(g: GgmlFormat) -> &'static str {
    match g {
        _ if g.is_k() => "Q8_K",
        GgmlFormat::Q4_1 | GgmlFormat::Q5_1 => "Q8_1",
        _ => "Q8_0",
    }
}

fn tensor_dims(t: &Tensor) -> String {
    dims(t.dims())
}

fn dims(d: &[usize]) -> String {
    let d: Vec<String> = d.iter().map(usize::to_string).collect();
    format!("[{}]", d.join("x"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerOverride;

    fn layer(name: &str, kind: LayerKind, shape: &[usize]) -> LayerInfo {
        LayerInfo {
            name: name.into(),
            kind,
            shape: shape.to_vec(),
            macs: 0,
            bias: false,
        }
    }

    #[test]
    fn each_layer_says_what_it_runs() {
        let table =
            Tensor::zeros((100, 8), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let dense = LayerOverride {
            kernel: Some(LayerKernel::Dense(table)),
            ..LayerOverride::default()
        };
        let emb = layer("emb", LayerKind::Embedding, &[100, 8]);
        let q4: Choice = "q4_k".parse().unwrap();
        assert_eq!(
            describe_layer(&emb, &q4, Some(&dense)),
            "dense f32 look-up table [100x8] (q4_k values: a look-up reads rows, dequantized when \
             read, as llama.cpp's get_rows does)"
        );
        let fc = layer("fc", LayerKind::Linear, &[8, 100]);
        assert_eq!(
            describe_layer(&fc, &Choice::F32, None),
            "f32 matmul [8x100]"
        );
        let act: Choice = "f32+act8-static".parse().unwrap();
        let o = LayerOverride {
            act: ActQuant::Int8Static,
            ..LayerOverride::default()
        };
        assert_eq!(
            describe_layer(&fc, &act, Some(&o)),
            "f32 matmul [8x100]; input int8 quantize-dequantize (static range)"
        );
        let bf: Choice = "bf16+sparse50".parse().unwrap();
        let w =
            Tensor::zeros((8, 100), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let o = LayerOverride {
            kernel: Some(LayerKernel::Dense(w)),
            ..LayerOverride::default()
        };
        assert_eq!(
            describe_layer(&fc, &bf, Some(&o)),
            "dense f32 matmul [8x100]; bf16 values in f32: candle has no bf16 gemm on CPU; \
             sparse50 computed dense: candle has no sparse kernels"
        );
    }
}
