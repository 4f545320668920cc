//! An evaluator in front of the store's content-addressed evaluation cache: an assignment whose key
//! (model, data, evaluator settings, split, assignment) is cached is answered from the store; anything
//! else is evaluated and stored. Quality only — cost is never cached with it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::eval::{EvalSplit, Evaluation, Evaluator};
use crate::space::Assignment;
use crate::store::{CachedEvaluation, EvalCount, Store, SCHEMA_VERSION};

/// Evaluates through the store's cache, counting what it computed and what the cache answered.
pub struct CachingEvaluator<'a> {
    inner: &'a dyn Evaluator,
    store: &'a dyn Store,
    evaluated: AtomicU64,
    cached: AtomicU64,
}

impl<'a> CachingEvaluator<'a> {
    pub fn new(inner: &'a dyn Evaluator, store: &'a dyn Store) -> CachingEvaluator<'a> {
        CachingEvaluator {
            inner,
            store,
            evaluated: AtomicU64::new(0),
            cached: AtomicU64::new(0),
        }
    }

    /// Evaluations computed, and answered from the cache, through this so far.
    pub fn counts(&self) -> EvalCount {
        EvalCount {
            evaluated: self.evaluated.load(Ordering::Relaxed),
            cached: self.cached.load(Ordering::Relaxed),
        }
    }

    /// The evaluator behind the cache.
    pub fn inner(&self) -> &'a dyn Evaluator {
        self.inner
    }

    /// The evaluation of `a` on the search split, and whether it came from the cache.
    pub fn evaluate_cached(&self, a: &Assignment) -> Result<(Evaluation, bool)> {
        self.evaluate_cached_on(EvalSplit::Search, a)
    }

    /// The evaluation of `a` on `split`, and whether it came from the cache.
    pub fn evaluate_cached_on(
        &self,
        split: EvalSplit,
        a: &Assignment,
    ) -> Result<(Evaluation, bool)> {
        let key = self.inner.key_on(split, a);
        if let Some(c) = self.store.cached(&key)? {
            if c.objective == self.inner.objective() {
                self.cached.fetch_add(1, Ordering::Relaxed);
                return Ok((
                    Evaluation {
                        quality: c.quality,
                        metrics: c.metrics,
                        seconds: 0.0,
                    },
                    true,
                ));
            }
        }
        let e = self.inner.evaluate_on(split, a)?;
        self.evaluated.fetch_add(1, Ordering::Relaxed);
        if e.quality.is_finite() {
            self.store.put_cached(
                &key,
                &CachedEvaluation {
                    schema: SCHEMA_VERSION,
                    objective: self.inner.objective().to_string(),
                    quality: e.quality,
                    metrics: e.metrics.clone(),
                    seconds: e.seconds,
                },
            )?;
        }
        Ok((e, false))
    }
}

impl Evaluator for CachingEvaluator<'_> {
    fn fingerprint(&self) -> blake3::Hash {
        self.inner.fingerprint()
    }

    fn objective(&self) -> &'static str {
        self.inner.objective()
    }

    fn evaluate(&self, a: &Assignment) -> Result<Evaluation> {
        self.evaluate_cached(a).map(|(e, _)| e)
    }

    fn evaluate_on(&self, split: EvalSplit, a: &Assignment) -> Result<Evaluation> {
        self.evaluate_cached_on(split, a).map(|(e, _)| e)
    }

    fn search_samples(&self) -> Option<usize> {
        self.inner.search_samples()
    }
}
