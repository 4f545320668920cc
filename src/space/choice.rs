//! # Choices and their notation
//!
//! A layer's [`Choice`] is its weight quantization, activation quantization, sparsity and rank. The
//! choice notation (DESIGN.md, "Interfaces that scripts rely on") writes one as a string:
//!
//! ```text
//! WEIGHTS ( '+' PART )*
//! WEIGHTS = f32 | f16 | bf16 | int<b>-<sym|asym>-<tensor|channel|g<N>>      b in 2..=8
//!         | q2_k | q3_k | q4_k | q5_k | q6_k | q8_0 | q4_0 | q4_1 | q5_0 | q5_1   GGML block formats
//! PART    = act8-static | act8-dynamic                                      activation quantization
//!         | sparse<P> | <N>:<M> | channels<P>                               sparsity (one at most)
//!         | rank<P>                                                         percent of full rank kept
//!         | tucker<P> | cp<P>                                               convolution factorizations
//! ```
//!
//! `tucker<P>` and `cp<P>` ([`ConvFactor`], `P` the percent of the layer's parameters kept) fill the
//! rank slot, so a choice has at most one of `rank<P>`, `tucker<P>`, `cp<P>`. They factorize a
//! convolution kernel into a chain of smaller convolutions (see [`super::conv`]); each factor is
//! stored in the weight format (float, or integer quantized factor by factor), and they combine with
//! activation quantization of the layer's input, but with no sparsity part (the factors are dense) and
//! no GGML block format (its blocks would run along the factors' few in-features, and candle has no
//! quantized convolution to chain).
//!
//! A GGML block format ([`GgmlFormat`]) names the arithmetic of llama.cpp's (and candle's) quantized
//! kernels: block-quantized weights, activations quantized on the fly by the kernel (to Q8_K or Q8_0
//! blocks). So it takes no `act8-*` part (the kernel already quantizes its input), and no `sparse<P>`
//! or `N:M` part (a block stores every weight, so pruned zeros save nothing, and a block's grid does
//! not keep them exactly zero); `channels<P>` (a smaller matrix) and `rank<P>` (two block-quantized
//! factors) combine with it.
//!
//! Parts appear in the canonical order act, sparsity, rank, each at most once. Defaults are written by
//! leaving the part out (dense, full rank, float activations), so every choice has exactly one spelling
//! and `print(parse(s)) == s` for every accepted `s`.
//!
//! Every part has its own notation too ([`WeightQuant`], [`QuantScheme`], [`Granularity`],
//! [`ActQuant`] and [`Sparsity`] implement `FromStr` and `Display`, inverse to each other; `none` and
//! `dense` name the absent parts), and a choice is parsed from them, so search-space and profile files
//! that list one part read it with the same rules and messages.

use std::fmt;
use std::str::FromStr;

use super::conv::{ConvDims, ConvFactor};
use super::layer::LayerInfo;
use crate::error::{Error, Result};

/// Smallest and largest integer bit-width.
pub const BITS: std::ops::RangeInclusive<u8> = 2..=8;
/// Allowed per-group sizes (columns of the input dimension that share one scale).
pub const GROUP_SIZES: std::ops::RangeInclusive<u32> = 2..=65536;
/// Allowed percentages for `sparse<P>`, `channels<P>` and `rank<P>`.
pub const PERCENT: std::ops::RangeInclusive<u8> = 1..=99;
/// Largest M of an N:M pattern.
pub const MAX_M: u8 = 32;

const WEIGHTS_HELP: &str =
    "weights are f32, f16, bf16, int<b>-<sym|asym>-<tensor|channel|g<N>> with b in 2..=8 \
     (e.g. int8-sym-channel, int4-asym-g32), or a GGML block format: q2_k, q3_k, q4_k, q5_k, q6_k, \
     q8_0, q4_0, q4_1, q5_0, q5_1";
const PARTS_HELP: &str =
    "parts after the weights, in this order: act8-static | act8-dynamic, then one of \
     sparse<P> | <N>:<M> | channels<P>, then one of rank<P> | tucker<P> | cp<P> (P a whole percent \
     1..=99)";

