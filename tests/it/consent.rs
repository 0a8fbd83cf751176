//! Guards consent: every grant and withdrawal is kept with its evidence, a withdrawal counts in
//! the transaction that records it, an update cannot drop consent history, and the
//! segmentation filter `consent(channel, purpose)` agrees with `has_consent` at every time.

use chrono::{Duration, TimeZone, Utc};
use customerdb::query::{Filter, Query};
use customerdb::sample::SplitMix64;
use customerdb::{
    Channel, Consent, ConsentStatus, Customer, CustomerId, ErrorKind, Operation, Read, Result,
    Store,
};

fn day(d: i64) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap() + Duration::days(d)
}

fn event(purpose: &str, channel: Channel, status: ConsentStatus, d: i64) -> Consent {
    let mut c = Consent::new(purpose, channel, status, day(d), "web_form");
    c.source = Some("shop".into());
    c.policy_version = Some("2026-01".into());
    c
}

#[test]
fn a_withdrawal_counts_in_its_own_transaction_and_history_keeps_every_event() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write_as("crm")?;
    let ada = tx.insert(
        Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com"),
    )?;
    tx.record_consent(
        ada,
        event("Marketing", Channel::Email, ConsentStatus::Granted, 1),
    )?;
    tx.commit()?;

    let mut tx = store.begin_write_as("support")?;
    assert!(tx.has_consent(ada, "marketing", Channel::Email, day(5))?);
    tx.record_consent(
        ada,
        event("marketing", Channel::Email, ConsentStatus::Withdrawn, 5),
    )?;
    assert!(
        !tx.has_consent(ada, "marketing", Channel::Email, day(5))?,
        "withdrawn at once"
    );
    let q = Query::filter(Filter::consent(Channel::Email, "marketing")).at(day(6));
    assert!(q.ids(&tx)?.is_empty(), "segmentation sees it too");
    // Before the withdrawal it was granted; before the grant there was none.
    assert!(tx.has_consent(ada, "marketing", Channel::Email, day(4))?);
    assert!(!tx.has_consent(ada, "marketing", Channel::Email, day(0))?);
    tx.commit()?;

    // An update that knows nothing of consent cannot drop the evidence.
    let mut tx = store.begin_write()?;
    let mut c = tx.get(ada)?.unwrap().customer;
    c.consents.clear();
    c.job_title = Some("Analyst".into());
    tx.update(ada, c)?;
    tx.commit()?;

    let tx = store.begin_read()?;
    let history = tx.consent_history(ada)?;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].status, ConsentStatus::Granted);
    assert_eq!(history[1].status, ConsentStatus::Withdrawn);
    assert_eq!(history[1].method, "web_form");
    assert_eq!(history[1].source.as_deref(), Some("shop"));
    assert_eq!(history[1].policy_version.as_deref(), Some("2026-01"));
    assert!(!tx.has_consent(ada, "marketing", Channel::Email, day(9))?);
    // Each change is in the audit trail, under who made it.
    let changes = tx.history(ada, None, 10)?;
    let consent_changes: Vec<_> = changes
        .iter()
        .filter(|c| c.fields.iter().any(|f| f.field == "consents"))
        .collect();
    assert_eq!(consent_changes.len(), 2);
    assert_eq!(consent_changes[0].actor.as_deref(), Some("support"));
    assert_eq!(consent_changes[0].operation, Operation::Update);
    Ok(())
}

#[test]
fn consent_needs_a_customer_and_evidence() -> Result<()> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let ada = tx.insert(Customer::builder().name("Ada Lovelace"))?;
    let nobody = CustomerId::from_u64(999);
    let err = tx
        .record_consent(
            nobody,
            event("marketing", Channel::Sms, ConsentStatus::Granted, 1),
        )
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotFound(nobody));
    assert!(matches!(
        tx.has_consent(nobody, "marketing", Channel::Sms, day(1))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound(_)
    ));
    let mut no_how = event("marketing", Channel::Sms, ConsentStatus::Granted, 1);
    no_how.method = String::new();
    let err = tx.record_consent(ada, no_how).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Invalid { field, .. } if field == "consent.method"));
    assert!(tx.consent_history(ada)?.is_empty(), "nothing was written");
    Ok(())
}

#[test]
fn query_filter_and_has_consent_agree_at_every_time() -> Result<()> {
    let store = Store::in_memory()?;
    let mut rng = SplitMix64::new(0xC0_5E27);
    let purposes = ["marketing", "profiling"];
    let channels = [Channel::Email, Channel::Sms, Channel::Post, Channel::Any];
    let mut tx = store.begin_write()?;
    let mut ids = Vec::new();
    for i in 0..150 {
        let id = tx.insert(Customer::builder().name(format!("Person {i}")))?;
        for _ in 0..rng.below(6) {
            let status = if rng.below(2) == 0 {
                ConsentStatus::Granted
            } else {
                ConsentStatus::Withdrawn
            };
            let purpose = purposes[rng.below(2) as usize];
            let channel = channels[rng.below(4) as usize];
            // Few distinct days, so events often share an instant: the later one must win.
            tx.record_consent(
                id,
                event(purpose, channel, status, rng.below(8).cast_signed()),
            )?;
        }
        ids.push(id);
    }
    tx.commit()?;

    let tx = store.begin_read()?;
    let mut checked = 0;
    for d in -1..9 {
        for purpose in purposes {
            for channel in [Channel::Email, Channel::Sms, Channel::Post] {
                let at = day(d) + Duration::hours(1);
                let by_query = Query::filter(Filter::consent(channel, purpose))
                    .at(at)
                    .ids(&tx)?;
                let text = format!("consent({}, {purpose})", channel.as_str());
                let by_text = Query::parse(&text)?.at(at).ids(&tx)?;
                let mut by_call = Vec::new();
                for &id in &ids {
                    if tx.has_consent(id, purpose, channel, at)? {
                        by_call.push(id);
                    }
                }
                assert_eq!(by_query, by_call, "{text} at day {d}");
                assert_eq!(by_text, by_call);
                assert_eq!(
                    Query::filter(Filter::consent(channel, purpose))
                        .at(at)
                        .count(&tx)?,
                    by_call.len() as u64
                );
                checked += by_call.len();
            }
        }
    }
    assert!(checked > 100, "the data exercises both answers ({checked})");
    Ok(())
}
