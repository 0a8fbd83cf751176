//! The customer record, its builder, and the small value types it holds.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::attribute::AttributeValue;
use super::consent::{Channel, Consent, ConsentStatus};
use super::contact::{
    Address, AddressParts, CountryCode, Email, NameParts, PersonName, Phone, PhoneKind,
};
use super::id::CustomerId;
use crate::error::{Error, Result};
use crate::normalize::{self, MAX_TEXT_LEN, Reason, clean_display, fold_key};

/// Where a customer is in its relationship with the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Known contact, not yet qualified.
    Lead,
    /// Qualified, in conversation, not yet buying.
    Prospect,
    /// Has bought or subscribed.
    Customer,
    /// Was a customer and stopped.
    Churned,
}

impl Stage {
    /// Every stage, in lifecycle order.
    pub const ALL: [Stage; 4] = [
        Stage::Lead,
        Stage::Prospect,
        Stage::Customer,
        Stage::Churned,
    ];

    /// The stage's name (`lead`, `prospect`, `customer`, `churned`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lead => "lead",
            Stage::Prospect => "prospect",
            Stage::Customer => "customer",
            Stage::Churned => "churned",
        }
    }

    /// The stage named `s`, ignoring case and surrounding space.
    pub fn parse(s: &str) -> Option<Stage> {
        let s = s.trim();
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A customer's gender, when the host records one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gender {
    /// Female.
    Female,
    /// Male.
    Male,
    /// Non-binary.
    NonBinary,
    /// The customer chose not to say.
    Undisclosed,
    /// Self-described, as given.
    Other(String),
}

impl Gender {
    /// Reads the common spellings (`f`, `female`, `m`, `male`, `x`, `nonbinary`, ...);
    /// anything else becomes [`Gender::Other`].
    pub fn parse(s: &str) -> Gender {
        match fold_key(s).as_str() {
            "f" | "female" | "woman" => Gender::Female,
            "m" | "male" | "man" => Gender::Male,
            "x" | "nb" | "non-binary" | "nonbinary" | "non binary" => Gender::NonBinary,
            "" | "u" | "unknown" | "undisclosed" | "prefer not to say" => Gender::Undisclosed,
            _ => Gender::Other(clean_display(s)),
        }
    }
}

/// A tag: a short label, stored case folded with diacritics stripped (`VIP ` and `vip` are one tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// Normalises a tag.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if it is empty or longer than 1024 bytes.
    pub fn parse(s: &str) -> Result<Tag> {
        let key = fold_key(s);
        check_text("tag", s, &key)?;
        Ok(Tag(key))
    }

    /// The tag's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identifier of the customer in another system, such as a shop or a billing service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExternalId {
    system: String,
    id: String,
}

impl ExternalId {
    /// An external id. The system name is case folded; the id is kept exactly, trimmed.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if either part is empty, too long, or has control characters.
    pub fn new(system: &str, id: &str) -> Result<ExternalId> {
        let system_key = fold_key(system);
        check_text("system", system, &system_key)?;
        let id_trimmed = id.trim();
        check_text("id", id, id_trimmed)?;
        Ok(ExternalId {
            system: system_key,
            id: id_trimmed.to_owned(),
        })
    }

    /// The other system's name.
    pub fn system(&self) -> &str {
        &self.system
    }

    /// The id in that system.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.system, self.id)
    }
}

/// Refuses what [`normalize::check_text`](crate::normalize) refuses in `raw` (over-long,
/// control, format or private-use characters), and an empty `cleaned` (the value to be stored).
fn check_text(field: &str, raw: &str, cleaned: &str) -> Result<()> {
    if cleaned.is_empty() {
        return Err(Error::invalid(field, raw, Reason::Empty));
    }
    normalize::check_text(raw, MAX_TEXT_LEN).map_err(|reason| Error::invalid(field, raw, reason))
}

/// The accepted value, or `None` once `sink` has taken the error of a refused one; `sink`
/// returning the error stops standardisation there (strict), keeping it goes on (lenient).
fn accept<T>(r: Result<T>, sink: &mut dyn FnMut(Error) -> Result<()>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => sink(e).map(|()| None),
    }
}

/// An optional free-text field, checked and cleaned by [`normalize::optional_text`]
/// (`None` when blank), then passed through [`accept`].
fn optional_text(
    field: &str,
    raw: Option<&str>,
    sink: &mut dyn FnMut(Error) -> Result<()>,
) -> Result<Option<String>> {
    let r = normalize::optional_text(raw)
        .map_err(|reason| Error::invalid(field, raw.unwrap_or_default(), reason));
    Ok(accept(r, sink)?.flatten())
}

