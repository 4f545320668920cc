//! # Calibrate: measure this machine
//!
//! The measuring core of `mpsearch calibrate`. For each weight matrix shape (rows = out-features,
//! cols = in-features) and batch size it times `y = x · Wᵀ` on candle's CPU kernels:
//!
//! - `F32`: candle's f32 matmul against the transposed view of the `[out, in]` weight, exactly what a
//!   candle-nn `Linear` runs (`x.matmul(&w.t())`, gemm reads the strided view; no copy per call);
//! - `F16`, `BF16`: candle's plain half-precision matmul, activations and weights in that dtype (candle
//!   has no bf16 gemm on the CPU: it widens both operands to f32 on every call);
//! - `QMatMul-F16`, `QMatMul-BF16`: `QMatMul` built from an F16/BF16 `QTensor`, which dequantizes the
//!   weight to f32 once at construction and then runs the f32 matmul;
//! - every GGML block format of the choice notation (`Q8_0`, `Q6K`, `Q5K`, `Q4K`, `Q4_0`, `Q3K`, `Q2K`,
//!   `Q4_1`, `Q5_0`, `Q5_1`: [`QUANT_TYPES`]) through `QMatMul::forward`, which quantizes the f32
//!   activations to the type's dot-product partner (Q8_0, Q8_1 or Q8K) on the fly and runs the integer
//!   dot products. (`Q8K` and `Q8_1` are those partners, not weight formats; [`Kernel::Quant`] can still
//!   time them when asked.)
//!
//! What a profile charges is what `mpsearch measure` runs ([`write`]): f32 the F32 kernel, f16 the
//! plain F16 one, each GGML format its `QMatMul`; bf16 a dense f32 copy (the F32 time), and `int<b>`
//! choices a dequantized f32 copy (candle has no integer kernel). `BF16`, `QMatMul-F16` and
//! `QMatMul-BF16` are timed for the table only.
//!
//! A type runs only where the in-features are a multiple of its block: 256 for K-types, 32 for the
//! legacy types, and 64 for Q4_1, Q5_0 and Q5_1, whose dot products take their 32-blocks in pairs
//! ([`GgmlFormat::row_multiple`], see [`Kernel::skip_reason`]); skipped pairs become notes in the
//! profile.
//!
//! A convolution is timed as its im2col matrix product: `batch · applications` rows of `x` (the output
//! pixels) against the `[out, in·kh·kw]` weight matrix; the im2col copy itself is not timed.
//!
//! Weights (N(0, 0.02)) and inputs (N(0, 1)) come from a seeded ChaCha8 generator (rand_chacha, rand_distr):
//! candle's CPU RNG cannot be seeded. Each shape's kernels are timed in `rounds` rounds; in each, a
//! kernel does at least `warmup` untimed runs (at least one: some quantized types repack their weights
//! lazily on the first call) for at least `warmup_seconds`, then its share of `repetitions` timed runs
//! (stopping early once its share of `max_seconds` has passed and its share of
//! [`MIN_PASSES`](crate::timing::MIN_PASSES) runs, at least one, is done; [`crate::timing::Schedule`],
//! as `measure` times).
//! A measurement's figure is its fastest run of all rounds, in microseconds (the module
//! [`crate::timing`] says why): on a shared machine other processes only ever slow runs down,
//! candle's quantized kernels by up to 20x (their barrier-pool threads spin-wait for each other), and
//! a profile describes the machine running the model alone. The median and interquartile range of
//! the round with the lowest median describe the spread; [`Measurement::round_medians_us`] keeps
//! every round's median.
//!
//! [`to_profile`] turns the measurements into a complete hardware profile (see [`super::profile`]).

use std::collections::BTreeMap;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use toml::Spanned;

use super::profile::{
    Calibration, DeviceClass, Header, MeasuredEntry, Memory, Overhead, Precision, ProfileFile,
    Provenance, SparsitySupport,
};
use crate::error::{Error, Result};
use crate::space::{GgmlFormat, LayerInfo, LayerKind};
use crate::timing::{CpuSample, RoundFigure, Schedule};

/// The candle-core version whose kernels are measured (pinned in Cargo.toml).
pub const CANDLE_VERSION: &str = "0.11.1";

