//! Arbitrary bytes as one ingest message; the database must then pass `verify`.
//! See `profiledb::fuzzing::ingest_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    profiledb::fuzzing::ingest_json(data);
});
