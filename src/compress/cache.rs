//! # Memoised compressed weights
//!
//! A search evaluates thousands of assignments that share most of their layer choices, and compressing
//! a layer (an SVD, an MSE scale search) costs far more than looking it up. [`CompressCache`] keeps the
//! compressed weight of each `(layer name, choice, compression settings)` it has computed, up to a byte
//! budget, and evicts the least recently used entries beyond it.
//!
//! - **Key**: the layer, the choice and the [`CompressSettings`] (scale method and rounding: GPTQ and
//!   round-to-nearest give different weights). The activation part of a choice is left out of the key,
//!   since it does not change the weight.
//! - **One cache per model**: the key names the layer, not the weight's bytes, so a cache must not be
//!   shared between models.
//! - **Threads**: the cache is `Sync`; a `Mutex` guards the map only for lookups and insertions, and
//!   the compression itself runs outside the lock, so threads compressing different layers never wait
//!   for each other. Two threads that miss the same key at the same time both compute it (both count
//!   a miss); the first to finish inserts it and the second returns that stored tensor and drops its
//!   own (the results are identical: compression is deterministic).
//! - **Values** are candle tensors, whose storage is reference-counted: a hit clones a handle, not the
//!   data. An evicted tensor stays alive while a caller still holds it.
//! - **Size**: an entry counts `elements × dtype size` bytes. A tensor larger than the whole budget is
//!   returned but not kept.
//!
//! The LRU bookkeeping is the `lru` crate's [`lru::LruCache`] (unbounded by count; this type bounds it
//! by bytes).

use std::sync::{Mutex, MutexGuard};

use candle_core::Tensor;
use lru::LruCache;

use super::apply::{apply_choice, apply_with, CompressSettings};
use super::quant::ScaleMethod;
use super::stats::InputStats;
use crate::error::{Error, Result};
use crate::space::{ActQuant, Choice};

/// Default byte budget of a [`CompressCache`]: 1 GiB.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

/// What a cached weight is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub layer: String,
    /// The choice with its activation part cleared: activation quantization does not change the
    /// weight, so `int4-sym-g32` and `int4-sym-g32+act8-static` share one entry.
    pub choice: Choice,
    pub settings: CompressSettings,
}

impl CacheKey {
    /// The key of `(layer, choice, settings)` (a [`ScaleMethod`] alone means round-to-nearest).
    pub fn new(layer: &str, choice: &Choice, settings: impl Into<CompressSettings>) -> CacheKey {
        CacheKey {
            layer: layer.to_string(),
            choice: Choice {
                act: ActQuant::None,
                ..*choice
            },
            settings: settings.into(),
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
    map: LruCache<CacheKey, Tensor>,
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// A thread-safe, byte-bounded LRU cache of compressed weights.
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

    /// [`CompressCache::get_or_apply`] with `settings` and the layer's input statistics
    /// ([`apply_with`]).
    pub fn get_or_apply_with(
        &self,
        layer: &str,
        weight: &Tensor,
        choice: &Choice,
        settings: &CompressSettings,
        inputs: Option<&InputStats>,
    ) -> Result<Tensor> {
        self.get_or_compute(layer, choice, *settings, || {
            apply_with(weight, choice, settings, inputs)
        })
    }

    /// The cached tensor of `(layer, choice, settings)`, or `compute()`'s result, stored (errors are
    /// returned and not stored). `compute` runs without the lock held.
    pub fn get_or_compute(
        &self,
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
        compute: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        let key = CacheKey::new(layer, choice, settings);
        {
            let mut inner = self.lock();
            if let Some(t) = inner.map.get(&key).cloned() {
                inner.hits += 1;
                return Ok(t);
            }
            inner.misses += 1;
        }
        let t = compute()?;
        let size = bytes_of(&t);
        if size > self.capacity {
            return Ok(t);
        }
        let mut inner = self.lock();
        if let Some(existing) = inner.map.get(&key).cloned() {
            // Another thread computed the same key meanwhile: share its tensor.
            return Ok(existing);
        }
        inner.map.put(key, t.clone());
        inner.bytes += size;
        while inner.bytes > self.capacity {
            let Some((_, old)) = inner.map.pop_lru() else {
                break;
            };
            inner.bytes -= bytes_of(&old);
            inner.evictions += 1;
        }
        Ok(t)
    }

    /// Whether `(layer, choice, settings)` is held (does not count as a use).
    pub fn contains(
        &self,
        layer: &str,
        choice: &Choice,
        settings: impl Into<CompressSettings>,
    ) -> bool {
        let key = CacheKey::new(layer, choice, settings);
        self.lock().map.contains(&key)
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

/// Bytes of a tensor's values.
fn bytes_of(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}
