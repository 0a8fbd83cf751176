//! The `customerdb` command-line tool: standardise values, import CSV, look customers up,
//! query and segment them, find, explain, review and merge duplicates, and check a store.
//!
//! ```text
//! customerdb normalize --kind email|phone|name|address [--region CC]   < values
//! customerdb import --db PATH FILE.csv [--map column=field,...] [--lenient] [--region CC]
//! customerdb get --db PATH ID
//! customerdb find --db PATH (--email E | --phone P | --external SYSTEM:ID)
//! customerdb timeline --db PATH ID [--limit N]
//! customerdb history --db PATH ID [--limit N]
//! customerdb changes --db PATH [--since SEQ] [--limit N]
//! customerdb query --db PATH 'FILTER' [--count] [--explain] [--format json|csv] [--limit N]
//!                  [--sort FIELD[:desc]]
//! customerdb segment save --db PATH NAME 'FILTER'
//! customerdb segment list|count|members|changes --db PATH [NAME] [--format json|csv] [--since SEQ]
//! customerdb dedup --input FILE.csv --map column=field,... --id-column COL [--truth-column COL]
//!                  [--pairs OUT.csv] [--clusters OUT.csv] [--threshold P] [--region CC]
//! customerdb dedup --db PATH [--threshold P] [--train]
//! customerdb explain --db PATH ID1 ID2
//! customerdb merge --db PATH SURVIVOR OTHER... [--rule RULE] [--dry-run]
//! customerdb unmerge --db PATH MERGE_ID
//! customerdb review --db PATH [--decide A B same|different --by NAME]
//! customerdb consent --db PATH ID [--purpose P --channel C (--grant|--withdraw) --how H
//!                    [--source S] [--policy VERSION] [--by NAME]]
//! customerdb backup --db PATH OUT
//! customerdb restore BACKUP --db NEWPATH [--keys-from LIVE --key-file KEYS]
//! customerdb verify --db PATH
//! customerdb stats --db PATH
//! ```
//!
//! Results are JSON lines unless a command says otherwise. Exit codes: 0 success, 1 failure
//! (including "not found"), 2 a usage error or an argument the tool cannot read.

mod dedup;
mod merge;
mod privacy;
mod query;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use customerdb::crypt::Keys;
use customerdb::import::{CsvImport, Field, ImportMode};
use customerdb::{
    ActivityQuery, AddressParts, CountryCode, CustomerId, Email, Error, ErrorKind, Index,
    KeyProblem, PersonName, Phone, Read, Record, Store, StoreBuilder,
};
use lexopt::prelude::*;
use serde_json::{Value, json};

