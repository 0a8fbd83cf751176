//! Checks the standardisation layer against two outside references and prints the pass
//! rates and every disagreement: libphonenumber's example numbers (v9.0.33) and the test
//! cases of Python's `email-validator` 2.3.0. Fails if a rate drops below what was measured.
//!
//! Run with `cargo run --example reference_vectors`.

use customerdb::normalize::EmailOptions;
use customerdb::{CountryCode, Email, Phone};
use serde_json::Value;

const PHONES: &str =
    include_str!("../tests/fixtures/reference/libphonenumber_example_numbers_v9.0.33.csv");
const EMAILS: &str =
    include_str!("../tests/fixtures/reference/python_email_validator_2.3.0_cases.jsonl");

/// Rates measured when this example was written, in per cent.
const MIN_PHONE_NATIONAL: f64 = 99.2;
const MIN_PHONE_E164: f64 = 100.0;
const MIN_EMAIL: f64 = 91.1;

fn rate(what: &str, passed: usize, total: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let pct = 100.0 * passed as f64 / total.max(1) as f64;
    println!("{what}: {passed}/{total} ({pct:.1}%)");
    pct
}

fn main() {
    let (mut national, mut national_ok, mut e164, mut e164_ok) = (0, 0, 0, 0);
    for row in PHONES
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
    {
        let [
            region,
            _,
            _,
            _,
            _,
            _,
            number,
            _,
            formatted,
            _,
            valid,
            _,
            expected,
        ] = row[..]
        else {
            continue;
        };
        if valid != "True" {
            continue;
        }
        e164 += 1;
        match Phone::parse(number, None) {
            Ok(p) if p.e164() == number => e164_ok += 1,
            other => println!("  e164 {number}: {:?}", other.map(|p| p.e164().to_owned())),
        }
        if expected.is_empty() {
            continue;
        }
        national += 1;
        match CountryCode::parse(region).and_then(|r| Phone::parse(formatted, Some(r))) {
            Ok(p) if p.e164() == expected => national_ok += 1,
            Ok(p) => println!(
                "  national {region} {formatted}: {} != {expected}",
                p.e164()
            ),
            Err(e) => println!("  national {region} {formatted}: {e}"),
        }
    }

    let (mut emails, mut emails_ok) = (0, 0);
    for case in EMAILS
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        let flag = |k: &str, d: bool| case["options"].get(k).and_then(Value::as_bool).unwrap_or(d);
        let options = EmailOptions {
            allow_smtputf8: flag("allow_smtputf8", true),
            allow_quoted_local: flag("allow_quoted_local", false),
            allow_display_name: flag("allow_display_name", false),
            strict_local_length: flag("strict", false),
            allow_test_domain: flag("test_environment", false),
        };
        let input = case["input"].as_str().unwrap_or_default();
        let valid = case
            .get("expected_valid")
            .or_else(|| case.get("email_validator_2_3_0_valid_with_test_env"));
        let valid = valid.and_then(Value::as_bool).unwrap_or(false);
        let expected = case["expected"].get("normalized").and_then(Value::as_str);
        emails += 1;
        match Email::parse_with(input, &options) {
            Ok(e) if valid && expected.is_none_or(|n| n == e.as_str()) => emails_ok += 1,
            Err(_) if !valid => emails_ok += 1,
            Ok(e) => {
                let want = if valid {
                    expected.unwrap_or("?")
                } else {
                    "a refusal"
                };
                println!(
                    "  email {input:?}: accepted as {:?}, expected {want}",
                    e.as_str()
                );
            }
            Err(e) => println!("  email {input:?}: {e}"),
        }
    }

    let n = rate("phone national format with region", national_ok, national);
    let e = rate("phone E.164 without region", e164_ok, e164);
    let m = rate("email validity and normalised form", emails_ok, emails);
    assert!(n >= MIN_PHONE_NATIONAL && e >= MIN_PHONE_E164 && m >= MIN_EMAIL);
}