/// One weight matrix to measure.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatrixShape {
    pub kind: LayerKind,
    /// Weight shape as stored: linear `[out, in]`, conv2d `[out, in, kh, kw]`.
    pub shape: Vec<usize>,
    /// Output features (first dimension).
    pub rows: usize,
    /// Input features: the product of the other dimensions.
    pub cols: usize,
    /// How many times the matrix is applied per sample: output pixels for a convolution (im2col rows),
    /// 1 for a linear layer.
    pub applications: usize,
}

impl MatrixShape {
    /// A linear layer with weight `[rows, cols]`.
    pub fn linear(rows: usize, cols: usize) -> MatrixShape {
        MatrixShape {
            kind: LayerKind::Linear,
            shape: vec![rows, cols],
            rows,
            cols,
            applications: 1,
        }
    }

    /// The matrix of a layer, or `None` for an embedding (a lookup, not a matrix product) or a layer
    /// without a usable shape.
    pub fn of_layer(layer: &LayerInfo) -> Option<MatrixShape> {
        if layer.kind == LayerKind::Embedding || layer.shape.is_empty() || layer.shape.contains(&0)
        {
            return None;
        }
        let rows = layer.rows() as usize;
        let cols = layer.cols() as usize;
        let applications = match layer.kind {
            LayerKind::Linear => 1,
            _ => (layer.applications().round() as usize).max(1),
        };
        Some(MatrixShape {
            kind: layer.kind,
            shape: layer.shape.clone(),
            rows,
            cols,
            applications,
        })
    }

    /// Multiply-accumulates of one product at `batch`.
    pub fn macs(&self, batch: u32) -> u64 {
        self.rows as u64 * self.cols as u64 * batch as u64 * self.applications as u64
    }

    /// Rows of `x` at `batch`.
    pub fn x_rows(&self, batch: u32) -> usize {
        batch as usize * self.applications
    }

    /// The stored shape written as `3072x768`.
    pub fn shape_string(&self) -> String {
        let s = self
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        if self.applications > 1 {
            format!("{s} ({} {}x)", self.kind, self.applications)
        } else if self.kind != LayerKind::Linear {
            format!("{s} ({})", self.kind)
        } else {
            s
        }
    }
}

/// What to measure and how often.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    pub shapes: Vec<MatrixShape>,
    pub batches: Vec<u32>,
    /// Untimed runs before timing (at least one is always done).
    pub warmup: usize,
    /// ... and keep warming up until this many seconds have passed (caches, clocks and candle's
    /// thread pool settle after switching kernels).
    pub warmup_seconds: f64,
    /// Timed runs per measurement (at most).
    pub repetitions: usize,
    /// Stop repeating a measurement after this many seconds (shared by its rounds) once its least
    /// runs are done ([`CalibrateOptions::least_per_round`]).
    pub max_seconds: f64,
    /// Rounds over all kernels of a shape; `repetitions` and `max_seconds` are split between them and
    /// each measurement keeps its fastest round (see [`Measurement::round_medians_us`]).
    pub rounds: usize,
    /// Seed of the weights and inputs.
    pub seed: u64,
    /// Kernels to measure (default: [`Kernel::all`]).
    pub kernels: Vec<Kernel>,
    /// Also time F32, Q8_0 and Q4K on a tiny `[16, 256]` weight at batch 1 (4096 MACs: almost all
    /// fixed cost), for `[overhead] per_layer_us`; reported as [`Measurement`]s with `probe = true`
    /// (default: on).
    pub overhead_probe: bool,
}

/// Default rounds of a calibration ([`CalibrateOptions::rounds`], `calibrate --rounds`): as many as
/// `measure` does, so that a prediction and a measurement take their fastest run from as many chances
/// at a quiet moment.
pub const ROUNDS: usize = 9;
/// Default timed runs of a measurement over all its rounds (`calibrate --repetitions`): 30 a round,
/// as `measure` does.
pub const REPETITIONS: usize = 270;

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            shapes: Vec::new(),
            batches: vec![1, 32],
            warmup: 2,
            warmup_seconds: 0.05,
            repetitions: REPETITIONS,
            max_seconds: 0.9,
            rounds: ROUNDS,
            seed: 0x6d70_7365_6172_6368, // "mpsearch"
            kernels: Kernel::all(),
            overhead_probe: true,
        }
    }
}

