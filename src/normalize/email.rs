//! Email address syntax, normalisation and matching keys.
//!
//! A port of the syntax rules of Python's `email-validator` 2.3.0 (without its DNS checks);
//! the rules are listed in the [module docs](super).

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::Reason;
use super::text::{is_format, is_private_or_noncharacter};

/// The longest address accepted, in bytes (RFC 3696 errata 1690; RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// The longest part before the `@`, in bytes (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
/// The longest domain in its ASCII form, in bytes (RFC 1035 2.3.4).
const MAX_DOMAIN_LEN: usize = 253;
/// The longest domain label in its ASCII form, in bytes (RFC 1035 2.3.1).
const MAX_LABEL_LEN: usize = 63;
/// Inputs longer than this are refused before any work is done.
const MAX_RAW_LEN: usize = 1024;

/// Special-use and reserved domains that cannot receive mail (RFC 6761, 6762, 7686).
const SPECIAL_USE_DOMAINS: [&str; 6] = ["arpa", "invalid", "local", "localhost", "onion", "test"];

/// RFC 2142 mailbox names, which are case-insensitive and so normalised to lower case.
const CASE_INSENSITIVE_MAILBOXES: [&str; 15] = [
    "info",
    "marketing",
    "sales",
    "support",
    "abuse",
    "noc",
    "security",
    "postmaster",
    "hostmaster",
    "usenet",
    "news",
    "webmaster",
    "www",
    "uucp",
    "ftp",
];

/// Which optional forms of an email address are accepted.
///
/// [`EmailOptions::default`] is what [`Email::parse`](crate::model::Email::parse) uses:
/// internationalised local parts are accepted; quoted local parts, display names and the
/// special-use `.test` domain are refused; the local part may not exceed 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::struct_excessive_bools)] // independent switches, as in email-validator
pub struct EmailOptions {
    /// Accept non-ASCII characters before the `@` (RFC 6531 SMTPUTF8). Default `true`.
    pub allow_smtputf8: bool,
    /// Accept a quoted local part (`"ada lovelace"@example.org`). Default `false`.
    pub allow_quoted_local: bool,
    /// Accept `Display Name <address>`; the name is discarded. Default `false`.
    pub allow_display_name: bool,
    /// Refuse local parts longer than 64 bytes (RFC 5321). Default `true`; email-validator
    /// enforces this only in its `strict` mode.
    pub strict_local_length: bool,
    /// Accept the special-use `test` domain and its subdomains, and the bare domain `test`.
    /// Default `false`.
    pub allow_test_domain: bool,
}

impl Default for EmailOptions {
    fn default() -> Self {
        EmailOptions {
            allow_smtputf8: true,
            allow_quoted_local: false,
            allow_display_name: false,
            strict_local_length: true,
            allow_test_domain: false,
        }
    }
}

/// A checked and normalised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedEmail {
    /// `local@domain`: local part NFC (case kept), domain in lower-case Unicode form.
    pub normalized: String,
    /// `local@domain` with the domain in IDNA ASCII form.
    pub ascii: String,
    /// The provider-aware matching key.
    pub match_key: String,
}

