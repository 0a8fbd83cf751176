//! Guards the standardisation layer against drifting from two outside references: the test
//! cases of Python's `email-validator` 2.3.0 and libphonenumber's example numbers (metadata
//! v9.0.33, the version the `phonenumber` crate carries). Every known disagreement is pinned
//! with its reason, so both a regression and an unnoticed improvement fail these tests.
//! Run with `--nocapture` to see the pass rates.

use std::collections::BTreeMap;

use customerdb::normalize::EmailOptions;
use customerdb::{CountryCode, Email, Phone};
use serde_json::Value;

const EMAIL_CASES: &str =
    include_str!("../fixtures/reference/python_email_validator_2.3.0_cases.jsonl");
const PHONE_CASES: &str =
    include_str!("../fixtures/reference/libphonenumber_example_numbers_v9.0.33.csv");

/// Email cases where this crate knowingly differs from email-validator, with the reason.
const EMAIL_DISAGREEMENTS: &[(&str, &str)] = &[
    ("\nmy@example.com", TRIMMED),
    ("\ntest@iana.org", TRIMMED),
    ("\r\n \r\n test@iana.org", TRIMMED),
    ("\r\n \r\ntest@iana.org", TRIMMED),
    ("\r\n test@iana.org", TRIMMED),
    ("\r\ntest@iana.org", TRIMMED),
    ("\rtest@iana.org", TRIMMED),
    (" \r\n\r\n test@iana.org", TRIMMED),
    (" \r\n\r\ntest@iana.org", TRIMMED),
    (" \r\n \r\ntest@iana.org", TRIMMED),
    (" \r\n test@iana.org", TRIMMED),
    (" \r\ntest@iana.org", TRIMMED),
    (" test@iana.org", TRIMMED),
    ("my@example.com\n", TRIMMED),
    ("test@iana.org\n", TRIMMED),
    ("test@iana.org\r", TRIMMED),
    ("test@iana.org\r\n", TRIMMED),
    ("test@iana.org\r\n ", TRIMMED),
    ("test@iana.org\r\n \r\n", TRIMMED),
    ("test@iana.org\r\n \r\n ", TRIMMED),
    ("test@iana.org ", TRIMMED),
    ("test@iana.org \r\n", TRIMMED),
    ("test@iana.org \r\n\r\n", TRIMMED),
    ("test@iana.org \r\n\r\n ", TRIMMED),
    ("test@iana.org \r\n ", TRIMMED),
    ("test@iana.org \r\n \r\n", TRIMMED),
];

/// Why the surrounding-whitespace cases differ.
const TRIMMED: &str = "we trim surrounding whitespace (form and CSV input) before checking; \
     email-validator refuses it";

/// Cases whose input holds a lone UTF-16 surrogate (`\ud800`), which no Rust string can hold;
/// email-validator refuses them, and they cannot reach `Email::parse`.
const EMAIL_UNREPRESENTABLE: usize = 2;

/// Phone rows whose national format, read with the row's region, does not give the reference
/// E.164, with the reason.
const PHONE_NATIONAL_DISAGREEMENTS: &[(&str, &str)] = &[
    ("AC 40123", NOT_ISO),
    ("AC 542011", NOT_ISO),
    ("AC 62889", NOT_ISO),
    ("TA 8999", NOT_ISO),
    ("XK 028 012 345", NOT_ISO),
    ("XK 043 201 234", NOT_ISO),
    ("XK 0800 01234", NOT_ISO),
    ("XK 0900 01234", NOT_ISO),
];

/// Why the Ascension (`AC`), Tristan da Cunha (`TA`) and Kosovo (`XK`) rows differ.
const NOT_ISO: &str = "region is not an assigned ISO 3166-1 code, so it is no CountryCode \
     (the same numbers parse in international form)";

/// Phone rows whose E.164 form, read without a region, is not accepted as itself.
const PHONE_E164_DISAGREEMENTS: &[(&str, &str)] = &[];

