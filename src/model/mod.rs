//! Plain data types: values, identifiers, people, activity. No storage code here.

mod activity;
mod person;
mod value;

pub use activity::{kinds, Activity, ActivityCursor};
pub use person::{Ident, IdentKind, Person, PersonId};
pub use value::{Map, Value, MAX_DEPTH};
