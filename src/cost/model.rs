//! # The cost model
//!
//! What one layer choice costs on a device, and what an assignment costs in total. Three costs:
//!
//! - **bytes**: weight storage as exported, device-independent. Values at the format's bits; integer
//!   formats add one f32 scale per scale group (tensor: 1, channel: one per row, `g<N>`: one per row and N
//!   columns) and, when asymmetric, one byte of zero point per group; a GGML block format is exactly its
//!   blocks, `rows × (cols / block) × block_bytes` (q4_k: 144 bytes per 256 weights, 4.5 bits per weight
//!   as llama.cpp counts them; scales and minimums are inside the blocks); unstructured sparsity stores the
//!   non-zeros plus a 1-bit-per-weight mask (or dense, if smaller); N:M stores the kept values plus
//!   ⌈log₂ M⌉ bits of position each, its groups running along the input channels at a fixed kernel
//!   position and the ragged tail of `in mod M` channels stored dense; removed channels disappear (plus a
//!   1-bit-per-row mask); low rank stores the two factors (m×k)(k×n), k = ⌈rank% × min(m, n)⌉, each
//!   quantized and sparsified as above; a convolution factorized by `tucker<P>` or `cp<P>` stores its
//!   chain's factors ([`crate::space::ConvFactor::matrices`]: Tucker-2 `o×r_out`, `r_out×r_in·kh·kw`,
//!   `r_in×i`; CP `o×R`, `R×kw`, `R×kh`, `R×i`), each in the weight format. Biases stay f32.
//! - **bops**: bit operations per inference, MACs × weight bits × activation bits (32 for float
//!   activations, which the second factor of a factorized layer multiplies unless the format is a GGML
//!   one, whose kernels quantize every input to 8-bit blocks; a GGML format's weight bits are its code
//!   bits), counting only the MACs that remain after pruning and factorization.
//! - **latency**: per kernel (one, or two for a factorized layer), the kernel the device runs for the
//!   arithmetic the choice's notation names ([`super::kernel`]: the notation is the contract); a matching
//!   measured entry of the profile if there is one; otherwise the roofline `max(compute, memory) +
//!   per-layer overhead` where compute = remaining MACs × batch / throughput of the kernel's precision,
//!   and memory = (weight bytes as the device reads them + activation bytes at the kernel's width) /
//!   bandwidth, plus a quantize–dequantize pass where int8 activations (or a GGML format's activation
//!   blocks) meet a float kernel. The device
//!   reads sparse formats only for patterns its kernel computes sparsely; otherwise it streams dense
//!   weights, at the width of the kernel (or as the dequantized float copy). Unstructured sparsity saves
//!   `unstructured_efficiency` of the pruned work; removed channels always save work; N:M saves the pruned
//!   share of its full groups only in kernels of the precisions the profile lists for the pattern.
//!
//! A factorized convolution (`tucker<P>`, `cp<P>`) is charged per convolution of its chain, each as
//! its own kernel: MACs = the factor's values × the layer's output pixels (a depthwise factor's
//! values are its MACs per pixel: each output channel reads one input channel), its roofline from
//! those MACs at the rate of the format's precision and its weight and activation bytes. The first
//! 1×1 convolution runs on the input pixels, which this counts as the output pixels (equal for the
//! stride-1, same-padding convolutions these are offered on; a strided layer is undercharged there).
//! A profile entry measured for the whole chain (`conv = "tucker<P>"`, written by `calibrate --model`)
//! replaces that sum; entries of single matrices are never used for a chain (none are keyed by its
//! factors' shapes).
//!
//! A model runs its layers one after another, so every cost is additive over layers: a total is the
//! sum of the per-layer figures (a test checks this), and the cheapest and dearest reachable totals of a
//! space are sums of per-group minima and maxima ([`super::Feasibility`]).

use serde::{Deserialize, Serialize};

use super::kernel::{float_bytes, Kernel, KernelInput, KernelPath};
use super::profile::{layers_key, HardwareProfile, MeasuredKey, Precision};
use crate::space::{
    kept_rows, rank_k, ActQuant, Choice, ConvDims, ConvFactor, GgmlFormat, Granularity, LayerInfo,
    LayerKind, QuantScheme, Sparsity, WeightQuant,
};

/// The three costs of a layer or a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Predicted latency of one inference (batch), microseconds.
    pub latency_us: f64,
    /// Weight storage, bytes.
    pub bytes: u64,
    /// Bit operations per inference.
    pub bops: f64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            latency_us: self.latency_us + o.latency_us,
            bytes: self.bytes + o.bytes,
            bops: self.bops + o.bops,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(it: I) -> Cost {
        it.fold(Cost::default(), |a, b| a + b)
    }
}

/// Which cost a search minimises or a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Latency,
    Size,
    Bops,
}

