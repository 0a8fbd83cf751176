//! Text folding, display cleaning and phonetic keys shared by every field.

use rphonetic::DoubleMetaphone;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::Reason;

/// The longest free-text field accepted, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 1024;

/// The matching key of a text: NFKC, case folded, diacritics stripped, whitespace trimmed and
/// collapsed to single spaces.
///
/// Case folding is Unicode lower-casing plus the full folds that lower-casing lacks (`ß` → `ss`,
/// final `ς` → `σ`). Diacritics are the combining marks left after canonical decomposition;
/// a few Latin letters with a built-in stroke that do not decompose are mapped to their base
/// letter too (`ø` → `o`, `ł` → `l`, `đ` → `d`, `ħ` → `h`, `ı` → `i`), and `æ`/`œ` are spelled
/// out (`ae`/`oe`). Punctuation is kept. The function is idempotent.
///
/// ```
/// use customerdb::normalize::fold_key;
/// assert_eq!(fold_key("  MÜLLER\tStraße "), "muller strasse");
/// assert_eq!(fold_key("García-López"), "garcia-lopez");
/// ```
pub fn fold_key(s: &str) -> String {
    // Most keys are plain ASCII, where every Unicode step below is the identity but for
    // lower-casing: one pass, one allocation.
    if s.is_ascii() {
        let mut out = String::with_capacity(s.len());
        for word in s.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
        }
        return out;
    }
    fold_key_unicode(s)
}

/// [`fold_key`] for any text.
fn fold_key_unicode(s: &str) -> String {
    // Letters are decomposed and their marks dropped *before* the letters without a
    // decomposition are mapped: `ǿ` decomposes to `ø` + acute, and mapping first would leave
    // an `ø` that a second folding turns into `o` (found by the normalize fuzz target).
    let mut folded = String::with_capacity(s.len());
    let bare = s
        .nfkc()
        .flat_map(char::to_lowercase)
        .nfd()
        .filter(|&c| !is_combining_mark(c));
    for c in bare {
        match c {
            'ß' => folded.push_str("ss"),
            'ς' => folded.push('σ'),
            'ø' => folded.push('o'),
            'ł' => folded.push('l'),
            'đ' => folded.push('d'),
            'ħ' => folded.push('h'),
            'ı' => folded.push('i'),
            'æ' => folded.push_str("ae"),
            'œ' => folded.push_str("oe"),
            _ => folded.push(c),
        }
    }
    let composed: String = folded.nfkc().flat_map(char::to_lowercase).collect();
    collapse_whitespace(&composed)
}

/// The matching key of a person's name part: [`fold_key`], then apostrophes removed and
/// hyphens, dashes and full stops turned into spaces, so `O'Brien`, `O’Brien` and `OBrien`
/// share a key, and so do `García-López` and `Garcia Lopez`.
///
/// ```
/// use customerdb::normalize::name_key;
/// assert_eq!(name_key("O’Brien"), "obrien");
/// assert_eq!(name_key("García-López"), "garcia lopez");
/// ```
pub fn name_key(s: &str) -> String {
    let folded = fold_key(s);
    let mut out = String::with_capacity(folded.len());
    // Separators become one space between words, and none at either end.
    let mut gap = false;
    for c in folded.chars() {
        match c {
            '\'' | '’' | '‘' | 'ʼ' | '`' | '´' | 'ʻ' => {}
            '-' | '‐' | '‑' | '‒' | '–' | '—' | '.' => gap = true,
            c if c.is_whitespace() => gap = true,
            c => {
                if gap && !out.is_empty() {
                    out.push(' ');
                }
                gap = false;
                out.push(c);
            }
        }
    }
    out
}

/// Double Metaphone codes of a text: the primary code, then the alternate code when it
/// differs. The text is first reduced to the ASCII letters of its [`fold_key`] (so `Müller`
/// is coded as `MULLER` and `van der Berg` as `VANDERBERG`); with no such letters the result
/// is empty.
///
/// ```
/// use customerdb::normalize::phonetic_keys;
/// assert_eq!(phonetic_keys("Smith"), ["SM0", "XMT"]);
/// assert!(phonetic_keys("123").is_empty());
/// ```
pub fn phonetic_keys(s: &str) -> Vec<String> {
    phonetic_codes(&fold_key(s))
}

/// [`phonetic_keys`] of a text already folded by [`fold_key`] or [`name_key`] (both keep the
/// same letters), so a name folded for its key is not folded again.
pub(crate) fn phonetic_codes(folded: &str) -> Vec<String> {
    // The Double Metaphone port slices by byte offset, so only ASCII may reach it.
    let letters: String = folded.chars().filter(char::is_ascii_alphabetic).collect();
    if letters.is_empty() {
        return Vec::new();
    }
    // Customary four-letter codes; this encoder carries no rules file.
    let codes = DoubleMetaphone::default().double_metaphone(&letters);
    let primary = codes.primary();
    let alternate = codes.alternate();
    let mut keys = Vec::with_capacity(2);
    if !alternate.is_empty() && alternate != primary {
        keys.push(alternate);
    }
    if !primary.is_empty() {
        keys.insert(0, primary);
    }
    keys
}

/// The display form of a text: NFC, trimmed, runs of whitespace collapsed to one space;
/// otherwise exactly as entered (case and punctuation kept).
///
/// ```
/// use customerdb::normalize::clean_display;
/// assert_eq!(clean_display("  Ada \t Lovelace "), "Ada Lovelace");
/// ```
pub fn clean_display(s: &str) -> String {
    let nfc: String = s.nfc().collect();
    collapse_whitespace(&nfc)
}

