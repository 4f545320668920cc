//! # The dense emulation of candle's quantized matmul
//!
//! How the evaluator runs a GGML block-format layer ([`LayerKernel::Emulated`](super::LayerKernel::Emulated)):
//! the input quantized to the kernel's activation blocks ([`q8`]) and dequantized, the weight's blocks
//! dequantized, one f32 gemm — the kernel's integers and scales, at the speed of the f32 gemm rather
//! than of candle's one-dot-product-per-output quantized matmul.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Tensor, TensorId};
use lru::LruCache;

use super::q8;
use crate::error::Result;

/// A block-quantized `[rows, cols]` weight dequantized to f32, in parallel over runs of rows (candle's
/// `QTensor::dequantize` is one pass on one thread; a language model's evaluation dequantizes every
/// q-format weight on each forward). The same values: each run is candle's own dequantization of the
/// run's blocks.
pub(super) fn dequantize(q: &QTensor) -> Result<Tensor> {
    dequantize_with(q, false)
}

/// [`dequantize`]; with `mins`, each row followed by its blocks' mins `m` (Q4_1, Q5_1: `[rows, cols
/// + cols / 32]`), the columns that multiply the min terms of an input [`quantize_rows`] made for Q8_1.
fn dequantize_with(q: &QTensor, mins: bool) -> Result<Tensor> {
    use rayon::prelude::*;
    /// Rows dequantized by one task (a few hundred KiB of f32 at a language model's widths).
    const ROWS: usize = 64;
    let cpu = candle_core::Device::Cpu;
    let dtype = q.dtype();
    let (rows, cols) = match q.shape().dims() {
        [rows, cols] if mins || *rows > ROWS => (*rows, *cols),
        _ => return Ok(q.dequantize(&cpu)?),
    };
    let nb = cols / dtype.block_size();
    let width = if mins { cols + nb } else { cols };
    let row_bytes = nb * dtype.type_size();
    let data = q.data()?;
    let mut values = vec![0f32; rows * width];
    values
        .par_chunks_mut(ROWS * width)
        .zip(data.par_chunks(ROWS * row_bytes))
        .try_for_each(|(out, bytes)| -> Result<()> {
            let n = out.len() / width;
            let part = candle_core::quantized::ggml_file::qtensor_from_ggml(
                dtype,
                bytes,
                vec![n, cols],
                &cpu,
            )?;
            let part = part.dequantize(&cpu)?;
            let (storage, layout) = part.storage_and_layout();
            let v = cpu_f32(&storage)?;
            let v = &v[layout.start_offset()..layout.start_offset() + n * cols];
            if !mins {
                out.copy_from_slice(v);
                return Ok(());
            }
            let m = second_halves(bytes, dtype.type_size(), n * nb);
            for ((row, v), m) in out
                .chunks_exact_mut(width)
                .zip(v.chunks_exact(cols))
                .zip(m.chunks_exact(nb))
            {
                row[..cols].copy_from_slice(v);
                row[cols..].copy_from_slice(m);
            }
            Ok(())
        })?;
    Ok(Tensor::from_vec(values, (rows, width), &cpu)?)
}

/// Default byte budget of the [`DenseTier`]: 512 MiB (`MPSEARCH_F32_TIER_MB` overrides it, 0 turns
/// the tier off).
pub const DENSE_TIER_BYTES: usize = 512 << 20;

