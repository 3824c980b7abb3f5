//! Arbitrary text into the condition-language parser and the App API filter-JSON parser;
//! whatever parses must print back to text that parses to the same tree.
//!
//! Built from the parser's source alone (`src/query/` and `src/fuzzing/query.rs`, which
//! name nothing else of the crate), not from the profiledb crate, so this target compiles
//! without sled: `cargo +nightly fuzz run query_parse --no-default-features`. The same
//! function is `profiledb::fuzzing::query_parse`, which the corpus replay test calls.
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/query/mod.rs"]
mod query;

#[path = "../../src/fuzzing/query.rs"]
mod fuzzing_query;

fuzz_target!(|data: &[u8]| {
    fuzzing_query::query_parse(data);
});
