//! # Compressed weights as safetensors
//!
//! [`write_compressed`] stores every layer whose weight a choice changes in its compact form, as the
//! compression produced it ([`crate::compress::compress_factors`]); [`load_compressed`] reads a file back into the dense
//! f32 weights the evaluator runs, bit for bit. The file holds the compressed weights only, not a
//! checkpoint: layers whose weight is unchanged (f32, dense, full rank — also when only their
//! activations are quantized), biases, norms and every other tensor are left out (take them from the
//! original model). Activation quantization happens at run time; each layer's choice (in the metadata)
//! records it.
//!
//! This module holds the layout's types and bit packing; `write` lays a layer's compressed factors out
//! as tensors and `read` densifies them back, each in named steps that follow the layout below.
//!
//! ## Layout (format version 3)
//!
//! A layer `L` has one factor `w`, or two, `a` (rows × k) and `b` (k × cols), when it is factorized
//! (`rank<P>`: `W ≈ A·B`). The factors are matrices in the matrix view of the weight (rows = output
//! channels, columns = everything else: for a convolution `[out, in, kh, kw]`, column `c·kh·kw + p`
//! holds input channel `c` at kernel position `p`). A factor's **kernel** is the number of kernel
//! positions per input channel: the product of the layer's shape after its first two dimensions
//! (`kh·kw`; 1 for a linear layer or an embedding) for `w` and `b`, and 1 for `a`. Each factor `F` is
//! stored as these tensors:
//!
//! | tensor | dtype | shape | what |
//! | --- | --- | --- | --- |
//! | `L.F.codes` | U8 | [⌈n·b/8⌉] | integer formats: the n stored values' b-bit codes, packed |
//! | `L.F.scales` | F32 | [stored rows, groups per row], or \[1\] per tensor | one scale per group |
//! | `L.F.zero_points` | U8 | as `scales` | asymmetric only: one zero point per group |
//! | `L.F.values` | F32, F16 or BF16 | [rows, cols] dense, else \[n\] | float formats: the stored values |
//! | `L.F.blocks` | U8 | [stored rows · cols / block · block bytes] | GGML block formats: the stored rows' blocks |
//! | `L.F.mask` | U8 | [⌈rows·cols/8⌉] | unstructured sparsity: 1 bit per value, 1 = kept |
//! | `L.F.nm_index` | U8 | [⌈r·⌈log₂M⌉/8⌉] | N:M: each kept value of a full run: its place in the run of M |
//! | `L.F.rows` | I32 | [kept rows] | removed channels (`w` or `a`): the kept rows, ascending |
//!
//! **Stored values**, in row-major order: every value (dense); the values whose mask bit is 1
//! (unstructured); all values of the kept rows (removed channels; the other rows are zero). **N:M**
//! runs go along input channels at a fixed kernel position (`w[o, c..c+M, i, j]`, the layout sparse
//! tensor cores use), so its values are stored in channels-last order: for every row, for every kernel
//! position p, the channels ascending — each full run of M channels stores its N kept values (their
//! places in the run, ascending, are the run's N entries of `nm_index`; r = rows·kernel·N·⌊in/M⌋
//! entries in all), then the ragged tail of the last `in mod M` channels, which is dense (all stored,
//! no index).
//!
//! **Packing** (`codes`, `mask`, `nm_index`): value i occupies bits `i·b … i·b+b−1` of a little-endian
//! bit stream (bit j is bit `j mod 8` of byte `⌊j/8⌋`), so 4-bit codes are two per byte, low nibble first.
//!
//! **Codes**: `x = (c − z) · s` with the value's group's scale `s` and zero point `z`. Asymmetric codes
//! are 0…2^b−1 with `zero_points`; symmetric codes are stored offset by `z = 2^(b−1)` (c = q + 2^(b−1),
//! q in −(2^(b−1)−1)…2^(b−1)−1), and have no `zero_points` tensor. Groups: one per tensor, one per row,
//! or `⌈cols/g⌉` per row of g consecutive columns (the last may be shorter); with removed channels,
//! the rows of `scales` are the kept rows.
//!
//! **GGML blocks**: a factor in a GGML block format (its `format` in the metadata, `q4_k`…) stores
//! the blocks candle's quantizer made of its stored rows (every row, or the kept rows of removed
//! channels), one row after the other, each row `cols / block` blocks in candle's — and ggml's
//! (`ggml-common.h`) — byte layout (`block_q4_K`: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128
//! bytes of nibbles; little-endian). Their values are the blocks dequantized (by candle on reading):
//! exactly the weights the evaluator's kernel multiplies. The format takes no other sparsity.
//!
//! **Convolution factorizations** (`tucker<P>`, `cp<P>`) store their chain's factors, dense, in the
//! weight format, as matrices in storage order (the last applied first; see
//! [`crate::compress::convfactor`]): Tucker-2 `u_out` (o × r_out, the last 1×1 convolution), `core`
//! (r_out × r_in·kh·kw, the kh×kw convolution `[r_out, r_in, kh, kw]`), `u_in` (r_in × i, the first
//! 1×1 convolution); CP `cp_out` (o × R), `cp_w` (R × kw, the 1×kw depthwise), `cp_h` (R × kh, the
//! kh×1 depthwise), `cp_in` (R × i). As convolution weights they are `u_out [o, r_out, 1, 1]`,
//! `core [r_out, r_in, kh, kw]`, `u_in [r_in, i, 1, 1]`, `cp_out [o, R, 1, 1]`, `cp_w [R, 1, 1, kw]`,
//! `cp_h [R, 1, kh, 1]`, `cp_in [R, i, 1, 1]`.
//!
//! **Reconstruction**: each factor is zeros but for its stored values; the weight is `w`, or `a·b`
//! (an f32 product, summing in f32), or for `tucker<P>` `W[o,i,y,x] = Σ u_out[o,a]·core[a,b,y,x]·
//! u_in[b,i]` and for `cp<P>` `W[o,i,y,x] = Σ_r cp_out[o,r]·cp_in[r,i]·cp_h[r,y]·cp_w[r,x]` (summed
//! in f64, rounded to f32), reshaped to the layer's shape.
//!
//! The `__metadata__` records: `format` (`mpsearch-compressed-weights`), `format_version`, the run, trial
//! (and front point), assignment hash, quality (search split; `held_out_quality` too when known) and its
//! metric, cost objective, model, space, scale method and rounding (`rtn`, `gptq`: the weights are those
//! the run evaluated, GPTQ's from the same calibration statistics), pruning importance (`magnitude`,
//! `taylor`, `fisher`: the masks are the run's, from the same calibration gradients), the whole assignment JSON, `layers`
//! (per layer: its choice, shape, and per factor its rows, columns, format, pattern and stored-value
//! count), `not_included` (the layers left out) and `reconstruct` (these rules in short).