impl CalibrateOptions {
    /// Timed runs of a measurement per round, at most: its share of `repetitions`.
    pub fn reps_per_round(&self) -> usize {
        self.repetitions.max(1).div_ceil(self.rounds.max(1))
    }

    /// Timed runs of a measurement per round always done: [`MIN_PASSES`](crate::timing::MIN_PASSES)
    /// shared by the rounds.
    pub fn least_per_round(&self) -> usize {
        Schedule::least_per_round(self.rounds).min(self.reps_per_round())
    }

    /// How each measurement is timed in one round: its warm-up, and the round's share of
    /// `repetitions`, of `max_seconds` and of [`MIN_PASSES`](crate::timing::MIN_PASSES).
    pub fn schedule(&self) -> Schedule {
        Schedule {
            warmup: self.warmup.max(1),
            warmup_seconds: self.warmup_seconds,
            repetitions: self.reps_per_round(),
            max_seconds: self.max_seconds.max(0.0) / self.rounds.max(1) as f64,
            least: self.least_per_round(),
        }
    }

    /// Transformer-sized matrices without a model: BERT-base attention (768x768), FFN up (3072x768) and
    /// down (768x3072), and a 7B-class projection (4096x4096), at batch 1 and 32. About 75 s on an
    /// otherwise idle 2-core machine (release build), of which the scalar Q4_1/Q5_0/Q5_1/Q8_1 kernels
    /// on 4096x4096 at batch 32 take a quarter.
    pub fn standard_grid() -> Self {
        CalibrateOptions {
            shapes: vec![
                MatrixShape::linear(768, 768),
                MatrixShape::linear(3072, 768),
                MatrixShape::linear(768, 3072),
                MatrixShape::linear(4096, 4096),
            ],
            ..Default::default()
        }
    }

    /// The distinct weight matrices of `layers` (embeddings skipped), at batch 1 and 32.
    pub fn for_layers(layers: &[LayerInfo]) -> Self {
        let mut shapes: Vec<MatrixShape> = Vec::new();
        for s in layers.iter().filter_map(MatrixShape::of_layer) {
            if !shapes.contains(&s) {
                shapes.push(s);
            }
        }
        CalibrateOptions {
            shapes,
            ..Default::default()
        }
    }
}

impl CalibrateOptions {
    /// Checks that every shape is a consistent, non-empty matrix and every batch is at least 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::file("calibrate options", msg));
        if self.batches.contains(&0) {
            return bad("batch sizes must be >= 1".into());
        }
        for s in &self.shapes {
            let cols: usize = s.shape.iter().skip(1).product();
            if s.shape.len() < 2
                || s.shape.contains(&0)
                || s.rows != s.shape[0]
                || s.cols != cols
                || s.applications == 0
            {
                return bad(format!(
                    "shape {:?} (rows {}, cols {}, applications {}) is not a weight matrix: rows must \
                     be the first dimension, cols the product of the others, all >= 1",
                    s.shape, s.rows, s.cols, s.applications
                ));
            }
        }
        Ok(())
    }
}

/// A way of computing `y = x · Wᵀ` with candle on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// f32 matmul against the transposed weight view (candle-nn `Linear`).
    F32,
    /// Plain f16 matmul (activations and weights f16).
    F16,
    /// Plain bf16 matmul (candle widens both to f32 on every call).
    Bf16,
    /// `QMatMul` of an F16 `QTensor`: dequantized to f32 at construction, f32 matmul.
    QMatMulF16,
    /// `QMatMul` of a BF16 `QTensor`: dequantized to f32 at construction, f32 matmul.
    QMatMulBf16,
    /// `QMatMul` of a quantized `QTensor` (never F32/F16/BF16).
    Quant(GgmlDType),
}

/// Candle's types of the GGML block formats of the notation, in the order they are measured (the
/// SIMD kernels first, the scalar Q4_1/Q5_0/Q5_1 last).
pub const QUANT_TYPES: [GgmlDType; 10] = [
    GgmlDType::Q8_0,
    GgmlDType::Q6K,
    GgmlDType::Q5K,
    GgmlDType::Q4K,
    GgmlDType::Q4_0,
    GgmlDType::Q3K,
    GgmlDType::Q2K,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
];

