//! Segments on generated customers: each query runs through the planner and, for comparison,
//! as a naive filter over every customer (the answers must agree); then a plan is explained and
//! aggregates are computed.
//!
//! `cargo run --release --example segments` (set `SEGMENTS_N` for another size).

use std::time::Instant;

use chrono::{TimeDelta, TimeZone, Utc};
use customerdb::query::{Field, Query};
use customerdb::{
    Activity, Channel, Consent, ConsentStatus, Currency, CustomerId, Read, Result, Store, sample,
};
use rust_decimal::Decimal;

fn main() -> Result<()> {
    let n: usize = std::env::var("SEGMENTS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let store = Store::in_memory()?;
    let eur = Currency::parse("EUR")?;
    let t = Instant::now();
    let mut tx = store.begin_write()?;
    for (i, p) in sample::generate(7, n).iter().enumerate() {
        let k = i64::try_from(i).unwrap_or(0);
        let mut b = p.to_builder();
        if i % 3 == 0 {
            let at = now - TimeDelta::days(k % 300);
            b = b.consent(Consent::new(
                "marketing",
                Channel::Email,
                ConsentStatus::Granted,
                at,
                "web",
            ));
        }
        let id = tx.insert(b)?;
        for j in 0..(k * 7919 % 11).saturating_sub(5) {
            let at = now - TimeDelta::days((k * 31 + j * 97) % 400);
            tx.add_activity(
                id,
                Activity::purchase(at, 500 + (k * 13 + j * 701) % 20_000, eur),
            )?;
        }
    }
    tx.commit()?;
    println!("loaded {n} customers in {:.2} s", t.elapsed().as_secs_f64());

    let tx = store.begin_read()?;
    let queries = [
        r#"locality = "Berlin" and total_spend >= 15000"#,
        "last_purchase >= now - 90d and order_count >= 3 and consent(email, marketing)",
        r#"tag = "newsletter" and country = "DE""#,
        r#"birth_date < 1970-01-01 and family_name starts_with "M""#,
        r#"not (country in ("GB", "US")) and order_count < 1"#,
        r#"family_name ~ "Muller" within 1 or given_name sounds_like "Jon""#,
    ];
    for text in queries {
        let q = Query::parse(text)?.at(now);
        let t = Instant::now();
        let planned = q.ids(&tx)?;
        let planned_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let predicate = q.filter_ref().compile(Some(&tx.schema()?), now)?;
        let mut naive: Vec<CustomerId> = Vec::new();
        for rec in tx.customers()? {
            let rec = rec?;
            if predicate.matches(&rec, &tx.metrics(rec.id)?) {
                naive.push(rec.id);
            }
        }
        let scan_ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(planned, naive, "{text}");
        println!(
            "{:>6} customers  planned {planned_ms:>7.1} ms  full scan {scan_ms:>7.1} ms  {text}",
            planned.len()
        );
    }
    for text in &queries[..2] {
        println!("\n{}", Query::parse(text)?.at(now).explain(&tx)?);
    }

    let by_country = Query::all().group_by(&tx, &Field::Country, Some(&Field::TotalSpend))?;
    for g in by_country.iter().take(4) {
        let mean = g.summary.mean().unwrap_or_default().round_dp(0);
        println!(
            "{:?}: {} customers, mean spend {mean}",
            g.key, g.summary.customers
        );
    }
    let edges = [0, 1, 3, 5, 100].map(Decimal::from);
    let h = Query::all().histogram(&tx, &Field::OrderCount, &edges)?;
    println!("orders histogram {:?} over edges {:?}", h.counts, h.edges);
    let rfm = Query::parse("order_count >= 1")?.at(now).rfm(&tx)?;
    let champions = rfm.iter().filter(|s| s.r + s.f + s.m >= 14).count();
    println!(
        "{} buyers scored, {champions} champions (R+F+M >= 14)",
        rfm.len()
    );
    assert_eq!(h.counts.iter().sum::<u64>() + h.above + h.below, n as u64);
    Ok(())
}
