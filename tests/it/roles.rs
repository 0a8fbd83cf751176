//! Guards role-based views and the access log: each preset sees only its parts through get,
//! iteration, queries and the timeline; a query on a hidden field is refused, never answered
//! empty; an analyst aggregates but reads no record; the acting role is in history; subject
//! exports and erasures are in the access log.

use chrono::{TimeZone, Utc};
use customerdb::privacy::{Part, Role};
use customerdb::query::{Field, Order, Query};
use customerdb::{
    AccessAction, Activity, ActivityQuery, Channel, Consent, ConsentStatus, Customer, ErrorKind,
    Read, Result, Store, Suppress,
};

fn forbidden<T: std::fmt::Debug>(r: Result<T>, what: &str) {
    let err = r.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Forbidden { field, .. } if field == what),
        "expected forbidden {what}, got {err:?}"
    );
}

fn store() -> Result<(Store, customerdb::CustomerId)> {
    let store = Store::in_memory()?;
    let mut tx = store.begin_write()?;
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
    let ada = tx.insert(
        Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com")
            .phone("+44 20 7946 0018")
            .birth_date(chrono::NaiveDate::from_ymd_opt(1815, 12, 10).unwrap())
            .tag("vip")
            .consent(Consent::new(
                "marketing",
                Channel::Email,
                ConsentStatus::Granted,
                at,
                "form",
            )),
    )?;
    tx.insert(
        Customer::builder()
            .name("Alan Turing")
            .email("alan@example.com"),
    )?;
    tx.add_activity(ada, Activity::note(at, "asked about the engine"))?;
    tx.commit()?;
    Ok((store, ada))
}

#[test]
fn each_role_sees_only_its_parts_and_is_refused_the_rest() -> Result<()> {
    let (store, ada) = store()?;
    let tx = store.begin_read()?;

    let support = Role::support();
    let view = tx.as_role(&support);
    let seen = view.get(ada)?.unwrap().customer;
    assert!(seen.name.is_some() && !seen.emails.is_empty());
    assert!(seen.phones.is_empty() && seen.birth_date.is_none() && seen.tags.is_empty());
    assert!(seen.consents.is_empty());
    assert_eq!(view.timeline(ada, &ActivityQuery::new())?.len(), 1);
    assert_eq!(
        view.find_by_email("ADA@example.com")?.map(|r| r.id),
        Some(ada)
    );
    forbidden(view.find_by_phone("+44 20 7946 0018"), "phones");
    forbidden(view.query(&Query::filter(Field::Tag.eq("vip"))), "tags");
    forbidden(
        view.has_consent(ada, "marketing", Channel::Email, Utc::now()),
        "consents",
    );
    forbidden(view.history(ada, None, 10), "history");
    let all: Vec<_> = view.customers()?.collect::<Result<_>>()?;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|r| r.customer.phones.is_empty()));

    let marketing = Role::marketing();
    let view = tx.as_role(&marketing);
    let found = view.query(&Query::parse(
        r#"tag = "vip" and consent(email, marketing)"#,
    )?)?;
    assert_eq!(found.len(), 1);
    assert!(found[0].customer.phones.is_empty() && !found[0].customer.consents.is_empty());
    // A hidden field in a filter, deep inside, or in the sort: refused, not answered empty.
    forbidden(
        view.count(&Query::parse(r#"tag = "vip" and not phone is set"#)?),
        "phones",
    );
    forbidden(
        view.query(&Query::all().sort_by(Field::BirthDate, Order::Asc)),
        "birth_date",
    );
    forbidden(view.timeline(ada, &ActivityQuery::new()), "activities");
    assert!(view.has_consent(ada, "marketing", Channel::Email, Utc::now())?);

    let analyst = Role::analyst();
    let view = tx.as_role(&analyst);
    assert_eq!(view.count(&Query::filter(Field::Tag.eq("vip")))?, 1);
    let groups = view.group_by(&Query::all(), &Field::Tag, Some(&Field::OrderCount))?;
    assert!(!groups.is_empty());
    forbidden(view.get(ada), "records");
    forbidden(view.query(&Query::all()), "records");
    forbidden(view.customers().map(|_| ()), "records");
    forbidden(
        view.count(&Query::filter(Field::Name.eq("ada lovelace"))),
        "name",
    );
    forbidden(view.group_by(&Query::all(), &Field::Email, None), "emails");

    // A host's own role, on a write transaction too.
    let billing = Role::new("billing").allow([Part::Emails, Part::Metrics]);
    let mut wtx = store.begin_write()?;
    wtx.insert(
        Customer::builder()
            .name("Grace Hopper")
            .email("grace@example.com"),
    )?;
    let view = wtx.as_role(&billing);
    assert_eq!(
        view.count(&Query::filter(Field::Email.eq("grace@example.com")))?,
        1
    );
    let grace = view.find_by_email("grace@example.com")?.unwrap();
    assert!(grace.customer.name.is_none());
    assert_eq!(view.metrics(grace.id)?.order_count, 0);
    Ok(())
}

#[test]
fn the_acting_role_is_in_history_and_exports_and_erasures_in_the_access_log() -> Result<()> {
    let (store, ada) = store()?;
    let support = Role::support().allow([Part::History]);
    let mut tx = store.begin_write_in_role("ana", &support)?;
    let mut c = tx.get(ada)?.unwrap().customer;
    c.job_title = Some("Mathematician".into());
    tx.update(ada, c)?;
    tx.commit()?;
    let tx = store.begin_read()?;
    let history = tx.as_role(&support).history(ada, None, 1)?;
    assert_eq!(history[0].actor.as_deref(), Some("ana (support)"));
    // Support may not see job titles: the change is there, its values are not.
    assert!(history[0].fields.is_empty());
    assert_eq!(tx.history(ada, None, 1)?[0].fields.len(), 1);
    drop(tx);

    let dpo = Role::new("dpo");
    let mut tx = store.begin_write_in_role("olu", &dpo)?;
    let doc = tx.subject_access(ada)?;
    assert_eq!(doc["customer"]["id"], ada.as_u64());
    tx.commit()?;
    // An export in a transaction that is rolled back is not logged, since it never happened.
    let mut tx = store.begin_write_as("nobody")?;
    tx.subject_access(ada)?;
    drop(tx);
    let mut tx = store.begin_write_in_role("olu", &dpo)?;
    tx.erase(ada, "art. 17 request 41", Suppress::No)?;
    tx.commit()?;

    let log = store.begin_read()?.access_log(0, 100)?;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, AccessAction::SubjectExport);
    assert_eq!(log[1].action, AccessAction::Erasure);
    assert!(
        log.iter()
            .all(|e| e.customer == ada && e.by.as_deref() == Some("olu (dpo)"))
    );
    assert_eq!(log[1].reason.as_deref(), Some("art. 17 request 41"));
    assert_eq!((log[0].number, log[1].number), (1, 2));
    assert_eq!(store.begin_read()?.access_log(1, 100)?.len(), 1);
    assert!(store.verify()?.is_clean());
    Ok(())
}