/// The GGML block format of a candle type, if it is one of the notation's.
pub fn ggml_format(t: GgmlDType) -> Option<GgmlFormat> {
    GgmlFormat::ALL
        .into_iter()
        .find(|&g| crate::compress::ggml::dtype(g) == t)
}

impl Kernel {
    /// Every kernel: the float ones, then [`QUANT_TYPES`].
    pub fn all() -> Vec<Kernel> {
        let mut v = vec![
            Kernel::F32,
            Kernel::F16,
            Kernel::Bf16,
            Kernel::QMatMulF16,
            Kernel::QMatMulBf16,
        ];
        v.extend(QUANT_TYPES.iter().map(|&t| Kernel::Quant(t)));
        v
    }

    /// The name written in tables and profiles: `F32`, `F16`, `BF16`, `QMatMul-F16`, `QMatMul-BF16`,
    /// or the candle type (`Q4K`, `Q8_0`…).
    pub fn name(&self) -> String {
        match self {
            Kernel::F32 => "F32".into(),
            Kernel::F16 => "F16".into(),
            Kernel::Bf16 => "BF16".into(),
            Kernel::QMatMulF16 => "QMatMul-F16".into(),
            Kernel::QMatMulBf16 => "QMatMul-BF16".into(),
            Kernel::Quant(t) => format!("{t:?}"),
        }
    }

    /// Parses a [`Kernel::name`].
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::all().into_iter().find(|k| k.name() == name)
    }

    /// The precision a profile charges with this kernel's times: what `mpsearch measure` runs for it
    /// (f32: `F32`; f16: the plain `F16` matmul; a GGML format: its `QMatMul`); `None` for the kernels
    /// timed for the table only (`BF16`, `QMatMul-F16`, `QMatMul-BF16`, `Q8K`, `Q8_1`).
    pub fn precision(&self) -> Option<Precision> {
        match self {
            Kernel::F32 => Some(Precision::F32),
            Kernel::F16 => Some(Precision::F16),
            Kernel::Bf16 | Kernel::QMatMulF16 | Kernel::QMatMulBf16 => None,
            Kernel::Quant(t) => ggml_format(*t).map(Precision::Ggml),
        }
    }

    /// Integer bit-width of a quantized type; `None` for float kernels.
    pub fn bits(&self) -> Option<u8> {
        match self {
            Kernel::Quant(t) => Some(quant_bits(*t)),
            _ => None,
        }
    }

    /// In-features must be a multiple of this: 1 for floats, the block size for quantized types (256
    /// for K-types, 32 for the others), except Q4_1, Q5_0 and Q5_1, whose candle dot products assert
    /// an even number of 32-blocks (64); a failed assertion panics inside candle's thread pool and
    /// poisons it for the rest of the process, so such shapes must never reach the kernel.
    pub fn in_features_multiple(&self) -> usize {
        match self {
            Kernel::Quant(t) => ggml_format(*t).map_or(t.block_size(), |g| g.row_multiple()),
            _ => 1,
        }
    }

    /// Why this kernel cannot run on `shape`, or `None` if it can.
    pub fn skip_reason(&self, shape: &MatrixShape) -> Option<String> {
        let b = self.in_features_multiple();
        let why = match self {
            Kernel::Quant(t) if b != t.block_size() => {
                format!(
                    "its dot product takes its {}-blocks in pairs",
                    t.block_size()
                )
            }
            _ => "its block size".to_string(),
        };
        (shape.cols % b != 0).then(|| {
            format!(
                "{} skipped on {} {}: in-features {} not a multiple of {b} ({why})",
                self.name(),
                shape.kind,
                shape.shape_string(),
                shape.cols
            )
        })
    }
}

/// Bits per weight value of a quantized candle type (scales not counted).
fn quant_bits(t: GgmlDType) -> u8 {
    match t {
        GgmlDType::Q2K => 2,
        GgmlDType::Q3K => 3,
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K => 4,
        GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q5K => 5,
        GgmlDType::Q6K => 6,
        GgmlDType::Q8_0 | GgmlDType::Q8_1 | GgmlDType::Q8K => 8,
        GgmlDType::F16 | GgmlDType::BF16 => 16,
        GgmlDType::F32 => 32,
    }
}

