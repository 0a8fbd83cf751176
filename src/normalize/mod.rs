//! Standardisation: pure functions that check and normalise contact data.
//!
//! Nothing here touches the database. The validated types in the crate root (`Email`,
//! `Phone`, `CountryCode`, `PersonName`, `Address`) are built only through these rules, so an
//! unnormalised value never reaches an index. A refused value is reported as
//! [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) with a [`Reason`].
//!
//! # Text
//!
//! - [`clean_display`]: the display form. NFC, trimmed, whitespace runs collapsed to one
//!   space; case and punctuation as entered.
//! - [`fold_key`]: the matching key. NFKC, case folded, diacritics stripped, whitespace
//!   collapsed; idempotent. [`name_key`] also drops apostrophes and turns hyphens and dots
//!   into spaces.
//! - [`phonetic_keys`]: Double Metaphone (primary, then alternate if different) of the ASCII
//!   letters of the fold key.
//! - Free text (names, address parts) longer than 1024 bytes is refused
//!   ([`Reason::TooLong`]), and so is text with a control character
//!   ([`Reason::ControlCharacter`]). Tab, line feed and the other whitespace controls are
//!   not refused: they count as spaces and are collapsed. Format characters (zero-width
//!   spaces, bidirectional overrides), private-use code points and noncharacters are refused.
//!
//! # Email
//!
//! The syntax rules of Python's `email-validator` 2.3.0 (its DNS checks are not done):
//!
//! - The input is trimmed; [`Email::original`](crate::model::Email::original) keeps the
//!   trimmed text.
//! - Exactly one unquoted `@`. The local part is a dot-atom: RFC 5322 `atext`
//!   (``A-Z a-z 0-9 !#$%&'*+-/=?^_`{|}~``) and, for internationalised addresses (RFC 6531
//!   SMTPUTF8), any non-ASCII character, in atoms separated by single dots, with no dot first
//!   or last. Non-ASCII local parts are NFC-normalised; their case is kept (mailboxes may be
//!   case-sensitive) except the RFC 2142 role names (`info`, `sales`, `postmaster`, ...),
//!   which are lower-cased. The local part is at most 64 bytes.
//! - Quoted local parts (`"ada lovelace"@example.org`) are refused by default; with
//!   [`EmailOptions::allow_quoted_local`] they are accepted and rewritten with the least
//!   quoting (`"ada"@x.org` becomes `ada@x.org`).
//! - Display names (`Ada <ada@example.org>`) are refused by default, because a name typed
//!   into an email field belongs in the name field, and silently dropping it would lose it;
//!   with [`EmailOptions::allow_display_name`] the name is dropped and the address kept.
//! - Spaces, controls, format characters (bidi overrides, zero-width), private-use code
//!   points, noncharacters and a leading combining mark are refused anywhere.
//! - The domain is mapped by UTS #46 (non-transitional: lower case, NFC, full-width dots)
//!   and converted to IDNA ASCII; every label is 1 to 63 bytes of letters, digits and
//!   hyphens, with no hyphen first or last and no `--` in third and fourth place except in
//!   `xn--` labels; the ASCII domain is at most 253 bytes; there must be a dot, and the last
//!   character must be a letter (so no all-numeric top-level domain). Domain literals
//!   (`[127.0.0.1]`) and special-use domains (`.arpa`, `.invalid`, `.local`, `.localhost`,
//!   `.onion`, `.test`) are refused.
//! - The whole address is at most 254 bytes, in both its Unicode and its ASCII form.
//! - The normalised form is `local@domain` with the domain in lower-case Unicode; the ASCII
//!   form has the domain in Punycode.
//!
//! The matching key ([`Email::match_key`](crate::model::Email::match_key)) is the normalised
//! address lower-cased, with provider rules that make two spellings of one mailbox agree:
//!
//! | domains | rule |
//! |---|---|
//! | `gmail.com`, `googlemail.com` | dots and `+tag` dropped; domain `gmail.com` |
//! | Outlook (`outlook.*`, `hotmail.*`, `live.*`, `msn.com`), iCloud (`icloud.com`, `me.com`, `mac.com`), Fastmail (`fastmail.com`, `fastmail.fm`), Proton (`proton.me`, `pm.me`, `protonmail.com`, `protonmail.ch`) | `+tag` dropped |
//! | Yahoo (`yahoo.*`, `ymail.com`, `rocketmail.com`) | `-tag` dropped |
//! | any other domain | nothing dropped: `+` sub-addressing is not universal |
//!
//! A local part that would become empty (`+news@gmail.com`) keeps its tag.
//!
//! # Phone
//!
//! Numbers are read with libphonenumber's metadata (the `phonenumber` crate) and stored in
//! E.164 (`+442079460018`):
//!
//! - Digits may be separated by spaces, dots, hyphens, slashes and parentheses; full-width
//!   digits are folded; a `tel:` prefix is dropped. A leading `+` or `00` starts an
//!   international number; with a default region, that region's own international prefix
//!   (`011` in the US) works too. Letters (`1-800-FLOWERS`) are refused.
//! - A national number needs a default region ([`Reason::PhoneNoRegion`] otherwise); its
//!   trunk prefix is removed by the metadata (`020 7946 0018` in GB is `+442079460018`).
//! - An extension written `ext. 12`, `ext 12`, `extension 12`, `x12`, `#12` or `;ext=12`
//!   (1 to 10 digits) is kept apart from the E.164 form.
//! - The number must be valid for its country's numbering plan (a number type other than
//!   unknown); raw input is at most 64 bytes. As in libphonenumber, the *whole* national
//!   number must match a type's pattern. Until this check moved to compiled patterns of its
//!   own, a match of a prefix was enough (the `phonenumber` crate's rule), so a few numbers
//!   with a digit too many (about 1% of a test set built from the metadata's
//!   example numbers give or take a digit) were stored that are now refused; a store holding
//!   such a number still reads it, but re-saving its raw input gives
//!   [`Reason::PhoneInvalid`].
//! - The kind is inferred from the number type (mobile, fixed line, `VoIP`; other types and
//!   fixed-line-or-mobile as in the US are `Other`) unless set by the caller.
//!
//! # Names
//!
//! A full name is NFKC-normalised and display-cleaned, must hold a letter, and is split:
//!
//! - Leading honorifics (`Mr`, `Mrs`, `Ms`, `Dr`, `Prof`, `Sir`, ..., with or without dot) are
//!   the prefix; trailing suffixes (`Jr`, `Sr`, `II`, `III`, `PhD`, `MD`, `Esq`, ...) the suffix,
//!   also after a comma (`Ada Lovelace, PhD`).
//! - `Family, Given Middle` (a comma) puts the family name first.
//! - Otherwise the first word is the given name and the last word the family name, together
//!   with the particles just before it (`van`, `von`, `der`, `de`, `del`, `della`, `di`, `da`,
//!   `du`, `le`, `la`, `bin`, `ibn`, `al`, `el`, `ter`, `ten`, `zu`, `y`, ...); words between are
//!   the middle name.
//! - A single word is a given name (`Ada`), except after a formal title (`Mr. Smith`), when it
//!   is the family name. Honorifics or suffixes alone are read as names, not stripped.
//! - Keys use [`name_key`]; the family name's phonetic keys use [`phonetic_keys`].
//!
//! # Addresses
//!
//! Lines, locality and region are display-cleaned (empty ones dropped; at most 10 lines);
//! the country is an ISO 3166-1 alpha-2 code; the postcode is put in its country's shape
//! (see [`Address::parse`](crate::model::Address::parse)) and refused if it does not fit.
//! An address with no part at all is refused as [`Reason::Empty`].