/// The usage text, printed with every usage error.
const USAGE: &str = "usage:
  customerdb normalize --kind email|phone|name|address [--region CC]   (values on stdin, one per line)
  customerdb import --db PATH FILE.csv [--map column=field,...] [--lenient] [--region CC]
  customerdb get --db PATH ID
  customerdb find --db PATH (--email E | --phone P | --external SYSTEM:ID)
  customerdb timeline --db PATH ID [--limit N]      (metrics, then activities, newest first)
  customerdb history --db PATH ID [--limit N]       (changes to one customer, newest first)
  customerdb changes --db PATH [--since SEQ] [--limit N]   (the change feed, oldest first)
  customerdb query --db PATH 'FILTER' [--count] [--explain] [--format json|csv] [--limit N]
                   [--sort FIELD[:desc]]
  customerdb segment save --db PATH NAME 'FILTER'
  customerdb segment list --db PATH
  customerdb segment count --db PATH NAME
  customerdb segment members --db PATH NAME [--format json|csv] [--limit N]
  customerdb segment changes --db PATH NAME --since SEQ     (who entered and left, as JSON)
  customerdb dedup --input FILE.csv --map column=field,... --id-column COL [--truth-column COL]
                   [--pairs OUT.csv] [--clusters OUT.csv] [--threshold P] [--region CC]
                   (in memory; map a column to attribute:NAME to match on it too)
  customerdb dedup --db PATH [--threshold P] [--train]     (clusters as JSON lines)
  customerdb explain --db PATH ID1 ID2                      (the pair's score, term by term)
  customerdb merge --db PATH SURVIVOR OTHER... [--dry-run]
                   [--rule survivor|most-recent|most-complete|trusted:SOURCE,...]
  customerdb unmerge --db PATH MERGE_ID
  customerdb review --db PATH [--decide A B same|different --by NAME]
  customerdb consent --db PATH ID [--purpose P --channel email|sms|phone|post|any
                   (--grant|--withdraw) --how H [--source S] [--policy VERSION] [--by NAME]]
                   (in force now and every event; records one first if asked)
  customerdb export-subject --db PATH ID [--by NAME]   (everything held on a person, as JSON;
                   logged in the access log)
  customerdb erase --db PATH ID --reason WHY [--suppress --key-file KEY] [--by NAME]
  customerdb retention --db PATH (--dry-run|--apply) [--inactive-days N [--anonymise]]
                   [--activity-days N] [--history-days N] [--by NAME]
  customerdb backup --db PATH OUT         (online: a snapshot at a change-feed position)
  customerdb restore BACKUP --db NEWPATH [--keys-from LIVE --key-file KEYS]
                                          (into a new store, then verified; an encrypted
                                          backup takes its data keys from the live store)
  customerdb verify --db PATH
  --key-file KEY   (any command) the store's secret: the suppression key, and in the key
                   format (lines `ID HEX64`, the last current) the master keys of an encrypted
                   store; `import` with one into a new store encrypts it
  customerdb stats --db PATH";

/// Why a command did not succeed.
enum CliError {
    /// Bad arguments: the message (if any) and the usage text are printed, exit code 2.
    Usage(String),
    /// An argument the tool could not read (a filter with a syntax error): the message is
    /// printed as it is, exit code 2.
    Input(String),
    /// The command ran but could not do what was asked (no such segment): exit code 1.
    Failed(String),
    /// An error from the library, printed with its causes: exit code 1.
    Db(Error),
    /// A file or terminal error: exit code 1.
    Io(std::io::Error),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Db(e)
    }
}
impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}
impl From<lexopt::Error> for CliError {
    fn from(e: lexopt::Error) -> Self {
        CliError::Usage(e.to_string())
    }
}
impl From<csv::Error> for CliError {
    fn from(e: csv::Error) -> Self {
        CliError::Io(std::io::Error::other(e))
    }
}

