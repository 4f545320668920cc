//! Fine-tuned weights: their byte format (the blob a recovered variant stores) and the model that
//! runs them ([`RecoveredModel`]).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::{ForwardCtx, Inventory, LayerKernel, Model, Overrides};

/// First bytes of the format (version 1).
const MAGIC: &[u8] = b"mpsearch-recovered-weights-v1\n";

/// Fine-tuned f32 weights of some of a model's layers, by layer name, each of the layer's shape.
/// A pruned weight is exactly zero; a low-rank layer's weight is the product of its two trained
/// factors (rank `k` exactly).
#[derive(Clone, Debug)]
pub struct RecoveredWeights {
    /// In the model's inventory order.
    layers: Vec<(String, Tensor)>,
}

impl RecoveredWeights {
    /// Weights by layer (in inventory order).
    pub fn new(layers: Vec<(String, Tensor)>) -> RecoveredWeights {
        RecoveredWeights { layers }
    }

    /// The layers and their weights.
    pub fn layers(&self) -> &[(String, Tensor)] {
        &self.layers
    }

    /// The bytes of the blob: [`MAGIC`], the layer count, then per layer its name, its shape and its
    /// f32 values, all little-endian.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.layers.len() as u64).to_le_bytes());
        for (name, t) in &self.layers {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(t.rank() as u64).to_le_bytes());
            for &d in t.dims() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// The weights stored as `bytes` ([`RecoveredWeights::to_bytes`]); a damaged or foreign blob is
    /// an error naming `what`.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<RecoveredWeights> {
        let bad = |m: &str| Error::recover(format!("{what}: {m}; recover the point again"));
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len()).ok() != Some(MAGIC) {
            return Err(bad("not recovered weights of this mpsearch"));
        }
        let count = r.u64().map_err(|_| bad("truncated"))?;
        let mut layers = Vec::new();
        for _ in 0..count {
            let parse = |r: &mut Reader| -> std::result::Result<(String, Tensor), ()> {
                let len = r.u64()? as usize;
                let name = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| ())?;
                let rank = r.u64()? as usize;
                if rank > 8 {
                    return Err(());
                }
                let dims = (0..rank)
                    .map(|_| r.u64().map(|d| d as usize))
                    .collect::<std::result::Result<Vec<_>, ()>>()?;
                let n = dims
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .ok_or(())?;
                let raw = r.take(n.checked_mul(4).ok_or(())?)?;
                let values: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let t = Tensor::from_vec(values, dims, &Device::Cpu).map_err(|_| ())?;
                Ok((name, t))
            };
            layers.push(parse(&mut r).map_err(|_| bad("damaged"))?);
        }
        if r.at != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(RecoveredWeights { layers })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], ()> {
        let end = self.at.checked_add(n).ok_or(())?;
        let s = self.bytes.get(self.at..end).ok_or(())?;
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self) -> std::result::Result<u64, ()> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
    }
}

/// A model with some layers' weights replaced by fine-tuned ones: the recovered variant's model.
/// Every forward pass runs the fine-tuned weight of a layer unless the context gives the layer a
/// kernel of its own (a compressed weight, which the evaluator computes from
/// [`Model::weight`] — the fine-tuned one); activation quantization is the context's.
pub struct RecoveredModel {
    inner: Arc<dyn Model>,
    weights: HashMap<String, Tensor>,
    fingerprint: blake3::Hash,
}

impl RecoveredModel {
    /// `inner` with `weights` in place of its own; each must be a layer of `inner` and of its shape.
    pub fn new(inner: Arc<dyn Model>, weights: &RecoveredWeights) -> Result<RecoveredModel> {
        let mut h = blake3::Hasher::new();
        h.update(b"mpsearch-recovered-model-v1\n");
        h.update(inner.fingerprint().as_bytes());
        let mut map = HashMap::new();
        for (name, t) in weights.layers() {
            let Some(l) = inner.inventory().layers.iter().find(|l| &l.name == name) else {
                return Err(Error::recover(format!(
                    "the recovered weights have a layer `{name}` that model {} does not have",
                    inner.inventory().name
                )));
            };
            if t.dims() != l.shape.as_slice() {
                return Err(Error::recover(format!(
                    "the recovered weight of layer `{name}` has shape {:?}, the model's {:?}",
                    t.dims(),
                    l.shape
                )));
            }
            h.update(name.as_bytes());
            for v in t.flatten_all()?.to_vec1::<f32>()? {
                h.update(&v.to_le_bytes());
            }
            map.insert(name.clone(), t.clone());
        }
        Ok(RecoveredModel {
            inner,
            weights: map,
            fingerprint: h.finalize(),
        })
    }
}

impl Model for RecoveredModel {
    fn inventory(&self) -> &Inventory {
        self.inner.inventory()
    }

    fn weight(&self, layer: &str) -> Result<Tensor> {
        match self.weights.get(layer) {
            Some(w) => Ok(w.clone()),
            None => self.inner.weight(layer),
        }
    }

    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let mut overrides: Overrides = ctx.overrides.cloned().unwrap_or_default();
        for (name, w) in &self.weights {
            let o = overrides.entry(name.clone()).or_default();
            if o.kernel.is_none() {
                o.kernel = Some(LayerKernel::Dense(w.clone()));
            }
        }
        let inner_ctx = ForwardCtx {
            overrides: Some(&overrides),
            capture: ctx.capture,
            timer: ctx.timer,
        };
        self.inner.forward(batch, &inner_ctx)
    }

    fn fingerprint(&self) -> blake3::Hash {
        self.fingerprint
    }
}
