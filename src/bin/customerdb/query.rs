//! `query` and `segment`: customers selected by a filter in the text syntax, and saved
//! segments (named filters kept in the store).

use std::io::Write;
use std::process::ExitCode;

use customerdb::query::{Field, Filter, Order, ParseError, Query, Segment};
use customerdb::{Read, ReadTxn, Record};
use serde_json::json;

use crate::{Args, CliError, csv_format, db, print_lines};

/// The columns of `--format csv`, in order.
const CSV_COLUMNS: [&str; 7] = ["id", "name", "email", "phone", "country", "stage", "tags"];

/// `query`: prints the customers matching a filter, their count, or the plan.
pub(crate) fn query(a: &Args) -> Result<ExitCode, CliError> {
    let [text] = a.positional.as_slice() else {
        return Err(CliError::Usage(
            "query takes one FILTER argument (quote it)".into(),
        ));
    };
    let csv = csv_format(a)?;
    let mut q = Query::filter(parse_filter(text)?);
    if let Some(spec) = &a.sort {
        let (field, order) = sort_arg(spec)?;
        q = q.sort_by(field, order);
    }
    if let Some(n) = a.limit {
        q = q.limit(n);
    }
    let tx = db(a)?.begin_read()?;
    if a.count {
        println!("{}", q.count(&tx)?);
        return Ok(ExitCode::SUCCESS);
    }
    if a.explain {
        let plan = q.explain(&tx)?.to_string();
        println!("{}", plan.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    print_records(q.run(&tx)?, csv)
}

/// `segment save|list|count|members|changes`.
pub(crate) fn segment(a: &Args) -> Result<ExitCode, CliError> {
    let Some((action, rest)) = a.positional.split_first() else {
        return Err(CliError::Usage(
            "segment needs save, list, count, members or changes".into(),
        ));
    };
    match action.as_str() {
        "save" => {
            let [name, text] = rest else {
                return Err(CliError::Usage("segment save takes NAME 'FILTER'".into()));
            };
            let filter = parse_filter(text)?;
            let store = db(a)?;
            let mut tx = store.begin_write_as("cli")?;
            tx.save_segment(&Segment::new(name.as_str(), filter))?;
            tx.commit()?;
            println!("saved segment {name}");
            Ok(ExitCode::SUCCESS)
        }
        "list" => {
            if !rest.is_empty() {
                return Err(CliError::Usage("segment list takes no NAME".into()));
            }
            let tx = db(a)?.begin_read()?;
            let lines: Vec<_> = tx
                .segments()?
                .iter()
                .map(|s| json!({ "name": s.name, "filter": s.filter.to_string() }))
                .collect();
            print_lines(&lines)
        }
        "count" => {
            let tx = db(a)?.begin_read()?;
            let segment = named(&tx, rest)?;
            println!("{}", segment.query().count(&tx)?);
            Ok(ExitCode::SUCCESS)
        }
        "members" => {
            let csv = csv_format(a)?;
            let tx = db(a)?.begin_read()?;
            let mut q = named(&tx, rest)?.query();
            if let Some(n) = a.limit {
                q = q.limit(n);
            }
            print_records(q.run(&tx)?, csv)
        }
        "changes" => {
            let since = a
                .since
                .ok_or_else(|| CliError::Usage("segment changes needs --since SEQ".into()))?;
            let tx = db(a)?.begin_read()?;
            let segment = named(&tx, rest)?;
            print_lines(&[tx.segment_changes(&segment.name, since)?])
        }
        other => Err(CliError::Usage(format!(
            "unknown segment action \"{other}\": save, list, count, members or changes"
        ))),
    }
}

/// The saved segment named by the only remaining argument.
fn named(tx: &ReadTxn, rest: &[String]) -> Result<Segment, CliError> {
    let [name] = rest else {
        return Err(CliError::Usage("segment needs one NAME".into()));
    };
    tx.segment(name)?
        .ok_or_else(|| CliError::Failed(format!("no segment named \"{name}\"")))
}

/// Parses a filter; a syntax error becomes a message showing the line with a caret under the
/// offending position.
fn parse_filter(text: &str) -> Result<Filter, CliError> {
    Filter::parse(text).map_err(|e| CliError::Input(syntax_message(text, &e)))
}

/// The parse error, the line of `text` it is on, and a caret under its position.
fn syntax_message(text: &str, e: &ParseError) -> String {
    // The position is a byte offset; clamp it to a character boundary inside the text.
    let mut pos = e.position.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let column = text[line_start..pos].chars().count();
    format!(
        "{e}\n  {}\n  {}^ expected {}",
        &text[line_start..line_end],
        " ".repeat(column),
        e.expected
    )
}

/// Reads `FIELD` or `FIELD:asc` / `FIELD:desc`; a name that is not a built-in field is a
/// custom attribute.
fn sort_arg(spec: &str) -> Result<(Field, Order), CliError> {
    let (name, order) = match spec.rsplit_once(':') {
        Some((name, "desc")) => (name, Order::Desc),
        Some((name, "asc")) => (name, Order::Asc),
        Some(_) => {
            return Err(CliError::Usage(format!(
                "--sort takes FIELD or FIELD:asc or FIELD:desc, got \"{spec}\""
            )));
        }
        None => (spec, Order::Asc),
    };
    let field = Field::builtin(name).unwrap_or_else(|| Field::attribute(name));
    Ok((field, order))
}

/// Prints customers as JSON lines, or as CSV with [`CSV_COLUMNS`].
fn print_records(
    records: impl Iterator<Item = customerdb::Result<Record>>,
    csv: bool,
) -> Result<ExitCode, CliError> {
    let out = std::io::stdout().lock();
    if csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(CSV_COLUMNS)?;
        for rec in records {
            w.write_record(csv_row(&rec?))?;
        }
        w.flush()?;
    } else {
        let mut out = std::io::BufWriter::new(out);
        for rec in records {
            serde_json::to_writer(&mut out, &rec?).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One customer's [`CSV_COLUMNS`]: the primary email, phone and address's country; tags
/// joined with `;`.
fn csv_row(rec: &Record) -> [String; 7] {
    let c = &rec.customer;
    [
        rec.id.to_string(),
        c.name
            .as_ref()
            .map(|n| n.display().to_owned())
            .unwrap_or_default(),
        c.primary_email()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        c.primary_phone()
            .map(|p| p.e164().to_owned())
            .unwrap_or_default(),
        c.primary_address()
            .and_then(customerdb::Address::country)
            .map(|cc| cc.as_str().to_owned())
            .unwrap_or_default(),
        c.stage.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        c.tags
            .iter()
            .map(customerdb::Tag::as_str)
            .collect::<Vec<_>>()
            .join(";"),
    ]
}
