//! Splitting a person's full name into parts.

use unicode_normalization::UnicodeNormalization;

use super::Reason;
use super::text::{MAX_TEXT_LEN, check_text, clean_display};

/// Honorifics recognised before a name (compared without case and trailing dot).
const PREFIXES: [&str; 24] = [
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "lord", "lady", "rev", "fr",
    "hon", "capt", "col", "gen", "lt", "sgt", "herr", "frau", "mme", "mlle", "m",
];

/// Honorifics after which a single remaining word is a family name (`Mr. Smith`).
const FORMAL_PREFIXES: [&str; 14] = [
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "herr", "frau", "mme", "mlle", "m", "capt",
    "rev",
];

/// Generational and post-nominal suffixes (compared without case and dots).
const SUFFIXES: [&str; 20] = [
    "jr", "sr", "ii", "iii", "iv", "v", "phd", "md", "esq", "dds", "cpa", "mba", "obe", "mbe",
    "cbe", "kbe", "qc", "kc", "jnr", "snr",
];

/// Lower-case particles that belong to the family name (`van`, `de la`, `bin`, ...).
const PARTICLES: [&str; 27] = [
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "das", "dos", "do", "du", "le",
    "la", "les", "bin", "binti", "bint", "ibn", "al", "el", "ter", "ten", "zu", "af", "y",
];

/// A name split into its parts, each already cleaned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SplitName {
    /// The whole name as entered, display-cleaned.
    pub display: String,
    /// Titles before the name (`Dr.`, `Mrs`).
    pub prefix: Option<String>,
    /// The given name.
    pub given: Option<String>,
    /// Middle names or initials.
    pub middle: Option<String>,
    /// The family name, with its particles (`van der Berg`).
    pub family: Option<String>,
    /// Generational or professional suffixes (`Jr.`, `PhD`).
    pub suffix: Option<String>,
}

