//! The integration tests, one binary (`autotests = false`), a module per area.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod backup;
mod bulk_review;
mod cli;
mod consent;
mod crash;
mod dedup;
mod encryption;
mod merge;
mod model_based;
mod privacy;
mod query;
mod reference;
mod roles;
mod store;
mod timeline;
mod verify;

/// Numbers that libphonenumber's own metadata gives as valid examples, for tests that need
/// phones that always parse.
pub const PHONES: [&str; 5] = [
    "+12015550123",
    "+442079460018",
    "+447400123456",
    "+4930123456",
    "+33123456789",
];
