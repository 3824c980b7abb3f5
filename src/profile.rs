//! Reads of a person's profile: the timeline, deliveries, devices, relationships, and
//! the one-call overview of everything the People page shows; plus `expire`.
//!
//! Every read resolves the identifier once and then reads each family it needs with one
//! range scan over the person's key prefix (or one point read), decoding each record
//! once. The overview holds the commit gate for its duration, so it never sees half of a
//! commit.

use std::ops::Bound;

use crate::db::ProfileDb;
use crate::error::Result;
use crate::index::hour_of;
use crate::model::{
    Activity, ActivityCursor, ActivityFilter, Delivery, Device, DeviceStatus, Ident, Map, Object,
    ObjectRef, PersonId, Platform, Profile, Relationship, Subscription, TrackKind,
};
use crate::store::{
    corrupted, pid_key, ActivityF, AnonymousF, DeliveriesF, DeliveryIdsF, DeviceTokensF, DevicesF,
    EventIdsF, Family, KeyBuf, MembersF, ObjectTypesF, ObjectsF, PeopleF, RelationshipsF, Store,
};

/// Reads up to `filter.limit` timeline entries of `pid`, newest first.
fn timeline(store: &Store, pid: u32, filter: &ActivityFilter) -> Result<Vec<Activity>> {
    let prefix = pid_key(pid);
    let lower = match filter.since {
        Some(t) => Bound::Included(KeyBuf::new().u32(pid).time(t).done()),
        None => Bound::Included(prefix.clone()),
    };
    let mut upper = match filter.until {
        Some(t) => Bound::Excluded(KeyBuf::new().u32(pid).time(t).done()),
        None => match pid.checked_add(1) {
            Some(next) => Bound::Excluded(pid_key(next)),
            None => Bound::Unbounded,
        },
    };
    if let Some(c) = filter.before {
        let key = ActivityF::key(pid, c.timestamp, c.seq);
        let tighter = match &upper {
            Bound::Excluded(u) => key < *u,
            _ => true,
        };
        if tighter {
            upper = Bound::Excluded(key);
        }
    }
    let mut out = Vec::new();
    if filter.limit == 0 {
        return Ok(out);
    }
    for item in store.kv().range(Family::Activity, (lower, upper), true) {
        let (key, value) = item?;
        let (_, timestamp, seq) = ActivityF::decode_key(&key)?;
        let rec = crate::store::decode_value::<ActivityF>(&key, &value)?;
        if !filter.matches(&rec.kind, rec.name.as_deref()) {
            continue;
        }
        out.push(Activity {
            kind: rec.kind,
            name: rec.name,
            timestamp,
            data: rec.data,
            cursor: ActivityCursor { timestamp, seq },
        });
        if out.len() >= filter.limit {
            break;
        }
    }
    Ok(out)
}

fn deliveries_of(store: &Store, pid: u32, limit: usize) -> Result<Vec<Delivery>> {
    let mut out = Vec::new();
    for item in store
        .scan::<DeliveriesF>(&pid_key(pid), true, None)
        .take(limit)
    {
        let (key, rec) = item?;
        let (_, created, id) = DeliveriesF::decode_key(&key)?;
        out.push(rec.into_delivery(id, created));
    }
    Ok(out)
}

fn devices_of(store: &Store, pid: u32) -> Result<Vec<Device>> {
    let mut out = Vec::new();
    for item in store.scan::<DevicesF>(&pid_key(pid), false, None) {
        let (key, rec) = item?;
        let platform = Platform::parse(&rec.platform).ok_or_else(|| {
            corrupted(
                Family::Devices,
                &key,
                format!("unknown platform `{}`", rec.platform),
            )
        })?;
        out.push(Device {
            token: DevicesF::token_of(&key)?,
            platform,
            last_used: rec.last_used,
            status: DeviceStatus::parse(&rec.status),
            attributes: rec.attributes,
        });
    }
    Ok(out)
}

fn relationships_of(store: &Store, pid: u32) -> Result<Vec<Relationship>> {
    let mut out = Vec::new();
    for item in store.scan::<RelationshipsF>(&pid_key(pid), false, None) {
        let (key, rec) = item?;
        let (_, type_id, object_id) = RelationshipsF::decode_key(&key)?;
        let object_attributes = store
            .get::<ObjectsF>(&ObjectsF::key(type_id, &object_id))?
            .map(|o| o.attributes)
            .unwrap_or_default();
        out.push(Relationship {
            object: ObjectRef::new(type_id, object_id),
            object_attributes,
            attributes: rec.attributes,
        });
    }
    Ok(out)
}