/// A kernel with its weight in place: [`Prepared::forward`] is exactly what [`measure`] times.
pub struct Prepared {
    kernel: Kernel,
    op: Op,
}

enum Op {
    /// `x.matmul(&w.t())` with `w` `[rows, cols]` of x's dtype.
    Matmul(Tensor),
    Q(QMatMul),
}

impl Prepared {
    /// Builds `kernel` for the f32 weight `w` `[rows, cols]`: converts or quantizes it once, outside
    /// the timed region.
    pub fn new(kernel: Kernel, w: &Tensor) -> Result<Prepared> {
        let (_, cols) = w.dims2()?;
        if cols % kernel.in_features_multiple() != 0 {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "{}: in-features {cols} not a multiple of {}",
                kernel.name(),
                kernel.in_features_multiple()
            ))));
        }
        let qmatmul = |t: GgmlDType| -> Result<Op> {
            let q = QTensor::quantize(w, t)?;
            Ok(Op::Q(QMatMul::from_qtensor(q)?))
        };
        let op = match kernel {
            Kernel::F32 => Op::Matmul(w.contiguous()?),
            Kernel::F16 => Op::Matmul(w.to_dtype(DType::F16)?),
            Kernel::Bf16 => Op::Matmul(w.to_dtype(DType::BF16)?),
            Kernel::QMatMulF16 => qmatmul(GgmlDType::F16)?,
            Kernel::QMatMulBf16 => qmatmul(GgmlDType::BF16)?,
            Kernel::Quant(t) => qmatmul(t)?,
        };
        Ok(Prepared { kernel, op })
    }

    /// The kernel.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The f32 input `x` `[m, cols]` in the kernel's activation dtype (f16/bf16 for the plain half
    /// kernels, f32 otherwise): activations of a half-precision model are already half.
    pub fn input(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = match self.kernel {
            Kernel::F16 => DType::F16,
            Kernel::Bf16 => DType::BF16,
            _ => DType::F32,
        };
        Ok(x.to_dtype(dtype)?.contiguous()?)
    }

    /// Computes `y = x · Wᵀ`, `[m, rows]`, for `x` from [`Prepared::input`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.op {
            Op::Matmul(w) => x.matmul(&w.t()?)?,
            Op::Q(q) => q.forward(x)?,
        })
    }
}

/// One timed kernel on one shape and batch.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub shape: MatrixShape,
    pub batch: u32,
    /// [`Kernel::name`]: `F32`, `F16`, `BF16`, `QMatMul-F16`, `QMatMul-BF16`, `Q4K`…
    pub kernel: String,
    /// Integer bit-width of a quantized type; `None` for float kernels.
    pub bits: Option<u8>,
    /// What a profile charges with this measurement ([`Kernel::precision`]); `None` for the kernels
    /// timed for the table only.
    pub precision: Option<Precision>,
    /// The fastest timed run of all rounds, µs: the figure a profile records.
    pub fastest_us: f64,
    /// Median of the timed runs of the round with the lowest median, µs.
    pub median_us: f64,
    /// Interquartile range of that round's runs, µs.
    pub spread_us: f64,
    /// Timed runs done (over all rounds).
    pub repetitions: usize,
    /// The median of each round. Other load on the machine slows whole rounds (candle's quantized
    /// kernels by up to 20x when their threads have to share a core).
    pub round_medians_us: Vec<f64>,
    /// Share of the machine's CPU time (0..1) that other processes used during the reported round (of
    /// all kernels of this shape), from `/proc/stat`; `None` off Linux or when the round was too
    /// short to tell (under 0.1 s).
    pub other_load: Option<f64>,
    /// The overhead probe (see [`CalibrateOptions::overhead_probe`]), not a requested shape.
    pub probe: bool,
}

impl Measurement {
    /// The measurement of `kernel` on `shape` at `batch` with figure `f`.
    pub fn new(shape: &MatrixShape, batch: u32, kernel: Kernel, f: RoundFigure) -> Measurement {
        Measurement {
            shape: shape.clone(),
            batch,
            kernel: kernel.name(),
            bits: kernel.bits(),
            precision: kernel.precision(),
            fastest_us: f.fastest_us,
            median_us: f.median_us,
            spread_us: f.spread_us,
            repetitions: f.runs,
            round_medians_us: f.round_medians_us,
            other_load: f.other_load,
            probe: false,
        }
    }