/// Trims and collapses every run of whitespace to one ASCII space.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether `c` is a Unicode format character (general category Cf): soft hyphen, zero-width
/// characters, bidirectional controls, tags and the like.
pub(crate) fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Whether `c` is a private-use code point or a noncharacter.
pub(crate) fn is_private_or_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0xE000..=0xF8FF | 0xF_0000..=0x10_FFFF | 0xFDD0..=0xFDEF) || u & 0xFFFE == 0xFFFE
}

/// Checks a free-text value: refuses control characters other than whitespace (tab, line
/// feed, carriage return and the like count as spaces), format characters (zero-width,
/// bidirectional controls), private-use code points and noncharacters, and values longer than
/// `max` bytes.
pub(crate) fn check_text(s: &str, max: usize) -> Result<(), Reason> {
    if s.len() > max {
        return Err(Reason::TooLong { max });
    }
    if s.chars().any(|c| {
        (c.is_control() && !c.is_whitespace()) || is_format(c) || is_private_or_noncharacter(c)
    }) {
        return Err(Reason::ControlCharacter);
    }
    Ok(())
}

/// Checks ([`check_text`], at most [`MAX_TEXT_LEN`] bytes) and cleans ([`clean_display`]) an
/// optional free-text value: `None` when it is blank.
pub(crate) fn optional_text(s: Option<&str>) -> Result<Option<String>, Reason> {
    let Some(s) = s else { return Ok(None) };
    check_text(s, MAX_TEXT_LEN)?;
    let cleaned = clean_display(s);
    Ok((!cleaned.is_empty()).then_some(cleaned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_key_strips_diacritics_and_case() {
        assert_eq!(fold_key("Müller"), "muller");
        assert_eq!(fold_key("García-López"), "garcia-lopez");
        assert_eq!(fold_key("ＡＢＣ"), "abc");
        assert_eq!(fold_key("Søren Ærø"), "soren aero");
        assert_eq!(fold_key("ΟΔΥΣΣΕΥΣ"), fold_key("οδυσσευσ"));
        assert_eq!(fold_key("İstanbul"), "istanbul");
        assert_eq!(fold_key("한국"), "한국");
    }

    #[test]
    fn fold_key_collapses_whitespace() {
        assert_eq!(fold_key(" a \u{3000} b\n"), "a b");
        assert_eq!(fold_key(""), "");
    }

    #[test]
    fn name_key_unifies_apostrophes_and_hyphens() {
        assert_eq!(name_key("O'Brien"), name_key("O’Brien"));
        assert_eq!(name_key("O'Brien"), "obrien");
        assert_eq!(name_key("García-López"), name_key("Garcia Lopez"));
    }

    #[test]
    fn phonetic_keys_give_primary_then_alternate() {
        assert_eq!(phonetic_keys("Müller"), phonetic_keys("Muller"));
        assert_eq!(phonetic_keys("Schmidt"), ["XMT", "SMT"]);
        assert_eq!(phonetic_keys("Jones"), ["JNS", "ANS"]);
        assert_eq!(phonetic_keys("Lee"), ["L"]);
        assert!(phonetic_keys("").is_empty());
        assert!(phonetic_keys("王").is_empty());
    }

    #[test]
    fn clean_display_keeps_case_and_composes() {
        assert_eq!(
            clean_display(" Jose\u{301}  DE la Cruz "),
            "José DE la Cruz"
        );
    }

    #[test]
    fn check_text_refuses_controls_but_not_whitespace() {
        assert_eq!(check_text("a\u{7}b", 10), Err(Reason::ControlCharacter));
        assert_eq!(check_text("a\u{202E}b", 10), Err(Reason::ControlCharacter));
        assert_eq!(check_text("a\tb\n", 10), Ok(()));
        assert_eq!(check_text("abcd", 3), Err(Reason::TooLong { max: 3 }));
    }

    #[test]
    fn fold_key_is_a_fixed_point_for_letters_that_decompose_to_mapped_letters() {
        // Pinned from the normalize fuzz target: U+01FF decomposes to U+00F8 + acute.
        let once = fold_key("\0\0\u{1ff}\u{1f8}((");
        assert_eq!(fold_key(&once), once);
        assert_eq!(once, "\0\0on((");
    }

    proptest::proptest! {
        #[test]
        fn ascii_fast_path_folds_like_the_general_path(s in "[ -~\t\n\r\x0b\x0c]{0,24}") {
            proptest::prop_assert_eq!(fold_key(&s), fold_key_unicode(&s));
        }

        #[test]
        fn name_key_is_fold_key_without_name_punctuation(s in "\\PC{0,16}") {
            let mapped: String = fold_key(&s)
                .chars()
                .filter(|c| !matches!(c, '\'' | '’' | '‘' | 'ʼ' | '`' | '´' | 'ʻ'))
                .map(|c| if matches!(c, '-' | '‐' | '‑' | '‒' | '–' | '—' | '.') { ' ' } else { c })
                .collect();
            proptest::prop_assert_eq!(name_key(&s), collapse_whitespace(&mapped));
        }

        #[test]
        fn phonetic_codes_of_a_name_key_are_the_phonetic_keys(s in "\\PC{0,16}") {
            proptest::prop_assert_eq!(phonetic_codes(&name_key(&s)), phonetic_keys(&s));
        }
    }
}
