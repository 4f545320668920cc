//! # GGUF files
//!
//! A GGUF file (llama.cpp's format: a header of typed metadata and tensor descriptions, then the
//! tensors' block-quantized data) opened with candle's reader
//! ([`candle_core::quantized::gguf_file`]) and checked before anything trusts it: the magic, the
//! header, and that every tensor's data lies inside the file (a truncated download is an error that
//! names the first tensor it cuts, not a crash later). Metadata is read through typed getters whose
//! errors name the key, and tensors are read and dequantized to f32 by name.
//!
//! Shapes are given as candle reads them, row-major: `[rows, columns]` for a matrix, i.e. the reverse
//! of the `ne` order llama.cpp prints (`token_embd.weight` of SmolLM2 is `[49152, 576]` here,
//! `576 x 49152` in llama.cpp's logs).

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::model_error;
use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// An opened, checked GGUF file: its header in memory, its data read on demand.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
}

impl GgufFile {
    /// Opens `path` and reads its header; checks the magic and that every tensor's data is inside the
    /// file. Only the header is read.
    pub fn open(path: &Path) -> Result<GgufFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(model_error(
                path,
                format!(
                    "is not a GGUF file (it is {len} bytes long and does not start with `GGUF`); \
                     --model FILE.gguf takes a llama.cpp GGUF model file"
                ),
            ));
        }
        use std::io::Seek;
        reader
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        let content = Content::read(&mut reader).map_err(|e| {
            model_error(
                path,
                format!(
                    "cannot read its GGUF header ({}): the file is truncated or corrupted (download it \
                     again), or written by a GGUF version or tensor type candle cannot read",
                    first_line(&e)
                ),
            )
        })?;
        let file = GgufFile {
            path: path.to_path_buf(),
            content,
        };
        file.check_extents(len)?;
        Ok(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's data must lie inside the file; the first one (in file order) that does not is
    /// named in the error.
    fn check_extents(&self, len: u64) -> Result<()> {
        let mut infos: Vec<(&String, u64, u64)> =
            Vec::with_capacity(self.content.tensor_infos.len());
        for (name, info) in &self.content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(self.tensor_error(
                    name,
                    format!(
                        "has {elems} values, not a multiple of its type {:?}'s block of {block}: the \
                         header is corrupted",
                        info.ggml_dtype
                    ),
                ));
            }
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let start = self.content.tensor_data_offset.saturating_add(info.offset);
            infos.push((name, start, start.saturating_add(bytes)));
        }
        infos.sort_by_key(|&(_, start, _)| start);
        if let Some((name, start, end)) = infos.into_iter().find(|&(_, _, end)| end > len) {
            return Err(self.tensor_error(
                name,
                format!(
                    "its data spans bytes {start}..{end}, but the file ends at byte {len}: the file is \
                     truncated; download it again"
                ),
            ));
        }
        Ok(())
    }

    /// An error about one tensor of this file.
    pub fn tensor_error(&self, tensor: &str, message: impl Into<String>) -> Error {
        Error::Tensor {
            model: self.path.display().to_string(),
            tensor: tensor.to_string(),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl Into<String>) -> Error {
        model_error(&self.path, message)
    }

    /// The raw metadata.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    fn bad_type(&self, key: &str, want: &str, got: &Value) -> Error {
        self.error(format!(
            "metadata `{key}` is a {:?}, expected {want}",
            got.value_type()
        ))
    }

    /// An unsigned integer (of any integer type, non-negative) under `key`, if present.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            other => return Err(self.bad_type(key, "an integer", other)),
        };
        u64::try_from(n)
            .map(Some)
            .map_err(|_| self.error(format!("metadata `{key}` is {n}; it must not be negative")))
    }

    /// A float (f32, f64 or an integer) under `key`, if present.
    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(_) => Ok(self.uint(key)?.map(|n| n as f64)),
        }
    }

    /// A string under `key`, if present.
    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.bad_type(key, "a string", other)),
        }
    }

    /// A boolean under `key`, if present.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.bad_type(key, "a boolean", other)),
        }
    }

    /// An array of strings under `key`, if present.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad_type(key, "an array of strings", v));
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.bad_type(key, "an array of strings", other)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of integers under `key`, if present.
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.content.metadata.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Err(self.bad_type(key, "an array of integers", v));
        };
        items
            .iter()
            .map(|item| {
                Ok(match item {
                    Value::U8(x) => (*x).into(),
                    Value::U16(x) => (*x).into(),
                    Value::U32(x) => (*x).into(),
                    Value::I8(x) => (*x).into(),
                    Value::I16(x) => (*x).into(),
                    Value::I32(x) => (*x).into(),
                    Value::I64(x) => *x,
                    other => return Err(self.bad_type(key, "an array of integers", other)),
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Names of the file's tensors, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// Row-major shape and GGML type of tensor `name`, if the file has it.
    pub fn tensor(&self, name: &str) -> Option<(&[usize], GgmlDType)> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| (i.shape.dims(), i.ggml_dtype))
    }

    /// Reads tensor `name` as stored (block-quantized or float).
    pub fn read_quantized(&self, reader: &mut GgufReader, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut reader.0, name, &Device::Cpu)
            .map_err(|e| {
                self.tensor_error(name, format!("cannot read its data ({})", first_line(&e)))
            })
    }

    /// Reads tensor `name` and dequantizes it to f32, checking its shape is `shape`.
    pub fn read_f32(&self, reader: &mut GgufReader, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.expect_shape(name, shape)?;
        let q = self.read_quantized(reader, name)?;
        let t = q.dequantize(&Device::Cpu).map_err(|e| {
            self.tensor_error(name, format!("cannot dequantize it ({})", first_line(&e)))
        })?;
        Ok(t.to_dtype(DType::F32)?)
    }

    /// Checks that the file has tensor `name` of shape `shape`.
    pub fn expect_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        match self.tensor(name) {
            None => Err(self.tensor_error(
                name,
                format!("is missing (expected shape {shape:?} from the metadata)"),
            )),
            Some((dims, _)) if dims != shape => Err(self.tensor_error(
                name,
                format!(
                    "has shape {dims:?} (rows, columns), but the metadata implies {shape:?}: the \
                     tensors and the metadata disagree"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A reader of the file's tensor data.
    pub fn reader(&self) -> Result<GgufReader> {
        let file = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(GgufReader(BufReader::new(file)))
    }
}

/// The first line of a candle error (candle appends a backtrace when `RUST_BACKTRACE` is set).
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// A buffered reader of a [`GgufFile`]'s data (opened once for all its tensors).
pub struct GgufReader(BufReader<std::fs::File>);
