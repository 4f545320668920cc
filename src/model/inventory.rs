//! Layer inventory of a Hugging Face model folder, read from the safetensors header only.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::SafeTensors;
use serde::Deserialize;

use super::{model_error, Inventory, ModelKind};
use crate::error::{Error, Result};
use crate::space::{LayerInfo, LayerKind};

/// One tensor of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Reads the tensor names, dtypes and shapes of a safetensors file, checking that the header is well
/// formed and that the data it describes is all there (a truncated download is an error here, not a
/// crash later). Only the header pages are read.
pub fn read_safetensors_header(path: &Path) -> Result<Vec<TensorEntry>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and only the header is touched; a file truncated by another process
    // while mapped is the same hazard candle's own loader accepts.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
        use safetensors::SafeTensorError as E;
        let why = match e {
            E::MetadataIncompleteBuffer => format!(
                "the header describes more (or less) data than the file's {} bytes: the file is truncated or \
                 corrupted; download it again",
                map.len()
            ),
            E::HeaderTooSmall | E::InvalidHeaderLength | E::HeaderTooLarge => {
                "the file is too short or its first 8 bytes are not a safetensors header length: not a \
                 safetensors file, or truncated"
                    .to_string()
            }
            other => format!("not a valid safetensors file ({other})"),
        };
        model_error(path, why)
    })?;
    let mut out: Vec<TensorEntry> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorEntry {
            name,
            dtype: format!("{:?}", info.dtype),
            shape: info.shape.clone(),
        })
        .collect();
    out.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(out)
}

/// Orders names with their numbers compared as numbers (`layer.2` before `layer.10`).
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then(tx.cmp(ty))
            }
            _ => x.1.cmp(y.1),
        };
        if ord.is_ne() {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The model's safetensors files: `model.safetensors`, or the shards of `model.safetensors.index.json`.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let idx: ShardIndex = serde_json::from_str(&text)
            .map_err(|e| model_error(&index, format!("not a valid shard index ({e})")))?;
        let mut files: Vec<_> = idx.weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    Err(model_error(
        dir,
        "has no model.safetensors (nor model.safetensors.index.json): mpsearch reads weights in the \
         safetensors format; convert a PyTorch checkpoint with `safetensors` or download the .safetensors file",
    ))
}

/// Reads `config.json` and the safetensors header(s) of a Hugging Face model folder.
pub fn from_folder(dir: &Path) -> Result<Inventory> {
    if !dir.is_dir() {
        return Err(model_error(
            dir,
            "is not a folder: --model takes `demo` (the embedded demo) or a Hugging Face model folder \
             holding config.json and model.safetensors",
        ));
    }
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        model_error(
            &config_path,
            format!(
                "cannot read the model's config.json ({e}); a Hugging Face model folder has one"
            ),
        )
    })?;
    let config: Config = serde_json::from_str(&text)
        .map_err(|e| model_error(&config_path, format!("is not valid JSON ({e})")))?;
    let mut tensors = Vec::new();
    for f in weight_files(dir)? {
        tensors.extend(read_safetensors_header(&f)?);
    }
    tensors.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let mut layers = layers_from_tensors(&tensors);
    let kind =
        if config.architectures.iter().any(|a| {
            a.ends_with("ForSequenceClassification") || a.ends_with("ForImageClassification")
        }) {
            ModelKind::Classifier
        } else {
            ModelKind::Encoder
        };
    if kind == ModelKind::Encoder {
        // An encoder's output is the mean of its last hidden states (as sentence-transformers pools):
        // the pooler and any task head are never run, so they are neither compressed nor costed.
        layers.retain(|l| !is_head(&l.name));
    }
    if layers.is_empty() {
        return Err(model_error(
            dir,
            "its safetensors file has no 2-D or 4-D `*.weight` tensor: nothing to compress",
        ));
    }
    let architecture = config.model_type.clone().unwrap_or_else(|| {
        config
            .architectures
            .first()
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    });
    Ok(Inventory {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        kind,
        architecture,
        default_space: "bert-base",
        layers,
    })
}

/// Compressible layers from tensor names: every `*.weight` of rank 2 (linear, or embedding when the name
/// says so) or rank 4 (conv2d). MACs are per token for linear layers; a convolution's are per output
/// pixel (the folder does not say the image size); an embedding reads one row per token and does none.
pub fn layers_from_tensors(tensors: &[TensorEntry]) -> Vec<LayerInfo> {
    let names: std::collections::HashSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    tensors
        .iter()
        .filter_map(|t| {
            let name = t.name.strip_suffix(".weight")?;
            let kind = match t.shape.len() {
                2 if is_embedding(name) => LayerKind::Embedding,
                2 => LayerKind::Linear,
                4 => LayerKind::Conv2d,
                _ => return None,
            };
            let params: u64 = t.shape.iter().map(|&d| d as u64).product();
            let macs = match kind {
                LayerKind::Embedding => 0,
                _ => params,
            };
            Some(LayerInfo {
                name: name.to_string(),
                kind,
                shape: t.shape.clone(),
                macs,
                bias: names.contains(format!("{name}.bias").as_str()),
            })
        })
        .collect()
}

/// The pooler and task heads of a Hugging Face encoder (`pooler.*`, `cls.*`, `classifier*`).
fn is_head(name: &str) -> bool {
    let n = name
        .split_once('.')
        .filter(|(p, _)| matches!(*p, "bert" | "roberta" | "electra"))
        .map_or(name, |(_, r)| r);
    n.starts_with("pooler.") || n.starts_with("cls.") || n.starts_with("classifier")
}

fn is_embedding(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.contains("embed") || last == "wte" || last == "wpe" || name.contains("embeddings.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers() {
        let mut v = vec!["layer.10.a", "layer.2.a", "layer.1.b", "layer.1.a"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["layer.1.a", "layer.1.b", "layer.2.a", "layer.10.a"]);
    }
}
