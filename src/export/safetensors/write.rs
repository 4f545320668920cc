//! Writing: each compressed layer's factors as the tensors of the layout (see the module docs).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use safetensors::Dtype;

use super::{
    groups_per_row, index_bits, max_difference, nm_order, pack, read_bytes, row_positions,
    ExportInfo, FactorRecord, LayerRecord, Pattern, Stored, WriteSummary, FORMAT, FORMAT_VERSION,
    RECONSTRUCT,
};
use crate::compress::{
    compress_with, factor_kernel, CompressSettings, CompressedWeight, LayerInputs, LayerScores,
    QuantizedWeight, WeightMatrix,
};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::space::{Assignment, Choice, GgmlFormat, Granularity, QuantScheme, WeightQuant};

/// Whether a layer under `choice` has a weight that differs from the original (what is stored).
fn weight_changes(choice: &Choice) -> bool {
    crate::compress::changes_weight(choice)
}

/// An owned tensor to serialise.
struct Owned {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// What the calibration data says about the layers, for compressing them as the evaluator did: the
/// input statistics, needed when the scale method or rounding uses them
/// ([`CompressSettings::uses_inputs`]), and the importance scores, needed when pruning ranks by a
/// gradient importance.
#[derive(Clone, Debug, Default)]
pub struct LayerCalibration {
    pub inputs: Option<LayerInputs>,
    pub scores: Option<LayerScores>,
}

/// The file's bytes for `assignment` on `model` (see the module docs), and what it holds.
/// `calibration` holds what `info`'s settings need ([`LayerCalibration`]).
pub fn compressed_bytes(
    model: &dyn Model,
    assignment: &Assignment,
    info: &ExportInfo,
    calibration: &LayerCalibration,
) -> Result<(Vec<u8>, WriteSummary, BTreeMap<String, Tensor>)> {
    let settings = CompressSettings {
        scale: info.scale,
        rounding: info.rounding,
        importance: info.importance,
    };
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
        let stats = (calibration.inputs.as_ref())
            .and_then(|i| i.get(&l.name))
            .map(AsRef::as_ref);
        let scores = (calibration.scores.as_ref())
            .and_then(|s| s.get(&l.name))
            .map(AsRef::as_ref);
        let c = compress_with(&w, &choice, &settings, stats, scores)?;
        // A GGML format's blocks are quantized from the factors before quantization: the same
        // factorization and removed rows, kept in f32.
        let unquantized = match choice.weights {
            WeightQuant::Ggml(_) => Some(compress_with(
                &w,
                &Choice {
                    weights: WeightQuant::F32,
                    ..choice
                },
                &settings,
                stats,
                scores,
            )?),
            _ => None,
        };
        let record = layer_tensors(&l.name, &choice, &c, unquantized.as_ref(), &mut tensors)?;
        records.insert(l.name.clone(), record);
        dense.insert(l.name.clone(), c.to_tensor()?);
        layers.push(l.name.clone());
    }
    let meta = metadata(assignment, info, &records, &left_out)?;
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

/// The file's metadata: what was exported from which run, how it was compressed, and how to rebuild it.
fn metadata(
    assignment: &Assignment,
    info: &ExportInfo,
    records: &BTreeMap<String, LayerRecord>,
    left_out: &[String],
) -> Result<HashMap<String, String>> {
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
        ("rounding".into(), info.rounding.to_string()),
        ("importance".into(), info.importance.to_string()),
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
    if let Some(q) = info.held_out_quality {
        meta.insert("held_out_quality".into(), format!("{q:e}"));
    }
    Ok(meta)
}

/// Writes the compressed weights of `assignment` on `model` to `path` atomically, then reads the file
/// back and checks that it reproduces the compressed weights bit for bit (`calibration`: see
/// [`compressed_bytes`]).
pub fn write_compressed(
    model: &dyn Model,
    assignment: &Assignment,
    info: &ExportInfo,
    calibration: &LayerCalibration,
    path: &Path,
) -> Result<WriteSummary> {
    let (bytes, summary, dense) = compressed_bytes(model, assignment, info, calibration)?;
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

impl Stored {
    /// What a factor of `pattern` with keep-`mask` and `kernel` positions per input channel stores
    /// (the writer's side).
    fn of(pattern: Pattern, rows: usize, cols: usize, kernel: usize, mask: &[bool]) -> Stored {
        let kept_rows: Vec<usize> = if pattern == Pattern::Rows {
            (0..rows).filter(|&r| cols == 0 || mask[r * cols]).collect()
        } else {
            (0..rows).collect()
        };
        let positions = match pattern {
            Pattern::Dense => (0..rows * cols).collect(),
            Pattern::Rows => row_positions(&kept_rows, cols),
            Pattern::Bitmask => (0..rows * cols).filter(|&i| mask[i]).collect(),
            Pattern::NM { .. } => nm_order(rows, cols, kernel).filter(|&i| mask[i]).collect(),
        };
        Stored {
            rows: kept_rows,
            positions,
        }
    }
}

/// The stored tensors of one layer (`unquantized`: for a GGML format, its factors before quantization);
/// returns its metadata record.
fn layer_tensors(
    layer: &str,
    choice: &Choice,
    c: &CompressedWeight,
    unquantized: Option<&CompressedWeight>,
    out: &mut Vec<Owned>,
) -> Result<LayerRecord> {
    let names: &[&str] = match (c.conv(), c.factors().len()) {
        (Some(f), _) => super::conv_factor_names(f),
        (None, 2) => &["a", "b"],
        _ => &["w"],
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
        let kernel = factor_kernel(c.shape(), c.factors().len(), i);
        let stored = Stored::of(pattern, f.rows(), f.cols(), kernel, mask);
        push_pattern(&prefix, pattern, &stored, mask, f, kernel, out);
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
            (_, WeightQuant::Ggml(g)) => {
                let source = unquantized
                    .and_then(|u| u.factors().get(i))
                    .ok_or_else(|| {
                        Error::export(format!(
                            "{prefix}: the {g} factor before quantization is missing (a bug in the writer)"
                        ))
                    })?;
                push_blocks(&prefix, source, g, &stored, out)?;
            }
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
    kernel: usize,
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
            // The channel of each stored value; those of full runs get their place in the run, the
            // ragged tail none.
            let bits = index_bits(m);
            let m = usize::from(m);
            let in_runs = f.cols() / kernel / m * m;
            let idx: Vec<u8> = stored
                .positions
                .iter()
                .map(|&i| (i % f.cols()) / kernel)
                .filter(|&c| c < in_runs)
                .map(|c| (c % m) as u8)
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

/// A GGML factor's `blocks`: its stored rows (all but removed channels) of the factor before
/// quantization, quantized by candle to `g` — the bytes of candle's (and ggml's) block layout, rows one
/// after the other, which the evaluator's kernel multiplies.
fn push_blocks(
    prefix: &str,
    f: &WeightMatrix,
    g: GgmlFormat,
    stored: &Stored,
    out: &mut Vec<Owned>,
) -> Result<()> {
    let cols = f.cols();
    let data = stored
        .rows
        .iter()
        .flat_map(|&r| f.row(r).iter().copied())
        .collect();
    let rows = WeightMatrix::new(stored.rows.len(), cols, data)?;
    let q = crate::compress::ggml::quantize(&rows, g)?;
    let data = q.data()?.into_owned();
    out.push(Owned {
        name: format!("{prefix}.blocks"),
        dtype: Dtype::U8,
        shape: vec![data.len()],
        data,
    });
    Ok(())
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
