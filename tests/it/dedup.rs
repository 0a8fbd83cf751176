//! Guards the matching engine's quality and its contract with the store: an unsupervised run
//! on FEBRL 1 (read from `../shared/data`) must keep its F1, a saved model must score as the
//! trained one does, explanations must add up, and matching must be deterministic.

use std::path::Path;

use chrono::NaiveDate;
use std::sync::OnceLock;

use customerdb::dedup::{BlockingRule, MatchRecord, Matcher, Model, Run, cluster, eval};
use customerdb::{AddressParts, Customer, Result, sample};

/// FEBRL 1 as comparison records and each record's true entity (`rec-<k>-...` is entity k).
fn febrl1() -> (Vec<MatchRecord>, Vec<String>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/febrl/febrl1.csv");
    let mut reader = csv::Reader::from_path(path).unwrap();
    let mut records = Vec::new();
    let mut truth = Vec::new();
    for row in reader.records() {
        let row = row.unwrap();
        let cell = |i: usize| row.get(i).unwrap_or("").trim().to_owned();
        let mut b = Customer::builder()
            .given_name(cell(1))
            .family_name(cell(2))
            .attribute("soc_sec_id", cell(10));
        if let Ok(d) = NaiveDate::parse_from_str(&cell(9), "%Y%m%d") {
            b = b.birth_date(d);
        }
        let address = AddressParts {
            lines: vec![format!("{} {}", cell(3), cell(4)), cell(5)],
            locality: Some(cell(6)),
            region: Some(cell(8)),
            postcode: Some(cell(7)),
            country: Some("AU".into()),
        };
        // A postcode that does not fit drops the address here; the example keeps the rest.
        let (customer, _refused) = b.address(address).build_lenient();
        records.push(MatchRecord::new(&customer));
        truth.push(cell(0).split('-').nth(1).unwrap_or("").to_owned());
    }
    (records, truth)
}

/// One unsupervised run over FEBRL 1, shared by the tests that read it.
fn febrl1_run() -> &'static (Vec<MatchRecord>, Vec<String>, Run) {
    static RUN: OnceLock<(Vec<MatchRecord>, Vec<String>, Run)> = OnceLock::new();
    RUN.get_or_init(|| {
        let (records, truth) = febrl1();
        let run = Matcher::default()
            .attribute("soc_sec_id")
            .run(&records)
            .unwrap();
        (records, truth, run)
    })
}

#[test]
fn febrl1_unsupervised_f1_stays_above_its_gate() {
    let (records, truth, run) = febrl1_run();
    assert_eq!(records.len(), 1000);
    let blocking = eval::blocking(&run.candidates, truth);
    assert_eq!(blocking.true_pairs, 500);
    assert!(blocking.pair_completeness() > 0.98, "{blocking:?}");
    assert!(blocking.reduction_ratio() > 0.99, "{blocking:?}");
    let pairs = eval::pairwise(run.clusters.labels(), truth);
    assert!(pairs.f1() > 0.98, "FEBRL 1: {pairs}");
    assert!(eval::b_cubed(run.clusters.labels(), truth).f1() > 0.98);
    // Every EM session converged, and the attribute rule pulled its weight.
    assert!(run.training.sessions.iter().all(|s| s.converged));
    let report = run.candidates.report();
    assert!(
        report
            .rules
            .iter()
            .any(|r| r.rule.name() == "attribute:soc_sec_id" && r.pairs > 0)
    );
}

#[test]
fn a_saved_model_scores_like_the_trained_one() {
    let (records, _, run) = febrl1_run();
    let bytes = postcard::to_allocvec(&run.model).unwrap();
    let loaded: Model = postcard::from_bytes(&bytes).unwrap();
    for p in run.pairs().take(200) {
        assert_eq!(loaded.score(&records[p.a], &records[p.b]), p.score);
    }
}

