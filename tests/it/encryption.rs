//! Guards encryption at rest: every field round-trips, equality lookups, uniqueness and
//! duplicate detection work on blind indexes, range and prefix scans are refused, a missing,
//! wrong or altered key is a typed error, and the file holds no customer's email, phone or
//! name in plain text.

use customerdb::crypt::{Keys, MasterKey};
use customerdb::dedup::{ClusterSettings, Matcher};
use customerdb::query::{Field, Query};
use customerdb::sample::{self, Duplicates};
use customerdb::{ErrorKind, Index, KeyProblem, Read, Result, Scan, Store, StoreBuilder};

fn keys(byte: u8) -> Keys {
    Keys::new(1, MasterKey::from_bytes(&[byte; 32]).unwrap())
}

fn encrypted() -> StoreBuilder {
    Store::builder().default_region("GB").encryption(keys(7))
}

fn key_problem(e: &customerdb::Error) -> KeyProblem {
    match e.kind() {
        ErrorKind::Key(p) => p.clone(),
        other => panic!("not a key error: {other:?}"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_field_round_trips_and_equality_lookups_work() -> Result<()> {
    let people = sample::generate(0x00C0_FFEE, 60);
    let plain = Store::builder().default_region("GB").in_memory()?;
    let store = encrypted().in_memory()?;
    let mut ids = Vec::new();
    for s in [&plain, &store] {
        let mut tx = s.begin_write()?;
        ids = people
            .iter()
            .map(|p| tx.insert(p.to_builder()))
            .collect::<Result<_>>()?;
        tx.commit()?;
    }
    let (plain_tx, tx) = (plain.begin_read()?, store.begin_read()?);
    for (person, id) in people.iter().zip(&ids) {
        let want = plain_tx.get(*id)?.unwrap();
        let got = tx.get(*id)?.unwrap();
        assert_eq!(got.customer, want.customer);
        assert_eq!(tx.find_by_email(&person.email)?.map(|r| r.id), Some(*id));
        let (system, x) = &person.external_id;
        assert_eq!(tx.find_by_external_id(system, x)?.map(|r| r.id), Some(*id));
        let phone = &want.customer.phones[0];
        assert!(tx.find_by_phone(phone.e164())?.iter().any(|r| r.id == *id));
        assert!(
            tx.ids(&Index::FamilyName, &Scan::eq(person.family_name.as_str()))?
                .contains(id)
        );
        assert!(
            tx.ids(&Index::BirthDate, &Scan::eq(person.birth_date))?
                .contains(id)
        );
        assert!(
            tx.ids(&Index::Country, &Scan::eq(person.country.as_str()))?
                .contains(id)
        );
    }
    let customers = |t: &customerdb::ReadTxn| -> Result<Vec<customerdb::Customer>> {
        t.customers()?.map(|r| r.map(|r| r.customer)).collect()
    };
    assert!(customers(&tx)? == customers(&plain_tx)?);
    // History is sealed on disk and readable through the store.
    let fields = |t: &customerdb::ReadTxn| -> Result<Vec<_>> {
        Ok(t.changes(0, 1000)?.into_iter().map(|c| c.fields).collect())
    };
    assert_eq!(tx.changes(0, 1000)?.len(), people.len());
    assert!(fields(&tx)? == fields(&plain_tx)?);
    assert!(store.verify()?.is_clean());

    // Uniqueness holds on blind hashes.
    let mut writer = store.begin_write()?;
    let clash = customerdb::Customer::builder().email(people[0].email.to_uppercase());
    let e = writer.insert(clash).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Conflict { index: "email", existing, .. } if *existing == ids[0])
    );
    drop(writer);

    // Range and prefix scans of blinded indexes are refused, not answered wrongly.
    let tx = store.begin_read()?;
    let born = people[0].birth_date;
    for (index, scan, what) in [
        (Index::BirthDate, Scan::range(born..), "range"),
        (Index::FamilyName, Scan::prefix("sm"), "prefix"),
        (Index::Email, Scan::prefix("a"), "prefix"),
    ] {
        let e = tx.ids(&index, &scan).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Blinded { scan, .. } if *scan == what),
            "{e}"
        );
    }
    // Indexes of values that stay plain still scan by range.
    assert!(!tx.ids(&Index::Country, &Scan::prefix("G"))?.is_empty());

    // Queries: equality on blinded fields, fuzzy names (compared on decrypted records) and
    // group-bys answer as on a plain store; a range on a blinded field is refused.
    let family = &people[1].family_name;
    for text in [
        format!(r#"email = "{}""#, people[2].email),
        format!(r#"family_name ~ "{family}" within 1"#),
        format!(r#"postcode = "{}" or tag = "vip""#, people[3].postcode),
    ] {
        let q = Query::parse(&text)?;
        assert_eq!(q.ids(&tx)?, q.ids(&plain_tx)?, "{text}");
        assert!(!q.ids(&tx)?.is_empty(), "{text}");
    }
    for field in [Field::Locality, Field::Postcode, Field::Country] {
        assert_eq!(
            Query::all().group_by(&tx, &field, None)?,
            Query::all().group_by(&plain_tx, &field, None)?
        );
    }
    for text in [r#"family_name starts_with "Sm""#, "birth_date < 1990-01-01"] {
        let e = Query::parse(text).and_then(|q| q.ids(&tx)).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Blinded { .. }), "{text}: {e}");
    }
    Ok(())
}

