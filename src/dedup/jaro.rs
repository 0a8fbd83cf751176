//! Jaro-Winkler similarity, with a fast path for short ASCII strings.
//!
//! The textbook definition (Winkler 1990): Jaro's match window of `max(|a|, |b|) / 2 - 1`,
//! half-transpositions, and Winkler's prefix bonus (scale 0.1, at most four characters)
//! applied only when the Jaro score is above 0.7. Keys of names and places are almost all
//! ASCII after folding, and short, so they are compared as bytes with the match flags in two
//! 64-bit masks: no allocation and no UTF-8 decoding in the comparison hot loop. Anything
//! else goes to `strsim::jaro_winkler`, which computes the same definition over characters;
//! a property test checks the two agree.
//!
//! Porter & Winkler (1994), Table 2.1 lists reference values; the census production comparator
//! behind it returned 0 when both strings were shorter than four characters (`JON`/`JAN`).
//! The textbook form scores them (0.800), and so does this one, since short given names (`Al`,
//! `Jo`, `Ed`) are common in customer data and an exact-or-nothing rule would turn every typo
//! in them into a disagreement. The unit tests check every row of the table: the paper's value
//! where its strings are four characters or longer, the textbook value otherwise.

/// Jaro-Winkler similarity of `a` and `b`, in `[0, 1]`; 1 for equal strings (two empty
/// strings included), 0 when one is empty. Symmetric: Jaro's greedy matching can depend on
/// which string is scanned first, so the pair is put in a fixed order first.
pub(crate) fn jaro_winkler(a: &str, b: &str) -> f64 {
    let (a, b) = if (a.len(), a) <= (b.len(), b) {
        (a, b)
    } else {
        (b, a)
    };
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if !(a.is_ascii() && b.is_ascii() && x.len() <= 64 && y.len() <= 64) {
        return strsim::jaro_winkler(a, b);
    }
    let jaro = jaro_ascii(x, y);
    if jaro > 0.7 {
        let prefix = x.iter().zip(y).take(4).take_while(|(p, q)| p == q).count();
        jaro + 0.1 * prefix as f64 * (1.0 - jaro)
    } else {
        jaro
    }
}

/// Whether `jaro_winkler(a, b) >= threshold` is possible at all, from a bound that costs one
/// pass over each string: Jaro's matches are at most the characters the two share (as
/// multisets), so `jaro <= (c/|a| + c/|b| + 1) / 3`, and Winkler's bonus at most closes 40%
/// of the remaining gap. `false` means the similarity is certainly below `threshold`.
pub(crate) fn may_reach(left: &str, right: &str, threshold: f64) -> bool {
    let (x, y) = (left.as_bytes(), right.as_bytes());
    if x.is_empty() || y.is_empty() || !(left.is_ascii() && right.is_ascii()) {
        return true;
    }
    // Buckets by the low five bits merge some characters, which can only raise the bound.
    let mut counts = [0i32; 32];
    for &byte in x {
        counts[usize::from(byte & 31)] += 1;
    }
    let mut common = 0usize;
    for &byte in y {
        let slot = &mut counts[usize::from(byte & 31)];
        if *slot > 0 {
            *slot -= 1;
            common += 1;
        }
    }
    let shared = common as f64;
    let jaro = (shared / x.len() as f64 + shared / y.len() as f64 + 1.0) / 3.0;
    let bound = if jaro > 0.7 { 0.6 * jaro + 0.4 } else { jaro };
    // A hair of slack: the bound and the score round differently.
    bound + 1e-9 >= threshold
}

/// Jaro similarity of two ASCII strings of at most 64 bytes.
fn jaro_ascii(x: &[u8], y: &[u8]) -> f64 {
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let window = (x.len().max(y.len()) / 2).saturating_sub(1);
    let (mut x_flags, mut y_flags) = (0u64, 0u64);
    let mut matches = 0usize;
    for (i, &c) in x.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(y.len());
        for (j, &d) in y.iter().enumerate().take(hi).skip(lo) {
            if c == d && y_flags & (1 << j) == 0 {
                x_flags |= 1 << i;
                y_flags |= 1 << j;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    // Matched characters of `x` in order against matched characters of `y` in order.
    let mut transposed = 0usize;
    let mut j = 0usize;
    for (i, &c) in x.iter().enumerate() {
        if x_flags & (1 << i) == 0 {
            continue;
        }
        while y_flags & (1 << j) == 0 {
            j += 1;
        }
        if y.get(j) != Some(&c) {
            transposed += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    (m / x.len() as f64 + m / y.len() as f64 + (matches - transposed / 2) as f64 / m) / 3.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Porter & Winkler (1994), Table 2.1 (a copy of the shared reference file).
    const WINKLER_1994: &str =
        include_str!("../../tests/fixtures/dedup/winkler_1994_table_2_1_string_comparators.csv");

    #[test]
    fn jaro_winkler_matches_winkler_1994_table_2_1() {
        let mut rows = 0;
        for line in WINKLER_1994.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            let (a, b) = (cells[1], cells[2]);
            let paper: f64 = cells[4].parse().unwrap();
            let textbook: f64 = cells[cells.len() - 1].parse().unwrap();
            let short = a.len() < 4 && b.len() < 4;
            let expected = if short { textbook } else { paper };
            for (p, q) in [(a, b), (b, a)] {
                let ours = jaro_winkler(p, q);
                assert!(
                    (ours - expected).abs() < 0.0005 + 1e-9,
                    "{p}/{q}: {ours:.4} vs {expected}"
                );
            }
            if short {
                assert!(paper.abs() < 1e-9, "{a}/{b}: the paper gives 0 here");
            }
            rows += 1;
        }
        assert_eq!(rows, 26);
    }

    #[test]
    fn edge_cases() {
        let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
        assert!(close(jaro_winkler("", ""), 1.0));
        assert!(close(jaro_winkler("", "a"), 0.0));
        assert!(close(jaro_winkler("abc", "xyz"), 0.0));
        assert!(close(jaro_winkler("martha", "martha"), 1.0));
        // Non-ASCII and long strings take the general path.
        assert!(
            (jaro_winkler("müller", "muller") - strsim::jaro_winkler("müller", "muller")).abs()
                < 1e-12
        );
        let long = "a".repeat(80);
        assert!(close(jaro_winkler(&long, &long), 1.0));
    }

    proptest! {
        #[test]
        fn the_bound_never_rules_out_a_reachable_score(a in "[a-e1 ]{0,12}", b in "[a-e1 ]{0,12}") {
            let s = jaro_winkler(&a, &b);
            prop_assert!(may_reach(&a, &b, s));
        }

        #[test]
        fn the_ascii_path_agrees_with_strsim(a in "[a-e ]{0,20}", b in "[a-e ]{0,20}") {
            let ours = jaro_winkler(&a, &b);
            let (x, y) = if (a.len(), &a) <= (b.len(), &b) { (&a, &b) } else { (&b, &a) };
            prop_assert!((ours - strsim::jaro_winkler(x, y)).abs() < 1e-12);
            prop_assert!((0.0..=1.0).contains(&ours));
            prop_assert!((ours - jaro_winkler(&b, &a)).abs() < 1e-12);
        }
    }
}