impl Objective {
    pub const ALL: [Objective; 3] = [Objective::Latency, Objective::Size, Objective::Bops];

    /// The objective's value in `cost`.
    pub fn of(&self, cost: &Cost) -> f64 {
        match self {
            Objective::Latency => cost.latency_us,
            Objective::Size => cost.bytes as f64,
            Objective::Bops => cost.bops,
        }
    }

    /// `value` with its unit, for people.
    pub fn format(&self, value: f64) -> String {
        match self {
            Objective::Latency => format_us(value),
            Objective::Size => format_bytes(value),
            Objective::Bops => format!("{:.3} GBOPs", value / 1e9),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Latency => "latency",
            Objective::Size => "size",
            Objective::Bops => "bops",
        })
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latency" => Ok(Objective::Latency),
            "size" => Ok(Objective::Size),
            "bops" => Ok(Objective::Bops),
            _ => Err(format!(
                "`{s}` is not an objective; use latency, size or bops"
            )),
        }
    }
}

/// Parses a budget of `objective` with an optional unit: latency `800`, `800us`, `2.5ms`, `1s`
/// (plain numbers are µs); size `300000`, `512KB`, `1.5MiB`, `2GB` (plain numbers are bytes; KB/MB/GB
/// are powers of 1000, KiB/MiB/GiB of 1024); bops `1.2e9`, `1.2G`, `800M`.
pub fn parse_budget(objective: Objective, text: &str) -> std::result::Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+')
        })
        .unwrap_or(t.len());
    // `1e3` is a number but `1E` alone would not be: let the number parser decide.
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a number with an optional unit"))?;
    let unit = unit.trim();
    let scale = match (objective, unit) {
        (_, "") => 1.0,
        (Objective::Latency, "us" | "µs") => 1.0,
        (Objective::Latency, "ms") => 1e3,
        (Objective::Latency, "s") => 1e6,
        (Objective::Size, "B") => 1.0,
        (Objective::Size, "KB" | "kB") => 1e3,
        (Objective::Size, "MB") => 1e6,
        (Objective::Size, "GB") => 1e9,
        (Objective::Size, "KiB") => 1024.0,
        (Objective::Size, "MiB") => 1024.0 * 1024.0,
        (Objective::Size, "GiB") => 1024.0 * 1024.0 * 1024.0,
        (Objective::Bops, "K") => 1e3,
        (Objective::Bops, "M") => 1e6,
        (Objective::Bops, "G") => 1e9,
        (Objective::Bops, "T") => 1e12,
        _ => {
            let units = match objective {
                Objective::Latency => "us, ms, s",
                Objective::Size => "B, KB, MB, GB, KiB, MiB, GiB",
                Objective::Bops => "K, M, G, T",
            };
            return Err(format!(
                "`{text}`: unknown unit `{unit}` for {objective}; use {units}"
            ));
        }
    };
    let v = value * scale;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{text}`: a budget must be a positive number"))
    }
}

/// Microseconds as `812.4 µs`, `3.21 ms` or `1.50 s`.
pub fn format_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// Bytes as `512 B`, `12.3 KiB` or `4.56 MiB`.
pub fn format_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A layer's cost with how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LayerCost {
    #[serde(flatten)]
    pub cost: Cost,
    /// Dense-equivalent MACs that remain per sample after pruning and factorization.
    pub macs: f64,
    /// The precision the device computes the layer in (the kernel that reads the layer's input).
    pub runs_as: Precision,
    /// The kernel that reads the layer's input, and the arithmetic it is charged for.
    pub kernel: Kernel,
    /// For a factorized layer, the kernel of the factor applied next, to the (float) intermediate.
    pub then: Option<Kernel>,
    /// Whether the latency came from a measured entry (of every kernel of the layer).
    pub measured: bool,
}

/// One weight matrix as stored: `rows` outputs × `cols` inputs, where a row holds `cols / kernel` input
/// channels at `kernel` positions each (`kh·kw` for a convolution's weight, 1 otherwise; channel `c`
/// at position `p` is column `c·kernel + p`).
#[derive(Clone, Copy, Debug)]
struct Matrix {
    rows: u64,
    cols: u64,
    kernel: u64,
    /// A depthwise convolution of a factorized kernel: each row reads its own input channel.
    depthwise: bool,
}

impl Matrix {
    /// Input channels of a row: the axis N:M groups run along.
    fn channels(&self) -> u64 {
        self.cols / self.kernel.max(1)
    }

    /// Input values per application: a depthwise convolution reads one channel per row.
    fn inputs(&self) -> u64 {
        if self.depthwise {
            self.rows
        } else {
            self.channels()
        }
    }

    /// Values of one row an `n:m` pattern keeps: `(in N:M groups, in the dense ragged tail)`.
    fn nm_kept_per_row(&self, n: u8, m: u8) -> (u64, u64) {
        let (n, m) = (u64::from(n), u64::from(m));
        let c = self.channels();
        let positions = self.cols / c.max(1);
        (positions * (c / m) * n, positions * (c % m))
    }

    /// Whether the input channels are not a multiple of `m` (a ragged tail stays dense).
    fn ragged(&self, m: u8) -> bool {
        self.channels() % u64::from(m) != 0
    }
}

/// The weight matrices of a layer choice in storage order: the layer's weight, or the factors `A`
/// (rows×k) and `B` (k×cols) of a low-rank layer, or the three or four of a factorized convolution.
#[derive(Clone, Copy, Debug)]
struct Factors {
    matrices: [Matrix; 4],
    len: usize,
    /// Index of the matrix that reads the layer's input (`B`, or `A`'s rows for an embedding lookup).
    input: usize,
}

impl Factors {
    fn of(layer: &LayerInfo, choice: &Choice) -> Factors {
        let (rows, cols) = (layer.rows(), layer.cols());
        let kept_rows = match choice.sparsity {
            Sparsity::Channels(p) => kept_rows(rows, p),
            _ => rows,
        };
        let positions = match layer.kind {
            LayerKind::Conv2d => layer.shape.iter().skip(2).product::<usize>().max(1) as u64,
            _ => 1,
        };
        let matrix = |rows, cols, kernel| Matrix {
            rows,
            cols,
            kernel,
            depthwise: false,
        };
        let chain = choice
            .conv
            .zip(ConvDims::of(layer))
            .and_then(|(f, d)| f.matrices(d).ok().map(|m| (f, m)));
        if let Some((f, shapes)) = chain {
            let mut matrices = [matrix(1, 1, 1); 4];
            for (j, &(rows, cols)) in shapes.iter().enumerate() {
                let middle = j > 0 && j + 1 < shapes.len();
                matrices[j] = match (f, middle) {
                    // Tucker-2's core keeps the kernel's positions.
                    (ConvFactor::Tucker(_), true) => matrix(rows, cols, positions),
                    // CP's k×1 and 1×k: depthwise, `cols` taps of one channel per row.
                    (ConvFactor::Cp(_), true) => Matrix {
                        depthwise: true,
                        ..matrix(rows, cols, cols)
                    },
                    _ => matrix(rows, cols, 1),
                };
            }
            return Factors {
                matrices,
                len: shapes.len(),
                input: shapes.len() - 1,
            };
        }
        let (matrices, len) = match choice.rank {
            Some(r) => {
                let k = rank_k(rows, cols, r);
                let a = matrix(kept_rows, k, 1);
                let b = matrix(k, cols, positions);
                ([a, b, b, b], 2)
            }
            None => {
                let w = matrix(kept_rows, cols, positions);
                ([w; 4], 1)
            }
        };
        let input = if layer.kind == LayerKind::Embedding {
            0
        } else {
            len - 1
        };
        Factors {
            matrices,
            len,
            input,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Matrix)> {
        self.matrices[..self.len].iter().enumerate()
    }

    /// The activation quantization of the values matrix `i` multiplies: the choice's on the layer's
    /// input, none on the (exact) intermediate of a factorized layer, as the evaluator computes it.
    fn act(&self, choice: &Choice, i: usize) -> ActQuant {
        if i == self.input {
            choice.act
        } else {
            ActQuant::None
        }
    }
}

/// The cost model of one profile at one batch size.
#[derive(Clone, Debug)]
pub struct CostModel {
    pub profile: HardwareProfile,
    /// Samples per inference (images, or tokens for sequence models).
    pub batch: u32,
    /// Per precision slot ([`slot`]): the precision it really runs as, and µs per MAC there.
    runs: [(Precision, f64); SLOTS],
    /// µs per byte of memory traffic.
    us_per_byte: f64,
    /// The model's non-matmul work, µs ([`CostModel::for_model`]).
    non_matmul_us: f64,
    /// Per kernel precision, what a layer on it adds to the rest of the model's pass, µs
    /// ([`CostModel::for_model`], [`HardwareProfile::spill_us`]).
    spill_us: [Option<f64>; SLOTS],
}

/// Precision slots: f32, f16, bf16, int2..=int8 (int0/int1 unused), then the GGML block formats in
/// [`GgmlFormat::ALL`] order. Activation blocks are never a kernel's precision; they share int8's.
const SLOTS: usize = 11 + GgmlFormat::ALL.len();

fn slot(p: Precision) -> usize {
    match p {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::Bf16 => 2,
        Precision::Int(b) => 2 + usize::from(b.min(8)),
        Precision::Q8(_) => 10,
        Precision::Ggml(g) => 11 + GgmlFormat::ALL.iter().position(|&f| f == g).unwrap_or(0),
    }
}

/// One kernel of a layer: matrix `i` of its factors.
struct Part<'a> {
    layer: &'a LayerInfo,
    choice: &'a Choice,
    m: &'a Matrix,
    i: usize,
    factors: &'a Factors,
    kernel: Kernel,
}

impl Part<'_> {
    /// An embedding's row lookup (its table, or the first factor of a factorized table).
    fn lookup(&self) -> bool {
        self.layer.kind == LayerKind::Embedding && self.i == 0
    }

    /// The activation quantization of the values this kernel multiplies.
    fn act(&self) -> ActQuant {
        self.factors.act(self.choice, self.i)
    }

    /// Dense MACs per sample.
    fn dense_macs(&self) -> f64 {
        let values = (self.m.rows * self.m.cols) as f64;
        match self.layer.kind {
            // A lookup reads one row; a factorized table then multiplies it by the second factor.
            LayerKind::Embedding if self.i == 0 => 0.0,
            LayerKind::Embedding => values,
            _ => values * self.layer.applications(),
        }
    }

    /// Input values per application: the input feature map's channels for a convolution (not its
    /// im2col expansion; a depthwise factor's rows), the columns otherwise.
    fn inputs(&self) -> f64 {
        self.m.inputs() as f64
    }

    /// Applications per sample for the activation traffic (output pixels of a convolution).
    fn applications(&self) -> f64 {
        if self.layer.kind == LayerKind::Conv2d {
            self.layer.applications()
        } else {
            1.0
        }
    }
}

impl CostModel {
    /// A cost model; `batch` must be at least 1.
    pub fn new(profile: HardwareProfile, batch: u32) -> crate::Result<CostModel> {
        if batch == 0 {
            return Err(crate::Error::Infeasible {
                message: "batch must be at least 1 sample per inference".into(),
            });
        }
        let mut runs = [(Precision::F32, 0.0); SLOTS];
        for p in [Precision::F32, Precision::F16, Precision::Bf16]
            .into_iter()
            .chain((2..=8).map(Precision::Int))
            .chain(GgmlFormat::ALL.map(Precision::Ggml))
        {
            let run = profile.runs_as(p);
            let gmacs = profile
                .gmacs
                .get(&run)
                .copied()
                .unwrap_or(profile.gmacs[&Precision::F32]);
            runs[slot(p)] = (run, 1.0 / (gmacs * 1e3));
        }
        let us_per_byte = 1.0 / (profile.bandwidth_gbs * 1e3);
        Ok(CostModel {
            profile,
            batch,
            runs,
            us_per_byte,
            non_matmul_us: 0.0,
            spill_us: [None; SLOTS],
        })
    }

    /// The cost model of the model whose layers are `layers`: every assignment's latency also pays
    /// the model's non-matmul work at this batch (attention, norms, activations, biases: what runs
    /// outside the layers' products), when the profile measured it for this model (`[[model]]`, written
    /// by `calibrate --model`; see [`HardwareProfile::non_matmul_us`]); otherwise nothing is added.
    /// Likewise each layer (not an embedding look-up) whose kernel runs a precision with a measured
    /// `spill_us` pays it: what that kernel adds to the rest of the pass.
    pub fn for_model(mut self, layers: &[LayerInfo]) -> CostModel {
        let key = layers_key(layers);
        self.non_matmul_us = self.profile.non_matmul_us(&key, self.batch).unwrap_or(0.0);
        self.spill_us = [None; SLOTS];
        for (p, us) in self.profile.spill_us(&key, self.batch) {
            self.spill_us[slot(p)] = Some(us);
        }
        self
    }

    /// The model's non-matmul work added to every assignment, µs (0 unless [`Self::for_model`] found
    /// it in the profile).
    pub fn non_matmul_us(&self) -> f64 {
        self.non_matmul_us
    }

    /// The precision a kernel of precision `p` really runs as on this device.
    pub(super) fn runs_as(&self, p: Precision) -> Precision {
        self.runs[slot(p)].0
    }

    /// The cost of `layer` under `choice`: per kernel, the one the device runs for the choice's
    /// arithmetic ([`super::kernel`]), its MACs after pruning, its latency (measured or roofline); then
    /// the stored bytes and the bit operations.
    pub fn layer(&self, layer: &LayerInfo, choice: &Choice) -> LayerCost {
        let factors = Factors::of(layer, choice);
        let kernels: [Kernel; 4] = std::array::from_fn(|i| {
            self.factor_kernel(layer, choice, &factors, i.min(factors.len - 1))
        });
        let whole = self.measured_whole(layer, choice, &factors, kernels[factors.input]);
        let mut latency = whole.unwrap_or(0.0);
        let mut macs = 0.0;
        let mut bops = 0.0;
        let mut measured = true;
        for (i, m) in factors.iter() {
            let part = Part {
                layer,
                choice,
                m,
                i,
                factors: &factors,
                kernel: kernels[i],
            };
            let work = part.dense_macs() * self.work_fraction(&part);
            macs += work;
            let act_bits = match choice.weights {
                WeightQuant::Ggml(_) => 8,
                _ => part.act().bits(),
            };
            bops += work * f64::from(choice.weights.bits()) * f64::from(act_bits);
            if whole.is_some() {
                continue;
            }
            latency += match self.measured_us(&part) {
                Some(us) => us,
                None => {
                    measured = false;
                    self.roofline(&part, work)
                }
            };
        }
        let kernel = kernels[factors.input];
        if layer.kind != LayerKind::Embedding {
            latency += self.spill_us[slot(kernel.compute())].unwrap_or(0.0);
        }
        LayerCost {
            cost: Cost {
                latency_us: latency,
                bytes: layer_bytes(layer, choice, &factors),
                bops: bops * f64::from(self.batch),
            },
            macs,
            runs_as: kernel.compute(),
            kernel,
            // The factor applied last (the first in storage order, unless that reads the input).
            then: (factors.len >= 2).then_some(kernels[usize::from(factors.input == 0)]),
            measured,
        }
    }

    /// A measured entry for a whole factorized layer (`rank = r`, both factors, keyed by the layer's
    /// shape with its kept rows; or `conv = f`, a convolution's whole chain, which runs in f32), as
    /// `calibrate --model` times it inside the model: of the notation's weights, else of the float
    /// precision a dequantized or float path runs in.
    fn measured_whole(
        &self,
        layer: &LayerInfo,
        choice: &Choice,
        factors: &Factors,
        input: Kernel,
    ) -> Option<f64> {
        if self.profile.measured.is_empty() || (choice.rank.is_none() && choice.conv.is_none()) {
            return None;
        }
        if let Some(conv) = choice.conv {
            // Sparsity and channel removal do not combine with a chain (the notation refuses them).
            let key = MeasuredKey {
                kind: layer.kind,
                shape: layer.shape.clone(),
                batch: self.batch,
                weights: Precision::F32,
                act: choice.act,
                sparsity: Sparsity::None,
                rank: None,
                conv: Some(conv),
            };
            return self.profile.measured.get(&key).copied();
        }
        let rank = choice.rank;
        let mut shape = layer.shape.clone();
        let part = Part {
            layer,
            choice,
            m: &factors.matrices[factors.input],
            i: factors.input,
            factors,
            kernel: input,
        };
        // The layer's rows, those of its first factor: its kept rows under channels<P>.
        shape[0] = factors.matrices[0].rows as usize;
        let key = |weights: Precision| MeasuredKey {
            kind: layer.kind,
            shape: shape.clone(),
            batch: self.batch,
            weights,
            act: choice.act,
            sparsity: self.sparsity_as_read(&part),
            rank,
            conv: None,
        };
        let get = |w: Precision| self.profile.measured.get(&key(w)).copied();
        get(input.weights).or_else(|| match input.path {
            KernelPath::Dequantized(p) | KernelPath::Float(p) => get(p),
            _ => None,
        })
    }

    /// The kernel the device runs for matrix `i` of a layer choice.
    fn factor_kernel(
        &self,
        layer: &LayerInfo,
        choice: &Choice,
        factors: &Factors,
        i: usize,
    ) -> Kernel {
        let m = &factors.matrices[i];
        self.kernel(&KernelInput {
            weights: choice.weights,
            act: factors.act(choice, i),
            sparsity: choice.sparsity,
            lookup: layer.kind == LayerKind::Embedding && i == 0,
            ragged: match choice.sparsity {
                Sparsity::NM { m: group, .. } => m.ragged(group),
                _ => false,
            },
        })
    }

    /// Share of the dense work that remains on this device after pruning (channel removal is already
    /// in the matrix shape): N:M only where the kernel computes it sparsely, its ragged tail dense.
    fn work_fraction(&self, part: &Part) -> f64 {
        match part.choice.sparsity {
            Sparsity::None | Sparsity::Channels(_) => 1.0,
            Sparsity::Unstructured(p) => {
                1.0 - self.profile.unstructured_efficiency * f64::from(p) / 100.0
            }
            Sparsity::NM { n, m } if part.kernel.sparse_nm() => {
                let (kept, tail) = part.m.nm_kept_per_row(n, m);
                (kept + tail) as f64 / part.m.cols.max(1) as f64
            }
            Sparsity::NM { .. } => 1.0,
        }
    }

    /// The sparsity of the weights as the device reads them: a pattern it does not compute sparsely is
    /// streamed dense.
    fn sparsity_as_read(&self, part: &Part) -> Sparsity {
        match part.choice.sparsity {
            Sparsity::NM { .. } if !part.kernel.sparse_nm() => Sparsity::None,
            Sparsity::Unstructured(_) if self.profile.unstructured_efficiency <= 0.0 => {
                Sparsity::None
            }
            s => s,
        }
    }

    /// A measured entry for `part`: of the arithmetic the notation names, else (for a dequantized copy
    /// or a quantize–dequantize pass around a float kernel) of the float kernel that really runs, plus
    /// the analytic quantize–dequantize pass.
    fn measured_us(&self, part: &Part) -> Option<f64> {
        if self.profile.measured.is_empty() || part.choice.conv.is_some() {
            return None;
        }
        let key = |weights: Precision, act: ActQuant, sparsity: Sparsity| MeasuredKey {
            kind: if part.choice.rank.is_some()
                && part.layer.kind == LayerKind::Embedding
                && part.i == 1
            {
                LayerKind::Linear
            } else {
                part.layer.kind
            },
            shape: factor_shape(part.layer, part.m, part.choice.rank.is_some(), part.i),
            batch: self.batch,
            weights,
            act,
            sparsity,
            rank: None,
            conv: None,
        };
        let k = &part.kernel;
        let named = key(k.weights, part.act(), part.choice.sparsity);
        if let Some(&us) = self.profile.measured.get(&named) {
            return Some(us);
        }
        match k.path {
            KernelPath::Dequantized(p) | KernelPath::Float(p) => {
                let as_read = self.sparsity_as_read(part);
                // The float kernel that runs with the input quantization the notation names, as
                // `calibrate --model` times it inside the model…
                let act = part.act();
                if act != ActQuant::None {
                    let with_act = key(p, act, as_read);
                    if let Some(&us) = (with_act != named)
                        .then(|| self.profile.measured.get(&with_act))
                        .flatten()
                    {
                        return Some(us);
                    }
                }
                // … else without it, plus the analytic quantize–dequantize pass (if any).
                let run = key(p, ActQuant::None, as_read);
                (run != named)
                    .then(|| self.profile.measured.get(&run))
                    .flatten()
                    .map(|us| us + self.qdq_us(part))
            }
            // A GGML format converted at load to one that holds it exactly: that format's entry.
            KernelPath::Ggml(h) if k.weights != Precision::Ggml(h) => {
                let run = key(Precision::Ggml(h), ActQuant::None, part.choice.sparsity);
                self.profile.measured.get(&run).copied()
            }
            _ => None,
        }
    }

    /// Analytic latency of one kernel, µs: `max(compute, memory) + per-layer overhead`, plus the
    /// quantize–dequantize pass of int8 activations around a float kernel.
    fn roofline(&self, part: &Part, work: f64) -> f64 {
        let compute_us = self.compute_us(&part.kernel, work);
        let memory_us =
            (self.weight_bytes_read(part) + self.activation_bytes(part)) * self.us_per_byte;
        compute_us.max(memory_us) + self.profile.per_layer_us + self.qdq_us(part)
    }

    /// Time to compute `work` MACs per sample in `kernel`.
    fn compute_us(&self, kernel: &Kernel, work: f64) -> f64 {
        let us_per_mac = match kernel.path {
            KernelPath::BitSerial { w, a } => {
                f64::from(w) * f64::from(a) / (self.profile.bit_serial_gbops.unwrap_or(1.0) * 1e3)
            }
            _ => self.runs[slot(kernel.compute())].1,
        };
        work * f64::from(self.batch) * us_per_mac
    }

    /// Weight bytes as the device reads them: the stored format, except a pattern it does not compute
    /// sparsely (streamed dense), integer weights unpacked to a wider kernel's width, and a dequantized
    /// float copy; a lookup reads one row per sample.
    fn weight_bytes_read(&self, part: &Part) -> f64 {
        let c = part.choice;
        let as_read = Choice {
            weights: weights_as_read(c.weights, part.kernel.path),
            sparsity: self.sparsity_as_read(part),
            ..*c
        };
        let bytes = stored_bytes(part.m, &as_read) as f64;
        if part.lookup() {
            bytes / part.m.rows.max(1) as f64 * f64::from(self.batch)
        } else {
            bytes
        }
    }

    /// Activation bytes read and written: inputs and outputs at the kernel's activation width, per
    /// application; a lookup writes one f32 row per sample (its token id is negligible).
    fn activation_bytes(&self, part: &Part) -> f64 {
        let batch = f64::from(self.batch);
        if part.lookup() {
            return batch * part.m.cols as f64 * 4.0;
        }
        batch * part.applications() * (part.inputs() + part.m.rows as f64) * part.kernel.act_bytes()
    }

    /// The quantize–dequantize pass of int8 activations around a float kernel: the input read and
    /// written once more at the kernel's float width (0 when there is none).
    fn qdq_us(&self, part: &Part) -> f64 {
        if !part.kernel.qdq() {
            return 0.0;
        }
        let bytes = f64::from(self.batch)
            * part.applications()
            * part.inputs()
            * 2.0
            * float_bytes(part.kernel.compute());
        bytes * self.us_per_byte
    }

    /// Per-layer costs and the total of an assignment over `layers` (plus the model's non-matmul
    /// work, [`Self::non_matmul_us`]); a layer the assignment does not name stays f32.
    pub fn assignment(
        &self,
        layers: &[LayerInfo],
        a: &crate::space::Assignment,
    ) -> (Vec<LayerCost>, Cost) {
        let per: Vec<LayerCost> = layers
            .iter()
            .map(|l| self.layer(l, a.get(&l.name).unwrap_or(&Choice::F32)))
            .collect();
        let mut total: Cost = per.iter().map(|c| c.cost).sum();
        total.latency_us += self.non_matmul_us;
        (per, total)
    }
}

/// The weight format the device reads for `path`: integer weights unpacked to a wider kernel's
/// width, a GGML format converted to the one whose kernel runs, a dequantized (or widened) copy in its
/// float precision, else as stored.
fn weights_as_read(w: WeightQuant, path: KernelPath) -> WeightQuant {
    match (w, path) {
        (
            WeightQuant::Int {
                bits,
                scheme,
                granularity,
            },
            KernelPath::Int(k) | KernelPath::WeightOnly { bits: k, .. },
        ) if k > bits => WeightQuant::Int {
            bits: k,
            scheme,
            granularity,
        },
        (WeightQuant::Ggml(_), KernelPath::Ggml(h)) => WeightQuant::Ggml(h),
        (_, KernelPath::Dequantized(p)) => match p {
            Precision::F16 => WeightQuant::F16,
            Precision::Bf16 => WeightQuant::Bf16,
            _ => WeightQuant::F32,
        },
        _ => w,
    }
}

/// Stored bytes of an assignment's layers (the `size` objective, device-independent; a layer the
/// assignment leaves out is f32).
pub fn assignment_bytes(layers: &[LayerInfo], a: &crate::space::Assignment) -> u64 {
    layers
        .iter()
        .map(|l| {
            let c = a.get(&l.name).copied().unwrap_or(Choice::F32);
            layer_bytes(l, &c, &Factors::of(l, &c))
        })
        .sum()
}

/// Bits per weight of `bytes` over the layers' weights, as llama.cpp counts a model's size (`4.5bpw`).
pub fn bits_per_weight(layers: &[LayerInfo], bytes: f64) -> f64 {
    let params: u64 = layers.iter().map(LayerInfo::params).sum();
    8.0 * bytes / params.max(1) as f64
}

/// Stored bytes of a layer choice: its matrices, a 1-bit-per-row mask of removed channels, f32 biases.
fn layer_bytes(layer: &LayerInfo, choice: &Choice, factors: &Factors) -> u64 {
    let mut bytes: u64 = factors.iter().map(|(_, m)| stored_bytes(m, choice)).sum();
    if let Sparsity::Channels(_) = choice.sparsity {
        bytes += layer.rows().div_ceil(8);
    }
    if layer.bias {
        bytes += 4 * factors.matrices[0].rows;
    }
    bytes
}

/// The shape a measured entry for kernel `i` of `layer` is keyed by.
fn factor_shape(layer: &LayerInfo, m: &Matrix, factorized: bool, i: usize) -> Vec<usize> {
    if !factorized {
        // The layer's own shape, its rows the kept ones under channels<P>.
        let mut s = layer.shape.clone();
        if let Some(r) = s.first_mut() {
            *r = m.rows as usize;
        }
        return s;
    }
    match (layer.kind, i) {
        // A factorized convolution: a k×(in·kh·kw) convolution then a 1×1 convolution.
        (LayerKind::Conv2d, 1) => {
            let mut s = layer.shape.clone();
            s[0] = m.rows as usize;
            s
        }
        (LayerKind::Conv2d, _) => vec![m.rows as usize, m.cols as usize, 1, 1],
        _ => vec![m.rows as usize, m.cols as usize],
    }
}

/// Bytes of one stored matrix under `c` (values, scales, zero points, sparsity metadata). N:M keeps N
/// of every M input channels at each kernel position, with ⌈log₂ M⌉ position bits per kept value;
/// the ragged tail of `in mod M` channels is stored dense. A GGML block format is its blocks (it takes
/// no sparsity but removed channels, which the matrix's rows already leave out).
fn stored_bytes(m: &Matrix, c: &Choice) -> u64 {
    if let WeightQuant::Ggml(g) = c.weights {
        return g.bytes(m.rows, m.cols);
    }
    let values = m.rows * m.cols;
    let bits = u64::from(c.weights.bits());
    let dense_bits = values * bits;
    let value_bits = match c.sparsity {
        Sparsity::None | Sparsity::Channels(_) => dense_bits,
        Sparsity::Unstructured(p) => {
            let nnz = values - values * u64::from(p) / 100;
            (nnz * bits + values).min(dense_bits)
        }
        Sparsity::NM { n, m: mm } => {
            let (kept, tail) = m.nm_kept_per_row(n, mm);
            let index_bits = u64::from(8 - (mm - 1).leading_zeros() as u8).max(1);
            m.rows * (kept * (bits + index_bits) + tail * bits)
        }
    };
    let scale_bytes = match c.weights {
        WeightQuant::Int {
            scheme,
            granularity,
            ..
        } => {
            let groups = match granularity {
                Granularity::Tensor => 1,
                Granularity::Channel => m.rows,
                Granularity::Group(g) => m.rows * m.cols.div_ceil(u64::from(g)),
            };
            groups
                * if scheme == QuantScheme::Asymmetric {
                    5
                } else {
                    4
                }
        }
        _ => 0,
    };
    value_bits.div_ceil(8) + scale_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: u64, cols: u64) -> Matrix {
        Matrix {
            rows,
            cols,
            kernel: 1,
            depthwise: false,
        }
    }

    #[test]
    fn storage_bytes_follow_the_formats() {
        let c = |s: &str| s.parse::<Choice>().unwrap();
        assert_eq!(stored_bytes(&m(10, 64), &c("f32")), 2560);
        assert_eq!(stored_bytes(&m(10, 64), &c("f16")), 1280);
        // 640 values × 8 bits + 10 f32 scales.
        assert_eq!(stored_bytes(&m(10, 64), &c("int8-sym-channel")), 640 + 40);
        // 640 × 4 bits + 10 rows × 2 groups × (4 + 1) bytes.
        assert_eq!(stored_bytes(&m(10, 64), &c("int4-asym-g32")), 320 + 100);
        // 2:4 keeps 320 values with 2-bit positions: 320 × (8 + 2) bits.
        assert_eq!(stored_bytes(&m(10, 64), &c("int8-sym-tensor+2:4")), 400 + 4);
        // 50% unstructured: 320 × 8 bits + 640-bit mask.
        assert_eq!(
            stored_bytes(&m(10, 64), &c("int8-sym-tensor+sparse50")),
            320 + 80 + 4
        );
        // 90% unstructured f32: 64 × 32 + 640 bits.
        assert_eq!(stored_bytes(&m(10, 64), &c("f32+sparse90")), 256 + 80);
        // 2:4 on 10 columns: two groups keep 4 values with positions, the ragged tail of 2 stays dense.
        assert_eq!(
            stored_bytes(&m(3, 10), &c("int8-sym-tensor+2:4")),
            (3 * (4 * 10 + 2 * 8) as u64).div_ceil(8) + 4
        );
        // A convolution's 6 input channels at 4 positions: per position one group and a tail of 2.
        let conv = Matrix {
            rows: 2,
            cols: 24,
            kernel: 4,
            depthwise: false,
        };
        assert_eq!(conv.nm_kept_per_row(2, 4), (8, 8));
        assert!(conv.ragged(4) && !conv.ragged(2) && !conv.ragged(3));
    }

    #[test]
    fn budgets_parse_with_units() {
        assert_eq!(parse_budget(Objective::Latency, "800").unwrap(), 800.0);
        assert_eq!(parse_budget(Objective::Latency, "2.5ms").unwrap(), 2500.0);
        assert_eq!(
            parse_budget(Objective::Size, "1.5MiB").unwrap(),
            1.5 * 1024.0 * 1024.0
        );
        assert_eq!(parse_budget(Objective::Size, "2KB").unwrap(), 2000.0);
        assert_eq!(parse_budget(Objective::Bops, "1.2G").unwrap(), 1.2e9);
        assert_eq!(parse_budget(Objective::Bops, "1e9").unwrap(), 1e9);
        assert!(parse_budget(Objective::Latency, "5MB").is_err());
        assert!(parse_budget(Objective::Size, "-3").is_err());
        assert!(parse_budget(Objective::Size, "abc").is_err());
    }

    #[test]
    fn rank_rounds_up() {
        assert_eq!(rank_k(768, 3072, 50), 384);
        assert_eq!(rank_k(10, 64, 25), 3);
        assert_eq!(rank_k(10, 64, 1), 1);
    }
}