/// Symmetric (zero point 0) or asymmetric (affine) integer quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantScheme {
    Symmetric,
    Asymmetric,
}

/// Which weights share one scale (and zero point).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per output channel (row of the weight matrix).
    Channel,
    /// One scale per group of this many consecutive input columns, in every row.
    Group(u32),
}

/// A GGML block format: llama.cpp's (and candle's) quantized tensor types. Each stores blocks of
/// [`block`](GgmlFormat::block) consecutive weights of a row in [`block_bytes`](GgmlFormat::block_bytes)
/// bytes (codes, scales and, for the affine types, minimums), exactly as `ggml-common.h` lays them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlFormat {
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
}

impl GgmlFormat {
    /// Every format, K-types first by width, then the legacy 32-blocks.
    pub const ALL: [GgmlFormat; 10] = [
        GgmlFormat::Q2K,
        GgmlFormat::Q3K,
        GgmlFormat::Q4K,
        GgmlFormat::Q5K,
        GgmlFormat::Q6K,
        GgmlFormat::Q8_0,
        GgmlFormat::Q4_0,
        GgmlFormat::Q4_1,
        GgmlFormat::Q5_0,
        GgmlFormat::Q5_1,
    ];

    /// The name in the notation and in GGUF files: `q4_k`, `q8_0`…
    pub fn name(&self) -> &'static str {
        match self {
            GgmlFormat::Q2K => "q2_k",
            GgmlFormat::Q3K => "q3_k",
            GgmlFormat::Q4K => "q4_k",
            GgmlFormat::Q5K => "q5_k",
            GgmlFormat::Q6K => "q6_k",
            GgmlFormat::Q8_0 => "q8_0",
            GgmlFormat::Q4_0 => "q4_0",
            GgmlFormat::Q4_1 => "q4_1",
            GgmlFormat::Q5_0 => "q5_0",
            GgmlFormat::Q5_1 => "q5_1",
        }
    }

    /// Whether this is a K-type (256-weight super-blocks).
    pub fn is_k(&self) -> bool {
        matches!(
            self,
            GgmlFormat::Q2K | GgmlFormat::Q3K | GgmlFormat::Q4K | GgmlFormat::Q5K | GgmlFormat::Q6K
        )
    }

    /// Weights per block: 256 for K-types, 32 for the others.
    pub fn block(&self) -> usize {
        if self.is_k() {
            256
        } else {
            32
        }
    }

    /// Bytes of one block (`ggml-common.h`: `block_q4_K` is 2 f16 + 12 bytes of 6-bit scales + 128
    /// bytes of nibbles = 144).
    pub fn block_bytes(&self) -> usize {
        match self {
            GgmlFormat::Q2K => 84,
            GgmlFormat::Q3K => 110,
            GgmlFormat::Q4K => 144,
            GgmlFormat::Q5K => 176,
            GgmlFormat::Q6K => 210,
            GgmlFormat::Q8_0 => 34,
            GgmlFormat::Q4_0 => 18,
            GgmlFormat::Q4_1 => 20,
            GgmlFormat::Q5_0 => 22,
            GgmlFormat::Q5_1 => 24,
        }
    }

    /// Bits per weight as llama.cpp counts them (block bytes × 8 / block): q4_k 4.5, q8_0 8.5.
    pub fn bits_per_weight(&self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block() as f64
    }

    /// Bits of one weight's code (the nominal width: 4 for q4_k, q4_0 and q4_1).
    pub fn code_bits(&self) -> u8 {
        match self {
            GgmlFormat::Q2K => 2,
            GgmlFormat::Q3K => 3,
            GgmlFormat::Q4K | GgmlFormat::Q4_0 | GgmlFormat::Q4_1 => 4,
            GgmlFormat::Q5K | GgmlFormat::Q5_0 | GgmlFormat::Q5_1 => 5,
            GgmlFormat::Q6K => 6,
            GgmlFormat::Q8_0 => 8,
        }
    }

    /// Whether the grid is affine (a per-block minimum as well as a scale): q2_k, q4_k, q5_k, q4_1,
    /// q5_1. The others are symmetric around zero.
    pub fn affine(&self) -> bool {
        matches!(
            self,
            GgmlFormat::Q2K
                | GgmlFormat::Q4K
                | GgmlFormat::Q5K
                | GgmlFormat::Q4_1
                | GgmlFormat::Q5_1
        )
    }

    /// The in-features a weight matrix needs, as a multiple, for this format to be offered: its block
    /// (256 for K-types, 32 otherwise), except q4_1, q5_0 and q5_1 whose candle CPU dot products take
    /// their 32-blocks in pairs (64): a shape that breaks that assertion panics inside candle's thread
    /// pool, so such a layer is never offered them.
    pub fn row_multiple(&self) -> usize {
        match self {
            GgmlFormat::Q4_1 | GgmlFormat::Q5_0 | GgmlFormat::Q5_1 => 64,
            f => f.block(),
        }
    }

    /// Weights per scale: the block for the legacy types, the sub-block of a K-type (16 for q2_k, q3_k
    /// and q6_k, 32 for q4_k and q5_k), whose scales are themselves quantized against the super-block's.
    pub fn scale_group(&self) -> usize {
        match self {
            GgmlFormat::Q2K | GgmlFormat::Q3K | GgmlFormat::Q6K => 16,
            _ => 32,
        }
    }

    /// The blocks the kernel quantizes its activations to on the fly (ggml's `vec_dot_type`, the same
    /// in candle's `k_quants.rs`): Q8_K for the K-types, Q8_0 for q8_0, q4_0 and q5_0, Q8_1 for the
    /// affine q4_1 and q5_1.
    pub fn act_blocks(&self) -> ActBlocks {
        match self {
            GgmlFormat::Q8_0 | GgmlFormat::Q4_0 | GgmlFormat::Q5_0 => ActBlocks::Q8_0,
            GgmlFormat::Q4_1 | GgmlFormat::Q5_1 => ActBlocks::Q8_1,
            _ => ActBlocks::Q8K,
        }
    }

    /// Stored bytes of a `rows × cols` matrix in this format: whole blocks of each row, `rows ×
    /// (cols / block) × block_bytes` (llama.cpp's accounting; a row that does not fill its last block
    /// is counted with that block whole, though no runtime takes such a row).
    pub fn bytes(&self, rows: u64, cols: u64) -> u64 {
        rows * cols.div_ceil(self.block() as u64) * self.block_bytes() as u64
    }

    /// The formats that hold every value of this one exactly, block for block with the same scales, so
    /// a runtime can convert this format into one of them once at load and run that kernel: a code
    /// grid that is a sub-range of theirs with the same block structure (q4_0 → q5_0 and q8_0, q5_0 →
    /// q8_0, q4_1 → q5_1, q4_k → q5_k, q3_k → q6_k).
    pub fn held_exactly_by(&self) -> &'static [GgmlFormat] {
        match self {
            GgmlFormat::Q4_0 => &[GgmlFormat::Q5_0, GgmlFormat::Q8_0],
            GgmlFormat::Q5_0 => &[GgmlFormat::Q8_0],
            GgmlFormat::Q4_1 => &[GgmlFormat::Q5_1],
            GgmlFormat::Q4K => &[GgmlFormat::Q5K],
            GgmlFormat::Q3K => &[GgmlFormat::Q6K],
            _ => &[],
        }
    }

    /// Why a weight matrix with `cols` in-features (per factor) cannot take this format, or `None`.
    pub fn misfit(&self, cols: u64) -> Option<String> {
        let m = self.row_multiple() as u64;
        (cols % m != 0).then(|| {
            let why = if m as usize == self.block() {
                format!("its block of {m} weights")
            } else {
                format!(
                    "its {}-weight blocks, which candle's kernel takes in pairs",
                    self.block()
                )
            };
            format!(
                "{} needs in-features that are a multiple of {m} ({why}); this matrix has {cols}",
                self.name()
            )
        })
    }
}

