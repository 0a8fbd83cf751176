//! Roles with field-level allow-lists, and a transaction viewed through one.
//!
//! A view never answers a question about a part the role may not see: reading records hides
//! those parts, and a query that filters, sorts, groups or measures on one is refused with
//! [`ErrorKind::Forbidden`] before it runs (a filter on a hidden field answered with an empty
//! set would look like "nobody matches", which is a lie, and its count would leak the field).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{ActivityRecord, Channel, Consent, Customer, CustomerId, Metrics, Record};
use crate::query::{Field, Filter, Group, Histogram, Page, Query, Source, Summary};
use crate::store::{ActivityQuery, Change, ReadTxn, Store, WriteTxn};

/// A part of what the store holds on a customer, as a role's allow-list names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The name (given, family, whole).
    Name,
    /// Email addresses.
    Emails,
    /// Phone numbers.
    Phones,
    /// Postal addresses (and so country, locality, postcode).
    Addresses,
    /// Date of birth.
    BirthDate,
    /// Gender.
    Gender,
    /// Organisation and job title.
    Organization,
    /// Tags.
    Tags,
    /// Lifecycle stage.
    Stage,
    /// The responsible owner.
    Owner,
    /// Where the customer came from.
    Source,
    /// Ids in other systems.
    ExternalIds,
    /// Custom attributes.
    Attributes,
    /// Consent events.
    Consents,
    /// Derived metrics (orders, spend, recency).
    Metrics,
    /// The activity timeline (purchases, tickets, interactions, notes).
    Activities,
    /// The history of changes.
    History,
}

impl Part {
    /// The part's name, as in [`ErrorKind::Forbidden`] (`phones`, `birth_date`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Name => "name",
            Part::Emails => "emails",
            Part::Phones => "phones",
            Part::Addresses => "addresses",
            Part::BirthDate => "birth_date",
            Part::Gender => "gender",
            Part::Organization => "organization",
            Part::Tags => "tags",
            Part::Stage => "stage",
            Part::Owner => "owner",
            Part::Source => "source",
            Part::ExternalIds => "external_ids",
            Part::Attributes => "attributes",
            Part::Consents => "consents",
            Part::Metrics => "metrics",
            Part::Activities => "activities",
            Part::History => "history",
        }
    }

    /// The part a query field reads (`None`: record metadata every role sees).
    pub fn of_field(field: &Field) -> Option<Part> {
        Some(match field {
            Field::Name | Field::GivenName | Field::FamilyName => Part::Name,
            Field::Email => Part::Emails,
            Field::Phone => Part::Phones,
            Field::Country | Field::Locality | Field::Postcode => Part::Addresses,
            Field::Stage => Part::Stage,
            Field::Owner => Part::Owner,
            Field::Source => Part::Source,
            Field::Organization | Field::JobTitle => Part::Organization,
            Field::Gender => Part::Gender,
            Field::Tag => Part::Tags,
            Field::BirthDate => Part::BirthDate,
            Field::CreatedAt | Field::UpdatedAt => return None,
            Field::OrderCount
            | Field::TotalSpend
            | Field::FirstPurchase
            | Field::LastPurchase
            | Field::LastInteraction
            | Field::OpenTickets
            | Field::RecencyDays => Part::Metrics,
            Field::Attribute(_) => Part::Attributes,
        })
    }

    /// The part a history field (`emails`, `attributes.score`, `activity`) belongs to.
    fn of_history_field(field: &str) -> Option<Part> {
        let top = field.split('.').next().unwrap_or(field);
        Some(match top {
            "name" => Part::Name,
            "emails" => Part::Emails,
            "phones" => Part::Phones,
            "addresses" => Part::Addresses,
            "birth_date" => Part::BirthDate,
            "gender" => Part::Gender,
            "organization" | "job_title" => Part::Organization,
            "tags" => Part::Tags,
            "stage" => Part::Stage,
            "owner" => Part::Owner,
            "source" => Part::Source,
            "external_ids" => Part::ExternalIds,
            "attributes" | "attribute" => Part::Attributes,
            "consents" => Part::Consents,
            "activity" => Part::Activities,
            _ => return None,
        })
    }
}

/// What segmentation filters on, apart from identity: the marketing and analyst presets'.
const SEGMENT_PARTS: [Part; 7] = [
    Part::Addresses,
    Part::Tags,
    Part::Stage,
    Part::Source,
    Part::Attributes,
    Part::Consents,
    Part::Metrics,
];