/// email-validator's options for a case, mapped onto ours (its defaults where absent).
fn options(case: &Value) -> EmailOptions {
    let flag = |name: &str, default: bool| {
        case["options"]
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    EmailOptions {
        allow_smtputf8: flag("allow_smtputf8", true),
        allow_quoted_local: flag("allow_quoted_local", false),
        allow_display_name: flag("allow_display_name", false),
        strict_local_length: flag("strict", false),
        allow_test_domain: flag("test_environment", false),
    }
}

/// Checks every email case; returns the number checked, the number unrepresentable, and the
/// disagreements keyed by input.
pub fn email_disagreements() -> (usize, usize, BTreeMap<String, String>) {
    let mut checked = 0;
    let mut unrepresentable = 0;
    let mut disagreements = BTreeMap::new();
    for line in EMAIL_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(case) = serde_json::from_str::<Value>(line) else {
            unrepresentable += 1;
            continue;
        };
        checked += 1;
        let input = case["input"].as_str().unwrap_or_default();
        let expected_valid = case
            .get("expected_valid")
            .or_else(|| case.get("email_validator_2_3_0_valid_with_test_env"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let got = Email::parse_with(input, &options(&case));
        let problem = match (&got, expected_valid) {
            (Ok(e), false) => Some(format!("accepted as {:?}, expected refusal", e.as_str())),
            (Err(e), true) => Some(format!("refused ({e}), expected valid")),
            (Ok(e), true) => {
                let expected = &case["expected"];
                let normalized = expected.get("normalized").and_then(Value::as_str);
                let ascii = expected.get("ascii_email").and_then(Value::as_str);
                if normalized.is_some_and(|n| n != e.as_str()) {
                    Some(format!(
                        "normalised {:?}, expected {normalized:?}",
                        e.as_str()
                    ))
                } else if ascii.is_some_and(|a| a != e.ascii()) {
                    Some(format!("ascii {:?}, expected {ascii:?}", e.ascii()))
                } else {
                    None
                }
            }
            (Err(_), false) => None,
        };
        if let Some(problem) = problem {
            disagreements.insert(input.to_owned(), problem);
        }
    }
    (checked, unrepresentable, disagreements)
}

/// The example-number rows: (region, e164, national format, e164 expected from national).
fn phone_rows() -> Vec<[String; 4]> {
    let mut lines = PHONE_CASES.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(region), Some(e164), Some(national), Some(expected), Some(valid)) = (
        col("region"),
        col("e164"),
        col("national_format"),
        col("national_format_parsed_with_region_e164"),
        col("expected_valid"),
    ) else {
        return Vec::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(valid) == Some(&"True"))
        .map(|f| {
            [region, e164, national, expected]
                .map(|i| f.get(i).copied().unwrap_or_default().to_owned())
        })
        .collect()
}

/// National formats read with their region: (rows checked, disagreements keyed by region and
/// national format).
pub fn phone_national_disagreements() -> (usize, BTreeMap<String, String>) {
    let mut checked = 0;
    let mut disagreements = BTreeMap::new();
    for [region, _, national, expected] in phone_rows() {
        if expected.is_empty() {
            continue; // non-geographic `001` rows have no national reading
        }
        checked += 1;
        let key = format!("{region} {national}");
        let got = CountryCode::parse(&region).and_then(|r| Phone::parse(&national, Some(r)));
        match got {
            Ok(p) if p.e164() == expected => {}
            Ok(p) => {
                disagreements.insert(key, format!("gave {}, expected {expected}", p.e164()));
            }
            Err(e) => {
                disagreements.insert(key, format!("refused: {e}"));
            }
        }
    }
    (checked, disagreements)
}

/// E.164 forms read without a region: (rows checked, disagreements keyed by E.164).
pub fn phone_e164_disagreements() -> (usize, BTreeMap<String, String>) {
    let mut checked = 0;
    let mut disagreements = BTreeMap::new();
    for [_, e164, _, _] in phone_rows() {
        checked += 1;
        match Phone::parse(&e164, None) {
            Ok(p) if p.e164() == e164 => {}
            Ok(p) => {
                disagreements.insert(e164, format!("gave {}", p.e164()));
            }
            Err(e) => {
                disagreements.insert(e164, format!("refused: {e}"));
            }
        }
    }
    (checked, disagreements)
}

fn report(what: &str, checked: usize, got: &BTreeMap<String, String>, pinned: &[(&str, &str)]) {
    let passed = checked - got.len();
    #[allow(clippy::cast_precision_loss)]
    let rate = 100.0 * passed as f64 / checked.max(1) as f64;
    println!("{what}: {passed}/{checked} agree ({rate:.1}%)");
    for (input, problem) in got {
        let why = pinned
            .iter()
            .find(|(i, _)| i == input)
            .map_or("NOT PINNED", |(_, why)| why);
        println!("  {input:?}: {problem} [{why}]");
    }
    let pinned_inputs: Vec<&str> = pinned.iter().map(|(i, _)| *i).collect();
    let got_inputs: Vec<&str> = got.keys().map(String::as_str).collect();
    let mut pinned_sorted = pinned_inputs.clone();
    pinned_sorted.sort_unstable();
    assert_eq!(got_inputs, pinned_sorted, "{what}: disagreements changed");
}

#[test]
fn email_cases_agree_with_email_validator_except_pinned() {
    let (checked, unrepresentable, got) = email_disagreements();
    assert_eq!(unrepresentable, EMAIL_UNREPRESENTABLE);
    report("email", checked, &got, EMAIL_DISAGREEMENTS);
}

#[test]
fn phone_national_formats_give_reference_e164_except_pinned() {
    let (checked, got) = phone_national_disagreements();
    report(
        "phone national",
        checked,
        &got,
        PHONE_NATIONAL_DISAGREEMENTS,
    );
}

#[test]
fn phone_e164_forms_are_fixed_points_except_pinned() {
    let (checked, got) = phone_e164_disagreements();
    report("phone e164", checked, &got, PHONE_E164_DISAGREEMENTS);
}