impl fmt::Display for GgmlFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 8-bit blocks a GGML kernel quantizes its activations to ([`GgmlFormat::act_blocks`]): one f32
/// (Q8_K, 256 values) or f16 (Q8_0, Q8_1: 32 values; Q8_1 adds the block's sum) scale per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActBlocks {
    Q8K,
    Q8_0,
    Q8_1,
}

impl ActBlocks {
    /// ggml's name: `q8_k`, `q8_0`, `q8_1`.
    pub fn name(&self) -> &'static str {
        match self {
            ActBlocks::Q8K => "q8_k",
            ActBlocks::Q8_0 => "q8_0",
            ActBlocks::Q8_1 => "q8_1",
        }
    }
}

impl fmt::Display for ActBlocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GgmlFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<GgmlFormat> {
        GgmlFormat::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| {
                Error::choice(
                    s,
                    0,
                    s.len().max(1),
                    format!(
                        "`{s}` is not a GGML block format (q2_k, q3_k, q4_k, q5_k, q6_k, q8_0, \
                         q4_0, q4_1, q5_0, q5_1)"
                    ),
                )
            })
    }
}

/// How a layer's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WeightQuant {
    /// Keep f32.
    F32,
    F16,
    Bf16,
    /// Integer with `bits` in 2..=8.
    Int {
        bits: u8,
        scheme: QuantScheme,
        granularity: Granularity,
    },
    /// A GGML block format, computed by its own kernel (activations quantized on the fly).
    Ggml(GgmlFormat),
}

