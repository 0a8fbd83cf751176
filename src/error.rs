//! The crate's error type.
//!
//! One [`Error`] for the whole crate, carrying an [`ErrorKind`] the caller can match on. The
//! storage engine's own error, when there is one, is reachable only through
//! [`std::error::Error::source`], so an engine upgrade never changes this type.

use std::fmt;

use crate::model::{ActivityId, CustomerId};
use crate::normalize::Reason;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from customerdb.
///
/// Match on [`Error::kind`] to act on it; the underlying cause, if any, is in
/// [`source`](std::error::Error::source) and is never repeated in `Display`.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// What went wrong, in a form a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No customer has this id.
    NotFound(CustomerId),
    /// No activity has this id.
    ActivityNotFound(ActivityId),
    /// The customer probably exists already (see [`crate::WriteTxn::insert_checked`]).
    Duplicate {
        /// The existing customer it most probably is.
        existing: CustomerId,
    },
    /// The customer changed since a plan about it was made (see [`crate::WriteTxn::merge`]).
    Stale(CustomerId),
    /// An email or phone of the customer was erased with suppression (see
    /// [`crate::WriteTxn::erase`]).
    Suppressed,
    /// A value was refused by standardisation; nothing of the record was stored.
    Invalid {
        /// Which field, as a path into the record (`emails[1]`, `addresses[0].postcode`).
        field: String,
        /// The value as it was given.
        value: String,
        /// Why it was refused.
        reason: Reason,
    },
    /// A unique index already holds this key for another customer.
    Conflict {
        /// The unique index's name (`email`, `external_id`).
        index: &'static str,
        /// The key as stored in the index.
        key: String,
        /// The customer that already holds it.
        existing: CustomerId,
    },
    /// A custom attribute was used that the schema does not declare, or was scanned as an
    /// index while it is declared without one.
    UnknownAttribute {
        /// The attribute's name.
        name: String,
        /// Whether the schema declares it (without an index, since an index was asked for).
        declared: bool,
    },
    /// A custom attribute value does not have the declared type.
    AttributeType {
        /// The attribute's name.
        name: String,
        /// The type the schema declares.
        expected: &'static str,
        /// The type of the value given.
        found: &'static str,
    },
    /// An attribute declaration clashes with the existing one.
    SchemaConflict {
        /// The attribute's name.
        name: String,
    },
    /// A record in a CSV import could not be read or stored.
    Import {
        /// The 1-based line of the record in its file.
        line: u64,
    },
    /// The bytes were written by a format version this build does not read.
    FormatVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads and writes.
        supported: u8,
    },
    /// Stored bytes do not decode; the store file is damaged or was written by other software.
    Corrupted {
        /// What was being decoded.
        what: &'static str,
        /// The customer whose record it was, when the bytes are a record.
        record: Option<CustomerId>,
    },
    /// A store cannot catch up from another: it holds changes the other does not (its change
    /// feed is ahead), so it is not a copy of it (see [`crate::Store::catch_up_from`]).
    Diverged {
        /// The latest change sequence number of the store catching up.
        ours: u64,
        /// The latest change sequence number of the store it catches up from.
        theirs: u64,
    },
    /// The role a transaction is viewed through may not see a field (or records at all) that
    /// the call needs (see [`crate::privacy::RoleView`]).
    Forbidden {
        /// The role's name.
        role: String,
        /// What it may not see (`phones`, `records`, `activities`).
        field: String,
    },
    /// On an encrypted store the index holds keyed hashes of its values (blind index), so only
    /// equality lookups work on it: a range or prefix scan, or listing its values, cannot be
    /// answered (see [`crate::StoreBuilder::encryption`]).
    Blinded {
        /// The index's name.
        index: String,
        /// What was asked of it (`range`, `prefix`, `values`).
        scan: &'static str,
    },
    /// An encryption key is missing or wrong, or sealed bytes do not authenticate (see
    /// [`crate::crypt`]).
    Key(KeyProblem),
    /// The storage engine failed; the cause is in `source()`.
    Storage,
    /// An earlier error in this write transaction came while its staged changes were being
    /// applied to the tables, which are now partly written: the transaction can only be
    /// dropped (rolled back), and [`crate::WriteTxn::commit`] refuses it.
    Poisoned,
    /// An I/O operation failed; the cause is in `source()`.
    Io,
}

