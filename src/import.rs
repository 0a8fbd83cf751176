//! Importing customers from CSV, with a column mapping and per-record error reports.
//!
//! An import goes on past bad records: each is reported with its line number and every reason,
//! and the rest are stored. In [`ImportMode::Strict`] a record with any refused value is not
//! stored at all; in [`ImportMode::Lenient`] its valid values are stored and the refused ones
//! reported.
//!
//! ```
//! use customerdb::import::CsvImport;
//! use customerdb::{Read, Store};
//! let csv = "first_name,last_name,email,country\n\
//!            Ada,Lovelace,ada@example.com,GB\n\
//!            Bob,Broken,not-an-email,GB\n";
//! let store = Store::in_memory()?;
//! let report = CsvImport::new().run(&store, csv.as_bytes())?;
//! assert_eq!((report.stored, report.rejected.len()), (1, 1));
//! assert_eq!(report.rejected[0].line, 3);
//! # Ok::<(), customerdb::Error>(())
//! ```

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{AddressParts, Customer, CustomerBuilder, Stage};
use crate::normalize::Reason;
use crate::store::Store;

/// A customer field a CSV column can feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// The whole name, split into parts.
    FullName,
    /// Given name.
    GivenName,
    /// Family name.
    FamilyName,
    /// An email (a record may have several email columns).
    Email,
    /// A phone number.
    Phone,
    /// A street line of the first address.
    AddressLine,
    /// Town or city of the first address.
    Locality,
    /// Region or state of the first address.
    Region,
    /// Postcode of the first address.
    Postcode,
    /// Country (ISO 3166-1 alpha-2) of the first address.
    Country,
    /// Date of birth: `YYYY-MM-DD` or `YYYYMMDD`.
    BirthDate,
    /// Gender.
    Gender,
    /// Organisation.
    Organization,
    /// Job title.
    JobTitle,
    /// Tags, separated by `;` or `|`.
    Tags,
    /// Lifecycle stage.
    Stage,
    /// Owner.
    Owner,
    /// Source.
    Source,
    /// An id in the named system.
    ExternalId(String),
    /// A text custom attribute (declared in the store's schema).
    Attribute(String),
    /// A column to skip.
    Ignore,
}

impl Field {
    /// The field a column name means: the field's own name (`given_name`, `postcode`,
    /// `external_id:shop`, `attribute:tier`) or a common synonym (`first_name`, `surname`,
    /// `zip`, `city`, `dob`, ...). `None` if it means nothing known.
    pub fn parse(name: &str) -> Option<Field> {
        let n = name.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        if let Some(system) = n.strip_prefix("external_id:") {
            return Some(Field::ExternalId(system.to_owned()));
        }
        if let Some(attr) = name.trim().strip_prefix("attribute:") {
            return Some(Field::Attribute(attr.to_owned()));
        }
        Some(match n.as_str() {
            "name" | "full_name" => Field::FullName,
            "given_name" | "first_name" | "firstname" | "forename" => Field::GivenName,
            "family_name" | "last_name" | "lastname" | "surname" => Field::FamilyName,
            "email" | "email_address" | "e_mail" => Field::Email,
            "phone" | "phone_number" | "telephone" | "mobile" => Field::Phone,
            "street" | "address" | "address_1" | "address_2" | "address_line"
            | "street_address" => Field::AddressLine,
            "locality" | "city" | "town" | "suburb" => Field::Locality,
            "region" | "state" | "county" | "province" => Field::Region,
            "postcode" | "postal_code" | "zip" | "zip_code" => Field::Postcode,
            "country" | "country_code" => Field::Country,
            "birth_date" | "date_of_birth" | "dob" | "birthday" => Field::BirthDate,
            "gender" | "sex" => Field::Gender,
            "organization" | "organisation" | "company" => Field::Organization,
            "job_title" | "title" => Field::JobTitle,
            "tags" => Field::Tags,
            "stage" | "lifecycle_stage" => Field::Stage,
            "owner" => Field::Owner,
            "source" => Field::Source,
            "ignore" | "-" => Field::Ignore,
            _ => return None,
        })
    }
}