impl WeightQuant {
    /// Bits per stored weight value (before scales and sparsity metadata).
    pub fn bits(&self) -> u8 {
        match self {
            WeightQuant::F32 => 32,
            WeightQuant::F16 | WeightQuant::Bf16 => 16,
            WeightQuant::Int { bits, .. } => *bits,
            WeightQuant::Ggml(g) => g.code_bits(),
        }
    }

    /// Stored bits per weight of the format: a GGML block format's block bytes × 8 / block
    /// (`q6_k` 6.5625, `q5_1` 6, `q4_k` 4.5, as llama.cpp counts them), 32 or 16 for the floats, an
    /// integer format's bit-width (its scales not counted).
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            WeightQuant::Ggml(g) => g.bits_per_weight(),
            other => f64::from(other.bits()),
        }
    }

    /// Whether this is one of the float formats.
    pub fn is_float(&self) -> bool {
        matches!(
            self,
            WeightQuant::F32 | WeightQuant::F16 | WeightQuant::Bf16
        )
    }

    /// The GGML block format, if this is one.
    pub fn ggml(&self) -> Option<GgmlFormat> {
        match self {
            WeightQuant::Ggml(g) => Some(*g),
            _ => None,
        }
    }
}

/// How a layer's input activations are quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ActQuant {
    /// Activations stay float.
    #[default]
    None,
    /// int8 with ranges calibrated once on the calibration split.
    Int8Static,
    /// int8 with ranges measured on every batch.
    Int8Dynamic,
}

impl ActQuant {
    /// Bits per activation value (32 when float).
    pub fn bits(&self) -> u8 {
        match self {
            ActQuant::None => 32,
            ActQuant::Int8Static | ActQuant::Int8Dynamic => 8,
        }
    }
}

/// Which weights are pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Sparsity {
    /// Dense.
    #[default]
    None,
    /// This percentage of individual weights, by magnitude.
    Unstructured(u8),
    /// N of every M consecutive weights along the input dimension are kept.
    NM { n: u8, m: u8 },
    /// This percentage of whole output channels is removed.
    Channels(u8),
}

/// Output channels (rows) kept when `percent` of `rows` are removed by `channels<P>`: round(P% · rows)
/// removed, at least one kept. The cost model counts and the pruner removes exactly these.
pub fn kept_rows(rows: u64, percent: u8) -> u64 {
    let removed = (rows * u64::from(percent) + 50) / 100;
    rows.saturating_sub(removed).max(1).min(rows)
}

/// Inner dimension k of a `rank<P>` factorization of a `rows`×`cols` matrix: ⌈P% · min(rows, cols)⌉,
/// at least 1. The cost model counts and the SVD keeps exactly these.
pub fn rank_k(rows: u64, cols: u64, percent: u8) -> u64 {
    (rows.min(cols) * u64::from(percent)).div_ceil(100).max(1)
}

