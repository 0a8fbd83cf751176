//! Explanations: a pair's score as a waterfall of per-comparison weights.

use std::fmt;

use super::model::probability;

/// One comparison's part in a score.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// The comparison's name (`given name`).
    pub comparison: String,
    /// The first record's compared values (`-` when missing).
    pub left: String,
    /// The second record's compared values.
    pub right: String,
    /// The level reached, `None` when a value is missing (the term then weighs 0).
    pub level: Option<&'static str>,
    /// The term's weight, log2 of its Bayes factor.
    pub weight: f64,
    /// For an exact name match weighted by term frequency, the value's frequency.
    pub term_frequency: Option<f64>,
}

/// Why a pair scored what it did: the prior and one [`Term`] per comparison, which add up to
/// [`Explanation::weight`] exactly (the score is computed by the same sum, in the same order).
///
/// Its `Display` is a table a person can read:
///
/// ```text
/// comparison    left                right               level                       weight
/// prior                                                                             -19.93
/// given name    ada                 ada                 exact (tf 0.20%)            +7.12
/// family name   lovelace            lovelace            exact (tf 0.10%)            +9.48
/// birth date    1815-12-10          -                   missing                     +0.00
/// ...
/// total                                                 probability 0.99871          +9.60
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The prior weight, `log2(λ / (1 - λ))`.
    pub prior: f64,
    /// One term per comparison, in the model's order.
    pub terms: Vec<Term>,
    /// The match weight: the prior plus every term's weight.
    pub weight: f64,
    /// The match probability of that weight.
    pub probability: f64,
}

impl Explanation {
    pub(crate) fn new(prior: f64, terms: Vec<Term>) -> Explanation {
        let weight = terms.iter().fold(prior, |w, t| w + t.weight);
        Explanation {
            prior,
            terms,
            weight,
            probability: probability(weight),
        }
    }
}

/// Cuts a value for a table cell, by characters, marking the cut.
fn cell(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:<24} {:<24} {:<34} {:>8}",
            "comparison", "left", "right", "level", "weight"
        )?;
        writeln!(
            f,
            "{:<16} {:<24} {:<24} {:<34} {:>+8.2}",
            "prior", "", "", "", self.prior
        )?;
        for t in &self.terms {
            let level = match (t.level, t.term_frequency) {
                (None, _) => "missing (neutral)".to_owned(),
                (Some(l), None) => l.to_owned(),
                (Some(l), Some(tf)) => format!("{l} (tf {:.2}%)", tf * 100.0),
            };
            writeln!(
                f,
                "{:<16} {:<24} {:<24} {:<34} {:>+8.2}",
                t.comparison,
                cell(&t.left, 24),
                cell(&t.right, 24),
                level,
                t.weight
            )?;
        }
        write!(
            f,
            "{:<16} {:<24} {:<24} {:<34} {:>+8.2}",
            "total",
            "",
            "",
            format!("probability {:.5}", self.probability),
            self.weight
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_every_term_and_the_total() {
        let e = Explanation::new(
            -10.0,
            vec![
                Term {
                    comparison: "given name".into(),
                    left: "ada".into(),
                    right: "ada".into(),
                    level: Some("exact"),
                    weight: 7.5,
                    term_frequency: Some(0.002),
                },
                Term {
                    comparison: "birth date".into(),
                    left: "1815-12-10".into(),
                    right: "-".into(),
                    level: None,
                    weight: 0.0,
                    term_frequency: None,
                },
            ],
        );
        assert!((e.weight - -2.5).abs() < 1e-12);
        let text = e.to_string();
        assert!(text.contains("exact (tf 0.20%)"), "{text}");
        assert!(text.contains("missing (neutral)"), "{text}");
        assert!(text.contains("-2.50"), "{text}");
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn long_values_are_cut_by_characters() {
        assert_eq!(cell("ééééé", 3), "éé…");
        assert_eq!(cell("abc", 3), "abc");
    }
}
