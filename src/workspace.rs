//! The workspace-wide API: subscription topics, segments, audience queries, the people
//! list with search, the attribute catalogue, and declared attribute indexes.
//!
//! Everything here answers from the in-memory bitmaps first; per-person reads happen
//! only for conditions no bitmap answers, and only on the candidates the bitmaps leave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::MutexGuard;

use roaring::RoaringBitmap;

use crate::db::write::Writer;
use crate::db::ProfileDb;
use crate::error::{InputError, InputReason, Result};
use crate::index::{attribute_keys, chunk_of, BitmapKey, Bitmaps, Delta};
use crate::model::{Ident, IdentKind, PersonId, SegmentRef, TopicState};
use crate::query::eval::{eval, Cond, Explain, Trend};
use crate::query::source::Reader;
use crate::query::{parse, parse_filter_json, Expr};
use crate::segments::{
    canonical, check_name, compared_attributes, id_key, record_of, Catalog, Reads, SegmentDef,
};
use crate::store::bitmaps::encode_chunk;
use crate::store::records::{MetaValue, TopicRecord};
use crate::store::{
    ident_key, meta_keys, AttributesF, BitmapsF, Family, MetaF, PeopleF, SegmentsF, TopicsF,
};

/// How many people one `refresh` commit covers at most.
const REFRESH_COMMIT_PEOPLE: usize = 20_000;

/// One person in a query result or the people list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonSummary {
    /// The internal id (also the paging cursor).
    pub pid: PersonId,
    /// `cio_id`.
    pub cio_id: String,
    /// `id`, if set.
    pub id: Option<String>,
    /// `email`, if set.
    pub email: Option<String>,
}

/// An audience: how many people match, and one page of them in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// How many people match in all.
    pub count: u64,
    /// This page.
    pub people: Vec<PersonSummary>,
    /// Pass as `after` to read the next page; `None` on the last page.
    pub next: Option<PersonId>,
}

/// A segment as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// The condition (canonical text), for a data-driven segment.
    pub condition: Option<String>,
    /// How many members it has.
    pub members: u64,
}

/// What `refresh` changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Clock-dependent segments re-evaluated.
    pub segments: usize,
    /// People who entered one.
    pub entered: u64,
    /// People who left one.
    pub exited: u64,
}

/// Parses a condition in the text language, or (when it starts with `{`) Customer.io's
/// App-API filter JSON.
///
/// # Errors
/// [`Error::Input`](crate::Error::Input) on `condition`, with the position and what was
/// expected.
pub fn parse_condition(text: &str) -> Result<Expr> {
    let trimmed = text.trim_start();
    let parsed = if trimmed.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| {
            InputError::invalid("condition", format!("is not valid filter JSON: {e}"))
        })?;
        parse_filter_json(&json)
    } else {
        parse(text)
    };
    parsed.map_err(|e| InputError::invalid("condition", format!("does not parse: {e}")).into())
}

impl ProfileDb {
    fn summaries(&self, pids: impl Iterator<Item = u32>) -> Result<Vec<PersonSummary>> {
        let store = &self.inner.store;
        let mut out = Vec::new();
        for pid in pids {
            if let Some(rec) = store.get::<PeopleF>(&crate::store::pid_key(pid))? {
                out.push(PersonSummary {
                    pid: PersonId(pid),
                    cio_id: PersonId(pid).cio_id(),
                    id: rec.id,
                    email: rec.email,
                });
            }
        }
        Ok(out)
    }

    fn page(&self, set: &RoaringBitmap, limit: usize, after: Option<PersonId>) -> Result<Audience> {
        let start = after.map_or(0, |p| set.rank(p.0));
        let pids: Vec<u32> = (start..)
            .map_while(|i| u32::try_from(i).ok().and_then(|i| set.select(i)))
            .take(limit.saturating_add(1))
            .collect();
        let more = pids.len() > limit;
        let page: Vec<u32> = pids.into_iter().take(limit).collect();
        let next = if more {
            page.last().copied().map(PersonId)
        } else {
            None
        };
        Ok(Audience {
            count: set.len(),
            people: self.summaries(page.into_iter())?,
            next,
        })
    }

