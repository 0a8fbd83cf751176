//! Privacy over the transaction API: role-based views that redact what a role may not see and
//! refuse, with [`crate::ErrorKind::Forbidden`], a question about it.
//!
//! Consent, subject access, erasure, retention and backup live on the store's transactions
//! ([`crate::WriteTxn::record_consent`], [`crate::WriteTxn::subject_access`],
//! [`crate::WriteTxn::erase`], [`crate::WriteTxn::apply_retention`],
//! [`crate::Store::backup_to`]); this module only reads through them, as a host would.

mod role;

pub use role::{Part, Role, RoleView};
