//! Why standardisation refused a value.

use std::fmt;

/// Why a value was refused by standardisation.
///
/// `Display` is a short lowercase phrase ("the domain has no dot") meant to follow
/// "invalid email \"...\": "; [`Reason::code`] is a stable lower-case name for programs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The value is empty or only whitespace.
    Empty,
    /// The value is longer than the limit for its field.
    TooLong {
        /// The limit, in bytes of UTF-8.
        max: usize,
    },
    /// The value holds a control, format or other invisible character.
    ControlCharacter,
    /// The value is not in any form the field accepts (a date that is not a date, an unknown
    /// stage name, an attribute name with spaces).
    Malformed,
    /// A list holds more items than allowed.
    TooMany {
        /// The most items allowed.
        max: usize,
    },

    /// An email address has no `@`.
    EmailNoAt,
    /// Nothing comes before the `@`.
    EmailLocalEmpty,
    /// Nothing comes after the `@`.
    EmailDomainEmpty,
    /// The part before the `@` holds a character not allowed there.
    EmailLocalCharacter,
    /// The part before the `@` starts or ends with a dot, or has two dots in a row.
    EmailLocalDots,
    /// The part before the `@` is longer than 64 bytes.
    EmailLocalTooLong,
    /// The part before the `@` holds non-ASCII characters, which these options refuse.
    EmailInternationalLocal,
    /// The part before the `@` is quoted, which these options refuse.
    EmailQuotedLocal,
    /// A quoted part is not closed, or text follows its closing quote.
    EmailQuoting,
    /// The address has a display name or angle brackets, which these options refuse.
    EmailDisplayName,
    /// A display name or angle-bracket form is malformed.
    EmailAngleBrackets,
    /// The address holds a character that is unsafe to show or store (spaces, bidi controls,
    /// private-use or unassigned code points, a leading combining mark).
    EmailUnsafeCharacter,
    /// The domain holds a character not allowed in a host name.
    EmailDomainCharacter,
    /// The domain is a bracketed IP address literal.
    EmailDomainLiteral,
    /// A domain label is empty, too long, or starts or ends with a hyphen.
    EmailDomainLabel,
    /// The domain is not valid IDNA (UTS #46 / IDNA 2008).
    EmailDomainIdna,
    /// The domain has no dot.
    EmailDomainNoDot,
    /// The domain does not end in a plausible top-level domain.
    EmailDomainTld,
    /// The domain is special-use or reserved (`.invalid`, `.localhost`, `.test`, ...).
    EmailDomainReserved,

    /// A phone number holds a character that is not a digit or separator.
    PhoneCharacter,
    /// A phone number has too few digits.
    PhoneTooShort,
    /// A phone number has too many digits.
    PhoneTooLong,
    /// A national phone number was given with no region to read it in.
    PhoneNoRegion,
    /// The country calling code is not assigned.
    PhoneCountryCode,
    /// The number does not fit the numbering plan of its country.
    PhoneInvalid,
    /// The extension is malformed.
    PhoneExtension,

    /// A country is not two ASCII letters.
    CountryFormat,
    /// Two letters that are not an assigned ISO 3166-1 alpha-2 code.
    CountryUnassigned,

    /// A name has no letters.
    NameNoLetters,

    /// A currency is not an ISO 4217 code.
    CurrencyUnknown,

    /// A postcode does not have the shape its country uses.
    PostcodeFormat {
        /// The country whose shape was expected (ISO 3166-1 alpha-2).
        country: &'static str,
    },

    /// The index keeps no count per value (a unique index, or one whose values are nearly
    /// all distinct, such as timestamps).
    NotCounted,
}

