//! Reading: a file's layers densified from their factors' tensors (see the module docs).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use super::{
    groups_per_row, index_bits, row_positions, unpack, CompressedFile, FactorRecord, LayerRecord,
    Pattern, Stored, FORMAT, FORMAT_VERSION, READS,
};
use crate::compress::{factor_kernel, WeightMatrix};
use crate::error::{Error, Result};
use crate::space::{Choice, GgmlFormat, Granularity, QuantScheme, Sparsity, WeightQuant};

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
    let written = metadata.get("format_version").map(String::as_str);
    let version = written
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|v| READS.contains(v))
        .ok_or_else(|| {
            bad(format!(
                "format version {} is not one this mpsearch reads ({}..={FORMAT_VERSION})",
                written.unwrap_or("(none)"),
                READS.start()
            ))
        })?;
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
        for (i, f) in r.factors.iter().enumerate() {
            let kernel = factor_kernel(&r.shape, r.factors.len(), i);
            factors.push(
                read_factor(&st, name, f, (kernel, version), &choice).map_err(|e| match e {
                    Error::Export { message } => bad(message),
                    other => other,
                })?,
            );
        }
        let m = match (choice.conv, factors.as_slice()) {
            (Some(f), _) => crate::compress::convfactor::reconstruct(f, &r.shape, &factors)
                .map_err(|e| bad(format!("layer `{name}`: {e}")))?,
            (None, [w]) => w.clone(),
            (None, [a, b]) => a.matmul(b)?,
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

/// One factor (with `kernel` positions per input channel), densified.
fn read_factor(
    st: &SafeTensors,
    layer: &str,
    f: &FactorRecord,
    (kernel, version): (usize, u32),
    choice: &Choice,
) -> Result<WeightMatrix> {
    let t = FactorTensors {
        st,
        prefix: format!("{layer}.{}", f.name),
        kernel,
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
        // Version 2 stored a GGML format's dequantized values as f32 `values`.
        WeightQuant::Ggml(g) if version >= 3 => t.blocks(g, &stored, f, &mut data)?,
        format => t.values(&format, &stored.positions, &mut data)?,
    }
    WeightMatrix::new(f.rows, f.cols, data)
}

/// The tensors of one factor (`prefix` = `L.F`) in a file being read.
struct FactorTensors<'a> {
    st: &'a SafeTensors<'a>,
    prefix: String,
    /// Kernel positions per input channel (N:M runs go along channels at each position).
    kernel: usize,
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

    /// The stored positions of an N:M factor, from its `nm_index` tensor, in the layout's order: for
    /// every row and kernel position, `n` ascending places in each full run of `m` input channels,
    /// then every channel of the ragged tail.
    fn nm_positions(&self, n: usize, m: usize, f: &FactorRecord) -> Result<Vec<usize>> {
        let (rows, cols, kernel) = (f.rows, f.cols, self.kernel);
        if kernel == 0 || cols % kernel != 0 || m == 0 {
            return Err(Error::export(format!(
                "factor `{}` has {cols} columns, not whole input channels of {kernel} kernel positions",
                self.prefix
            )));
        }
        let channels = cols / kernel;
        let runs = channels / m;
        let idx = unpack(
            &self.get("nm_index", Dtype::U8)?,
            index_bits(m as u8),
            rows * kernel * runs * n,
        )
        .ok_or_else(|| self.short("nm_index"))?;
        let mut it = idx.into_iter();
        let mut out = Vec::with_capacity(f.stored);
        for r in 0..rows {
            for p in 0..kernel {
                let at = |c: usize| r * cols + c * kernel + p;
                for run in 0..runs {
                    let mut next = 0;
                    for _ in 0..n {
                        let j = usize::from(it.next().ok_or_else(|| self.short("nm_index"))?);
                        if j < next || j >= m {
                            return Err(Error::export(format!(
                                "tensor `{}.nm_index` has position {j} where a run of {m} needs a \
                                 place in {next}..{m} (places are distinct and ascending)",
                                self.prefix
                            )));
                        }
                        next = j + 1;
                        out.push(at(run * m + j));
                    }
                }
                out.extend((runs * m..channels).map(at));
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

    /// A GGML factor's values into `data`: its `blocks` (the stored rows, candle's layout) dequantized
    /// by candle, exactly the values the evaluator's kernel multiplies.
    fn blocks(
        &self,
        g: GgmlFormat,
        stored: &Stored,
        f: &FactorRecord,
        data: &mut [f32],
    ) -> Result<()> {
        let bytes = self.get("blocks", Dtype::U8)?;
        let rows = stored.rows.len();
        if f.cols % g.block() != 0 {
            return Err(Error::export(format!(
                "factor `{}` has {} columns, not whole {g} blocks of {}",
                self.prefix,
                f.cols,
                g.block()
            )));
        }
        let want = g.bytes(rows as u64, f.cols as u64) as usize;
        if bytes.len() != want {
            return Err(Error::export(format!(
                "tensor `{}.blocks` has {} bytes; {rows} rows of {} {g} values take {want}",
                self.prefix,
                bytes.len(),
                f.cols
            )));
        }
        let storage = QStorage::from_data(
            std::borrow::Cow::Borrowed(&bytes),
            &Device::Cpu,
            crate::compress::ggml::dtype(g),
        )?;
        let values = QTensor::new(storage, (rows, f.cols))?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (&p, v) in stored.positions.iter().zip(values) {
            data[p] = v;
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

impl Pattern {
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
