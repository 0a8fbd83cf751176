//! Duplicate detection measured against known answers: FEBRL 1 and 2 and `fake_1000` for
//! quality, 100,000 synthetic customers for speed. Unsupervised (no labels used), one fixed
//! seed. Exits non-zero if a quality gate fails.
//!
//! `cargo run --release --example dedup_eval` (needs `../shared/data` beside the crate).
//!
//! `cargo run --release --example dedup_eval -- --scale 1000000` instead generates that many
//! customers with known duplicates (`sample::Duplicates`), runs the batch matching on them and
//! prints its time, the peak resident memory and pairwise P/R/F1 (too slow for every CI run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::NaiveDate;
use customerdb::dedup::{BlockingRule, ClusterSettings, MatchRecord, Matcher, Run, eval};
use customerdb::{Address, AddressParts, AttributeType, Customer, CustomerBuilder, Read, Store};

/// Minimum pairwise F1 per dataset: a little under what this version reaches (see README).
const GATES: [(&str, f64); 5] = [
    ("febrl1", 0.99),
    ("febrl2", 0.99),
    ("store:febrl2", 0.98),
    ("fake_1000", 0.86),
    ("synthetic_100k", 0.98),
];

type Row = HashMap<String, String>;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

fn read_csv(rel: &str) -> Vec<Row> {
    let mut r = csv::Reader::from_path(data(rel)).expect("data file (../shared/data)");
    let headers = r.headers().expect("header").clone();
    r.records()
        .map(|rec| {
            let rec = rec.expect("csv record");
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_owned(), v.trim().to_owned()))
                .collect()
        })
        .collect()
}

/// Adds the address if it parses; a postcode that does not fit its country is dropped rather
/// than the whole address.
fn with_address(b: CustomerBuilder, mut parts: AddressParts) -> CustomerBuilder {
    if Address::parse(parts.clone()).is_err() {
        parts.postcode = None;
    }
    if Address::parse(parts.clone()).is_ok() {
        b.address(parts)
    } else {
        b
    }
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Standardises rows into comparison records on every core; refused values are dropped
/// (the lenient builder), never the record.
fn records<T: Sync>(rows: &[T], map: fn(&T) -> CustomerBuilder) -> Vec<MatchRecord> {
    let chunk = rows.len().div_ceil(2).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = rows
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|r| MatchRecord::new(&map(r).build_lenient().0))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("worker"))
            .collect()
    })
}

fn febrl(r: &Row) -> CustomerBuilder {
    let mut b = Customer::builder()
        .given_name(&r["given_name"])
        .family_name(&r["surname"]);
    if let Ok(d) = NaiveDate::parse_from_str(&r["date_of_birth"], "%Y%m%d") {
        b = b.birth_date(d);
    }
    if !r["soc_sec_id"].is_empty() {
        b = b.attribute("soc_sec_id", r["soc_sec_id"].as_str());
    }
    let street = format!("{} {}", r["street_number"], r["address_1"]);
    let lines = [street.trim(), &r["address_2"]]
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let (locality, region, postcode) = (opt(&r["suburb"]), opt(&r["state"]), opt(&r["postcode"]));
    with_address(
        b,
        AddressParts {
            lines,
            locality,
            region,
            postcode,
            country: Some("AU".into()),
        },
    )
}

fn fake(r: &Row) -> CustomerBuilder {
    let mut b = Customer::builder()
        .given_name(&r["first_name"])
        .family_name(&r["surname"])
        .email(&r["email"]);
    if let Ok(d) = NaiveDate::parse_from_str(&r["dob"], "%Y-%m-%d") {
        b = b.birth_date(d);
    }
    with_address(
        b,
        AddressParts {
            locality: opt(&r["city"]),
            ..AddressParts::default()
        },
    )
}

fn synthetic(r: &Row) -> CustomerBuilder {
    let country = match r["country"].as_str() {
        "United States" => "US",
        "United Kingdom" => "GB",
        "France" => "FR",
        "Germany" => "DE",
        "Spain" => "ES",
        "Italy" => "IT",
        "Australia" => "AU",
        "Netherlands" => "NL",
        _ => "",
    };
    let mut b = Customer::builder()
        .given_name(&r["first_name"])
        .family_name(&r["last_name"])
        .email(&r["email"])
        .phone(&r["phone"]);
    if let Ok(d) = NaiveDate::parse_from_str(&r["date_of_birth"], "%Y-%m-%d") {
        b = b.birth_date(d);
    }
    let lines = opt(&r["street"]).into_iter().collect();
    with_address(
        b,
        AddressParts {
            lines,
            locality: opt(&r["city"]),
            postcode: opt(&r["postcode"]),
            country: opt(country),
            ..AddressParts::default()
        },
    )
}

