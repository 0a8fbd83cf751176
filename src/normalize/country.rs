//! ISO 3166-1 alpha-2 country codes.

use super::Reason;

/// The 249 officially assigned ISO 3166-1 alpha-2 codes, sorted, two bytes each (as of the
/// 2024 list; exceptionally reserved codes such as `UK`, `EU`, `AC` and `TA` and user-assigned
/// ones such as `XK` are not included).
const ASSIGNED: &str = concat!(
    "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBE",
    "BFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZCACCCD",
    "CFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDM",
    "DODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGF",
    "GGGHGIGLGMGNGPGQGRGSGTGUGWGYHKHMHNHRHTHU",
    "IDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKN",
    "KPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDME",
    "MFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNA",
    "NCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPM",
    "PNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSI",
    "SJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTK",
    "TLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVI",
    "VNVUWFWSYEYTZAZMZW",
);

/// Reads a country code: trims, upper-cases ASCII letters, and returns the canonical entry of
/// the embedded list (a `'static` two-letter string).
///
/// # Errors
///
/// [`Reason::Empty`] for a blank value, [`Reason::CountryFormat`] when it is not two ASCII
/// letters, [`Reason::CountryUnassigned`] when the letters are not an assigned code.
pub(crate) fn lookup_country(s: &str) -> Result<&'static str, Reason> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    let bytes = s.as_bytes();
    if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_alphabetic) {
        return Err(Reason::CountryFormat);
    }
    let code = [bytes[0].to_ascii_uppercase(), bytes[1].to_ascii_uppercase()];
    assigned_country(code).ok_or(Reason::CountryUnassigned)
}

/// The embedded entry for two upper-case ASCII letters, if they are an assigned code.
fn assigned_country(code: [u8; 2]) -> Option<&'static str> {
    let table = ASSIGNED.as_bytes();
    let (mut lo, mut hi) = (0, table.len() / 2);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = [table[2 * mid], table[2 * mid + 1]];
        match entry.cmp(&code) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return ASSIGNED.get(2 * mid..2 * mid + 2),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_complete() {
        assert_eq!(ASSIGNED.len(), 2 * 249);
        let codes: Vec<&str> = (0..249).map(|i| &ASSIGNED[2 * i..2 * i + 2]).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        for code in codes {
            assert_eq!(lookup_country(code), Ok(code));
        }
    }

    #[test]
    fn lookup_trims_and_ignores_case() {
        assert_eq!(lookup_country(" gb "), Ok("GB"));
        assert_eq!(lookup_country("Us"), Ok("US"));
    }

    #[test]
    fn lookup_refuses_reserved_and_malformed_codes() {
        assert_eq!(lookup_country("UK"), Err(Reason::CountryUnassigned));
        assert_eq!(lookup_country("XK"), Err(Reason::CountryUnassigned));
        assert_eq!(lookup_country("GBR"), Err(Reason::CountryFormat));
        assert_eq!(lookup_country("G1"), Err(Reason::CountryFormat));
        assert_eq!(lookup_country("ÅL"), Err(Reason::CountryFormat));
        assert_eq!(lookup_country("  "), Err(Reason::Empty));
    }
}