impl Reason {
    /// A stable lower-case code, words joined by underscores, for programs (`empty`, `email_no_at`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::TooLong { .. } => "too_long",
            Reason::ControlCharacter => "control_character",
            Reason::Malformed => "malformed",
            Reason::TooMany { .. } => "too_many",
            Reason::EmailNoAt => "email_no_at",
            Reason::EmailLocalEmpty => "email_local_empty",
            Reason::EmailDomainEmpty => "email_domain_empty",
            Reason::EmailLocalCharacter => "email_local_character",
            Reason::EmailLocalDots => "email_local_dots",
            Reason::EmailLocalTooLong => "email_local_too_long",
            Reason::EmailInternationalLocal => "email_international_local",
            Reason::EmailQuotedLocal => "email_quoted_local",
            Reason::EmailQuoting => "email_quoting",
            Reason::EmailDisplayName => "email_display_name",
            Reason::EmailAngleBrackets => "email_angle_brackets",
            Reason::EmailUnsafeCharacter => "email_unsafe_character",
            Reason::EmailDomainCharacter => "email_domain_character",
            Reason::EmailDomainLiteral => "email_domain_literal",
            Reason::EmailDomainLabel => "email_domain_label",
            Reason::EmailDomainIdna => "email_domain_idna",
            Reason::EmailDomainNoDot => "email_domain_no_dot",
            Reason::EmailDomainTld => "email_domain_tld",
            Reason::EmailDomainReserved => "email_domain_reserved",
            Reason::PhoneCharacter => "phone_character",
            Reason::PhoneTooShort => "phone_too_short",
            Reason::PhoneTooLong => "phone_too_long",
            Reason::PhoneNoRegion => "phone_no_region",
            Reason::PhoneCountryCode => "phone_country_code",
            Reason::PhoneInvalid => "phone_invalid",
            Reason::PhoneExtension => "phone_extension",
            Reason::CountryFormat => "country_format",
            Reason::CountryUnassigned => "country_unassigned",
            Reason::NameNoLetters => "name_no_letters",
            Reason::CurrencyUnknown => "currency_unknown",
            Reason::PostcodeFormat { .. } => "postcode_format",
            Reason::NotCounted => "not_counted",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Empty => f.write_str("the value is empty"),
            Reason::TooLong { max } => write!(f, "the value is longer than {max} bytes"),
            Reason::ControlCharacter => f.write_str("the value holds a control character"),
            Reason::Malformed => f.write_str("the value is not in a form this field accepts"),
            Reason::TooMany { max } => write!(f, "there are more than {max} items"),
            Reason::EmailNoAt => f.write_str("there is no @-sign"),
            Reason::EmailLocalEmpty => f.write_str("nothing comes before the @-sign"),
            Reason::EmailDomainEmpty => f.write_str("nothing comes after the @-sign"),
            Reason::EmailLocalCharacter => {
                f.write_str("the part before the @-sign holds a character not allowed there")
            }
            Reason::EmailLocalDots => f.write_str(
                "the part before the @-sign starts or ends with a dot or has two dots in a row",
            ),
            Reason::EmailLocalTooLong => f.write_str("the part before the @-sign is too long"),
            Reason::EmailInternationalLocal => {
                f.write_str("non-ASCII characters before the @-sign are not accepted")
            }
            Reason::EmailQuotedLocal => {
                f.write_str("a quoted part before the @-sign is not accepted")
            }
            Reason::EmailQuoting => f.write_str("the quoting is malformed"),
            Reason::EmailDisplayName => {
                f.write_str("a display name or angle brackets are not accepted")
            }
            Reason::EmailAngleBrackets => f.write_str("the angle brackets are malformed"),
            Reason::EmailUnsafeCharacter => f.write_str("the address holds an unsafe character"),
            Reason::EmailDomainCharacter => {
                f.write_str("the domain holds a character not allowed in a host name")
            }
            Reason::EmailDomainLiteral => f.write_str("the domain is an address literal"),
            Reason::EmailDomainLabel => {
                f.write_str("a domain label is empty or too long or starts or ends with a hyphen")
            }
            Reason::EmailDomainIdna => f.write_str("the domain is not valid IDNA"),
            Reason::EmailDomainNoDot => f.write_str("the domain has no dot"),
            Reason::EmailDomainTld => f.write_str("the domain has no valid top-level domain"),
            Reason::EmailDomainReserved => f.write_str("the domain is special-use or reserved"),
            Reason::PhoneCharacter => {
                f.write_str("the number holds a character that is not a digit")
            }
            Reason::PhoneTooShort => f.write_str("the number is too short"),
            Reason::PhoneTooLong => f.write_str("the number is too long"),
            Reason::PhoneNoRegion => f.write_str("a national number needs a default region"),
            Reason::PhoneCountryCode => f.write_str("the country calling code is not assigned"),
            Reason::PhoneInvalid => {
                f.write_str("the number does not fit its country's numbering plan")
            }
            Reason::PhoneExtension => f.write_str("the extension is malformed"),
            Reason::CountryFormat => f.write_str("a country code is two letters"),
            Reason::CountryUnassigned => {
                f.write_str("the code is not an assigned ISO 3166-1 country")
            }
            Reason::NameNoLetters => f.write_str("the name has no letters"),
            Reason::CurrencyUnknown => f.write_str("the currency is not an ISO 4217 code"),
            Reason::PostcodeFormat { country } => {
                write!(f, "the postcode does not have the {country} shape")
            }
            Reason::NotCounted => f.write_str("the index keeps no count per value"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_display_is_lowercase() {
        for r in [
            Reason::Empty,
            Reason::TooLong { max: 3 },
            Reason::EmailDomainNoDot,
            Reason::PostcodeFormat { country: "GB" },
        ] {
            assert!(
                r.code()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(r.to_string().starts_with(|c: char| c.is_lowercase()));
        }
        assert_eq!(
            Reason::EmailDomainNoDot.to_string(),
            "the domain has no dot"
        );
    }
}