    /// Slowest round median over fastest: near 1 on a quiet machine.
    pub fn round_disagreement(&self) -> f64 {
        crate::timing::round_disagreement(self.median_us, &self.round_medians_us)
    }
}

impl Measurement {
    /// Sustained GMAC/s of this measurement (at its fastest run).
    pub fn gmacs(&self) -> f64 {
        self.shape.macs(self.batch) as f64 / (self.fastest_us * 1e3)
    }
}

/// `n` values of N(0, std²) from a ChaCha8 generator seeded with `seed`.
fn normals(seed: u64, n: usize, std: f32) -> Result<Vec<f32>> {
    use rand::SeedableRng;
    let dist = rand_distr::Normal::new(0.0f32, std)
        .map_err(|e| Error::compress(format!("normal distribution with std {std}: {e}")))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Ok((0..n).map(|_| rand::Rng::sample(&mut rng, dist)).collect())
}

/// A seeded f32 weight `[rows, cols]`, N(0, 0.02) (BERT's initialiser scale).
pub fn weight(rows: usize, cols: usize, seed: u64) -> Result<Tensor> {
    let seed = seed ^ ((rows as u64) << 32) ^ cols as u64;
    Ok(Tensor::from_vec(
        normals(seed, rows * cols, 0.02)?,
        (rows, cols),
        &Device::Cpu,
    )?)
}

/// A seeded f32 input `[m, cols]`, N(0, 1).
pub fn input(m: usize, cols: usize, seed: u64) -> Result<Tensor> {
    let seed = !seed ^ ((m as u64) << 32) ^ cols as u64;
    Ok(Tensor::from_vec(
        normals(seed, m * cols, 1.0)?,
        (m, cols),
        &Device::Cpu,
    )?)
}

/// [`weight`] `[rows, cols]` and [`input`] `[m, cols]`.
pub fn operands(rows: usize, cols: usize, m: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    Ok((weight(rows, cols, seed)?, input(m, cols, seed)?))
}

/// Times every runnable kernel of `opts.kernels` on every shape and batch. A kernel that cannot run on
/// a shape (see [`Kernel::skip_reason`]) is left out; [`to_profile`] records why. `progress` is called
/// before each timed (round, shape, kernel, batch) with the count done, the total and a description.
///
/// Each shape's kernels are prepared once (weights converted or quantized), then timed in
/// `opts.rounds` rounds over all its kernels and batches, each round doing its share of the
/// repetitions and of the time budget; a measurement's figure is its fastest run of all rounds (see
/// [`Measurement::fastest_us`]).
pub fn measure(
    opts: &CalibrateOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Vec<Measurement>> {
    opts.validate()?;
    let rounds = opts.rounds.max(1);
    let probe = opts
        .overhead_probe
        .then(|| MatrixShape::linear(PROBE_ROWS, PROBE_COLS));
    let total = rounds
        * (opts.shapes.len() * opts.batches.len() * opts.kernels.len()
            + probe.as_ref().map_or(0, |_| PROBE_KERNELS.len()));
    let mut run = Run {
        opts,
        rounds,
        total,
        done: 0,
        progress,
    };
    let mut out = Vec::new();
    if let Some(shape) = &probe {
        let mut m = run.shape(shape, &PROBE_KERNELS, &[1])?;
        m.iter_mut().for_each(|m| m.probe = true);
        out.extend(m);
    }
    for shape in &opts.shapes {
        out.extend(run.shape(shape, &opts.kernels, &opts.batches)?);
    }
    (run.progress)(run.done, total, "done");
    Ok(out)
}

/// The overhead probe: a `[16, 256]` weight (4096 multiply-accumulates per row of `x`) and the
/// kernels timed on it: f32 gemm, and candle's quantized path with and without weight repacking.
const PROBE_ROWS: usize = 16;
const PROBE_COLS: usize = 256;
const PROBE_KERNELS: [Kernel; 3] = [
    Kernel::F32,
    Kernel::Quant(GgmlDType::Q8_0),
    Kernel::Quant(GgmlDType::Q4K),
];

/// One [`measure`] call in progress.
struct Run<'a> {
    opts: &'a CalibrateOptions,
    rounds: usize,
    total: usize,
    done: usize,
    progress: &'a mut dyn FnMut(usize, usize, &str),
}