#[test]
fn a_missing_wrong_or_unknown_key_is_refused_on_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("enc.redb");
    {
        let store = encrypted().create(&path)?;
        let mut tx = store.begin_write()?;
        tx.insert(customerdb::Customer::builder().name("Ada Lovelace"))?;
        tx.commit()?;
    }
    let e = Store::open(&path).unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::Missing);
    let e = Store::builder()
        .encryption(keys(8))
        .open(&path)
        .unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::WrongKey(1));
    let other_id = Keys::new(2, MasterKey::from_bytes(&[7; 32])?);
    let e = Store::builder()
        .encryption(other_id)
        .open(&path)
        .unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::UnknownKeyId(1));
    let store = encrypted().open(&path)?;
    assert_eq!(store.begin_read()?.count()?, 1);
    drop(store);

    let plain = dir.path().join("plain.redb");
    drop(Store::create(&plain)?);
    let e = encrypted().open(&plain).unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::NotEncrypted);
    Ok(())
}

#[test]
fn altered_or_swapped_ciphertext_is_a_typed_error() -> Result<()> {
    use redb::ReadableTable as _;
    const CUSTOMERS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("customers");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("enc.redb");
    let (a, b, c) = {
        let store = encrypted().create(&path)?;
        let mut tx = store.begin_write()?;
        let a = tx.insert(customerdb::Customer::builder().name("Ada Lovelace"))?;
        let b = tx.insert(customerdb::Customer::builder().name("Grace Hopper"))?;
        let c = tx.insert(customerdb::Customer::builder().name("Alan Turing"))?;
        tx.commit()?;
        (a, b, c)
    };
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(CUSTOMERS).unwrap();
            let mut altered = t.get(a.as_u64()).unwrap().unwrap().value().to_vec();
            let last = altered.len() - 1;
            altered[last] ^= 0x01;
            // Customer c's ciphertext moved under b's id.
            let moved = t.get(c.as_u64()).unwrap().unwrap().value().to_vec();
            t.insert(a.as_u64(), altered.as_slice()).unwrap();
            t.insert(b.as_u64(), moved.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = encrypted().open(&path)?;
    let tx = store.begin_read()?;
    for id in [a, b] {
        let e = tx.get(id).unwrap_err();
        assert_eq!(
            key_problem(&e),
            KeyProblem::Unauthentic {
                what: "customer record"
            }
        );
    }
    assert!(tx.get(c)?.is_some());
    let report = store.verify()?;
    let undecodable = report
        .problems
        .iter()
        .filter(|p| matches!(p, customerdb::Problem::UndecodableRecord { .. }))
        .count();
    assert_eq!(undecodable, 2, "{:?}", report.problems);
    Ok(())
}

#[test]
fn the_file_holds_no_email_phone_or_name_in_plain_text() -> Result<()> {
    let people = sample::generate(0x5EA1_ED00, 150);
    let dir = tempfile::tempdir()?;
    let scan = |builder: StoreBuilder, name: &str| -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
        let path = dir.path().join(name);
        let store = builder.create(&path)?;
        let mut tx = store.begin_write()?;
        let mut ids = Vec::new();
        for p in &people {
            ids.push(tx.insert(p.to_builder())?);
        }
        tx.commit()?;
        // Updates leave history entries and freed pages with older values.
        let mut tx = store.begin_write()?;
        for id in ids.iter().step_by(3) {
            let mut c = tx.get(*id)?.unwrap().customer;
            c.job_title = Some("Curator".into());
            tx.update(*id, c)?;
        }
        tx.commit()?;
        let stored: Vec<_> = store.begin_read()?.customers()?.collect::<Result<_>>()?;
        // The duplicate model's name frequencies, a batch run, a review and a merge write
        // about many customers at once; then one customer is erased.
        let matcher = Matcher::default();
        let mut tx = store.begin_write()?;
        tx.train_duplicate_model(&matcher)?;
        tx.commit()?;
        let _ = store
            .begin_read()?
            .find_duplicates(&matcher, &ClusterSettings::default())?;
        let mut tx = store.begin_write_as("steward")?;
        tx.queue_review(ids[1], ids[2], 0.7)?;
        tx.decide(ids[1], ids[2], false, "steward")?;
        let plan = tx.merge_plan(ids[3], &[ids[4]], &customerdb::Survivorship::Survivor)?;
        tx.merge(&plan)?;
        tx.erase(ids[0], "art. 17 request", customerdb::Suppress::No)?;
        tx.commit()?;
        let mut store = store;
        store.compact()?;
        // A backup taken after the erasure is scanned with the file.
        let backup = dir.path().join(format!("{name}.cdbk"));
        store.backup_to(&backup)?;
        drop(store);
        let mut needles = Vec::new();
        for (p, r) in people.iter().zip(&stored) {
            let c = &r.customer;
            needles.push(p.email.clone().into_bytes());
            needles.push(c.emails[0].match_key().as_bytes().to_vec());
            needles.push(c.phones[0].e164().as_bytes().to_vec());
            needles.push(p.phone.clone().into_bytes());
            for n in [&p.family_name, &p.given_name] {
                // Short names occur by chance in any file of this size; six bytes do not.
                if n.len() >= 6 {
                    needles.push(n.clone().into_bytes());
                    needles.push(customerdb::normalize::fold_key(n).into_bytes());
                }
            }
        }
        let mut bytes = std::fs::read(&path)?;
        bytes.extend(std::fs::read(&backup)?);
        Ok((bytes, needles))
    };
    let (bytes, needles) = scan(encrypted(), "enc.redb")?;
    let found: Vec<String> = needles
        .iter()
        .filter(|n| contains(&bytes, n))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(
        found.is_empty(),
        "plain text in the encrypted file: {found:?}"
    );
    // The same scan finds every email in a plain store, so it can fail.
    let (bytes, _) = scan(Store::builder().default_region("GB"), "plain.redb")?;
    assert!(
        people
            .iter()
            .skip(1)
            .all(|p| contains(&bytes, p.email.as_bytes()))
    );
    Ok(())
}