/// Runs one dataset, prints its row, and returns (F1, the run).
fn evaluate(
    name: &str,
    rows: &[Row],
    map: fn(&Row) -> CustomerBuilder,
    truth: &[String],
    matcher: &Matcher,
) -> (f64, Run) {
    let t = Instant::now();
    let recs = records(rows, map);
    let loaded = t.elapsed().as_secs_f64();
    let run = matcher.run(&recs).expect("matching run");
    let secs = t.elapsed().as_secs_f64();
    let blocking = eval::blocking(&run.candidates, truth);
    let pairs = eval::pairwise(run.clusters.labels(), truth);
    let b3 = eval::b_cubed(run.clusters.labels(), truth);
    println!(
        "{name:<15} {:>7} {:>10} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>6.2}s ({loaded:.2}s load, {:.0} records/s)",
        recs.len(),
        run.candidates.len(),
        blocking.pair_completeness(),
        pairs.precision(),
        pairs.recall(),
        pairs.f1(),
        b3.f1(),
        secs,
        recs.len() as f64 / secs
    );
    (pairs.f1(), run)
}

/// The same matching through the store: the records inserted, the model trained and kept by
/// the store, clusters from `find_duplicates`, and match-on-insert (`duplicates_of_id`) asked
/// for every record's best match. Returns the clusters' F1.
fn evaluate_store(name: &str, rows: &[Row], truth: &[String], matcher: &Matcher) -> f64 {
    let t = Instant::now();
    let store = Store::in_memory().expect("store");
    let mut tx = store.begin_write().expect("write");
    tx.declare_attribute("soc_sec_id", AttributeType::Text, true)
        .expect("attribute");
    for r in rows {
        tx.insert(febrl(r).build_lenient().0).expect("insert");
    }
    tx.train_duplicate_model(matcher).expect("train");
    tx.commit().expect("commit");
    let read = store.begin_read().expect("read");
    let clusters = read
        .find_duplicates(matcher, &ClusterSettings::default())
        .expect("find_duplicates");
    // Customer ids are 1..=n in row order; each record's cluster label (or itself alone).
    let mut labels: Vec<String> = (0..rows.len()).map(|i| format!("single{i}")).collect();
    for (c, cluster) in clusters.iter().enumerate() {
        for id in &cluster.ids {
            if let Some(l) = usize::try_from(id.as_u64() - 1)
                .ok()
                .and_then(|i| labels.get_mut(i))
            {
                *l = format!("cluster{c}");
            }
        }
    }
    let pairs = eval::pairwise(&labels, truth);
    // Match-on-insert: is the best match found through the indexes a true duplicate?
    let (mut asked, mut right, mut with_duplicate) = (0u32, 0u32, 0u32);
    let mut sizes: HashMap<&String, u32> = HashMap::new();
    for t in truth {
        *sizes.entry(t).or_default() += 1;
    }
    for (i, t) in truth.iter().enumerate() {
        with_duplicate += u32::from(sizes[t] > 1);
        let id = customerdb::CustomerId::from_u64(i as u64 + 1);
        if let Some(best) = read
            .duplicates_of_id(id, 0.5)
            .expect("duplicates_of")
            .first()
        {
            asked += 1;
            let j = usize::try_from(best.id.as_u64() - 1).unwrap_or(usize::MAX);
            right += u32::from(truth.get(j) == Some(t));
        }
    }
    println!(
        "{name:<15} {:>7} {:>10} {:>7} {:>7.4} {:>7.4} {:>7.4} {:>7} {:>6.2}s; match-on-insert: {asked} of {with_duplicate} with a duplicate got a best match, {right} right",
        rows.len(),
        "-",
        "-",
        pairs.precision(),
        pairs.recall(),
        pairs.f1(),
        "-",
        t.elapsed().as_secs_f64(),
    );
    pairs.f1()
}

