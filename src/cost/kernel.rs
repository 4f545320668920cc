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
//!
//! Activation quantization applies to the **layer's input** only, as in the evaluator: the second
//! factor of a factorized layer multiplies the exact (float) intermediate, so it is charged as a
//! weight-only (or float) kernel whatever the activation part. An embedding's table is read by a row
//! lookup that dequantizes the gathered rows (every runtime's gather does), so it never needs a
//! dequantized copy.
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
use crate::space::{ActQuant, Sparsity, WeightQuant};

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
    /// No kernel for the stored integer weights: a dequantized copy in this float precision, which the
    /// float kernel of that precision reads.
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
    /// The activation values multiplied: int8 for `act8-*` on the layer's input, else the float
    /// precision the kernel multiplies in.
    pub acts: Precision,
    /// The N:M pattern of the choice and how it is computed; `None` without one.
    pub nm: Option<(u8, u8, NmCompute)>,
}

impl Kernel {
    /// The precision whose throughput the kernel runs at (for a bit-serial overlay, its weight width).
    pub fn compute(&self) -> Precision {
        self.path.compute(self.weights)
    }

    /// Whether int8 activations are quantized and dequantized around a float kernel.
    pub fn qdq(&self) -> bool {
        matches!(self.acts, Precision::Int(_))
            && matches!(self.path, KernelPath::Float(_) | KernelPath::Dequantized(_))
    }

    /// Whether the N:M pattern is computed (and read) sparsely.
    pub fn sparse_nm(&self) -> bool {
        matches!(self.nm, Some((_, _, NmCompute::Sparse { .. })))
    }

    /// Bytes per activation value the kernel reads and writes.
    pub fn act_bytes(&self) -> f64 {
        match (self.path, self.acts) {
            (KernelPath::Int(_) | KernelPath::BitSerial { .. }, _) => 1.0,
            (KernelPath::Lookup, _) => 4.0,
            _ => float_bytes(self.compute()),
        }
    }

    /// The arithmetic charged, `weights×activations`: `int8×f32`, `int8×int8`, `f16×f16`.
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
            KernelPath::Dequantized(p) => write!(f, "dequantized → {p}")?,
            KernelPath::Lookup => f.write_str("row lookup")?,
        }
        if self.qdq() {
            f.write_str(" + act8 quantize–dequantize")?;
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
        let acts = match (k.act, path) {
            (ActQuant::Int8Static | ActQuant::Int8Dynamic, _) => Precision::Int(8),
            // Float activations: the kernel's float precision; a lookup's rows come out as f32.
            (ActQuant::None, KernelPath::Lookup) => Precision::F32,
            (ActQuant::None, _) => match path.compute(weights) {
                Precision::Int(_) => Precision::F32,
                float => float,
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
            (w, _) => KernelPath::Float(self.runs_as(Precision::of_weights(&w))),
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
        };
        if p.accelerates_nm_at(n, m, at) {
            NmCompute::Sparse { ragged }
        } else {
            NmCompute::Dense(NmDense::NotAt(at))
        }
    }
}