#[test]
fn duplicates_are_found_on_an_encrypted_store_as_on_a_plain_one() -> Result<()> {
    let records: Vec<_> = Duplicates::new(11).take(300).collect();
    let plain = Store::builder().default_region("GB").in_memory()?;
    let store = encrypted().in_memory()?;
    for s in [&plain, &store] {
        let mut tx = s.begin_write()?;
        for r in &records {
            let (c, _) = r.to_builder().build_lenient();
            // A copy may repeat an email; both stores refuse the same ones.
            match tx.insert(c) {
                Err(e) if matches!(e.kind(), ErrorKind::Conflict { .. }) => {}
                other => drop(other?),
            }
        }
        tx.commit()?;
    }
    let matcher = Matcher::default();
    let settings = ClusterSettings::default();
    let want = plain.begin_read()?.find_duplicates(&matcher, &settings)?;
    let got = store.begin_read()?.find_duplicates(&matcher, &settings)?;
    assert!(!want.is_empty());
    let ids =
        |cs: &[customerdb::DuplicateCluster]| cs.iter().map(|c| c.ids.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want));
    // Match on insert looks candidates up in the blinded match-key index.
    let copy = records
        .windows(2)
        .find(|w| w[0].entity == w[1].entity)
        .map(|w| w[1].to_builder().build_lenient().0)
        .unwrap();
    let tx = store.begin_read()?;
    assert_eq!(
        tx.duplicates_of(&copy, 0.5)?.len(),
        plain.begin_read()?.duplicates_of(&copy, 0.5)?.len()
    );
    assert!(!tx.duplicates_of(&copy, 0.5)?.is_empty());
    Ok(())
}

