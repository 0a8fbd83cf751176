//! A bounded cache of unwrapped data keys, one per open encrypted store, so that a read of a
//! customer does not unwrap the customer's data key each time.
//!
//! Crypto-shredding must survive the cache: a data key destroyed by erasure (or replaced by
//! anonymisation, or re-wrapped by rotation) is never handed out by it once the transaction
//! that destroyed it has committed, not even to a reader whose older snapshot still holds the
//! wrapped key. Three rules give that:
//!
//! 1. An entry is found only by the customer id *and* the exact wrapped bytes the caller read
//!    from its own snapshot, so a snapshot without the key (erased) or with another one
//!    (anonymised, rotated) never gets it from the cache; or by a reader that authenticates
//!    it by opening the customer's sealed record with it, from its own snapshot (a key that
//!    opens the record is its key, and a snapshot holding a record holds its key).
//! 2. A write transaction that destroys or re-wraps a key blocks that customer from the
//!    moment it does so until it ends (commits or not): the entry is dropped (its key zeroised)
//!    and no one finds or adds one meanwhile.
//! 3. When it ends, the cache's epoch moves on. A transaction adds keys only while the epoch is
//!    the one read *before* its snapshot began, so a reader of a snapshot older than the commit
//!    cannot put the destroyed key back.
//!
//! Eviction is second chance (CLOCK): a hit marks its entry, and the hand passes over marked
//! entries once before evicting them. Evicted and invalidated keys are zeroised on drop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crypt::SecretKey;

/// Data keys the cache holds unless the store is configured otherwise: about 3 MB.
pub(crate) const DEFAULT_CAPACITY: usize = 16_384;

/// One cached key: the wrapped bytes it was unwrapped from, and the key.
struct Slot {
    id: u64,
    wrapped: Box<[u8]>,
    key: SecretKey,
    referenced: bool,
}

#[derive(Default)]
struct State {
    epoch: u64,
    slots: Vec<Option<Slot>>,
    /// Customer id to its slot.
    index: HashMap<u64, usize>,
    /// Slots emptied by invalidation, reused before any entry is evicted.
    free: Vec<usize>,
    hand: usize,
    /// Customers blocked by running write transactions, with how many block each.
    blocked: HashMap<u64, usize>,
}

/// The cache (see the module documentation).
pub(crate) struct KeyCache {
    state: Mutex<State>,
    capacity: usize,
}

impl KeyCache {
    /// A cache of at most `capacity` keys (0 turns it off).
    pub(crate) fn new(capacity: usize) -> KeyCache {
        KeyCache {
            state: Mutex::new(State::default()),
            capacity,
        }
    }

    /// The state; a panic elsewhere while it was locked leaves nothing half done that matters
    /// (every step keeps it consistent), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The epoch now: read it before beginning a snapshot, and pass it to [`KeyCache::put`].
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Customer `id`'s key, if it is cached as unwrapped from exactly `wrapped`.
    pub(crate) fn get(&self, id: u64, wrapped: &[u8]) -> Option<SecretKey> {
        self.find(id, Some(wrapped))
    }

    /// Customer `id`'s cached key, whatever wrapped bytes it came from: only for a caller
    /// that authenticates it by opening the customer's sealed record with it (rule 1).
    pub(crate) fn get_any(&self, id: u64) -> Option<SecretKey> {
        self.find(id, None)
    }

    fn find(&self, id: u64, wrapped: Option<&[u8]>) -> Option<SecretKey> {
        let mut s = self.lock();
        if s.blocked.contains_key(&id) {
            return None;
        }
        let i = *s.index.get(&id)?;
        let slot = s.slots.get_mut(i)?.as_mut()?;
        if wrapped.is_some_and(|w| *slot.wrapped != *w) {
            return None;
        }
        slot.referenced = true;
        Some(slot.key.clone())
    }

    /// Caches customer `id`'s `key`, unwrapped from `wrapped` in a snapshot begun at `epoch`
    /// (`None`: a caller without a snapshot epoch, which never adds). Refused if the epoch has
    /// moved on since or the customer is blocked.
    pub(crate) fn put(&self, id: u64, wrapped: &[u8], key: &SecretKey, epoch: Option<u64>) {
        if self.capacity == 0 {
            return;
        }
        let mut s = self.lock();
        if epoch != Some(s.epoch) || s.blocked.contains_key(&id) {
            return;
        }
        let slot = Slot {
            id,
            wrapped: wrapped.into(),
            key: key.clone(),
            referenced: false,
        };
        let at = match s.index.get(&id) {
            Some(&i) => i,
            None => match s.free.pop() {
                Some(i) => i,
                None if s.slots.len() < self.capacity => {
                    s.slots.push(None);
                    s.slots.len() - 1
                }
                None => s.victim(),
            },
        };
        s.index.insert(id, at);
        if let Some(place) = s.slots.get_mut(at) {
            // The key it replaces, if any, is zeroised as it drops.
            *place = Some(slot);
        }
    }

    /// Blocks customer `id` (rule 2) and drops its entry, zeroising the key.
    pub(crate) fn block(&self, id: u64) {
        let mut s = self.lock();
        *s.blocked.entry(id).or_default() += 1;
        s.remove(id);
    }

