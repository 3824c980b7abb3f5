//! Plain data types: values, identifiers, people, activity, devices, deliveries, objects,
//! the profile overview. No storage code here.

mod activity;
mod person;
mod profile;
mod value;

pub use activity::{kinds, Activity, ActivityCursor, ActivityFilter, TrackKind};
pub use person::{Ident, IdentKind, Person, PersonId};
pub use profile::{
    Channel, Delivery, Device, DeviceStatus, Object, ObjectRef, Platform, Profile, Relationship,
    SegmentRef, Subscription, TopicState,
};
pub use value::{Map, Value, MAX_DEPTH};