/// What is wrong with a key, for [`ErrorKind::Key`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key provider has no master key under this id.
    UnknownKeyId(u32),
    /// The master key under this id does not open what was sealed with it: a wrong key.
    WrongKey(u32),
    /// A master key is not 32 bytes, or a key file line does not parse.
    Malformed {
        /// Where: a key file line (1-based), or 0 for a key given in code.
        line: usize,
    },
    /// Sealed bytes did not authenticate: they were altered, or sealed under another key or for
    /// another place.
    Unauthentic {
        /// What was being opened.
        what: &'static str,
    },
    /// The operating system's random source failed.
    Random,
    /// The store is encrypted and was opened without a key provider.
    Missing,
    /// A key provider was given for a store that is not encrypted (encryption is chosen when a
    /// store is created).
    NotEncrypted,
    /// A backup of an encrypted store holds no data keys: restore it with the store it was taken
    /// from as their source (`StoreBuilder::data_keys_from`).
    NoDataKeys,
    /// The source of data keys given for a restore (`StoreBuilder::data_keys_from`), or the
    /// source of a catch-up (`Store::catch_up_from`), is not the store the backup was taken
    /// from (nor its successor): one of the two is plain, or their blind index keys differ.
    /// Restoring with it would purge every customer as erased; catching up from it would copy
    /// records the copy's index hashes do not match.
    OtherStore,
    /// The customer's data key is gone: the customer was erased (crypto-shredding), so what
    /// was sealed under it cannot be read.
    Shredded(CustomerId),
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::UnknownKeyId(id) => write!(f, "no master key with id {id} was given"),
            KeyProblem::WrongKey(id) => {
                write!(f, "master key {id} is not the key the data was sealed with")
            }
            KeyProblem::Malformed { line: 0 } => f.write_str("a master key must be 32 bytes"),
            KeyProblem::Malformed { line } => write!(
                f,
                "key file line {line} is not a key id and 64 hexadecimal digits"
            ),
            KeyProblem::Unauthentic { what } => {
                write!(
                    f,
                    "sealed {what} does not authenticate: altered, or sealed under another key"
                )
            }
            KeyProblem::Random => f.write_str("the operating system's random source failed"),
            KeyProblem::Missing => {
                f.write_str("the store is encrypted: open it with its key provider")
            }
            KeyProblem::NotEncrypted => f.write_str(
                "the store is not encrypted; encryption is chosen when a store is created",
            ),
            KeyProblem::NoDataKeys => f.write_str(
                "a backup of an encrypted store holds no data keys: restore it with data_keys_from",
            ),
            KeyProblem::OtherStore => {
                f.write_str("the source of data keys is not the store the backup was taken from")
            }
            KeyProblem::Shredded(id) => {
                write!(f, "the data key of customer {id} is destroyed (erased)")
            }
        }
    }
}