/// # The f32 tier: dequantized block weights of recently run layers
///
/// An emulated layer ([`LayerKernel::Emulated`](super::LayerKernel::Emulated)) dequantizes its
/// weight's blocks on every product: for SmolLM2 ~106 M weights, 425 MB of f32 written per forward
/// (candle's scalar `to_float` of each block, and the zero-filled, freshly faulted buffers),
/// 5–8% of an evaluation's samples. This tier keeps the dequantized f32 form of the most recently
/// run block weights, so that a layer whose choice did not change since the previous evaluation —
/// most layers, between a search's consecutive trials — is not dequantized again.
///
/// Why a separate, small tier and not f32 copies in the [`CompressCache`](crate::compress::CompressCache)
/// itself: the main cache must hold the blocks of every (layer, choice) a search keeps coming back to
/// (1 GiB holds nearly all of a SmolLM2 search's), and f32 copies would hold a fifth as many, so
/// more re-quantization (GPTQ, seconds) to save dequantization (milliseconds). The tier holds only
/// what the last forward passes ran — 512 MiB holds every linear layer of SmolLM2 in f32 once, with
/// room for the layers whose choice changes — and costs a miss nothing but a look-up.
///
/// - **Key**: the identity of the weight's blocks (the `Arc<QTensor>` the main cache hands out: its
///   address, with a `Weak` that keeps the address from being reused while the entry lives), so the
///   tier can never answer for other blocks; blocks the main cache evicted and dropped leave dead
///   entries, dropped first.
/// - **Value**: exactly what `dequantize_with` returns for the layer (a test holds hits to it).
/// - **Eviction**: least recently used first, but never an entry used in the current pass over the
///   layers (a pass ends when a layer is run twice): a model whose f32 weights exceed the budget keeps
///   its first layers cached pass after pass instead of evicting each layer just before it is run
///   again (plain LRU under a cyclic sweep hits nothing). A weight that does not fit is not kept.
/// - **One per process**, shared by every evaluator, bounded by its own budget on top of the main
///   cache's (`--cache-mb`).
pub struct DenseTier {
    inner: Mutex<TierInner>,
    capacity: usize,
}

struct TierEntry {
    owner: Weak<QTensor>,
    weight: Tensor,
    bytes: usize,
    pass: u64,
}

struct TierInner {
    map: LruCache<usize, TierEntry>,
    bytes: usize,
    pass: u64,
    stats: DenseTierStats,
}

/// Counters and occupancy of a [`DenseTier`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenseTierStats {
    /// Products whose weight came from the tier.
    pub hits: u64,
    /// Products that dequantized their weight.
    pub misses: u64,
    /// Dequantized weights not kept (no room without evicting one of the current pass).
    pub not_kept: u64,
    /// Entries evicted (or dropped with their blocks).
    pub evictions: u64,
    pub entries: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
}

impl DenseTier {
    /// An empty tier of `capacity` bytes (0: keeps nothing).
    pub fn new(capacity: usize) -> DenseTier {
        DenseTier {
            inner: Mutex::new(TierInner {
                map: LruCache::unbounded(),
                bytes: 0,
                pass: 0,
                stats: DenseTierStats::default(),
            }),
            capacity,
        }
    }

