//! Consent: each grant or withdrawal is a new event with its evidence, appended to the
//! customer's consent history and never replacing an earlier one; whether consent holds at a
//! time is decided by the latest event at or before it.
//!
//! The events live in the record (`Customer::consents`), so a consent change is a record write:
//! it is in history like any other, it takes effect for reads in the same transaction, and the
//! segmentation filter `consent(channel, purpose)` evaluates the same events with the same
//! rule ([`Customer::has_consent`]).

use chrono::{DateTime, Utc};

use super::history::Operation;
use super::read::Backend;
use super::write::WriteTxn;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Channel, Consent, Customer, CustomerId, Record};
use crate::normalize::Reason;

/// The customer `id` stands for (following a merge), or `NotFound`.
fn record_of(b: &impl Backend, id: CustomerId) -> Result<Record> {
    super::read::get(b, id)?.ok_or(Error::new(ErrorKind::NotFound(id)))
}

/// Whether customer `id` has granted consent for `purpose` on `channel` at `at`, from its full
/// consent history.
pub(crate) fn has_consent(
    b: &impl Backend,
    id: CustomerId,
    purpose: &str,
    channel: Channel,
    at: DateTime<Utc>,
) -> Result<bool> {
    Ok(record_of(b, id)?.customer.has_consent(purpose, channel, at))
}

/// Every consent event of customer `id`, oldest first.
pub(crate) fn consent_history(b: &impl Backend, id: CustomerId) -> Result<Vec<Consent>> {
    Ok(record_of(b, id)?.customer.consents)
}

/// Checks and standardises a consent event: a purpose and a method (the "how") are required,
/// text fields are cleaned like every other stored text.
fn standardise(mut c: Consent) -> Result<Consent> {
    let required = |field: &str, v: &str| -> Result<String> {
        crate::normalize::optional_text(Some(v))
            .map_err(|r| Error::invalid(field, v, r))?
            .ok_or_else(|| Error::invalid(field, v, Reason::Empty))
    };
    let optional = |field: &str, v: Option<&str>| -> Result<Option<String>> {
        crate::normalize::optional_text(v).map_err(|r| Error::invalid(field, v.unwrap_or(""), r))
    };
    c.purpose = required("consent.purpose", &c.purpose)?.to_lowercase();
    c.method = required("consent.method", &c.method)?;
    c.source = optional("consent.source", c.source.as_deref())?;
    c.policy_version = optional("consent.policy_version", c.policy_version.as_deref())?;
    Ok(c)
}

/// `new`'s consent events with every event of `old` kept: consent evidence is append-only, so
/// an update that leaves events out (a sync job that does not know about consent) cannot drop
/// them. Ordered by time; of events at the same instant, the one recorded later comes later
/// and so is the one in force.
pub(crate) fn keep_history(old: &Customer, new: &mut Customer) {
    if old.consents.is_empty() || new.consents.starts_with(&old.consents) {
        return;
    }
    let mut merged = old.consents.clone();
    let mut taken = vec![false; merged.len()];
    for c in new.consents.drain(..) {
        // An event already held is the same event, not a repeat of it.
        let held = merged
            .iter()
            .zip(taken.iter_mut())
            .find(|(m, t)| !**t && **m == c);
        match held {
            Some((_, t)) => *t = true,
            None => merged.push(c),
        }
    }
    merged.sort_by_key(|c| c.at);
    new.consents = merged;
}

impl WriteTxn {
    /// Records a consent event (a grant or a withdrawal, with when, how, source and policy
    /// version) for customer `id`, appending it to the customer's consent history. It takes
    /// effect at once, for reads in this transaction too: [`crate::Read::has_consent`] and a
    /// query's `consent(channel, purpose)` filter see it. The change is in history as an
    /// update of `consents`.
    ///
    /// ```
    /// use chrono::{Duration, Utc};
    /// use customerdb::{Channel, Consent, ConsentStatus, Customer, Read, Store};
    /// let store = Store::in_memory()?;
    /// let mut tx = store.begin_write()?;
    /// let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    /// let granted = Utc::now() - Duration::days(30);
    /// tx.record_consent(ada, Consent::new("marketing", Channel::Email, ConsentStatus::Granted, granted, "web_form"))?;
    /// assert!(tx.has_consent(ada, "marketing", Channel::Email, Utc::now())?);
    /// tx.record_consent(ada, Consent::new("marketing", Channel::Email, ConsentStatus::Withdrawn, Utc::now(), "call"))?;
    /// assert!(!tx.has_consent(ada, "marketing", Channel::Email, Utc::now())?); // same transaction
    /// assert!(tx.has_consent(ada, "marketing", Channel::Email, granted)?);     // as it was then
    /// assert_eq!(tx.consent_history(ada)?.len(), 2);
    /// # Ok::<(), customerdb::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such customer; [`ErrorKind::Invalid`] for an
    /// empty purpose or method, or text the store refuses.
    pub fn record_consent(&mut self, id: CustomerId, consent: Consent) -> Result<Record> {
        let consent = standardise(consent)?;
        let rec = record_of(self, id)?;
        let mut customer = rec.customer;
        customer.consents.push(consent);
        // Stable: an event at the same instant as an earlier one comes after it, so it wins.
        customer.consents.sort_by_key(|c| c.at);
        self.update_as(rec.id, customer, Operation::Update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConsentStatus;
    use chrono::TimeZone;

    fn event(day: u32, status: ConsentStatus) -> Consent {
        let at = Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap();
        Consent::new("marketing", Channel::Email, status, at, "form")
    }

    fn with(consents: Vec<Consent>) -> Customer {
        Customer {
            consents,
            ..Customer::default()
        }
    }

    #[test]
    fn an_update_without_consents_keeps_every_event() {
        let old = with(vec![
            event(1, ConsentStatus::Granted),
            event(3, ConsentStatus::Withdrawn),
        ]);
        let mut new = with(vec![event(2, ConsentStatus::Granted)]);
        keep_history(&old, &mut new);
        let days: Vec<_> = new
            .consents
            .iter()
            .map(|c| c.at.format("%d").to_string())
            .collect();
        assert_eq!(days, ["01", "02", "03"]);
        let mut same = old.clone();
        keep_history(&old, &mut same);
        assert_eq!(same.consents, old.consents);
    }

    #[test]
    fn repeated_events_are_kept_once_each() {
        let old = with(vec![event(1, ConsentStatus::Granted)]);
        let mut new = with(vec![
            event(1, ConsentStatus::Granted),
            event(1, ConsentStatus::Granted),
        ]);
        keep_history(&old, &mut new);
        assert_eq!(new.consents.len(), 2);
    }

    #[test]
    fn standardise_requires_purpose_and_method() {
        let mut c = event(1, ConsentStatus::Granted);
        c.method = "  ".into();
        assert!(matches!(
            standardise(c).unwrap_err().kind(),
            ErrorKind::Invalid { field, .. } if field == "consent.method"
        ));
        let mut c = event(1, ConsentStatus::Granted);
        c.purpose = " Marketing ".into();
        assert_eq!(standardise(c).unwrap().purpose, "marketing");
    }
}
