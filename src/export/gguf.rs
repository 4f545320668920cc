//! # GGUF out
//!
//! [`write_gguf`] writes a language model's point as a llama.cpp GGUF file: the source file's metadata
//! and every tensor it holds, each layer of the assignment stored in its chosen type — re-quantized
//! from the **base** (the source's weights dequantized, what every quality figure is relative to) by
//! candle's quantizer, the very blocks the evaluator measured — and every other tensor (norms,
//! `rope_freqs`) copied as stored. `mpsearch eval --from-gguf FILE` reads such a file back: the types it
//! stores as an assignment, its blocks checked against what the evaluator builds
//! ([`stored_assignment`]), so that the KL it reports is the stored one.
//!
//! Only llama.cpp's own types can be stored: f32, f16 and the GGML block formats without other parts.
//! A point with `int<b>`, `bf16`, sparsity or low-rank choices is refused naming the layer (export it
//! `--format safetensors` instead).

use std::io::Cursor;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};

use crate::compress::{ggml, WeightMatrix};
use crate::error::{Error, Result};
use crate::model::gguf::GgufFile;
use crate::space::{Assignment, Choice, GgmlFormat, LayerInfo, Sparsity, WeightQuant};

/// The GGUF type a choice is stored as, or why it cannot be.
fn stored_type(layer: &str, c: &Choice) -> Result<GgmlDType> {
    let plain = c.sparsity == Sparsity::None
        && c.rank.is_none()
        && c.conv.is_none()
        && c.act == Default::default();
    match c.weights {
        WeightQuant::F32 if plain => Ok(GgmlDType::F32),
        WeightQuant::F16 if plain => Ok(GgmlDType::F16),
        WeightQuant::Ggml(g) if plain => Ok(ggml::dtype(g)),
        _ => Err(Error::Export {
            message: format!(
                "layer `{layer}` is `{c}`, which GGUF has no type for (it stores f32, f16 and the GGML \
                 block formats, without sparsity, low rank or activation parts); export this point \
                 --format safetensors, or search the `llm` space"
            ),
        }),
    }
}

/// The tensor of layer `l` in its choice's type, from the base weight `base` (`[out, in]`, f32).
fn quantize(l: &LayerInfo, c: &Choice, base: &candle_core::Tensor) -> Result<QTensor> {
    Ok(match c.weights.ggml() {
        Some(g) => ggml::quantize(&WeightMatrix::from_tensor(base)?, g)?,
        None => QTensor::quantize(base, stored_type(&l.name, c)?)?,
    })
}

/// Writes `assignment` of the GGUF model `source` (whose layers are `layers`) to `out` (atomically),
/// with `extra` metadata (`mpsearch.*` keys) added to the source's; see the module docs.
pub fn write_gguf(
    source: &Path,
    layers: &[LayerInfo],
    assignment: &Assignment,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<()> {
    for l in layers {
        stored_type(&l.name, &choice(assignment, l))?;
    }
    let file = GgufFile::open(source)?;
    let mut reader = file.reader()?;
    let mut names: Vec<String> = file.tensor_names().into_iter().map(String::from).collect();
    // llama.cpp's order: the table first, then block by block, the rest last.
    names.sort_by_key(|n| (order(n), n.clone()));
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let layer = layers
            .iter()
            .find(|l| name.strip_suffix(".weight") == Some(l.name.as_str()));
        let t = match layer {
            Some(l) => {
                let base = file.read_f32(&mut reader, name, &l.shape)?;
                quantize(l, &choice(assignment, l), &base)?
            }
            None => file.read_quantized(&mut reader, name)?,
        };
        tensors.push((name.clone(), t));
    }
    let mut metadata: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.extend(extra.iter().cloned());
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut buf = Cursor::new(Vec::new());
    candle_core::quantized::gguf_file::write(&mut buf, &meta, &ts)?;
    crate::fs::write_atomic(out, buf.get_ref())
}

/// The types a GGUF file derived from model `base_layers` stores, as an assignment of those layers,
/// each layer's stored data checked to be exactly what the evaluator builds for that type from
/// `base` (the model's f32 weight of a layer): so that evaluating the assignment measures the file.
pub fn stored_assignment(
    path: &Path,
    layers: &[LayerInfo],
    base: &dyn Fn(&str) -> Result<candle_core::Tensor>,
) -> Result<Assignment> {
    let file = GgufFile::open(path)?;
    let mut reader = file.reader()?;
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let name = format!("{}.weight", l.name);
        file.expect_shape(&name, &l.shape)?;
        let stored = file.read_quantized(&mut reader, &name)?;
        let c = match stored.dtype() {
            GgmlDType::F32 => Choice::F32,
            GgmlDType::F16 => Choice::weights(WeightQuant::F16),
            t => match GgmlFormat::ALL.into_iter().find(|g| ggml::dtype(*g) == t) {
                Some(g) => Choice::weights(WeightQuant::Ggml(g)),
                None => {
                    return Err(file.tensor_error(
                        &name,
                        format!("is stored as {t:?}, a type mpsearch does not evaluate"),
                    ))
                }
            },
        };
        let rebuilt = quantize(l, &c, &base(&l.name)?)?;
        if rebuilt.data()? != stored.data()? {
            return Err(file.tensor_error(
                &name,
                format!(
                    "holds {c} blocks that differ from the base's weight quantized to {c}: the file was \
                     not exported by mpsearch from this model (or the model changed since)"
                ),
            ));
        }
        out.push((l.name.clone(), c));
    }
    Ok(Assignment::new(out))
}

fn choice(a: &Assignment, l: &LayerInfo) -> Choice {
    a.get(&l.name).copied().unwrap_or(Choice::F32)
}

/// Sort key of a tensor name: `token_embd` first, then blocks by number, then the rest.
fn order(name: &str) -> (u8, usize) {
    if name.starts_with("token_embd") {
        return (0, 0);
    }
    match name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, _)| n.parse().ok())
    {
        Some(n) => (1, n),
        None => (2, 0),
    }
}