/// A role: a name and what it may see.
///
/// ```
/// use customerdb::privacy::{Part, Role};
/// let billing = Role::new("billing").allow([Part::Name, Part::Emails, Part::Metrics]);
/// assert!(billing.may_see(Part::Emails) && !billing.may_see(Part::Phones));
/// assert!(!Role::marketing().may_see(Part::Phones));
/// assert!(!Role::analyst().may_read_records());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    name: String,
    parts: BTreeSet<Part>,
    records: bool,
}

impl Role {
    /// A role that may read records but sees no part of them until [`Role::allow`]ed.
    pub fn new(name: impl Into<String>) -> Role {
        Role {
            name: name.into(),
            parts: BTreeSet::new(),
            records: true,
        }
    }

    /// Support: names, emails and the timeline (tickets, interactions).
    pub fn support() -> Role {
        Role::new("support").allow([Part::Name, Part::Emails, Part::Activities])
    }

    /// Marketing: what segments use and consent, with names and emails to reach people, but
    /// no phones, birth dates or timelines.
    pub fn marketing() -> Role {
        Role::new("marketing")
            .allow(SEGMENT_PARTS)
            .allow([Part::Name, Part::Emails])
    }

    /// Analyst: counts and aggregates over what segments use; no record, no timeline.
    pub fn analyst() -> Role {
        Role::new("analyst").allow(SEGMENT_PARTS).aggregates_only()
    }

    /// Also allows `parts`.
    #[must_use]
    pub fn allow(mut self, parts: impl IntoIterator<Item = Part>) -> Role {
        self.parts.extend(parts);
        self
    }

    /// Allows counts and aggregates only: no record, activity or history is returned.
    #[must_use]
    pub fn aggregates_only(mut self) -> Role {
        self.records = false;
        self
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the role may see `part`.
    pub fn may_see(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    /// Whether the role may read records at all (not only aggregates).
    pub fn may_read_records(&self) -> bool {
        self.records
    }

    fn forbidden(&self, what: &str) -> Error {
        Error::from(ErrorKind::Forbidden {
            role: self.name.clone(),
            field: what.to_owned(),
        })
    }

    fn require(&self, part: Part) -> Result<()> {
        if self.may_see(part) {
            Ok(())
        } else {
            Err(self.forbidden(part.as_str()))
        }
    }

    fn require_records(&self) -> Result<()> {
        if self.records {
            Ok(())
        } else {
            Err(self.forbidden("records"))
        }
    }

    fn require_field(&self, field: &Field) -> Result<()> {
        match Part::of_field(field) {
            Some(p) => self.require(p),
            None => Ok(()),
        }
    }

    fn require_filter(&self, filter: &Filter) -> Result<()> {
        match filter {
            Filter::Const(_) => Ok(()),
            Filter::And(v) | Filter::Or(v) => v.iter().try_for_each(|f| self.require_filter(f)),
            Filter::Not(f) => self.require_filter(f),
            Filter::Test { field, .. } => self.require_field(field),
            Filter::Consent { .. } => self.require(Part::Consents),
        }
    }

    fn require_query(&self, q: &Query) -> Result<()> {
        self.require_filter(q.filter_ref())?;
        q.sort_field().map_or(Ok(()), |f| self.require_field(f))
    }

    /// `rec` with every part the role may not see cleared.
    pub fn redact(&self, mut rec: Record) -> Record {
        fn kept<T: Default>(see: bool, v: T) -> T {
            if see { v } else { T::default() }
        }
        let see = |p| self.may_see(p);
        let c = std::mem::take(&mut rec.customer);
        // A struct literal, not field-by-field clearing: a field added to `Customer` fails to
        // compile here until it is given a part, so it can never leak past a role unnoticed.
        rec.customer = Customer {
            name: kept(see(Part::Name), c.name),
            emails: kept(see(Part::Emails), c.emails),
            phones: kept(see(Part::Phones), c.phones),
            addresses: kept(see(Part::Addresses), c.addresses),
            birth_date: kept(see(Part::BirthDate), c.birth_date),
            gender: kept(see(Part::Gender), c.gender),
            organization: kept(see(Part::Organization), c.organization),
            job_title: kept(see(Part::Organization), c.job_title),
            tags: kept(see(Part::Tags), c.tags),
            stage: kept(see(Part::Stage), c.stage),
            owner: kept(see(Part::Owner), c.owner),
            source: kept(see(Part::Source), c.source),
            external_ids: kept(see(Part::ExternalIds), c.external_ids),
            attributes: kept(see(Part::Attributes), c.attributes),
            consents: kept(see(Part::Consents), c.consents),
        };
        rec
    }

    /// `change` with the fields of hidden parts left out.
    fn redact_change(&self, mut change: Change) -> Change {
        change
            .fields
            .retain(|f| Part::of_history_field(&f.field).is_none_or(|p| self.may_see(p)));
        change
    }

    /// The actor name recorded in history for `actor` acting in this role: `"ana (support)"`.
    pub fn actor(&self, actor: &str) -> String {
        format!("{actor} ({})", self.name)
    }
}

/// A transaction seen through a [`Role`]: hidden parts are redacted from what it returns, and
/// questions about them are refused with [`ErrorKind::Forbidden`].
///
/// ```
/// use customerdb::privacy::Role;
/// use customerdb::query::{Field, Query};
/// use customerdb::{Customer, ErrorKind, Store};
/// let store = Store::in_memory()?;
/// let mut tx = store.begin_write()?;
/// let ada = tx.insert(Customer::builder().name("Ada Lovelace").email("ada@example.com").phone("+44 20 7946 0018"))?;
/// tx.commit()?;
/// let tx = store.begin_read()?;
/// let marketing = Role::marketing();
/// let view = tx.as_role(&marketing);
/// let seen = view.get(ada)?.expect("stored");
/// assert!(seen.customer.phones.is_empty() && !seen.customer.emails.is_empty());
/// let err = view.count(&Query::filter(Field::Phone.eq("+44 20 7946 0018"))).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::Forbidden { field, .. } if field == "phones"));
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug)]
pub struct RoleView<'t, S: Source + ?Sized> {
    tx: &'t S,
    role: &'t Role,
}

