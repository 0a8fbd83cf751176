//! `dedup` and `explain`: duplicate clusters in a CSV file (through an in-memory store) or in
//! a store, figures against a ground truth, and one pair's score, term by term.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use customerdb::dedup::{ClusterSettings, MatchRecord, Matcher, eval};
use customerdb::import::{CsvImport, Field, ImportMode, ImportReport};
use customerdb::{
    AttributeType, AttributeValue, CustomerId, DuplicateCluster, ErrorKind, Read, ReviewStatus,
    Store,
};
use serde_json::{Value, json};

use crate::{Args, CliError, db, id_args, mapping, print_lines};

/// The custom attribute that carries each CSV row's id through the store. It is declared but
/// neither blocked on nor compared, so it does not take part in matching.
const ID_ATTRIBUTE: &str = "input_id";

/// `dedup`: on a CSV file (`--input`) or on a store (`--db`).
pub(crate) fn dedup(a: &Args) -> Result<ExitCode, CliError> {
    match (&a.input, &a.db) {
        (Some(input), None) => dedup_csv(a, input),
        (None, Some(_)) => dedup_store(a),
        _ => Err(CliError::Usage(
            "dedup needs either --input FILE.csv or --db PATH".into(),
        )),
    }
}

/// The clustering settings, with `--threshold` (default 0.5).
fn settings(a: &Args) -> Result<ClusterSettings, CliError> {
    let threshold = a.threshold.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&threshold) {
        return Err(CliError::Usage(format!(
            "--threshold is a probability from 0 to 1, got {threshold}"
        )));
    }
    Ok(ClusterSettings {
        threshold,
        ..ClusterSettings::default()
    })
}

/// `dedup --db`: prints the store's duplicate clusters as JSON lines; with `--train`, trains
/// and stores the duplicate model first (the only write).
fn dedup_store(a: &Args) -> Result<ExitCode, CliError> {
    if a.pairs.is_some() || a.clusters.is_some() || a.truth_column.is_some() {
        return Err(CliError::Usage(
            "--pairs, --clusters and --truth-column go with --input".into(),
        ));
    }
    let settings = settings(a)?;
    let store = db(a)?;
    let matcher = Matcher::default();
    if a.train {
        let mut tx = store.begin_write_as("cli")?;
        let report = tx.train_duplicate_model(&matcher)?;
        tx.commit()?;
        eprintln!(
            "trained the duplicate model on {} candidate pairs ({} EM iterations{})",
            report.candidate_pairs,
            report.iterations,
            if report.converged {
                ""
            } else {
                ", not converged"
            }
        );
    }
    let tx = store.begin_read()?;
    let clusters = tx.find_duplicates(&matcher, &settings)?;
    let lines: Vec<Value> = clusters.iter().map(cluster_json).collect();
    print_lines(&lines)
}

/// A store cluster as JSON: its ids and its scored pairs, best first.
fn cluster_json(c: &DuplicateCluster) -> Value {
    let pairs: Vec<Value> = c
        .pairs
        .iter()
        .map(
            |(x, y, s)| json!({ "a": x, "b": y, "probability": s.probability, "weight": s.weight }),
        )
        .collect();
    json!({ "ids": c.ids, "pairs": pairs })
}

/// One data row of the input CSV.
struct Row {
    /// The line it starts on, as the import reports it.
    line: u64,
    /// Its `--id-column` value.
    id: String,
    /// Its true entity, if `--truth-column` was given.
    truth: Truth,
    /// The whole row, for importing it again.
    record: csv::StringRecord,
}

/// A row's true entity: its `--truth-column` label, or, with none, itself alone.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Truth {
    /// The label in the truth column.
    Label(String),
    /// No label: an entity of this row only.
    Alone(usize),
}

/// Reads the header and every row, refusing empty and repeated ids.
fn read_rows(
    path: &Path,
    id_column: &str,
    truth_column: Option<&str>,
) -> Result<(csv::StringRecord, Vec<Row>), CliError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_path(path)?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| CliError::Failed(format!("{} has no column \"{name}\"", path.display())))
    };
    let id_at = column(id_column)?;
    let truth_at = truth_column.map(column).transpose()?;
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record)? {
        let line = record.position().map_or(0, csv::Position::line);
        let id = record.get(id_at).unwrap_or_default().trim().to_owned();
        if id.is_empty() {
            return Err(CliError::Failed(format!("line {line}: no {id_column}")));
        }
        if !seen.insert(id.clone()) {
            return Err(CliError::Failed(format!(
                "line {line}: {id_column} \"{id}\" appears twice"
            )));
        }
        let truth = match truth_at.and_then(|i| record.get(i)).map(str::trim) {
            Some(t) if !t.is_empty() => Truth::Label(t.to_owned()),
            _ => Truth::Alone(rows.len()),
        };
        rows.push(Row {
            line,
            id,
            truth,
            record: record.clone(),
        });
    }
    Ok((headers, rows))
}

