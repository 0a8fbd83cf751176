//! Subscriptions: a host is told of each committed change, after its commit, without polling.
//!
//! Each subscriber has a bounded queue. A commit never waits for a subscriber: when a queue is
//! full, the changes that do not fit are dropped *for that subscriber* and it is told it lagged,
//! with the range of sequence numbers it missed; it reads those from the change feed
//! ([`crate::Read::changes`]), which holds them durably. Memory per subscriber is therefore at
//! most its capacity in changes, however slow it is.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::history::Change;

/// What a [`Subscription`] receives.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Notification {
    /// A committed change.
    Change(Arc<Change>),
    /// The subscriber fell behind: the changes with sequence numbers `first..=last` were not
    /// queued for it. Read them with [`crate::Read::changes`]`(first - 1, ..)`; notifications
    /// resume with the change after `last`.
    Lagged {
        /// The first sequence number missed.
        first: u64,
        /// The last sequence number missed.
        last: u64,
    },
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Arc<Change>>,
    /// Set once a change did not fit; every later change is dropped (and the range widened)
    /// until the subscriber has taken the notice, so the order of what it sees is kept.
    lagged: Option<(u64, u64)>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent: every update
        // is a single push or pop.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The store's list of subscribers.
#[derive(Default)]
pub(crate) struct Hub {
    subscribers: Mutex<Vec<Arc<Shared>>>,
}

impl Hub {
    pub(crate) fn subscribe(&self, capacity: usize) -> Subscription {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        });
        self.list().push(shared.clone());
        Subscription { shared }
    }

    fn list(&self) -> MutexGuard<'_, Vec<Arc<Shared>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether anyone is listening (a transaction keeps its changes for publishing only then).
    pub(crate) fn has_subscribers(&self) -> bool {
        let mut list = self.list();
        // A subscription dropped by its owner holds the only other reference.
        list.retain(|s| Arc::strong_count(s) > 1);
        !list.is_empty()
    }

    /// Hands the changes of one committed transaction to every subscriber, never waiting.
    pub(crate) fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let changes: Vec<Arc<Change>> = changes.into_iter().map(Arc::new).collect();
        let list = self.list().clone();
        for s in list {
            let mut q = s.lock();
            for c in &changes {
                if let Some((_, last)) = &mut q.lagged {
                    *last = c.seq;
                } else if q.items.len() < s.capacity {
                    q.items.push_back(c.clone());
                } else {
                    q.lagged = Some((c.seq, c.seq));
                }
            }
            drop(q);
            s.ready.notify_all();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for s in self.list().iter() {
            s.lock().closed = true;
            s.ready.notify_all();
        }
    }
}

/// A stream of the store's committed changes, from [`crate::Store::subscribe`].
///
/// ```
/// use customerdb::{Customer, Notification, Store};
/// let store = Store::in_memory()?;
/// let sub = store.subscribe(1024);
/// let mut tx = store.begin_write()?;
/// tx.insert(Customer::builder().name("Ada Lovelace"))?;
/// tx.commit()?;
/// match sub.try_recv() {
///     Some(Notification::Change(c)) => assert_eq!(c.seq, 1),
///     other => panic!("expected the insert, got {other:?}"),
/// }
/// # Ok::<(), customerdb::Error>(())
/// ```
pub struct Subscription {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    fn take(q: &mut Queue) -> Option<Notification> {
        if let Some(c) = q.items.pop_front() {
            return Some(Notification::Change(c));
        }
        q.lagged
            .take()
            .map(|(first, last)| Notification::Lagged { first, last })
    }

    /// The next notification if one is waiting.
    pub fn try_recv(&self) -> Option<Notification> {
        Subscription::take(&mut self.shared.lock())
    }

    /// Waits for the next notification; `None` once the store is closed (its last clone
    /// dropped) and nothing is left.
    pub fn recv(&self) -> Option<Notification> {
        let mut q = self.shared.lock();
        loop {
            if let Some(n) = Subscription::take(&mut q) {
                return Some(n);
            }
            if q.closed {
                return None;
            }
            q = self
                .shared
                .ready
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Waits up to `timeout` for the next notification.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Notification> {
        let deadline = Instant::now() + timeout;
        let mut q = self.shared.lock();
        loop {
            if let Some(n) = Subscription::take(&mut q) {
                return Some(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if q.closed || left.is_zero() {
                return None;
            }
            q = self
                .shared
                .ready
                .wait_timeout(q, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}