#[test]
fn explanations_add_up_to_the_scores() {
    let (records, _, run) = febrl1_run();
    for p in run.pairs().take(300) {
        let e = run.model.explain(&records[p.a], &records[p.b]);
        let sum = e.terms.iter().fold(e.prior, |w, t| w + t.weight);
        assert_eq!(sum.to_bits(), p.score.weight.to_bits());
        assert_eq!(e.terms.len(), run.model.comparisons().len());
        assert!(e.terms.iter().all(|t| t.level.is_some() || t.weight == 0.0));
    }
    let text = run.model.explain(&records[0], &records[1]).to_string();
    assert!(
        text.contains("given name") && text.contains("total"),
        "{text}"
    );
}

#[test]
fn matching_is_deterministic_and_labels_fix_households() -> Result<()> {
    // Generated customers, each tenth entered again with its email in upper case and a
    // one-letter typo in the family name. About 5% of generated customers share phone,
    // family name and address with another (a household): unsupervised, those look like
    // duplicates.
    let people = sample::generate(7, 400);
    let mut records = Vec::new();
    let mut truth = Vec::new();
    for (i, p) in people.iter().enumerate() {
        records.push(MatchRecord::new(&p.to_builder().build()?));
        truth.push(i);
        if i % 10 == 0 {
            let mut again = p.clone();
            again.email = again.email.to_uppercase();
            again.family_name.push('e');
            records.push(MatchRecord::new(&again.to_builder().build()?));
            truth.push(i);
        }
    }
    let first = Matcher::default().run(&records)?;
    let second = Matcher::default().run(&records)?;
    assert_eq!(first.model, second.model);
    assert_eq!(first.clusters, second.clusters);
    let unsupervised = eval::pairwise(first.clusters.labels(), &truth);
    assert!(unsupervised.recall() > 0.99, "{unsupervised}");
    assert!(unsupervised.f1() > 0.85, "{unsupervised}");

    // A reviewer decides ten candidate pairs: the first five of each kind.
    let mut model = first.model.clone();
    let (records, truth) = (&records, &truth);
    let mut decided: Vec<(&MatchRecord, &MatchRecord, bool)> = Vec::new();
    for same in [true, false] {
        let confident = first
            .pairs()
            .filter(|p| (truth[p.a] == truth[p.b]) == same && p.score.probability > 0.5);
        decided.extend(
            confident
                .take(5)
                .map(|p| (&records[p.a], &records[p.b], same)),
        );
    }
    assert_eq!(model.train_with_labels(decided, 5.0), (5, 5));
    let pairs = model.score_pairs(records, &first.candidates);
    let settings = Matcher::default().clustering;
    let clusters = cluster(records.len(), &pairs, &settings, |a, b| {
        model.score(&records[a], &records[b]).probability
    });
    let supervised = eval::pairwise(clusters.labels(), truth);
    assert!(
        supervised.f1() > unsupervised.f1(),
        "{supervised} vs {unsupervised}"
    );
    assert!(supervised.precision() > 0.95, "{supervised}");
    Ok(())
}

#[test]
fn blocking_keys_are_the_store_facing_contract() -> Result<()> {
    let c = Customer::builder()
        .name("Ada Lovelace")
        .email("Ada@Example.org")
        .birth_date(NaiveDate::from_ymd_opt(1815, 12, 10).unwrap())
        .address(AddressParts {
            postcode: Some("sw1a 1aa".into()),
            country: Some("GB".into()),
            ..AddressParts::default()
        })
        .build()?;
    let r = MatchRecord::new(&c);
    assert_eq!(BlockingRule::Email.keys(&r), ["ada@example.org"]);
    assert_eq!(
        BlockingRule::BirthDatePostcode.keys(&r),
        ["1815-12-10|SW1A1AA"]
    );
    assert_eq!(
        BlockingRule::BirthDateGivenInitial.keys(&r),
        ["1815-12-10|a"]
    );
    assert!(BlockingRule::Phone.keys(&r).is_empty());
    Ok(())
}