/// The comparison form of a token: lower case, dots and trailing commas removed.
fn bare(token: &str) -> String {
    token
        .chars()
        .filter(|&c| c != '.' && c != ',')
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_prefix(token: &str) -> bool {
    PREFIXES.contains(&bare(token).as_str())
}

fn is_suffix(token: &str) -> bool {
    SUFFIXES.contains(&bare(token).as_str())
}

fn join(tokens: &[&str]) -> Option<String> {
    if tokens.is_empty() {
        None
    } else {
        Some(tokens.join(" "))
    }
}

/// Checks and cleans one name text: NFKC, display-cleaned, control characters refused.
pub(crate) fn clean_name_text(s: &str) -> Result<String, Reason> {
    check_text(s, MAX_TEXT_LEN)?;
    Ok(clean_display(&s.nfkc().collect::<String>()))
}

/// Splits a full name; the rules are in the [module docs](super).
pub(crate) fn split_name(full: &str) -> Result<SplitName, Reason> {
    let display = clean_name_text(full)?;
    if display.is_empty() {
        return Err(Reason::Empty);
    }
    if !display.chars().any(char::is_alphabetic) {
        return Err(Reason::NameNoLetters);
    }
    let mut split = SplitName {
        display: display.clone(),
        ..SplitName::default()
    };

    // Trailing comma-separated suffixes: "Ada Lovelace, PhD", "Lovelace, Ada, Jr."
    let mut pieces: Vec<&str> = display.split(',').map(str::trim).collect();
    let mut suffixes: Vec<&str> = Vec::new();
    while pieces.len() > 1
        && pieces
            .last()
            .is_some_and(|p| !p.is_empty() && p.split(' ').all(is_suffix))
    {
        if let Some(p) = pieces.pop() {
            suffixes.insert(0, p);
        }
    }
    pieces.retain(|p| !p.is_empty());

    let (family_first, rest): (Option<&str>, Vec<&str>) = match pieces.as_slice() {
        [family, given, ..] => (Some(family), given.split(' ').collect()),
        [only] => (None, only.split(' ').collect()),
        [] => (None, Vec::new()),
    };
    let mut tokens = rest;

    // Leading honorifics; never all of the words.
    let mut prefixes = 0;
    while prefixes < tokens.len() && is_prefix(tokens[prefixes]) {
        prefixes += 1;
    }
    if prefixes == tokens.len() && family_first.is_none() {
        prefixes = 0;
    }
    let prefix_tokens: Vec<&str> = tokens.drain(..prefixes).collect();

    // Trailing suffixes when no comma separated them; never all of the words.
    if family_first.is_none() {
        let mut keep = tokens.len();
        while keep > 1 && is_suffix(tokens[keep - 1]) {
            keep -= 1;
        }
        let tail: Vec<&str> = tokens.drain(keep..).collect();
        suffixes.splice(0..0, tail);
    }

    split.prefix = join(&prefix_tokens);
    split.suffix = join(&suffixes);

    if let Some(family) = family_first {
        // "Family, Given Middle"
        split.family = Some(family.to_owned());
        if let Some((given, middle)) = tokens.split_first() {
            split.given = Some((*given).to_owned());
            split.middle = join(middle);
        }
        return Ok(split);
    }

    match tokens.as_slice() {
        [] => {}
        [one] => {
            // A single word is a given name, unless a formal title says it is a family name.
            let formal = prefix_tokens
                .iter()
                .any(|p| FORMAL_PREFIXES.contains(&bare(p).as_str()));
            if formal {
                split.family = Some((*one).to_owned());
            } else {
                split.given = Some((*one).to_owned());
            }
        }
        [given, rest @ ..] => {
            // The last word plus any lower-case particles before it form the family name.
            // `rest` is not empty (one word is the arm above), but do not lean on arm order.
            let mut start = rest.len().saturating_sub(1);
            while start > 0 && is_particle(rest[start - 1]) {
                start -= 1;
            }
            split.given = Some((*given).to_owned());
            split.middle = join(&rest[..start]);
            split.family = join(&rest[start..]);
        }
    }
    Ok(split)
}

/// A family-name particle (`van`, `De`, `bin`), in any case.
fn is_particle(token: &str) -> bool {
    PARTICLES.contains(&token.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> [Option<String>; 5] {
        let n = split_name(s).unwrap();
        [n.prefix, n.given, n.middle, n.family, n.suffix]
    }

    fn s(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn title_given_initial_family_suffix() {
        assert_eq!(
            parts("Dr. Ada K. Lovelace Jr."),
            [
                Some(s("Dr.")),
                Some(s("Ada")),
                Some(s("K.")),
                Some(s("Lovelace")),
                Some(s("Jr."))
            ]
        );
    }

    #[test]
    fn comma_form_puts_family_first() {
        assert_eq!(
            parts("Lovelace, Ada"),
            [None, Some(s("Ada")), None, Some(s("Lovelace")), None]
        );
        assert_eq!(
            parts("Lovelace, Ada King, Jr."),
            [
                None,
                Some(s("Ada")),
                Some(s("King")),
                Some(s("Lovelace")),
                Some(s("Jr."))
            ]
        );
    }

    #[test]
    fn particles_join_the_family_name() {
        assert_eq!(parts("Ludwig van Beethoven")[3], Some(s("van Beethoven")));
        assert_eq!(parts("Juan de la Cruz")[3], Some(s("de la Cruz")));
        assert_eq!(parts("Osama bin Laden")[3], Some(s("bin Laden")));
        assert_eq!(parts("Leonardo da Vinci")[1], Some(s("Leonardo")));
    }

    #[test]
    fn single_word_is_given_unless_titled() {
        assert_eq!(parts("Ada"), [None, Some(s("Ada")), None, None, None]);
        assert_eq!(
            parts("Mr. Smith"),
            [Some(s("Mr.")), None, None, Some(s("Smith")), None]
        );
        assert_eq!(parts("Dr")[1], Some(s("Dr")));
    }

    #[test]
    fn empty_and_letterless_names_are_refused() {
        assert_eq!(split_name("  "), Err(Reason::Empty));
        assert_eq!(split_name("123"), Err(Reason::NameNoLetters));
        assert_eq!(split_name("Ada\u{0}"), Err(Reason::ControlCharacter));
    }
}
