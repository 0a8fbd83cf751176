//! Validated contact values: built only by parsing, so an unnormalised value never reaches
//! an index.
//!
//! The rules are in [`crate::normalize`]. Every type serialises with serde in a form that
//! works with non-self-describing formats such as postcard. Deserialisation trusts the bytes
//! (they are this crate's own records), except [`CountryCode`], which checks its code.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use phonenumber::Type;
use serde::{Deserialize, Serialize};

use crate::normalize::{self, EmailOptions, MAX_TEXT_LEN, Reason, check_text, fold_key, name_key};
use crate::{Error, Result};

/// The most lines an address may have.
const MAX_ADDRESS_LINES: usize = 10;

// ---------------------------------------------------------------------------------------------
// Email

/// A checked, normalised email address.
///
/// Two addresses are equal when their normalised forms ([`Email::as_str`]) are equal.
///
/// ```
/// use customerdb::Email;
/// let e = Email::parse(" Ada.Lovelace+news@GoogleMail.COM ")?;
/// assert_eq!(e.as_str(), "Ada.Lovelace+news@googlemail.com");
/// assert_eq!(e.original(), "Ada.Lovelace+news@GoogleMail.COM");
/// assert_eq!(e.match_key(), "adalovelace@gmail.com");
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Email {
    original: String,
    normalized: String,
    ascii: String,
    match_key: String,
}

impl Email {
    /// Checks and normalises an address with the default [`EmailOptions`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `email`, the raw value,
    /// and the [`Reason`]; [`Reason::Empty`] for a blank value.
    pub fn parse(raw: &str) -> Result<Email> {
        Email::parse_with(raw, &EmailOptions::default())
    }

    /// Checks and normalises an address with the given options.
    ///
    /// # Errors
    ///
    /// As [`Email::parse`].
    pub fn parse_with(raw: &str, options: &EmailOptions) -> Result<Email> {
        let original = raw.trim();
        let n = normalize::normalize_email(original, *options)
            .map_err(|reason| Error::invalid("email", raw, reason))?;
        Ok(Email {
            original: original.to_owned(),
            normalized: n.normalized,
            ascii: n.ascii,
            match_key: n.match_key,
        })
    }

    /// The normalised form: the local part NFC as given (case kept), the domain in lower-case
    /// Unicode form.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The address as entered, trimmed.
    pub fn original(&self) -> &str {
        &self.original
    }

    /// The normalised form with the domain in IDNA ASCII (Punycode) form. An internationalised
    /// local part has no ASCII form and stays as it is.
    pub fn ascii(&self) -> &str {
        &self.ascii
    }

    /// The key under which two spellings of one mailbox agree: lower-cased, with the
    /// provider rules described in [`crate::normalize`] (Gmail ignores dots and `+tags`, ...).
    pub fn match_key(&self) -> &str {
        &self.match_key
    }

    /// The part before the `@`, normalised.
    pub fn local_part(&self) -> &str {
        self.normalized
            .rfind('@')
            .map_or(self.normalized.as_str(), |at| &self.normalized[..at])
    }

