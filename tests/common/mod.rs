//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use profiledb::{Durability, Error, Family, ManualClock, ProfileDb};

/// The fixed "now" of the tests: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;

/// A fresh database in a temp dir, with a manual clock at [`T0`] and buffered writes.
pub fn open() -> (tempfile::TempDir, ProfileDb, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = ProfileDb::builder()
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    (dir, db, clock)
}

/// The field an input error names; panics on any other error.
pub fn input_field(e: &Error) -> String {
    e.input()
        .unwrap_or_else(|| panic!("expected an input error, got {e}"))
        .field
        .clone()
}

/// Every record of every family, as (family, key, value): compare two of these to show
/// that an operation wrote nothing.
pub fn all_records(db: &ProfileDb) -> Vec<(Family, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for &family in Family::ALL {
        for (k, v) in db.raw_records(family).unwrap() {
            out.push((family, k, v));
        }
    }
    out
}

/// The sequence number the `COMMIT` file records: the larger of its two valid 12-byte
/// slots (`[seq u64 BE][crc32(seq) ^ 0xFFFF_FFFF u32 BE]`; FORMAT.md).
pub fn commit_file_seq(dir: &std::path::Path) -> u64 {
    let bytes = std::fs::read(dir.join("COMMIT")).unwrap();
    assert_eq!(bytes.len(), 24, "COMMIT is two 12-byte slots");
    bytes
        .chunks(12)
        .filter(|slot| *slot == commit_slot(u64::from_be_bytes(slot[..8].try_into().unwrap())))
        .map(|slot| u64::from_be_bytes(slot[..8].try_into().unwrap()))
        .max()
        .unwrap_or(0)
}

/// One `COMMIT` slot holding `seq`.
pub fn commit_slot(seq: u64) -> Vec<u8> {
    let mut out = seq.to_be_bytes().to_vec();
    out.extend_from_slice(&(crc32fast::hash(&seq.to_be_bytes()) ^ 0xFFFF_FFFF).to_be_bytes());
    out
}

/// Every record of every family, grouped by family (to say which family differs).
pub type Records = Vec<(Family, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every record, grouped by family.
pub fn records(db: &ProfileDb) -> Records {
    Family::ALL
        .iter()
        .map(|&f| (f, db.raw_records(f).unwrap()))
        .collect()
}

/// Every record but the bitmaps' (chunks and log), grouped by family: what a fold of the
/// bitmap log leaves unchanged.
pub fn records_but_bitmaps(db: &ProfileDb) -> Records {
    records(db)
        .into_iter()
        .filter(|(f, _)| !matches!(f, Family::Bitmaps | Family::BitmapLog))
        .collect()
}

/// A small seeded generator (xorshift64*), for tests that pick positions and moments.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The ids of the people `condition` selects (up to 100,000), sorted.
pub fn ids(db: &ProfileDb, condition: &str) -> Vec<String> {
    let mut out: Vec<String> = db
        .query(condition, 100_000, None)
        .unwrap()
        .people
        .into_iter()
        .filter_map(|p| p.id)
        .collect();
    out.sort();
    out
}

/// Copies the directory tree `from` to `to` (created when missing).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
