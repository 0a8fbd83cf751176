//! customerdb: an embedded customer database.
//!
//! A host application links customerdb as it would redb or SQLite, to keep its customers in one
//! trustworthy place: a typed [`Store`] of [`Customer`]s over redb, with ACID transactions,
//! snapshot reads, and secondary indexes kept consistent on every write. Contact data is
//! standardised on the way in ([`Email`], [`Phone`], [`PersonName`], [`Address`]): bad input
//! gets an [`Error`] naming the field and the reason, and nothing of that record is stored.
//!
//! ```
//! use customerdb::{Customer, ErrorKind, Index, Read, Scan, Store};
//!
//! let store = Store::builder().default_region("GB").in_memory()?;
//! let mut tx = store.begin_write()?;
//! let ada = tx.insert(
//!     Customer::builder()
//!         .name("Ada Lovelace")
//!         .email("Ada@Example.com")
//!         .phone("020 7946 0018")
//!         .tag("vip"),
//! )?;
//! // A bad value is refused with the field and the reason; nothing is written.
//! let err = tx.insert(Customer::builder().name("Bob").email("bob@@example")).unwrap_err();
//! assert!(matches!(err.kind(), ErrorKind::Invalid { field, .. } if field == "emails[0]"));
//! tx.commit()?;
//!
//! let tx = store.begin_read()?;
//! assert_eq!(tx.find_by_email("ada@example.com")?.map(|r| r.id), Some(ada));
//! assert_eq!(tx.find_by_phone("+44 20 7946 0018")?.len(), 1);
//! assert_eq!(tx.ids(&Index::Tag, &Scan::eq("VIP"))?, vec![ada]);
//! assert!(store.verify()?.is_clean());
//! # Ok::<(), customerdb::Error>(())
//! ```
//!
//! What it is not: a server, a search engine, or a general-purpose database. It stores
//! customers, and what a customer database needs around them.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod crypt;
pub mod dedup;
mod error;
pub mod import;
mod index;
mod model;
pub mod normalize;
pub mod privacy;
pub mod query;
pub mod sample;
mod store;

pub use error::{Error, ErrorKind, KeyProblem, Result};
pub use index::{Index, Scan, Value, ValueCounts};
pub use model::{
    Activity, ActivityId, ActivityKind, ActivityRecord, ActivityType, Address, AddressParts,
    AttributeDef, AttributeType, AttributeValue, Channel, Consent, ConsentStatus, CountryCode,
    Currency, Customer, CustomerBuilder, CustomerId, Direction, Email, ExternalId, Gender,
    Interaction, InteractionChannel, IntoCustomer, LineItem, MAX_NOTE_LEN, Metrics, NameParts,
    PersonName, Phone, PhoneKind, Purchase, Record, Rfm, Schema, Stage, Tag, TicketEvent,
    TicketStatus,
};
pub use store::STORE_FORMAT_VERSION;
pub use store::codec::FORMAT_VERSION;
pub use store::{AccessAction, AccessEntry, Inactive, RetentionPolicy, RetentionReport};
pub use store::{
    ActivityQuery, Change, ChangeFeed, Clock, Compaction, Customers, Durability, FieldChange,
    HistoryRetention, Json, Notification, Operation, Problem, Read, ReadTxn, Store, StoreBuilder,
    Subscription, UniqueKey, Upsert, VerifyReport, WriteTxn,
};
pub use store::{BACKUP_FORMAT_VERSION, BackupReport, CatchUp, RestoreReport};
pub use store::{
    Checked, Duplicate, DuplicateCluster, MergeId, MergePlan, OnDuplicate, ReviewItem,
    ReviewStatus, SegmentChanges, Suppress, Survivorship, Tombstone,
};

/// The cookbook's recipes (`docs/cookbook/`), compiled and run as doctests.
#[cfg(doctest)]
pub mod cookbook_doctests {
    #[doc = include_str!("../docs/cookbook/subject-access.md")]
    pub struct SubjectAccess;
    #[doc = include_str!("../docs/cookbook/erase.md")]
    pub struct Erase;
    #[doc = include_str!("../docs/cookbook/retention.md")]
    pub struct Retention;
    #[doc = include_str!("../docs/cookbook/backup-restore.md")]
    pub struct BackupRestore;
    #[doc = include_str!("../docs/cookbook/roles.md")]
    pub struct Roles;
    #[doc = include_str!("../docs/cookbook/encryption.md")]
    pub struct Encryption;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
