//! The condition language: its syntax tree, and parsing text and App API filter JSON into it.
pub mod ast;
pub(crate) mod eval;
pub mod parse;
pub(crate) mod source;

pub use ast::*;
pub use parse::{parse, parse_filter_json, ParseError};
