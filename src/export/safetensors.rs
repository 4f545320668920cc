//! # Compressed weights as safetensors
//!
//! [`write_compressed`] stores every layer whose weight a choice changes in its compact form, as the
//! compression produced it ([`compress_factors`]); [`load_compressed`] reads a file back into the dense
//! f32 weights the evaluator runs, bit for bit. The file holds the compressed weights only, not a
//! checkpoint: layers whose weight is unchanged (f32, dense, full rank — also when only their
//! activations are quantized), biases, norms and every other tensor are left out (take them from the
//! original model). Activation quantization happens at run time; each layer's choice (in the metadata)
//! records it.
//!
//! ## Layout (format version 1)
//!
//! A layer `L` has one factor `w`, or two, `a` (rows × k) and `b` (k × cols), when it is factorized
//! (`rank<P>`: `W ≈ A·B`). The factors are matrices in the matrix view of the weight (rows = output
//! channels, columns = everything else). Each factor `F` is stored as these tensors:
//!
//! | tensor | dtype | shape | what |
//! | --- | --- | --- | --- |
//! | `L.F.codes` | U8 | [⌈n·b/8⌉] | integer formats: the n stored values' b-bit codes, packed |
//! | `L.F.scales` | F32 | [stored rows, groups per row], or \[1\] per tensor | one scale per group |
//! | `L.F.zero_points` | U8 | as `scales` | asymmetric only: one zero point per group |
//! | `L.F.values` | F32, F16 or BF16 | [rows, cols] dense, else \[n\] | float formats: the stored values |
//! | `L.F.mask` | U8 | [⌈rows·cols/8⌉] | unstructured sparsity: 1 bit per value, 1 = kept |
//! | `L.F.nm_index` | U8 | [⌈n·⌈log₂M⌉/8⌉] | N:M: each kept value's position in its run of M |
//! | `L.F.rows` | I32 | [kept rows] | removed channels (`w` or `a`): the kept rows, ascending |
//!
//! **Stored values**, in row-major order: every value (dense); the values whose mask bit is 1
//! (unstructured); in every row, each run of M consecutive columns keeps ⌈N·len/M⌉ values (`len` = M
//! but for a shorter last run), listed by their `nm_index` (N:M); all values of the kept rows
//! (removed channels; the other rows are zero).
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
//! **Reconstruction**: each factor is zeros but for its stored values; the weight is `w`, or `a·b`
//! (an f32 product, summing in f32), reshaped to the layer's shape.
//!
//! The `__metadata__` records: `format` (`mpsearch-compressed-weights`), `format_version`, the run, trial
//! (and front point), assignment hash, quality and its metric, cost objective, model, space and scale
//! method, the whole
//! assignment JSON, `layers` (per layer: its choice, shape, and per factor its rows, columns, format,
//! pattern and stored-value count), `not_included` (the layers left out) and `reconstruct` (these rules
//! in short).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::compress::{
    compress_factors, CompressedWeight, QuantizedWeight, ScaleMethod, WeightMatrix,
};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::space::{Assignment, Choice, Granularity, QuantScheme, Sparsity, WeightQuant};

/// The `format` metadata value of an mpsearch compressed-weights file.
pub const FORMAT: &str = "mpsearch-compressed-weights";
/// The layout version this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const RECONSTRUCT: &str = "per factor (w, or a and b): zeros except the stored values; stored values \
    in row-major order: all (pattern dense), those whose mask bit is 1 (bitmask), ceil(N*len/M) per run \
    of M columns at their nm_index positions (N:M), all values of the rows listed in .rows (rows); \
    integer value = (code - z) * s with the group's scale and zero point (symmetric: z = 2^(bits-1)); \
    codes, mask and nm_index are little-endian bit streams; weight = w, or the f32 product a.b, \
    reshaped to the layer's shape";