/// What to do with a record that has a refused value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImportMode {
    /// Store nothing of the record; report it.
    #[default]
    Strict,
    /// Store its valid values; report the refused ones.
    Lenient,
}

/// A record that was not stored, or stored only in part.
#[derive(Debug)]
pub struct Rejection {
    /// Its 1-based line in the file.
    pub line: u64,
    /// Whether its valid values were stored anyway ([`ImportMode::Lenient`]).
    pub stored: bool,
    /// Every reason.
    pub errors: Vec<Error>,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Records read.
    pub read: u64,
    /// Records stored (in full or, when lenient, in part).
    pub stored: u64,
    /// Records refused in full or in part, in file order.
    pub rejected: Vec<Rejection>,
}

/// A CSV import: column mapping, mode and batch size.
#[must_use]
pub struct CsvImport {
    mapping: HashMap<String, Field>,
    mode: ImportMode,
    batch: usize,
    progress: Option<Box<dyn FnMut(u64)>>,
}

impl Default for CsvImport {
    fn default() -> Self {
        CsvImport::new()
    }
}

impl std::fmt::Debug for CsvImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvImport")
            .field("mapping", &self.mapping)
            .field("mode", &self.mode)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl CsvImport {
    /// An import that maps columns by their header names ([`Field::parse`]), strict, committing
    /// every 10,000 records.
    pub fn new() -> Self {
        CsvImport {
            mapping: HashMap::new(),
            mode: ImportMode::Strict,
            batch: 10_000,
            progress: None,
        }
    }

    /// Maps the column with this header to `field`, overriding the header's own meaning.
    pub fn map(mut self, column: impl Into<String>, field: Field) -> Self {
        self.mapping.insert(column.into(), field);
        self
    }

    /// Strict or lenient.
    pub fn mode(mut self, mode: ImportMode) -> Self {
        self.mode = mode;
        self
    }

    /// Records per write transaction (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Called with the number of records read so far after each batch.
    pub fn progress(mut self, f: impl FnMut(u64) + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Reads `input` and stores its customers in `store`, committing every batch.
    ///
    /// # Errors
    /// [`ErrorKind::Import`] if the header cannot be read or a column is not understood;
    /// [`ErrorKind::Io`] if the input stops being readable; storage errors. A bad *record* is
    /// never an error: it is in the report.
    pub fn run(mut self, store: &Store, input: impl std::io::Read) -> Result<ImportReport> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| Error::with_source(ErrorKind::Import { line: 1 }, e))?
            .clone();
        let fields = headers
            .iter()
            .map(|h| {
                self.mapping
                    .get(h)
                    .cloned()
                    .or_else(|| Field::parse(h))
                    .ok_or_else(|| {
                        Error::with_source(
                            ErrorKind::Import { line: 1 },
                            format!("column \"{h}\" maps to no field; map it or map it to ignore"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut report = ImportReport::default();
        let mut tx = store.begin_write()?;
        let mut in_batch = 0;
        // One record buffer for the whole file, not an allocation per row.
        let mut row = csv::StringRecord::new();
        loop {
            match reader.read_record(&mut row) {
                Ok(false) => break,
                Ok(true) => report.read += 1,
                // A failing reader fails again on every call: stop rather than loop.
                Err(e) if e.is_io_error() => return Err(Error::with_source(ErrorKind::Io, e)),
                Err(e) => {
                    report.read += 1;
                    let line = e.position().map_or(report.read + 1, csv::Position::line);
                    report.rejected.push(Rejection {
                        line,
                        stored: false,
                        errors: vec![Error::with_source(ErrorKind::Import { line }, e)],
                    });
                    continue;
                }
            }
            let line = row.position().map_or(report.read + 1, csv::Position::line);
            let (builder, mut errors) = to_builder(&fields, &row);
            let inserted = match self.mode {
                // Values that could not even be read refuse the record before the store sees it.
                ImportMode::Strict if !errors.is_empty() => None,
                ImportMode::Strict => Some(tx.insert(builder)),
                ImportMode::Lenient => {
                    let (c, more) = builder.build_lenient_with_region(tx.default_region());
                    errors.extend(more);
                    (c != Customer::default()).then(|| tx.insert(c))
                }
            };
            let stored = match inserted {
                Some(Ok(_)) => true,
                Some(Err(e)) => {
                    errors.push(e);
                    false
                }
                None => false,
            };
            if stored {
                report.stored += 1;
                in_batch += 1;
            }
            if !errors.is_empty() {
                report.rejected.push(Rejection {
                    line,
                    stored,
                    errors,
                });
            }
            if in_batch >= self.batch {
                tx.commit()?;
                tx = store.begin_write()?;
                in_batch = 0;
                if let Some(p) = self.progress.as_mut() {
                    p(report.read);
                }
            }
        }
        tx.commit()?;
        if let Some(p) = self.progress.as_mut() {
            p(report.read);
        }
        Ok(report)
    }
}

/// Turns one CSV row into a builder; values that cannot even be read (a malformed date, an
/// unknown stage) are returned as errors beside it.
fn to_builder(fields: &[Field], row: &csv::StringRecord) -> (CustomerBuilder, Vec<Error>) {
    let mut b = Customer::builder();
    let mut errors = Vec::new();
    let mut address = AddressParts::default();
    for (field, value) in fields.iter().zip(row.iter()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        b = match field {
            Field::FullName => b.name(value),
            Field::GivenName => b.given_name(value),
            Field::FamilyName => b.family_name(value),
            Field::Email => b.email(value),
            Field::Phone => b.phone(value),
            Field::AddressLine => {
                address.lines.push(value.to_owned());
                b
            }
            Field::Locality => {
                address.locality = Some(value.to_owned());
                b
            }
            Field::Region => {
                address.region = Some(value.to_owned());
                b
            }
            Field::Postcode => {
                address.postcode = Some(value.to_owned());
                b
            }
            Field::Country => {
                address.country = Some(value.to_owned());
                b
            }
            Field::BirthDate => {
                if let Some(d) = parse_date(value) {
                    b.birth_date(d)
                } else {
                    errors.push(Error::invalid("birth_date", value, Reason::Malformed));
                    b
                }
            }
            Field::Gender => b.gender(value),
            Field::Organization => b.organization(value),
            Field::JobTitle => b.job_title(value),
            Field::Tags => value
                .split([';', '|'])
                .filter(|t| !t.trim().is_empty())
                .fold(b, CustomerBuilder::tag),
            Field::Stage => {
                if let Some(s) = Stage::parse(value) {
                    b.stage(s)
                } else {
                    errors.push(Error::invalid("stage", value, Reason::Malformed));
                    b
                }
            }
            Field::Owner => b.owner(value),
            Field::Source => b.source(value),
            Field::ExternalId(system) => b.external_id(system.as_str(), value),
            Field::Attribute(name) => b.attribute(name.as_str(), value),
            Field::Ignore => b,
        };
    }
    if address != AddressParts::default() {
        b = b.address(address);
    }
    (b, errors)
}

/// Reads `YYYY-MM-DD` or `YYYYMMDD`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y%m%d"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_synonyms_map_to_fields() {
        assert_eq!(Field::parse("First Name"), Some(Field::GivenName));
        assert_eq!(Field::parse("surname"), Some(Field::FamilyName));
        assert_eq!(
            Field::parse("external_id:shop"),
            Some(Field::ExternalId("shop".into()))
        );
        assert_eq!(Field::parse("favourite colour"), None);
    }

    #[test]
    fn dates_in_both_forms() {
        assert_eq!(
            parse_date("19991231"),
            NaiveDate::from_ymd_opt(1999, 12, 31)
        );
        assert_eq!(
            parse_date("1999-12-31"),
            NaiveDate::from_ymd_opt(1999, 12, 31)
        );
        assert_eq!(parse_date("19991331"), None);
    }
}