/// A customer's data, standardised: what the host supplies and reads back.
///
/// Build one with [`Customer::builder`] from raw input, or change one read from the store and
/// write it back with [`crate::WriteTxn::update`]. The contact fields hold parsed types, so a
/// `Customer` always holds standardised values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// The person's name.
    pub name: Option<PersonName>,
    /// Email addresses; the first is the primary one.
    pub emails: Vec<Email>,
    /// Phone numbers; the first is the primary one.
    pub phones: Vec<Phone>,
    /// Postal addresses; the first is the primary one.
    pub addresses: Vec<Address>,
    /// Date of birth.
    #[serde(with = "super::wire::opt_date")]
    pub birth_date: Option<NaiveDate>,
    /// Gender, if recorded.
    pub gender: Option<Gender>,
    /// The organisation the person works for.
    pub organization: Option<String>,
    /// Their job title there.
    pub job_title: Option<String>,
    /// Labels.
    pub tags: BTreeSet<Tag>,
    /// Lifecycle stage.
    pub stage: Option<Stage>,
    /// The user or team responsible for the customer, case folded.
    pub owner: Option<String>,
    /// Where the customer came from (`web`, `import:2024-05`, ...).
    pub source: Option<String>,
    /// Identifiers in other systems. Each is unique across the store.
    pub external_ids: Vec<ExternalId>,
    /// Custom attributes, checked against the store's schema on write.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Every consent event, oldest first.
    pub consents: Vec<Consent>,
}

impl Customer {
    /// A builder that takes raw input and standardises it.
    pub fn builder() -> CustomerBuilder {
        CustomerBuilder::default()
    }

    /// The first email, if any.
    pub fn primary_email(&self) -> Option<&Email> {
        self.emails.first()
    }

    /// The first phone, if any.
    pub fn primary_phone(&self) -> Option<&Phone> {
        self.phones.first()
    }

    /// The first address, if any.
    pub fn primary_address(&self) -> Option<&Address> {
        self.addresses.first()
    }

    /// The consent event in force for `purpose` on `channel` at `at`: the latest one at or
    /// before `at`. An event for [`Channel::Any`] covers every channel.
    pub fn consent(&self, purpose: &str, channel: Channel, at: DateTime<Utc>) -> Option<&Consent> {
        let purpose = purpose.trim().to_lowercase();
        self.consents
            .iter()
            .filter(|c| {
                c.purpose == purpose
                    && (c.channel == channel || c.channel == Channel::Any)
                    && c.at <= at
            })
            .max_by_key(|c| c.at)
    }

    /// Whether consent for `purpose` on `channel` is granted at `at`.
    pub fn has_consent(&self, purpose: &str, channel: Channel, at: DateTime<Utc>) -> bool {
        self.consent(purpose, channel, at)
            .is_some_and(|c| c.status == ConsentStatus::Granted)
    }

    /// Drops repeated emails (same match key), phones (same E.164) and external ids, keeping the
    /// first of each, so one customer never claims a unique key twice.
    pub(crate) fn dedup_contacts(&mut self) {
        let mut seen = HashSet::new();
        self.emails
            .retain(|e| seen.insert(e.match_key().to_owned()));
        seen.clear();
        self.phones.retain(|p| seen.insert(p.e164().to_owned()));
        let mut seen_ids = HashSet::new();
        self.external_ids.retain(|x| seen_ids.insert(x.clone()));
    }
}

/// A customer as stored: its data plus what the store assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The id the store allocated.
    pub id: CustomerId,
    /// When the customer was inserted.
    #[serde(with = "super::wire::timestamp")]
    pub created_at: DateTime<Utc>,
    /// When the customer was last written.
    #[serde(with = "super::wire::timestamp")]
    pub updated_at: DateTime<Utc>,
    /// How many times the customer has been written: 1 after insert, +1 per update.
    pub revision: u64,
    /// The data.
    pub customer: Customer,
}

impl Record {
    /// Decodes a record from its stored form (see [`Record::to_stored_bytes`]).
    ///
    /// # Errors
    /// [`crate::ErrorKind::FormatVersion`] for bytes of another format version,
    /// [`crate::ErrorKind::Corrupted`] for anything else that does not decode. Never panics.
    pub fn from_stored_bytes(bytes: &[u8]) -> Result<Record> {
        crate::store::codec::decode(bytes, "customer record")
    }

    /// The record's stored form: a format-version byte, then postcard.
    pub fn to_stored_bytes(&self) -> Result<Vec<u8>> {
        crate::store::codec::encode(self)
    }
}

/// How a name was given to the builder.
#[derive(Debug, Clone)]
enum NameInput {
    Full(String),
    Parts(NameParts),
}