    /// The domain, in lower-case Unicode form.
    pub fn domain(&self) -> &str {
        self.normalized
            .rfind('@')
            .map_or("", |at| &self.normalized[at + 1..])
    }
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for Email {}

impl Hash for Email {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.normalized.hash(state);
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

// ---------------------------------------------------------------------------------------------
// Country

/// An assigned ISO 3166-1 alpha-2 country code, upper case (`GB`).
///
/// ```
/// use customerdb::CountryCode;
/// assert_eq!(CountryCode::parse(" gb ")?.as_str(), "GB");
/// assert!(CountryCode::parse("UK").is_err()); // reserved, not assigned
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode(&'static str);

impl CountryCode {
    /// Reads a code: trimmed, case-insensitive; it must be officially assigned.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `country`:
    /// [`Reason::Empty`], [`Reason::CountryFormat`] or [`Reason::CountryUnassigned`].
    pub fn parse(s: &str) -> Result<CountryCode> {
        normalize::lookup_country(s)
            .map(CountryCode)
            .map_err(|reason| Error::invalid("country", s, reason))
    }

    /// The two upper-case letters.
    pub fn as_str(&self) -> &str {
        self.0
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.0)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for CountryCode {
    type Err = Error;

    fn from_str(s: &str) -> Result<CountryCode> {
        CountryCode::parse(s)
    }
}

impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CountryCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 3166-1 alpha-2 country code")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<CountryCode, E> {
                normalize::lookup_country(v)
                    .map(CountryCode)
                    .map_err(|reason| E::custom(reason))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Phone

/// What a phone number is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PhoneKind {
    /// A mobile (cell) phone.
    Mobile,
    /// A fixed line.
    Landline,
    /// A work number.
    Work,
    /// A home number.
    Home,
    /// A fax machine.
    Fax,
    /// An internet telephony (`VoIP`) number.
    Voip,
    /// Anything else, or not known.
    Other,
}

impl PhoneKind {
    /// The lower-case name (`mobile`, `landline`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            PhoneKind::Mobile => "mobile",
            PhoneKind::Landline => "landline",
            PhoneKind::Work => "work",
            PhoneKind::Home => "home",
            PhoneKind::Fax => "fax",
            PhoneKind::Voip => "voip",
            PhoneKind::Other => "other",
        }
    }

    /// Reads a kind by name, ignoring case and surrounding whitespace; `cell` and `fixed`
    /// are accepted for mobile and landline, `business` and `office` for work.
    pub fn parse(s: &str) -> Option<PhoneKind> {
        let kind = match s.trim().to_ascii_lowercase().as_str() {
            "mobile" | "cell" | "cellphone" | "cell phone" => PhoneKind::Mobile,
            "landline" | "fixed" | "fixed line" => PhoneKind::Landline,
            "work" | "business" | "office" => PhoneKind::Work,
            "home" => PhoneKind::Home,
            "fax" => PhoneKind::Fax,
            "voip" => PhoneKind::Voip,
            "other" => PhoneKind::Other,
            _ => return None,
        };
        Some(kind)
    }

    fn from_number_type(t: Type) -> PhoneKind {
        match t {
            Type::Mobile => PhoneKind::Mobile,
            Type::FixedLine => PhoneKind::Landline,
            Type::Voip => PhoneKind::Voip,
            _ => PhoneKind::Other,
        }
    }
}

impl fmt::Display for PhoneKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked phone number in E.164 form.
///
/// Two numbers are equal when their E.164 forms, extensions and kinds are equal.
///
/// ```
/// use customerdb::{CountryCode, Phone, PhoneKind};
/// let gb = CountryCode::parse("GB")?;
/// let p = Phone::parse("07400 123456", Some(gb))?;
/// assert_eq!(p.e164(), "+447400123456");
/// assert_eq!(p.kind(), PhoneKind::Mobile);
/// assert_eq!(Phone::parse("+44 7400 123456", None)?, p);
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phone {
    e164: String,
    raw: String,
    extension: Option<String>,
    kind: PhoneKind,
    region: Option<CountryCode>,
}

impl Phone {
    /// Reads a number. `raw` may be international (`+44 20 7946 0018`, `0044 ...`) or
    /// national (`020 7946 0018`), which needs `default_region`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `phone`: among others
    /// [`Reason::Empty`], [`Reason::PhoneNoRegion`], [`Reason::PhoneTooShort`],
    /// [`Reason::PhoneInvalid`].
    pub fn parse(raw: &str, default_region: Option<CountryCode>) -> Result<Phone> {
        let n = normalize::normalize_phone(raw, default_region.map(|c| c.0))
            .map_err(|reason| Error::invalid("phone", raw, reason))?;
        Ok(Phone {
            e164: n.e164,
            raw: raw.trim().to_owned(),
            extension: n.extension,
            kind: PhoneKind::from_number_type(n.number_type),
            region: n
                .region
                .and_then(|r| normalize::lookup_country(&r).ok())
                .map(CountryCode),
        })
    }