/// Where the weights came from, recorded in the file's metadata.
#[derive(Clone, Debug)]
pub struct ExportInfo {
    pub run: String,
    pub trial: u64,
    /// 1-based position on the run's front, when on it.
    pub point: Option<usize>,
    /// The assignment's content hash (hex).
    pub hash: String,
    pub quality: Option<f64>,
    /// What `quality` measures (`kl_divergence`, `cosine_distance`).
    pub quality_metric: String,
    /// The run's cost objective (`latency`, `size`, `bops`).
    pub cost_objective: String,
    pub model: String,
    pub space: String,
    pub scale: ScaleMethod,
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

/// Whether a layer under `choice` has a weight that differs from the original (what is stored).
fn weight_changes(choice: &Choice) -> bool {
    choice.weights != WeightQuant::F32 || choice.sparsity != Sparsity::None || choice.rank.is_some()
}

/// An owned tensor to serialise.
struct Owned {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The file's bytes for `assignment` on `model` (see the module docs), and what it holds.
pub fn compressed_bytes(
    model: &dyn Model,
    assignment: &Assignment,
    info: &ExportInfo,
) -> Result<(Vec<u8>, WriteSummary, BTreeMap<String, Tensor>)> {
    let mut tensors = Vec::new();
    let mut records = BTreeMap::new();
    let mut dense = BTreeMap::new();
    let (mut layers, mut left_out) = (Vec::new(), Vec::new());
    for l in &model.inventory().layers {
        let choice = assignment.get(&l.name).copied().unwrap_or(Choice::F32);
        if !weight_changes(&choice) {
            left_out.push(l.name.clone());
            continue;
        }
        let w = model.weight(&l.name)?;
        let c = compress_factors(&w, &choice, info.scale)?;
        let record = layer_tensors(&l.name, &choice, &c, &mut tensors)?;
        records.insert(l.name.clone(), record);
        dense.insert(l.name.clone(), c.to_tensor()?);
        layers.push(l.name.clone());
    }
    let mut meta: HashMap<String, String> = HashMap::from([
        ("format".into(), FORMAT.into()),
        ("format_version".into(), FORMAT_VERSION.to_string()),
        ("run".into(), info.run.clone()),
        ("trial".into(), info.trial.to_string()),
        ("assignment_hash".into(), info.hash.clone()),
        ("quality_metric".into(), info.quality_metric.clone()),
        ("cost_objective".into(), info.cost_objective.clone()),
        ("model".into(), info.model.clone()),
        ("space".into(), info.space.clone()),
        ("scale".into(), info.scale.to_string()),
        ("assignment".into(), assignment.to_json_string()),
        (
            "layers".into(),
            serde_json::to_string(&records)
                .map_err(|e| Error::export(format!("metadata `layers`: {e}")))?,
        ),
        (
            "not_included".into(),
            format!(
                "layers whose weight is unchanged (f32, dense, full rank): [{}]; and every tensor that \
                 is not a compressible layer's weight (biases, norms, other embeddings): take them from \
                 the original model",
                left_out.join(", ")
            ),
        ),
        ("reconstruct".into(), RECONSTRUCT.into()),
    ]);
    if let Some(p) = info.point {
        meta.insert("point".into(), p.to_string());
    }
    if let Some(q) = info.quality {
        meta.insert("quality".into(), format!("{q:e}"));
    }
    let views = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::export(format!("tensor `{}`: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::export(format!("cannot serialise the compressed weights: {e}")))?;
    let summary = WriteSummary {
        layers,
        left_out,
        tensors: tensors.len(),
        bytes: bytes.len() as u64,
        data_bytes: tensors.iter().map(|t| t.data.len() as u64).sum(),
    };
    Ok((bytes, summary, dense))
}

/// Writes the compressed weights of `assignment` on `model` to `path` atomically, then reads the file
/// back and checks that it reproduces the compressed weights bit for bit.
pub fn write_compressed(
    model: &dyn Model,
    assignment: &Assignment,
    info: &ExportInfo,
    path: &Path,
) -> Result<WriteSummary> {
    let (bytes, summary, dense) = compressed_bytes(model, assignment, info)?;
    let back = read_bytes(&bytes, path)?;
    for (name, t) in &dense {
        let Some(b) = back.weights.get(name) else {
            return Err(Error::export(format!(
                "{}: layer `{name}` is missing when read back (a bug in the writer)",
                path.display()
            )));
        };
        if max_difference(t, b)? != 0.0 {
            return Err(Error::export(format!(
                "{}: layer `{name}` does not read back to the compressed weight (a bug in the writer)",
                path.display()
            )));
        }
    }
    crate::fs::write_atomic(path, &bytes)?;
    Ok(summary)
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
    /// ⌈N·len/M⌉ values per run of M columns, at their `nm_index` positions.
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

    /// The pattern written in the metadata of factor `prefix`: a name, or else the N:M pattern of
    /// the layer's `choice` (any other choice is an error).
    fn read(text: &str, choice: &Choice, prefix: &str) -> Result<Pattern> {
        match text {
            "dense" => Ok(Pattern::Dense),
            "bitmask" => Ok(Pattern::Bitmask),
            "rows" => Ok(Pattern::Rows),
            nm => match choice.sparsity {
                Sparsity::NM { n, m } => Ok(Pattern::NM { n, m }),
                _ => Err(Error::export(format!(
                    "factor `{prefix}` has pattern `{nm}`, which its choice `{choice}` does not have"
                ))),
            },
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

impl Stored {
    /// What a factor of `pattern` with keep-`mask` stores (the writer's side).
    fn of(pattern: Pattern, rows: usize, cols: usize, mask: &[bool]) -> Stored {
        let kept_rows: Vec<usize> = if pattern == Pattern::Rows {
            (0..rows).filter(|&r| cols == 0 || mask[r * cols]).collect()
        } else {
            (0..rows).collect()
        };
        let positions = match pattern {
            Pattern::Dense => (0..rows * cols).collect(),
            Pattern::Rows => row_positions(&kept_rows, cols),
            Pattern::Bitmask | Pattern::NM { .. } => {
                (0..rows * cols).filter(|&i| mask[i]).collect()
            }
        };
        Stored {
            rows: kept_rows,
            positions,
        }
    }
}

/// Every position of `rows`, row-major, in a matrix of `cols` columns.
fn row_positions(rows: &[usize], cols: usize) -> Vec<usize> {
    rows.iter()
        .flat_map(|&r| r * cols..(r + 1) * cols)
        .collect()
}

/// The stored tensors of one layer; returns its metadata record.
fn layer_tensors(
    layer: &str,
    choice: &Choice,
    c: &CompressedWeight,
    out: &mut Vec<Owned>,
) -> Result<LayerRecord> {
    let names: &[&str] = if c.factors().len() == 2 {
        &["a", "b"]
    } else {
        &["w"]
    };
    let mut factors = Vec::new();
    for (i, ((f, mask), q)) in c
        .factors()
        .iter()
        .zip(c.masks())
        .zip(c.quantized())
        .enumerate()
    {
        let prefix = format!("{layer}.{}", names[i]);
        let pattern = Pattern::of(choice.sparsity, i);
        let stored = Stored::of(pattern, f.rows(), f.cols(), mask);
        push_pattern(&prefix, pattern, &stored, mask, f, out);
        match (q, choice.weights) {
            (
                Some(q),
                WeightQuant::Int {
                    bits,
                    scheme,
                    granularity,
                },
            ) => push_codes(
                &prefix,
                q,
                (bits, scheme, granularity),
                &stored,
                f.cols(),
                out,
            ),
            (_, format) => push_values(&prefix, f, &format, pattern, &stored, out)?,
        }
        factors.push(FactorRecord {
            name: names[i].to_string(),
            rows: f.rows(),
            cols: f.cols(),
            format: choice.weights.to_string(),
            pattern: pattern.to_string(),
            stored: stored.positions.len(),
        });
    }
    Ok(LayerRecord {
        choice: choice.to_string(),
        shape: c.shape().to_vec(),
        factors,
    })
}

/// The tensor that says which values a factor stores: `mask` (bitmask), `rows` (removed channels)
/// or `nm_index` (N:M); none when dense.
fn push_pattern(
    prefix: &str,
    pattern: Pattern,
    stored: &Stored,
    mask: &[bool],
    f: &WeightMatrix,
    out: &mut Vec<Owned>,
) {
    match pattern {
        Pattern::Dense => {}
        Pattern::Bitmask => out.push(Owned {
            name: format!("{prefix}.mask"),
            dtype: Dtype::U8,
            shape: vec![(f.rows() * f.cols()).div_ceil(8)],
            data: pack(mask.iter().map(|&k| u8::from(k)), 1),
        }),
        Pattern::Rows => out.push(Owned {
            name: format!("{prefix}.rows"),
            dtype: Dtype::I32,
            shape: vec![stored.rows.len()],
            data: stored
                .rows
                .iter()
                .flat_map(|&r| (r as i32).to_le_bytes())
                .collect(),
        }),
        Pattern::NM { m, .. } => {
            let bits = index_bits(m);
            let idx: Vec<u8> = stored
                .positions
                .iter()
                .map(|&i| ((i % f.cols()) % m as usize) as u8)
                .collect();
            out.push(Owned {
                name: format!("{prefix}.nm_index"),
                dtype: Dtype::U8,
                shape: vec![(idx.len() * bits as usize).div_ceil(8)],
                data: pack(idx.into_iter(), bits),
            });
        }
    }
}

/// An integer factor's tensors: the stored values' packed `codes`, and the `scales` (and, when
/// asymmetric, `zero_points`) of the stored rows' groups.
fn push_codes(
    prefix: &str,
    q: &QuantizedWeight,
    (bits, scheme, granularity): (u8, QuantScheme, Granularity),
    stored: &Stored,
    cols: usize,
    out: &mut Vec<Owned>,
) {
    let codes = q.codes();
    out.push(Owned {
        name: format!("{prefix}.codes"),
        dtype: Dtype::U8,
        shape: vec![(stored.positions.len() * bits as usize).div_ceil(8)],
        data: pack(stored.positions.iter().map(|&i| codes[i]), bits),
    });
    // The groups of the stored rows (one group for a per-tensor scale).
    let per_row = groups_per_row(cols, granularity);
    let (idx, shape): (Vec<usize>, Vec<usize>) = match granularity {
        Granularity::Tensor => (vec![0], vec![1]),
        _ => (
            row_positions(&stored.rows, per_row),
            vec![stored.rows.len(), per_row],
        ),
    };
    out.push(Owned {
        name: format!("{prefix}.scales"),
        dtype: Dtype::F32,
        shape: shape.clone(),
        data: idx
            .iter()
            .flat_map(|&g| q.scales()[g].to_le_bytes())
            .collect(),
    });
    if scheme == QuantScheme::Asymmetric {
        out.push(Owned {
            name: format!("{prefix}.zero_points"),
            dtype: Dtype::U8,
            shape,
            data: idx.iter().map(|&g| q.zero_points()[g]).collect(),
        });
    }
}

/// A float factor's `values`: the stored values in the format's dtype, as a matrix when dense.
fn push_values(
    prefix: &str,
    f: &WeightMatrix,
    format: &WeightQuant,
    pattern: Pattern,
    stored: &Stored,
    out: &mut Vec<Owned>,
) -> Result<()> {
    let values: Vec<f32> = stored.positions.iter().map(|&i| f.data()[i]).collect();
    let (dtype, data) = float_bytes(&values, format)?;
    let shape = if pattern == Pattern::Dense {
        vec![f.rows(), f.cols()]
    } else {
        vec![values.len()]
    };
    out.push(Owned {
        name: format!("{prefix}.values"),
        dtype,
        shape,
        data,
    });
    Ok(())
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

/// Float values as the bytes of their format's dtype (they are already exactly representable).
fn float_bytes(values: &[f32], format: &WeightQuant) -> Result<(Dtype, Vec<u8>)> {
    let (dtype, candle) = match format {
        WeightQuant::F16 => (Dtype::F16, DType::F16),
        WeightQuant::Bf16 => (Dtype::BF16, DType::BF16),
        _ => {
            return Ok((
                Dtype::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ))
        }
    };
    let t = Tensor::from_slice(values, values.len(), &Device::Cpu)?.to_dtype(candle)?;
    let (storage, layout) = t.storage_and_layout();
    let range = layout.start_offset()..layout.start_offset() + values.len();
    let data = match &*storage {
        Storage::Cpu(CpuStorage::F16(v)) => v[range]
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        Storage::Cpu(CpuStorage::BF16(v)) => v[range]
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        _ => {
            return Err(Error::export(format!(
                "converting weights to {format} gave an unexpected storage"
            )))
        }
    };
    Ok((dtype, data))
}

/// Reads a compressed-weights file into dense f32 weights by layer name (in each layer's shape).
pub fn load_compressed(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(read_compressed(path)?.weights)
}

/// Reads a compressed-weights file: dense weights, choices and metadata.
pub fn read_compressed(path: &Path) -> Result<CompressedFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_bytes(&bytes, path)
}

/// Reads a compressed-weights file's bytes (`path` names it in errors).
pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<CompressedFile> {
    let bad = |m: String| Error::file(path, m);
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    if metadata.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not an mpsearch compressed-weights file (its metadata has no `format: {FORMAT}`); \
             write one with `mpsearch export RUN --format safetensors`"
        )));
    }
    let version = metadata.get("format_version").map(String::as_str);
    if version != Some(&*FORMAT_VERSION.to_string()) {
        return Err(bad(format!(
            "format version {} is not the version this mpsearch reads ({FORMAT_VERSION})",
            version.unwrap_or("(none)")
        )));
    }
    let records: BTreeMap<String, LayerRecord> = metadata
        .get("layers")
        .ok_or_else(|| bad("metadata has no `layers`".into()))
        .and_then(|t| {
            serde_json::from_str(t).map_err(|e| bad(format!("metadata `layers`: {e}")))
        })?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
    let mut weights = BTreeMap::new();
    let mut choices = BTreeMap::new();
    for (name, r) in &records {
        let choice: Choice = r.choice.parse()?;
        let mut factors = Vec::new();
        for f in &r.factors {
            factors.push(read_factor(&st, name, f, &choice).map_err(|e| match e {
                Error::Export { message } => bad(message),
                other => other,
            })?);
        }
        let m = match factors.as_slice() {
            [w] => w.clone(),
            [a, b] => a.matmul(b)?,
            _ => {
                return Err(bad(format!(
                    "layer `{name}` has {} factors; a layer has 1 (w) or 2 (a, b)",
                    factors.len()
                )))
            }
        };
        if m.len() != r.shape.iter().product::<usize>() {
            return Err(bad(format!(
                "layer `{name}`: a {}×{} matrix cannot take the shape {:?}",
                m.rows(),
                m.cols(),
                r.shape
            )));
        }
        weights.insert(name.clone(), m.to_tensor(&r.shape)?);
        choices.insert(name.clone(), choice);
    }
    Ok(CompressedFile {
        weights,
        choices,
        metadata,
    })
}

/// One factor, densified.
fn read_factor(
    st: &SafeTensors,
    layer: &str,
    f: &FactorRecord,
    choice: &Choice,
) -> Result<WeightMatrix> {
    let t = FactorTensors {
        st,
        prefix: format!("{layer}.{}", f.name),
    };
    let pattern = Pattern::read(&f.pattern, choice, &t.prefix)?;
    let stored = t.stored(pattern, f)?;
    if stored.positions.len() != f.stored {
        return Err(Error::export(format!(
            "factor `{}` has {} stored positions but records {}",
            t.prefix,
            stored.positions.len(),
            f.stored
        )));
    }
    let mut data = vec![0.0f32; f.rows * f.cols];
    match choice.weights {
        WeightQuant::Int {
            bits,
            scheme,
            granularity,
        } => t.codes((bits, scheme, granularity), &stored, f, &mut data)?,
        format => t.values(&format, &stored.positions, &mut data)?,
    }
    WeightMatrix::new(f.rows, f.cols, data)
}

/// The tensors of one factor (`prefix` = `L.F`) in a file being read.
struct FactorTensors<'a> {
    st: &'a SafeTensors<'a>,
    prefix: String,
}

impl FactorTensors<'_> {
    /// The bytes of tensor `prefix.suffix`, which must exist with `dtype`.
    fn get(&self, suffix: &str, dtype: Dtype) -> Result<Vec<u8>> {
        let name = format!("{}.{suffix}", self.prefix);
        let t = self
            .st
            .tensor(&name)
            .map_err(|_| Error::export(format!("tensor `{name}` is missing")))?;
        if t.dtype() != dtype {
            return Err(Error::export(format!(
                "tensor `{name}` is {:?}, expected {dtype:?}",
                t.dtype()
            )));
        }
        Ok(t.data().to_vec())
    }

