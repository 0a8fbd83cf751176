//! Postal addresses: cleaned lines and country-shaped postcodes.

use super::Reason;

/// The longest postcode accepted, in bytes.
pub const MAX_POSTCODE_LEN: usize = 24;

/// Puts a postcode into its country's canonical shape.
///
/// `country` is an upper-case ISO 3166-1 alpha-2 code, or `None`. For countries with a known
/// shape the postcode is read ignoring case, spaces and hyphens (and a leading country prefix
/// such as `D-` or `NL-`), then written in the national form; a postcode that does not fit is
/// refused. For other countries, and when no country is given, it is upper-cased with
/// whitespace collapsed.
pub(crate) fn normalize_postcode(
    raw: &str,
    country: Option<&'static str>,
) -> Result<String, Reason> {
    let collapsed = super::text::collapse_whitespace(&raw.to_uppercase());
    if collapsed.is_empty() {
        return Err(Reason::Empty);
    }
    if collapsed.len() > MAX_POSTCODE_LEN {
        return Err(Reason::TooLong {
            max: MAX_POSTCODE_LEN,
        });
    }
    let Some(country) = country else {
        return Ok(collapsed);
    };
    let Some(shape) = shape_of(country) else {
        return Ok(collapsed);
    };
    let compact: String = collapsed
        .chars()
        .filter(|&c| c != ' ' && c != '-')
        .collect();
    let bad = || Reason::PostcodeFormat { country };
    // A national prefix (`D-10115`, `NL-1234AB`, `CH 8001`) is dropped when the rest fits.
    let candidates = std::iter::once(compact.as_str()).chain(
        shape
            .prefixes
            .iter()
            .filter_map(|p| compact.strip_prefix(p)),
    );
    for candidate in candidates {
        if let Some(formatted) = (shape.format)(candidate) {
            return Ok(formatted);
        }
    }
    Err(bad())
}

/// A country's postcode rule.
struct Shape {
    /// Prefixes written before postcodes in international mail (`D`, `DE`).
    prefixes: &'static [&'static str],
    /// Reads the compact upper-case form (no spaces or hyphens) and writes the national form.
    format: fn(&str) -> Option<String>,
}