    /// Ends the blocks of `ids` (one each, as [`KeyCache::block`] took them) and moves the
    /// epoch on (rule 3). Called when the write transaction that blocked them has ended.
    pub(crate) fn release(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut s = self.lock();
        for &id in ids {
            s.remove(id);
            if let Some(n) = s.blocked.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    s.blocked.remove(&id);
                }
            }
        }
        s.epoch += 1;
    }

    /// Whether customer `id` has a key in the cache (under any wrapped bytes).
    #[cfg(test)]
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.lock().index.contains_key(&id)
    }
}

impl State {
    fn remove(&mut self, id: u64) {
        if let Some(i) = self.index.remove(&id) {
            if let Some(place) = self.slots.get_mut(i) {
                *place = None;
            }
            self.free.push(i);
        }
    }

    /// The slot to evict: the first unmarked one from the hand on, unmarking those it passes.
    /// Called only when every slot is full.
    fn victim(&mut self) -> usize {
        let n = self.slots.len();
        if n == 0 {
            self.slots.push(None);
            return 0;
        }
        loop {
            let i = self.hand % n;
            self.hand = (i + 1) % n;
            match self.slots.get_mut(i) {
                Some(Some(slot)) if slot.referenced => slot.referenced = false,
                Some(Some(slot)) => {
                    let id = slot.id;
                    self.index.remove(&id);
                    return i;
                }
                _ => return i,
            }
        }
    }
}

/// The customers whose keys one write transaction destroys or re-wraps: each is blocked in
/// the cache from [`Invalidation::add`] until this is dropped, which the transaction's owner
/// does after the commit (or with the aborted transaction), releasing them all.
pub(crate) struct Invalidation {
    cache: Option<Arc<KeyCache>>,
    ids: RefCell<Vec<u64>>,
}

impl Invalidation {
    /// Invalidations into `cache` (none for a plain store).
    pub(crate) fn new(cache: Option<Arc<KeyCache>>) -> Invalidation {
        Invalidation {
            cache,
            ids: RefCell::new(Vec::new()),
        }
    }

    /// Invalidations into the key cache of `crypt`'s store (none for a plain store).
    pub(crate) fn of(crypt: Option<&super::crypt::Crypt>) -> Invalidation {
        crypt.map_or_else(
            || Invalidation::new(None),
            super::crypt::Crypt::invalidation,
        )
    }

    /// Blocks customer `id` until this is dropped.
    pub(crate) fn add(&self, id: u64) {
        if let Some(c) = &self.cache {
            c.block(id);
            self.ids.borrow_mut().push(id);
        }
    }
}

impl Drop for Invalidation {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            c.release(&self.ids.borrow());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap()
    }

    #[test]
    fn a_key_is_found_only_under_the_wrapped_bytes_it_came_from() {
        let cache = KeyCache::new(4);
        let k = key();
        cache.put(1, b"wrapped one", &k, Some(cache.epoch()));
        assert!(cache.get(1, b"wrapped one").is_some());
        assert!(cache.get(1, b"wrapped two").is_none());
        assert!(cache.get(2, b"wrapped one").is_none());
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity_and_evicts_unused_keys_first() {
        let cache = KeyCache::new(3);
        let e = Some(cache.epoch());
        for id in 1..=3 {
            cache.put(id, &id.to_be_bytes(), &key(), e);
        }
        // 1 and 3 are used, so the hand passes them over once and evicts 2.
        assert!(cache.get(1, &1u64.to_be_bytes()).is_some());
        assert!(cache.get(3, &3u64.to_be_bytes()).is_some());
        cache.put(4, &4u64.to_be_bytes(), &key(), e);
        assert!(!cache.holds(2));
        assert!(cache.holds(1) && cache.holds(3) && cache.holds(4));
        for id in 5..50 {
            cache.put(id, &id.to_be_bytes(), &key(), e);
        }
        assert_eq!((1..50).filter(|&id| cache.holds(id)).count(), 3);
        let off = KeyCache::new(0);
        off.put(1, b"w", &key(), Some(off.epoch()));
        assert!(!off.holds(1));
    }

    #[test]
    fn a_blocked_customer_is_neither_found_nor_added_and_its_release_ends_older_epochs() {
        let cache = Arc::new(KeyCache::new(8));
        let before = Some(cache.epoch());
        cache.put(1, b"w1", &key(), before);
        cache.put(2, b"w2", &key(), before);
        {
            let inv = Invalidation::new(Some(cache.clone()));
            inv.add(1);
            assert!(!cache.holds(1));
            assert!(cache.get(1, b"w1").is_none());
            cache.put(1, b"w1", &key(), before);
            assert!(!cache.holds(1));
            // Others are untouched meanwhile.
            assert!(cache.get(2, b"w2").is_some());
        }
        // A snapshot older than the release may not put the key back, nor any other.
        cache.put(1, b"w1", &key(), before);
        cache.put(3, b"w3", &key(), before);
        assert!(!cache.holds(1) && !cache.holds(3));
        cache.put(1, b"w1", &key(), Some(cache.epoch()));
        assert!(cache.holds(1));
        // A caller without an epoch never adds; an invalidation without ids moves nothing.
        cache.put(4, b"w4", &key(), None);
        assert!(!cache.holds(4));
        let epoch = cache.epoch();
        drop(Invalidation::new(Some(cache.clone())));
        assert_eq!(cache.epoch(), epoch);
    }
}