/// What a CSV run found, with rows as indexes into the input.
struct Outcome {
    /// Each row's entity label.
    labels: Vec<usize>,
    /// Linked pairs of rows and their match probabilities.
    pairs: Vec<(usize, usize, f64)>,
    /// The stored rows, in customer id order.
    stored: Vec<usize>,
    /// Rows refused at first for a unique key (email, external id) another row holds, each
    /// with that row.
    joined: Vec<(usize, usize)>,
}

/// `dedup --input`: imports the CSV into an in-memory store (lenient: refused values are
/// dropped, the record kept), trains the store's model, clusters, writes `--pairs` and
/// `--clusters` and prints the figures.
fn dedup_csv(a: &Args, input: &Path) -> Result<ExitCode, CliError> {
    if a.train {
        return Err(CliError::Usage("--train goes with --db".into()));
    }
    let start = Instant::now();
    let settings = settings(a)?;
    let id_column = a
        .id_column
        .as_deref()
        .ok_or_else(|| CliError::Usage("dedup --input needs --id-column COL".into()))?;
    let truth_column = a.truth_column.as_deref();
    let (headers, rows) = read_rows(input, id_column, truth_column)?;
    let columns = columns(a, id_column, truth_column)?;

    let mut builder = Store::builder();
    if let Some(r) = &a.region {
        builder = builder.default_region(r);
    }
    let store = builder.in_memory()?;
    let matcher = declare(&store, &columns)?;
    let report = job(&columns).run(&store, std::fs::File::open(input)?)?;
    let refused = refused_for_unique_keys(&rows, &report);
    import_again(&store, &headers, &rows, &columns, &refused)?;
    let imported = start.elapsed();

    let mut tx = store.begin_write()?;
    tx.train_duplicate_model(&matcher)?;
    tx.commit()?;
    let trained = start.elapsed();
    let read = store.begin_read()?;
    let clusters = read.find_duplicates(&matcher, &settings)?;
    let clustered = start.elapsed();

    let mut records = Vec::new();
    let outcome = outcome(&read, &rows, &refused, &clusters, &mut records)?;
    let candidates = matcher.blocker.candidates(&records)?;
    if let Some(path) = &a.pairs {
        write_pairs(path, &rows, &outcome.pairs)?;
    }
    let groups = groups(&outcome.labels);
    if let Some(path) = &a.clusters {
        write_clusters(path, &rows, &groups)?;
    } else {
        let lines: Vec<Value> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.len() > 1)
            .map(|(k, g)| json!({ "cluster": k, "ids": g.iter().map(|&i| &rows[i].id).collect::<Vec<_>>() }))
            .collect();
        print_lines(&lines)?;
    }

    let in_clusters: usize = groups.iter().filter(|g| g.len() > 1).map(Vec::len).sum();
    println!(
        "records: {} read, {} stored ({} of them without the email or external id another row holds, and linked to that row), {} left out",
        rows.len(),
        outcome.stored.len(),
        outcome.joined.len(),
        rows.len() - outcome.stored.len()
    );
    println!("candidate pairs: {}", candidates.len());
    println!(
        "clusters: {} of two or more records ({in_clusters} records), {} linked pairs, threshold {}",
        groups.iter().filter(|g| g.len() > 1).count(),
        outcome.pairs.len(),
        settings.threshold
    );
    if truth_column.is_some() {
        let truth: Vec<&Truth> = rows.iter().map(|r| &r.truth).collect();
        let pairwise = eval::pairwise(&outcome.labels, &truth);
        let b3 = eval::b_cubed(&outcome.labels, &truth);
        let stored_truth: Vec<&Truth> = outcome.stored.iter().map(|&i| &rows[i].truth).collect();
        let blocking = eval::blocking(&candidates, &stored_truth);
        println!("pairwise: {pairwise}");
        println!(
            "b-cubed: precision {:.4} recall {:.4} F1 {:.4}",
            b3.precision,
            b3.recall,
            b3.f1()
        );
        println!(
            "blocking recall (pair completeness): {:.4} ({} of {} true pairs among the stored records are candidates)",
            blocking.pair_completeness(),
            blocking.true_candidates,
            blocking.true_pairs
        );
    }
    println!(
        "time: {:.2}s (import {:.2}s, train {:.2}s, cluster {:.2}s)",
        clustered.as_secs_f64(),
        imported.as_secs_f64(),
        trained.saturating_sub(imported).as_secs_f64(),
        clustered.saturating_sub(trained).as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Imports the rows refused for a unique key again, without their unique-key columns (email,
/// external ids). The store holds a unique key once, so such a row is its key holder's
/// customer; imported again, its other values still take part in training and matching.
fn import_again(
    store: &Store,
    headers: &csv::StringRecord,
    rows: &[Row],
    columns: &[(String, Field)],
    refused: &[(usize, CustomerId)],
) -> Result<(), CliError> {
    if refused.is_empty() {
        return Ok(());
    }
    let mut again = columns.to_vec();
    for h in headers {
        let field = columns
            .iter()
            .find(|(c, _)| c == h)
            .map(|(_, f)| f.clone())
            .or_else(|| Field::parse(h));
        if matches!(field, Some(Field::Email | Field::ExternalId(_))) {
            again.push((h.to_owned(), Field::Ignore));
        }
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(headers)?;
    for (row, _) in refused {
        w.write_record(&rows[*row].record)?;
    }
    let bytes = w.into_inner().map_err(|e| CliError::Io(e.into_error()))?;
    job(&again).run(store, bytes.as_slice())?;
    Ok(())
}

/// The column mapping: `--map`, the id column to [`ID_ATTRIBUTE`], the truth column ignored.
fn columns(
    a: &Args,
    id_column: &str,
    truth_column: Option<&str>,
) -> Result<Vec<(String, Field)>, CliError> {
    let mut columns = mapping(a)?;
    for (column, field) in &columns {
        if column == id_column || Some(column.as_str()) == truth_column {
            return Err(CliError::Usage(format!(
                "column \"{column}\" is the id or truth column: do not --map it"
            )));
        }
        if *field == Field::Attribute(ID_ATTRIBUTE.into()) {
            return Err(CliError::Usage(format!(
                "attribute:{ID_ATTRIBUTE} is taken by the id column"
            )));
        }
    }
    columns.push((id_column.to_owned(), Field::Attribute(ID_ATTRIBUTE.into())));
    if let Some(t) = truth_column {
        columns.push((t.to_owned(), Field::Ignore));
    }
    Ok(columns)
}

/// A lenient import with this mapping.
fn job(columns: &[(String, Field)]) -> CsvImport {
    columns
        .iter()
        .fold(CsvImport::new().mode(ImportMode::Lenient), |job, (c, f)| {
            job.map(c.as_str(), f.clone())
        })
}

/// Declares the attributes the mapping fills, as text: the id one unindexed and left out of
/// matching, each other one indexed and blocked on and compared by the returned matcher.
fn declare(store: &Store, columns: &[(String, Field)]) -> Result<Matcher, CliError> {
    let mut matcher = Matcher::default();
    let mut declared = HashSet::new();
    let mut tx = store.begin_write()?;
    for (_, field) in columns {
        if let Field::Attribute(name) = field {
            if !declared.insert(name.as_str()) {
                continue;
            }
            let matched = name != ID_ATTRIBUTE;
            tx.declare_attribute(name, AttributeType::Text, matched)?;
            if matched {
                matcher = matcher.attribute(name);
            }
        }
    }
    tx.commit()?;
    Ok(matcher)
}

/// The rows the import refused because a unique key of theirs belongs to a stored customer,
/// each with that customer.
fn refused_for_unique_keys(rows: &[Row], report: &ImportReport) -> Vec<(usize, CustomerId)> {
    let by_line: HashMap<u64, usize> = rows.iter().enumerate().map(|(i, r)| (r.line, i)).collect();
    report
        .rejected
        .iter()
        .filter(|r| !r.stored)
        .filter_map(|r| {
            let holder = r.errors.iter().find_map(|e| match e.kind() {
                ErrorKind::Conflict { existing, .. } => Some(*existing),
                _ => None,
            })?;
            Some((*by_line.get(&r.line)?, holder))
        })
        .collect()
}

/// Maps the store's clusters back to CSV rows, linking each refused row with its key holder;
/// fills `records` with the stored customers' match records, in id order, for the blocking
/// figures.
fn outcome(
    read: &customerdb::ReadTxn,
    rows: &[Row],
    refused: &[(usize, CustomerId)],
    clusters: &[DuplicateCluster],
    records: &mut Vec<MatchRecord>,
) -> Result<Outcome, CliError> {
    let by_id: HashMap<&str, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut row_of: HashMap<CustomerId, usize> = HashMap::new();
    let mut stored = Vec::new();
    for rec in read.range(..)? {
        let rec = rec?;
        let row = match rec.customer.attributes.get(ID_ATTRIBUTE) {
            Some(AttributeValue::Text(id)) => by_id.get(id.as_str()).copied(),
            _ => None,
        }
        .ok_or_else(|| CliError::Failed(format!("customer {} lost its {ID_ATTRIBUTE}", rec.id)))?;
        row_of.insert(rec.id, row);
        stored.push(row);
        records.push(MatchRecord::new(&rec.customer));
    }
    let joined: Vec<(usize, usize)> = refused
        .iter()
        .filter_map(|(row, holder)| Some((*row, *row_of.get(holder)?)))
        .collect();

    let mut parent: Vec<usize> = (0..rows.len()).collect();
    let mut pairs = Vec::new();
    let mut linked = HashSet::new();
    let model_pairs = clusters
        .iter()
        .flat_map(|c| &c.pairs)
        .filter_map(|(x, y, s)| Some((*row_of.get(x)?, *row_of.get(y)?, s.probability)));
    let key_pairs = joined.iter().map(|&(row, holder)| (holder, row, 1.0));
    for (x, y, p) in model_pairs.chain(key_pairs) {
        if linked.insert((x.min(y), x.max(y))) {
            pairs.push((x, y, p));
        }
    }
    for c in clusters {
        let rows: Vec<usize> = c
            .ids
            .iter()
            .filter_map(|id| row_of.get(id).copied())
            .collect();
        for w in rows.windows(2) {
            union(&mut parent, w[0], w[1]);
        }
    }
    for &(row, holder) in &joined {
        union(&mut parent, row, holder);
    }
    let labels = (0..rows.len()).map(|i| root(&mut parent, i)).collect();
    Ok(Outcome {
        labels,
        pairs,
        stored,
        joined,
    })
}

/// The representative of `i`'s set, halving the path on the way.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Joins the sets of `x` and `y`.
fn union(parent: &mut [usize], x: usize, y: usize) {
    let (rx, ry) = (root(parent, x), root(parent, y));
    parent[rx.max(ry)] = rx.min(ry);
}

/// Rows grouped by label, each group in row order, groups in order of their first row.
fn groups(labels: &[usize]) -> Vec<Vec<usize>> {
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (row, label) in labels.iter().enumerate() {
        let k = *index.entry(*label).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[k].push(row);
    }
    out
}

/// Writes `id_a,id_b,probability` with the CSV's own ids; a pair joined by a unique key has
/// probability 1.
fn write_pairs(path: &Path, rows: &[Row], pairs: &[(usize, usize, f64)]) -> Result<(), CliError> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["id_a", "id_b", "probability"])?;
    for &(x, y, p) in pairs {
        w.write_record([&rows[x].id, &rows[y].id, &format!("{p:.6}")])?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `cluster,id` for every row (a row alone is a cluster of one), clusters numbered
/// from 0 in order of their first row.
fn write_clusters(path: &Path, rows: &[Row], groups: &[Vec<usize>]) -> Result<(), CliError> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["cluster", "id"])?;
    for (k, group) in groups.iter().enumerate() {
        for &i in group {
            w.write_record([k.to_string().as_str(), &rows[i].id])?;
        }
    }
    w.flush()?;
    Ok(())
}

/// `explain`: the stored model's score of a pair, term by term.
///
/// The library has no public way to score an arbitrary pair with the stored model, so this
/// asks match-on-insert for the first customer's candidates at any probability and shows the
/// second's entry; a pair that shares no blocking key, or that a person rejected, is not
/// among them, and that is reported.
pub(crate) fn explain(a: &Args) -> Result<ExitCode, CliError> {
    let ids = id_args(a, 0, 2, "two customer IDs")?;
    let [x, y] = ids.as_slice() else {
        return Err(CliError::Usage("explain takes two customer IDs".into()));
    };
    let tx = db(a)?.begin_read()?;
    let resolved = [*x, *y]
        .iter()
        .map(|id| {
            tx.resolve(*id)?
                .ok_or_else(|| CliError::Failed(format!("no customer {id}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (rx, ry) = (resolved[0], resolved[1]);
    if rx == ry {
        return Err(CliError::Failed(format!(
            "{x} and {y} are one customer ({rx}) already"
        )));
    }
    if let Some(d) = tx
        .duplicates_of_id(rx, 0.0)?
        .into_iter()
        .find(|d| d.id == ry)
    {
        println!(
            "{rx} and {ry}: probability {:.5}, weight {:+.2}; blocking rules: {}",
            d.score.probability,
            d.score.weight,
            d.rules.join(", ")
        );
        println!("{}", d.explanation);
        return Ok(ExitCode::SUCCESS);
    }
    let rejected = tx.review_queue(false)?.iter().any(|r| {
        r.status == ReviewStatus::NotSame && ((r.a, r.b) == (rx, ry) || (r.a, r.b) == (ry, rx))
    });
    Err(CliError::Failed(if rejected {
        format!(
            "a person decided {rx} and {ry} are not the same, so the store does not score the pair"
        )
    } else {
        format!(
            "{rx} and {ry} share no blocking key under the store's rules, so the store does not score them as a pair"
        )
    }))
}
