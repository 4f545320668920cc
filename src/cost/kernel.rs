//! # Kernels: what a device runs for a choice
//!
//! **The notation is the contract** (DESIGN.md): a choice's arithmetic is exactly what its notation
//! names, the evaluator scores that arithmetic, and the cost model charges the device for it — its
//! kernel for that arithmetic, or the fallback it really uses. [`Kernel`] is that decision for one
//! weight matrix (one kernel launch) of a layer:
//!
//! | weights | activations | kernel |
//! |---|---|---|
//! | float (`f32`, `f16`, `bf16`) | float | the float kernel of the weights' precision, or what the device runs it as (`f16` on a core without fp16 arithmetic is widened and computed in f32) |
//! | float | `act8-*` | that float kernel, after a quantize–dequantize pass over the input (no integer kernel takes float weights; the evaluator computes exactly this: int8-valued activations times the float weights) |
//! | `int<b>` | float (weight-only) | the profile's weight-only kernel (`[weight_only]`: stored integer weights read as stored and dequantized inside the kernel, multiplied with float activations in its precision: XNNPACK's f32-qc8w/qc4w GEMMs, TensorRT's W8A16/W4A16); without one, the weights are **dequantized once into an f32 copy**, which the f32 kernel reads (what a runtime without such a kernel does: ONNX Runtime constant-folds `DequantizeLinear` on initializers, candle dequantizes) |
//! | `int<b>` | `act8-*` | the device's integer kernel (W×A8), of width b or the one it falls back to (narrower weights unpacked to it); on a bit-serial device, the overlay at w×8 binary passes; on a device with no integer kernel at all, the fallback float kernel on dequantized weights with a quantize–dequantize pass |
//! | GGML block format (`q4_k`…) | its activation blocks (`q8_k`, `q8_0`, `q8_1`), quantized on the fly by the kernel | the format's kernel (`[ggml]` rate), reading its exact block bytes; or the format the profile converts it to exactly; without either, the fallback float kernel on a dequantized copy (f32 unless the profile says otherwise) with a quantize–dequantize pass of the input to those blocks |
//!
//! Activation quantization (`act8-*`) applies to the **layer's input** only, as in the evaluator: the
//! second factor of a factorized layer multiplies the exact (float) intermediate, so it is charged as a
//! weight-only (or float) kernel whatever the activation part. A GGML block format is different: its
//! kernel quantizes whatever it multiplies, so both factors of `q4_k+rank50` multiply `q8_k` blocks.
//! An embedding's table is read by a row lookup that dequantizes the gathered rows (every runtime's
//! gather does, llama.cpp's `get_rows` included), so it never needs a dequantized copy. A float
//! precision the profile runs from a copy (`[fallback] bf16 = { copy = "f32" }`) is charged as that
//! copy, like dequantized integer weights.
//!
//! **N:M sparsity** is computed sparsely only by a kernel whose precision the profile lists for the
//! pattern (`[sparsity] nm` and `nm_precisions`); weight-only kernels, which dequantize in the kernel,
//! and row lookups compute dense. Elsewhere N:M saves stored bytes only: the device streams the dense
//! weights. Groups of M run along the input channels at a fixed kernel position; the ragged tail of
//! `in mod M` channels is stored and computed dense.

use std::fmt;

use serde::Serialize;

use super::model::CostModel;
use super::profile::Precision;
use crate::space::{ActQuant, GgmlFormat, Sparsity, WeightQuant};

/// Which kernel of the device computes one weight matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelPath {
    /// The float kernel of this precision, on float weights.
    Float(Precision),
    /// The integer kernel of this width (integer weights × int8 activations).
    Int(u8),
    /// A bit-serial overlay: `w`-bit weights × `a`-bit activations in `w·a` binary passes.
    BitSerial { w: u8, a: u8 },
    /// A weight-only kernel: integer weights read at `bits` bits, dequantized in the kernel and
    /// multiplied with float activations in `compute`.
    WeightOnly { bits: u8, compute: Precision },
    /// The kernel of this GGML block format: its blocks times activations it quantizes on the fly.
    /// The format of the weights, or one the device converts them to exactly at load.
    Ggml(GgmlFormat),
    /// No kernel for the stored weights: a dequantized (or, for float weights, widened) copy in this
    /// float precision, which the float kernel of that precision reads.
    Dequantized(Precision),
    /// An embedding's row lookup: the gathered rows are read as stored and dequantized.
    Lookup,
}

impl KernelPath {
    /// The precision the path computes in, for weights of precision `weights`.
    fn compute(&self, weights: Precision) -> Precision {
        match *self {
            KernelPath::Float(p)
            | KernelPath::Dequantized(p)
            | KernelPath::WeightOnly { compute: p, .. } => p,
            KernelPath::Int(k) => Precision::Int(k),
            KernelPath::BitSerial { w, .. } => Precision::Int(w),
            KernelPath::Ggml(g) => Precision::Ggml(g),
            KernelPath::Lookup => weights,
        }
    }
}

