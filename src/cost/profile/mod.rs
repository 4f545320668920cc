//! # Hardware profiles
//!
//! A profile describes one target device to the cost model: sustained compute throughput per kernel
//! precision, which weight-only kernels it has, what it does with each GGML block format (its kernel's
//! rate, or a fallback), memory bandwidth, per-layer overhead, which sparsity patterns it accelerates
//! and at which precisions, what a precision it lacks runs as, optional measured latencies that
//! override the analytic model, and where every number came from.
//!
//! The file format (TOML; every table but `[profile]`, `[provenance]`, `[compute]` and `[memory]` may be
//! left out):
//!
//! ```toml
//! [profile]
//! name = "cortex-a76"
//! description = "Phone big core, Arm Cortex-A76 class, one thread"
//! device = "cpu"                 # cpu | gpu | npu | accelerator
//!
//! [provenance]
//! sources = ["Arm Cortex-A76 Software Optimization Guide", "..."]
//! date = "2026-11-25"
//! method = "analytic: peak NEON throughput x 0.6 sustained; STREAM-class bandwidth"
//!
//! [compute]                      # sustained dense GMAC/s per kernel precision; f32 is required
//! f32 = 19.2
//! f16 = 38.4
//! int8 = 76.8                    # integer weights x int8 activations (choices with act8-*)
//! # bit_serial_gbops = 4096.0    # bit-serial: an int layer of w-bit weights and a-bit activations
//! #                              # runs at bit_serial_gbops / (w * a) GMAC/s
//!
//! [weight_only]                  # kernels that multiply stored int weights with float activations
//! precision = "f32"              # the float precision they multiply in (a float entry of [compute])
//! bits = [8, 4]                  # weight widths with such a kernel; narrower weights are unpacked to
//!                                # the next listed width; wider ones (or no table) are dequantized to
//!                                # an f32 copy that the f32 kernel reads
//!
//! [memory]
//! bandwidth_gbs = 12.0           # sustained GB/s for streaming weights and activations
//!
//! [overhead]
//! per_layer_us = 2.0             # fixed cost of launching one kernel
//!
//! [sparsity]
//! nm = ["2:4"]                   # N:M patterns computed at N/M of the dense work ...
//! nm_precisions = ["int8", "f16"] # ... by the kernels of these precisions (left out: every precision)
//! unstructured_efficiency = 0.0  # share of the pruned work an unstructured-sparse layer saves
//!
//! [fallback]                     # kernel precisions the device lacks, and what they run as
//! int4 = "int8"
//! bf16 = { copy = "f32" }        # a float precision may run from a copy made once at load (the
//!                                # kernel then reads f32 weights), not widened inside the kernel
//!
//! [ggml]                         # per GGML block format: its kernel (weights as stored, activations
//! q4_k = 63.6                    # quantized on the fly to Q8_K / Q8_0 / Q8_1 blocks) at this GMAC/s,
//! q8_0 = 63.6
//! q5_0 = { fallback = "f32" }    # or no kernel: a dequantized copy in a float precision of [compute],
//! q4_0 = { fallback = "q8_0" }   # or a format with a kernel here that holds it exactly (converted
//!                                # once at load: q4_0 -> q5_0 / q8_0, q5_0 -> q8_0, q4_1 -> q5_1,
//!                                # q4_k -> q5_k, q3_k -> q6_k)
//!
//! [[measured]]                   # measured latencies; a matching entry wins over the analytic model
//! kind = "linear"
//! shape = [3072, 768]
//! batch = 1
//! weights = "int4"               # f32 | f16 | bf16 | int<b> | a GGML block format (q4_k ...)
//! act = "act8-dynamic"           # none | act8-static | act8-dynamic (default none; none for q-formats)
//! sparsity = "dense"             # dense | sparse<P> | <N>:<M> | channels<P> (default dense)
//! us = 75.3
//! spread_us = 4.0                # optional: interquartile range
//! kernel = "Q4K"                 # optional: what ran
//! # rank = 50                    # optional: a whole rank<50> layer (both factors; shape is the
//! #                              # layer's own, its rows the kept ones under channels<P>)
//! # conv = "tucker25"            # optional: a whole tucker<P> / cp<P> convolution (its chain;
//! #                              # shape is the layer's own, weights "f32": the chain runs in f32)
//!
//! [[model]]                      # a model's non-matmul work, measured by `calibrate --model`
//! name = "all-MiniLM-L6-v2"      # for people
//! layers = "5be0c2a1d3f4e5a6"    # the model's layer key (names, kinds, shapes: [`layers_key`])
//! batch = 32                     # the cost batch (images, or tokens) it was measured at
//! us = 7404.0                    # attention, norms, activations, biases, residuals: the forward
//!                                # pass's time outside its layers' products and look-ups
//! spread_us = 210.0              # optional: interquartile range
//! input = "1 sentence of 32 tokens"  # optional: what was timed
//! spill_us = { q4_k = 240.0 }    # optional: per layer on that kernel, the time it adds to the
//!                                # rest of the pass (its pool's threads spin after each product)
//! ```
//!
//! A `[[model]]` term is added once to every assignment of the model whose layers it names ([`HardwareProfile::non_matmul_us`]):
//! at a batch it was measured at, its figure; between two, interpolated linearly in the batch; beyond
//! them, extrapolated along the nearest two (never below zero), or the one figure there is. Its
//! `spill_us` is added once per layer (not an embedding look-up) whose kernel runs that precision
//! ([`HardwareProfile::spill_us`]), at the same batches, interpolated the same way (it may be
//! negative: a measured figure, not a floor).
//!
//! Without an explicit `[fallback]` entry a missing integer precision runs as the next wider integer
//! precision the device has, then as f16, then f32; f16 and bf16 fall back to f32 (widened inside the
//! kernel, reading the stored 16-bit weights, unless the entry says `{ copy = … }`).
//!
//! **GGML block formats** (`q4_k`…, [`GgmlFormat`]) name their kernel's arithmetic: block-quantized
//! weights times activations the kernel quantizes on the fly ([`GgmlFormat::act_blocks`]). A format
//! with a `[ggml]` rate runs that kernel, reading its exact block bytes. A format the `[ggml]` table
//! leaves out — or a profile without the table — runs as a **dequantized f32 copy** read by the f32
//! kernel, plus a quantize–dequantize pass of the input to the format's activation blocks (what it
//! takes to compute the notation's arithmetic without the kernel), as `{ fallback = "f32" }` does. A
//! fallback to an integer kernel is refused: an integer kernel multiplies int8 activations with one
//! range per tensor or sample, not per block. The keys are the formats' names; `[compute]` and
//! `[fallback]` refuse them (they belong here), and so do `[weight_only]` and `nm_precisions`.
//!
//! Older files keep loading with the meaning they had: `[compute] weight_only = "<precision>"` is a
//! weight-only kernel of that precision for every integer width (`[weight_only] precision = …, bits =
//! [2, …, 8]`; giving both forms is an error), and `nm` without `nm_precisions` is accelerated at every
//! precision. In a profile written by `mpsearch calibrate` (it has a `[calibration]` table), an integer
//! `[[measured]]` entry with `act = "none"` is read as `act8-dynamic`: older versions of `calibrate`
//! timed candle's quantized kernels, which quantize the activations on the fly, for the integer widths
//! (and `[calibration] bit_types` says which). Such a profile keeps those integer rates and entries; a
//! profile calibrated now has none (candle has no integer kernel: `int<b>` falls back to a
//! dequantized f32 copy), and times the GGML block formats as themselves (`[ggml]` and their own
//! `[[measured]]` entries).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::space::{ActBlocks, ActQuant, GgmlFormat, Sparsity, WeightQuant};