fn shape_of(country: &str) -> Option<Shape> {
    let shape = |prefixes, format| Some(Shape { prefixes, format });
    match country {
        "GB" => shape(&["GB", "UK"], gb),
        "US" => shape(&["US"], us),
        "CA" => shape(&["CA"], ca),
        "DE" => shape(&["DE", "D"], |s| digits(s, 5)),
        "FR" => shape(&["FR", "F"], |s| digits(s, 5)),
        "ES" => shape(&["ES", "E"], es),
        "IT" => shape(&["IT", "I"], |s| digits(s, 5)),
        "FI" => shape(&["FI", "FIN"], |s| digits(s, 5)),
        "NL" => shape(&["NL"], nl),
        "BE" => shape(&["BE", "B"], |s| digits_from(s, 4, b'1')),
        "AT" => shape(&["AT", "A"], |s| digits_from(s, 4, b'1')),
        "CH" => shape(&["CH"], |s| digits_from(s, 4, b'1')),
        "DK" => shape(&["DK"], |s| digits(s, 4)),
        "NO" => shape(&["NO", "N"], |s| digits(s, 4)),
        "AU" => shape(&["AU"], |s| digits(s, 4)),
        "NZ" => shape(&["NZ"], |s| digits(s, 4)),
        "IE" => shape(&["IE", "IRL"], ie),
        "JP" => shape(&["JP"], |s| split_digits(s, 3, 4, "-")),
        "BR" => shape(&["BR"], |s| split_digits(s, 5, 3, "-")),
        "IN" => shape(&["IN"], |s| digits_from(s, 6, b'1')),
        "SE" => shape(&["SE", "S"], |s| split_digits(s, 3, 2, " ")),
        "PL" => shape(&["PL"], |s| split_digits(s, 2, 3, "-")),
        "PT" => shape(&["PT", "P"], |s| split_digits(s, 4, 3, "-")),
        _ => None,
    }
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Exactly `n` digits.
fn digits(s: &str, n: usize) -> Option<String> {
    (s.len() == n && all_digits(s)).then(|| s.to_owned())
}

/// Exactly `n` digits, the first at least `min`.
fn digits_from(s: &str, n: usize, min: u8) -> Option<String> {
    digits(s, n).filter(|d| d.as_bytes()[0] >= min)
}

/// `a + b` digits written as `first{sep}second`.
fn split_digits(s: &str, a: usize, b: usize, sep: &str) -> Option<String> {
    digits(s, a + b).map(|d| format!("{}{sep}{}", &d[..a], &d[a..]))
}

/// UK postcode: outward code (`A9`, `A99`, `AA9`, `AA99`, `A9A`, `AA9A`) and inward code
/// (`9AA`), written with one space; also `GIR 0AA`.
fn gb(s: &str) -> Option<String> {
    if s == "GIR0AA" {
        return Some("GIR 0AA".to_owned());
    }
    if !(5..=7).contains(&s.len()) || !s.is_ascii() {
        return None;
    }
    let (outward, inward) = s.split_at(s.len() - 3);
    let inward_ok = {
        let b = inward.as_bytes();
        b[0].is_ascii_digit() && b[1].is_ascii_uppercase() && b[2].is_ascii_uppercase()
    };
    let pattern: String = outward
        .bytes()
        .map(|b| {
            if b.is_ascii_digit() {
                '9'
            } else if b.is_ascii_uppercase() {
                'A'
            } else {
                '?'
            }
        })
        .collect();
    let outward_ok = matches!(
        pattern.as_str(),
        "A9" | "A99" | "AA9" | "AA99" | "A9A" | "AA9A"
    );
    (inward_ok && outward_ok).then(|| format!("{outward} {inward}"))
}

/// ZIP or ZIP+4: `12345` or `12345-6789`.
fn us(s: &str) -> Option<String> {
    match s.len() {
        5 => digits(s, 5),
        9 => split_digits(s, 5, 4, "-"),
        _ => None,
    }
}

/// Canadian postal code `A9A 9A9`; D, F, I, O, Q and U are never used, W and Z never first.
fn ca(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 6 || !s.is_ascii() {
        return None;
    }
    let letter = |c: u8| c.is_ascii_uppercase() && !b"DFIOQU".contains(&c);
    let ok = letter(b[0])
        && !b"WZ".contains(&b[0])
        && b[1].is_ascii_digit()
        && letter(b[2])
        && b[3].is_ascii_digit()
        && letter(b[4])
        && b[5].is_ascii_digit();
    ok.then(|| format!("{} {}", &s[..3], &s[3..]))
}

/// Spanish código postal: five digits, the first two a province from 01 to 52.
fn es(s: &str) -> Option<String> {
    digits(s, 5).filter(|d| (1..=52).contains(&d[..2].parse::<u8>().unwrap_or(0)))
}

/// Dutch postcode `1234 AB`: the first digit not zero; SA, SD and SS are not used.
fn nl(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() != 6 || !s.is_ascii() || !all_digits(&s[..4]) || b[0] == b'0' {
        return None;
    }
    let letters = &s[4..];
    let ok =
        letters.bytes().all(|c| c.is_ascii_uppercase()) && !matches!(letters, "SA" | "SD" | "SS");
    ok.then(|| format!("{} {letters}", &s[..4]))
}

/// Irish Eircode `A65 F4E2`: a routing key (a letter and two digits, or `D6W`) and a unique
/// identifier of four characters from the Eircode alphabet.
fn ie(s: &str) -> Option<String> {
    const LETTERS: &[u8] = b"ACDEFHKNPRTVWXY";
    let b = s.as_bytes();
    if b.len() != 7 || !s.is_ascii() {
        return None;
    }
    let routing_ok = s.starts_with("D6W")
        || (LETTERS.contains(&b[0]) && b[1].is_ascii_digit() && b[2].is_ascii_digit());
    let unique_ok = LETTERS.contains(&b[3])
        && b[4..]
            .iter()
            .all(|&c| c.is_ascii_digit() || LETTERS.contains(&c));
    (routing_ok && unique_ok).then(|| format!("{} {}", &s[..3], &s[3..]))
}

/// The postcode's key for indexing and lookups: upper case, whitespace removed, so
/// `sw1a 2aa` and `SW1A2AA` meet.
///
/// ```
/// assert_eq!(customerdb::normalize::postcode_key(" sw1a 2aa"), "SW1A2AA");
/// ```
pub fn postcode_key(postcode: &str) -> String {
    postcode
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc(raw: &str, country: &'static str) -> Result<String, Reason> {
        normalize_postcode(raw, Some(country))
    }

    #[test]
    fn postcodes_take_their_national_shape() {
        assert_eq!(pc("sw1a1aa", "GB").unwrap(), "SW1A 1AA");
        assert_eq!(pc("EC1A 1BB", "GB").unwrap(), "EC1A 1BB");
        assert_eq!(pc("m1 1ae", "GB").unwrap(), "M1 1AE");
        assert_eq!(pc("123456789", "US").unwrap(), "12345-6789");
        assert_eq!(pc("k1a0b1", "CA").unwrap(), "K1A 0B1");
        assert_eq!(pc("D-10115", "DE").unwrap(), "10115");
        assert_eq!(pc("1234ab", "NL").unwrap(), "1234 AB");
        assert_eq!(pc("a65f4e2", "IE").unwrap(), "A65 F4E2");
        assert_eq!(pc("d6wxy12", "IE").unwrap(), "D6W XY12");
        assert_eq!(pc("1000001", "JP").unwrap(), "100-0001");
        assert_eq!(pc("01310100", "BR").unwrap(), "01310-100");
        assert_eq!(pc("11455", "SE").unwrap(), "114 55");
        assert_eq!(pc("00950", "PL").unwrap(), "00-950");
        assert_eq!(pc("1000-001", "PT").unwrap(), "1000-001");
        assert_eq!(pc("28013", "ES").unwrap(), "28013");
        assert_eq!(pc("8001", "CH").unwrap(), "8001");
    }

    #[test]
    fn postcodes_that_do_not_fit_are_refused() {
        for (raw, country) in [
            ("SW1A", "GB"),
            ("1234", "US"),
            ("D1A 0B1", "CA"),
            ("0123 AB", "NL"),
            ("99000", "ES"),
            ("1234", "DE"),
            ("B65 F4E2", "IE"),
        ] {
            assert_eq!(
                pc(raw, country),
                Err(Reason::PostcodeFormat { country }),
                "{raw}"
            );
        }
    }

    #[test]
    fn unknown_countries_are_upper_cased_and_collapsed() {
        assert_eq!(normalize_postcode(" ab  12 ", Some("ZA")).unwrap(), "AB 12");
        assert_eq!(normalize_postcode("ab12", None).unwrap(), "AB12");
        assert_eq!(normalize_postcode("  ", None), Err(Reason::Empty));
    }

    #[test]
    fn non_ascii_postcodes_are_refused_not_sliced() {
        for country in ["NL", "IE", "CA", "GB", "US", "JP"] {
            assert_eq!(
                pc("123é5", country),
                Err(Reason::PostcodeFormat { country })
            );
        }
    }
}