    /// The number in E.164 form (`+442079460018`), without any extension.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The number as entered, trimmed.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The extension's digits, if one was given.
    pub fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }

    /// The kind: as set by [`Phone::with_kind`], or inferred from the number type.
    pub fn kind(&self) -> PhoneKind {
        self.kind
    }

    /// The same number with its kind set.
    #[must_use]
    pub fn with_kind(mut self, kind: PhoneKind) -> Phone {
        self.kind = kind;
        self
    }

    /// The country the number belongs to, when it is an assigned ISO 3166-1 country (not
    /// for international services such as `+800`, nor for Ascension `AC`, Tristan da Cunha
    /// `TA` or Kosovo `XK`).
    pub fn region(&self) -> Option<CountryCode> {
        self.region
    }
}

impl PartialEq for Phone {
    fn eq(&self, other: &Self) -> bool {
        self.e164 == other.e164 && self.extension == other.extension && self.kind == other.kind
    }
}

impl Eq for Phone {}

impl Hash for Phone {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.e164.hash(state);
        self.extension.hash(state);
        self.kind.hash(state);
    }
}

impl fmt::Display for Phone {
    /// The E.164 form, then `;ext=` and the extension if there is one (RFC 3966 style).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)?;
        if let Some(ext) = &self.extension {
            write!(f, ";ext={ext}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Person name

/// A person's name in parts, as given to [`PersonName::from_parts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NameParts {
    /// Honorific before the name (`Dr.`).
    pub prefix: Option<String>,
    /// Given (first) name.
    pub given: Option<String>,
    /// Middle names or initials.
    pub middle: Option<String>,
    /// Family name (surname), with its particles (`van Beethoven`).
    pub family: Option<String>,
    /// Suffix after the name (`Jr.`, `PhD`).
    pub suffix: Option<String>,
}

/// A person's name, split into parts, with matching keys.
///
/// ```
/// use customerdb::PersonName;
/// let n = PersonName::parse("Dr. Ada K. Lovelace Jr.")?;
/// assert_eq!((n.given(), n.family(), n.suffix()), (Some("Ada"), Some("Lovelace"), Some("Jr.")));
/// assert_eq!(PersonName::parse("Müller, Jürgen")?.family_key(), Some("muller"));
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PersonName {
    display: String,
    prefix: Option<String>,
    given: Option<String>,
    middle: Option<String>,
    family: Option<String>,
    suffix: Option<String>,
    given_key: Option<String>,
    family_key: Option<String>,
    family_phonetic: Vec<String>,
}

impl PersonName {
    /// Splits a full name; the rules are in [`crate::normalize`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `name`:
    /// [`Reason::Empty`], [`Reason::NameNoLetters`], [`Reason::ControlCharacter`] or
    /// [`Reason::TooLong`].
    pub fn parse(full: &str) -> Result<PersonName> {
        let s =
            normalize::split_name(full).map_err(|reason| Error::invalid("name", full, reason))?;
        Ok(PersonName::build(
            s.display, s.prefix, s.given, s.middle, s.family, s.suffix,
        ))
    }

    /// Builds a name from parts, each cleaned like a full name; blank parts are dropped and
    /// the display form is the parts joined by spaces.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `name.given` (and so on)
    /// for a part that is refused, or `name` when no part is left ([`Reason::Empty`]) or
    /// the parts hold no letter ([`Reason::NameNoLetters`]).
    pub fn from_parts(parts: NameParts) -> Result<PersonName> {
        let clean = |field: &str, value: Option<String>| -> Result<Option<String>> {
            let Some(value) = value else { return Ok(None) };
            let cleaned = normalize::clean_name_text(&value)
                .map_err(|reason| Error::invalid(format!("name.{field}"), value, reason))?;
            Ok((!cleaned.is_empty()).then_some(cleaned))
        };
        let prefix = clean("prefix", parts.prefix)?;
        let given = clean("given", parts.given)?;
        let middle = clean("middle", parts.middle)?;
        let family = clean("family", parts.family)?;
        let suffix = clean("suffix", parts.suffix)?;
        let display = [&prefix, &given, &middle, &family, &suffix]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        if display.is_empty() {
            return Err(Error::invalid("name", "", Reason::Empty));
        }
        if !display.chars().any(char::is_alphabetic) {
            return Err(Error::invalid("name", display, Reason::NameNoLetters));
        }
        Ok(PersonName::build(
            display, prefix, given, middle, family, suffix,
        ))
    }

    fn build(
        display: String,
        prefix: Option<String>,
        given: Option<String>,
        middle: Option<String>,
        family: Option<String>,
        suffix: Option<String>,
    ) -> PersonName {
        let key = |part: &Option<String>| part.as_deref().map(name_key).filter(|k| !k.is_empty());
        let given_key = key(&given);
        let family_key = key(&family);
        // The family key keeps the letters the phonetic codes are made of: fold once.
        let family_phonetic = family_key
            .as_deref()
            .map(normalize::phonetic_codes)
            .unwrap_or_default();
        PersonName {
            display,
            prefix,
            given,
            middle,
            family,
            suffix,
            given_key,
            family_key,
            family_phonetic,
        }
    }

    /// The name as entered, display-cleaned; for [`PersonName::from_parts`], the parts
    /// joined by spaces.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The honorific before the name.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The given (first) name.
    pub fn given(&self) -> Option<&str> {
        self.given.as_deref()
    }

    /// Middle names or initials.
    pub fn middle(&self) -> Option<&str> {
        self.middle.as_deref()
    }

    /// The family name, with its particles.
    pub fn family(&self) -> Option<&str> {
        self.family.as_deref()
    }

    /// The suffix after the name.
    pub fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }

    /// The given name's matching key ([`normalize::name_key`]).
    pub fn given_key(&self) -> Option<&str> {
        self.given_key.as_deref()
    }

    /// The family name's matching key ([`normalize::name_key`]): `O'Brien` is `obrien`,
    /// `Müller` is `muller`, `García-López` is `garcia lopez`.
    pub fn family_key(&self) -> Option<&str> {
        self.family_key.as_deref()
    }

    /// Double Metaphone codes of the family name ([`normalize::phonetic_keys`]).
    pub fn family_phonetic(&self) -> &[String] {
        &self.family_phonetic
    }

    /// The parts, for editing and passing back to [`PersonName::from_parts`].
    pub fn to_parts(&self) -> NameParts {
        NameParts {
            prefix: self.prefix.clone(),
            given: self.given.clone(),
            middle: self.middle.clone(),
            family: self.family.clone(),
            suffix: self.suffix.clone(),
        }
    }
}

impl fmt::Display for PersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

// ---------------------------------------------------------------------------------------------
// Address

/// A postal address in parts, as given to [`Address::parse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressParts {
    /// Street lines, first to last.
    pub lines: Vec<String>,
    /// Town or city.
    pub locality: Option<String>,
    /// State, county or province.
    pub region: Option<String>,
    /// Postal code.
    pub postcode: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
}