mod check;

use check::Checker;

/// A kernel precision: what a device multiplies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    F32,
    F16,
    Bf16,
    /// Integer weights of this many bits.
    Int(u8),
    /// A GGML block format's weights (`q4_k`…), multiplied by that format's kernel.
    Ggml(GgmlFormat),
    /// The 8-bit activation blocks a GGML kernel quantizes its input to (`q8_k`, `q8_0`, `q8_1`):
    /// only ever the activations of a [`Precision::Ggml`] kernel, never a profile key.
    Q8(ActBlocks),
}

impl Precision {
    /// Bits per weight value (a GGML format's code bits; its blocks' scales are not counted).
    pub fn bits(&self) -> u8 {
        match self {
            Precision::F32 => 32,
            Precision::F16 | Precision::Bf16 => 16,
            Precision::Int(b) => *b,
            Precision::Ggml(g) => g.code_bits(),
            Precision::Q8(_) => 8,
        }
    }

    /// Whether this is one of the float precisions.
    pub fn is_float(&self) -> bool {
        matches!(self, Precision::F32 | Precision::F16 | Precision::Bf16)
    }

    /// The precision of a weight format: the float formats and integer widths as themselves, a GGML
    /// block format as itself (its own kernel's arithmetic).
    pub fn of_weights(w: &WeightQuant) -> Precision {
        match w {
            WeightQuant::F32 => Precision::F32,
            WeightQuant::F16 => Precision::F16,
            WeightQuant::Bf16 => Precision::Bf16,
            WeightQuant::Int { bits, .. } => Precision::Int(*bits),
            WeightQuant::Ggml(g) => Precision::Ggml(*g),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precision::F32 => f.write_str("f32"),
            Precision::F16 => f.write_str("f16"),
            Precision::Bf16 => f.write_str("bf16"),
            Precision::Int(b) => write!(f, "int{b}"),
            Precision::Ggml(g) => write!(f, "{g}"),
            Precision::Q8(a) => write!(f, "{a}"),
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    /// `f32`, `f16`, `bf16`, `int2`..`int8` or a GGML block format (`q4_k`…); activation blocks
    /// (`q8_k`, `q8_1`) are not weight precisions and do not parse.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            _ => {
                if let Some(g) = GgmlFormat::ALL.into_iter().find(|g| g.name() == s) {
                    return Ok(Precision::Ggml(g));
                }
                s.strip_prefix("int")
                    .and_then(|b| b.parse::<u8>().ok())
                    .filter(|b| crate::space::BITS.contains(b))
                    .map(Precision::Int)
                    .ok_or_else(|| {
                        format!(
                            "`{s}` is not a precision; use f32, f16, bf16, int2..int8 or a GGML block \
                             format (q2_k, q3_k, q4_k, q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1)"
                        )
                    })
            }
        }
    }
}