/// A kernel ready to time on one shape, with its inputs per batch (`None`: it cannot run there).
type Ready = Option<(Prepared, Vec<Tensor>)>;

/// The timed runs of one round of a (kernel, batch), with the round's index.
type Round = (Vec<f64>, usize);

impl Run<'_> {
    /// Times `kernels` on `shape` at `batches`, in rounds.
    fn shape(
        &mut self,
        shape: &MatrixShape,
        kernels: &[Kernel],
        batches: &[u32],
    ) -> Result<Vec<Measurement>> {
        let schedule = self.opts.schedule();
        let w = weight(shape.rows, shape.cols, self.opts.seed)?;
        let xs = batches
            .iter()
            .map(|&b| input(shape.x_rows(b), shape.cols, self.opts.seed))
            .collect::<Result<Vec<_>>>()?;
        // per kernel: prepared in the first round
        let mut prepared: Vec<Ready> = Vec::new();
        // per (kernel, batch): the timed runs of each round
        let mut times: Vec<Vec<Vec<Round>>> = vec![vec![Vec::new(); xs.len()]; kernels.len()];
        // per round: the CPU share other processes used during it
        let mut round_load = Vec::with_capacity(self.rounds);
        for round in 0..self.rounds {
            let before = CpuSample::now();
            for (ki, &kernel) in kernels.iter().enumerate() {
                if round == 0 {
                    prepared.push(prepare(kernel, shape, &w, &xs)?);
                }
                for (bi, &batch) in batches.iter().enumerate() {
                    let ready = prepared[ki].as_ref();
                    self.report(shape, kernel, batch, ready.map(|_| round));
                    let Some((p, inputs)) = ready else {
                        continue;
                    };
                    let x = &inputs[bi];
                    let runs = schedule.time(|| {
                        std::hint::black_box(p.forward(x)?);
                        Ok(())
                    })?;
                    times[ki][bi].push((runs, round));
                }
            }
            round_load.push(
                before
                    .zip(CpuSample::now())
                    .and_then(|(b, a)| b.others_until(&a)),
            );
        }
        Ok(summarise(shape, kernels, batches, &mut times, &round_load))
    }

    /// Reports the (shape, kernel, batch) about to be timed in `round` (`None`: skipped) and counts it.
    fn report(&mut self, shape: &MatrixShape, kernel: Kernel, batch: u32, round: Option<usize>) {
        let what = match round {
            None => format!(
                "{} batch {batch} {}: skipped",
                shape.shape_string(),
                kernel.name()
            ),
            Some(round) => format!(
                "{} batch {batch} {} (round {}/{})",
                shape.shape_string(),
                kernel.name(),
                round + 1,
                self.rounds
            ),
        };
        (self.progress)(self.done, self.total, &what);
        self.done += 1;
    }
}

/// `kernel` prepared on the weight `w` of `shape`, with its inputs for each of `xs`; `None` if it
/// cannot run on `shape`.
fn prepare(kernel: Kernel, shape: &MatrixShape, w: &Tensor, xs: &[Tensor]) -> Result<Ready> {
    if kernel.skip_reason(shape).is_some() {
        return Ok(None);
    }
    let p = Prepared::new(kernel, w)?;
    let inputs = xs.iter().map(|x| p.input(x)).collect::<Result<Vec<_>>>()?;
    Ok(Some((p, inputs)))
}

/// One measurement per timed (batch, kernel) of `shape`, batch-major: its [`RoundFigure`].
fn summarise(
    shape: &MatrixShape,
    kernels: &[Kernel],
    batches: &[u32],
    times: &mut [Vec<Vec<Round>>],
    round_load: &[Option<f64>],
) -> Vec<Measurement> {
    let mut out = Vec::new();
    for (bi, &batch) in batches.iter().enumerate() {
        for (ki, &kernel) in kernels.iter().enumerate() {
            let rounds = times[ki][bi]
                .iter()
                .map(|(t, round)| (t.as_slice(), round_load[*round]));
            let Some(f) = RoundFigure::of(rounds) else {
                continue;
            };
            out.push(Measurement::new(shape, batch, kernel, f));
        }
    }
    out
}