    /// Evaluates a parsed condition to its member bitmap, with how each atom was
    /// answered.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for unknown segments or topics.
    pub fn evaluate(&self, expr: &Expr) -> Result<(RoaringBitmap, Explain)> {
        let cond = self.catalog().resolve(expr)?;
        let bitmaps = self.read_gate();
        let empty = RoaringBitmap::new();
        let all = bitmaps.get(&BitmapKey::All).unwrap_or(&empty);
        let mut src = Reader::committed(&self.inner.store, &bitmaps);
        let mut explain = Explain::default();
        let set = eval(
            &cond,
            all,
            &bitmaps,
            &mut src,
            self.now(),
            &mut explain,
            &mut |_| {},
        )?;
        Ok((set, explain))
    }

    /// The people matching `condition` (the text language, or App-API filter JSON):
    /// the count, and up to `limit` people after `after`, in id order.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.identify(Identify::new(Ident::id("a")).set("plan", "pro"))?;
    /// db.identify(Identify::new(Ident::id("b")).set("plan", "free"))?;
    /// let pro = db.query(r#"attr.plan = "pro" and not unsubscribed"#, 10, None)?;
    /// assert_eq!(pro.count, 1);
    /// assert_eq!(pro.people[0].id.as_deref(), Some("a"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) on `condition` when it does not parse (with
    /// the position and what was expected) or names an unknown segment or topic.
    pub fn query(
        &self,
        condition: &str,
        limit: usize,
        after: Option<PersonId>,
    ) -> Result<Audience> {
        let expr = parse_condition(condition)?;
        let (set, _) = self.evaluate(&expr)?;
        self.page(&set, limit, after)
    }

    /// How many people match `condition`.
    ///
    /// # Errors
    /// As [`query`](ProfileDb::query).
    pub fn count(&self, condition: &str) -> Result<u64> {
        Ok(self.evaluate(&parse_condition(condition)?)?.0.len())
    }

    /// How `condition` would be answered: one line per atom, `index` or `scan of N
    /// candidates`.
    ///
    /// # Errors
    /// As [`query`](ProfileDb::query).
    pub fn explain(&self, condition: &str) -> Result<Explain> {
        Ok(self.evaluate(&parse_condition(condition)?)?.1)
    }

    /// The People page list: people whose `id` or `email` starts with `search` (emails
    /// in any case), who match `condition` if given, in id order, paged.
    ///
    /// # Errors
    /// As [`query`](ProfileDb::query).
    pub fn people_page(
        &self,
        search: Option<&str>,
        condition: Option<&str>,
        limit: usize,
        after: Option<PersonId>,
    ) -> Result<Audience> {
        let mut set = match condition {
            Some(c) => self.evaluate(&parse_condition(c)?)?.0,
            None => self
                .read_gate()
                .get(&BitmapKey::All)
                .cloned()
                .unwrap_or_default(),
        };
        if let Some(prefix) = search.filter(|p| !p.is_empty()) {
            let mut found = RoaringBitmap::new();
            for (kind, p) in [
                (IdentKind::Id, prefix.to_owned()),
                (IdentKind::Email, prefix.to_lowercase()),
            ] {
                let start = ident_key(kind, &p);
                for item in self
                    .inner
                    .store
                    .scan::<crate::store::IdentifiersF>(&start, false, None)
                {
                    found.insert(item?.1);
                }
            }
            set &= found;
        }
        self.page(&set, limit, after)
    }

