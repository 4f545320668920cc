//! # Memoised compressed weights and kernels
//!
//! A search evaluates thousands of assignments that share most of their layer choices, and compressing
//! a layer (an SVD, an MSE scale search, candle's block quantizer) costs far more than looking it up.
//! [`CompressCache`] keeps what it has computed for each `(layer name, choice, compression settings)`
//! — the dense compressed weight, or the layer's kernel ([`LayerKernel`]: candle's `QMatMul` of a
//! block format, two factors, kept rows) — up to a byte budget, and evicts the least recently used
//! entries beyond it.
//!
//! - **Key**: the layer, the choice, the [`CompressSettings`] (scale method and rounding: GPTQ and
//!   round-to-nearest give different weights) and the [`CacheForm`] (a dense weight and a kernel of
//!   the same choice are two entries). The activation part of a choice is left out of the key,
//!   since it does not change the weight.
//! - **One cache per model**: the key names the layer, not the weight's bytes, so a cache must not be
//!   shared between models.
//! - **Threads**: the cache is `Sync`; a `Mutex` guards the map only for lookups and insertions, and
//!   the compression itself runs outside the lock, so threads compressing different layers never wait
//!   for each other. Two threads that miss the same key at the same time both compute it (both count
//!   a miss); the first to finish inserts it and the second returns that stored value and drops its
//!   own (the results are identical: compression is deterministic).
//! - **Values** are candle tensors and kernels holding them (a `QMatMul` behind an `Arc`), whose
//!   storage is reference-counted: a hit clones a handle, not the data. An evicted value stays alive
//!   while a caller still holds it.
//! - **Size**: a tensor counts `elements × dtype size` bytes, a kernel its real bytes
//!   ([`LayerKernel::bytes`]: a block format's blocks, both factors, a kept-rows matrix and its
//!   indices). A value larger than the whole budget is returned but not kept.
//!
//! The LRU bookkeeping is the `lru` crate's [`lru::LruCache`] (unbounded by count; this type bounds it
//! by bytes).

use std::sync::{Mutex, MutexGuard};

use candle_core::Tensor;
use lru::LruCache;

use super::apply::{apply_choice, apply_with, CompressSettings};
use super::importance::WeightScores;
use super::quant::ScaleMethod;
use super::stats::InputStats;
use crate::error::{Error, Result};
use crate::model::LayerKernel;
use crate::space::{ActQuant, Choice};

/// Default byte budget of a [`CompressCache`]: 1 GiB.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

/// What a cache entry holds for its layer and choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheForm {
    /// The dense compressed weight in the layer's shape (the evaluator's fake-quantized values).
    Weight,
    /// The layer's kernel as deployed ([`crate::compress::deploy_kernel`]).
    Kernel,
}

/// What a cached value is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub layer: String,
    /// The choice with its activation part cleared: activation quantization does not change the
    /// weight, so `int4-sym-g32` and `int4-sym-g32+act8-static` share one entry.
    pub choice: Choice,
    pub settings: CompressSettings,
    pub form: CacheForm,
}

impl CacheKey {
    /// The key of the dense weight of `(layer, choice, settings)` (a [`ScaleMethod`] alone means
    /// round-to-nearest).
    pub fn new(layer: &str, choice: &Choice, settings: impl Into<CompressSettings>) -> CacheKey {
        CacheKey::of(layer, choice, settings, CacheForm::Weight)
    }

    /// The key of the `form` of `(layer, choice, settings)`.
    pub fn of(
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
        form: CacheForm,
    ) -> CacheKey {
        CacheKey {
            layer: layer.to_string(),
            choice: Choice {
                act: ActQuant::None,
                ..*choice
            },
            settings: settings.into(),
            form,
        }
    }
}

/// A cached value: a dense weight or a kernel.
#[derive(Clone)]
enum Entry {
    Weight(Tensor),
    Kernel(LayerKernel),
}

impl Entry {
    fn bytes(&self) -> usize {
        match self {
            Entry::Weight(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Entry::Kernel(k) => k.bytes(),
        }
    }
}

/// Counters and occupancy of a [`CompressCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to compute.
    pub misses: u64,
    /// Entries dropped to stay within the byte budget.
    pub evictions: u64,
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now.
    pub bytes: usize,
    /// The byte budget.
    pub capacity_bytes: usize,
}