impl Error {
    /// Makes an error of this kind with no underlying cause.
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error {
            inner: Box::new(Inner { kind, source: None }),
        }
    }

    /// Makes an error of this kind caused by `source`.
    pub(crate) fn with_source(
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                source: Some(source.into()),
            }),
        }
    }

    /// An [`ErrorKind::Invalid`] error.
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: Reason,
    ) -> Self {
        Error::new(ErrorKind::Invalid {
            field: field.into(),
            value: value.into(),
            reason,
        })
    }

    /// A [`ErrorKind::Corrupted`] error caused by `source`.
    pub(crate) fn corrupted(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::with_source(ErrorKind::Corrupted { what, record: None }, source)
    }

    /// For an [`ErrorKind::Corrupted`] error, names the customer whose stored record it was.
    #[must_use]
    pub(crate) fn in_record(mut self, id: CustomerId) -> Self {
        if let ErrorKind::Corrupted { record, .. } = &mut self.inner.kind {
            *record = Some(id);
        }
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.inner.kind
    }

    /// Consumes the error, returning its kind.
    pub fn into_kind(self) -> ErrorKind {
        self.inner.kind
    }

    /// For an [`ErrorKind::Invalid`] error raised while reading one value of a record, names
    /// the field by its place in the record: an error about the whole value (its field is
    /// `whole`, or empty) takes `path`; one about a part goes under it. So `email` becomes
    /// `emails[1]`, and an address's `postcode` becomes `addresses[1].postcode`.
    #[must_use]
    pub(crate) fn within(mut self, whole: &str, path: &str) -> Self {
        if let ErrorKind::Invalid { field, .. } = &mut self.inner.kind {
            *field = if field.is_empty() || field == whole {
                path.to_owned()
            } else if field.starts_with('[') {
                format!("{path}{field}")
            } else {
                format!("{path}.{field}")
            };
        }
        self
    }

    /// [`Error::within`] for a value whose errors name only its parts.
    #[must_use]
    pub(crate) fn in_field(self, parent: &str) -> Self {
        self.within("", parent)
    }

    /// A short, stable, machine-readable name of the kind (`invalid`, `conflict`, ...).
    pub fn code(&self) -> &'static str {
        match self.kind() {
            ErrorKind::NotFound(_) => "not_found",
            ErrorKind::ActivityNotFound(_) => "activity_not_found",
            ErrorKind::Duplicate { .. } => "duplicate",
            ErrorKind::Stale(_) => "stale",
            ErrorKind::Suppressed => "suppressed",
            ErrorKind::Invalid { .. } => "invalid",
            ErrorKind::Conflict { .. } => "conflict",
            ErrorKind::UnknownAttribute { .. } => "unknown_attribute",
            ErrorKind::AttributeType { .. } => "attribute_type",
            ErrorKind::SchemaConflict { .. } => "schema_conflict",
            ErrorKind::Import { .. } => "import",
            ErrorKind::FormatVersion { .. } => "format_version",
            ErrorKind::Corrupted { .. } => "corrupted",
            ErrorKind::Diverged { .. } => "diverged",
            ErrorKind::Forbidden { .. } => "forbidden",
            ErrorKind::Blinded { .. } => "blinded",
            ErrorKind::Key(_) => "key",
            ErrorKind::Storage => "storage",
            ErrorKind::Poisoned => "poisoned",
            ErrorKind::Io => "io",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            ErrorKind::NotFound(id) => write!(f, "no customer with id {id}"),
            ErrorKind::ActivityNotFound(id) => write!(f, "no activity with id {id}"),
            ErrorKind::Duplicate { existing } => {
                write!(
                    f,
                    "the customer probably exists already as customer {existing}"
                )
            }
            ErrorKind::Stale(id) => write!(f, "customer {id} changed since the plan was made"),
            ErrorKind::Suppressed => {
                f.write_str("an email or phone of the customer was erased and is suppressed")
            }
            ErrorKind::Invalid {
                field,
                value,
                reason,
            } => write!(f, "invalid {field} \"{value}\": {reason}"),
            ErrorKind::Conflict {
                index,
                key,
                existing,
            } => write!(
                f,
                "unique index {index} already maps \"{key}\" to customer {existing}"
            ),
            ErrorKind::UnknownAttribute {
                name,
                declared: false,
            } => write!(f, "attribute \"{name}\" is not declared in the schema"),
            ErrorKind::UnknownAttribute {
                name,
                declared: true,
            } => write!(
                f,
                "attribute \"{name}\" is declared without an index, so it cannot be scanned"
            ),
            ErrorKind::AttributeType {
                name,
                expected,
                found,
            } => write!(
                f,
                "attribute \"{name}\" is declared as {expected} but was given {found}"
            ),
            ErrorKind::SchemaConflict { name } => write!(
                f,
                "attribute \"{name}\" is already declared with a different type"
            ),
            ErrorKind::Import { line } => write!(f, "import failed at line {line}"),
            ErrorKind::FormatVersion { found, supported } => write!(
                f,
                "stored format version {found} is not supported (this build reads version {supported})"
            ),
            ErrorKind::Corrupted {
                what,
                record: Some(id),
            } => write!(f, "stored {what} of customer {id} is corrupted"),
            ErrorKind::Corrupted { what, record: None } => write!(f, "stored {what} is corrupted"),
            ErrorKind::Diverged { ours, theirs } => write!(
                f,
                "this store is at change {ours}, ahead of the source at change {theirs}: not a copy of it"
            ),
            ErrorKind::Forbidden { role, field } => {
                write!(f, "role \"{role}\" may not see {field}")
            }
            ErrorKind::Blinded { index, scan } => write!(
                f,
                "index {index} is blinded on an encrypted store: a {scan} scan cannot be answered, only equality"
            ),
            ErrorKind::Key(p) => fmt::Display::fmt(p, f),
            ErrorKind::Storage => f.write_str("the storage engine failed"),
            ErrorKind::Poisoned => f.write_str(
                "an earlier error left this transaction's changes partly applied: roll it back",
            ),
            ErrorKind::Io => f.write_str("an I/O operation failed"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::with_source(ErrorKind::Io, e)
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_field_builds_paths() {
        let e = Error::invalid("postcode", "x", Reason::Empty).in_field("addresses[1]");
        assert!(
            matches!(e.kind(), ErrorKind::Invalid { field, .. } if field == "addresses[1].postcode")
        );
        let e = Error::invalid("", "x", Reason::Empty).in_field("emails[0]");
        assert!(matches!(e.kind(), ErrorKind::Invalid { field, .. } if field == "emails[0]"));
    }

    #[test]
    fn display_does_not_repeat_the_source() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::from(io);
        assert_eq!(e.to_string(), "an I/O operation failed");
        assert_eq!(
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .as_deref(),
            Some("disk on fire")
        );
    }
}
