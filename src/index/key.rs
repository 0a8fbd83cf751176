//! Order-preserving byte encodings for index keys.
//!
//! Every encoding here is *self-delimiting* (a reader knows where it ends without a length) and
//! *order-preserving* (comparing encodings as bytes gives the same order as comparing values),
//! so a composite key `tag ++ value ++ id` sorts by tag, then value, then id, and a range of
//! values is a range of keys. See ARCHITECTURE.md for the full layouts.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;

/// Ends an encoded text. `0x00` inside the text is escaped as `0x00 0xFF`, so the terminator
/// `0x00 0x01` sorts before any continuation and "a" < "a\0" < "ab" holds for the encodings.
const TEXT_END: [u8; 2] = [0x00, 0x01];
const TEXT_ESCAPED_NUL: [u8; 2] = [0x00, 0xFF];

/// Appends an escaped, terminated text.
pub(crate) fn put_text(out: &mut Vec<u8>, s: &str) {
    put_text_prefix(out, s);
    out.extend_from_slice(&TEXT_END);
}

/// Appends the escaped bytes of `s` without the terminator: every encoded text starting with `s`
/// starts with these bytes.
pub(crate) fn put_text_prefix(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&TEXT_ESCAPED_NUL);
        } else {
            out.push(b);
        }
    }
}

/// Reads a text written by [`put_text`]; returns it and the rest of the input.
pub(crate) fn take_text(input: &[u8]) -> Option<(String, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let b = *input.get(i)?;
        if b == 0 {
            match *input.get(i + 1)? {
                0x01 => break,
                0xFF => out.push(0),
                _ => return None,
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    Some((s, &input[i + 2..]))
}

/// Appends a signed integer: big-endian with the sign bit flipped.
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&(v.cast_unsigned() ^ (1 << 63)).to_be_bytes());
}

/// Reads an integer written by [`put_i64`].
pub(crate) fn take_i64(input: &[u8]) -> Option<(i64, &[u8])> {
    let (head, rest) = input.split_first_chunk::<8>()?;
    Some(((u64::from_be_bytes(*head) ^ (1 << 63)).cast_signed(), rest))
}

/// Appends an unsigned integer, big-endian (used for customer ids).
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a date as its day number from 0001-01-01, sign-flipped big-endian i32.
pub(crate) fn put_date(out: &mut Vec<u8>, d: NaiveDate) {
    out.extend_from_slice(&(d.num_days_from_ce().cast_unsigned() ^ (1 << 31)).to_be_bytes());
}

/// Reads a date written by [`put_date`].
pub(crate) fn take_date(input: &[u8]) -> Option<(NaiveDate, &[u8])> {
    let (head, rest) = input.split_first_chunk::<4>()?;
    let days = (u32::from_be_bytes(*head) ^ (1 << 31)).cast_signed();
    Some((NaiveDate::from_num_days_from_ce_opt(days)?, rest))
}

/// Appends an instant as microseconds since the Unix epoch (see [`put_i64`]).
pub(crate) fn put_timestamp(out: &mut Vec<u8>, t: DateTime<Utc>) {
    put_i64(out, t.timestamp_micros());
}

/// Reads an instant written by [`put_timestamp`].
pub(crate) fn take_timestamp(input: &[u8]) -> Option<(DateTime<Utc>, &[u8])> {
    let (micros, rest) = take_i64(input)?;
    Some((DateTime::from_timestamp_micros(micros)?, rest))
}

/// Appends a boolean as one byte.
pub(crate) fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

/// Decimal sign classes; within a class the rest of the encoding orders the magnitude.
const DEC_NEG: u8 = 0x01;
const DEC_ZERO: u8 = 0x02;
const DEC_POS: u8 = 0x03;

/// Appends an exact decimal so that byte order is numeric order and equal values (`1.50` and
/// `1.5`) encode alike.
///
/// A non-zero value is written as sign class, then the decimal exponent `e` of its leading
/// digit (value = 0.d1d2...dn × 10^e) as a sign-flipped i16, then its significant digits one per
/// byte (`digit + 1`), then `0x00`. Negative values complement the exponent and digit bytes
/// and end with `0xFF`, which reverses their order as required.
pub(crate) fn put_decimal(out: &mut Vec<u8>, v: Decimal) {
    let v = v.normalize();
    if v.is_zero() {
        out.push(DEC_ZERO);
        return;
    }
    let negative = v.is_sign_negative();
    let digits = v.mantissa().unsigned_abs().to_string();
    let digits = digits.trim_end_matches('0');
    // mantissa has `len` digits and the value is mantissa × 10^-scale, so the leading digit
    // sits at 10^(len - scale - 1) and e = len - scale.
    let len = i16::try_from(v.mantissa().unsigned_abs().to_string().len()).unwrap_or(i16::MAX);
    let scale = i16::try_from(v.scale()).unwrap_or(i16::MAX);
    let exp = len - scale;
    let exp_bytes = (exp.cast_unsigned() ^ (1 << 15)).to_be_bytes();
    if negative {
        out.push(DEC_NEG);
        out.extend(exp_bytes.iter().map(|b| !b));
        out.extend(digits.bytes().map(|d| !(d - b'0' + 1)));
        out.push(0xFF);
    } else {
        out.push(DEC_POS);
        out.extend_from_slice(&exp_bytes);
        out.extend(digits.bytes().map(|d| d - b'0' + 1));
        out.push(0x00);
    }
}

