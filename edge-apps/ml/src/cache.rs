use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use crate::{MlError, Model};

/// Loads each distinct model file once and shares it.
///
/// Keyed by the SHA-256 of the file's bytes, so two apps that reference the
/// same file under different names share one [`Model`] (named after whoever
/// loaded it first). Holds at most `max_models`; when a new model needs room,
/// the least recently used model that no caller still holds is dropped. If
/// every cached model is held, loading another fails with
/// [`MlError::CacheFull`].
///
/// Loading happens under the cache's lock: simple, and two threads asking for
/// the same new model load it once.
#[derive(Debug)]
pub struct ModelCache {
    max_models: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    model: Arc<Model>,
    last_used: u64,
}

impl ModelCache {
    /// A cache of at most `max_models` models (at least one).
    pub fn new(max_models: usize) -> ModelCache {
        ModelCache {
            max_models: max_models.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn max_models(&self) -> usize {
        self.max_models
    }

    /// Models currently cached.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached model for these bytes, loading it with [`Model::load`] the
    /// first time.
    pub fn get_or_load(&self, name: &str, onnx_bytes: &[u8]) -> Result<Arc<Model>, MlError> {
        let key: [u8; 32] = Sha256::digest(onnx_bytes).into();
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(entry) = inner.entries.get_mut(&key) {
            entry.last_used = now;
            return Ok(Arc::clone(&entry.model));
        }
        // Find room before loading (no wasted load when everything is held),
        // but evict only after loading: a bad file must not cost a good model
        // its slot. The victim stays unheld meanwhile: only this function,
        // under the lock, hands out new references.
        let victim = if inner.entries.len() >= self.max_models {
            let victim = inner
                .entries
                .iter()
                .filter(|(_, e)| Arc::strong_count(&e.model) == 1)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)
                .ok_or(MlError::CacheFull {
                    max: self.max_models,
                })?;
            Some(victim)
        } else {
            None
        };
        let model = Arc::new(Model::load(name, onnx_bytes)?);
        if let Some(old) = victim.and_then(|k| inner.entries.remove(&k)) {
            tracing::debug!(model = old.model.name(), "evicted model from cache");
        }
        inner.entries.insert(
            key,
            Entry {
                model: Arc::clone(&model),
                last_used: now,
            },
        );
        Ok(model)
    }

    /// Drops every cached model that no caller holds.
    pub fn clear_unused(&self) {
        self.lock()
            .entries
            .retain(|_, e| Arc::strong_count(&e.model) > 1);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in Inner can be left half-updated by a panic: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testonnx::{self, Dim};

    /// Distinct small models (different widths → different bytes).
    fn model_bytes(n: i64) -> Vec<u8> {
        testonnx::identity(&[Dim::Value(1), Dim::Value(n)])
    }

    #[test]
    fn loads_each_distinct_model_once() {
        let cache = ModelCache::new(4);
        assert!(cache.is_empty());
        let a = cache.get_or_load("a", &model_bytes(2)).unwrap();
        let again = cache.get_or_load("other-name", &model_bytes(2)).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.name(), "a");
        assert_eq!(cache.len(), 1);
        let b = cache.get_or_load("b", &model_bytes(3)).unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.max_models(), 4);
    }

    #[test]
    fn bad_bytes_are_not_cached_and_evict_nothing() {
        let cache = ModelCache::new(1);
        drop(cache.get_or_load("a", &model_bytes(2)).unwrap());
        assert!(matches!(
            cache.get_or_load("bad", b"garbage"),
            Err(MlError::Load { .. })
        ));
        assert_eq!(cache.len(), 1);
        let a = cache.get_or_load("a", &model_bytes(2)).unwrap();
        assert_eq!(a.name(), "a");
    }

    #[test]
    fn evicts_the_least_recently_used_unheld_model() {
        let cache = ModelCache::new(2);
        drop(cache.get_or_load("a", &model_bytes(2)).unwrap());
        drop(cache.get_or_load("b", &model_bytes(3)).unwrap());
        // Touch a: b is now the least recently used.
        let a = cache.get_or_load("a", &model_bytes(2)).unwrap();
        drop(cache.get_or_load("c", &model_bytes(4)).unwrap());
        assert_eq!(cache.len(), 2);
        // a survived (same Arc), b was evicted (loads anew, under its new name).
        assert!(Arc::ptr_eq(
            &a,
            &cache.get_or_load("a2", &model_bytes(2)).unwrap()
        ));
        let b = cache.get_or_load("b2", &model_bytes(3)).unwrap();
        assert_eq!(b.name(), "b2");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn held_models_are_never_evicted() {
        let cache = ModelCache::new(2);
        let a = cache.get_or_load("a", &model_bytes(2)).unwrap();
        let b = cache.get_or_load("b", &model_bytes(3)).unwrap();
        let err = cache.get_or_load("c", &model_bytes(4)).unwrap_err();
        assert_eq!(err, MlError::CacheFull { max: 2 });
        assert_eq!(cache.len(), 2);
        drop(b);
        let c = cache.get_or_load("c", &model_bytes(4)).unwrap();
        assert_eq!(c.name(), "c");
        assert_eq!(cache.len(), 2);
        drop(c);
        cache.clear_unused();
        assert_eq!(cache.len(), 1);
        assert!(Arc::ptr_eq(
            &a,
            &cache.get_or_load("a", &model_bytes(2)).unwrap()
        ));
    }

    #[test]
    fn shared_across_threads() {
        let cache = ModelCache::new(2);
        let models: Vec<Arc<Model>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| cache.get_or_load("a", &model_bytes(2)).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(models.iter().all(|m| Arc::ptr_eq(m, &models[0])));
        assert_eq!(cache.len(), 1);
    }
}