impl Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The class of device, for people reading the profile list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Cpu,
    Gpu,
    Npu,
    Accelerator,
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceClass::Cpu => "cpu",
            DeviceClass::Gpu => "gpu",
            DeviceClass::Npu => "npu",
            DeviceClass::Accelerator => "accelerator",
        })
    }
}

/// `[profile]`: what the device is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub description: String,
    pub device: DeviceClass,
}

/// `[provenance]`: where the numbers come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Public sources (documents, papers, datasheets) behind the numbers.
    pub sources: Vec<String>,
    /// When the numbers were written or measured (YYYY-MM-DD).
    pub date: String,
    /// How the numbers were obtained.
    pub method: String,
    /// Measuring machine, for calibrated profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
    /// The threads candle ran on while measuring (`RAYON_NUM_THREADS`, else the physical cores): a
    /// small model's latency changes several-fold with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candle_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetitions: Option<usize>,
}

/// `[compute]` as written: GMAC/s per precision (`f32 = 19.2`), plus `bit_serial_gbops = <number>` and
/// the older form `weight_only = "<precision>"` (see the module docs).
pub type ComputeFile = BTreeMap<String, Spanned<toml::Value>>;

/// `[weight_only]`: the device's weight-only kernels, which read integer weights as stored, dequantize
/// them inside the kernel and multiply them with float activations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightOnlyFile {
    /// The float precision they multiply in.
    pub precision: Spanned<String>,
    /// The integer weight widths that have such a kernel.
    pub bits: Vec<Spanned<u8>>,
}

/// `[memory]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub bandwidth_gbs: Spanned<f64>,
}

/// `[overhead]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overhead {
    #[serde(default)]
    pub per_layer_us: f64,
}

/// `[sparsity]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparsitySupport {
    #[serde(default)]
    pub nm: Vec<Spanned<String>>,
    /// Kernel precisions whose kernels compute the `nm` patterns sparsely; left out: every precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nm_precisions: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub unstructured_efficiency: Option<Spanned<f64>>,
}

/// One `[[measured]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredEntry {
    pub kind: crate::space::LayerKind,
    pub shape: Vec<usize>,
    pub batch: u32,
    pub weights: Precision,
    #[serde(default = "default_act")]
    pub act: String,
    #[serde(default = "default_sparsity")]
    pub sparsity: String,
    pub us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// A factorized layer's rank, percent of full rank kept: the entry times the whole layer, both
    /// factors, at the layer's own `shape` (not one factor's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<u8>,
    /// A factorized convolution, `tucker<P>` or `cp<P>`: the entry times the whole layer, every
    /// convolution of its chain, at the layer's own `shape` (with `weights = "f32"`: the chain runs
    /// its factors' values in f32 whatever their format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv: Option<String>,
}

fn default_act() -> String {
    "none".into()
}
fn default_sparsity() -> String {
    "dense".into()
}

