//! `consent`, `export-subject`, `erase`, `retention`, `backup` and `restore` (of an encrypted
//! backup with `--keys-from LIVE --key-file KEYS`, reporting the customers it purged). `consent` shows a customer's consent (in force now, and
//! every event with its evidence) or records a grant or withdrawal, in one transaction recorded
//! in history as done by `--by` (or `cli`). `backup` writes an online backup; `restore` makes a
//! new store from one and verifies it.

use std::collections::BTreeSet;
use std::process::ExitCode;

use chrono::{Duration, Utc};
use customerdb::{Channel, Consent, ConsentStatus, Inactive, Read, RetentionPolicy, Suppress};
use serde_json::json;

use crate::{Args, CliError, db, id_arg, print_lines};

/// `consent`: prints the customer's consent; with `--grant` or `--withdraw`, records the event
/// first.
pub(crate) fn consent(a: &Args) -> Result<ExitCode, CliError> {
    let id = id_arg(a)?;
    let store = db(a)?;
    let status = match (a.grant, a.withdraw) {
        (true, true) => {
            return Err(CliError::Usage(
                "consent takes --grant or --withdraw, not both".into(),
            ));
        }
        (true, false) => Some(ConsentStatus::Granted),
        (false, true) => Some(ConsentStatus::Withdrawn),
        (false, false) => None,
    };
    if let Some(status) = status {
        let purpose = a.purpose.as_deref().ok_or_else(|| {
            CliError::Usage("recording consent needs --purpose P --channel C --how H".into())
        })?;
        let channel = a
            .channel
            .as_deref()
            .map(|c| {
                Channel::parse(c).ok_or_else(|| {
                    CliError::Usage(format!(
                        "--channel must be email, sms, phone, post or any, got \"{c}\""
                    ))
                })
            })
            .transpose()?
            .ok_or_else(|| CliError::Usage("recording consent needs --channel C".into()))?;
        let how = a.how.as_deref().ok_or_else(|| {
            CliError::Usage("recording consent needs --how (form, call, ...)".into())
        })?;
        let mut event = Consent::new(purpose, channel, status, Utc::now(), how);
        event.source.clone_from(&a.source);
        event.policy_version.clone_from(&a.policy);
        let mut tx = store.begin_write_as(a.by.as_deref().unwrap_or("cli"))?;
        tx.record_consent(id, event)?;
        tx.commit()?;
    } else if a.purpose.is_some() || a.channel.is_some() || a.how.is_some() {
        return Err(CliError::Usage(
            "--purpose, --channel and --how go with --grant or --withdraw".into(),
        ));
    }
    let tx = store.begin_read()?;
    let now = Utc::now();
    let history = tx.consent_history(id)?;
    let rec = tx
        .get(id)?
        .ok_or_else(|| CliError::Failed(format!("no customer {id}")))?;
    let pairs: BTreeSet<(String, Channel)> = history
        .iter()
        .map(|c| (c.purpose.clone(), c.channel))
        .collect();
    let in_force: Vec<_> = pairs
        .iter()
        .filter_map(|(purpose, channel)| rec.customer.consent(purpose, *channel, now))
        .collect();
    print_lines(&[json!({
        "customer": rec.id,
        "in_force": in_force,
        "history": history,
    })])
}

/// `export-subject`: prints everything held on a customer as one JSON document, and records
/// the export in the access log as done by `--by` (or `cli`).
pub(crate) fn export_subject(a: &Args) -> Result<ExitCode, CliError> {
    let id = id_arg(a)?;
    let store = db(a)?;
    let mut tx = store.begin_write_as(a.by.as_deref().unwrap_or("cli"))?;
    let doc = tx.subject_access(id)?;
    tx.commit()?;
    print_lines(&[doc])
}

/// `erase`: erases a customer for `--reason`, optionally leaving a suppression entry (which
/// needs the store's key, `--key-file`), and prints the tombstone.
pub(crate) fn erase(a: &Args) -> Result<ExitCode, CliError> {
    let id = id_arg(a)?;
    let reason = a
        .reason
        .as_deref()
        .ok_or_else(|| CliError::Usage("erase needs --reason WHY".into()))?;
    if a.suppress && a.key_file.is_none() {
        return Err(CliError::Usage(
            "--suppress needs the store's key: --key-file KEY".into(),
        ));
    }
    let store = db(a)?;
    let mut tx = store.begin_write_as(a.by.as_deref().unwrap_or("cli"))?;
    let suppress = if a.suppress {
        Suppress::Yes
    } else {
        Suppress::No
    };
    let tombstone = tx.erase(id, reason, suppress)?;
    tx.commit()?;
    print_lines(&[tombstone])
}