/// An encrypted store `live.redb` in `dir` holding `people`, and their ids.
fn live_store(
    dir: &std::path::Path,
    people: &[sample::SampleCustomer],
) -> Result<(Store, Vec<customerdb::CustomerId>)> {
    let live = encrypted().create(dir.join("live.redb"))?;
    let mut tx = live.begin_write()?;
    let ids = people
        .iter()
        .map(|p| tx.insert(p.to_builder()))
        .collect::<Result<_>>()?;
    tx.commit()?;
    Ok((live, ids))
}

#[test]
fn an_old_backup_restored_after_an_erasure_does_not_reveal_the_erased() -> Result<()> {
    let people = sample::generate(0x0BAC_CF11, 40);
    let dir = tempfile::tempdir()?;
    let (live, ids) = live_store(dir.path(), &people)?;
    let mut tx = live.begin_write()?;
    for id in &ids[..5] {
        let mut c = tx.get(*id)?.unwrap().customer;
        c.job_title = Some("Archivist".into());
        tx.update(*id, c)?;
    }
    tx.commit()?;
    let backup = dir.path().join("before.cdbk");
    live.backup_to(&backup)?;
    // The backup holds sealed records and no data keys.
    let bytes = std::fs::read(&backup)?;
    assert!(!people.iter().any(|p| contains(&bytes, p.email.as_bytes())));

    let mut tx = live.begin_write_as("dpo")?;
    tx.erase(ids[0], "art. 17 request", customerdb::Suppress::No)?;
    tx.commit()?;

    // Without a source of data keys the backup cannot be restored readable.
    let e = encrypted()
        .restore_from(&backup, dir.path().join("no-keys.redb"))
        .unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::NoDataKeys);

    let restored = encrypted()
        .data_keys_from(&live)
        .restore_from(&backup, dir.path().join("restored.redb"))?;
    let tx = restored.begin_read()?;
    assert!(tx.get(ids[0])?.is_none());
    assert!(tx.find_by_email(&people[0].email)?.is_none());
    assert!(tx.tombstone(ids[0])?.is_some());
    assert!(
        tx.changes(0, 10_000)?
            .iter()
            .all(|c| c.customer != Some(ids[0]))
    );
    let now = live.begin_read()?;
    for id in &ids[1..] {
        assert_eq!(
            tx.get(*id)?.unwrap().customer,
            now.get(*id)?.unwrap().customer
        );
    }
    assert_eq!(tx.count()?, ids.len() as u64 - 1);
    let report = restored.verify()?;
    assert!(report.is_clean(), "{:?}", report.problems);
    Ok(())
}

#[test]
fn rotating_the_master_key_keeps_everything_readable_and_retires_the_old_key() -> Result<()> {
    let people = sample::generate(0x0007_0A7E, 25);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rot.redb");
    let before = {
        let store = encrypted().create(&path)?;
        let mut tx = store.begin_write()?;
        for p in &people {
            tx.insert(p.to_builder())?;
        }
        tx.commit()?;
        let customers: Vec<_> = store.begin_read()?.customers()?.collect::<Result<_>>()?;
        customers
    };
    let new_key = || MasterKey::from_bytes(&[9; 32]).unwrap();
    {
        let store = Store::builder()
            .default_region("GB")
            .encryption(keys(7).with(2, new_key()))
            .open(&path)?;
        // New customers get data keys under the new current key at once.
        let mut tx = store.begin_write()?;
        tx.insert(customerdb::Customer::builder().name("Rosalind Franklin"))?;
        tx.commit()?;
        // Resumable batches: 4 customers per transaction.
        assert_eq!(store.rotate_keys(4)?, people.len() as u64);
        assert_eq!(store.rotate_keys(4)?, 0, "nothing left under the old key");
        assert!(store.verify()?.is_clean());
    }
    // The old master key is no longer needed, and no longer enough.
    let only_new = Keys::new(2, new_key());
    let store = Store::builder().encryption(only_new).open(&path)?;
    let tx = store.begin_read()?;
    for r in &before {
        assert_eq!(tx.get(r.id)?.unwrap().customer, r.customer);
    }
    assert_eq!(
        tx.find_by_email(&people[3].email)?.map(|r| r.id),
        Some(before[3].id)
    );
    assert_eq!(tx.changes(0, 1000)?.len(), people.len() + 1);
    assert!(store.verify()?.is_clean());
    drop((tx, store));
    let e = Store::builder()
        .encryption(keys(7))
        .open(&path)
        .unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::UnknownKeyId(2));
    Ok(())
}