/// `[calibration]`: facts `mpsearch calibrate` found about candle's kernels on the measured machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Older calibrated profiles only: integer bit-width -> the candle type whose rate `[compute]` gave
    /// it (e.g. `"4" = "Q4K"`). Read and kept, no longer written: candle has no integer kernel, so a
    /// calibrated profile now charges `int<b>` choices as the dequantized f32 copy `measure` runs, and
    /// the candle types are the GGML block formats' own `[ggml]` rates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bit_types: BTreeMap<String, String>,
    /// Candle types with no fast kernel on this CPU (slower than f32 at batch 1).
    #[serde(default)]
    pub slow_kernels: Vec<String>,
    /// Candle types that could not run on some measured shape, with the reason.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A profile file exactly as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub profile: Header,
    pub provenance: Provenance,
    pub compute: ComputeFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_only: Option<WeightOnlyFile>,
    pub memory: Memory,
    #[serde(default)]
    pub overhead: Overhead,
    #[serde(default)]
    pub sparsity: SparsitySupport,
    #[serde(default)]
    pub fallback: BTreeMap<String, Spanned<toml::Value>>,
    /// `[ggml]` as written: per GGML block format, its kernel's GMAC/s or `{ fallback = "<precision>" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ggml: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measured: Vec<MeasuredEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// `[[model]]`: models' non-matmul work.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model: Vec<ModelTerm>,
}

/// One `[[model]]` entry: a model's non-matmul work at one batch (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTerm {
    pub name: String,
    /// [`layers_key`] of the model's layers.
    pub layers: String,
    pub batch: u32,
    pub us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Per kernel precision: the time each layer running that kernel adds to the **rest** of the
    /// pass, µs (`calibrate --model`, [`crate::cost::calibrate::in_model`]: candle's block formats run
    /// on their own thread pool, whose spinning threads slow the f32 products and the non-matmul
    /// work after them). Charged per layer, on top of the layer's own measured time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spill_us: BTreeMap<Precision, f64>,
}

