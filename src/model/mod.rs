//! Plain data types: values, identifiers, people, activity, devices, deliveries, objects,
//! the profile overview. No storage code here.

mod activity;
mod outcome;
mod person;
mod profile;
mod value;

pub use activity::{kinds, Activity, ActivityCursor, ActivityFilter, TrackKind};
pub use outcome::{IgnoreReason, Outcome};
pub use person::{Ident, IdentKind, Person, PersonId};
pub use profile::{
    Channel, Delivery, Device, DeviceStatus, Object, ObjectRef, Platform, Profile, Relationship,
    SegmentRef, Subscription, TopicState,
};
pub(crate) use value::get_path;
pub use value::{Map, Value, MAX_DEPTH};