/// One layer's compression: weights, activations, sparsity and rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Choice {
    pub weights: WeightQuant,
    pub act: ActQuant,
    pub sparsity: Sparsity,
    /// Percent of full rank kept, 1..=99; `None` keeps full rank (no factorization).
    pub rank: Option<u8>,
    /// A convolution kernel's Tucker-2 or CP factorization (the rank slot: never with `rank`).
    pub conv: Option<ConvFactor>,
}

impl Choice {
    /// The uncompressed choice: f32, float activations, dense, full rank.
    pub const F32: Choice = Choice {
        weights: WeightQuant::F32,
        act: ActQuant::None,
        sparsity: Sparsity::None,
        rank: None,
        conv: None,
    };

    /// A choice with only the weight format set.
    pub fn weights(weights: WeightQuant) -> Choice {
        Choice {
            weights,
            ..Choice::F32
        }
    }

    /// Whether this choice changes nothing.
    pub fn is_uncompressed(&self) -> bool {
        *self == Choice::F32
    }

    /// Why this choice's GGML block format does not fit a layer whose weight matrix is `rows × cols`
    /// (every factor's in-features must fit the format: the layer's `cols`, and with `rank<P>` also
    /// the rank k = [`rank_k`] that the first factor `A` takes in), or `None` (also for any other
    /// weight format).
    pub fn block_misfit(&self, rows: u64, cols: u64) -> Option<String> {
        let g = self.weights.ggml()?;
        if let Some(why) = g.misfit(cols) {
            return Some(why);
        }
        let p = self.rank?;
        let k = rank_k(rows, cols, p);
        g.misfit(k).map(|why| {
            format!("with rank{p} the first factor takes k = {k} in-features, and {why}")
        })
    }

    /// Why this choice does not fit `layer`, or `None`: a block format whose blocks do not tile a
    /// factor's in-features ([`Choice::block_misfit`]), or `tucker<P>` / `cp<P>` where it does not
    /// apply ([`ConvFactor::misfit`]: not a convolution, a 1×1 kernel, one channel for Tucker-2, a
    /// budget too small for rank 1).
    pub fn layer_misfit(&self, layer: &LayerInfo) -> Option<String> {
        if let Some(c) = self.conv {
            return match ConvDims::of(layer) {
                None => Some(format!(
                    "{c} factorizes convolution kernels, and this is a {} layer",
                    layer.kind
                )),
                Some(d) => c.misfit(d),
            };
        }
        self.block_misfit(layer.rows(), layer.cols())
    }

    /// Validates the numeric ranges a [`Choice`] built in code might violate.
    pub fn validate(&self) -> Result<()> {
        // Printing and re-parsing checks every range with the parser's messages.
        let s = self.to_string();
        let back: Choice = s.parse()?;
        debug_assert_eq!(back, *self);
        Ok(())
    }
}

impl fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuantScheme::Symmetric => "sym",
            QuantScheme::Asymmetric => "asym",
        })
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Granularity::Tensor => f.write_str("tensor"),
            Granularity::Channel => f.write_str("channel"),
            Granularity::Group(n) => write!(f, "g{n}"),
        }
    }
}

impl fmt::Display for WeightQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightQuant::F32 => f.write_str("f32"),
            WeightQuant::F16 => f.write_str("f16"),
            WeightQuant::Bf16 => f.write_str("bf16"),
            WeightQuant::Int {
                bits,
                scheme,
                granularity,
            } => write!(f, "int{bits}-{scheme}-{granularity}"),
            WeightQuant::Ggml(g) => write!(f, "{g}"),
        }
    }
}

impl fmt::Display for ActQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActQuant::None => "none",
            ActQuant::Int8Static => "act8-static",
            ActQuant::Int8Dynamic => "act8-dynamic",
        })
    }
}

