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