struct Inner {
    map: LruCache<CacheKey, Entry>,
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// A thread-safe, byte-bounded LRU cache of compressed weights and kernels.
pub struct CompressCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for CompressCache {
    fn default() -> Self {
        CompressCache::with_capacity(DEFAULT_CACHE_BYTES)
    }
}

impl CompressCache {
    /// A cache holding at most `capacity_bytes` bytes of tensors; at least 1.
    pub fn new(capacity_bytes: usize) -> Result<CompressCache> {
        if capacity_bytes == 0 {
            return Err(Error::compress(
                "a compressed-weight cache needs a capacity of at least 1 byte (the default is 1 GiB)",
            ));
        }
        Ok(CompressCache::with_capacity(capacity_bytes))
    }

    fn with_capacity(capacity: usize) -> CompressCache {
        CompressCache {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
                hits: 0,
                misses: 0,
                evictions: 0,
            }),
            capacity,
        }
    }

    /// The compressed weight of `layer` under `choice`: from the cache, or [`apply_choice`] on
    /// `weight` (the layer's original weight) and stored.
    pub fn get_or_apply(
        &self,
        layer: &str,
        weight: &Tensor,
        choice: &Choice,
        scale: ScaleMethod,
    ) -> Result<Tensor> {
        self.get_or_compute(layer, choice, scale, || apply_choice(weight, choice, scale))
    }

    /// [`CompressCache::get_or_apply`] with `settings`, the layer's input statistics and its
    /// importance scores ([`apply_with`]).
    pub fn get_or_apply_with(
        &self,
        layer: &str,
        weight: &Tensor,
        choice: &Choice,
        settings: &CompressSettings,
        inputs: Option<&InputStats>,
        scores: Option<&WeightScores>,
    ) -> Result<Tensor> {
        self.get_or_compute(layer, choice, *settings, || {
            apply_with(weight, choice, settings, inputs, scores)
        })
    }

    /// The cached weight of `(layer, choice, settings)`, or `compute()`'s result, stored (errors are
    /// returned and not stored). `compute` runs without the lock held.
    pub fn get_or_compute(
        &self,
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
        compute: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let key = CacheKey::new(layer, choice, settings);
        match self.entry(key, || compute().map(Entry::Weight))? {
            Entry::Weight(t) => Ok(t),
            Entry::Kernel(_) => unreachable!("a weight key holds a weight"),
        }
    }

    /// The cached kernel of `(layer, choice, settings)`, or `compute()`'s result, stored (errors are
    /// returned and not stored). `compute` runs without the lock held.
    pub fn get_or_build(
        &self,
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
        compute: impl FnOnce() -> Result<LayerKernel>,
    ) -> Result<LayerKernel> {
        let key = CacheKey::of(layer, choice, settings, CacheForm::Kernel);
        match self.entry(key, || compute().map(Entry::Kernel))? {
            Entry::Kernel(k) => Ok(k),
            Entry::Weight(_) => unreachable!("a kernel key holds a kernel"),
        }
    }

    /// The entry of `key`, or `compute()`'s, stored.
    fn entry(&self, key: CacheKey, compute: impl FnOnce() -> Result<Entry>) -> Result<Entry> {
        {
            let mut inner = self.lock();
            if let Some(e) = inner.map.get(&key).cloned() {
                inner.hits += 1;
                return Ok(e);
            }
            inner.misses += 1;
        }
        let e = compute()?;
        let size = e.bytes();
        if size > self.capacity {
            return Ok(e);
        }
        let mut inner = self.lock();
        if let Some(existing) = inner.map.get(&key).cloned() {
            // Another thread computed the same key meanwhile: share its value.
            return Ok(existing);
        }
        inner.map.put(key, e.clone());
        inner.bytes += size;
        while inner.bytes > self.capacity {
            let Some((_, old)) = inner.map.pop_lru() else {
                break;
            };
            inner.bytes -= old.bytes();
            inner.evictions += 1;
        }
        Ok(e)
    }

    /// Whether the weight of `(layer, choice, settings)` is held (does not count as a use).
    pub fn contains(
        &self,
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
    ) -> bool {
        self.contains_key(&CacheKey::new(layer, choice, settings))
    }

    /// Whether `key` is held (does not count as a use).
    pub fn contains_key(&self, key: &CacheKey) -> bool {
        self.lock().map.contains(key)
    }

    /// Counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
            entries: inner.map.len(),
            bytes: inner.bytes,
            capacity_bytes: self.capacity,
        }
    }

    /// Drops every entry (the counters stay).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.bytes = 0;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map and its byte count inconsistent (no
        // code between their updates panics), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