/// The key a `[[model]]` term names its model by: 16 hex digits of a hash of the layers' names, kinds
/// and shapes — what fixes the work outside them (a fine-tuned copy of a model shares its key; its
/// weights do not change its attention or norms).
pub fn layers_key(layers: &[crate::space::LayerInfo]) -> String {
    let mut h = blake3::Hasher::new();
    for l in layers {
        h.update(format!("{}\t{}\t{:?}\n", l.name, l.kind, l.shape).as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

/// The value at `batch` of figures measured at some batches: the figure at a measured batch; between
/// two, linear in the batch; beyond them, along the nearest two; the one figure there is. `None`
/// without a figure.
fn along_batch(at: impl Iterator<Item = (f64, f64)>, batch: u32) -> Option<f64> {
    let mut at: Vec<(f64, f64)> = at.collect();
    at.sort_by(|a, b| a.0.total_cmp(&b.0));
    let b = f64::from(batch);
    let line = |p: (f64, f64), q: (f64, f64)| p.1 + (q.1 - p.1) * (b - p.0) / (q.0 - p.0);
    match at.as_slice() {
        [] => None,
        [one] => Some(one.1),
        _ => {
            let i = at.partition_point(|p| p.0 < b).clamp(1, at.len() - 1);
            Some(line(at[i - 1], at[i]))
        }
    }
}

/// Key of a measured entry: everything that must match for it to apply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeasuredKey {
    pub kind: crate::space::LayerKind,
    pub shape: Vec<usize>,
    pub batch: u32,
    pub weights: Precision,
    pub act: ActQuant,
    pub sparsity: Sparsity,
    /// `Some(r)`: a whole `rank<r>` layer (both factors), keyed by the layer's shape.
    pub rank: Option<u8>,
    /// `Some(f)`: a whole `tucker<P>` / `cp<P>` layer (its chain of convolutions), keyed by the
    /// layer's shape.
    pub conv: Option<crate::space::ConvFactor>,
}

/// A device's weight-only kernels: integer weights read as stored (at the kernel's width), dequantized
/// inside the kernel and multiplied with float activations in `precision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightOnlyKernels {
    /// The float precision they multiply in.
    pub precision: Precision,
    /// The integer weight widths that have a kernel, ascending.
    pub bits: Vec<u8>,
}

/// The forms a `[fallback]` value takes.
const FALLBACK_FORMS: &str = "write the precision it runs as (\"int8\", \"f32\"), or for a float \
    precision run from a copy made at load, { copy = \"f32\" }";

/// The forms a `[ggml]` value takes.
const GGML_FORMS: &str =
    "write the kernel's sustained GMAC/s (q4_k = 40.0), or what the device runs \
    instead: { fallback = \"f32\" } (a dequantized copy in a float precision of [compute]) or \
    { fallback = \"q8_0\" } (a format with a kernel here that holds this one exactly)";

/// Every kernel precision, for `nm_precisions` left out.
const ALL_PRECISIONS: [Precision; 10] = [
    Precision::F32,
    Precision::F16,
    Precision::Bf16,
    Precision::Int(2),
    Precision::Int(3),
    Precision::Int(4),
    Precision::Int(5),
    Precision::Int(6),
    Precision::Int(7),
    Precision::Int(8),
];

/// A validated hardware profile, ready for the cost model.
#[derive(Clone, Debug)]
pub struct HardwareProfile {
    /// The file as written (for provenance and re-serialisation).
    pub file: ProfileFile,
    /// Where it was loaded from (`shipped:NAME` for embedded profiles).
    pub origin: PathBuf,
    /// GMAC/s for each precision the device has a kernel for: `[compute]`, and the GGML block formats
    /// with a kernel in `[ggml]` (as [`Precision::Ggml`]).
    pub gmacs: BTreeMap<Precision, f64>,
    /// The weight-only kernels (integer weights × float activations); `None`: the device has none, and
    /// a weight-only layer is dequantized to an f32 copy that its f32 kernel reads.
    pub weight_only: Option<WeightOnlyKernels>,
    pub bit_serial_gbops: Option<f64>,
    pub bandwidth_gbs: f64,
    pub per_layer_us: f64,
    /// N:M patterns computed at N/M of the dense work (by the kernels of `nm_precisions`).
    pub nm: Vec<(u8, u8)>,
    /// Kernel precisions that compute the `nm` patterns sparsely.
    pub nm_precisions: Vec<Precision>,
    pub unstructured_efficiency: f64,
    /// Explicit fallbacks: `[fallback]`, and the GGML block formats that `[ggml]` gives a fallback.
    pub fallback: BTreeMap<Precision, Precision>,
    /// Float precisions whose `[fallback]` is a copy made once at load (`bf16 = { copy = "f32" }`):
    /// the kernel reads that copy, at its precision's width, not the stored weights.
    pub copies: BTreeSet<Precision>,
    pub measured: HashMap<MeasuredKey, f64>,
}

impl HardwareProfile {
    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.file.profile.name
    }

    /// Parses and validates a profile from TOML `text` read from `path`.
    pub fn from_toml(text: &str, path: impl Into<PathBuf>) -> Result<HardwareProfile> {
        let path: PathBuf = path.into();
        let file: ProfileFile = toml::from_str(text).map_err(|e| Error::toml(&path, text, &e))?;
        let check = Checker { path: &path, text };
        let compute = check.compute(&file.compute)?;
        let weight_only = check.weight_only(
            file.weight_only.as_ref(),
            compute.legacy_weight_only,
            &compute.gmacs,
        )?;
        let bandwidth_gbs = check.bandwidth(&file.memory)?;
        let per_layer_us = check.overhead(&file.overhead)?;
        let nm = check.nm_patterns(&file.sparsity.nm)?;
        let nm_precisions = check.nm_precisions(
            file.sparsity.nm_precisions.as_deref(),
            &compute.gmacs,
            compute.bit_serial_gbops.is_some(),
        )?;
        let unstructured_efficiency = check.unstructured_efficiency(&file.sparsity)?;
        let (mut fallback, copies) = check.fallbacks(&file.fallback, &compute.gmacs)?;
        let mut gmacs = compute.gmacs;
        let (rates, ggml_fallbacks) = check.ggml(&file.ggml, &gmacs)?;
        gmacs.extend(rates);
        fallback.extend(ggml_fallbacks);
        let measured = check.measured(&file.measured, file.calibration.is_some())?;
        check.model_terms(&file.model)?;
        Ok(HardwareProfile {
            gmacs,
            copies,
            weight_only,
            bit_serial_gbops: compute.bit_serial_gbops,
            bandwidth_gbs,
            per_layer_us,
            nm,
            nm_precisions,
            unstructured_efficiency,
            fallback,
            measured,
            origin: path,
            file,
        })
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<HardwareProfile> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The precision a kernel of precision `want` really runs as on this device.
    pub fn runs_as(&self, want: Precision) -> Precision {
        if self.gmacs.contains_key(&want) {
            return want;
        }
        if let Some(p) = self.fallback.get(&want) {
            return *p;
        }
        // The next wider integer precisions, then f16, then f32 (no allocation: this is on the hot path);
        // a GGML block format without a kernel or a fallback: a dequantized f32 copy.
        let wider_ints = (2..=8u8)
            .filter(move |&k| matches!(want, Precision::Int(b) if k > b))
            .map(Precision::Int);
        let floats: &[Precision] = match want {
            Precision::Int(_) => &[Precision::F16, Precision::F32],
            Precision::F16 | Precision::Bf16 => &[Precision::F32],
            Precision::F32 | Precision::Ggml(_) | Precision::Q8(_) => &[],
        };
        wider_ints
            .chain(floats.iter().copied())
            .find(|p| self.gmacs.contains_key(p))
            .unwrap_or(Precision::F32)
    }

    /// The non-matmul work of the model whose [`layers_key`] is `key` at cost batch `batch`, µs, from
    /// its `[[model]]` terms (see the module docs); `None` when the profile has none for it.
    pub fn non_matmul_us(&self, key: &str, batch: u32) -> Option<f64> {
        let at = self
            .file
            .model
            .iter()
            .filter(|t| t.layers == key)
            .map(|t| (f64::from(t.batch), t.us));
        along_batch(at, batch).map(|us| us.max(0.0))
    }

    /// Per kernel precision, the time a layer on that kernel adds to the rest of a pass of the model
    /// whose [`layers_key`] is `key`, at `batch` (interpolated as [`Self::non_matmul_us`], without the
    /// floor): the `spill_us` of its `[[model]]` terms. Empty when none was measured.
    pub fn spill_us(&self, key: &str, batch: u32) -> BTreeMap<Precision, f64> {
        let terms: Vec<&ModelTerm> = self.file.model.iter().filter(|t| t.layers == key).collect();
        let precisions: std::collections::BTreeSet<Precision> = terms
            .iter()
            .flat_map(|t| t.spill_us.keys().copied())
            .collect();
        precisions
            .into_iter()
            .filter_map(|p| {
                let at = terms
                    .iter()
                    .filter_map(|t| Some((f64::from(t.batch), *t.spill_us.get(&p)?)));
                Some((p, along_batch(at, batch)?))
            })
            .collect()
    }

    /// Whether the device runs the float precision `p` from a copy made once at load (at the width of
    /// the precision it runs as) rather than widening the stored weights inside the kernel.
    pub fn copies(&self, p: Precision) -> bool {
        self.copies.contains(&p)
    }

    /// What the device does with GGML block format `g`: `Ok(rate)`, its own kernel's GMAC/s; or
    /// `Err(precision)`, what it runs instead (a float precision: a dequantized copy; a q-format: that
    /// format's kernel on a copy converted once at load).
    pub fn ggml_kernel(&self, g: GgmlFormat) -> std::result::Result<f64, Precision> {
        let p = Precision::Ggml(g);
        match self.gmacs.get(&p) {
            Some(rate) => Ok(*rate),
            None => Err(self.runs_as(p)),
        }
    }

    /// Whether the device has a kernel that computes the N:M pattern at N/M of the dense work (at some
    /// precision).
    pub fn accelerates_nm(&self, n: u8, m: u8) -> bool {
        self.nm.contains(&(n, m))
    }

    /// Whether the device's kernel of precision `p` computes the N:M pattern at N/M of the dense work.
    pub fn accelerates_nm_at(&self, n: u8, m: u8, p: Precision) -> bool {
        self.accelerates_nm(n, m) && self.nm_precisions.contains(&p)
    }

    /// The weight-only kernel for integer weights of `bits` bits: the narrowest declared width at least
    /// `bits` (narrower weights are unpacked to it) and the float precision it multiplies in.
    pub fn weight_only_kernel(&self, bits: u8) -> Option<(u8, Precision)> {
        let w = self.weight_only.as_ref()?;
        w.bits
            .iter()
            .find(|&&b| b >= bits)
            .map(|&b| (b, w.precision))
    }

    /// A hash of the profile's contents (a run's `profile` fingerprint).
    pub fn fingerprint(&self) -> blake3::Hash {
        blake3::hash(
            serde_json::to_string(&self.file)
                .unwrap_or_default()
                .as_bytes(),
        )
    }

    /// Serialises the profile back to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.file).unwrap_or_default()
    }
}