/// Why an N:M choice is computed dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NmDense {
    /// The device has no sparse kernel for this pattern.
    NoPattern,
    /// The device has one, but not at the precision the layer is computed in.
    NotAt(Precision),
    /// Weight-only kernels dequantize in the kernel and compute dense.
    WeightOnly,
    /// A row lookup reads rows, whatever their zeros.
    Lookup,
}

/// How an N:M choice is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NmCompute {
    /// At N/M of the dense work; `ragged`: a tail of `in mod M` input channels is computed dense.
    Sparse { ragged: bool },
    /// Dense, for this reason (the stored bytes still shrink).
    Dense(NmDense),
}

/// The kernel a device runs for one weight matrix of a layer choice, and the arithmetic it is charged
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    pub path: KernelPath,
    /// The weight values multiplied: the notation's weight format.
    pub weights: Precision,
    /// The activation values multiplied: int8 for `act8-*` on the layer's input, a GGML format's
    /// activation blocks ([`Precision::Q8`]) for its kernels, else the float precision the kernel
    /// multiplies in.
    pub acts: Precision,
    /// The N:M pattern of the choice and how it is computed; `None` without one.
    pub nm: Option<(u8, u8, NmCompute)>,
}

impl Kernel {
    /// The precision whose throughput the kernel runs at (for a bit-serial overlay, its weight width).
    pub fn compute(&self) -> Precision {
        self.path.compute(self.weights)
    }

    /// Whether quantized activations (int8, or a GGML format's blocks) are quantized and dequantized
    /// around a float kernel.
    pub fn qdq(&self) -> bool {
        matches!(self.acts, Precision::Int(_) | Precision::Q8(_))
            && matches!(self.path, KernelPath::Float(_) | KernelPath::Dequantized(_))
    }

    /// Whether the N:M pattern is computed (and read) sparsely.
    pub fn sparse_nm(&self) -> bool {
        matches!(self.nm, Some((_, _, NmCompute::Sparse { .. })))
    }

    /// Bytes per activation value the kernel reads and writes (a GGML kernel reads f32 inputs, which
    /// it quantizes to a smaller copy, and writes f32 outputs).
    pub fn act_bytes(&self) -> f64 {
        match (self.path, self.acts) {
            (KernelPath::Int(_) | KernelPath::BitSerial { .. }, _) => 1.0,
            (KernelPath::Lookup | KernelPath::Ggml(_), _) => 4.0,
            _ => float_bytes(self.compute()),
        }
    }

    /// The arithmetic charged, `weights×activations`: `int8×f32`, `int8×int8`, `f16×f16`, `q4_k×q8_k`.
    pub fn arithmetic(&self) -> String {
        format!("{}×{}", self.weights, self.acts)
    }
}

/// Bytes of one value of a float precision (f32 for anything else).
pub(super) fn float_bytes(p: Precision) -> f64 {
    match p {
        Precision::F16 | Precision::Bf16 => 2.0,
        _ => 4.0,
    }
}

impl fmt::Display for Kernel {
    /// `int8 kernel`, `weight-only f16 kernel`, `dequantized → f32`, `f32 kernel + act8 quantize–dequantize`,
    /// `q4_k kernel`, `dequantized → f32 + q8_k quantize–dequantize`, `f32 copy → f32 kernel`,
    /// `… + 2:4 sparse`, `… + 2:4 dense (no N:M on f32)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path {
            KernelPath::Float(p) if p != self.weights => {
                write!(f, "{p} kernel ({} weights widened)", self.weights)?
            }
            KernelPath::Float(p) => write!(f, "{p} kernel")?,
            KernelPath::Int(k) if Precision::Int(k) != self.weights => {
                write!(f, "int{k} kernel ({} unpacked)", self.weights)?
            }
            KernelPath::Int(k) => write!(f, "int{k} kernel")?,
            KernelPath::BitSerial { w, a } => write!(f, "bit-serial {w}×{a}")?,
            KernelPath::WeightOnly { bits, compute } if Precision::Int(bits) != self.weights => {
                write!(
                    f,
                    "weight-only {compute} kernel ({} unpacked to int{bits})",
                    self.weights
                )?
            }
            KernelPath::WeightOnly { compute, .. } => write!(f, "weight-only {compute} kernel")?,
            KernelPath::Ggml(g) if Precision::Ggml(g) != self.weights => {
                write!(f, "{g} kernel ({} converted at load)", self.weights)?
            }
            KernelPath::Ggml(g) => write!(f, "{g} kernel")?,
            KernelPath::Dequantized(p) if self.weights.is_float() => {
                write!(f, "{p} copy → {p} kernel")?
            }
            KernelPath::Dequantized(p) => write!(f, "dequantized → {p}")?,
            KernelPath::Lookup => f.write_str("row lookup")?,
        }
        match self.acts {
            Precision::Q8(blocks) if self.qdq() => {
                write!(f, " + {blocks} quantize–dequantize")?;
            }
            _ if self.qdq() => f.write_str(" + act8 quantize–dequantize")?,
            _ => {}
        }
        match self.nm {
            None => {}
            Some((n, m, NmCompute::Sparse { ragged: false })) => write!(f, " + {n}:{m} sparse")?,
            Some((n, m, NmCompute::Sparse { ragged: true })) => {
                write!(f, " + {n}:{m} sparse (ragged tail dense)")?
            }
            Some((n, m, NmCompute::Dense(why))) => {
                write!(f, " + {n}:{m} dense (")?;
                match why {
                    NmDense::NoPattern => write!(f, "no {n}:{m} on this device")?,
                    NmDense::NotAt(p) => write!(f, "no N:M on {p}")?,
                    NmDense::WeightOnly => f.write_str("weight-only kernel")?,
                    NmDense::Lookup => f.write_str("lookup")?,
                }
                f.write_str(")")?;
            }
        }
        Ok(())
    }
}