#[test]
fn merge_logs_are_sealed_and_unmerge_still_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("merge.redb");
    let email = "marguerite.perey@institut-curie.example";
    let (a, b, merge) = {
        let store = encrypted().create(&path)?;
        let mut tx = store.begin_write()?;
        let a = tx.insert(customerdb::Customer::builder().name("Marguerite Perey"))?;
        let b = tx.insert(
            customerdb::Customer::builder()
                .name("Marguerite Catherine Perey")
                .email(email),
        )?;
        let plan = tx.merge_plan(a, &[b], &customerdb::Survivorship::Survivor)?;
        let merge = tx.merge(&plan)?;
        tx.commit()?;
        (a, b, merge)
    };
    let bytes = std::fs::read(&path)?;
    assert!(!contains(&bytes, email.as_bytes()));
    assert!(!contains(&bytes, b"Catherine"));
    let store = encrypted().open(&path)?;
    let mut tx = store.begin_write()?;
    tx.unmerge(merge)?;
    tx.commit()?;
    let tx = store.begin_read()?;
    assert_eq!(tx.find_by_email(email)?.map(|r| r.id), Some(b));
    assert!(tx.get(a)?.unwrap().customer.emails.is_empty());
    drop(tx);
    assert!(store.verify()?.is_clean());
    // Erasing the customer once merged finds the sealed log by its readable ids and removes it.
    let mut tx = store.begin_write()?;
    tx.erase(b, "asked", customerdb::Suppress::No)?;
    tx.commit()?;
    assert!(store.begin_read()?.subject_export(a).is_ok());
    assert!(store.verify()?.is_clean());
    Ok(())
}

#[test]
fn an_old_backup_restored_after_anonymisation_does_not_reveal_the_identity() -> Result<()> {
    use customerdb::{Inactive, RetentionPolicy};
    use std::sync::{Arc, Mutex};

    let day = |d: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp(1_735_732_800, 0).unwrap()
            + chrono::Duration::days(d)
    };
    let clock = Arc::new(Mutex::new(day(0)));
    let c = clock.clone();
    let dir = tempfile::tempdir()?;
    let live = encrypted()
        .clock(move || *c.lock().unwrap())
        .create(dir.path().join("live.redb"))?;
    let email = "quiet.quinn@example.com";
    let mut tx = live.begin_write()?;
    let quiet = tx.insert(
        customerdb::Customer::builder()
            .name("Quiet Quinn")
            .email(email),
    )?;
    tx.commit()?;
    *clock.lock().unwrap() = day(300);
    let mut tx = live.begin_write()?;
    let active = tx.insert(
        customerdb::Customer::builder()
            .name("Active Ada")
            .email("ada@example.com"),
    )?;
    tx.commit()?;
    let backup = dir.path().join("before.cdbk");
    live.backup_to(&backup)?;

    *clock.lock().unwrap() = day(400);
    let policy = RetentionPolicy {
        inactive_customers: Some((chrono::Duration::days(365), Inactive::Anonymise)),
        activities_older_than: None,
        history_older_than: None,
    };
    let mut tx = live.begin_write()?;
    assert_eq!(
        tx.apply_retention(&policy, day(400), false)?.anonymised,
        vec![quiet]
    );
    tx.commit()?;

    let restored = encrypted()
        .data_keys_from(&live)
        .restore_from(&backup, dir.path().join("restored.redb"))?;
    let tx = restored.begin_read()?;
    assert!(tx.find_by_email(email)?.is_none());
    assert!(
        tx.get(quiet)?.is_none(),
        "the pre-anonymisation record is purged"
    );
    assert!(tx.tombstone(quiet)?.is_some());
    assert!(
        tx.changes(0, 10_000)?
            .iter()
            .all(|c| c.customer != Some(quiet))
    );
    assert_eq!(tx.get(active)?.map(|r| r.customer.emails.len()), Some(1));
    drop(tx);
    assert!(restored.verify()?.is_clean());
    Ok(())
}