/// `retention`: applies (or, with `--dry-run`, reports) the retention policy the options
/// describe, as of now.
pub(crate) fn retention(a: &Args) -> Result<ExitCode, CliError> {
    if a.apply == a.dry_run {
        return Err(CliError::Usage(
            "retention takes exactly one of --dry-run and --apply".into(),
        ));
    }
    let days = |n: Option<i64>, flag: &str| -> Result<Option<Duration>, CliError> {
        n.map(|n| {
            if n < 0 {
                Err(CliError::Usage(format!("--{flag} must not be negative")))
            } else {
                Ok(Duration::days(n))
            }
        })
        .transpose()
    };
    let inactive = if a.anonymise {
        Inactive::Anonymise
    } else {
        Inactive::Erase
    };
    let policy = RetentionPolicy {
        inactive_customers: days(a.inactive_days, "inactive-days")?.map(|d| (d, inactive)),
        activities_older_than: days(a.activity_days, "activity-days")?,
        history_older_than: days(a.history_days, "history-days")?,
    };
    if policy == RetentionPolicy::default() {
        return Err(CliError::Usage(
            "retention needs --inactive-days, --activity-days or --history-days".into(),
        ));
    }
    let store = db(a)?;
    let mut tx = store.begin_write_as(a.by.as_deref().unwrap_or("cli"))?;
    let report = tx.apply_retention(&policy, Utc::now(), a.dry_run)?;
    tx.commit()?;
    print_lines(&[json!({
        "dry_run": report.dry_run,
        "erased": report.erased,
        "anonymised": report.anonymised,
        "activities_removed": report.activities_removed,
        "history": {
            "removed": report.history.removed,
            "snapshots": report.history.snapshots,
        },
    })])
}

/// `backup`: writes a backup of the store to OUT while it stays usable, and prints what it
/// holds.
pub(crate) fn backup(a: &Args) -> Result<ExitCode, CliError> {
    let [out] = a.positional.as_slice() else {
        return Err(CliError::Usage("backup takes one OUT file".into()));
    };
    let report = db(a)?.backup_to(out)?;
    print_lines(&[json!({
        "seq": report.seq,
        "customers": report.customers,
        "entries": report.entries,
        "bytes": report.bytes,
    })])
}

/// `restore`: restores BACKUP into the new store `--db`, checks it, and prints the result.
pub(crate) fn restore(a: &Args) -> Result<ExitCode, CliError> {
    let [backup] = a.positional.as_slice() else {
        return Err(CliError::Usage("restore takes one BACKUP file".into()));
    };
    let path =
        a.db.as_ref()
            .ok_or_else(|| CliError::Usage("--db NEWPATH is required".into()))?;
    let (store, purged) = match &a.keys_from {
        None => (customerdb::Store::restore_from(backup, path)?, Vec::new()),
        Some(live) => {
            let usage =
                || CliError::Usage("--keys-from needs --key-file with the master keys".into());
            let bytes =
                std::fs::read(a.key_file.as_ref().ok_or_else(usage)?).map_err(CliError::Io)?;
            let (keys, suppression) = crate::key_file(&bytes).ok_or_else(usage)?;
            let builder = || {
                let b = customerdb::Store::builder().encryption(keys.clone());
                match &suppression {
                    Some(s) => b.suppression_key(s.clone()),
                    None => b,
                }
            };
            let live = builder().open(live)?;
            let (store, report) = builder()
                .data_keys_from(&live)
                .restore_reporting(backup, path)?;
            (store, report.purged)
        }
    };
    let report = store.verify()?;
    let tx = store.begin_read()?;
    print_lines(&[json!({
        "seq": tx.last_seq()?,
        "customers": tx.count()?,
        "purged": purged.iter().map(|id| id.as_u64()).collect::<Vec<_>>(),
        "verified": report.is_clean(),
    })])?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