impl fmt::Display for Sparsity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sparsity::None => f.write_str("dense"),
            Sparsity::Unstructured(p) => write!(f, "sparse{p}"),
            Sparsity::NM { n, m } => write!(f, "{n}:{m}"),
            Sparsity::Channels(p) => write!(f, "channels{p}"),
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.weights)?;
        if self.act != ActQuant::None {
            write!(f, "+{}", self.act)?;
        }
        if self.sparsity != Sparsity::None {
            write!(f, "+{}", self.sparsity)?;
        }
        if let Some(r) = self.rank {
            write!(f, "+rank{r}")?;
        }
        if let Some(c) = self.conv {
            write!(f, "+{c}")?;
        }
        Ok(())
    }
}

/// Parses a whole decimal number with no sign, no leading zeros and no spaces.
fn whole(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn percent(s: &str) -> Option<u8> {
    whole(s)
        .and_then(|p| u8::try_from(p).ok())
        .filter(|p| PERCENT.contains(p))
}

/// A part's error re-anchored in the whole choice `text`, where the part starts at byte `at`: the
/// caret then points into the choice as written.
fn within(text: &str, at: usize, e: Error) -> Error {
    match e {
        Error::Choice {
            offset,
            marker,
            message,
            ..
        } => Error::choice(text, at + offset, marker.trim_start().len(), message),
        other => other,
    }
}

// Each part of a choice parses on its own (`FromStr`, the inverse of its `Display`); an error is an
// [`Error::Choice`] with the caret under the bad field of that part, which [`Choice`]'s parser moves
// to where the part sits in the whole choice.

impl FromStr for QuantScheme {
    type Err = Error;

    /// `sym` or `asym`.
    fn from_str(s: &str) -> Result<QuantScheme> {
        match s {
            "sym" => Ok(QuantScheme::Symmetric),
            "asym" => Ok(QuantScheme::Asymmetric),
            other => Err(Error::choice(
                s,
                0,
                other.len(),
                format!("scheme `{other}` is not one of sym, asym"),
            )),
        }
    }
}

impl FromStr for Granularity {
    type Err = Error;

    /// `tensor`, `channel` or `g<N>` (N in [`GROUP_SIZES`]).
    fn from_str(s: &str) -> Result<Granularity> {
        match s {
            "tensor" => Ok(Granularity::Tensor),
            "channel" => Ok(Granularity::Channel),
            g => match g.strip_prefix('g').and_then(whole) {
                Some(n) if GROUP_SIZES.contains(&n) => Ok(Granularity::Group(n)),
                _ => Err(Error::choice(
                    s,
                    0,
                    g.len().max(1),
                    format!(
                        "granularity `{g}` is not one of tensor, channel, g<N> (N a group size in {}..={})",
                        GROUP_SIZES.start(),
                        GROUP_SIZES.end()
                    ),
                )),
            },
        }
    }
}

impl FromStr for WeightQuant {
    type Err = Error;

    /// `f32`, `f16`, `bf16` or `int<b>-<scheme>-<granularity>`.
    fn from_str(part: &str) -> Result<WeightQuant> {
        let err = |off: usize, len: usize, msg: String| Error::choice(part, off, len, msg);
        match part {
            "f32" => return Ok(WeightQuant::F32),
            "f16" => return Ok(WeightQuant::F16),
            "bf16" => return Ok(WeightQuant::Bf16),
            _ => {}
        }
        if let Ok(g) = part.parse::<GgmlFormat>() {
            return Ok(WeightQuant::Ggml(g));
        }
        let Some(rest) = part.strip_prefix("int") else {
            return Err(err(
                0,
                part.len(),
                format!("unknown weight format `{part}`; {WEIGHTS_HELP}"),
            ));
        };
        let fields: Vec<&str> = rest.split('-').collect();
        let [bits, scheme, granularity] = fields[..] else {
            return Err(err(
                0,
                part.len(),
                format!(
                    "`{part}` needs three fields, int<b>-<scheme>-<granularity>; {WEIGHTS_HELP}"
                ),
            ));
        };
        let bits_at = 3;
        let bits_value = whole(bits)
            .and_then(|b| u8::try_from(b).ok())
            .filter(|b| BITS.contains(b))
            .ok_or_else(|| {
                err(
                    bits_at,
                    bits.len(),
                    format!("bit-width `{bits}` is not in 2..=8"),
                )
            })?;
        let scheme_at = bits_at + bits.len() + 1;
        let gran_at = scheme_at + scheme.len() + 1;
        Ok(WeightQuant::Int {
            bits: bits_value,
            scheme: scheme.parse().map_err(|e| within(part, scheme_at, e))?,
            granularity: granularity.parse().map_err(|e| within(part, gran_at, e))?,
        })
    }
}

impl FromStr for ActQuant {
    type Err = Error;

    /// `none`, `act8-static` or `act8-dynamic` (`none` is written by leaving the part out of a choice).
    fn from_str(s: &str) -> Result<ActQuant> {
        match s {
            "none" => Ok(ActQuant::None),
            "act8-static" => Ok(ActQuant::Int8Static),
            "act8-dynamic" => Ok(ActQuant::Int8Dynamic),
            other => Err(Error::choice(
                s,
                0,
                other.len(),
                format!("activation quantization `{other}` is not one of none, act8-static, act8-dynamic"),
            )),
        }
    }
}

impl FromStr for Sparsity {
    type Err = Error;

    /// `dense`, `sparse<P>`, `<N>:<M>` or `channels<P>` (`dense` is written by leaving the part out
    /// of a choice).
    fn from_str(part: &str) -> Result<Sparsity> {
        let bad = |msg: String| Error::choice(part, 0, part.len(), msg);
        if part == "dense" {
            return Ok(Sparsity::None);
        }
        if let Some(rest) = part.strip_prefix("sparse") {
            return percent_part("sparse", rest, "the pruned share").map(Sparsity::Unstructured);
        }
        if let Some(rest) = part.strip_prefix("channels") {
            return percent_part("channels", rest, "the removed share of output channels")
                .map(Sparsity::Channels);
        }
        if let Some((n, m)) = part.split_once(':') {
            let n = whole(n).and_then(|v| u8::try_from(v).ok());
            let m = whole(m).and_then(|v| u8::try_from(v).ok());
            return match (n, m) {
                (Some(n), Some(m)) if n >= 1 && n < m && m <= MAX_M => Ok(Sparsity::NM { n, m }),
                _ => Err(bad(format!(
                    "`{part}`: an N:M pattern keeps N of every M weights and needs 1 <= N < M <= {MAX_M} (e.g. 2:4, 4:8)"
                ))),
            };
        }
        Err(bad(format!(
            "unknown sparsity `{part}`; use dense, sparse<P>, <N>:<M> or channels<P>"
        )))
    }
}

impl Sparsity {
    /// Whether `part` is written as a sparsity part of a choice (`sparse…`, `channels…`, `…:…`),
    /// valid or not.
    fn is_written(part: &str) -> bool {
        part.starts_with("sparse") || part.starts_with("channels") || part.contains(':')
    }
}

/// The percent `rest` of part `name<rest>`, or an error saying what it measures (`what`).
fn percent_part(name: &str, rest: &str, what: &str) -> Result<u8> {
    percent(rest).ok_or_else(|| {
        let part = format!("{name}{rest}");
        Error::choice(
            &part,
            0,
            part.len(),
            format!(
                "`{part}`: {what} must be a whole percent in 1..=99 (leave the part out for {})",
                match name {
                    "rank" => "full rank",
                    "tucker" | "cp" => "the unfactorized kernel",
                    _ => "dense",
                }
            ),
        )
    })
}

/// Which slot of the canonical order a part fills.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Slot {
    Act,
    Sparsity,
    Rank,
}

