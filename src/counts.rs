//! Record counts per kind, for `profiledb stats`: how many objects, events, deliveries and
//! devices the database holds. Every commit keeps them in `meta/counters`, so reporting
//! them reads nothing; `verify` compares them with a key-only walk of each family.

use std::ops::Bound;

use crate::db::ProfileDb;
use crate::error::Result;
use crate::store::Family;

/// How many records of each kind the database holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// People.
    pub people: u64,
    /// Objects (of every object type).
    pub objects: u64,
    /// Events, page views and screen views: those in people's timelines plus those kept
    /// for anonymous ids nobody has yet.
    pub events: u64,
    /// Deliveries.
    pub deliveries: u64,
    /// Devices.
    pub devices: u64,
    /// Segments, manual and data-driven.
    pub segments: u64,
}

impl From<crate::store::records::RecordCounts> for Counts {
    fn from(c: crate::store::records::RecordCounts) -> Counts {
        Counts {
            people: c.people,
            objects: c.objects,
            events: c.events,
            deliveries: c.deliveries,
            devices: c.devices,
            segments: c.segments,
        }
    }
}

impl ProfileDb {
    /// How many records of each kind the database holds: counts every commit keeps in
    /// `meta/counters`, so this reads no records ([`verify`](ProfileDb::verify) checks
    /// them against a walk).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, ProfileDb, Track};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.track(Track::event(Ident::id("u-1"), "purchase"))?;
    /// let counts = db.counts()?;
    /// assert_eq!((counts.people, counts.events), (1, 1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// None today; kept for a store whose counts need reading.
    pub fn counts(&self) -> Result<Counts> {
        Ok(self.kept_counts().into())
    }

    /// Counts the records of each kind by walking the keys of their families (what
    /// [`counts`](ProfileDb::counts) keeps, the slow way: for `verify`).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when reading fails.
    pub(crate) fn walk_counts(&self) -> Result<Counts> {
        let kv = self.inner.store.kv();
        let count = |family: Family| -> Result<u64> {
            let mut n = 0u64;
            for item in kv.range(family, (Bound::Unbounded, Bound::Unbounded), false) {
                item?;
                n += 1;
            }
            Ok(n)
        };
        // Tracked events in the timelines (a decode each: `verify` only).
        let tracked = || -> Result<u64> {
            let mut n = 0u64;
            for item in kv.range(
                Family::Activity,
                (Bound::Unbounded, Bound::Unbounded),
                false,
            ) {
                let (key, value) = item?;
                // A damaged record is reported by `verify`'s record checks, not here.
                let rec = crate::store::decode_value::<crate::store::ActivityF>(&key, &value);
                n += u64::from(rec.is_ok_and(|r| r.tracked().is_some()));
            }
            Ok(n)
        };
        Ok(Counts {
            people: count(Family::People)?,
            objects: count(Family::Objects)?,
            events: tracked()? + count(Family::Anonymous)?,
            deliveries: count(Family::Deliveries)?,
            devices: count(Family::Devices)?,
            segments: count(Family::Segments)?,
        })
    }
}