/// Collects raw customer data and standardises it into a [`Customer`].
///
/// Setters never fail; every check happens in [`CustomerBuilder::build`] (or when the builder is
/// passed to [`crate::WriteTxn::insert`], which also applies the store's default phone region).
///
/// ```
/// use customerdb::{Customer, Stage};
/// let c = Customer::builder()
///     .name("Dr. Ada Lovelace")
///     .email("Ada.Lovelace@Example.COM")
///     .phone("+44 20 7946 0018")
///     .tag("VIP")
///     .stage(Stage::Customer)
///     .build()?;
/// assert_eq!(c.name.as_ref().and_then(|n| n.family()), Some("Lovelace"));
/// assert_eq!(c.phones[0].e164(), "+442079460018");
/// assert_eq!(c.tags.iter().next().map(|t| t.as_str()), Some("vip"));
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct CustomerBuilder {
    name: Option<NameInput>,
    emails: Vec<String>,
    phones: Vec<(String, Option<PhoneKind>)>,
    phone_region: Option<String>,
    addresses: Vec<AddressParts>,
    birth_date: Option<NaiveDate>,
    gender: Option<String>,
    organization: Option<String>,
    job_title: Option<String>,
    tags: Vec<String>,
    stage: Option<Stage>,
    owner: Option<String>,
    source: Option<String>,
    external_ids: Vec<(String, String)>,
    attributes: Vec<(String, AttributeValue)>,
    consents: Vec<Consent>,
}

impl CustomerBuilder {
    /// The full name as one string, split into parts by [`PersonName::parse`].
    pub fn name(mut self, full: impl Into<String>) -> Self {
        self.name = Some(NameInput::Full(full.into()));
        self
    }

    /// The name as parts.
    pub fn name_parts(mut self, parts: NameParts) -> Self {
        self.name = Some(NameInput::Parts(parts));
        self
    }

    fn with_parts(mut self, f: impl FnOnce(&mut NameParts)) -> Self {
        let mut parts = match self.name.take() {
            Some(NameInput::Parts(p)) => p,
            _ => NameParts::default(),
        };
        f(&mut parts);
        self.name = Some(NameInput::Parts(parts));
        self
    }

    /// The given (first) name. Replaces a full name set with [`CustomerBuilder::name`].
    pub fn given_name(self, given: impl Into<String>) -> Self {
        let given = given.into();
        self.with_parts(|p| p.given = Some(given))
    }

    /// The family (last) name. Replaces a full name set with [`CustomerBuilder::name`].
    pub fn family_name(self, family: impl Into<String>) -> Self {
        let family = family.into();
        self.with_parts(|p| p.family = Some(family))
    }