/// Reads a decimal written by [`put_decimal`], returning it and the rest of the input.
pub(crate) fn take_decimal(input: &[u8]) -> Option<(Decimal, &[u8])> {
    let (&class, rest) = input.split_first()?;
    if class == DEC_ZERO {
        return Some((Decimal::ZERO, rest));
    }
    let negative = match class {
        DEC_POS => false,
        DEC_NEG => true,
        _ => return None,
    };
    let flip = |b: u8| if negative { !b } else { b };
    let (exp, rest) = rest.split_first_chunk::<2>()?;
    let exp = (u16::from_be_bytes([flip(exp[0]), flip(exp[1])]) ^ (1 << 15)).cast_signed();
    let end = if negative { 0xFF } else { 0x00 };
    let at = rest.iter().position(|&b| b == end)?;
    let mut digits = String::with_capacity(at + 1);
    if negative {
        digits.push('-');
    }
    for &b in &rest[..at] {
        let d = flip(b).checked_sub(1).filter(|d| *d <= 9)?;
        digits.push(char::from(b'0' + d));
    }
    // value = 0.d1...dn × 10^exp = d1...dn × 10^(exp - n)
    let n = i32::try_from(at).ok()?;
    let shift = i32::from(exp) - n;
    let mantissa: Decimal = digits.parse().ok()?;
    let value = if shift >= 0 {
        (0..shift).try_fold(mantissa, |v, _| v.checked_mul(Decimal::TEN))?
    } else {
        let mut v = mantissa;
        v.set_scale(u32::try_from(-shift).ok()?).ok()?;
        v
    };
    Some((value, &rest[at + 1..]))
}

/// Skips a decimal written by [`put_decimal`], returning the rest of the input.
#[cfg(test)]
pub(crate) fn skip_decimal(input: &[u8]) -> Option<&[u8]> {
    let (&class, rest) = input.split_first()?;
    match class {
        DEC_ZERO => Some(rest),
        DEC_POS | DEC_NEG => {
            let end = if class == DEC_POS { 0x00 } else { 0xFF };
            let rest = rest.get(2..)?;
            let at = rest.iter().position(|&b| b == end)?;
            Some(&rest[at + 1..])
        }
        _ => None,
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` if
/// there is none (the prefix is all `0xFF`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_text(&mut v, s);
        v
    }

    fn dec(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_decimal(&mut v, s.parse().unwrap());
        v
    }

    #[test]
    fn decimals_read_back_as_written() {
        for text in ["0", "1.5", "-1.5", "100", "-0.001", "123456.789", "-98000"] {
            let d: Decimal = text.parse().unwrap();
            let mut out = Vec::new();
            put_decimal(&mut out, d);
            out.push(7);
            let (back, rest) = take_decimal(&out).unwrap();
            assert_eq!((back, rest), (d, &[7][..]), "{text}");
        }
        assert!(take_decimal(&[DEC_POS, 0x80, 0x01, 0x0B, 0x00]).is_none());
    }

    #[test]
    fn text_with_nul_sorts_between_prefix_and_longer_text() {
        assert!(text("a") < text("a\0"));
        assert!(text("a\0") < text("ab"));
        assert_eq!(take_text(&text("a\0b")).unwrap().0, "a\0b");
    }

    #[test]
    fn equal_decimals_encode_alike() {
        assert_eq!(dec("1.50"), dec("1.5"));
        assert_eq!(dec("0"), dec("0.000"));
        assert!(dec("-2") < dec("-1.5"));
        assert!(dec("-1.5") < dec("0"));
        assert!(dec("0") < dec("0.001"));
        assert!(dec("9.99") < dec("10"));
        assert!(dec("100") < dec("100.01"));
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    proptest! {
        #[test]
        fn text_roundtrips_and_keeps_order(a in ".*", b in ".*") {
            let (ea, eb) = (text(&a), text(&b));
            prop_assert_eq!(take_text(&ea).unwrap(), (a.clone(), &[][..]));
            prop_assert_eq!(a.as_bytes().cmp(b.as_bytes()), ea.cmp(&eb));
        }

        #[test]
        fn text_prefix_matches_exactly_the_texts_with_that_prefix(a in "[a\\x00b]{0,4}", p in "[a\\x00b]{0,3}") {
            let mut pre = Vec::new();
            put_text_prefix(&mut pre, &p);
            prop_assert_eq!(text(&a).starts_with(&pre), a.starts_with(&p));
        }

        #[test]
        fn i64_roundtrips_and_keeps_order(a: i64, b: i64) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            put_i64(&mut ea, a);
            put_i64(&mut eb, b);
            prop_assert_eq!(take_i64(&ea).unwrap().0, a);
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn date_roundtrips_and_keeps_order(a in -300_000i32..3_000_000, b in -300_000i32..3_000_000) {
            let (da, db) = (NaiveDate::from_num_days_from_ce_opt(a).unwrap(), NaiveDate::from_num_days_from_ce_opt(b).unwrap());
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            put_date(&mut ea, da);
            put_date(&mut eb, db);
            prop_assert_eq!(take_date(&ea).unwrap().0, da);
            prop_assert_eq!(da.cmp(&db), ea.cmp(&eb));
        }

        #[test]
        fn decimal_keeps_numeric_order(a in any::<i64>(), sa in 0u32..12, b in any::<i64>(), sb in 0u32..12) {
            let (da, db) = (Decimal::new(a, sa), Decimal::new(b, sb));
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            put_decimal(&mut ea, da);
            put_decimal(&mut eb, db);
            prop_assert_eq!(da.cmp(&db), ea.cmp(&eb));
            prop_assert_eq!(skip_decimal(&ea), Some(&[][..]));
        }
    }
}
