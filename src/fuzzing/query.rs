//! The `query_parse` fuzz entry point. It names only `crate::query` and `serde_json`, so
//! the fuzz crate can compile this file together with `src/query/` alone (by `#[path]`),
//! without the rest of profiledb and without sled: that target builds in a fraction of
//! the time.

use crate::query::{parse, parse_filter_json, Expr};

/// Arbitrary bytes into the condition-language parser (as text, lossily decoded) and, if
/// they are JSON, into the App API filter parser. Neither may panic; every tree either
/// returns prints as canonical text that parses back to the same tree.
///
/// # Panics
/// When a parsed tree does not survive printing and parsing again: a real bug.
pub fn query_parse(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(expr) = parse(&text) {
        round_trip(&expr, "text");
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if let Ok(expr) = parse_filter_json(&json) {
            round_trip(&expr, "filter JSON");
        }
    }
}

fn round_trip(expr: &Expr, from: &str) {
    let printed = expr.to_string();
    match parse(&printed) {
        Ok(again) => assert!(
            again == *expr,
            "a tree parsed from {from} prints as {printed:?}, which parses to a different \
             tree:\n{expr:?}\n{again:?}"
        ),
        Err(e) => panic!(
            "a tree parsed from {from} prints as {printed:?}, which does not parse ({e}):\n{expr:?}"
        ),
    }
}