    /// Adds an email address; the first one added is the primary.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.emails.push(email.into());
        self
    }

    /// Adds a phone number; its kind is inferred from the number.
    pub fn phone(mut self, phone: impl Into<String>) -> Self {
        self.phones.push((phone.into(), None));
        self
    }

    /// Adds a phone number of a given kind.
    pub fn phone_with_kind(mut self, phone: impl Into<String>, kind: PhoneKind) -> Self {
        self.phones.push((phone.into(), Some(kind)));
        self
    }

    /// The region (ISO 3166-1 alpha-2) for phone numbers given in national form. Without it the
    /// first address's country is used, then the store's default region.
    pub fn phone_region(mut self, region: impl Into<String>) -> Self {
        self.phone_region = Some(region.into());
        self
    }

    /// Adds a postal address; the first one added is the primary.
    pub fn address(mut self, parts: AddressParts) -> Self {
        self.addresses.push(parts);
        self
    }

    /// The date of birth.
    pub fn birth_date(mut self, date: NaiveDate) -> Self {
        self.birth_date = Some(date);
        self
    }

    /// Gender, read by [`Gender::parse`].
    pub fn gender(mut self, gender: impl Into<String>) -> Self {
        self.gender = Some(gender.into());
        self
    }

    /// The organisation the person works for.
    pub fn organization(mut self, org: impl Into<String>) -> Self {
        self.organization = Some(org.into());
        self
    }

    /// Their job title.
    pub fn job_title(mut self, title: impl Into<String>) -> Self {
        self.job_title = Some(title.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The lifecycle stage.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.stage = Some(stage);
        self
    }

    /// The responsible user or team.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Where the customer came from.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds an id in another system.
    pub fn external_id(mut self, system: impl Into<String>, id: impl Into<String>) -> Self {
        self.external_ids.push((system.into(), id.into()));
        self
    }

    /// Sets a custom attribute; its name and type are checked against the store's schema on write.
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Adds a consent event.
    pub fn consent(mut self, consent: Consent) -> Self {
        self.consents.push(consent);
        self
    }

    /// Standardises everything, stopping at the first refused value.
    ///
    /// National phone numbers need a region: [`CustomerBuilder::phone_region`] or the first
    /// address's country.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] naming the first refused field, its value and the reason.
    pub fn build(self) -> Result<Customer> {
        self.build_with_region(None)
    }

    /// Standardises what is valid and returns the refused values' errors beside the customer,
    /// for imports that store what they can.
    pub fn build_lenient(self) -> (Customer, Vec<Error>) {
        self.build_lenient_with_region(None)
    }

    pub(crate) fn build_lenient_with_region(
        self,
        default_region: Option<CountryCode>,
    ) -> (Customer, Vec<Error>) {
        let mut errors = Vec::new();
        let customer = self.standardise(default_region, &mut |e| {
            errors.push(e);
            Ok(())
        });
        // The sink never fails, so neither does standardise.
        (customer.unwrap_or_default(), errors)
    }

    pub(crate) fn build_with_region(self, default_region: Option<CountryCode>) -> Result<Customer> {
        self.standardise(default_region, &mut Err)
    }

    /// Standardises every field, handing each refused value's error to `sink`; a sink that
    /// returns the error stops at once (strict), one that keeps it goes on (lenient).
    fn standardise(
        self,
        default_region: Option<CountryCode>,
        sink: &mut dyn FnMut(Error) -> Result<()>,
    ) -> Result<Customer> {
        let mut c = Customer::default();
        if let Some(name) = self.name {
            c.name = accept(
                match name {
                    NameInput::Full(s) => PersonName::parse(&s),
                    NameInput::Parts(p) => PersonName::from_parts(p),
                },
                sink,
            )?;
        }
        for (i, raw) in self.emails.iter().enumerate() {
            let r = Email::parse(raw).map_err(|e| e.within("email", &format!("emails[{i}]")));
            c.emails.extend(accept(r, sink)?);
        }
        for (i, parts) in self.addresses.into_iter().enumerate() {
            let r =
                Address::parse(parts).map_err(|e| e.within("address", &format!("addresses[{i}]")));
            c.addresses.extend(accept(r, sink)?);
        }
        // National numbers are read with the most specific region known.
        let mut region = c
            .addresses
            .iter()
            .find_map(Address::country)
            .or(default_region);
        if let Some(raw) = &self.phone_region {
            let r = CountryCode::parse(raw).map_err(|e| e.within("country", "phone_region"));
            region = accept(r, sink)?.or(region);
        }
        for (i, (raw, kind)) in self.phones.iter().enumerate() {
            let r =
                Phone::parse(raw, region).map_err(|e| e.within("phone", &format!("phones[{i}]")));
            if let Some(p) = accept(r, sink)? {
                c.phones.push(match kind {
                    Some(k) => p.with_kind(*k),
                    None => p,
                });
            }
        }
        c.birth_date = self.birth_date;
        c.gender = self.gender.as_deref().map(Gender::parse);
        c.organization = optional_text("organization", self.organization.as_deref(), sink)?;
        c.job_title = optional_text("job_title", self.job_title.as_deref(), sink)?;
        c.source = optional_text("source", self.source.as_deref(), sink)?;
        c.owner = optional_text("owner", self.owner.as_deref(), sink)?.map(|o| fold_key(&o));
        for (i, raw) in self.tags.iter().enumerate() {
            let r = Tag::parse(raw).map_err(|e| e.within("tag", &format!("tags[{i}]")));
            c.tags.extend(accept(r, sink)?);
        }
        c.stage = self.stage;
        for (i, (system, id)) in self.external_ids.iter().enumerate() {
            let r =
                ExternalId::new(system, id).map_err(|e| e.in_field(&format!("external_ids[{i}]")));
            c.external_ids.extend(accept(r, sink)?);
        }
        for (name, value) in self.attributes {
            if super::attribute::is_valid_name(&name) {
                c.attributes.insert(name, value);
            } else {
                sink(Error::invalid("attributes", name, Reason::Malformed))?;
            }
        }
        c.consents = self.consents;
        c.consents.sort_by_key(|k| k.at);
        c.dedup_contacts();
        Ok(c)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Customer {}
    impl Sealed for super::CustomerBuilder {}
}

/// What [`crate::WriteTxn::insert`] and [`crate::WriteTxn::update`] accept: a [`Customer`]
/// (already standardised) or a [`CustomerBuilder`] (standardised with the store's default
/// phone region).
pub trait IntoCustomer: sealed::Sealed {
    /// Standardises into a customer; `default_region` applies to national phone numbers.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Invalid`] if a value is refused.
    fn into_customer(self, default_region: Option<CountryCode>) -> Result<Customer>;
}

impl IntoCustomer for Customer {
    fn into_customer(mut self, _default_region: Option<CountryCode>) -> Result<Customer> {
        self.dedup_contacts();
        Ok(self)
    }
}

impl IntoCustomer for CustomerBuilder {
    fn into_customer(self, default_region: Option<CountryCode>) -> Result<Customer> {
        self.build_with_region(default_region)
    }
}