/// Checks and normalises an address that has already been trimmed.
pub(crate) fn normalize_email(
    email: &str,
    options: EmailOptions,
) -> Result<NormalizedEmail, Reason> {
    if email.is_empty() {
        return Err(Reason::Empty);
    }
    if email.len() > MAX_RAW_LEN {
        return Err(Reason::TooLong { max: MAX_EMAIL_LEN });
    }
    let (display_name, local, domain, quoted) = split_email(email)?;
    // The address as entered must fit too, not only its normalised form.
    if local.len() + 1 + domain.len() > MAX_EMAIL_LEN {
        return Err(Reason::TooLong { max: MAX_EMAIL_LEN });
    }
    if display_name.is_some() && !options.allow_display_name {
        return Err(Reason::EmailDisplayName);
    }
    let (mut local, smtputf8) = validate_local(&local, quoted, options)?;
    if quoted && !options.allow_quoted_local {
        return Err(Reason::EmailQuotedLocal);
    }
    if !smtputf8 && CASE_INSENSITIVE_MAILBOXES.contains(&local.to_ascii_lowercase().as_str()) {
        local.make_ascii_lowercase();
    }
    if domain.is_empty() {
        return Err(Reason::EmailDomainEmpty);
    }
    if domain.starts_with('[') && domain.ends_with(']') {
        return Err(Reason::EmailDomainLiteral);
    }
    let (unicode_domain, ascii_domain) = validate_domain(domain, options.allow_test_domain)?;

    let normalized = format!("{local}@{unicode_domain}");
    let ascii = format!("{local}@{ascii_domain}");
    if ascii.len() > MAX_EMAIL_LEN || normalized.len() > MAX_EMAIL_LEN {
        return Err(Reason::TooLong { max: MAX_EMAIL_LEN });
    }
    let match_key = match_key(&local, &unicode_domain);
    Ok(NormalizedEmail {
        normalized,
        ascii,
        match_key,
    })
}

/// Splits an address into display name, unquoted local part, domain, and whether the local
/// part was quoted (email-validator's `split_email`).
fn split_email(email: &str) -> Result<(Option<String>, String, &str, bool), Reason> {
    let (left, right) = split_at_unquoted_special(email, &['@', '<'])?;
    let (display_name, local, domain) = if let Some(bracketed) = right.strip_prefix('<') {
        let (name, name_quoted) = unquote(left.trim_end())?;
        if !name_quoted && name.chars().any(|c| c == '.' || (c != ' ' && !is_atext(c))) {
            return Err(Reason::EmailAngleBrackets);
        }
        check_unsafe(&name, true)?;
        if !bracketed.contains('>') {
            return Err(Reason::EmailAngleBrackets);
        }
        let bracketed = bracketed.trim_end_matches(' ');
        let Some(addr_spec) = bracketed.strip_suffix('>') else {
            return Err(Reason::EmailAngleBrackets);
        };
        let addr_spec = addr_spec.trim_end_matches('>');
        let (local, domain) = split_at_unquoted_special(addr_spec, &['@'])?;
        (Some(name), local, domain)
    } else {
        (None, left, right)
    };
    let domain = domain.strip_prefix('@').unwrap_or(domain);
    let (local, quoted) = unquote(local)?;
    Ok((display_name, local, domain, quoted))
}

/// Splits before the first of `specials` that is outside quotes and does not combine with a
/// following mark (`<` + U+0338 is `≮`, not a bracket).
fn split_at_unquoted_special<'a>(
    text: &'a str,
    specials: &[char],
) -> Result<(&'a str, &'a str), Reason> {
    let mut inside_quote = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if text[i..].nfc().next() != Some(c) {
            continue;
        }
        if inside_quote {
            if c == '\\' && !escaped {
                escaped = true;
            } else if c == '"' && !escaped {
                inside_quote = false;
                escaped = false;
            } else {
                escaped = false;
            }
        } else if c == '"' {
            inside_quote = true;
        } else if specials.contains(&c) {
            return Ok((&text[..i], &text[i..]));
        }
    }
    Err(Reason::EmailNoAt)
}

/// Removes surrounding quotes and backslash escapes; reports whether the text was quoted.
fn unquote(text: &str) -> Result<(String, bool), Reason> {
    let mut quoted = false;
    let mut escaped = false;
    let mut value = String::with_capacity(text.len());
    for (n, (i, c)) in text.char_indices().enumerate() {
        if quoted {
            if escaped {
                value.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                if i + 1 != text.len() {
                    return Err(Reason::EmailQuoting);
                }
                break;
            } else {
                value.push(c);
            }
        } else if n == 0 && c == '"' {
            quoted = true;
        } else {
            value.push(c);
        }
    }
    Ok((value, quoted))
}