/// Peak resident set size of this process in MiB (`VmHWM`), if the platform reports it.
fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// A size from `/proc/self/status` (`VmHWM:`, `VmRSS:`) in MiB.
fn status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Batch matching of `n` generated customers with known duplicates: the records are generated
/// and standardised first (not timed: that is the cost of loading, not of matching), then the
/// whole matching run (blocking, training, scoring, clustering) is timed.
fn scale(n: usize) {
    let t = Instant::now();
    let mut truth = Vec::with_capacity(n);
    let mut recs: Vec<MatchRecord> = Vec::with_capacity(n);
    let mut stream = customerdb::sample::Duplicates::new(0x5CA1E).take(n);
    loop {
        let chunk: Vec<_> = stream.by_ref().take(20_000).collect();
        if chunk.is_empty() {
            break;
        }
        truth.extend(chunk.iter().map(|r| r.entity));
        recs.extend(records(
            &chunk,
            customerdb::sample::SampleRecord::to_builder,
        ));
    }
    let loaded = t.elapsed().as_secs_f64();
    let rss_loaded = peak_rss_mib().unwrap_or(f64::NAN);
    let rss_before_release = status_mib("VmRSS:").unwrap_or(f64::NAN);
    customerdb::normalize::release_phone_patterns();
    println!(
        "resident after standardising {rss_before_release:.0} MiB, after releasing the phone \
         patterns {:.0} MiB",
        status_mib("VmRSS:").unwrap_or(f64::NAN)
    );
    // Restart the peak from what is resident now (Linux: `clear_refs` 5 resets VmHWM), so
    // the peak below is the matching's, not standardisation's. What is resident now stays in
    // that peak: the records (about 270 bytes each) and what standardisation left behind,
    // mostly the phone-number pattern cache with its match caches (several hundred MiB at a
    // million numbers), which matching never touches.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_start = status_mib("VmRSS:").unwrap_or(f64::NAN);
    let t = Instant::now();
    let run = Matcher::default().run(&recs).expect("matching run");
    let secs = t.elapsed().as_secs_f64();
    let rss = peak_rss_mib().unwrap_or(f64::NAN);
    let pairs = eval::pairwise(run.clusters.labels(), &truth);
    let blocking = eval::blocking(&run.candidates, &truth);
    println!("{}", run.candidates.report());
    println!("stages: {:?}", run.timings);
    println!(
        "scale {n}: generated and standardised in {loaded:.1}s (peak RSS {rss_loaded:.0} MiB); \
         matching {secs:.2}s, peak RSS {rss:.0} MiB{} ({rss_start:.0} MiB resident when it \
         started, records included); {} candidates, pair completeness {:.4}, {pairs}",
        if reset { " while matching" } else { "" },
        run.candidates.len(),
        blocking.pair_completeness(),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let Some(flag) = args.next() {
        assert_eq!(flag, "--scale", "usage: dedup_eval [--scale N]");
        let n = args.next().and_then(|a| a.parse().ok()).expect("--scale N");
        scale(n);
        return;
    }
    println!(
        "{:<15} {:>7} {:>10} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "dataset", "records", "candidates", "blk rec", "P", "R", "F1", "B3 F1", "time"
    );
    let mut f1s = HashMap::new();
    let febrl_matcher = Matcher::default().attribute("soc_sec_id");
    for set in ["febrl1", "febrl2"] {
        let rows = read_csv(&format!("febrl/{set}.csv"));
        // rec-<k>-org and rec-<k>-dup-<j> are entity k.
        let truth: Vec<String> = rows
            .iter()
            .map(|r| r["rec_id"].split('-').nth(1).unwrap_or("").to_owned())
            .collect();
        let listed = read_csv(&format!("febrl/{set}_pairs.csv")).len() as u64;
        let (f1, _) = evaluate(set, &rows, febrl, &truth, &febrl_matcher);
        assert_eq!(
            eval::pairwise(&truth, &truth).true_positives,
            listed,
            "{set}: truth pairs"
        );
        f1s.insert(set, f1);
        if set == "febrl2" {
            let f1 = evaluate_store("store:febrl2", &rows, &truth, &febrl_matcher);
            f1s.insert("store:febrl2", f1);
        }
    }

    let rows = read_csv("er/fake_1000.csv");
    let truth: Vec<String> = rows.iter().map(|r| r["cluster"].clone()).collect();
    // Typos in every field: add two broad rules (birth date alone; locality and initial).
    let mut broad = Matcher::default();
    broad.blocker = broad
        .blocker
        .rule(BlockingRule::BirthDate)
        .rule(BlockingRule::LocalityGivenInitial);
    let (f1, run) = evaluate("fake_1000", &rows, fake, &truth, &broad);
    f1s.insert("fake_1000", f1);
    let index: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r["unique_id"].as_str(), i))
        .collect();
    let labels: Vec<(usize, usize, bool)> = read_csv("er/fake_1000_labels.csv")
        .iter()
        .filter_map(|l| {
            Some((
                *index.get(l["unique_id_l"].as_str())?,
                *index.get(l["unique_id_r"].as_str())?,
                l["clerical_match_score"].parse::<f64>().ok()? >= 0.5,
            ))
        })
        .collect();
    let clerical = eval::labelled_pairs(run.clusters.labels(), &labels);
    println!(
        "fake_1000 against {} clerical labels: {clerical}",
        labels.len()
    );

    let rows = read_csv("er/synthetic_customers_100k.csv");
    let truth: Vec<String> = rows.iter().map(|r| r["cluster_id"].clone()).collect();
    let (f1, run) = evaluate(
        "synthetic_100k",
        &rows,
        synthetic,
        &truth,
        &Matcher::default(),
    );
    f1s.insert("synthetic_100k", f1);
    println!("synthetic_100k blocking:\n{}", run.candidates.report());
    println!("synthetic_100k stages: {:?}", run.timings);

    let failed: Vec<String> = GATES
        .iter()
        .filter(|(set, gate)| f1s.get(set).is_none_or(|f1| f1 < gate))
        .map(|(set, gate)| format!("{set} F1 under {gate}"))
        .collect();
    assert!(failed.is_empty(), "quality gates failed: {failed:?}");
}
