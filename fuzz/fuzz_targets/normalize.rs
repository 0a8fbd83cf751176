//! Arbitrary text through every standardiser: never panics, and each output is a fixed point
//! (standardising the standardised value gives it back).
#![no_main]

use customerdb::normalize::fold_key;
use customerdb::{Address, AddressParts, CountryCode, Email, PersonName, Phone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let key = fold_key(s);
    assert_eq!(fold_key(&key), key);
    if let Ok(e) = Email::parse(s) {
        let again = Email::parse(e.as_str()).expect("normalised email parses");
        assert_eq!(again.as_str(), e.as_str());
        assert_eq!(again.match_key(), e.match_key());
    }
    for region in [None, CountryCode::parse("GB").ok(), CountryCode::parse("US").ok()] {
        if let Ok(p) = Phone::parse(s, region) {
            let again = Phone::parse(p.e164(), None).expect("E.164 parses");
            assert_eq!(again.e164(), p.e164());
        }
    }
    if let Ok(n) = PersonName::parse(s) {
        let again = PersonName::parse(n.display()).expect("display form parses");
        assert_eq!(again.family_key(), n.family_key());
        assert_eq!(again.given_key(), n.given_key());
    }
    let mut parts = s.splitn(3, '|');
    let postcode = parts.next().map(str::to_owned);
    let country = parts.next().map(str::to_owned);
    if let Ok(a) = Address::parse(AddressParts { postcode, country, ..AddressParts::default() }) {
        let again = Address::parse(AddressParts {
            postcode: a.postcode().map(str::to_owned),
            country: a.country().map(|c| c.as_str().to_owned()),
            ..AddressParts::default()
        })
        .expect("normalised address parses");
        assert_eq!(again.postcode(), a.postcode());
    }
});