impl ProfileDb {
    /// Everything the People page shows for the person `ident` names, in the page's
    /// order: subscription, identifiers and attributes, the `recent` newest activities,
    /// the `recent` newest deliveries, segments, devices, relationships. `None` for an
    /// unknown person.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// let profile = db.profile(&Ident::id("u-1"), 20)?.expect("u-1 exists");
    /// assert_eq!(profile.person.attributes["plan"], "pro".into());
    /// assert_eq!(profile.activities[0].kind, "attribute_change");
    /// assert!(db.profile(&Ident::id("nobody"), 20)?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a malformed identifier;
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn profile(&self, ident: &Ident, recent: usize) -> Result<Option<Profile>> {
        let bitmaps = self.read_gate();
        let Some(pid) = self.resolve(ident)? else {
            return Ok(None);
        };
        let Some(person) = self.load_person(pid)? else {
            return Ok(None);
        };
        let store = &self.inner.store;
        Ok(Some(Profile {
            subscription: Subscription {
                unsubscribed: person.unsubscribed(),
                topics: self.topics_of(pid, &bitmaps),
            },
            activities: timeline(store, pid, &ActivityFilter::new(recent))?,
            deliveries: deliveries_of(store, pid, recent)?,
            segments: self.segments_of(pid, &bitmaps),
            devices: devices_of(store, pid)?,
            relationships: relationships_of(store, pid)?,
            person,
        }))
    }

    /// The person's timeline, newest first, as `filter` selects (type, name, time range,
    /// cursor). An unknown person has none.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{ActivityFilter, Ident, ProfileDb, Track};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.track(Track::event(Ident::id("u-1"), "purchase").timestamp(100))?;
    /// db.track(Track::page(Ident::id("u-1"), "/pricing").timestamp(200))?;
    /// let events = db.activities(&Ident::id("u-1"), &ActivityFilter::new(10).kind("event"))?;
    /// assert_eq!(events.len(), 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`profile`](ProfileDb::profile).
    pub fn activities(&self, ident: &Ident, filter: &ActivityFilter) -> Result<Vec<Activity>> {
        let _gate = self.read_gate();
        match self.resolve(ident)? {
            Some(pid) => timeline(&self.inner.store, pid, filter),
            None => Ok(Vec::new()),
        }
    }

