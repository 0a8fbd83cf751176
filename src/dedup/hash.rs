//! A fast hash for the matcher's internal tables.
//!
//! The standard `HashMap` hashes with `SipHash`, which resists keys chosen to collide; these
//! tables hold short keys derived from the matcher's own data (level vectors, name keys,
//! blocking keys), looked up millions of times per run, where `SipHash`'s cost dominates.

use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-rotate hash over the key's bytes (in the manner of rustc's `FxHasher`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// The `BuildHasher` of [`FastHasher`], for `HashMap::<K, V, FastHash>::default()`.
pub(crate) type FastHash = BuildHasherDefault<FastHasher>;

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn keys_that_differ_hash_apart_and_lookups_work() {
        let mut m: HashMap<String, usize, FastHash> = HashMap::default();
        for i in 0..1000 {
            m.insert(format!("key{i}"), i);
        }
        assert_eq!(m.get("key417"), Some(&417));
        assert_eq!(m.len(), 1000);
    }
}