/// RFC 5322 `atext`: ASCII letters, digits and ``!#$%&'*+-/=?^_`{|}~``.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Whether `s` is a dot-atom over characters accepted by `allowed`.
fn is_dot_atom(s: &str, allowed: impl Fn(char) -> bool) -> bool {
    s.split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(&allowed))
}

/// Validates the local part; returns its normalised form and whether it needs SMTPUTF8.
fn validate_local(
    local: &str,
    quoted: bool,
    options: EmailOptions,
) -> Result<(String, bool), Reason> {
    if local.is_empty() {
        return Err(Reason::EmailLocalEmpty);
    }
    if options.strict_local_length && local.len() > MAX_LOCAL_LEN {
        return Err(Reason::EmailLocalTooLong);
    }
    if is_dot_atom(local, is_atext) {
        return Ok((local.to_owned(), false));
    }
    let is_quoted_form;
    let smtputf8;
    if is_dot_atom(local, |c| is_atext(c) || !c.is_ascii()) {
        if !options.allow_smtputf8 {
            return Err(Reason::EmailInternationalLocal);
        }
        is_quoted_form = false;
        smtputf8 = true;
    } else if quoted {
        if local
            .chars()
            .any(|c| c.is_ascii() && !(' '..='~').contains(&c))
        {
            return Err(Reason::EmailLocalCharacter);
        }
        smtputf8 = !local.is_ascii();
        if smtputf8 && !options.allow_smtputf8 {
            return Err(Reason::EmailInternationalLocal);
        }
        is_quoted_form = true;
    } else {
        if local
            .chars()
            .any(|c| c != '.' && !is_atext(c) && c.is_ascii())
        {
            return Err(Reason::EmailLocalCharacter);
        }
        return Err(Reason::EmailLocalDots);
    }
    let nfc: String = local.nfc().collect();
    if nfc != local {
        // The normalised form replaces the original, so it must be valid too (`;` is the
        // NFC form of U+037E GREEK QUESTION MARK).
        return validate_local(&nfc, quoted, options);
    }
    check_unsafe(&nfc, is_quoted_form)?;
    if is_quoted_form {
        let mut requoted = String::with_capacity(nfc.len() + 2);
        requoted.push('"');
        for c in nfc.chars() {
            if c == '"' || c == '\\' {
                requoted.push('\\');
            }
            requoted.push(c);
        }
        requoted.push('"');
        Ok((requoted, smtputf8))
    } else {
        Ok((nfc, smtputf8))
    }
}

/// Refuses characters that are unsafe in an address: controls, format characters (bidi
/// overrides, zero-width), private-use code points and noncharacters, line and paragraph
/// separators, spaces (unless `allow_space`), and a combining mark in first position.
fn check_unsafe(s: &str, allow_space: bool) -> Result<(), Reason> {
    for (i, c) in s.chars().enumerate() {
        let unsafe_char = c.is_control()
            || is_format(c)
            || is_private_or_noncharacter(c)
            || c == '\u{2028}'
            || c == '\u{2029}'
            || (c.is_whitespace() && !allow_space)
            || (i == 0 && is_combining_mark(c));
        if unsafe_char {
            return Err(Reason::EmailUnsafeCharacter);
        }
    }
    Ok(())
}

/// A character allowed in a domain before IDNA processing: ASCII letters, digits, hyphen,
/// dot, or any non-ASCII character.
fn is_hostname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || !c.is_ascii()
}