    /// How many times the person tracked `name` (of `kind`) at or after `since` and
    /// before `until`: a range scan of the person's timeline over that time range.
    ///
    /// # Errors
    /// As [`profile`](ProfileDb::profile).
    pub fn event_count(
        &self,
        ident: &Ident,
        kind: TrackKind,
        name: &str,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<u64> {
        let _gate = self.read_gate();
        let Some(pid) = self.resolve(ident)? else {
            return Ok(0);
        };
        let bound = |t: i64| ActivityF::key(pid, t, 0);
        let lower = Bound::Included(bound(since.unwrap_or(i64::MIN)));
        let upper = match until {
            Some(t) => Bound::Excluded(bound(t)),
            None => crate::store::prefix_end(&pid_key(pid)),
        };
        let mut n = 0;
        for item in self
            .inner
            .store
            .kv()
            .range(Family::Activity, (lower, upper), false)
        {
            let (key, value) = item?;
            let rec = crate::store::decode_value::<ActivityF>(&key, &value)?;
            if rec.tracked() == Some((kind.as_str(), name)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Events kept for an anonymous id nobody has yet, newest first.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn anonymous_events(&self, anonymous_id: &str, limit: usize) -> Result<Vec<Activity>> {
        let mut out = Vec::new();
        for item in self
            .inner
            .store
            .scan::<AnonymousF>(&AnonymousF::prefix(anonymous_id), true, None)
            .take(limit)
        {
            let (key, rec) = item?;
            let (_, timestamp, seq) = AnonymousF::decode_key(&key)?;
            out.push(Activity {
                kind: rec.kind,
                name: rec.name,
                timestamp,
                data: rec.data,
                cursor: ActivityCursor { timestamp, seq },
            });
        }
        Ok(out)
    }

    /// The person's `limit` most recent deliveries, newest first.
    ///
    /// # Errors
    /// As [`profile`](ProfileDb::profile).
    pub fn deliveries(&self, ident: &Ident, limit: usize) -> Result<Vec<Delivery>> {
        let _gate = self.read_gate();
        match self.resolve(ident)? {
            Some(pid) => deliveries_of(&self.inner.store, pid, limit),
            None => Ok(Vec::new()),
        }
    }

    /// The delivery with id `id`, and whose it is.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn delivery(&self, id: &str) -> Result<Option<(PersonId, Delivery)>> {
        let _gate = self.read_gate();
        let store = &self.inner.store;
        let Some((pid, created)) = store.get::<DeliveryIdsF>(id.as_bytes())? else {
            return Ok(None);
        };
        let key = DeliveriesF::key(pid, created, id);
        Ok(store
            .get::<DeliveriesF>(&key)?
            .map(|rec| (PersonId(pid), rec.into_delivery(id.to_owned(), created))))
    }

    /// The person's devices, by token.
    ///
    /// # Errors
    /// As [`profile`](ProfileDb::profile).
    pub fn devices(&self, ident: &Ident) -> Result<Vec<Device>> {
        let _gate = self.read_gate();
        match self.resolve(ident)? {
            Some(pid) => devices_of(&self.inner.store, pid),
            None => Ok(Vec::new()),
        }
    }

    /// Who owns device `token`.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn device_owner(&self, token: &str) -> Result<Option<PersonId>> {
        Ok(self
            .inner
            .store
            .get::<DeviceTokensF>(token.as_bytes())?
            .map(PersonId))
    }

    /// The person's relationships, with each object's attributes.
    ///
    /// # Errors
    /// As [`profile`](ProfileDb::profile).
    pub fn relationships(&self, ident: &Ident) -> Result<Vec<Relationship>> {
        let _gate = self.read_gate();
        match self.resolve(ident)? {
            Some(pid) => relationships_of(&self.inner.store, pid),
            None => Ok(Vec::new()),
        }
    }

    /// An object and its attributes.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn object(&self, object: &ObjectRef) -> Result<Option<Object>> {
        Ok(self
            .inner
            .store
            .get::<ObjectsF>(&ObjectsF::key(object.type_id, &object.object_id))?
            .map(|rec| Object {
                object: object.clone(),
                attributes: rec.attributes,
                created: rec.created,
                updated: rec.updated,
            }))
    }

    /// The people related to `object`, with each relationship's attributes.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn object_people(&self, object: &ObjectRef) -> Result<Vec<(PersonId, Map)>> {
        let _gate = self.read_gate();
        let store = &self.inner.store;
        let mut out = Vec::new();
        for key in store.keys(
            Family::Members,
            &MembersF::prefix(object.type_id, &object.object_id),
        )? {
            let (_, _, pid) = MembersF::decode_key(&key)?;
            let attrs = store
                .get::<RelationshipsF>(&RelationshipsF::key(
                    pid,
                    object.type_id,
                    &object.object_id,
                ))?
                .map(|r| r.attributes)
                .unwrap_or_default();
            out.push((PersonId(pid), attrs));
        }
        Ok(out)
    }