    /// The process's tier: [`DENSE_TIER_BYTES`], or `MPSEARCH_F32_TIER_MB` MiB when set to a
    /// number.
    pub fn global() -> &'static DenseTier {
        static TIER: OnceLock<DenseTier> = OnceLock::new();
        TIER.get_or_init(|| {
            let bytes = std::env::var("MPSEARCH_F32_TIER_MB")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .map_or(DENSE_TIER_BYTES, |mb| mb.saturating_mul(1 << 20));
            DenseTier::new(bytes)
        })
    }

    /// The dequantized weight of the blocks `q`: the tier's, or `dequantize()`'s, kept if there is
    /// room. `dequantize` runs without the lock held.
    pub fn get_or_dequantize(
        &self,
        q: &Arc<QTensor>,
        dequantize: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let key = Arc::as_ptr(q) as usize;
        {
            let mut inner = self.lock();
            let inner = &mut *inner;
            // The entry's `Weak` keeps the address from being reused, so an entry at this address
            // whose blocks are alive holds these very blocks.
            if let Some(e) = inner
                .map
                .get_mut(&key)
                .filter(|e| e.owner.strong_count() > 0)
            {
                if e.pass == inner.pass {
                    inner.pass += 1;
                }
                e.pass = inner.pass;
                inner.stats.hits += 1;
                return Ok(e.weight.clone());
            }
            inner.stats.misses += 1;
        }
        let weight = dequantize()?;
        let bytes = weight.elem_count() * weight.dtype().size_in_bytes();
        let mut inner = self.lock();
        inner.admit(key, q, &weight, bytes, self.capacity);
        Ok(weight)
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> DenseTierStats {
        let inner = self.lock();
        DenseTierStats {
            entries: inner.map.len(),
            bytes: inner.bytes,
            capacity_bytes: self.capacity,
            ..inner.stats
        }
    }

    fn lock(&self) -> MutexGuard<'_, TierInner> {
        // No code between the map's and the byte count's updates panics: a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl TierInner {
    fn admit(&mut self, key: usize, q: &Arc<QTensor>, weight: &Tensor, bytes: usize, cap: usize) {
        if bytes > cap {
            self.stats.not_kept += 1;
            return;
        }
        // Dead entries (blocks dropped by the main cache) and a stale one at this address first.
        let dead: Vec<usize> = self
            .map
            .iter()
            .filter(|(k, e)| e.owner.strong_count() == 0 || **k == key)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            if let Some(e) = self.map.pop(&k) {
                self.bytes -= e.bytes;
                self.stats.evictions += 1;
            }
        }
        while self.bytes + bytes > cap {
            match self.map.peek_lru() {
                Some((_, e)) if e.pass < self.pass => {
                    if let Some((_, e)) = self.map.pop_lru() {
                        self.bytes -= e.bytes;
                        self.stats.evictions += 1;
                    }
                }
                _ => {
                    self.stats.not_kept += 1;
                    return;
                }
            }
        }
        self.map.put(
            key,
            TierEntry {
                owner: Arc::downgrade(q),
                weight: weight.clone(),
                bytes,
                pass: self.pass,
            },
        );
        self.bytes += bytes;
    }
}

/// The f32 values of a CPU storage.
fn cpu_f32(storage: &candle_core::Storage) -> Result<&[f32]> {
    match storage {
        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => Ok(v),
        _ => Err(candle_core::Error::Msg("expected f32 values on the CPU".into()).into()),
    }
}

/// [`LayerKernel::Emulated`](super::LayerKernel::Emulated): `x [.., in]` times the block-quantized `q [out, in]` with the arithmetic
/// of candle's quantized matmul, computed densely.
///
/// A Q4_1 or Q5_1 weight is `d·q + m` per block of 32. The kernel multiplies the block's min `m` by the
/// input block's sum as Q8_1 stores it (`s`, rounded to f16), not by the sum `X̄` of the dequantized
/// inputs that `x·Wᵀ` holds: so the product is `x·Wᵀ + (S − X̄)·Mᵀ`, with `S`, `X̄` and `M` per block —
/// one gemm of the input widened by its `S − X̄` columns and the weight widened by its `M` columns.
///
/// The dequantized weight comes from the [`DenseTier`] when it holds it.
pub(super) fn emulate(q: &Arc<QTensor>, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims();
    let cols = dims[dims.len() - 1];
    let rows = x.elem_count() / cols.max(1);
    let out = q.shape().dims()[0];
    let blocks = activation_blocks(q.dtype())?;
    let input = quantized_input(x, rows, cols, blocks)?;
    let w = DenseTier::global()
        .get_or_dequantize(q, || dequantize_with(q, blocks == GgmlDType::Q8_1))?;
    let y = input.matmul(&w.t()?)?;
    let mut shape = dims.to_vec();
    *shape.last_mut().expect("an input has a last dimension") = out;
    Ok(y.reshape(shape)?)
}

