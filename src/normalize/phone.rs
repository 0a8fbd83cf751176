//! Phone numbers to E.164, through libphonenumber's metadata (the `phonenumber` crate).

use phonenumber::country::Id;
use phonenumber::metadata::{DATABASE, Metadata};
use phonenumber::{ParseError, PhoneNumber, Type};
use unicode_normalization::UnicodeNormalization;

use super::{Reason, numbering};

/// The longest raw phone value accepted, in bytes.
pub const MAX_PHONE_LEN: usize = 64;
/// The most digits in an extension.
const MAX_EXTENSION_DIGITS: usize = 10;
/// The most digits a number may have (15 for E.164, plus a trunk prefix or IDD).
const MAX_DIGITS: usize = 17;

/// A checked phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedPhone {
    /// `+` country code and national significant number.
    pub e164: String,
    /// The extension's digits, if one was given.
    pub extension: Option<String>,
    /// libphonenumber's number type.
    pub number_type: Type,
    /// The region (ISO 3166-1 alpha-2 or a libphonenumber region such as `AC`) the number
    /// belongs to, if it belongs to one.
    pub region: Option<String>,
}

/// Compiled patterns the phone metadata may keep. The `phonenumber` crate keeps 100 in an LRU,
/// but numbers from a few dozen regions touch several hundred patterns, and every eviction means
/// compiling a regex again: with mixed regions parsing ran at about 1 ms a number. All patterns
/// of every region compiled take a few tens of MB; this bound keeps them all.
const REGEX_CACHE_CAPACITY: usize = 16_384;

/// Replaces the metadata's regex cache with a larger one, once per process.
fn enlarge_regex_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(mut cache) = DATABASE.cache().lock() {
            *cache = regex_cache::RegexCache::new(REGEX_CACHE_CAPACITY);
        }
    });
}

/// Numbers parsed between two releases of the compiled patterns. The patterns' match caches
/// grow with the numbers seen (about 450 MiB after a million numbers from mixed regions, and
/// what is freed late stays resident between the allocations made meanwhile); compiling the
/// patterns a region uses again costs far less than parsing this many numbers.
const PARSES_PER_RELEASE: usize = 100_000;

/// Counts parses, releasing the patterns every [`PARSES_PER_RELEASE`].
fn count_parse() {
    static PARSES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PARSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_multiple_of(PARSES_PER_RELEASE) {
        release_patterns();
    }
}

/// Drops the compiled phone-number patterns (see [`crate::normalize::release_phone_patterns`]).
pub(crate) fn release_patterns() {
    enlarge_regex_cache();
    if let Ok(mut cache) = DATABASE.cache().lock() {
        *cache = regex_cache::RegexCache::new(REGEX_CACHE_CAPACITY);
    }
    numbering::release();
}

/// Checks a phone number and puts it in E.164 form. `default_region` (upper-case alpha-2)
/// reads national numbers; numbers starting with `+` or `00` need none.
pub(crate) fn normalize_phone(
    raw: &str,
    default_region: Option<&str>,
) -> Result<NormalizedPhone, Reason> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Reason::Empty);
    }
    enlarge_regex_cache();
    count_parse();
    if raw.len() > MAX_PHONE_LEN {
        return Err(Reason::TooLong { max: MAX_PHONE_LEN });
    }
    if raw.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(Reason::ControlCharacter);
    }
    // Fast path: already E.164, the usual case for machine-made data.
    let (dialable, extension) = if is_e164_shape(raw) {
        (raw.to_owned(), None)
    } else {
        let folded: String = if raw.is_ascii() {
            raw.to_owned()
        } else {
            raw.nfkc().collect()
        };
        clean(&folded)?
    };
    let mut region = default_region.and_then(|r| r.parse::<Id>().ok());
    let dialable = with_idd_as_plus(dialable, region);
    // The region only reads national numbers. Given with an international one, the crate
    // strips the *region's* trunk prefix from the dialled country's number (`+46 0...` read
    // with US kept Sweden's trunk 0), so a number and its E.164 form could parse differently.
    if let Some(digits) = dialable.strip_prefix('+') {
        // The parser would look the region up by the slow path; it reads the number the
        // same way when told the region (see `numbering::region_of_international`).
        region = numbering::region_of_international(digits);
    } else if region.is_none() {
        return Err(Reason::PhoneNoRegion);
    }
    let number = phonenumber::parse(region, &dialable).map_err(|e| match e {
        ParseError::TooShortAfterIdd | ParseError::TooShortNsn => Reason::PhoneTooShort,
        ParseError::TooLong => Reason::PhoneTooLong,
        ParseError::InvalidCountryCode => Reason::PhoneCountryCode,
        _ => Reason::PhoneInvalid,
    })?;
    if let Some(valid) = valid_type(&number) {
        return Ok(finish(&number, valid, extension));
    }
    match reread(&dialable, region, &number) {
        Some((number, valid)) => Ok(finish(&number, valid, extension)),
        None => Err(Reason::PhoneInvalid),
    }
}