impl ReadTxn {
    /// This snapshot seen through `role` (see [`RoleView`]).
    pub fn as_role<'t>(&'t self, role: &'t Role) -> RoleView<'t, ReadTxn> {
        RoleView { tx: self, role }
    }
}

impl WriteTxn {
    /// This transaction's reads seen through `role` (see [`RoleView`]).
    pub fn as_role<'t>(&'t self, role: &'t Role) -> RoleView<'t, WriteTxn> {
        RoleView { tx: self, role }
    }
}

impl Store {
    /// Begins the write transaction on behalf of `actor` acting in `role`: history records
    /// the changes as made by `"actor (role)"`, and so does the access log.
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] if the name is empty, too long or holds control characters.
    pub fn begin_write_in_role(&self, actor: &str, role: &Role) -> Result<WriteTxn> {
        self.begin_write_as(&role.actor(actor))
    }
}

impl<'t> RoleView<'t, ReadTxn> {
    /// Every customer the role may read, redacted, in id order.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] for a role without records.
    pub fn customers(&self) -> Result<impl Iterator<Item = Result<Record>> + 't> {
        self.role.require_records()?;
        let role = self.role;
        Ok(self.tx.customers()?.map(move |r| r.map(|r| role.redact(r))))
    }
}

impl<S: Source + ?Sized> RoleView<'_, S> {
    /// The role.
    pub fn role(&self) -> &Role {
        self.role
    }

    /// The customer with this id, redacted.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] for a role without records.
    pub fn get(&self, id: CustomerId) -> Result<Option<Record>> {
        self.role.require_records()?;
        Ok(self.tx.get(id)?.map(|r| self.role.redact(r)))
    }

    /// The customer with this email, redacted.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see emails and records.
    pub fn find_by_email(&self, email: &str) -> Result<Option<Record>> {
        self.role.require(Part::Emails)?;
        self.role.require_records()?;
        Ok(self.tx.find_by_email(email)?.map(|r| self.role.redact(r)))
    }

    /// The customers with this phone, redacted.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see phones and records.
    pub fn find_by_phone(&self, phone: &str) -> Result<Vec<Record>> {
        self.role.require(Part::Phones)?;
        self.role.require_records()?;
        Ok(self
            .tx
            .find_by_phone(phone)?
            .into_iter()
            .map(|r| self.role.redact(r))
            .collect())
    }

    /// The customers `query` finds, redacted, in query order.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the query filters or sorts on a hidden field, or the role
    /// has no records; otherwise as [`Query::run`].
    pub fn query(&self, query: &Query) -> Result<Vec<Record>> {
        self.role.require_query(query)?;
        self.role.require_records()?;
        query
            .run(self.tx)?
            .map(|r| r.map(|r| self.role.redact(r)))
            .collect()
    }

    /// One page of `query`, redacted.
    ///
    /// # Errors
    /// As [`RoleView::query`].
    pub fn page(&self, query: &Query) -> Result<Page> {
        self.role.require_query(query)?;
        self.role.require_records()?;
        let mut page = query.page(self.tx)?;
        page.records = page
            .records
            .into_iter()
            .map(|r| self.role.redact(r))
            .collect();
        Ok(page)
    }

    /// How many customers `query` finds (allowed to aggregate-only roles).
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the query filters on a hidden field.
    pub fn count(&self, query: &Query) -> Result<u64> {
        self.role.require_query(query)?;
        query.count(self.tx)
    }

    /// [`Query::summary`] of `field` over what `query` finds.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the query or `field` is hidden.
    pub fn summary(&self, query: &Query, field: &Field) -> Result<Summary> {
        self.role.require_query(query)?;
        self.role.require_field(field)?;
        query.summary(self.tx, field)
    }

    /// [`Query::group_by`] over what `query` finds.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the query, `by` or `measure` is hidden.
    pub fn group_by(
        &self,
        query: &Query,
        by: &Field,
        measure: Option<&Field>,
    ) -> Result<Vec<Group>> {
        self.role.require_query(query)?;
        self.role.require_field(by)?;
        if let Some(m) = measure {
            self.role.require_field(m)?;
        }
        query.group_by(self.tx, by, measure)
    }

    /// [`Query::histogram`] of `field` over what `query` finds.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] if the query or `field` is hidden.
    pub fn histogram(&self, query: &Query, field: &Field, edges: &[Decimal]) -> Result<Histogram> {
        self.role.require_query(query)?;
        self.role.require_field(field)?;
        query.histogram(self.tx, field, edges)
    }

    /// A customer's activities.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see activities and records.
    pub fn timeline(&self, id: CustomerId, query: &ActivityQuery) -> Result<Vec<ActivityRecord>> {
        self.role.require(Part::Activities)?;
        self.role.require_records()?;
        self.tx.timeline(id, query)
    }

    /// A customer's metrics.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see metrics and records.
    pub fn metrics(&self, id: CustomerId) -> Result<Metrics> {
        self.role.require(Part::Metrics)?;
        self.role.require_records()?;
        self.tx.metrics(id)
    }

    /// A customer's history, with the fields of hidden parts left out of each change.
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see history and records.
    pub fn history(
        &self,
        id: CustomerId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>> {
        self.role.require(Part::History)?;
        self.role.require_records()?;
        Ok(self
            .tx
            .history(id, before, limit)?
            .into_iter()
            .map(|c| self.role.redact_change(c))
            .collect())
    }

    /// [`crate::Read::has_consent`].
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see consent.
    pub fn has_consent(
        &self,
        id: CustomerId,
        purpose: &str,
        channel: Channel,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        self.role.require(Part::Consents)?;
        self.tx.has_consent(id, purpose, channel, at)
    }

    /// [`crate::Read::consent_history`].
    ///
    /// # Errors
    /// [`ErrorKind::Forbidden`] unless the role may see consent and records.
    pub fn consent_history(&self, id: CustomerId) -> Result<Vec<Consent>> {
        self.role.require(Part::Consents)?;
        self.role.require_records()?;
        self.tx.consent_history(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_maps_to_a_part_the_presets_agree_with() {
        for f in Field::BUILTIN {
            let part = Part::of_field(&f);
            if matches!(f, Field::Phone | Field::BirthDate) {
                assert!(part.is_some_and(|p| !Role::marketing().may_see(p)), "{f:?}");
            }
        }
        assert_eq!(
            Part::of_history_field("attributes.score"),
            Some(Part::Attributes)
        );
        assert_eq!(Part::of_history_field("activity"), Some(Part::Activities));
    }

    #[test]
    fn filters_are_checked_all_the_way_down() {
        let f = Field::Tag.eq("vip") & !(Field::Stage.eq("lead") | Field::Phone.is_set());
        let err = Role::marketing().require_filter(&f).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Forbidden { field, .. } if field == "phones"));
        assert!(
            Role::analyst()
                .require_filter(&(Field::Tag.eq("vip")))
                .is_ok()
        );
        let err = Role::support()
            .require_filter(&Filter::consent(Channel::Email, "marketing"))
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Forbidden { field, .. } if field == "consents"));
    }
}
