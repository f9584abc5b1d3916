//! Stage 1 from memory: the caller behind an API key, without a store read per request.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::apikey::KeyHash;
use crate::engine::Caller;

/// Most keys kept; past it the cache starts over (each key is one store read away).
const MAX_KEYS: usize = 10_000;

/// The callers of keys the store found valid, kept correct by the only changes that can
/// make a valid key invalid: the key's revocation and its principal's (roles never
/// change). This node empties it after committing either, and when it hears, or sees by
/// polling the store's count of revoked keys, that another node did.
///
/// Every emptying starts a new generation, and a lookup may only put back what it read
/// in the generation it started in: a read that raced with a revocation cannot restore
/// the key the revocation removed.
///
/// Entries are found by the SHA-256 of the presented key; comparing digests this way
/// reveals nothing about a key (the store's lookup by hash does the same).
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    callers: HashMap<KeyHash, Caller>,
    /// The store's count of revoked keys when last observed.
    revoked: Option<u64>,
}

impl KeyCache {
    /// The cached caller, or the generation a store lookup starts in.
    pub(crate) fn get(&self, hash: &KeyHash) -> Result<Caller, u64> {
        let inner = self.lock();
        inner.callers.get(hash).cloned().ok_or(inner.generation)
    }

    /// Keep what a store lookup begun in `generation` found, unless the cache was emptied
    /// since.
    pub(crate) fn insert(&self, generation: u64, hash: KeyHash, caller: Caller) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.callers.len() >= MAX_KEYS {
            inner.callers.clear();
        }
        inner.callers.insert(hash, caller);
    }

    /// A key or a principal may have been revoked: forget every key.
    pub(crate) fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.callers.clear();
    }

    /// The store's count of revoked keys, as polled: forget every key when it moved.
    pub(crate) fn observe_revoked(&self, count: u64) {
        let moved = {
            let mut inner = self.lock();
            let moved = inner.revoked != Some(count);
            inner.revoked = Some(count);
            moved
        };
        if moved {
            self.invalidate();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clearance_model::Role;

    fn caller(id: &str) -> Caller {
        Caller {
            id: id.parse().unwrap(),
            roles: vec![Role::Agent],
        }
    }

    #[test]
    fn a_lookup_that_raced_with_a_revocation_is_not_kept() {
        let cache = KeyCache::default();
        let hash = KeyHash([7; 32]);
        let generation = cache.get(&hash).unwrap_err();
        cache.invalidate(); // a revocation commits while the store read is in flight
        cache.insert(generation, hash, caller("bot"));
        assert!(cache.get(&hash).is_err(), "the stale read was put back");
        let generation = cache.get(&hash).unwrap_err();
        cache.insert(generation, hash, caller("bot"));
        assert_eq!(cache.get(&hash), Ok(caller("bot")));
    }

    #[test]
    fn a_moved_revocation_count_empties_the_cache() {
        let cache = KeyCache::default();
        let hash = KeyHash([1; 32]);
        cache.observe_revoked(3);
        let generation = cache.get(&hash).unwrap_err();
        cache.insert(generation, hash, caller("bot"));
        cache.observe_revoked(3);
        assert!(cache.get(&hash).is_ok(), "an unchanged count keeps the keys");
        cache.observe_revoked(4);
        assert!(cache.get(&hash).is_err(), "another node revoked a key");
    }
}