/// Works around the `phonenumber` crate (0.3.10) stripping a trunk prefix that is really
/// part of the number: `+7 800 123 45 67` and `+370 800 12345` lose their leading 8 (the
/// Russian and Lithuanian trunk prefix), and Rwanda's national `250 123 456` is read as
/// country code 250. The number is rewritten as `+` country code, trunk prefix, national
/// number, so the crate strips exactly that prefix, and the result is kept only if it is
/// valid and is exactly the country code and national number that were given.
fn reread(
    dialable: &str,
    region: Option<Id>,
    first: &PhoneNumber,
) -> Option<(PhoneNumber, (Type, Option<&'static Metadata>))> {
    let (code, national) = if let Some(international) = dialable.strip_prefix('+') {
        let code = first.code().value();
        (code, international.strip_prefix(&code.to_string())?)
    } else {
        let meta = DATABASE.by_id(region?.as_ref())?;
        let national = match meta.national_prefix() {
            Some(prefix) if !prefix.is_empty() => dialable.strip_prefix(prefix).unwrap_or(dialable),
            _ => dialable,
        };
        (meta.country_code(), national)
    };
    let target = format!("+{code}{national}");
    let mut prefixes: Vec<&str> = DATABASE
        .by_code(&code)?
        .into_iter()
        .filter_map(|m| m.national_prefix())
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    // The crate may strip the prefix once or twice, so try it written once and twice.
    let candidates = prefixes
        .iter()
        .flat_map(|prefix| {
            [
                format!("+{code}{prefix}{national}"),
                format!("+{code}{prefix}{prefix}{national}"),
            ]
        })
        .chain(std::iter::once(target.clone()));
    for candidate in candidates {
        if let Ok(number) = phonenumber::parse(None, &candidate) {
            if let Some(valid) = valid_type(&number) {
                if e164(&number) == target {
                    return Some((number, valid));
                }
            }
        }
    }
    None
}

/// Rewrites a number dialled with the region's international prefix (`011` from the US, `00`
/// from most of Europe) as `+...`, so it is read as the international number it is.
fn with_idd_as_plus(dialable: String, region: Option<Id>) -> String {
    if dialable.starts_with('+') {
        return dialable;
    }
    let idd = region
        .and_then(|r| DATABASE.by_id(r.as_ref()))
        .and_then(|m| numbering::international_prefix_len(m, &dialable))
        .filter(|end| *end < dialable.len());
    match idd {
        Some(end) => format!("+{}", &dialable[end..]),
        None => dialable,
    }
}

/// Whether `s` is `+` and 2 to 15 ASCII digits, the first not zero.
fn is_e164_shape(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Splits off an extension and reduces the number to `+digits` or `digits`.
fn clean(s: &str) -> Result<(String, Option<String>), Reason> {
    let s = s.strip_prefix("tel:").unwrap_or(s);
    let (number, extension) = split_extension(s)?;
    let mut dialable = String::with_capacity(number.len());
    let mut seen_digit = false;
    for c in number.chars() {
        match c {
            '0'..='9' => {
                dialable.push(c);
                seen_digit = true;
            }
            '+' if !seen_digit && !dialable.starts_with('+') => dialable.push('+'),
            ' ' | '.' | '-' | '(' | ')' | '/' | '‐' | '‑' | '–' => {}
            c if c.is_whitespace() => {}
            _ => return Err(Reason::PhoneCharacter),
        }
    }
    if let Some(rest) = dialable.strip_prefix("00") {
        dialable = format!("+{rest}");
    }
    let digits = dialable.trim_start_matches('+').len();
    if digits < 3 {
        return Err(Reason::PhoneTooShort);
    }
    if digits > MAX_DIGITS {
        return Err(Reason::PhoneTooLong);
    }
    Ok((dialable, extension))
}

/// Splits `number ext. 123` (also `x123`, `#123`, `extension 123`, `;ext=123`) into the
/// number and the extension's digits.
fn split_extension(s: &str) -> Result<(&str, Option<String>), Reason> {
    let Some(start) = s.find(|c: char| c.is_alphabetic() || c == '#' || c == ';') else {
        return Ok((s, None));
    };
    let (number, tail) = s.split_at(start);
    let lower = tail.to_lowercase();
    let rest = [";ext=", "extension", "ext.", "ext", "x", "#"]
        .iter()
        .find_map(|marker| lower.strip_prefix(marker));
    let Some(rest) = rest else {
        return Err(Reason::PhoneCharacter);
    };
    let digits = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '.' || c == ':');
    let digits = digits.trim_end();
    if digits.is_empty()
        || digits.len() > MAX_EXTENSION_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Reason::PhoneExtension);
    }
    Ok((number, Some(digits.to_owned())))
}