/// What one weight matrix of a layer needs from the kernel choice.
#[derive(Clone, Copy, Debug)]
pub(super) struct KernelInput {
    pub weights: WeightQuant,
    /// The activation quantization of the values this matrix multiplies (the choice's for the kernel
    /// that reads the layer's input, none for the second factor of a factorized layer).
    pub act: ActQuant,
    pub sparsity: Sparsity,
    /// An embedding's row lookup.
    pub lookup: bool,
    /// The input channels are not a multiple of the N:M group size.
    pub ragged: bool,
}

impl CostModel {
    /// The kernel the device runs for one weight matrix (see the module docs for the rules).
    pub(super) fn kernel(&self, k: &KernelInput) -> Kernel {
        let weights = Precision::of_weights(&k.weights);
        let path = self.kernel_path(k);
        let acts = match (k.weights.ggml(), k.act, path) {
            // A lookup's rows come out as f32.
            (Some(_), _, KernelPath::Lookup) => Precision::F32,
            // A GGML format's kernel quantizes whatever it multiplies (both factors of a low-rank
            // layer) to its activation blocks (a format it is converted to exactly has the same).
            (Some(g), _, _) => Precision::Q8(g.act_blocks()),
            (None, ActQuant::Int8Static | ActQuant::Int8Dynamic, _) => Precision::Int(8),
            (None, ActQuant::None, KernelPath::Lookup) => Precision::F32,
            // Float activations: the kernel's float precision.
            (None, ActQuant::None, _) => match path.compute(weights) {
                float if float.is_float() => float,
                _ => Precision::F32,
            },
        };
        let nm = match k.sparsity {
            Sparsity::NM { n, m } => Some((n, m, self.nm_compute(n, m, path, k.ragged))),
            _ => None,
        };
        Kernel {
            path,
            weights,
            acts,
            nm,
        }
    }

    /// Which kernel runs: the table of the module docs.
    fn kernel_path(&self, k: &KernelInput) -> KernelPath {
        if k.lookup {
            return KernelPath::Lookup;
        }
        match (k.weights, k.act) {
            (WeightQuant::Int { bits, .. }, ActQuant::None) => {
                match self.profile.weight_only_kernel(bits) {
                    Some((b, p)) => KernelPath::WeightOnly {
                        bits: b,
                        compute: self.runs_as(p),
                    },
                    None => KernelPath::Dequantized(Precision::F32),
                }
            }
            (WeightQuant::Int { bits, .. }, act) => {
                if self.profile.bit_serial_gbops.is_some() {
                    return KernelPath::BitSerial {
                        w: bits,
                        a: act.bits(),
                    };
                }
                match self.runs_as(Precision::Int(bits)) {
                    Precision::Int(k) => KernelPath::Int(k),
                    float => KernelPath::Dequantized(float),
                }
            }
            (WeightQuant::Ggml(g), _) => match self.runs_as(Precision::Ggml(g)) {
                Precision::Ggml(h) => KernelPath::Ggml(h),
                float => KernelPath::Dequantized(float),
            },
            (w, _) => {
                let p = Precision::of_weights(&w);
                match self.runs_as(p) {
                    run if run != p && self.profile.copies(p) => KernelPath::Dequantized(run),
                    run => KernelPath::Float(run),
                }
            }
        }
    }

    /// How the device computes the N:M pattern `n:m` in `path`.
    fn nm_compute(&self, n: u8, m: u8, path: KernelPath, ragged: bool) -> NmCompute {
        let p = &self.profile;
        if !p.accelerates_nm(n, m) {
            return NmCompute::Dense(NmDense::NoPattern);
        }
        let at = match path {
            KernelPath::WeightOnly { .. } => return NmCompute::Dense(NmDense::WeightOnly),
            KernelPath::Lookup => return NmCompute::Dense(NmDense::Lookup),
            KernelPath::Float(q) | KernelPath::Dequantized(q) => q,
            KernelPath::Int(b) | KernelPath::BitSerial { w: b, .. } => Precision::Int(b),
            KernelPath::Ggml(g) => Precision::Ggml(g),
        };
        if p.accelerates_nm_at(n, m, at) {
            NmCompute::Sparse { ragged }
        } else {
            NmCompute::Dense(NmDense::NotAt(at))
        }
    }
}