enum Part {
    Act(ActQuant),
    Sparsity(Sparsity),
    Rank(u8),
    Conv(ConvFactor),
}

/// One part after the weights; errors point into `part`. `none` and `dense` are not parts: a choice
/// leaves the part out instead.
fn parse_part(part: &str) -> Result<Part> {
    match part.parse::<ActQuant>() {
        Ok(ActQuant::None) | Err(_) => {}
        Ok(act) => return Ok(Part::Act(act)),
    }
    if let Some(rest) = part.strip_prefix("rank") {
        return percent_part("rank", rest, "the kept share of full rank").map(Part::Rank);
    }
    if let Some(rest) = part.strip_prefix("tucker") {
        return percent_part("tucker", rest, "the kept share of the layer's parameters")
            .map(|p| Part::Conv(ConvFactor::Tucker(p)));
    }
    if let Some(rest) = part.strip_prefix("cp") {
        return percent_part("cp", rest, "the kept share of the layer's parameters")
            .map(|p| Part::Conv(ConvFactor::Cp(p)));
    }
    if Sparsity::is_written(part) {
        return part.parse().map(Part::Sparsity);
    }
    Err(Error::choice(
        part,
        0,
        part.len(),
        format!("unknown part `{part}`; {PARTS_HELP}"),
    ))
}