/// The command line, read once; each command takes what it needs.
// One flag per option the tool has; a state machine would not be clearer.
#[allow(clippy::struct_excessive_bools)]
#[derive(Default)]
struct Args {
    /// The command, the first non-option argument.
    command: String,
    /// `--db`: the store file.
    db: Option<PathBuf>,
    /// `--kind`: what `normalize` standardises.
    kind: Option<String>,
    /// `--region`: the default phone region.
    region: Option<String>,
    /// `--map`: column=field mappings, each possibly comma-separated.
    maps: Vec<String>,
    /// `--lenient`: import valid values of records that have refused ones.
    lenient: bool,
    /// `--email`: `find` by email.
    email: Option<String>,
    /// `--phone`: `find` by phone.
    phone: Option<String>,
    /// `--external`: `find` by external id.
    external: Option<String>,
    /// `--since`: a change-feed position.
    since: Option<u64>,
    /// `--limit`: at most this many results.
    limit: Option<usize>,
    /// `--count`: print how many match instead of who.
    count: bool,
    /// `--explain`: print the query plan instead of the results.
    explain: bool,
    /// `--format`: `json` or `csv`.
    format: Option<String>,
    /// `--sort`: `FIELD` or `FIELD:desc`.
    sort: Option<String>,
    /// `--input`: a CSV file to deduplicate.
    input: Option<PathBuf>,
    /// `--id-column`: the CSV column that identifies a row.
    id_column: Option<String>,
    /// `--truth-column`: the CSV column with each row's true entity.
    truth_column: Option<String>,
    /// `--pairs`: where to write the matched pairs.
    pairs: Option<PathBuf>,
    /// `--clusters`: where to write the clusters.
    clusters: Option<PathBuf>,
    /// `--threshold`: the match probability that links a pair.
    threshold: Option<f64>,
    /// `--train`: train and store the duplicate model first.
    train: bool,
    /// `--rule`: the survivorship rule of a merge.
    rule: Option<String>,
    /// `--dry-run`: show a merge plan without applying it.
    dry_run: bool,
    /// `--decide A B VERDICT`.
    decide: Vec<String>,
    /// `--by`: who decided, or who records consent.
    by: Option<String>,
    /// `--purpose`: what consent is for.
    purpose: Option<String>,
    /// `--channel`: the channel consent covers.
    channel: Option<String>,
    /// `--grant`: record consent given.
    grant: bool,
    /// `--withdraw`: record consent withdrawn.
    withdraw: bool,
    /// `--reason`: why a customer is erased.
    reason: Option<String>,
    /// `--suppress`: keep a keyed hash of an erased customer's email and phone.
    suppress: bool,
    /// `--key-file`: the store's secret key file: the suppression key, and, in the key format
    /// (`id hex-key` lines), the master keys of an encrypted store.
    key_file: Option<PathBuf>,
    /// `--keys-from`: the live store whose data keys an encrypted backup's `restore` copies.
    keys_from: Option<PathBuf>,
    /// `--apply`: carry out the retention policy (the opposite of `--dry-run`).
    apply: bool,
    /// `--inactive-days`: retention of customers with no activity for this many days.
    inactive_days: Option<i64>,
    /// `--anonymise`: anonymise inactive customers instead of erasing them.
    anonymise: bool,
    /// `--activity-days`: retention purges activities older than this.
    activity_days: Option<i64>,
    /// `--history-days`: retention compacts history older than this.
    history_days: Option<i64>,
    /// `--how`: how consent was collected (form, call, import).
    how: Option<String>,
    /// `--source`: who or what recorded consent.
    source: Option<String>,
    /// `--policy`: the policy version agreed to.
    policy: Option<String>,
    /// Non-option arguments after the command.
    positional: Vec<String>,
}

