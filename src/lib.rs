//! # profiledb
//!
//! An embedded, on-disk database of people profiles, modelled on the People model of
//! Customer.io: identifiers, attributes and activity, kept in column families on
//! [sled](https://docs.rs/sled/0.34.7), keyed by a dense internal person id.
//!
//! It is a library first: a mobile or edge backend links it as its storage layer. It is
//! not a server and not a hosted product.
//!
//! ```
//! # fn main() -> Result<(), profiledb::Error> {
//! use profiledb::{Ident, Identify, Outcome, ProfileDb};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = ProfileDb::open(dir.path())?;
//!
//! // Add-or-update, with Customer.io's identity rules.
//! let created = db.identify(
//!     Identify::new(Ident::id("u-1"))
//!         .set("email", "Ann@Example.com")
//!         .set("plan", "pro")
//!         .set("cio_subscription_preferences.topics.topic_3", true),
//! )?;
//! assert!(matches!(created, Outcome::Created(_)));
//!
//! // A new id with an existing email updates that person, who gets the new id... only
//! // if they have none; here they do, so the change is refused and recorded.
//! let ann = db.person(&Ident::email("ann@example.com"))?.unwrap();
//! assert_eq!(ann.email.as_deref(), Some("Ann@Example.com")); // stored as given
//! assert_eq!(ann.attributes["plan"], "pro".into());
//!
//! // Every change is in the timeline, newest first.
//! let timeline = db.activities(&Ident::id("u-1"), &profiledb::ActivityFilter::new(10))?;
//! assert_eq!(timeline[0].kind, "attribute_change");
//! # Ok(()) }
//! ```
//!
//! ## Wire formats in, export out
//! [`ProfileDb::ingest`] reads the JSON real clients send: Track API v2 entities and
//! batches, Data Pipelines (Segment-spec) calls and batches, and reporting-webhook
//! delivery events ([`ingest`] lists every shape). [`ProfileDb::export`] writes the whole
//! database as JSON lines that `ingest` restores into an equal database ([`dump`]).
//!
//! ## Limits
//! Inputs are checked against [`Limits`] (Customer.io's published limits by default:
//! identifiers and attribute names 150 bytes, attribute values 1000 bytes, 300 attributes
//! per person) before anything is written; a refusal is an [`Error::Input`] naming the
//! field and the reason.
//!
//! ## Durability and atomicity
//! Every write is atomic across every family it touches, and a batch
//! ([`ProfileDb::write_batch`]) is one atomic unit. With [`Durability::Flush`] (the
//! default) a write is fsynced before it returns; with [`Durability::Buffered`] it is
//! durable after [`ProfileDb::flush`]. The details are in [`db`].
//!
//! ## Errors and damage
//! No panic escapes the public API. A damaged record is [`Error::Corrupted`] naming the
//! family and key; sled recovering less than was durable is [`Error::DataLoss`].
//!
//! ## On-disk format
//! Format version [`FORMAT_VERSION`]; byte-exact in `src/store/FORMAT.md`. A database of
//! another version is refused at open, unmodified.

pub mod activity;
pub mod audience;
pub mod clock;
mod commit_file;
pub mod counts;
pub mod db;
pub mod deliveries;
pub mod devices;
pub mod dump;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod index;
pub mod ingest;
pub mod limits;
pub mod merge;
pub mod model;
pub mod people;
pub mod profile;
pub mod query;
pub mod relations;
pub mod segments;
pub mod store;
pub mod synth;
pub mod workspace;

#[cfg(feature = "server")]
pub mod server;

pub use activity::Track;
pub use deliveries::{Metric, NewDelivery};
pub use devices::{DeviceInput, PushResult};
pub use ingest::{Rejection, Report};

pub use clock::{Clock, ManualClock, SystemClock};
pub use counts::Counts;
pub use db::{Builder, Durability, Op, ProfileDb, Stats, VerifyReport, FORMAT_VERSION};
pub use error::{Error, InputError, InputReason, OpenError, Result, StorageError};
pub use limits::Limits;
pub use model::{
    kinds, Activity, ActivityCursor, ActivityFilter, Channel, Delivery, Device, DeviceStatus,
    Ident, IdentKind, Map, Object, ObjectRef, Person, PersonId, Platform, Profile, Relationship,
    SegmentRef, Subscription, TopicState, TrackKind, Value,
};
pub use people::{Identify, IgnoreReason, Outcome};
pub use store::kv::Faults;
pub use store::Family;
pub use workspace::{Audience, PersonSummary, RefreshReport, SegmentInfo};