mod address;
mod country;
mod email;
mod name;
mod numbering;
mod phone;
mod reason;
mod text;

pub use address::{MAX_POSTCODE_LEN, postcode_key};
pub use email::{EmailOptions, MAX_EMAIL_LEN, MAX_LOCAL_LEN};
pub use phone::MAX_PHONE_LEN;

/// Frees the phone-number patterns that parsing compiled and cached.
///
/// Phone parsing runs libphonenumber's patterns, compiled on first use and kept with the
/// match caches they grow, so that each number costs tens of microseconds instead of a
/// millisecond. Those caches grow with the numbers seen, so they are released every 100,000
/// numbers parsed anyway (a million numbers from mixed regions otherwise left about 450 MiB);
/// a long-lived host can call this after an import to free them at once. Parsing afterwards
/// compiles what it needs again.
pub fn release_phone_patterns() {
    phone::release_patterns();
}
pub use reason::Reason;
pub use text::{MAX_TEXT_LEN, clean_display, fold_key, name_key, phonetic_keys};

pub(crate) use address::normalize_postcode;
pub(crate) use country::lookup_country;
pub(crate) use email::{normalize_email, quick_match_key};
pub(crate) use name::{clean_name_text, split_name};
pub(crate) use phone::normalize_phone;
pub(crate) use text::{check_text, optional_text, phonetic_codes};