/// Validates a domain name; returns its Unicode (lower-case, NFC) and IDNA ASCII forms.
fn validate_domain(domain: &str, allow_test: bool) -> Result<(String, String), Reason> {
    if !domain.chars().all(is_hostname_char) {
        return Err(Reason::EmailDomainCharacter);
    }
    check_unsafe(domain, false)?;
    let uts46 = Uts46::new();
    // UTS #46 mapping: case folding, NFC, full-width dots to dots; refuses disallowed
    // characters such as `⒈`.
    let (mapped, result) =
        uts46.to_unicode(domain.as_bytes(), AsciiDenyList::EMPTY, Hyphens::Allow);
    if result.is_err() {
        return Err(Reason::EmailDomainIdna);
    }
    check_labels(&mapped)?;
    let Ok(ascii) = uts46.to_ascii(
        mapped.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::CheckFirstLast,
        DnsLength::Ignore,
    ) else {
        return Err(Reason::EmailDomainIdna);
    };
    let ascii = ascii.into_owned();
    check_labels(&ascii)?;
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err(Reason::TooLong {
            max: MAX_DOMAIN_LEN,
        });
    }
    if ascii.split('.').any(|label| label.len() > MAX_LABEL_LEN) {
        return Err(Reason::EmailDomainLabel);
    }
    if !(ascii.contains('.') || (allow_test && ascii == "test")) {
        return Err(Reason::EmailDomainNoDot);
    }
    if !ascii.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(Reason::EmailDomainTld);
    }
    for special in SPECIAL_USE_DOMAINS {
        if special == "test" && allow_test {
            continue;
        }
        let under = ascii
            .strip_suffix(special)
            .is_some_and(|head| head.is_empty() || head.ends_with('.'));
        if under {
            return Err(Reason::EmailDomainReserved);
        }
    }
    let (unicode, result) = uts46.to_unicode(ascii.as_bytes(), AsciiDenyList::STD3, Hyphens::Allow);
    if result.is_err() {
        return Err(Reason::EmailDomainIdna);
    }
    let unicode = unicode.into_owned();
    check_unsafe(&unicode, false)?;
    Ok((unicode, ascii))
}

/// Label rules that hold before and after IDNA: no empty label, no hyphen at either end of a
/// label, and no `--` in third and fourth place except in `xn--` Punycode labels (RFC 5891).
fn check_labels(domain: &str) -> Result<(), Reason> {
    for label in domain.split('.') {
        if label.is_empty() || label.starts_with('-') || label.ends_with('-') {
            return Err(Reason::EmailDomainLabel);
        }
        let mut chars = label.chars();
        let head: String = chars.by_ref().take(2).collect();
        let dashes: String = chars.take(2).collect();
        if dashes == "--" && !head.eq_ignore_ascii_case("xn") {
            return Err(Reason::EmailDomainLabel);
        }
    }
    Ok(())
}

/// How a mail provider treats the local part.
#[derive(Clone, Copy)]
struct Provider {
    /// The domain used in the key (aliases such as `googlemail.com` map to one domain).
    canonical: Option<&'static str>,
    /// Dots in the local part are ignored.
    ignore_dots: bool,
    /// The separator that starts a sub-address tag, which is dropped.
    tag: Option<char>,
}

/// The provider rules behind [`match_key`].
fn provider(domain: &str) -> Option<Provider> {
    const PLUS: Option<char> = Some('+');
    let p = match domain {
        "gmail.com" | "googlemail.com" => Provider {
            canonical: Some("gmail.com"),
            ignore_dots: true,
            tag: PLUS,
        },
        "outlook.com" | "hotmail.com" | "live.com" | "msn.com" | "outlook.co.uk"
        | "hotmail.co.uk" | "live.co.uk" | "outlook.fr" | "hotmail.fr" | "live.fr"
        | "outlook.de" | "hotmail.de" | "live.de" | "outlook.es" | "hotmail.es" | "outlook.it"
        | "hotmail.it" | "live.it" | "live.nl" | "live.ca" | "live.com.au" | "icloud.com"
        | "me.com" | "mac.com" | "fastmail.com" | "fastmail.fm" | "proton.me" | "pm.me"
        | "protonmail.com" | "protonmail.ch" => Provider {
            canonical: None,
            ignore_dots: false,
            tag: PLUS,
        },
        "yahoo.com" | "yahoo.co.uk" | "yahoo.fr" | "yahoo.de" | "yahoo.es" | "yahoo.it"
        | "yahoo.ca" | "yahoo.com.au" | "yahoo.co.jp" | "ymail.com" | "rocketmail.com" => {
            Provider {
                canonical: None,
                ignore_dots: false,
                tag: Some('-'),
            }
        }
        _ => return None,
    };
    Some(p)
}