#[test]
fn a_rotation_interrupted_before_the_current_key_changed_starts_again() -> Result<()> {
    let people = sample::generate(0x0007_0A7F, 12);
    let key = |b: u8| MasterKey::from_bytes(&[b; 32]).unwrap();
    // An interrupted rotation to key 2 left this marker (next customer: the 7th), in the
    // format of this version (target key ++ next id) and in the older one (next id alone).
    let seventh = 7u64;
    let mut current_form = 2u32.to_be_bytes().to_vec();
    current_form.extend_from_slice(&seventh.to_be_bytes());
    for marker in [current_form, seventh.to_le_bytes().to_vec()] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("rot.redb");
        {
            let store = encrypted().create(&path)?;
            let mut tx = store.begin_write()?;
            for p in &people {
                tx.insert(p.to_builder())?;
            }
            tx.commit()?;
        }
        {
            let db = redb::Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            tx.open_table(meta)
                .unwrap()
                .insert("key_rotation", marker.as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        // Key 3 became current before the rotation was resumed.
        let all = keys(7).with(2, key(2)).with(3, key(3));
        let store = Store::builder().encryption(all).open(&path)?;
        let report = store.verify()?;
        assert_eq!(report.keys_not_current.len(), people.len());
        assert!(report.blind_key_not_current);
        assert_eq!(store.rotate_keys(4)?, people.len() as u64);
        let report = store.verify()?;
        assert!(report.keys_not_current.is_empty() && !report.blind_key_not_current);
        drop(store);
        // Key 3 alone opens every customer.
        let store = Store::builder()
            .encryption(Keys::new(3, key(3)))
            .open(&path)?;
        assert_eq!(
            store
                .begin_read()?
                .customers()?
                .collect::<Result<Vec<_>>>()?
                .len(),
            people.len()
        );
    }
    Ok(())
}

#[test]
fn planted_plain_history_entries_and_merge_logs_are_refused() -> Result<()> {
    use redb::{ReadableDatabase, ReadableTable};
    fn table(name: &str) -> redb::TableDefinition<'_, &'static [u8], &'static [u8]> {
        redb::TableDefinition::new(name)
    }
    let dir = tempfile::tempdir()?;
    // The same customers, merged the same way, in a plain and an encrypted store.
    let mut merges = Vec::new();
    for (builder, name) in [
        (Store::builder().default_region("GB"), "plain.redb"),
        (encrypted(), "enc.redb"),
    ] {
        let store = builder.create(dir.path().join(name))?;
        let mut tx = store.begin_write()?;
        let a = tx.insert(customerdb::Customer::builder().name("Ada Lovelace"))?;
        let b = tx.insert(
            customerdb::Customer::builder()
                .name("Augusta Ada King")
                .email("ada@example.com"),
        )?;
        let plan = tx.merge_plan(a, &[b], &customerdb::Survivorship::Survivor)?;
        merges.push(tx.merge(&plan)?);
        tx.commit()?;
    }
    assert_eq!(merges[0], merges[1]);
    let plain = {
        let db = redb::Database::open(dir.path().join("plain.redb")).unwrap();
        let tx = db.begin_read().unwrap();
        let rows = |name| -> Vec<(Vec<u8>, Vec<u8>)> {
            tx.open_table(table(name))
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| {
                    r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                        .unwrap()
                })
                .collect()
        };
        (rows("history"), rows("merges"))
    };
    let path = dir.path().join("enc.redb");
    let plant = |name: &str, rows: &[(Vec<u8>, Vec<u8>)], shift: u64| {
        let db = redb::Database::open(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(table(name)).unwrap();
            for (k, v) in rows {
                let k = match <[u8; 8]>::try_from(k.as_slice()) {
                    Ok(seq) => (u64::from_be_bytes(seq) + shift).to_be_bytes().to_vec(),
                    Err(_) => k.clone(),
                };
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    };
    let is_corrupted = |e: &customerdb::Error| matches!(e.kind(), ErrorKind::Corrupted { .. });
    // A plain merge log in place of the sealed one: unmerge would write records from it.
    plant("merges", &plain.1, 0);
    let store = encrypted().open(&path)?;
    let mut tx = store.begin_write()?;
    let e = tx.unmerge(merges[1]).unwrap_err();
    assert!(is_corrupted(&e), "{e:?}");
    drop((tx, store));
    // Plain history entries about customers, after the store's own.
    plant("history", &plain.0, 1000);
    let store = encrypted().open(&path)?;
    let e = store.begin_read()?.changes(0, 10_000).unwrap_err();
    assert!(is_corrupted(&e), "{e:?}");
    Ok(())
}

#[test]
fn a_restore_refuses_another_store_as_key_source_and_reports_the_purged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let live = encrypted().create(dir.path().join("live.redb"))?;
    let mut tx = live.begin_write()?;
    let a = tx.insert(customerdb::Customer::builder().name("Ada Lovelace"))?;
    let b = tx.insert(customerdb::Customer::builder().name("Mary Somerville"))?;
    tx.commit()?;
    let backup = dir.path().join("b.cdbk");
    live.backup_to(&backup)?;
    let mut tx = live.begin_write()?;
    tx.erase(a, "asked", customerdb::Suppress::No)?;
    tx.commit()?;

    // Another encrypted store under the same master key, and a plain store, are no key source:
    // each would have every customer purged as erased.
    let other = encrypted().in_memory()?;
    let plain = Store::builder().in_memory()?;
    for (n, source) in [&other, &plain].into_iter().enumerate() {
        let e = encrypted()
            .data_keys_from(source)
            .restore_from(&backup, dir.path().join(format!("wrong{n}.redb")))
            .unwrap_err();
        assert_eq!(key_problem(&e), KeyProblem::OtherStore);
        assert!(!dir.path().join(format!("wrong{n}.redb")).exists());
    }
    let (restored, report) = encrypted()
        .data_keys_from(&live)
        .restore_reporting(&backup, dir.path().join("restored.redb"))?;
    assert_eq!(report.purged, vec![a]);
    assert!(restored.begin_read()?.get(b)?.is_some());
    Ok(())
}