/// A checked postal address.
///
/// ```
/// use customerdb::{Address, AddressParts};
/// let a = Address::parse(AddressParts {
///     lines: vec!["10  Downing Street".into()],
///     locality: Some("London".into()),
///     postcode: Some("sw1a2aa".into()),
///     country: Some("gb".into()),
///     ..AddressParts::default()
/// })?;
/// assert_eq!(a.lines(), ["10 Downing Street"]);
/// assert_eq!(a.postcode(), Some("SW1A 2AA"));
/// assert_eq!(a.postcode_key(), Some("SW1A2AA"));
/// # Ok::<(), customerdb::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    lines: Vec<String>,
    locality: Option<String>,
    region: Option<String>,
    postcode: Option<String>,
    country: Option<CountryCode>,
    locality_key: Option<String>,
    postcode_key: Option<String>,
}

impl Address {
    /// Checks and cleans an address.
    ///
    /// Lines, locality and region are display-cleaned (blank ones dropped). The country must
    /// be an assigned ISO 3166-1 alpha-2 code. The postcode is written in its country's
    /// shape and refused if it does not fit: GB `SW1A 1AA`, US `12345` or `12345-6789`, CA
    /// `K1A 0B1`, NL `1234 AB`, IE Eircode `A65 F4E2`, JP `100-0001`, BR `01310-100`, SE
    /// `114 55`, PL `00-950`, PT `1000-001`, and digits only for DE, FR, ES, IT, FI (5), BE,
    /// AT, CH, DK, NO, AU, NZ (4) and IN (6); a leading national prefix (`D-`, `NL-`) is
    /// dropped. Other countries' postcodes, and all postcodes without a country, are
    /// upper-cased with whitespace collapsed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with field `lines[i]`, `lines`
    /// (more than 10), `locality`, `region`, `postcode` or `country`; or with an empty field
    /// and [`Reason::Empty`] when every part is blank.
    pub fn parse(parts: AddressParts) -> Result<Address> {
        if parts.lines.len() > MAX_ADDRESS_LINES {
            return Err(Error::invalid(
                "lines",
                parts.lines.join("\n"),
                Reason::TooMany {
                    max: MAX_ADDRESS_LINES,
                },
            ));
        }
        let mut lines = Vec::with_capacity(parts.lines.len());
        for (i, line) in parts.lines.into_iter().enumerate() {
            let cleaned = normalize::optional_text(Some(&line))
                .map_err(|reason| Error::invalid(format!("lines[{i}]"), line, reason))?;
            lines.extend(cleaned);
        }
        let text = |field: &str, value: Option<&String>| {
            normalize::optional_text(value.map(String::as_str))
                .map_err(|reason| Error::invalid(field, value.map_or("", String::as_str), reason))
        };
        let locality = text("locality", parts.locality.as_ref())?;
        let region = text("region", parts.region.as_ref())?;
        let country = match parts.country.as_deref() {
            Some(c) if !c.trim().is_empty() => Some(CountryCode::parse(c)?),
            _ => None,
        };
        let postcode = match parts.postcode.as_deref() {
            Some(p) if !p.trim().is_empty() => check_text(p, MAX_TEXT_LEN)
                .and_then(|()| normalize::normalize_postcode(p, country.map(|c| c.0)))
                .map(Some)
                .map_err(|reason| Error::invalid("postcode", p, reason))?,
            _ => None,
        };
        if lines.is_empty()
            && locality.is_none()
            && region.is_none()
            && postcode.is_none()
            && country.is_none()
        {
            return Err(Error::invalid("address", "", Reason::Empty));
        }
        let locality_key = locality.as_deref().map(fold_key).filter(|k| !k.is_empty());
        let postcode_key = postcode.as_deref().map(normalize::postcode_key);
        Ok(Address {
            lines,
            locality,
            region,
            postcode,
            country,
            locality_key,
            postcode_key,
        })
    }

