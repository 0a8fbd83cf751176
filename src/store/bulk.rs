//! Bulk insertion: standardisation on every core, writes in order on the caller's thread.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Mutex, mpsc};

use super::history::FieldChange;
use super::write::{WriteTxn, inserted_fields};
use crate::Result;
use crate::model::{Customer, CustomerId, IntoCustomer};

/// A customer standardised on a worker thread, with its insert's history field changes (or
/// the error that refused it).
type Prepared = Result<(Customer, Result<Vec<FieldChange>>)>;

/// Customers standardised per unit of work handed to a thread.
const CHUNK: usize = 256;

impl WriteTxn {
    /// Inserts many customers, in order, and returns their ids in the same order.
    ///
    /// Standardising a customer (parsing phone numbers with libphonenumber's patterns above
    /// all) and describing it for the history cost more than staging its writes. Here they
    /// run on as many threads as the machine has cores, while this thread stages the
    /// customers already standardised, in their order: the ids, the history and every check
    /// are those of calling [`WriteTxn::insert`] on each in turn.
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
                ids.push(self.insert(c)?);
            }
            return Ok(ids);
        }
        let work = Mutex::new(chunks.into_iter().enumerate());
        // Bounded: a slow writer holds standardisation back rather than buffering it all.
        let (send, receive) = mpsc::sync_channel::<(usize, Vec<Prepared>)>(threads * 2);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let send = send.clone();
                let work = &work;
                scope.spawn(move || {
                    loop {
                        let next = match work.lock() {
                            Ok(mut w) => w.next(),
                            Err(_) => None,
                        };
                        let Some((i, chunk)) = next else { break };
                        let done = chunk
                            .into_iter()
                            .map(|c| {
                                c.into_customer(region).map(|c| {
                                    let fields = inserted_fields(&c);
                                    (c, fields)
                                })
                            })
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
            let mut waiting: BTreeMap<usize, Vec<Prepared>> = BTreeMap::new();
            let mut next = 0;
            for (i, done) in receive {
                waiting.insert(i, done);
                while let Some(done) = waiting.remove(&next) {
                    next += 1;
                    for prepared in done {
                        let (customer, fields) = prepared?;
                        ids.push(self.insert_standardised(customer, fields)?);
                    }
                }
            }
            Ok(ids)
        })
    }
}