mod read;
mod write;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

pub use self::read::{load_compressed, read_bytes, read_compressed};
pub use self::write::{compressed_bytes, write_compressed, LayerCalibration};
use crate::compress::{Importance, Rounding, ScaleMethod};
use crate::error::Result;
use crate::space::{Choice, Granularity, Sparsity};

/// The `format` metadata value of an mpsearch compressed-weights file.
pub const FORMAT: &str = "mpsearch-compressed-weights";
/// The layout version this module writes. Version 1 grouped N:M runs along consecutive columns
/// (across a convolution's kernel positions) and pruned the ragged tail; it is not read. Version 2
/// stored a GGML format's factors as their dequantized f32 `values` (version 3 stores their `blocks`);
/// it is read, with that difference.
pub const FORMAT_VERSION: u32 = 3;
/// The layout versions this module reads.
pub const READS: std::ops::RangeInclusive<u32> = 2..=FORMAT_VERSION;

/// The factor names of a convolution factorization, in storage order (see the module docs).
fn conv_factor_names(f: crate::space::ConvFactor) -> &'static [&'static str] {
    match f {
        crate::space::ConvFactor::Tucker(_) => &["u_out", "core", "u_in"],
        crate::space::ConvFactor::Cp(_) => &["cp_out", "cp_w", "cp_h", "cp_in"],
    }
}

