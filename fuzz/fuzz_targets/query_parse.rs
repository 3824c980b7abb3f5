//! Arbitrary text into the condition-language parser and the App API filter-JSON parser;
//! whatever parses must print back to text that parses to the same tree.
//!
//! Built from the parser's source alone (`src/query/ast.rs`, `parse.rs` and `src/fuzzing/query.rs`, which
//! name nothing else of the crate), not from the profiledb crate, so this target compiles
//! without sled: `cargo +nightly fuzz run query_parse --no-default-features`. The same
//! function is `profiledb::fuzzing::query_parse`, which the corpus replay test calls.
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::fuzz_target;

// The language alone: `src/query/`'s syntax tree and parser, under the paths they and
// the fuzz entry point use (`super::ast` from the parser, `crate::query` from the entry
// point); the language's evaluation needs the rest of the crate.
#[path = "../../src/query/ast.rs"]
mod ast;
#[path = "../../src/query/parse.rs"]
mod parse;

mod query {
    pub use super::ast::*;
    pub use super::parse::{parse, parse_filter_json, ParseError};
}

#[path = "../../src/fuzzing/query.rs"]
mod fuzzing_query;

fuzz_target!(|data: &[u8]| {
    fuzzing_query::query_parse(data);
});
