//! Guards the `customerdb` command line as a user runs it: the built binary against a store
//! file and CSV files in a temporary directory, for queries and their syntax errors, saved
//! segments, deduplicating a CSV against its truth column, explaining a pair, merging,
//! unmerging and reviewing. Exit codes are part of the contract: 2 for usage errors.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

use customerdb::{Checked, Customer, OnDuplicate, Read, Store};
use serde_json::Value;

type Result<T = ()> = std::result::Result<T, Box<dyn Error>>;

/// What a run of the binary printed, and its exit code.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli(args: &[&str]) -> Result<Out> {
    let out = Command::new(env!("CARGO_BIN_EXE_customerdb"))
        .args(args)
        .output()?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    })
}

/// Runs the binary and insists that it succeeds.
fn ok(args: &[&str]) -> Result<String> {
    let out = cli(args)?;
    assert_eq!(out.code, 0, "{args:?} failed: {}", out.stderr);
    Ok(out.stdout)
}

fn json_lines(s: &str) -> Result<Vec<Value>> {
    Ok(s.lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

const CUSTOMERS: &str = "\
name,email,phone,country,tags,stage
Ada Lovelace,ada@example.com,+442079460018,GB,vip;gold,customer
Alan Turing,alan@example.com,,GB,,lead
Grace Hopper,grace@example.com,+12015550123,US,vip,customer
";

/// `erase` of customer `id` ("asked"), suppressing it with the key file `key`.
fn erase_suppressing(db: &str, id: &str, key: &Path) -> Result<String> {
    ok(&[
        "erase",
        "--db",
        db,
        id,
        "--reason",
        "asked",
        "--suppress",
        "--key-file",
        &path(key),
    ])
}

/// A store imported from [`CUSTOMERS`] through the CLI (ids 1, 2, 3 in row order).
fn imported(dir: &Path) -> Result<String> {
    let csv = dir.join("customers.csv");
    std::fs::write(&csv, CUSTOMERS)?;
    let db = path(&dir.join("crm.redb"));
    let report = ok(&["import", "--db", &db, &path(&csv)])?;
    assert!(report.starts_with("read 3 records: stored 3"), "{report}");
    Ok(db)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn query_prints_counts_customers_csv_and_the_plan() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    assert_eq!(
        ok(&["query", "--db", &db, r#"tag = "vip""#, "--count"])?,
        "2\n"
    );

    let found = json_lines(&ok(&[
        "query",
        "--db",
        &db,
        r#"country = "GB""#,
        "--sort",
        "name:desc",
    ])?)?;
    let names: Vec<&str> = found
        .iter()
        .filter_map(|r| r["customer"]["name"]["display"].as_str())
        .collect();
    assert_eq!(names, ["Alan Turing", "Ada Lovelace"]);

    let csv = ok(&[
        "query",
        "--db",
        &db,
        r#"tag = "vip""#,
        "--format",
        "csv",
        "--limit",
        "1",
    ])?;
    assert_eq!(
        csv,
        "id,name,email,phone,country,stage,tags\n\
         1,Ada Lovelace,ada@example.com,+442079460018,GB,customer,gold;vip\n"
    );

    let plan = ok(&["query", "--db", &db, r#"country = "GB""#, "--explain"])?;
    assert!(plan.contains("index country"), "{plan}");
    Ok(())
}

#[test]
fn a_filter_syntax_error_shows_its_position_with_a_caret() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    let out = cli(&["query", "--db", &db, "country = and x"])?;
    assert_eq!(out.code, 2);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("at byte 10: expected a value"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("  country = and x\n            ^ expected a value"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[test]
fn usage_errors_exit_with_2() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    for args in [
        &["merge", "--db", &db, "1"][..],
        &["query", "--db", &db, "tag = \"vip\"", "--format", "xml"],
        &["segment", "--db", &db, "rename"],
        &["dedup"],
        &[
            "review", "--db", &db, "--decide", "1", "2", "maybe", "--by", "ana",
        ],
    ] {
        let out = cli(args)?;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("usage:"), "{}", out.stderr);
    }
    Ok(())
}

#[test]
fn segments_are_saved_listed_counted_and_their_members_and_changes_printed() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    ok(&["segment", "save", "--db", &db, "vips", r#"tag = "vip""#])?;
    let list = json_lines(&ok(&["segment", "list", "--db", &db])?)?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "vips");
    assert_eq!(list[0]["filter"], r#"tag = "vip""#);
    assert_eq!(ok(&["segment", "count", "--db", &db, "vips"])?, "2\n");
    let members = ok(&["segment", "members", "--db", &db, "vips", "--format", "csv"])?;
    let ids: Vec<&str> = members
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(ids, ["1", "3"]);
    let changes = json_lines(&ok(&[
        "segment", "changes", "--db", &db, "vips", "--since", "0",
    ])?)?;
    assert_eq!(changes[0]["entered"], serde_json::json!([1, 3]));
    let missing = cli(&["segment", "count", "--db", &db, "nope"])?;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("no segment named \"nope\""));
    Ok(())
}

/// Three people, two of them entered twice or three times with typos, nicknames and a
/// shared email; `cluster` is the truth.
const PEOPLE: &str = "\
rec,first_name,surname,dob,city,email,cluster
a1,Robert,Smith,1971-06-24,London,robert.smith@example.com,1
a2,Bob,Smith,1971-06-24,London,bob.smith@example.org,1
a3,Robert,Smyth,1971-06-24,,robert.smith@example.com,1
b1,Margaret,Jones,1985-02-11,Leeds,maggie@example.net,2
b2,Maggie,Jones,1985-02-11,Leeds,maggie@example.net,2
c1,Alice,Walker,1990-09-30,York,alice.walker@example.com,3
d1,Thomas,Brown,1962-12-01,Bath,tom.brown@example.com,4
e1,Susan,Clark,1978-04-17,Hull,s.clark@example.com,5
";

#[test]
fn dedup_of_a_csv_writes_pairs_and_clusters_and_prints_the_figures() -> Result {
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("people.csv");
    std::fs::write(&input, PEOPLE)?;
    let (pairs, clusters) = (
        dir.path().join("pairs.csv"),
        dir.path().join("clusters.csv"),
    );
    let report = ok(&[
        "dedup",
        "--input",
        &path(&input),
        "--map",
        "city=locality",
        "--id-column",
        "rec",
        "--truth-column",
        "cluster",
        "--pairs",
        &path(&pairs),
        "--clusters",
        &path(&clusters),
        "--threshold",
        "0.5",
    ])?;
    for figure in [
        "records: 8 read",
        "candidate pairs:",
        "pairwise: precision",
        "F1",
        "b-cubed:",
        "pair completeness",
        "time:",
    ] {
        assert!(report.contains(figure), "{figure} missing from\n{report}");
    }
    let pairs = std::fs::read_to_string(pairs)?;
    assert!(pairs.starts_with("id_a,id_b,probability\n"), "{pairs}");
    let clusters = std::fs::read_to_string(clusters)?;
    let mut lines = clusters.lines();
    assert_eq!(lines.next(), Some("cluster,id"));
    let of: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(',')).collect();
    assert_eq!(of.len(), 8, "every row has a cluster");
    let cluster_of = |id: &str| of.iter().find(|(_, r)| *r == id).map(|(c, _)| *c);
    // Rows sharing an email are one customer to the store's unique index, whatever the model.
    assert_eq!(cluster_of("a1"), cluster_of("a3"));
    assert_eq!(cluster_of("b1"), cluster_of("b2"));
    assert_ne!(cluster_of("c1"), cluster_of("d1"));
    // Each linked pair once, scored by the model where it scored it.
    let a1_a3 = pairs.lines().filter(|l| l.starts_with("a1,a3,")).count();
    assert_eq!(a1_a3, 1, "{pairs}");
    Ok(())
}

/// Margaret Jones under a given name and an email; the phone and birth date are shared.
fn jones(given: &str, email: &str) -> customerdb::CustomerBuilder {
    Customer::builder()
        .given_name(given)
        .family_name("Jones")
        .email(email)
        .phone("+447400123456")
        .birth_date(chrono::NaiveDate::from_ymd_opt(1985, 2, 11).unwrap())
}

/// A store file holding Margaret Jones, Ada, and Maggie Jones, who was flagged on insert as
/// probably Margaret.
fn flagged(dir: &Path) -> Result<(PathBuf, u64, u64)> {
    let file = dir.join("dups.redb");
    let store = Store::create(&file)?;
    let mut tx = store.begin_write()?;
    let margaret = tx.insert(jones("Margaret", "margaret.jones@example.com"))?;
    tx.insert(
        Customer::builder()
            .name("Ada Lovelace")
            .email("ada@example.com"),
    )?;
    let Checked::Inserted(maggie, found) = tx.insert_checked(
        jones("Maggie", "mj@work.example.org"),
        OnDuplicate::Flag(0.0),
    )?
    else {
        panic!("flagging never merges");
    };
    assert_eq!(found.first().map(|d| d.id), Some(margaret));
    tx.commit()?;
    Ok((file, margaret.as_u64(), maggie.as_u64()))
}

#[test]
fn explain_merge_unmerge_and_review_work_on_a_store() -> Result {
    let dir = tempfile::tempdir()?;
    let (file, margaret, maggie) = flagged(dir.path())?;
    let db = path(&file);
    let (m, mg) = (margaret.to_string(), maggie.to_string());

    let pending = json_lines(&ok(&["review", "--db", &db])?)?;
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0]["a"].as_u64(), pending[0]["b"].as_u64()),
        (Some(margaret), Some(maggie))
    );

    let why = ok(&["explain", "--db", &db, &m, &mg])?;
    assert!(
        why.contains("given name") && why.contains("nickname"),
        "{why}"
    );
    assert!(
        why.contains("total") && why.contains("probability"),
        "{why}"
    );

    let plan = json_lines(&ok(&[
        "merge",
        "--db",
        &db,
        &m,
        &mg,
        "--dry-run",
        "--rule",
        "most-complete",
    ])?)?;
    assert_eq!(plan.len(), 1, "a dry run prints the plan only");
    assert_eq!(plan[0]["survivor"].as_u64(), Some(margaret));
    assert_eq!(
        plan[0]["result"]["emails"].as_array().map(Vec::len),
        Some(2)
    );
    let still = json_lines(&ok(&["query", "--db", &db, r#"family_name = "Jones""#])?)?;
    assert_eq!(still.len(), 2, "a dry run writes nothing");

    let merged = json_lines(&ok(&["merge", "--db", &db, &m, &mg])?)?;
    let merge_id = merged[1]["merge"]
        .as_u64()
        .ok_or("no merge id")?
        .to_string();
    let joneses = ok(&["query", "--db", &db, r#"family_name = "Jones""#, "--count"])?;
    assert_eq!(joneses, "1\n");
    ok(&["unmerge", "--db", &db, &merge_id])?;
    let joneses = ok(&["query", "--db", &db, r#"family_name = "Jones""#, "--count"])?;
    assert_eq!(joneses, "2\n");

    let decided = ok(&[
        "review",
        "--db",
        &db,
        "--decide",
        &m,
        &mg,
        "different",
        "--by",
        "ana",
    ])?;
    assert!(decided.contains("different (by ana)"), "{decided}");
    assert!(ok(&["review", "--db", &db])?.is_empty(), "nothing pending");
    let store = Store::open(&file)?;
    let queue = store.begin_read()?.review_queue(false)?;
    assert!(queue.iter().any(|i| i.decided_by.as_deref() == Some("ana")));
    Ok(())
}

#[test]
fn consent_is_shown_granted_and_withdrawn_with_its_evidence() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    let shown = json_lines(&ok(&["consent", "--db", &db, "1"])?)?;
    assert_eq!(shown[0]["history"], serde_json::json!([]));
    let granted = json_lines(&ok(&[
        "consent",
        "--db",
        &db,
        "1",
        "--purpose",
        "Marketing",
        "--channel",
        "email",
        "--grant",
        "--how",
        "web_form",
        "--source",
        "shop",
        "--policy",
        "v3",
    ])?)?;
    assert_eq!(granted[0]["in_force"][0]["status"], "granted");
    assert_eq!(granted[0]["in_force"][0]["purpose"], "marketing");
    assert_eq!(granted[0]["in_force"][0]["policy_version"], "v3");
    let withdrawn = json_lines(&ok(&[
        "consent",
        "--db",
        &db,
        "1",
        "--purpose",
        "marketing",
        "--channel",
        "email",
        "--withdraw",
        "--how",
        "call",
        "--by",
        "ana",
    ])?)?;
    assert_eq!(withdrawn[0]["in_force"][0]["status"], "withdrawn");
    assert_eq!(withdrawn[0]["history"].as_array().map(Vec::len), Some(2));
    // The segment filter sees the withdrawal.
    let n = ok(&["query", "--db", &db, "consent(email, marketing)", "--count"])?;
    assert_eq!(n.trim(), "0");
    let history = json_lines(&ok(&["history", "--db", &db, "1"])?)?;
    assert_eq!(history[0]["actor"], "ana");
    // Usage errors: both verbs, or a change without its evidence or with a bad channel.
    let change = ["--purpose", "x", "--grant"];
    for extra in [
        &["--grant", "--withdraw"][..],
        &["--channel", "email"][..],
        &["--channel", "fax", "--how", "form"][..],
    ] {
        let mut args = vec!["consent", "--db", &db, "1"];
        args.extend(change);
        args.extend(extra);
        assert_eq!(cli(&args)?.code, 2, "{args:?}");
    }
    Ok(())
}

#[test]
fn backup_and_restore_make_a_verified_copy_and_refuse_a_damaged_file() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    let backup = path(&dir.path().join("crm.backup"));
    let report = json_lines(&ok(&["backup", "--db", &db, &backup])?)?;
    assert_eq!(report[0]["customers"], 3);
    let copy = path(&dir.path().join("copy.redb"));
    let restored = json_lines(&ok(&["restore", &backup, "--db", &copy])?)?;
    assert_eq!(restored[0]["customers"], 3);
    assert_eq!(restored[0]["verified"], true);
    assert_eq!(restored[0]["seq"], report[0]["seq"]);
    let found = ok(&["find", "--db", &copy, "--email", "grace@example.com"])?;
    assert!(found.contains("Grace Hopper"));
    // Restoring over an existing store, or from a damaged file, fails without a panic.
    assert_eq!(cli(&["restore", &backup, "--db", &copy])?.code, 1);
    let mut bytes = std::fs::read(&backup)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&backup, &bytes)?;
    let damaged = cli(&[
        "restore",
        &backup,
        "--db",
        &path(&dir.path().join("x.redb")),
    ])?;
    assert_eq!(damaged.code, 1);
    assert!(damaged.stderr.contains("corrupted"), "{}", damaged.stderr);
    assert_eq!(cli(&["backup", "--db", &db])?.code, 2);
    Ok(())
}

#[test]
fn export_subject_erase_and_retention_answer_a_person_and_the_policy() -> Result {
    let dir = tempfile::tempdir()?;
    let db = imported(dir.path())?;
    let found: Value =
        serde_json::from_str(&ok(&["find", "--db", &db, "--email", "grace@example.com"])?)?;
    let id = found["id"].to_string();
    let doc = json_lines(&ok(&["export-subject", "--db", &db, &id, "--by", "dpo"])?)?;
    assert!(doc[0].to_string().contains("grace@example.com"));

    // Suppression needs the key; a dry run changes nothing.
    assert_eq!(
        cli(&["erase", "--db", &db, &id, "--reason", "asked", "--suppress"])?.code,
        2
    );
    assert_eq!(cli(&["erase", "--db", &db, &id])?.code, 2);
    let key = dir.path().join("key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef")?;
    let tomb = json_lines(&erase_suppressing(&db, &id, &key)?)?;
    assert_eq!(tomb[0]["reason"], "asked");
    assert_eq!(cli(&["export-subject", "--db", &db, &id])?.code, 1);
    assert_eq!(
        cli(&["find", "--db", &db, "--email", "grace@example.com"])?.code,
        1
    );

    // Nobody has any activity, so every customer is inactive for a day.
    let args = [
        "retention",
        "--db",
        &db,
        "--inactive-days",
        "0",
        "--anonymise",
    ];
    assert_eq!(cli(&args)?.code, 2, "needs --dry-run or --apply");
    let dry = json_lines(&ok(&[&args[..], &["--dry-run"]].concat())?)?;
    assert_eq!(dry[0]["dry_run"], true);
    let anonymised = dry[0]["anonymised"].as_array().map_or(0, Vec::len);
    assert_eq!(anonymised, 2, "{dry:?}");
    assert!(ok(&["find", "--db", &db, "--email", "ada@example.com"])?.contains("Ada"));
    let applied = json_lines(&ok(&[&args[..], &["--apply"]].concat())?)?;
    assert_eq!(applied[0]["anonymised"], dry[0]["anonymised"]);
    assert_eq!(
        cli(&["find", "--db", &db, "--email", "ada@example.com"])?.code,
        1
    );
    Ok(())
}

#[test]
fn a_key_file_in_the_key_format_encrypts_an_imported_store() -> Result {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, CUSTOMERS)?;
    let key = dir.path().join("keys");
    std::fs::write(&key, format!("# master keys\n1 {}\n", "3c".repeat(32)))?;
    let db = path(&dir.path().join("enc.redb"));
    let report = ok(&[
        "import",
        "--db",
        &db,
        &path(&csv),
        "--key-file",
        &path(&key),
    ])?;
    assert!(report.starts_with("read 3 records: stored 3"), "{report}");
    // The file is encrypted: without the key the store does not open.
    assert!(matches!(
        Store::open(&db).unwrap_err().kind(),
        customerdb::ErrorKind::Key(customerdb::KeyProblem::Missing)
    ));
    assert_eq!(
        cli(&["find", "--db", &db, "--email", "grace@example.com"])?.code,
        1
    );
    let found = ok(&[
        "find",
        "--db",
        &db,
        "--email",
        "GRACE@example.com",
        "--key-file",
        &path(&key),
    ])?;
    assert!(found.contains("Grace"), "{found}");
    assert!(ok(&["verify", "--db", &db, "--key-file", &path(&key)])?.contains("clean"));
    Ok(())
}

#[test]
fn the_suppression_key_of_a_key_file_survives_adding_a_master_key() -> Result {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("customers.csv");
    std::fs::write(&csv, CUSTOMERS)?;
    let key = dir.path().join("keys");
    let first = format!("1 {}\nsuppression {}\n", "3c".repeat(32), "5a".repeat(32));
    std::fs::write(&key, &first)?;
    let db = path(&dir.path().join("enc.redb"));
    let import = |key: &Path| ok(&["import", "--db", &db, &path(&csv), "--key-file", &path(key)]);
    import(&key)?;
    let find_grace = || {
        let args = ["--email", "grace@example.com", "--key-file", &path(&key)];
        cli(&[&["find", "--db", &db][..], &args[..]].concat())
    };
    let found: Value = serde_json::from_str(&find_grace()?.stdout)?;
    let id = found["id"].to_string();
    erase_suppressing(&db, &id, &key)?;
    // A master key line added for a rotation leaves the suppression key as it was.
    std::fs::write(&key, format!("{first}2 {}\n", "4d".repeat(32)))?;
    let backup = path(&dir.path().join("after.backup"));
    ok(&["backup", "--db", &db, &backup, "--key-file", &path(&key)])?;
    // Erased after the backup: the restore purges it.
    let erase = ["erase", "--db", &db, "1", "--reason", "asked"];
    ok(&[&erase[..], &["--key-file", &path(&key)]].concat())?;
    let report = import(&key)?;
    let found = find_grace()?;
    assert_eq!(
        found.code, 1,
        "the erased person was imported again: {report}"
    );
    // An encrypted backup restores with the live store as the source of data keys.
    let restore = |to: &str, extra: &[&str]| {
        let to = path(&dir.path().join(to));
        cli(&[&["restore", &backup, "--db", &to][..], extra].concat())
    };
    assert_ne!(restore("no-keys.redb", &[])?.code, 0);
    let restored = restore(
        "copy.redb",
        &["--keys-from", &db, "--key-file", &path(&key)],
    )?;
    let out = json_lines(&restored.stdout)?;
    assert_eq!(out[0]["customers"], 1, "{}", restored.stderr);
    assert_eq!(out[0]["purged"], serde_json::json!([1]));
    assert_eq!(out[0]["verified"], true);
    Ok(())
}