const RECONSTRUCT: &str = "per factor (w, or a and b): zeros except the stored values; stored values \
    in row-major order: all (pattern dense), those whose mask bit is 1 (bitmask), all values of the rows \
    listed in .rows (rows); N:M in channels-last order: per row, per kernel position p (kernel = \
    product of shape[2:] for w and b, 1 for a; column = channel*kernel + p), N values per full run of \
    M input channels at their nm_index places, then the ragged tail of (in mod M) channels dense; \
    integer value = (code - z) * s with the group's scale and zero point (symmetric: z = 2^(bits-1)); \
    codes, mask and nm_index are little-endian bit streams; a GGML format (q4_k, ...) stores the blocks \
    of its stored rows in ggml's layout (ggml-common.h), values = the blocks dequantized; weight = w, \
    or the f32 product a.b; tucker<P>: W[o,i,y,x] = sum u_out[o,a] core[a,(b,y,x)] u_in[b,i]; cp<P>: \
    W[o,i,y,x] = sum_r cp_out[o,r] cp_in[r,i] cp_h[r,y] cp_w[r,x] (in f64, rounded to f32); reshaped \
    to the layer's shape";

/// Where the weights came from, recorded in the file's metadata.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    pub run: String,
    pub trial: u64,
    /// 1-based position on the run's front, when on it.
    pub point: Option<usize>,
    /// The assignment's content hash (hex).
    pub hash: String,
    /// Quality on the search split (what the trial was chosen on).
    pub quality: Option<f64>,
    /// Quality on the held-out split, when it was evaluated there.
    pub held_out_quality: Option<f64>,
    /// What `quality` measures (`kl_divergence`, `cosine_distance`).
    pub quality_metric: String,
    /// The run's cost objective (`latency`, `size`, `bops`).
    pub cost_objective: String,
    pub model: String,
    pub space: String,
    pub scale: ScaleMethod,
    /// How integer weights were rounded.
    pub rounding: Rounding,
    /// How pruning ranked the weights.
    pub importance: Importance,
}

/// What [`write_compressed`] wrote.
#[derive(Clone, Debug)]
pub struct WriteSummary {
    /// Layers stored (their weight changes).
    pub layers: Vec<String>,
    /// Layers left out (weight unchanged).
    pub left_out: Vec<String>,
    pub tensors: usize,
    /// Bytes of the file.
    pub bytes: u64,
    /// Bytes of the tensors' data.
    pub data_bytes: u64,
}

/// A compressed-weights file read back.
#[derive(Clone, Debug)]
pub struct CompressedFile {
    /// Dense f32 weight by layer name, in the layer's shape.
    pub weights: BTreeMap<String, Tensor>,
    /// The choice of every stored layer.
    pub choices: BTreeMap<String, Choice>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

/// One layer in the `layers` metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LayerRecord {
    choice: String,
    shape: Vec<usize>,
    factors: Vec<FactorRecord>,
}

/// One factor in the `layers` metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FactorRecord {
    /// `w`, `a` or `b`.
    name: String,
    rows: usize,
    cols: usize,
    /// Weight format in choice notation (`int4-asym-g32`, `f16`, …).
    format: String,
    /// `dense`, `bitmask`, `N:M` or `rows`.
    pattern: String,
    /// Number of stored values.
    stored: usize,
}

/// The largest absolute difference between two tensors of the same shape (f32).
pub fn max_difference(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        return Ok(f32::INFINITY);
    }
    let a = a.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    let b = b.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

/// How a factor's stored values are laid out: the `pattern` of its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// Every value.
    Dense,
    /// The values whose `mask` bit is 1 (unstructured sparsity).
    Bitmask,
    /// N values per full run of M input channels at their `nm_index` places, the ragged tail dense.
    NM { n: u8, m: u8 },
    /// Every value of the rows listed in `rows` (removed channels).
    Rows,
}