/// What a reader of an encrypted store sees, for comparing a caught-up copy with its source.
fn readable(
    store: &Store,
    ids: &[customerdb::CustomerId],
) -> Result<impl PartialEq + std::fmt::Debug> {
    let tx = store.begin_read()?;
    let tombstones: Vec<_> = ids
        .iter()
        .map(|id| tx.tombstone(*id))
        .collect::<Result<_>>()?;
    Ok((
        tx.last_seq()?,
        tx.customers()?.collect::<Result<Vec<_>>>()?,
        tx.changes(0, usize::MAX)?,
        tombstones,
    ))
}

#[test]
fn catch_up_brings_an_encrypted_copy_to_the_live_store_and_shreds_the_erased() -> Result<()> {
    let people = sample::generate(0x0CA7_C401, 60);
    let dir = tempfile::tempdir()?;
    let (live, mut ids) = live_store(dir.path(), &people[..40])?;
    let backup = dir.path().join("live.cdbk");
    live.backup_to(&backup)?;
    let copy = encrypted()
        .data_keys_from(&live)
        .restore_from(&backup, dir.path().join("copy.redb"))?;

    // After the backup: new customers (new data keys), updates, a merge, an erasure.
    let mut tx = live.begin_write_as("crm")?;
    for p in &people[40..] {
        ids.push(tx.insert(p.to_builder())?);
    }
    for id in &ids[1..6] {
        let mut c = tx.get(*id)?.unwrap().customer;
        c.job_title = Some("Archivist".into());
        tx.update(*id, c)?;
    }
    let plan = tx.merge_plan(ids[6], &[ids[7]], &customerdb::Survivorship::MostRecent)?;
    tx.merge(&plan)?;
    tx.erase(ids[0], "art. 17 request", customerdb::Suppress::No)?;
    tx.erase(ids[45], "art. 17 request", customerdb::Suppress::No)?;
    tx.commit()?;
    // A backup of the copy before it catches up still holds the first erased customer.
    let stale = dir.path().join("copy-before.cdbk");
    copy.backup_to(&stale)?;

    let caught = copy.catch_up_from(&live)?;
    assert!(caught.changes > 0);
    assert_eq!(readable(&copy, &ids)?, readable(&live, &ids)?);
    let tx = copy.begin_read()?;
    assert_eq!(
        tx.find_by_email(&people[50].email)?.map(|r| r.id),
        Some(ids[50])
    );
    for gone in [ids[0], ids[45]] {
        assert!(tx.get(gone)?.is_none());
        assert!(tx.tombstone(gone)?.is_some());
    }
    assert!(tx.find_by_email(&people[0].email)?.is_none());
    drop(tx);
    let report = copy.verify()?;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.keys_not_current.is_empty());
    assert_eq!(copy.catch_up_from(&live)?.changes, 0);

    // The erasure destroyed the data key in the copy too: the copy's own older backup,
    // restored with the copy as the key source, cannot give the erased customer back.
    let (again, restored) = encrypted()
        .data_keys_from(&copy)
        .restore_reporting(&stale, dir.path().join("again.redb"))?;
    assert_eq!(restored.purged, vec![ids[0]]);
    assert!(again.begin_read()?.get(ids[0])?.is_none());
    assert!(again.begin_read()?.get(ids[1])?.is_some());
    Ok(())
}