    /// Street lines, first to last, display-cleaned.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Town or city.
    pub fn locality(&self) -> Option<&str> {
        self.locality.as_deref()
    }

    /// State, county or province.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The postcode in its country's shape.
    pub fn postcode(&self) -> Option<&str> {
        self.postcode.as_deref()
    }

    /// The country.
    pub fn country(&self) -> Option<CountryCode> {
        self.country
    }

    /// The locality's matching key ([`fold_key`]).
    pub fn locality_key(&self) -> Option<&str> {
        self.locality_key.as_deref()
    }

    /// The postcode upper-cased with spaces removed (`SW1A1AA`).
    pub fn postcode_key(&self) -> Option<&str> {
        self.postcode_key.as_deref()
    }

    /// The parts, for editing and passing back to [`Address::parse`].
    pub fn to_parts(&self) -> AddressParts {
        AddressParts {
            lines: self.lines.clone(),
            locality: self.locality.clone(),
            region: self.region.clone(),
            postcode: self.postcode.clone(),
            country: self.country.map(|c| c.as_str().to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Properties: no input panics, normalisation is a fixed point, postcard round-trips.

    use proptest::prelude::*;

    use super::*;
    use crate::normalize::{fold_key, name_key, phonetic_keys};

    fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
        let bytes = postcard::to_allocvec(v).unwrap();
        postcard::from_bytes(&bytes).unwrap()
    }

    proptest! {
        #[test]
        fn fold_key_is_idempotent(s in any::<String>()) {
            let k = fold_key(&s);
            prop_assert_eq!(fold_key(&k), k.clone());
            prop_assert_eq!(name_key(&name_key(&s)), name_key(&s));
            let _ = phonetic_keys(&s);
        }

        #[test]
        fn email_parse_never_panics_and_is_a_fixed_point(s in any::<String>(), t in "[a-zA-Z0-9.+_-]{1,20}@[a-zA-Z0-9-]{1,10}\\.[a-zA-Z]{2,6}") {
            for raw in [s.as_str(), t.as_str()] {
                if let Ok(e) = Email::parse(raw) {
                    let again = Email::parse(e.as_str()).unwrap();
                    prop_assert_eq!(&again, &e);
                    prop_assert_eq!(again.match_key(), e.match_key());
                    prop_assert_eq!(roundtrip(&e), e);
                }
            }
        }

        #[test]
        fn phone_parse_never_panics_and_is_a_fixed_point(s in any::<String>(), t in "\\+?[0-9 ()-]{3,18}", r in prop::sample::select(vec!["GB", "US", "DE", "FR", "IT", "RU", "IN", "BR", "JP", "AU"])) {
            let region = CountryCode::parse(r).ok();
            for raw in [s.as_str(), t.as_str()] {
                for region in [None, region] {
                    if let Ok(p) = Phone::parse(raw, region) {
                        let again = Phone::parse(p.e164(), None).unwrap();
                        prop_assert_eq!(again.e164(), p.e164());
                        prop_assert_eq!(roundtrip(&p), p);
                    }
                }
            }
        }

        #[test]
        fn name_parse_never_panics_and_is_a_fixed_point(s in any::<String>(), t in "([A-Z][a-z]{0,8}\\.? ?,? ?){1,5}") {
            for raw in [s.as_str(), t.as_str()] {
                if let Ok(n) = PersonName::parse(raw) {
                    prop_assert_eq!(&PersonName::parse(n.display()).unwrap(), &n);
                    prop_assert_eq!(&PersonName::from_parts(n.to_parts()).unwrap().to_parts(), &n.to_parts());
                    prop_assert_eq!(roundtrip(&n), n);
                }
            }
        }

        #[test]
        fn address_parse_never_panics_and_is_a_fixed_point(
            lines in prop::collection::vec(any::<String>(), 0..3),
            locality in any::<Option<String>>(),
            postcode in prop::option::of(prop_oneof!["[A-Za-z0-9 -]{0,10}", "\\PC{0,8}"]),
            country in prop::option::of(prop::sample::select(vec!["GB", "US", "CA", "NL", "IE", "JP", "BR", "PT", "ES", "SE", "ZA", "gb", "XX"])),
        ) {
            let parts = AddressParts { lines, locality, region: None, postcode, country: country.map(str::to_owned) };
            if let Ok(a) = Address::parse(parts) {
                prop_assert_eq!(&Address::parse(a.to_parts()).unwrap(), &a);
                prop_assert_eq!(roundtrip(&a), a);
            }
        }

        #[test]
        fn country_parse_never_panics_and_round_trips(s in any::<String>(), t in "[A-Za-z]{2}") {
            for raw in [s.as_str(), t.as_str()] {
                if let Ok(c) = CountryCode::parse(raw) {
                    prop_assert_eq!(CountryCode::parse(c.as_str()).unwrap(), c);
                    prop_assert_eq!(roundtrip(&c), c);
                }
            }
        }
    }

    #[test]
    fn country_code_deserialisation_checks_the_code() {
        let bytes = postcard::to_allocvec("ZZ").unwrap();
        assert!(postcard::from_bytes::<CountryCode>(&bytes).is_err());
    }

    #[test]
    fn phone_kind_names_round_trip() {
        for kind in [
            PhoneKind::Mobile,
            PhoneKind::Landline,
            PhoneKind::Work,
            PhoneKind::Home,
            PhoneKind::Fax,
            PhoneKind::Voip,
            PhoneKind::Other,
        ] {
            assert_eq!(PhoneKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(PhoneKind::parse(" Cell "), Some(PhoneKind::Mobile));
    }

    #[test]
    fn errors_name_the_field_and_reason() {
        let e = Email::parse("  ").unwrap_err();
        assert!(
            matches!(e.kind(), crate::ErrorKind::Invalid { field, reason: Reason::Empty, .. } if field == "email")
        );
        let e = Phone::parse("", None).unwrap_err();
        assert!(
            matches!(e.kind(), crate::ErrorKind::Invalid { field, reason: Reason::Empty, .. } if field == "phone")
        );
        let e = PersonName::from_parts(NameParts {
            given: Some("a\u{7}".into()),
            ..NameParts::default()
        })
        .unwrap_err();
        assert!(
            matches!(e.kind(), crate::ErrorKind::Invalid { field, reason: Reason::ControlCharacter, .. } if field == "name.given")
        );
        let parts = AddressParts {
            lines: vec!["1 Main St".into(), "x\u{0}".into()],
            ..AddressParts::default()
        };
        let e = Address::parse(parts).unwrap_err();
        assert!(matches!(e.kind(), crate::ErrorKind::Invalid { field, .. } if field == "lines[1]"));
        let parts = AddressParts {
            postcode: Some("SW1A".into()),
            country: Some("GB".into()),
            ..AddressParts::default()
        };
        let e = Address::parse(parts).unwrap_err();
        assert!(
            matches!(e.kind(), crate::ErrorKind::Invalid { field, reason: Reason::PostcodeFormat { country: "GB" }, .. } if field == "postcode")
        );
        assert!(Address::parse(AddressParts::default()).is_err());
    }

    #[test]
    fn name_keys_handle_apostrophes_umlauts_and_hyphens() {
        let n = PersonName::parse("Seán O'Brien").unwrap();
        assert_eq!(
            (n.given_key(), n.family_key()),
            (Some("sean"), Some("obrien"))
        );
        assert_eq!(
            PersonName::parse("Jürgen Müller").unwrap().family_key(),
            Some("muller")
        );
        let n = PersonName::parse("María García-López").unwrap();
        assert_eq!(n.family_key(), Some("garcia lopez"));
        assert!(!n.family_phonetic().is_empty());
    }

    #[test]
    fn phone_equality_ignores_formatting() {
        let gb = CountryCode::parse("GB").ok();
        let a = Phone::parse("020 7946 0018", gb).unwrap();
        let b = Phone::parse("+44 20 7946 0018", None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.region(), gb);
        assert_eq!(a.clone().with_kind(PhoneKind::Work).kind(), PhoneKind::Work);
    }
}