    /// Every object type: (id, name).
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a record is damaged.
    pub fn object_types(&self) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        for item in self.inner.store.scan::<ObjectTypesF>(&[], false, None) {
            let (key, rec) = item?;
            let (id, r) = crate::store::KeyReader::new(Family::ObjectTypes, &key).u32()?;
            r.end()?;
            out.push((id, rec.name));
        }
        Ok(out)
    }

    /// Deletes every activity entry, event id and anonymous event older than `before`
    /// (unix seconds), with their rows of the event blocks, in commits of at most 10,000
    /// keys. Returns how many timeline and anonymous events were removed. Nothing expires
    /// unless this (or [`apply_retention`](ProfileDb::apply_retention)) is called.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when reading or committing fails;
    /// [`Error::Corrupted`](crate::Error::Corrupted) when a timeline entry to expire is
    /// damaged.
    pub fn expire(&self, before: i64) -> Result<u64> {
        let store = &self.inner.store;
        let mut doomed: Vec<(Family, Vec<u8>)> = Vec::new();
        let mut removed = 0u64;
        let all = || (Bound::<Vec<u8>>::Unbounded, Bound::<Vec<u8>>::Unbounded);
        // The timeline's entries before `before`; a tracked event's also says which
        // (kind, name, hour) bitmaps to re-check.
        type Event = (String, String, i64);
        let mut gone: Vec<(Vec<u8>, u32, Option<Event>)> = Vec::new();
        for item in store.kv().range(Family::Activity, all(), false) {
            let (key, value) = item?;
            let (pid, t, _) = ActivityF::decode_key(&key)?;
            if t < before {
                let rec = crate::store::decode_value::<ActivityF>(&key, &value)?;
                let event = rec
                    .tracked()
                    .map(|(kind, name)| (kind.to_owned(), name.to_owned(), hour_of(t)));
                gone.push((key, pid, event));
                removed += 1;
            }
        }
        for item in store.kv().range(Family::EventIds, all(), false) {
            let (key, value) = item?;
            let (t, _) = crate::store::decode_value::<EventIdsF>(&key, &value)?;
            if t < before {
                doomed.push((Family::EventIds, key));
            }
        }
        for item in store.kv().range(Family::Anonymous, all(), false) {
            let (key, _) = item?;
            if AnonymousF::decode_key(&key)?.1 < before {
                doomed.push((Family::Anonymous, key));
                removed += 1;
            }
        }
        for chunk in doomed.chunks(10_000) {
            self.commit_raw(|txn| {
                for (family, key) in chunk {
                    match family {
                        Family::EventIds => txn.delete::<EventIdsF>(key.clone()),
                        _ => txn.delete::<AnonymousF>(key.clone()),
                    }
                }
            })?;
        }
        // Rows of the event blocks: every block of a day that starts before `before` is
        // edited (read, its earlier rows removed, written back or deleted) inside the
        // write path, under the writer lock, so no commit in between is overwritten.
        use crate::store::{event_blocks::EventBlock, EventBlocksF};
        let mut blocks: Vec<(Vec<u8>, i64)> = Vec::new();
        for item in store.kv().range(Family::EventBlocks, all(), false) {
            let (key, _) = item?;
            let (_, _, day, _) = EventBlocksF::decode_key(&key)?;
            let start = crate::store::day_start(day).unwrap_or(i64::MAX);
            if start < before {
                blocks.push((key, start));
            }
        }
        for chunk in blocks.chunks(1_000) {
            self.run(|cx| {
                for (key, start) in chunk {
                    let Some(mut block) = cx.txn.get::<EventBlocksF>(key)? else {
                        continue;
                    };
                    let len = block.len();
                    let keep = |b: &EventBlock, at: usize| {
                        b.secs
                            .get(at)
                            .is_some_and(|s| start.saturating_add(i64::from(*s)) >= before)
                    };
                    let mut at = 0;
                    while at < block.len() {
                        if keep(&block, at) {
                            at += 1;
                        } else {
                            block.remove(at);
                        }
                    }
                    if block.is_empty() {
                        cx.txn.delete::<EventBlocksF>(key.clone());
                    } else if block.len() != len {
                        cx.txn.put::<EventBlocksF>(key.clone(), block);
                    }
                }
                Ok(())
            })?;
        }
        // The timeline goes through the write path, so the event bitmaps (hours, days) and the
        // segments that read these events follow in the same commits.
        for chunk in gone.chunks(10_000) {
            self.run(|cx| {
                for (key, pid, event) in chunk {
                    cx.txn.delete::<ActivityF>(key.clone());
                    let Some((kind, name, hour)) = event else {
                        continue;
                    };
                    if cx.txn.get::<PeopleF>(&pid_key(*pid))?.is_none() {
                        continue;
                    }
                    cx.touches
                        .of(*pid)
                        .events_gone
                        .insert((kind.clone(), name.clone(), *hour));
                }
                Ok(())
            })?;
        }
        Ok(removed)
    }

    /// Expires what is older than the configured retention
    /// ([`Builder::retention`](crate::Builder::retention)); does nothing when retention is
    /// unset (the default: keep everything).
    ///
    /// # Errors
    /// As [`expire`](ProfileDb::expire).
    pub fn apply_retention(&self) -> Result<u64> {
        match self.inner.config.retention {
            Some(secs) => self.expire(self.now().saturating_sub(secs)),
            None => Ok(0),
        }
    }
}