/// The input `x` (`rows × cols` values) quantized to `blocks` and dequantized ([`quantize_rows`]);
/// the last result is kept (per thread, by the input tensor's id, which candle never reuses), so that
/// layers reading the same input — q, k and v; gate and up — quantize it once.
fn quantized_input(x: &Tensor, rows: usize, cols: usize, blocks: GgmlDType) -> Result<Tensor> {
    type Last = Option<(TensorId, GgmlDType, Tensor)>;
    thread_local! {
        static LAST: std::cell::RefCell<Last> = const { std::cell::RefCell::new(None) };
    }
    if let Some(hit) = LAST.with(|l| match &*l.borrow() {
        Some((id, b, q)) if *id == x.id() && *b == blocks => Some(q.clone()),
        _ => None,
    }) {
        return Ok(hit);
    }
    let q = quantize_rows(&x.reshape((rows, cols))?, blocks)?;
    LAST.with(|l| *l.borrow_mut() = Some((x.id(), blocks, q.clone())));
    Ok(q)
}

/// Rows of `x [rows, cols]` quantized to `blocks` as candle's quantized matmul quantizes its input
/// and dequantized ([`q8`], bit for bit candle's quantizer), in parallel over runs of rows,
/// into one buffer. For Q8_1 blocks each row is followed by its blocks' min terms `S − X̄` (the
/// block's sum as Q8_1 stores it, f16, minus the sum of its dequantized values):
/// `[rows, cols + cols / 32]`.
fn quantize_rows(x: &Tensor, blocks: GgmlDType) -> Result<Tensor> {
    use rayon::prelude::*;
    /// Rows quantized by one task: enough to amortise a task, few enough to spread 1 024 rows.
    const ROWS: usize = 64;
    let (rows, cols) = x.dims2()?;
    let nb = cols / 32;
    let width = if blocks == GgmlDType::Q8_1 {
        cols + nb
    } else {
        cols
    };
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let input = &cpu_f32(&storage)?[layout.start_offset()..layout.start_offset() + rows * cols];
    let mut values = vec![0f32; rows * width];
    values
        .par_chunks_mut(ROWS * width.max(1))
        .zip(input.par_chunks(ROWS * cols.max(1)))
        .for_each(|(out, chunk)| {
            for (o, r) in out.chunks_exact_mut(width).zip(chunk.chunks_exact(cols)) {
                match blocks {
                    GgmlDType::Q8_1 => {
                        let (o, terms) = o.split_at_mut(cols);
                        q8::q8_1_row(r, o, terms)
                    }
                    GgmlDType::Q8K => q8::q8_k_row(r, o),
                    _ => q8::q8_0_row(r, o),
                }
            }
        });
    Ok(Tensor::from_vec(
        values,
        (rows, width),
        &candle_core::Device::Cpu,
    )?)
}

/// The second f16 of each of `n` blocks of `size` bytes (Q4_1's and Q5_1's min `m`, Q8_1's sum `s`:
/// both blocks start `d: f16, m|s: f16`), as f32.
fn second_halves(bytes: &[u8], size: usize, n: usize) -> Vec<f32> {
    bytes
        .chunks_exact(size)
        .take(n)
        .map(|b| half::f16::from_le_bytes([b[2], b[3]]).to_f32())
        .collect()
}

