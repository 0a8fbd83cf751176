//! The customer model: plain data, validated on construction, serialisable for export.
//!
//! Values that need standardising ([`Email`], [`Phone`], [`PersonName`], [`Address`],
//! [`CountryCode`]) can only be built by parsing, so an unnormalised value never reaches an index.
//! A [`Customer`] is the data a host supplies; a [`Record`] is a customer as stored, with the id
//! and timestamps the store assigns.

mod activity;
mod attribute;
mod consent;
mod contact;
mod customer;
mod id;
pub(crate) mod wire;

pub use activity::{
    Activity, ActivityId, ActivityKind, ActivityRecord, ActivityType, Currency, Direction,
    Interaction, InteractionChannel, LineItem, MAX_NOTE_LEN, Metrics, Purchase, Rfm, TicketEvent,
    TicketStatus,
};
pub(crate) use activity::{MetricState, Rates};
pub(crate) use attribute::is_valid_name as attribute_name_is_valid;
pub use attribute::{AttributeDef, AttributeType, AttributeValue, Schema};
pub use consent::{Channel, Consent, ConsentStatus};
pub use contact::{
    Address, AddressParts, CountryCode, Email, NameParts, PersonName, Phone, PhoneKind,
};
pub use customer::{
    Customer, CustomerBuilder, ExternalId, Gender, IntoCustomer, Record, Stage, Tag,
};
pub use id::CustomerId;