impl Pattern {
    /// The pattern of factor `index` (0: `w` or `a`) of a layer pruned by `sparsity`: removed channels
    /// are rows of the first factor only.
    fn of(sparsity: Sparsity, index: usize) -> Pattern {
        match sparsity {
            Sparsity::None => Pattern::Dense,
            Sparsity::Unstructured(_) => Pattern::Bitmask,
            Sparsity::NM { n, m } => Pattern::NM { n, m },
            Sparsity::Channels(_) if index == 0 => Pattern::Rows,
            Sparsity::Channels(_) => Pattern::Dense,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Dense => f.write_str("dense"),
            Pattern::Bitmask => f.write_str("bitmask"),
            Pattern::NM { n, m } => write!(f, "{n}:{m}"),
            Pattern::Rows => f.write_str("rows"),
        }
    }
}

/// Which values of a `rows`×`cols` factor are stored.
struct Stored {
    /// The rows that have stored values (all but removed channels), ascending: the rows of `scales`.
    rows: Vec<usize>,
    /// The stored values' positions, row-major.
    positions: Vec<usize>,
}

/// Every position of `rows`, row-major, in a matrix of `cols` columns.
fn row_positions(rows: &[usize], cols: usize) -> Vec<usize> {
    rows.iter()
        .flat_map(|&r| r * cols..(r + 1) * cols)
        .collect()
}

/// Every position of a `rows`×`cols` factor with `kernel` positions per input channel, in
/// channels-last order (row, then kernel position, then channel): the order of N:M stored values.
fn nm_order(rows: usize, cols: usize, kernel: usize) -> impl Iterator<Item = usize> {
    let channels = cols / kernel.max(1);
    (0..rows).flat_map(move |r| {
        (0..kernel).flat_map(move |p| (0..channels).map(move |c| r * cols + c * kernel + p))
    })
}

/// Groups of scales in a row of `cols` columns (1 per tensor counts as 1 per row here).
fn groups_per_row(cols: usize, g: Granularity) -> usize {
    match g {
        Granularity::Tensor | Granularity::Channel => 1,
        Granularity::Group(n) => cols.div_ceil((n as usize).max(1)),
    }
}

/// Bits of an index within a run of `m`: ⌈log₂ m⌉.
fn index_bits(m: u8) -> u8 {
    (u32::from(m).next_power_of_two().trailing_zeros() as u8).max(1)
}

/// Packs `bits`-bit values into a little-endian bit stream.
pub fn pack(values: impl Iterator<Item = u8>, bits: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut n) = (0u32, 0u8);
    let mask = ((1u32 << bits) - 1) as u8;
    for v in values {
        acc |= u32::from(v & mask) << n;
        n += bits;
        while n >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            n -= 8;
        }
    }
    if n > 0 {
        out.push(acc as u8);
    }
    out
}

/// The first `count` `bits`-bit values of a little-endian bit stream; `None` if it is too short.
pub fn unpack(bytes: &[u8], bits: u8, count: usize) -> Option<Vec<u8>> {
    if bytes.len() * 8 < count * bits as usize {
        return None;
    }
    let mask = (1u32 << bits) - 1;
    let mut out = Vec::with_capacity(count);
    let (mut acc, mut n, mut it) = (0u32, 0u8, bytes.iter());
    for _ in 0..count {
        while n < bits {
            acc |= u32::from(*it.next()?) << n;
            n += 8;
        }
        out.push((acc & mask) as u8);
        acc >>= bits;
        n -= bits;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_every_width() {
        for bits in 1..=8u8 {
            let vals: Vec<u8> = (0..37u32)
                .map(|i| ((i * 7 + 3) % (1 << bits)) as u8)
                .collect();
            let packed = pack(vals.iter().copied(), bits);
            assert_eq!(packed.len(), (vals.len() * bits as usize).div_ceil(8));
            assert_eq!(
                unpack(&packed, bits, vals.len()).unwrap(),
                vals,
                "{bits} bits"
            );
        }
        // 4-bit codes: low nibble first.
        assert_eq!(pack([1u8, 2].into_iter(), 4), vec![0x21]);
        assert!(unpack(&[0u8], 4, 3).is_none());
        assert_eq!(index_bits(4), 2);
        assert_eq!(index_bits(8), 3);
        assert_eq!(index_bits(2), 1);
        assert_eq!(index_bits(5), 3);
    }
}