/// The number's type and region if it fits its country's plan (see [`numbering`] for why the
/// crate's own check is not used). `Type::Unknown` means valid but of no known type.
fn valid_type(number: &PhoneNumber) -> Option<(Type, Option<&'static Metadata>)> {
    let code = number.code().value();
    let national = number.national();
    // The plan is read without the national number's leading zeros, but E.164 writes them
    // back: with zeros, only a number valid *with* them may pass, or `+46 0 69696694` would
    // be stored and read back as another number.
    let has_zeros = national.zeros() > 0;
    if has_zeros && !numbering::is_valid(code, &national.to_string()) {
        return None;
    }
    let plain = national.value().to_string();
    let meta = numbering::source(code, &plain);
    match meta.map_or(Type::Unknown, |m| numbering::number_type(m, &plain)) {
        // Without zeros, an unknown type is what `is_valid` of the same number would read
        // again; with them, the number was found valid above: valid, of no known type.
        Type::Unknown => has_zeros.then_some((Type::Unknown, meta)),
        t => Some((t, meta)),
    }
}

/// The E.164 form of a parsed number: `+`, the code and the national number with its zeros.
fn e164(number: &PhoneNumber) -> String {
    format!("+{}{}", number.code().value(), number.national())
}

/// Formats a valid number.
fn finish(
    number: &PhoneNumber,
    (number_type, meta): (Type, Option<&'static Metadata>),
    extension: Option<String>,
) -> NormalizedPhone {
    NormalizedPhone {
        e164: e164(number),
        extension,
        number_type,
        region: meta.map(|m| m.id().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str, region: Option<&str>) -> Result<String, Reason> {
        normalize_phone(raw, region).map(|p| p.e164)
    }

    /// Pinned from the normalize fuzz target and its review: E.164 output must parse back to
    /// itself whatever the default region.
    #[test]
    fn e164_output_is_a_fixed_point_whatever_the_region() {
        for (raw, region) in [
            ("+46069696694", Some("US")),
            ("+4600069696694", None),
            ("+4600069696694", Some("GB")),
            ("+44 (0)20 7946 0018", Some("US")),
            ("011 44 20 7946 0018", Some("US")),
        ] {
            if let Ok(first) = e164(raw, region) {
                assert_eq!(
                    e164(&first, None).as_deref(),
                    Ok(first.as_str()),
                    "{raw} {region:?}"
                );
            }
        }
        assert_eq!(
            e164("+44 (0)20 7946 0018", Some("US")).unwrap(),
            "+442079460018"
        );
        assert_eq!(
            e164("011 44 20 7946 0018", Some("US")).unwrap(),
            "+442079460018"
        );
        assert_eq!(e164("+4600069696694", None), Err(Reason::PhoneInvalid));
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert_eq!(e164("020 7946 0018", Some("GB")).unwrap(), "+442079460018");
        assert_eq!(e164("020 7946 0018", None), Err(Reason::PhoneNoRegion));
    }

    #[test]
    fn international_prefixes_are_understood() {
        assert_eq!(e164("+44 (0)20 7946 0018", None).unwrap(), "+442079460018");
        assert_eq!(e164("0044 20 7946 0018", None).unwrap(), "+442079460018");
        assert_eq!(
            e164("011 44 20 7946 0018", Some("US")).unwrap(),
            "+442079460018"
        );
        assert_eq!(e164("+1 (201) 555-0123", None).unwrap(), "+12015550123");
        assert_eq!(e164("201.555.0123", Some("US")).unwrap(), "+12015550123");
    }

    #[test]
    fn extensions_are_split_off() {
        let p = normalize_phone("+1 201 555 0123 ext. 42", None).unwrap();
        assert_eq!(
            (p.e164.as_str(), p.extension.as_deref()),
            ("+12015550123", Some("42"))
        );
        let p = normalize_phone("+1 201 555 0123 x42", None).unwrap();
        assert_eq!(p.extension.as_deref(), Some("42"));
        assert_eq!(
            e164("+1 201 555 0123 ext", None),
            Err(Reason::PhoneExtension)
        );
    }

    #[test]
    fn letters_and_short_numbers_are_refused() {
        assert_eq!(
            e164("1-800-FLOWERS", Some("US")),
            Err(Reason::PhoneCharacter)
        );
        assert_eq!(e164("12", Some("US")), Err(Reason::PhoneTooShort));
        assert_eq!(e164("+44 1234", None), Err(Reason::PhoneInvalid));
        assert_eq!(e164("  ", None), Err(Reason::Empty));
    }

    #[test]
    fn full_width_digits_are_folded() {
        assert_eq!(
            e164("＋４４ ２０ ７９４６ ００１８", None).unwrap(),
            "+442079460018"
        );
    }

    #[test]
    fn numbers_starting_with_the_trunk_prefix_digit_survive() {
        assert_eq!(e164("+7 800 123-45-67", None).unwrap(), "+78001234567");
        assert_eq!(
            e164("8 (800) 123-45-67", Some("RU")).unwrap(),
            "+78001234567"
        );
        assert_eq!(e164("+370 800 12345", None).unwrap(), "+37080012345");
        assert_eq!(e164("250 123 456", Some("RW")).unwrap(), "+250250123456");
    }

    #[test]
    fn mobile_type_is_detected() {
        let p = normalize_phone("07400 123456", Some("GB")).unwrap();
        assert_eq!(p.number_type, Type::Mobile);
        assert_eq!(p.region.as_deref(), Some("GB"));
    }
}