#[test]
fn catch_up_between_encrypted_stores_needs_the_same_store_and_its_master_keys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (live_path, copy_path) = (dir.path().join("live.redb"), dir.path().join("copy.redb"));
    let two = || keys(7).with(2, MasterKey::from_bytes(&[8; 32]).unwrap());
    let live = encrypted().create(&live_path)?;
    let mut tx = live.begin_write()?;
    let ada = tx.insert(customerdb::Customer::builder().name("Ada Lovelace"))?;
    tx.commit()?;
    let backup = dir.path().join("live.cdbk");
    live.backup_to(&backup)?;
    let copy = encrypted()
        .data_keys_from(&live)
        .restore_from(&backup, &copy_path)?;

    // Another encrypted store, or a plain one, is not the copy's source, nor the other way.
    let other = encrypted().in_memory()?;
    let plain = Store::builder().in_memory()?;
    for e in [
        copy.catch_up_from(&other).unwrap_err(),
        copy.catch_up_from(&plain).unwrap_err(),
        plain.catch_up_from(&live).unwrap_err(),
    ] {
        assert_eq!(key_problem(&e), KeyProblem::OtherStore);
    }

    // The source moves to master key 2 and gains a customer under it.
    drop(live);
    let live = Store::builder()
        .default_region("GB")
        .encryption(two())
        .open(&live_path)?;
    assert_eq!(live.rotate_keys(100)?, 1);
    let mut tx = live.begin_write()?;
    let grace = tx.insert(customerdb::Customer::builder().name("Grace Hopper"))?;
    tx.commit()?;

    // A copy without key 2, or with another key under id 2, is refused and left as it was.
    let e = copy.catch_up_from(&live).unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::UnknownKeyId(2));
    drop(copy);
    // Key 1 stays current, so opening records no key check of the wrong key 2.
    let wrong = Keys::new(2, MasterKey::from_bytes(&[9; 32]).unwrap())
        .with(1, MasterKey::from_bytes(&[7; 32]).unwrap());
    let copy = Store::builder()
        .default_region("GB")
        .encryption(wrong)
        .open(&copy_path)?;
    let e = copy.catch_up_from(&live).unwrap_err();
    assert_eq!(key_problem(&e), KeyProblem::WrongKey(2));
    assert!(copy.begin_read()?.get(grace)?.is_none());
    assert!(copy.verify()?.is_clean());
    drop(copy);

    // With both keys it catches up, and afterwards needs key 2 alone, as the source does.
    let copy = Store::builder()
        .default_region("GB")
        .encryption(two())
        .open(&copy_path)?;
    copy.catch_up_from(&live)?;
    let report = copy.verify()?;
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(report.keys_not_current.is_empty() && !report.blind_key_not_current);
    drop(copy);
    let only_two = Keys::new(2, MasterKey::from_bytes(&[8; 32]).unwrap());
    let copy = Store::builder()
        .default_region("GB")
        .encryption(only_two)
        .open(&copy_path)?;
    let tx = copy.begin_read()?;
    assert_eq!(
        tx.get(ada)?.map(|r| r.customer.name),
        live.begin_read()?.get(ada)?.map(|r| r.customer.name)
    );
    assert!(tx.get(grace)?.is_some());
    Ok(())
}
