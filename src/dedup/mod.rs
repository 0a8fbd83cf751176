//! Duplicate detection: blocking, comparison, Fellegi-Sunter scoring, explanation and
//! clustering, as pure functions over customers held in memory.
//!
//! Nothing here touches the store. A customer becomes a [`MatchRecord`] (its values
//! normalised once); [`BlockingRule`]s give each record keys, and a [`Blocker`] pairs the
//! records that share one ([`Candidates`]); each [`Comparison`] grades a field of a pair into
//! a level; a [`Model`] turns levels into a match weight and probability, learned without
//! labels and refined with human decisions; [`Model::explain`] shows every term of a score;
//! [`cluster`] groups scored pairs into entities without chaining unrelated people. A
//! [`Matcher`] runs the lot, and [`eval`] measures it against known answers.
//!
//! ```
//! use customerdb::Customer;
//! use customerdb::dedup::{Matcher, MatchRecord};
//!
//! let people = [
//!     ("Robert", "Smith", "bob.smith@example.org"),
//!     ("Bob", "Smith", "bob.smith@example.org"),
//!     ("Alice", "Jones", "alice@example.org"),
//! ];
//! let records: Vec<MatchRecord> = people
//!     .iter()
//!     .map(|(g, f, e)| {
//!         let c = Customer::builder().given_name(*g).family_name(*f).email(*e).build()?;
//!         Ok(MatchRecord::new(&c))
//!     })
//!     .collect::<customerdb::Result<_>>()?;
//! let run = Matcher::default().run(&records)?;
//! let why = run.model.explain(&records[0], &records[1]);
//! assert_eq!(why.terms[0].level, Some("nickname"));
//! println!("{why}");
//! # Ok::<(), customerdb::Error>(())
//! ```
//!
//! The store keeps the same keys in its indexes, so it can find a new customer's candidates
//! by looking up [`BlockingRule::keys`] and score them with a saved [`Model`].

mod block;
mod cluster;
mod compare;
pub mod eval;
mod explain;
mod hash;
mod jaro;
mod matcher;
mod model;
mod nickname;
mod record;

pub use block::{
    Blocker, BlockingReport, BlockingRule, CandidatePair, Candidates, DEFAULT_MAX_BLOCK_SIZE,
    DEFAULT_WINDOW, MAX_RULES, RuleReport,
};
pub use cluster::{ClusterReport, ClusterSettings, Clusters, cluster};
pub use compare::Comparison;
pub use explain::{Explanation, Term};
pub use matcher::{Matcher, Run, Timings};
pub use model::{
    ComparisonParams, EmSession, LevelParams, MAX_TERMS, Model, Score, ScoredPair, TermFrequencies,
    TrainReport, Training, probability, weight_of,
};
pub use nickname::{are_nicknames, nickname_names};
pub use record::{MatchRecord, Values};