/// The notes [`to_profile`] records: every kernel of `opts` that could not run on a shape, and why.
pub fn skip_notes(opts: &CalibrateOptions) -> Vec<String> {
    let mut notes = Vec::new();
    for shape in &opts.shapes {
        for k in &opts.kernels {
            if let Some(r) = k.skip_reason(shape) {
                notes.push(r);
            }
        }
    }
    notes
}

/// A human-readable table: shape, batch, kernel, bits, fastest µs, spread µs, ratio to f32 (of the same
/// shape and batch), GMAC/s, slowest round over fastest ("rounds ×"), and the share of the CPUs
/// other processes used during the reported round ("others %", see [`Measurement::other_load`]).
pub fn table(ms: &[Measurement]) -> String {
    let f32_us = |m: &Measurement| {
        ms.iter()
            .find(|o| {
                o.shape == m.shape && o.batch == m.batch && o.probe == m.probe && o.kernel == "F32"
            })
            .map(|o| o.fastest_us)
    };
    let rows: Vec<[String; 10]> = ms
        .iter()
        .map(|m| {
            [
                match m.probe {
                    true => format!("{} (overhead probe)", m.shape.shape_string()),
                    false => m.shape.shape_string(),
                },
                m.batch.to_string(),
                m.kernel.clone(),
                m.bits.map_or("-".into(), |b| b.to_string()),
                format!("{:.1}", m.fastest_us),
                format!("{:.1}", m.spread_us),
                f32_us(m).map_or("-".into(), |f| format!("{:.2}", m.fastest_us / f)),
                format!("{:.2}", m.gmacs()),
                format!("{:.2}", m.round_disagreement()),
                m.other_load
                    .map_or("-".into(), |l| format!("{:.0}", l * 100.0)),
            ]
        })
        .collect();
    let head = [
        "shape",
        "batch",
        "kernel",
        "bits",
        "fastest µs",
        "spread µs",
        "× f32",
        "GMAC/s",
        "rounds ×",
        "others %",
    ];
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            if i < 3 {
                s.push_str(&format!("{c}{pad}  "));
            } else {
                s.push_str(&format!("{pad}{c}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(&head.map(String::from));
    s.push_str(&line(
        &width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    let mut last: Option<(&MatrixShape, u32, bool)> = None;
    for (m, r) in ms.iter().zip(&rows) {
        if last.is_some_and(|l| l != (&m.shape, m.batch, m.probe)) {
            s.push('\n');
        }
        last = Some((&m.shape, m.batch, m.probe));
        s.push_str(&line(r));
    }
    s
}

pub mod in_model;
mod write;

pub use write::{cpu_model, to_profile, today};

#[cfg(test)]
mod tests {
    use super::write::*;
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
    }

    #[test]
    fn intercept_fits_a_line() {
        let b = intercept(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]);
        assert!((b - 1.0).abs() < 1e-9);
        assert_eq!(intercept(&[(1.0, 3.0)]), 0.0);
        assert_eq!(intercept(&[(1.0, 1.0), (2.0, 5.0)]), 0.0);
    }

    #[test]
    fn kernel_names_round_trip() {
        for k in Kernel::all() {
            assert_eq!(Kernel::from_name(&k.name()), Some(k));
        }
        assert_eq!(Kernel::Quant(GgmlDType::Q4K).name(), "Q4K");
        assert_eq!(Kernel::Quant(GgmlDType::Q8_0).name(), "Q8_0");
    }

    #[test]
    fn every_ggml_format_is_timed_and_charged_as_itself() {
        for g in GgmlFormat::ALL {
            let k = Kernel::Quant(crate::compress::ggml::dtype(g));
            assert!(Kernel::all().contains(&k), "{g} is not timed");
            assert_eq!(k.precision(), Some(Precision::Ggml(g)));
            assert_eq!(k.in_features_multiple(), g.row_multiple(), "{g}");
        }
        assert_eq!(Kernel::Quant(GgmlDType::Q8K).precision(), None);
        assert_eq!(Kernel::Bf16.precision(), None);
        assert_eq!(Kernel::QMatMulF16.precision(), None);
        assert_eq!(Kernel::F16.precision(), Some(Precision::F16));
    }
}