    /// Every attribute name in use, with how many people have it (identifiers `id`,
    /// `email`, `phone` included), from the has-attribute bitmaps.
    pub fn attribute_catalogue(&self) -> Vec<(String, u64)> {
        let bitmaps = self.read_gate();
        let mut out: Vec<(String, u64)> = bitmaps
            .iter()
            .filter_map(|(k, b)| match k {
                BitmapKey::HasAttr(name) if !b.is_empty() => Some((name.clone(), b.len())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The attribute names in use in the workspace that the person does not have, as
    /// the Attributes tab lists them.
    ///
    /// # Errors
    /// As [`person`](ProfileDb::person).
    pub fn missing_attributes(&self, ident: &Ident) -> Result<Vec<String>> {
        let Some(pid) = self.resolve(ident)? else {
            return Ok(Vec::new());
        };
        let bitmaps = self.read_gate();
        let mut out: Vec<String> = bitmaps
            .iter()
            .filter_map(|(k, b)| match k {
                BitmapKey::HasAttr(name) if !b.is_empty() && !b.contains(pid) => Some(name.clone()),
                _ => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The segments (data-driven and manual) the person belongs to.
    ///
    /// # Errors
    /// As [`person`](ProfileDb::person).
    pub fn person_segments(&self, ident: &Ident) -> Result<Vec<SegmentRef>> {
        let Some(pid) = self.resolve(ident)? else {
            return Ok(Vec::new());
        };
        let bitmaps = self.read_gate();
        Ok(self.segments_of(pid, &bitmaps))
    }

    /// The segments `pid` belongs to.
    pub(crate) fn segments_of(&self, pid: u32, bitmaps: &Bitmaps) -> Vec<SegmentRef> {
        let catalog = self.catalog();
        catalog
            .segments
            .values()
            .filter(|s| bitmaps.contains(&BitmapKey::Segment(s.id), pid))
            .map(|s| SegmentRef {
                id: s.id,
                name: s.name.clone(),
                kind: if s.data_driven() {
                    "data_driven"
                } else {
                    "manual"
                }
                .to_owned(),
            })
            .collect()
    }

    /// Each topic's effective state for `pid`.
    pub(crate) fn topics_of(&self, pid: u32, bitmaps: &Bitmaps) -> Vec<TopicState> {
        let catalog = self.catalog();
        catalog
            .topics
            .iter()
            .map(|(id, t)| {
                let subscribed = if bitmaps.contains(&BitmapKey::TopicIn(*id), pid) {
                    true
                } else if bitmaps.contains(&BitmapKey::TopicOut(*id), pid) {
                    false
                } else {
                    t.default_subscribed
                };
                TopicState {
                    id: *id,
                    name: t.name.clone(),
                    subscribed,
                }
            })
            .collect()
    }

    /// Every topic: (id, name, opted in by default).
    pub fn topics(&self) -> Vec<(u32, String, bool)> {
        self.catalog()
            .topics
            .iter()
            .map(|(id, t)| (*id, t.name.clone(), t.default_subscribed))
            .collect()
    }

    /// Every segment, with its member count.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let catalog = self.catalog();
        let bitmaps = self.read_gate();
        catalog
            .segments
            .values()
            .map(|s| SegmentInfo {
                id: s.id,
                name: s.name.clone(),
                condition: s.expr.as_ref().map(|e| e.to_string()),
                members: bitmaps
                    .get(&BitmapKey::Segment(s.id))
                    .map_or(0, RoaringBitmap::len),
            })
            .collect()
    }

    /// Replaces the catalog and the bitmaps named in `rebuilt` (whole), committing the
    /// definition writes `stage` makes together with the rebuilt bitmaps' chunks.
    fn commit_catalog(
        &self,
        writer: MutexGuard<'_, Writer>,
        catalog: Catalog,
        rebuilt: Vec<(BitmapKey, RoaringBitmap)>,
        stage: impl FnOnce(&mut crate::store::Txn<'_>),
    ) -> Result<()> {
        let new_chunks = {
            let bitmaps = self.read_gate();
            let mut news = Vec::new();
            for (key, new) in &rebuilt {
                let empty = RoaringBitmap::new();
                let old = bitmaps.get(key).unwrap_or(&empty);
                let chunks: BTreeSet<u16> = old
                    .iter()
                    .chain(new.iter())
                    .map(|p| (p >> 16) as u16)
                    .collect();
                for c in chunks {
                    let oc = chunk_of(old, c);
                    let nc = chunk_of(new, c);
                    if oc != nc {
                        news.push((
                            key.chunk_key(c),
                            (!nc.is_empty()).then(|| encode_chunk(&nc)),
                        ));
                    }
                }
            }
            news
        };
        self.commit_with(
            writer,
            |txn| {
                stage(txn);
                for (k, bytes) in new_chunks {
                    match bytes {
                        Some(b) => txn.put::<BitmapsF>(k, b),
                        None => txn.delete::<BitmapsF>(k),
                    }
                }
            },
            |bitmaps, cat| {
                for (key, bitmap) in rebuilt {
                    bitmaps.set(key, bitmap);
                }
                *cat = catalog;
            },
        )
    }

    /// Defines (or renames, or changes the default of) topic `id`. Segments that read
    /// the topic are re-evaluated.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for id 0 or a bad name.
    pub fn define_topic(&self, id: u32, name: &str, default_subscribed: bool) -> Result<()> {
        if id == 0 {
            return Err(InputError::invalid("topic", "ids start at 1").into());
        }
        check_name(name)?;
        let rec = TopicRecord {
            name: name.to_owned(),
            default_subscribed,
        };
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        catalog.topics.insert(id, rec.clone());
        catalog.finish()?;
        let rebuilt = self.rebuild_all(&catalog)?;
        self.commit_catalog(writer, catalog, rebuilt, |txn| {
            txn.put::<TopicsF>(id_key(id), rec)
        })
    }

    /// Recomputes every data-driven segment against `catalog`, in dependency order.
    fn rebuild_all(&self, catalog: &Catalog) -> Result<Vec<(BitmapKey, RoaringBitmap)>> {
        let mut out = Vec::new();
        let mut working = self.read_gate().clone();
        for id in &catalog.order {
            if let Some(bitmap) = self.build(catalog, *id, &working, &mut |_, _| {})? {
                let key = BitmapKey::Segment(*id);
                if working.get(&key) != Some(&bitmap) {
                    working.set(key.clone(), bitmap.clone());
                    out.push((key, bitmap));
                }
            }
        }
        Ok(out)
    }

    /// Computes segment `id`'s membership from `bitmaps`.
    fn build(
        &self,
        catalog: &Catalog,
        id: u32,
        bitmaps: &Bitmaps,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Option<RoaringBitmap>> {
        let Some(cond) = catalog.segments.get(&id).and_then(|d| d.cond.as_ref()) else {
            return Ok(None);
        };
        let all = bitmaps.get(&BitmapKey::All).cloned().unwrap_or_default();
        let total = all.len();
        progress(0, total);
        let mut src = Reader::committed(&self.inner.store, bitmaps);
        let mut explain = Explain::default();
        let set = eval(
            cond,
            &all,
            bitmaps,
            &mut src,
            self.now(),
            &mut explain,
            &mut |n| progress(n.min(total), total),
        )?;
        progress(total, total);
        Ok(Some(set))
    }

    /// Creates a segment: manual when `condition` is `None`, otherwise data-driven with
    /// its membership computed now. Returns its id.
    ///
    /// Every top-level attribute the condition compares in order with a number (`<`,
    /// `<=`, `>`, `>=` against a number or `now±N`) and that has no ordered index yet gets
    /// one, as [`index_attribute_range`](ProfileDb::index_attribute_range) builds it, in
    /// the same commit as the segment.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, ProfileDb};
    /// let dir = tempfile::tempdir().unwrap();
    /// let db = ProfileDb::open(dir.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// db.create_segment("Pro", Some(r#"attr.plan = "pro""#))?;
    /// db.identify(Identify::new(Ident::id("u-2")).set("plan", "pro"))?; // joins as written
    /// assert_eq!(db.count(r#"segment:"Pro""#)?, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a duplicate or bad name, a condition that
    /// does not parse, names an unknown segment or topic, or makes a reference cycle.
    pub fn create_segment(&self, name: &str, condition: Option<&str>) -> Result<u32> {
        self.create_segment_with_progress(name, condition, &mut |_, _| {})
    }

    /// As [`create_segment`](ProfileDb::create_segment), calling `progress(done, total)`
    /// while the initial membership is computed: `total` is the number of people, `done`
    /// how many have been checked one by one so far (bitmap atoms need no per-person
    /// work), reported every 4096 people, then `(total, total)` at the end.
    ///
    /// # Errors
    /// As [`create_segment`](ProfileDb::create_segment).
    pub fn create_segment_with_progress(
        &self,
        name: &str,
        condition: Option<&str>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u32> {
        check_name(name)?;
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        if catalog.segments.values().any(|s| s.name == name) {
            return Err(
                InputError::invalid("name", format!("\"{name}\" is already a segment")).into(),
            );
        }
        let ids = catalog.ids();
        let expr = match condition {
            Some(c) => Some(canonical(&parse_condition(c)?, &ids)),
            None => None,
        };
        let id = catalog.segments.keys().next_back().map_or(1, |m| m + 1);
        let def = SegmentDef {
            id,
            name: name.to_owned(),
            reads: expr
                .as_ref()
                .map(|e| Reads::of(e, &ids))
                .unwrap_or_default(),
            expr,
            cond: None,
            created: self.now(),
        };
        // Attributes the condition compares in order get an ordered index first, so
        // the initial build and every later query read bitmaps, not attribute records.
        let auto: BTreeSet<String> = def
            .expr
            .as_ref()
            .map(compared_attributes)
            .unwrap_or_default()
            .difference(&catalog.ranged)
            .cloned()
            .collect();
        let rec = record_of(&def);
        catalog.segments.insert(id, def);
        catalog.ranged.extend(auto.iter().cloned());
        catalog.finish()?;
        let mut rebuilt = self.range_slices(&auto)?;
        let mut bitmaps = self.read_gate().clone();
        for (key, bitmap) in &rebuilt {
            bitmaps.set(key.clone(), bitmap.clone());
        }
        if let Some(b) = self.build(&catalog, id, &bitmaps, progress)? {
            rebuilt.push((BitmapKey::Segment(id), b));
        }
        drop(bitmaps);
        let ranged: Vec<String> = catalog.ranged.iter().cloned().collect();
        self.commit_catalog(writer, catalog, rebuilt, |txn| {
            txn.put::<SegmentsF>(id_key(id), rec);
            if !auto.is_empty() {
                txn.put::<MetaF>(meta_keys::RANGED.to_vec(), MetaValue::Indexed(ranged));
            }
        })?;
        Ok(id)
    }

    /// Renames segment `id`.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for an unknown segment or a duplicate name.
    pub fn rename_segment(&self, id: u32, name: &str) -> Result<()> {
        check_name(name)?;
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        if catalog
            .segments
            .values()
            .any(|s| s.name == name && s.id != id)
        {
            return Err(
                InputError::invalid("name", format!("\"{name}\" is already a segment")).into(),
            );
        }
        let Some(def) = catalog.segments.get_mut(&id) else {
            return Err(InputError::invalid("segment", format!("#{id} does not exist")).into());
        };
        def.name = name.to_owned();
        let rec = record_of(def);
        catalog.finish()?;
        self.commit_catalog(writer, catalog, Vec::new(), |txn| {
            txn.put::<SegmentsF>(id_key(id), rec)
        })
    }

    /// Deletes segment `id` and its membership. Refused while other segments reference
    /// it.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for an unknown segment, or naming the
    /// segments that reference it.
    pub fn delete_segment(&self, id: u32) -> Result<()> {
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        if !catalog.segments.contains_key(&id) {
            return Err(InputError::invalid("segment", format!("#{id} does not exist")).into());
        }
        let dependents: Vec<String> = catalog
            .segments
            .values()
            .filter(|s| s.reads.segments.contains(&id))
            .map(|s| format!("\"{}\"", s.name))
            .collect();
        if !dependents.is_empty() {
            return Err(InputError::invalid(
                "segment",
                format!(
                    "#{id} is referenced by {}; change or delete those first",
                    dependents.join(", ")
                ),
            )
            .into());
        }
        catalog.segments.remove(&id);
        catalog.finish()?;
        self.commit_catalog(
            writer,
            catalog,
            vec![(BitmapKey::Segment(id), RoaringBitmap::new())],
            |txn| txn.delete::<SegmentsF>(id_key(id)),
        )
    }

    /// Adds people to manual segment `id` (at most 1000); unknown identifiers are
    /// ignored (the outcome counts them).
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for an unknown or data-driven segment, or
    /// more than 1000 people.
    pub fn add_to_segment(&self, id: u32, people: &[Ident]) -> Result<crate::Outcome> {
        self.write_batch(&[crate::Op::AddToSegment {
            segment: id,
            people: people.to_vec(),
        }])
        .map_err(unwrap_single)
        .map(|mut o| o.pop().unwrap_or(crate::Outcome::NoChange))
    }

    /// Removes people from manual segment `id` (at most 1000).
    ///
    /// # Errors
    /// As [`add_to_segment`](ProfileDb::add_to_segment).
    pub fn remove_from_segment(&self, id: u32, people: &[Ident]) -> Result<crate::Outcome> {
        self.write_batch(&[crate::Op::RemoveFromSegment {
            segment: id,
            people: people.to_vec(),
        }])
        .map_err(unwrap_single)
        .map(|mut o| o.pop().unwrap_or(crate::Outcome::NoChange))
    }

    /// Re-evaluates the data-driven segments whose conditions read the clock (`within`,
    /// `now`) at the current time, recording entered/exited activity for every change.
    /// Only people whose membership can change are visited: for a condition that can
    /// only turn false as time passes (`event:x within 7d`, `attr.t > now-1d`), the
    /// current members; for one that can only turn true, the non-members. First, as a
    /// commit of its own, the per-hour event bitmaps of the days that left the recent
    /// ones are rolled up into one bitmap a day (a write that changes people does this
    /// too, whichever comes first).
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when reading or committing fails.
    pub fn refresh(&self) -> Result<RefreshReport> {
        let now = self.now();
        // Time passed: the hours that left the recent days become days first.
        self.roll_up_hours(now)?;
        let catalog = self.catalog().clone();
        let mut working = self.read_gate().clone();
        let mut report = RefreshReport::default();
        let mut delta = Delta::default();
        let mut dependents_dirty: BTreeSet<u32> = BTreeSet::new();
        for id in &catalog.order {
            let Some(def) = catalog.segments.get(id) else {
                continue;
            };
            let clock = def.cond.as_ref().is_some_and(Cond::uses_clock);
            let dep = def
                .reads
                .segments
                .iter()
                .any(|s| dependents_dirty.contains(s));
            if !clock && !dep {
                continue;
            }
            report.segments += 1;
            let Some(cond) = def.cond.as_ref() else {
                continue;
            };
            let key = BitmapKey::Segment(*id);
            let old = working.get(&key).cloned().unwrap_or_default();
            // Only who can change is visited: members when the condition can only turn
            // false with time, non-members when it can only turn true.
            let all = working.get(&BitmapKey::All).cloned().unwrap_or_default();
            let trend = cond.trend(&dependents_dirty);
            let within = match trend {
                Trend::Decaying => old.clone(),
                Trend::Growing => &all - &old,
                Trend::Static | Trend::Mixed => all,
            };
            let mut src = Reader::committed(&self.inner.store, &working);
            let part = eval(
                cond,
                &within,
                &working,
                &mut src,
                now,
                &mut Explain::default(),
                &mut |_| {},
            )?;
            let new = match trend {
                Trend::Growing => &old | &part,
                _ => part,
            };
            if old == new {
                continue;
            }
            for pid in &(&new - &old) {
                delta.set(key.clone(), pid, true);
                report.entered += 1;
            }
            for pid in &(&old - &new) {
                delta.set(key.clone(), pid, false);
                report.exited += 1;
            }
            dependents_dirty.insert(*id);
            working.set(key, new);
        }
        if delta.is_empty() {
            return Ok(report);
        }
        // Commit in parts of bounded size (each part is atomic: its members' chunks and
        // their activity together), so a mass exit does not become one huge transaction.
        for part in delta.split_by_person(REFRESH_COMMIT_PEOPLE) {
            self.commit_delta(part, |txn, counters, bitmaps, delta| {
                let mut changes: BTreeMap<(u32, bool), Vec<u32>> = BTreeMap::new();
                for (k, pid, add) in delta.iter() {
                    if let BitmapKey::Segment(id) = k {
                        if bitmaps.contains(k, pid) != add {
                            changes.entry((pid, add)).or_default().push(*id);
                        }
                    }
                }
                for ((pid, entered), mut ids) in changes {
                    ids.sort_unstable();
                    crate::segments::maintain::record(
                        txn, counters, pid, now, &catalog, &ids, entered,
                    );
                }
            })?;
        }
        Ok(report)
    }

    /// Declares `attribute` indexed: an equality bitmap per value, built now from every
    /// person and kept from then on, so `attr.NAME = VALUE` is answered by the index.
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a bad name.
    pub fn index_attribute(&self, attribute: &str) -> Result<()> {
        if attribute.is_empty() || attribute.contains('.') {
            return Err(InputError::new(
                "attribute",
                InputReason::Invalid("must be a top-level attribute name".into()),
            )
            .into());
        }
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        if !catalog.indexed.insert(attribute.to_owned()) {
            return Ok(());
        }
        let only: BTreeSet<String> = [attribute.to_owned()].into_iter().collect();
        let mut built: BTreeMap<BitmapKey, RoaringBitmap> = BTreeMap::new();
        for item in self.inner.store.scan::<AttributesF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::Attributes, &key)?;
            for k in attribute_keys(None, Some(&rec), &only, &BTreeSet::new()) {
                if matches!(k, BitmapKey::AttrEq(..)) {
                    built.entry(k).or_default().insert(pid);
                }
            }
        }
        catalog.finish()?;
        let names: Vec<String> = catalog.indexed.iter().cloned().collect();
        self.commit_catalog(writer, catalog, built.into_iter().collect(), |txn| {
            txn.put::<MetaF>(meta_keys::INDEXED.to_vec(), MetaValue::Indexed(names));
        })
    }
}

impl ProfileDb {
    /// Declares `attribute` range-indexed: an ordered index of its numeric values
    /// (numbers, and strings holding numbers, such as unix timestamps), built now from
    /// every person and kept from then on, so `attr.NAME < / <= / > / >= / = NUMBER` (or
    /// `now±N`) is answered from bitmaps instead of a per-person check. The index is 64
    /// bit-slice bitmaps of the values' orderable encoding plus one of the people who
    /// have a value (see the `index::range` module); a comparison is about 130 bitmap
    /// operations whatever the number of people.
    ///
    /// Creating a data-driven segment that compares an attribute in order with a number
    /// gives it this index too ([`create_segment`](ProfileDb::create_segment)).
    ///
    /// # Errors
    /// [`Error::Input`](crate::Error::Input) for a bad name.
    pub fn index_attribute_range(&self, attribute: &str) -> Result<()> {
        if attribute.is_empty() || attribute.contains('.') {
            return Err(InputError::new(
                "attribute",
                InputReason::Invalid("must be a top-level attribute name".into()),
            )
            .into());
        }
        // The writer lock first: no commit lands between these reads and the commit.
        let writer = self.writer()?;
        let mut catalog = self.catalog().clone();
        if !catalog.ranged.insert(attribute.to_owned()) {
            return Ok(());
        }
        let only: BTreeSet<String> = [attribute.to_owned()].into_iter().collect();
        let built = self.range_slices(&only)?;
        catalog.finish()?;
        let names: Vec<String> = catalog.ranged.iter().cloned().collect();
        self.commit_catalog(writer, catalog, built, |txn| {
            txn.put::<MetaF>(meta_keys::RANGED.to_vec(), MetaValue::Indexed(names));
        })
    }

    /// The ordered-index bitmaps (existence and bit slices) of the attributes in
    /// `names`, computed from every person's attributes.
    pub(crate) fn range_slices(
        &self,
        names: &BTreeSet<String>,
    ) -> Result<Vec<(BitmapKey, RoaringBitmap)>> {
        let mut built: BTreeMap<BitmapKey, RoaringBitmap> = BTreeMap::new();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        for item in self.inner.store.scan::<AttributesF>(&[], false, None) {
            let (key, rec) = item?;
            let pid = crate::store::pid_from_key(Family::Attributes, &key)?;
            for name in names {
                if let Some(x) = rec.values.get(name).and_then(crate::index::range::number) {
                    for k in crate::index::range::keys_of(name, x) {
                        built.entry(k).or_default().insert(pid);
                    }
                }
            }
        }
        Ok(built.into_iter().collect())
    }
}

/// A one-operation batch's error without the batch wrapper.
fn unwrap_single(e: crate::Error) -> crate::Error {
    match e {
        crate::Error::InBatch { source, .. } => *source,
        other => other,
    }
}
