//! Bulk insertion: standardisation on every core, writes in order on the caller's thread.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, mpsc};

use super::write::{Prepared, WriteTxn};
use crate::Result;
use crate::model::{CustomerId, IntoCustomer};

/// Customers standardised per unit of work handed to a thread.
const CHUNK: usize = 256;

impl WriteTxn {
    /// Inserts many customers, in order, and returns their ids in the same order.
    ///
    /// Standardising a customer (parsing phone numbers with libphonenumber's patterns above
    /// all), describing it for the history, computing its index entries and encoding it cost
    /// more than staging its writes. Here they run on as many threads as the machine has
    /// cores, while this thread checks and stages the customers already prepared, in their
    /// order: the ids, the history and every check are those of calling
    /// [`WriteTxn::insert`] on each in turn, except that the customers of one call share one
    /// creation time (the time of the call), as the customers of one transaction share its
    /// snapshot. That keeps their creation and update times one index value, written as a
    /// few runs instead of a B-tree step per customer.
    ///
    /// ```
    /// use customerdb::{Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// let ids = tx.insert_many((0..1000).map(|i| {
    ///     Customer::builder().name(format!("Ada {i}")).email(format!("ada{i}@example.com"))
    /// }))?;
    /// assert_eq!(ids.len(), 1000);
    /// assert_eq!(tx.find_by_email("ada7@example.com")?.map(|r| r.id), Some(ids[7]));
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// The first error [`WriteTxn::insert`] would give, for the first customer it refuses.
    /// The customers before that one stay inserted in this transaction (drop it to write
    /// none of them); none after it is.
    pub fn insert_many<T, I>(&mut self, customers: I) -> Result<Vec<CustomerId>>
    where
        I: IntoIterator<Item = T>,
        T: IntoCustomer + Send,
    {
        let region = self.default_region();
        let preparer = self.preparer(self.now())?;
        let mut chunks: Vec<Vec<T>> = Vec::new();
        for c in customers {
            match chunks.last_mut() {
                Some(last) if last.len() < CHUNK => last.push(c),
                _ => chunks.push(vec![c]),
            }
        }
        let mut ids = Vec::with_capacity(chunks.iter().map(Vec::len).sum());
        // A worker per core: this thread mostly waits for them while it stages (standardising
        // costs more than staging), and the flush at commit runs after they are done.
        let threads = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(chunks.len());
        if threads <= 1 {
            for c in chunks.into_iter().flatten() {
                let prepared = preparer.prepare(c.into_customer(region)?);
                ids.push(self.insert_prepared(prepared)?);
            }
            return Ok(ids);
        }
        let work = Mutex::new(chunks.into_iter().enumerate());
        // Bounded: a slow writer holds standardisation back rather than buffering it all.
        let (send, receive) = mpsc::sync_channel::<(usize, Vec<Result<Prepared>>)>(threads * 2);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let send = send.clone();
                let (work, preparer) = (&work, &preparer);
                scope.spawn(move || {
                    loop {
                        let next = match work.lock() {
                            Ok(mut w) => w.next(),
                            Err(_) => None,
                        };
                        let Some((i, chunk)) = next else { break };
                        let done = chunk
                            .into_iter()
                            .map(|c| c.into_customer(region).map(|c| preparer.prepare(c)))
                            .collect();
                        if send.send((i, done)).is_err() {
                            // The writer stopped at an error: nothing more is wanted.
                            break;
                        }
                    }
                });
            }
            drop(send);
            // Chunks arrive in any order; they are written in theirs.
            let mut waiting: BTreeMap<usize, Vec<Result<Prepared>>> = BTreeMap::new();
            let mut next = 0;
            for (i, done) in receive {
                waiting.insert(i, done);
                while let Some(done) = waiting.remove(&next) {
                    next += 1;
                    for prepared in done {
                        ids.push(self.insert_prepared(prepared?)?);
                    }
                }
            }
            Ok(ids)
        })
    }
}