/// The matching key of a normalised address; see the [module docs](super) for the rules.
/// The match key of a plain ASCII address (`local@domain`, the local part a dot-atom, the
/// domain letters, digits, dots and hyphens without Punycode labels), computed without the
/// full validation, or `None` for anything else. For every address [`normalize_email`] accepts
/// and this function answers, both give the same key; an address that `normalize_email` would
/// refuse may get a key here, but no stored customer can hold it, so a lookup that finds the
/// key found the right customer. Lookups try this first and parse fully only on a miss.
pub(crate) fn quick_match_key(email: &str) -> Option<String> {
    if email.len() > MAX_EMAIL_LEN || !email.is_ascii() {
        return None;
    }
    let (local, domain) = email.split_once('@')?;
    let atom = |s: &str, ok: fn(char) -> bool| is_dot_atom(s, ok);
    let domain_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if local.len() > MAX_LOCAL_LEN
        || !atom(local, is_atext)
        || !atom(domain, domain_char)
        || domain.split('.').any(|label| {
            label.len() > 63
                || label.starts_with('-')
                || label.ends_with('-')
                || label
                    .get(..4)
                    .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        })
    {
        return None;
    }
    Some(match_key(local, &domain.to_ascii_lowercase()))
}

fn match_key(local: &str, domain: &str) -> String {
    let local = local.to_lowercase();
    let Some(rules) = provider(domain) else {
        return format!("{local}@{domain}");
    };
    let mut base = match rules.tag {
        Some(sep) => local.split(sep).next().unwrap_or(&local).to_owned(),
        None => local.clone(),
    };
    if rules.ignore_dots {
        base.retain(|c| c != '.');
    }
    if base.is_empty() {
        // `+tag@gmail.com` has no base; keep the whole local part rather than an empty key.
        base = local;
    }
    format!("{base}@{}", rules.canonical.unwrap_or(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Result<String, Reason> {
        normalize_email(s, EmailOptions::default()).map(|e| e.normalized)
    }

    fn key(s: &str) -> String {
        normalize_email(s, EmailOptions::default())
            .map(|e| e.match_key)
            .unwrap()
    }

    #[test]
    fn quick_match_key_agrees_with_the_full_parse() {
        for s in [
            "Ada.Lovelace@Example.COM",
            "j.o.h.n+news@GoogleMail.com",
            "+tag@gmail.com",
            "Postmaster@example.org",
            "a!#$%&'*+-/=?^_`{|}~z@sub-1.example.co.uk",
            "x@xn--bcher-kva.example",
            "first..last@example.com",
            "a@localhost",
            "a@-bad.example.com",
            "\"quoted\"@example.com",
            "Zoë@example.com",
        ] {
            match (
                quick_match_key(s),
                normalize_email(s, EmailOptions::default()),
            ) {
                (Some(quick), Ok(full)) => assert_eq!(quick, full.match_key, "{s}"),
                // Answered by the full parse only: a Punycode domain, a quoted or non-ASCII
                // local part.
                (None, _) => {}
                // Refused by the full parse: the quick key must be one no valid address has.
                (Some(quick), Err(_)) => assert!(
                    quick == "a@localhost",
                    "{s} got a quick key {quick} but is refused"
                ),
            }
        }
    }

    #[test]
    fn domain_is_lowercased_and_local_case_kept() {
        assert_eq!(
            norm("Ada.Lovelace@Example.COM").unwrap(),
            "Ada.Lovelace@example.com"
        );
    }

    #[test]
    fn rfc2142_mailboxes_are_lowercased() {
        assert_eq!(norm("Info@example.com").unwrap(), "info@example.com");
    }

    #[test]
    fn international_domain_has_ascii_form() {
        let e = normalize_email("jeff@臺網中心.tw", EmailOptions::default()).unwrap();
        assert_eq!(e.normalized, "jeff@臺網中心.tw");
        assert_eq!(e.ascii, "jeff@xn--fiqq24b10vi0d.tw");
        let e = normalize_email("jeff@XN--FIQQ24B10VI0D.tw", EmailOptions::default()).unwrap();
        assert_eq!(e.normalized, "jeff@臺網中心.tw");
    }

    #[test]
    fn refusals_name_their_reason() {
        assert_eq!(norm("ada.example.com"), Err(Reason::EmailNoAt));
        assert_eq!(norm("@example.com"), Err(Reason::EmailLocalEmpty));
        assert_eq!(norm("ada@"), Err(Reason::EmailDomainEmpty));
        assert_eq!(norm("ada..l@example.com"), Err(Reason::EmailLocalDots));
        assert_eq!(norm("ada l@example.com"), Err(Reason::EmailLocalCharacter));
        assert_eq!(norm("ada@localhost"), Err(Reason::EmailDomainNoDot));
        assert_eq!(norm("ada@example.123"), Err(Reason::EmailDomainTld));
        assert_eq!(norm("ada@host.localhost"), Err(Reason::EmailDomainReserved));
        assert_eq!(norm("ada@-x.com"), Err(Reason::EmailDomainLabel));
        assert_eq!(norm("ada@[127.0.0.1]"), Err(Reason::EmailDomainLiteral));
        assert_eq!(norm("\"ada\"@example.com"), Err(Reason::EmailQuotedLocal));
        assert_eq!(norm("Ada <ada@example.com>"), Err(Reason::EmailDisplayName));
        assert_eq!(
            norm("ada\u{202e}@example.com"),
            Err(Reason::EmailUnsafeCharacter)
        );
        assert_eq!(
            norm(&format!("{}@example.com", "a".repeat(65))),
            Err(Reason::EmailLocalTooLong)
        );
    }

    #[test]
    fn display_name_is_dropped_when_allowed() {
        let options = EmailOptions {
            allow_display_name: true,
            ..EmailOptions::default()
        };
        let e = normalize_email("Ada Lovelace <ada@example.com>", options).unwrap();
        assert_eq!(e.normalized, "ada@example.com");
    }

    #[test]
    fn quoted_local_is_requoted_minimally_when_allowed() {
        let options = EmailOptions {
            allow_quoted_local: true,
            ..EmailOptions::default()
        };
        let n = |s| normalize_email(s, options).map(|e| e.normalized);
        assert_eq!(n("\"ada\"@example.com").unwrap(), "ada@example.com");
        assert_eq!(n("\"a b\"@example.com").unwrap(), "\"a b\"@example.com");
    }

    #[test]
    fn gmail_match_key_drops_dots_and_tags() {
        assert_eq!(
            key("Ada.Lovelace+news@GoogleMail.com"),
            "adalovelace@gmail.com"
        );
        assert_eq!(key("+only@gmail.com"), "+only@gmail.com");
    }

    #[test]
    fn outlook_and_icloud_match_keys_drop_plus_tags_only() {
        assert_eq!(key("Ada.L+x@outlook.com"), "ada.l@outlook.com");
        assert_eq!(key("ada+x@icloud.com"), "ada@icloud.com");
    }

    #[test]
    fn yahoo_match_key_drops_hyphen_tags() {
        assert_eq!(key("ada-shop@yahoo.com"), "ada@yahoo.com");
    }

    #[test]
    fn other_domains_keep_tags_in_match_key() {
        assert_eq!(key("Ada+x@Example.org"), "ada+x@example.org");
    }
}