    fn short(&self, what: &str) -> Error {
        Error::export(format!("tensor `{}.{what}` is too short", self.prefix))
    }

    /// Which values the factor stores, as its `pattern` and tensors say (the reader's side of
    /// [`Stored::of`]).
    fn stored(&self, pattern: Pattern, f: &FactorRecord) -> Result<Stored> {
        let (rows, cols) = (f.rows, f.cols);
        let all_rows = || (0..rows).collect();
        Ok(match pattern {
            Pattern::Dense => Stored {
                rows: all_rows(),
                positions: (0..rows * cols).collect(),
            },
            Pattern::Bitmask => {
                let bits = unpack(&self.get("mask", Dtype::U8)?, 1, rows * cols)
                    .ok_or_else(|| self.short("mask"))?;
                Stored {
                    rows: all_rows(),
                    positions: (0..rows * cols).filter(|&i| bits[i] == 1).collect(),
                }
            }
            Pattern::Rows => {
                let kept = self.kept_rows(rows)?;
                Stored {
                    positions: row_positions(&kept, cols),
                    rows: kept,
                }
            }
            Pattern::NM { n, m } => Stored {
                rows: all_rows(),
                positions: self.nm_positions(usize::from(n), usize::from(m), f)?,
            },
        })
    }

    /// The `rows` tensor: the kept rows, each below `rows`.
    fn kept_rows(&self, rows: usize) -> Result<Vec<usize>> {
        self.get("rows", Dtype::I32)?
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .map(|r| usize::try_from(r).ok().filter(|&r| r < rows))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::export(format!(
                    "tensor `{}.rows` has a row outside 0..{rows}",
                    self.prefix
                ))
            })
    }

    /// The stored positions of an N:M factor, from its `nm_index` tensor: ⌈N·len/M⌉ per run of M
    /// columns (`len` = M but for a shorter last run) of every row.
    fn nm_positions(&self, n: usize, m: usize, f: &FactorRecord) -> Result<Vec<usize>> {
        let (rows, cols) = (f.rows, f.cols);
        let idx = unpack(
            &self.get("nm_index", Dtype::U8)?,
            index_bits(m as u8),
            f.stored,
        )
        .ok_or_else(|| self.short("nm_index"))?;
        let mut it = idx.into_iter();
        let mut out = Vec::with_capacity(f.stored);
        for r in 0..rows {
            for start in (0..cols).step_by(m.max(1)) {
                let len = m.min(cols - start);
                for _ in 0..(n * len).div_ceil(m) {
                    let j = usize::from(it.next().ok_or_else(|| self.short("nm_index"))?);
                    if j >= len {
                        return Err(Error::export(format!(
                            "tensor `{}.nm_index` has position {j} in a run of {len}",
                            self.prefix
                        )));
                    }
                    out.push(r * cols + start + j);
                }
            }
        }
        Ok(out)
    }

    /// An integer factor's values into `data`: each code with its group's scale and zero point.
    fn codes(
        &self,
        (bits, scheme, granularity): (u8, QuantScheme, Granularity),
        stored: &Stored,
        f: &FactorRecord,
        data: &mut [f32],
    ) -> Result<()> {
        let (rows, cols) = (f.rows, f.cols);
        let codes = unpack(&self.get("codes", Dtype::U8)?, bits, stored.positions.len())
            .ok_or_else(|| self.short("codes"))?;
        let scales: Vec<f32> = self
            .get("scales", Dtype::F32)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let zeros: Vec<u8> = match scheme {
            QuantScheme::Asymmetric => self.get("zero_points", Dtype::U8)?,
            QuantScheme::Symmetric => vec![1u8 << (bits - 1); scales.len()],
        };
        let per_row = groups_per_row(cols, granularity);
        // Stored-row index of each row (rows pattern: position in the kept list).
        let mut slot = vec![usize::MAX; rows];
        for (k, &r) in stored.rows.iter().enumerate() {
            slot[r] = k;
        }
        for (&p, &c) in stored.positions.iter().zip(&codes) {
            let (r, col) = (p / cols, p % cols);
            let g = match granularity {
                Granularity::Tensor => 0,
                Granularity::Channel => slot[r],
                Granularity::Group(n) => slot[r] * per_row + col / (n as usize).max(1),
            };
            let (Some(&s), Some(&z)) = (scales.get(g), zeros.get(g)) else {
                return Err(self.short("scales"));
            };
            data[p] = (i32::from(c) - i32::from(z)) as f32 * s;
        }
        Ok(())
    }

    /// A float factor's `values` into `data` at their stored `positions`.
    fn values(&self, format: &WeightQuant, positions: &[usize], data: &mut [f32]) -> Result<()> {
        let (dtype, candle) = match format {
            WeightQuant::F16 => (Dtype::F16, DType::F16),
            WeightQuant::Bf16 => (Dtype::BF16, DType::BF16),
            _ => (Dtype::F32, DType::F32),
        };
        let raw = self.get("values", dtype)?;
        if raw.len() != positions.len() * candle.size_in_bytes() {
            return Err(self.short("values"));
        }
        let values = Tensor::from_raw_buffer(&raw, candle, &[positions.len()], &Device::Cpu)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        for (&p, v) in positions.iter().zip(values) {
            data[p] = v;
        }
        Ok(())
    }
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