/// The blocks candle's quantized matmul quantizes its input to for a weight of type `weight` (the
/// type's `VecDotType` in candle's `k_quants`): Q8_K for the K-types, Q8_1 for Q4_1 and Q5_1, Q8_0 for
/// the other 32-blocks.
pub fn activation_blocks(weight: GgmlDType) -> Result<GgmlDType> {
    Ok(match weight {
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K => {
            GgmlDType::Q8K
        }
        GgmlDType::Q4_1 | GgmlDType::Q5_1 => GgmlDType::Q8_1,
        GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q8_0 => GgmlDType::Q8_0,
        other => {
            return Err(crate::Error::compress(format!(
                "no dense emulation of candle's quantized matmul for {other:?} weights"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn the_f32_tier_returns_what_dequantization_returns_and_stays_in_budget() {
        let w = Tensor::arange(0f32, (96 * 64) as f32, &Device::Cpu)
            .unwrap()
            .affine(0.01, -3.0)
            .unwrap()
            .cos()
            .unwrap()
            .reshape((96, 64))
            .unwrap();
        let blocks = |t| Arc::new(QTensor::quantize(&w, t).unwrap());
        let (a, b) = (blocks(GgmlDType::Q4_1), blocks(GgmlDType::Q5_0));
        let bytes = 96 * (64 + 2) * 4;
        // Room for one widened Q4_1 weight and one plain Q5_0 weight, not a third.
        let tier = DenseTier::new(bytes + 96 * 64 * 4);
        let deq = |q: &Arc<QTensor>| dequantize_with(q, q.dtype() == GgmlDType::Q4_1);
        let x = Tensor::ones((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
        for round in 0..3 {
            for q in [&a, &b] {
                let got = tier.get_or_dequantize(q, || deq(q)).unwrap();
                assert_eq!(values(&got), values(&deq(q).unwrap()), "round {round}");
            }
        }
        let s = tier.stats();
        assert_eq!((s.hits, s.misses, s.entries), (4, 2, 2), "{s:?}");
        assert!(s.bytes <= s.capacity_bytes);
        // A product through the process's tier equals one through a fresh dequantization.
        let via_tier = emulate(&a, &x).unwrap();
        let again = emulate(&a, &x).unwrap();
        assert_eq!(values(&via_tier), values(&again));
        // Other blocks at the same time: a third weight finds no room used by the current pass
        // and is not kept; once its blocks are dropped, an entry leaves at the next admission.
        let c = blocks(GgmlDType::Q8_0);
        tier.get_or_dequantize(&c, || deq(&c)).unwrap();
        assert_eq!(tier.stats().not_kept, 1);
        drop(b);
        tier.get_or_dequantize(&c, || deq(&c)).unwrap();
        let s = tier.stats();
        assert_eq!(s.entries, 2, "{s:?}");
        assert!(s.bytes <= s.capacity_bytes);
        // A tier of 0 bytes keeps nothing and still answers.
        let none = DenseTier::new(0);
        let got = none.get_or_dequantize(&a, || deq(&a)).unwrap();
        assert_eq!(values(&got), values(&deq(&a).unwrap()));
        assert_eq!(none.stats().entries, 0);
    }

    #[test]
    fn parallel_dequantization_is_candles_and_min_columns_follow_each_row() {
        use candle_core::quantized::GgmlDType as G;
        for dtype in [
            G::Q8_0,
            G::Q4_0,
            G::Q4_1,
            G::Q5_0,
            G::Q5_1,
            G::Q2K,
            G::Q3K,
            G::Q4K,
            G::Q5K,
            G::Q6K,
        ] {
            // Fewer rows than a run, a run and one more, several runs and a partial last one.
            for rows in [3, 65, 200] {
                let w = Tensor::arange(0f32, (rows * 512) as f32, &Device::Cpu)
                    .unwrap()
                    .affine(0.003, -0.7)
                    .unwrap()
                    .sin()
                    .unwrap()
                    .reshape((rows, 512))
                    .unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let want = q.dequantize(&Device::Cpu).unwrap();
                let got = dequantize(&q).unwrap();
                assert_eq!(got.dims(), want.dims(), "{dtype:?} {rows}");
                assert_eq!(values(&got), values(&want), "{dtype:?} {rows}");
                if matches!(dtype, G::Q4_1 | G::Q5_1) {
                    let wide = dequantize_with(&q, true).unwrap();
                    assert_eq!(wide.dims(), [rows, 512 + 16]);
                    let body = wide.narrow(1, 0, 512).unwrap();
                    assert_eq!(values(&body), values(&want), "{dtype:?} {rows}");
                    let mins = second_halves(&q.data().unwrap(), dtype.type_size(), rows * 16);
                    let tail = wide.narrow(1, 512, 16).unwrap().flatten_all().unwrap();
                    assert_eq!(tail.to_vec1::<f32>().unwrap(), mins, "{dtype:?} {rows}");
                }
            }
        }
    }
}