impl FromStr for Choice {
    type Err = Error;

    fn from_str(text: &str) -> Result<Choice> {
        if text.is_empty() {
            return Err(Error::choice(
                text,
                0,
                1,
                format!("empty choice; {WEIGHTS_HELP}"),
            ));
        }
        let mut parts = text.split('+');
        let first = parts.next().unwrap_or_default();
        let weights = first.parse().map_err(|e| within(text, 0, e))?;
        let mut choice = Choice::weights(weights);
        let mut at = first.len() + 1;
        let mut last: Option<Slot> = None;
        for part in parts {
            let parsed = parse_part(part).map_err(|e| within(text, at, e))?;
            let slot = match parsed {
                Part::Act(_) => Slot::Act,
                Part::Sparsity(_) => Slot::Sparsity,
                Part::Rank(_) | Part::Conv(_) => Slot::Rank,
            };
            if let Some(prev) = last {
                if slot == prev {
                    return Err(Error::choice(
                        text,
                        at,
                        part.len(),
                        format!(
                            "a second {} part; a choice has at most one of each; {PARTS_HELP}",
                            slot_name(slot)
                        ),
                    ));
                }
                if slot < prev {
                    return Err(Error::choice(
                        text,
                        at,
                        part.len(),
                        format!("`{part}` is out of order; {PARTS_HELP}"),
                    ));
                }
            }
            last = Some(slot);
            if let (Some(g), Some(why)) = (choice.weights.ggml(), ggml_refuses(&parsed)) {
                return Err(Error::choice(
                    text,
                    at,
                    part.len(),
                    format!("`{g}+{part}`: {why}"),
                ));
            }
            if let (Part::Conv(c), true) = (&parsed, choice.sparsity != Sparsity::None) {
                return Err(Error::choice(
                    text,
                    at,
                    part.len(),
                    format!(
                        "`{}+{c}`: {c} factors are stored and run dense; it takes no sparsity part",
                        choice.sparsity
                    ),
                ));
            }
            match parsed {
                Part::Act(a) => choice.act = a,
                Part::Sparsity(s) => choice.sparsity = s,
                Part::Rank(r) => choice.rank = Some(r),
                Part::Conv(c) => choice.conv = Some(c),
            }
            at += part.len() + 1;
        }
        Ok(choice)
    }
}

/// Why a GGML block format does not take `part` (see the module docs), or `None`.
fn ggml_refuses(part: &Part) -> Option<&'static str> {
    match part {
        Part::Act(_) => Some(
            "a GGML block format's kernel quantizes its activations itself (to Q8_K or Q8_0 \
             blocks); leave the act8 part out",
        ),
        Part::Sparsity(Sparsity::Unstructured(_) | Sparsity::NM { .. }) => Some(
            "a GGML block format stores every weight, so pruned zeros save nothing and its grid \
             does not keep them zero; use channels<P> (a smaller matrix) or rank<P> instead",
        ),
        Part::Conv(_) => Some(
            "a convolution factorization (tucker<P>, cp<P>) takes float or integer weights, not a \
             GGML block format: its blocks would run along the factors' few in-features, and candle \
             has no quantized convolution to chain; use rank<P>",
        ),
        _ => None,
    }
}

fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::Act => "activation",
        Slot::Sparsity => "sparsity",
        Slot::Rank => "rank (rank<P>, tucker<P> or cp<P>)",
    }
}

impl serde::Serialize for GgmlFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl serde::Serialize for Choice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Choice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Choice, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