/// Reads the command line.
fn parse_args() -> Result<Args, CliError> {
    let mut p = lexopt::Parser::from_env();
    let mut a = Args::default();
    while let Some(arg) = p.next()? {
        match arg {
            Long("db") => a.db = Some(p.value()?.into()),
            Long("kind") => a.kind = Some(p.value()?.string()?),
            Long("region") => a.region = Some(p.value()?.string()?),
            Long("map") => a.maps.push(p.value()?.string()?),
            Long("lenient") => a.lenient = true,
            Long("email") => a.email = Some(p.value()?.string()?),
            Long("phone") => a.phone = Some(p.value()?.string()?),
            Long("external") => a.external = Some(p.value()?.string()?),
            Long("since") => a.since = Some(p.value()?.parse()?),
            Long("limit") => a.limit = Some(p.value()?.parse()?),
            Long("count") => a.count = true,
            Long("explain") => a.explain = true,
            Long("format") => a.format = Some(p.value()?.string()?),
            Long("sort") => a.sort = Some(p.value()?.string()?),
            Long("input") => a.input = Some(p.value()?.into()),
            Long("id-column") => a.id_column = Some(p.value()?.string()?),
            Long("truth-column") => a.truth_column = Some(p.value()?.string()?),
            Long("pairs") => a.pairs = Some(p.value()?.into()),
            Long("clusters") => a.clusters = Some(p.value()?.into()),
            Long("threshold") => a.threshold = Some(p.value()?.parse()?),
            Long("train") => a.train = true,
            Long("rule") => a.rule = Some(p.value()?.string()?),
            Long("dry-run") => a.dry_run = true,
            Long("decide") => {
                for v in p.values()? {
                    a.decide.push(v.string()?);
                }
            }
            Long("by") => a.by = Some(p.value()?.string()?),
            Long("purpose") => a.purpose = Some(p.value()?.string()?),
            Long("channel") => a.channel = Some(p.value()?.string()?),
            Long("grant") => a.grant = true,
            Long("withdraw") => a.withdraw = true,
            Long("how") => a.how = Some(p.value()?.string()?),
            Long("source") => a.source = Some(p.value()?.string()?),
            Long("policy") => a.policy = Some(p.value()?.string()?),
            Long("reason") => a.reason = Some(p.value()?.string()?),
            Long("suppress") => a.suppress = true,
            Long("key-file") => a.key_file = Some(p.value()?.into()),
            Long("keys-from") => a.keys_from = Some(p.value()?.into()),
            Long("apply") => a.apply = true,
            Long("inactive-days") => a.inactive_days = Some(p.value()?.parse()?),
            Long("anonymise") => a.anonymise = true,
            Long("activity-days") => a.activity_days = Some(p.value()?.parse()?),
            Long("history-days") => a.history_days = Some(p.value()?.parse()?),
            Short('h') | Long("help") => return Err(CliError::Usage(String::new())),
            Value(v) if a.command.is_empty() => a.command = v.string()?,
            Value(v) => a.positional.push(v.string()?),
            _ => return Err(arg.unexpected().into()),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|a| run(&a));
    match result {
        Ok(code) => code,
        Err(CliError::Usage(msg)) => {
            if !msg.is_empty() {
                eprintln!("error: {msg}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Input(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
        Err(CliError::Db(e)) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
        Err(CliError::Io(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Opens the store `--db` names (creating it for `import`).
fn db(a: &Args) -> Result<Store, CliError> {
    let path =
        a.db.as_ref()
            .ok_or_else(|| CliError::Usage("--db PATH is required".into()))?;
    let secret = a
        .key_file
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .map_err(CliError::Io)?;
    // A key file in the key format (`id hex-key` lines) holds the master keys of an encrypted
    // store; `import` into a new store then encrypts it. Its suppression key is its own
    // `suppression hex-key` line, not the file's bytes: adding a master key line for a
    // rotation must not change it (existing suppressions would silently stop matching), and
    // it shares nothing with the master keys. Any other file is the suppression key whole.
    let (keys, suppression) = match secret.as_deref().and_then(key_file) {
        Some((keys, suppression)) => (Some(keys), suppression),
        None => (None, secret.clone()),
    };
    let builder = |encrypted: bool| {
        let mut b = Store::builder();
        if let Some(r) = &a.region {
            b = b.default_region(r);
        }
        if let Some(k) = &suppression {
            b = b.suppression_key(k.clone());
        }
        if let (true, Some(k)) = (encrypted, &keys) {
            b = b.encryption(k.clone());
        }
        b
    };
    let open = |b: StoreBuilder| {
        if a.command == "import" {
            b.create(path)
        } else {
            b.open(path)
        }
    };
    match open(builder(true)) {
        // A plain store: the file is its suppression key only.
        Err(e) if e.kind() == &ErrorKind::Key(KeyProblem::NotEncrypted) => {
            Ok(open(builder(false))?)
        }
        other => Ok(other?),
    }
}

/// A key file in the key format: its master keys, and the suppression key of its
/// `suppression` line (64 hexadecimal digits) if it has one. `None` if it is not in the key
/// format.
fn key_file(bytes: &[u8]) -> Option<(Keys, Option<Vec<u8>>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut suppression = None;
    let mut master = zeroize::Zeroizing::new(String::new());
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("suppression"), Some(hex), None) => suppression = Some(from_hex(hex)?),
            (Some("suppression"), ..) => return None,
            _ => {
                master.push_str(line);
                master.push('\n');
            }
        }
    }
    Some((Keys::parse(&master).ok()?, suppression))
}

/// The 32 bytes written as 64 hexadecimal digits in `hex`.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `find`: the customers with an email, a phone or an external id.
fn find(a: &Args) -> Result<ExitCode, CliError> {
    let tx = db(a)?.begin_read()?;
    let found = if let Some(e) = &a.email {
        tx.find_by_email(e)?.into_iter().collect()
    } else if let Some(p) = &a.phone {
        tx.find_by_phone(p)?
    } else if let Some(x) = &a.external {
        let (system, id) = x
            .split_once(':')
            .ok_or_else(|| CliError::Usage("--external takes SYSTEM:ID".into()))?;
        tx.find_by_external_id(system, id)?.into_iter().collect()
    } else {
        return Err(CliError::Usage(
            "find needs --email, --phone or --external".into(),
        ));
    };
    print_found(found)
}

/// Runs the command.
fn run(a: &Args) -> Result<ExitCode, CliError> {
    match a.command.as_str() {
        "normalize" => normalize(a),
        "import" => import(a),
        "get" => {
            let id = id_arg(a)?;
            let tx = db(a)?.begin_read()?;
            print_found(tx.get(id)?.into_iter().collect())
        }
        "timeline" => {
            let id = id_arg(a)?;
            let tx = db(a)?.begin_read()?;
            let limit = a.limit.unwrap_or(50);
            print_lines(&[json!({ "metrics": tx.metrics(id)? })])?;
            print_lines(&tx.timeline(id, &ActivityQuery::new().limit(limit))?)
        }
        "history" => {
            let id = id_arg(a)?;
            let tx = db(a)?.begin_read()?;
            print_lines(&tx.history(id, None, a.limit.unwrap_or(50))?)
        }
        "changes" => {
            let tx = db(a)?.begin_read()?;
            print_lines(&tx.changes(a.since.unwrap_or(0), a.limit.unwrap_or(1000))?)
        }
        "find" => find(a),
        "verify" => {
            let report = db(a)?.verify()?;
            println!(
                "{} records, {} index entries, {} unique entries: {}",
                report.records,
                report.entries,
                report.unique_entries,
                if report.is_clean() {
                    "clean"
                } else {
                    "PROBLEMS FOUND"
                }
            );
            for p in &report.problems {
                println!("  {p:?}");
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "stats" => {
            let path = a.db.clone().unwrap_or_default();
            let tx = db(a)?.begin_read()?;
            println!("customers: {}", tx.count()?);
            for index in Index::BUILTIN {
                println!(
                    "index {:<16} {:>10} entries",
                    index.name(),
                    tx.index_len(&index)?
                );
            }
            for def in tx.schema()?.iter() {
                let entries = if def.is_indexed() {
                    tx.index_len(&Index::Attribute(def.name.clone()))?
                        .to_string()
                } else {
                    "not indexed".into()
                };
                println!("attribute {} ({}): {entries}", def.name, def.ty);
            }
            println!("file bytes: {}", std::fs::metadata(path)?.len());
            Ok(ExitCode::SUCCESS)
        }
        "query" => query::query(a),
        "segment" => query::segment(a),
        "dedup" => dedup::dedup(a),
        "explain" => dedup::explain(a),
        "merge" => merge::merge(a),
        "unmerge" => merge::unmerge(a),
        "review" => merge::review(a),
        "consent" => privacy::consent(a),
        "export-subject" => privacy::export_subject(a),
        "erase" => privacy::erase(a),
        "retention" => privacy::retention(a),
        "backup" => privacy::backup(a),
        "restore" => privacy::restore(a),
        "" => Err(CliError::Usage(String::new())),
        other => Err(CliError::Usage(format!("unknown command \"{other}\""))),
    }
}

/// The customer id, the first positional argument.
fn id_arg(a: &Args) -> Result<CustomerId, CliError> {
    a.positional
        .first()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CliError::Usage(format!("{} needs a numeric customer ID", a.command)))
}

/// The customer ids among the positional arguments from `from` on, at least `min` of them.
fn id_args(a: &Args, from: usize, min: usize, what: &str) -> Result<Vec<CustomerId>, CliError> {
    let ids = a
        .positional
        .iter()
        .skip(from)
        .map(|s| {
            s.parse()
                .map_err(|_| CliError::Usage(format!("\"{s}\" is not a customer ID")))
        })
        .collect::<Result<Vec<CustomerId>, _>>()?;
    if ids.len() < min {
        return Err(CliError::Usage(format!("{} needs {what}", a.command)));
    }
    Ok(ids)
}

/// The `--map` options as (column, field) pairs.
fn mapping(a: &Args) -> Result<Vec<(String, Field)>, CliError> {
    a.maps
        .iter()
        .flat_map(|m| m.split(','))
        .map(|spec| {
            let (column, field) = spec.split_once('=').ok_or_else(|| {
                CliError::Usage(format!("--map takes column=field, got \"{spec}\""))
            })?;
            let field = Field::parse(field)
                .ok_or_else(|| CliError::Usage(format!("unknown field \"{field}\" in --map")))?;
            Ok((column.to_owned(), field))
        })
        .collect()
}

/// Whether `--format` asks for CSV (`json`, the default, otherwise).
fn csv_format(a: &Args) -> Result<bool, CliError> {
    match a.format.as_deref() {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(CliError::Usage(format!(
            "--format must be json or csv, got \"{other}\""
        ))),
    }
}

/// Prints each item as one line of JSON.
fn print_lines<T: serde::Serialize>(items: &[T]) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(std::io::Error::other)?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints customers as pretty JSON, or "not found" with exit code 1 if there are none.
fn print_found(found: Vec<Record>) -> Result<ExitCode, CliError> {
    if found.is_empty() {
        eprintln!("not found");
        return Ok(ExitCode::FAILURE);
    }
    let mut out = std::io::stdout().lock();
    for rec in found {
        serde_json::to_writer_pretty(&mut out, &rec).map_err(std::io::Error::other)?;
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A library error as a JSON object for `normalize`'s output.
fn error_json(e: &Error) -> Value {
    match e.kind() {
        ErrorKind::Invalid { field, reason, .. } => json!({
            "kind": e.code(), "field": field, "reason": reason.code(), "message": e.to_string(),
        }),
        _ => json!({ "kind": e.code(), "field": null, "reason": null, "message": chain(e) }),
    }
}

/// What `normalize --kind` standardises.
#[derive(Clone, Copy)]
enum Kind {
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A person's name.
    Name,
    /// A postal address, as a JSON object.
    Address,
}

impl Kind {
    /// The kind called `s`.
    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "email" => Kind::Email,
            "phone" => Kind::Phone,
            "name" => Kind::Name,
            "address" => Kind::Address,
            _ => return None,
        })
    }
}

/// Standardises one value as `kind`.
fn normalize_one(kind: Kind, input: &str, region: Option<CountryCode>) -> Result<Value, Error> {
    Ok(match kind {
        Kind::Email => {
            let e = Email::parse(input)?;
            json!({ "normalized": e.as_str(), "ascii": e.ascii(), "match_key": e.match_key() })
        }
        Kind::Phone => {
            let p = Phone::parse(input, region)?;
            json!({ "normalized": p.e164(), "kind": p.kind().as_str(),
                    "region": p.region().map(|r| r.as_str().to_owned()) })
        }
        Kind::Name => {
            let n = PersonName::parse(input)?;
            json!({ "normalized": n.display(), "prefix": n.prefix(), "given": n.given(),
                    "middle": n.middle(), "family": n.family(), "suffix": n.suffix(),
                    "given_key": n.given_key(), "family_key": n.family_key(),
                    "family_phonetic": n.family_phonetic() })
        }
        Kind::Address => {
            let v: Value = serde_json::from_str(input).map_err(|_| {
                Error::from(ErrorKind::Invalid {
                    field: "address".into(),
                    value: input.into(),
                    reason: customerdb::normalize::Reason::Malformed,
                })
            })?;
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            let lines = match v.get("lines") {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            };
            let a = customerdb::Address::parse(AddressParts {
                lines,
                locality: text("locality"),
                region: text("region"),
                postcode: text("postcode"),
                country: text("country"),
            })?;
            json!({ "normalized": { "lines": a.lines(), "locality": a.locality(), "region": a.region(),
                    "postcode": a.postcode(), "country": a.country().map(|c| c.as_str().to_owned()) },
                    "locality_key": a.locality_key(), "postcode_key": a.postcode_key() })
        }
    })
}

/// `normalize`: standardises each line of stdin.
fn normalize(a: &Args) -> Result<ExitCode, CliError> {
    let kind =
        a.kind.as_deref().and_then(Kind::parse).ok_or_else(|| {
            CliError::Usage("--kind must be email, phone, name or address".into())
        })?;
    let region = a.region.as_deref().map(CountryCode::parse).transpose()?;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lines() {
        let line = line?;
        let line = line.trim_end_matches('\r');
        let obj = match normalize_one(kind, line, region) {
            Ok(Value::Object(mut m)) => {
                let mut o = serde_json::Map::new();
                o.insert("input".into(), line.into());
                o.insert("ok".into(), true.into());
                o.append(&mut m);
                Value::Object(o)
            }
            Ok(other) => other,
            Err(e) => json!({ "input": line, "ok": false, "error": error_json(&e) }),
        };
        serde_json::to_writer(&mut out, &obj).map_err(std::io::Error::other)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `import`: stores the customers of a CSV file.
fn import(a: &Args) -> Result<ExitCode, CliError> {
    let file = a
        .positional
        .first()
        .ok_or_else(|| CliError::Usage("import needs a CSV file".into()))?;
    let store = db(a)?;
    let mut job = CsvImport::new().mode(if a.lenient {
        ImportMode::Lenient
    } else {
        ImportMode::Strict
    });
    for (column, field) in mapping(a)? {
        job = job.map(column, field);
    }
    if std::io::stderr().is_terminal() {
        let total = std::fs::read(file).map_or(0, |b| bytecount_lines(&b));
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} records {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let b = bar.clone();
        job = job.batch_size(2_000).progress(move |n| b.set_position(n));
        let report = job.run(&store, std::fs::File::open(file)?);
        bar.finish_and_clear();
        Ok(print_report(&report?))
    } else {
        Ok(print_report(&job.run(&store, std::fs::File::open(file)?)?))
    }
}

/// The number of records in a CSV file's bytes (lines less the header), for the progress bar.
#[allow(clippy::naive_bytecount)] // once per import, not worth a dependency
fn bytecount_lines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count().saturating_sub(1) as u64
}

/// Prints an import report.
fn print_report(r: &customerdb::import::ImportReport) -> ExitCode {
    let partial = r.rejected.iter().filter(|x| x.stored).count();
    println!(
        "read {} records: stored {} ({} in part), rejected {}",
        r.read,
        r.stored,
        partial,
        r.rejected.len() - partial
    );
    for rej in &r.rejected {
        for e in &rej.errors {
            println!(
                "line {}: {}{}",
                rej.line,
                if rej.stored {
                    "(stored without this value) "
                } else {
                    ""
                },
                chain(e)
            );
        }
    }
    ExitCode::SUCCESS
}
