//! Stats, the fsck ([`ProfileDb::verify`]) and raw record access for tests and tools.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::index::{BitmapKey, Bitmaps};
use crate::store::{prefix_bounds, AttributesF, Family, PeopleF};

use super::ProfileDb;

/// Counts and sequence numbers, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// People stored.
    pub people: u64,
    /// Sequence number of the last commit.
    pub commit_seq: u64,
    /// Sequence number of the last commit known durable.
    pub durable_seq: u64,
    /// Bytes on disk, as sled counts them.
    pub size_on_disk: u64,
    /// Checkpoints this handle has run (see the [module docs](crate#checkpoints)).
    pub checkpoints: u64,
}

/// What [`ProfileDb::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records read, per family name.
    pub records: Vec<(&'static str, u64)>,
    /// Every problem found, one sentence each. Empty means the database is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl ProfileDb {
    /// Counts and sequence numbers.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when sled fails.
    pub fn stats(&self) -> Result<Stats> {
        let people = self
            .read_gate()
            .get(&BitmapKey::All)
            .map_or(0, roaring::RoaringBitmap::len);
        Ok(Stats {
            people,
            commit_seq: self.inner.committed.load(Ordering::SeqCst),
            durable_seq: self
                .inner
                .durable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .seq,
            size_on_disk: self.inner.store.kv().size_on_disk()?,
            checkpoints: self.inner.checkpoints.load(Ordering::Relaxed),
        })
    }

    /// The record counts kept in `meta/counters` as of the last commit.
    pub(crate) fn kept_counts(&self) -> crate::store::records::RecordCounts {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .counters
            .counts
    }

    /// Reads and checks every record of every family: envelopes, checksums, keys, and
    /// that identifiers, attributes and activity belong to people who exist.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when reading fails; damage is reported in the report, not as
    /// an error.
    pub fn verify(&self) -> Result<VerifyReport> {
        // The writer lock keeps commits (and folds) out while the records are read, so the
        // kept counts and the stored bitmaps are those of one state.
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let kept = writer.counters.counts;
        let bitmaps = self.read_gate();
        let kv = self.inner.store.kv();
        let mut report = VerifyReport::default();
        let mut people = std::collections::BTreeSet::new();
        for item in kv.range(
            Family::People,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
        ) {
            let (k, _) = item?;
            if let Ok(pid) = crate::store::pid_from_key(Family::People, &k) {
                people.insert(pid);
            }
        }
        for &family in Family::ALL {
            let mut n = 0u64;
            for item in kv.range(
                family,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                false,
            ) {
                let (k, v) = item?;
                n += 1;
                match family.check_record(&k, &v) {
                    Err(e) => report.problems.push(e.to_string()),
                    Ok(Some(pid)) if !people.contains(&pid) => report.problems.push(format!(
                        "family `{}` key {} belongs to person {pid}, who does not exist",
                        family.name(),
                        crate::store::codec::hex(&k)
                    )),
                    Ok(_) => {}
                }
            }
            report.records.push((family.name(), n));
        }
        if let Err(e) = self.verify_bitmaps(&bitmaps, &mut report.problems) {
            report.problems.push(e.to_string());
        }
        let walked = self.walk_counts()?;
        let kept = crate::counts::Counts::from(kept);
        if kept != walked {
            report.problems.push(format!(
                "the counts kept in meta/counters ({kept:?}) differ from the records ({walked:?})"
            ));
        }
        match crate::activity::verify_blocks(&self.inner.store) {
            Ok(found) => report.problems.extend(found),
            Err(e) => report.problems.push(e.to_string()),
        }
        drop(writer);
        let seq = self.inner.committed.load(Ordering::SeqCst);
        let durable = self
            .inner
            .durable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .seq;
        if durable > seq {
            report.problems.push(format!(
                "data loss: durable commit #{durable} but only #{seq} recovered"
            ));
        }
        if let Some(what) = &self.inner.salvaged {
            report.problems.push(what.clone());
        }
        Ok(report)
    }

    /// Checks the bitmaps against the data: the stored chunks with the `bitmap_log`
    /// replayed over them equal the in-memory bitmaps; every bitmap derived from people's attributes, devices, relationships and
    /// events holds exactly the people whose data puts them there; metric bitmaps hold at
    /// least everyone with such a metric (they are "ever" bitmaps).
    fn verify_bitmaps(&self, bitmaps: &Bitmaps, problems: &mut Vec<String>) -> Result<()> {
        use crate::index::{attribute_keys, BitmapKey as K};
        use std::collections::BTreeMap;
        let store = &self.inner.store;
        let (stored, _) = Bitmaps::load(store, self.inner.committed.load(Ordering::SeqCst))?;
        let mut keys: BTreeSet<&K> = bitmaps.keys().collect();
        keys.extend(stored.keys());
        if bitmaps.hours_from() != stored.hours_from() {
            problems.push(format!(
                "the per-hour event bitmaps begin on day {} in memory and on day {} in meta/buckets",
                bitmaps.hours_from(),
                stored.hours_from()
            ));
        }
        if bitmaps.heap_bytes() != bitmaps.recount_bytes() {
            problems.push(format!(
                "the bitmaps' memory is kept as {} bytes and counts {} bytes",
                bitmaps.heap_bytes(),
                bitmaps.recount_bytes()
            ));
        }
        for key in keys {
            if bitmaps.get(key) != stored.get(key) {
                problems.push(format!(
                    "bitmap {key:?} in memory differs from the stored chunks and log"
                ));
            }
        }
        let mut expected: BTreeMap<K, roaring::RoaringBitmap> = BTreeMap::new();
        let mut at_least: BTreeMap<K, roaring::RoaringBitmap> = BTreeMap::new();
        for item in store.scan::<PeopleF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::People, &key)?;
            let attrs = store.get::<AttributesF>(&key)?;
            let catalog = self.catalog();
            let mut derived = attribute_keys(
                Some(&rec),
                attrs.as_ref(),
                &catalog.indexed,
                &catalog.ranged,
            );
            drop(catalog);
            derived.insert(K::All);
            for item in store.scan::<crate::store::DevicesF>(&key, false, None) {
                derived.insert(K::Platform(item?.1.platform));
            }
            for item in store.scan::<crate::store::RelationshipsF>(&key, false, None) {
                let (rk, _) = item?;
                let (_, t, o) = crate::store::RelationshipsF::decode_key(&rk)?;
                derived.insert(K::Related(t, o));
                derived.insert(K::RelatedType(t));
            }
            for k in derived {
                expected.entry(k).or_default().insert(pid);
            }
            for item in store
                .kv()
                .range(Family::Activity, prefix_bounds(&key), false)
            {
                let (ak, value) = item?;
                // A damaged record is reported by the record checks, not here.
                let (Ok((_, t, _)), Ok(rec)) = (
                    crate::store::ActivityF::decode_key(&ak),
                    crate::store::decode_value::<crate::store::ActivityF>(&ak, &value),
                ) else {
                    continue;
                };
                let Some((kind, name)) = rec.tracked() else {
                    continue;
                };
                expected
                    .entry(crate::index::event_bucket(
                        kind,
                        name,
                        crate::index::hour_of(t),
                        bitmaps.hours_from(),
                    ))
                    .or_default()
                    .insert(pid);
                expected
                    .entry(K::Event(kind.to_owned(), name.to_owned()))
                    .or_default()
                    .insert(pid);
            }
            for item in store.scan::<crate::store::DeliveriesF>(&key, false, None) {
                for metric in item?.1.metrics.into_keys() {
                    at_least.entry(K::Metric(metric)).or_default().insert(pid);
                }
            }
        }
        let empty = roaring::RoaringBitmap::new();
        let all = bitmaps.get(&K::All).unwrap_or(&empty);
        for (key, bitmap) in bitmaps.iter() {
            let exact = !matches!(key, K::Metric(_) | K::Segment(_));
            if exact && expected.get(key) != Some(bitmap) && !bitmap.is_empty() {
                problems.push(format!("bitmap {key:?} does not match the people's data"));
            }
            if !bitmap.is_subset(all) {
                problems.push(format!("bitmap {key:?} holds people who do not exist"));
            }
        }
        for (key, want) in &expected {
            if bitmaps.get(key) != Some(want) {
                problems.push(format!(
                    "bitmap {key:?} is missing people its data puts there"
                ));
            }
        }
        for (key, want) in &at_least {
            if !want.is_subset(bitmaps.get(key).unwrap_or(&empty)) {
                problems.push(format!("bitmap {key:?} is missing people who had it"));
            }
        }
        Ok(())
    }

    /// Every raw (key, value) record of `family`, for diagnostics and tests.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when reading fails.
    #[cfg(feature = "__internal")]
    #[doc(hidden)]
    pub fn raw_records(&self, family: Family) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner
            .store
            .kv()
            .range(
                family,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                false,
            )
            .map(|r| r.map_err(crate::Error::from))
            .collect()
    }

    /// Overwrites one raw record, bypassing every check: for corruption tests only.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when writing fails.
    #[cfg(feature = "__internal")]
    #[doc(hidden)]
    pub fn raw_put(&self, family: Family, key: &[u8], value: &[u8]) -> Result<()> {
        let _writer = self.writer()?;
        let writes = crate::store::kv::WriteSet {
            families: vec![(family, vec![(key.to_vec(), Some(value.to_vec()))])],
        };
        self.inner.store.kv().commit(&writes)?;
        Ok(())
    }

    /// Removes one raw record, bypassing every check: for corruption tests only (with
    /// [`raw_put`](ProfileDb::raw_put), moves a record to a damaged key).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when writing fails.
    #[cfg(feature = "__internal")]
    #[doc(hidden)]
    pub fn raw_delete(&self, family: Family, key: &[u8]) -> Result<()> {
        let _writer = self.writer()?;
        let writes = crate::store::kv::WriteSet {
            families: vec![(family, vec![(key.to_vec(), None)])],
        };
        self.inner.store.kv().commit(&writes)?;
        Ok(())
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }
}
