//! What the benches share: the data size, where stores live, the page cache and criterion's
//! settings. Each bench includes it with `mod common;`, so not every bench uses every item.

#![allow(dead_code)]

use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use tempfile::TempDir;

/// Page cache for every engine of every bench.
pub const CACHE_BYTES: usize = 256 << 20;

/// A criterion group of one workload, each engine a function of it.
pub type Group<'c> = criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>;

/// Customers to generate: `CUSTOMERDB_BENCH_N`, else `default`.
pub fn n(default: usize) -> usize {
    std::env::var("CUSTOMERDB_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A temporary directory under the target directory: a real disk, never tmpfs.
pub fn temp_dir() -> TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A SQLite database `customers.sqlite` in `dir`, in WAL mode (checked) with
/// `synchronous = NORMAL` and the shared page cache size.
pub fn open_sqlite(dir: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.join("customers.sqlite")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{};",
        CACHE_BYTES / 1024
    ))
    .unwrap();
    conn
}

/// A group with 10 flat samples, a second of warm-up and `measurement_secs` of measurement.
pub fn configure<'c>(c: &'c mut Criterion, name: &str, measurement_secs: u64) -> Group<'c> {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(measurement_secs));
    group
}

/// The bytes of the files directly in `dir` (a store's database, SQLite's database and WAL).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .sum()
}
