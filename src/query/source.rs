//! Where per-person checks read a person's data: committed data (queries) or a batch's
//! staging area (segment maintenance inside a commit). One reader, [`Reader`], serves
//! both through [`Records`]; [`Cached`] memoizes one person's reads over any source.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Bound::{self, Included};
use std::rc::Rc;

use roaring::RoaringBitmap;

use crate::error::Result;
use crate::index::range::{self, Order};
use crate::index::{BitmapKey, Bitmaps, Delta};
use crate::model::Value;
use crate::store::event_blocks::{EventBlock, DAY_SECS};
use crate::store::records::{AttributesRecord, DeliveryRecord, DeviceRecord, PersonRecord};
use crate::store::{
    decode_value, pid_key, prefix_end, ActivityF, AttributesF, DeliveriesF, DevicesF, EventBlocksF,
    Fam, PeopleF, Store, Txn,
};

use super::CmpOp;

/// A person's data, as a condition reads it.
pub(crate) trait Source {
    /// The person record (shared, so a cache hands it out without copying).
    fn person(&mut self, pid: u32) -> Result<Option<Rc<PersonRecord>>>;
    /// The attributes record (shared, as `person`).
    fn attributes(&mut self, pid: u32) -> Result<Option<Rc<AttributesRecord>>>;
    /// Every device.
    fn devices(&mut self, pid: u32) -> Result<Vec<DeviceRecord>>;
    /// Every delivery.
    fn deliveries(&mut self, pid: u32) -> Result<Vec<DeliveryRecord>>;
    /// Occurrences (time, seq) of an event at or after `since`, oldest first; at most
    /// `limit` of them when given.
    fn occurrences(
        &mut self,
        pid: u32,
        kind: &str,
        name: &str,
        since: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, u64)>>;
    /// Every tracked event of the person, by (kind, name), each list oldest first.
    fn events(&mut self, pid: u32) -> Result<Occurrences>;
    /// An event's properties.
    fn event_data(&mut self, pid: u32, time: i64, seq: u64) -> Result<Option<Value>>;
    /// Every `event_blocks` block of `kind`/`name` from the day of `since` on (every day
    /// when `None`), in key order, each with its day number, until `each` returns
    /// `false`.
    fn event_blocks(
        &mut self,
        kind: &str,
        name: &str,
        since: Option<i64>,
        each: &mut dyn FnMut(i64, EventBlock) -> Result<bool>,
    ) -> Result<()>;
    /// Membership in a bitmap.
    fn member(&self, key: &BitmapKey, pid: u32) -> bool;
    /// Everyone (among `within`, when given) whose ranged attribute `name` compares
    /// true (`op` one of `<`, `<=`, `>`, `>=`, `=`) with the number `x`, from the bit
    /// slices of its ordered index (committed, plus the batch's pending changes inside
    /// a commit).
    fn range(
        &mut self,
        name: &str,
        op: CmpOp,
        x: f64,
        within: Option<&RoaringBitmap>,
    ) -> Result<RoaringBitmap>;
}

/// A person's tracked events: (kind, name) → (time, seq) of each, oldest first.
pub(crate) type Occurrences = BTreeMap<(String, String), Vec<(i64, u64)>>;

pub(crate) use crate::store::Visit;

/// Keyed record reads: the store (committed) or a staging transaction (as it would be
/// after the commit).
pub(crate) trait Records {
    /// The value at `key`.
    fn get<F: Fam>(&mut self, key: &[u8]) -> Result<Option<F::Value>>;
    /// Every value whose key starts with `prefix`, in key order.
    fn values<F: Fam>(&mut self, prefix: &[u8]) -> Result<Vec<F::Value>>;
    /// Each key and value within `bounds`, ascending.
    fn each_between<F: Fam>(
        &mut self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut Visit<'_, F>,
    ) -> Result<()>;
}

impl Records for &Store {
    fn get<F: Fam>(&mut self, key: &[u8]) -> Result<Option<F::Value>> {
        Store::get::<F>(self, key)
    }
    fn values<F: Fam>(&mut self, prefix: &[u8]) -> Result<Vec<F::Value>> {
        self.scan::<F>(prefix, false, None)
            .map(|r| r.map(|(_, v)| v))
            .collect()
    }
    fn each_between<F: Fam>(
        &mut self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut Visit<'_, F>,
    ) -> Result<()> {
        for item in self.kv().range(F::FAMILY, bounds, false) {
            let (k, v) = item?;
            if !each(&k, decode_value::<F>(&k, &v)?)? {
                break;
            }
        }
        Ok(())
    }
}

impl Records for &mut Txn<'_> {
    fn get<F: Fam>(&mut self, key: &[u8]) -> Result<Option<F::Value>> {
        Txn::get::<F>(self, key)
    }
    fn values<F: Fam>(&mut self, prefix: &[u8]) -> Result<Vec<F::Value>> {
        let mut out = Vec::new();
        for k in self.keys(F::FAMILY, prefix)? {
            out.extend(Txn::get::<F>(self, &k)?);
        }
        Ok(out)
    }
    fn each_between<F: Fam>(
        &mut self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut Visit<'_, F>,
    ) -> Result<()> {
        Txn::each_between::<F>(self, bounds, each)
    }
}

/// Reads a person's data from `records`, and bitmap membership from the committed
/// bitmaps plus, inside a commit, the batch's pending changes.
pub(crate) struct Reader<'b, R> {
    records: R,
    bitmaps: &'b Bitmaps,
    delta: Option<&'b Delta>,
}

impl<'b, 's> Reader<'b, &'s Store> {
    /// Reads committed data.
    pub(crate) fn committed(store: &'s Store, bitmaps: &'b Bitmaps) -> Self {
        Reader {
            records: store,
            bitmaps,
            delta: None,
        }
    }
}

impl<'b, 't, 'a> Reader<'b, &'t mut Txn<'a>> {
    /// Reads a batch's staged data and its pending bitmap changes.
    pub(crate) fn staged(txn: &'t mut Txn<'a>, bitmaps: &'b Bitmaps, delta: &'b Delta) -> Self {
        Reader {
            records: txn,
            bitmaps,
            delta: Some(delta),
        }
    }
}

impl<R: Records> Source for Reader<'_, R> {
    fn person(&mut self, pid: u32) -> Result<Option<Rc<PersonRecord>>> {
        Ok(self.records.get::<PeopleF>(&pid_key(pid))?.map(Rc::new))
    }
    fn attributes(&mut self, pid: u32) -> Result<Option<Rc<AttributesRecord>>> {
        Ok(self.records.get::<AttributesF>(&pid_key(pid))?.map(Rc::new))
    }
    fn devices(&mut self, pid: u32) -> Result<Vec<DeviceRecord>> {
        self.records.values::<DevicesF>(&pid_key(pid))
    }
    fn deliveries(&mut self, pid: u32) -> Result<Vec<DeliveryRecord>> {
        self.records.values::<DeliveriesF>(&pid_key(pid))
    }
    fn occurrences(
        &mut self,
        pid: u32,
        kind: &str,
        name: &str,
        since: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, u64)>> {
        // The person's timeline from `since` on, ascending, its tracked events of this
        // kind and name taken.
        let lower = ActivityF::key(pid, since.unwrap_or(i64::MIN), 0);
        let bounds = (Included(lower), prefix_end(&pid_key(pid)));
        let limit = limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.records
            .each_between::<ActivityF>(bounds, &mut |key, rec| {
                if rec.tracked() == Some((kind, name)) {
                    let (_, t, seq) = ActivityF::decode_key(key)?;
                    out.push((t, seq));
                }
                Ok(out.len() < limit)
            })?;
        Ok(out)
    }
    fn events(&mut self, pid: u32) -> Result<Occurrences> {
        let mut out = Occurrences::new();
        let bounds = (Included(pid_key(pid)), prefix_end(&pid_key(pid)));
        self.records
            .each_between::<ActivityF>(bounds, &mut |key, rec| {
                if let Some((kind, name)) = rec.tracked() {
                    let (_, t, seq) = ActivityF::decode_key(key)?;
                    out.entry((kind.to_owned(), name.to_owned()))
                        .or_default()
                        .push((t, seq));
                }
                Ok(true)
            })?;
        Ok(out)
    }
    fn event_data(&mut self, pid: u32, time: i64, seq: u64) -> Result<Option<Value>> {
        Ok(self
            .records
            .get::<ActivityF>(&ActivityF::key(pid, time, seq))?
            .map(|r| r.data))
    }
    fn event_blocks(
        &mut self,
        kind: &str,
        name: &str,
        since: Option<i64>,
        each: &mut dyn FnMut(i64, EventBlock) -> Result<bool>,
    ) -> Result<()> {
        let prefix = EventBlocksF::prefix(kind, name);
        let lower = match since {
            Some(t) => EventBlocksF::day_prefix(kind, name, t.div_euclid(DAY_SECS)),
            None => prefix.clone(),
        };
        let bounds = (Included(lower), prefix_end(&prefix));
        self.records
            .each_between::<EventBlocksF>(bounds, &mut |key, block| {
                let (_, _, day, _) = EventBlocksF::decode_key(key)?;
                each(day, block)
            })
    }
    fn member(&self, key: &BitmapKey, pid: u32) -> bool {
        match self.delta {
            Some(delta) => delta.contains(self.bitmaps, key, pid),
            None => self.bitmaps.contains(key, pid),
        }
    }
    fn range(
        &mut self,
        name: &str,
        op: CmpOp,
        x: f64,
        within: Option<&RoaringBitmap>,
    ) -> Result<RoaringBitmap> {
        let order = order_of(op)?;
        let (bitmaps, delta) = (self.bitmaps, self.delta);
        Ok(range::compare(name, order, x, within, |key| match delta {
            Some(d) => d.overlay(bitmaps, key),
            None => bitmaps.get(key).map(Cow::Borrowed),
        }))
    }
}

/// The ordered-index comparison of a condition's operator.
fn order_of(op: CmpOp) -> Result<Order> {
    Ok(match op {
        CmpOp::Lt => Order::Lt,
        CmpOp::Le => Order::Le,
        CmpOp::Gt => Order::Gt,
        CmpOp::Ge => Order::Ge,
        CmpOp::Eq => Order::Eq,
        other => {
            return Err(crate::Error::Input(crate::InputError::invalid(
                "condition",
                format!("`{other}` is not an ordered comparison"),
            )))
        }
    })
}

/// Caches one person's reads over another source: segment maintenance evaluates many
/// conditions for the same person, and each record should be read and decoded once.
/// Segment memberships decided earlier in the same maintenance pass (`decided`) stand
/// in for the source's, so dependents see what their dependencies just became.
pub(crate) struct Cached<'s> {
    inner: &'s mut dyn Source,
    pid: u32,
    /// Segment memberships of `pid` decided so far in this pass.
    pub(crate) decided: BTreeMap<u32, bool>,
    person: Option<Option<Rc<PersonRecord>>>,
    attributes: Option<Option<Rc<AttributesRecord>>>,
    devices: Option<Vec<DeviceRecord>>,
    deliveries: Option<Vec<DeliveryRecord>>,
    events: Option<Occurrences>,
}

impl<'s> Cached<'s> {
    /// A cache of `pid`'s reads over `inner`.
    pub(crate) fn new(inner: &'s mut dyn Source, pid: u32) -> Cached<'s> {
        Cached {
            inner,
            pid,
            decided: BTreeMap::new(),
            person: None,
            attributes: None,
            devices: None,
            deliveries: None,
            events: None,
        }
    }
}

/// The value in `slot`, loading it the first time.
fn memo<T: Clone>(slot: &mut Option<T>, load: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Some(v) = slot {
        return Ok(v.clone());
    }
    let v = load()?;
    *slot = Some(v.clone());
    Ok(v)
}

impl Source for Cached<'_> {
    fn person(&mut self, pid: u32) -> Result<Option<Rc<PersonRecord>>> {
        if pid != self.pid {
            return self.inner.person(pid);
        }
        memo(&mut self.person, || self.inner.person(pid))
    }
    fn attributes(&mut self, pid: u32) -> Result<Option<Rc<AttributesRecord>>> {
        if pid != self.pid {
            return self.inner.attributes(pid);
        }
        memo(&mut self.attributes, || self.inner.attributes(pid))
    }
    fn devices(&mut self, pid: u32) -> Result<Vec<DeviceRecord>> {
        if pid != self.pid {
            return self.inner.devices(pid);
        }
        memo(&mut self.devices, || self.inner.devices(pid))
    }
    fn deliveries(&mut self, pid: u32) -> Result<Vec<DeliveryRecord>> {
        if pid != self.pid {
            return self.inner.deliveries(pid);
        }
        memo(&mut self.deliveries, || self.inner.deliveries(pid))
    }
    fn occurrences(
        &mut self,
        pid: u32,
        kind: &str,
        name: &str,
        since: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<(i64, u64)>> {
        if pid != self.pid {
            return self.inner.occurrences(pid, kind, name, since, limit);
        }
        if self.events.is_none() {
            self.events = Some(self.inner.events(pid)?);
        }
        Ok(self
            .events
            .iter()
            .filter_map(|all| all.get(&(kind.to_owned(), name.to_owned())))
            .flatten()
            .filter(|(t, _)| since.is_none_or(|s| *t >= s))
            .take(limit.unwrap_or(usize::MAX))
            .copied()
            .collect())
    }
    fn events(&mut self, pid: u32) -> Result<Occurrences> {
        if pid != self.pid {
            return self.inner.events(pid);
        }
        if self.events.is_none() {
            self.events = Some(self.inner.events(pid)?);
        }
        Ok(self.events.clone().unwrap_or_default())
    }
    fn event_data(&mut self, pid: u32, time: i64, seq: u64) -> Result<Option<Value>> {
        self.inner.event_data(pid, time, seq)
    }
    fn event_blocks(
        &mut self,
        kind: &str,
        name: &str,
        since: Option<i64>,
        each: &mut dyn FnMut(i64, EventBlock) -> Result<bool>,
    ) -> Result<()> {
        self.inner.event_blocks(kind, name, since, each)
    }
    fn member(&self, key: &BitmapKey, pid: u32) -> bool {
        if let (BitmapKey::Segment(id), true) = (key, pid == self.pid) {
            if let Some(m) = self.decided.get(id) {
                return *m;
            }
        }
        self.inner.member(key, pid)
    }
    fn range(
        &mut self,
        name: &str,
        op: CmpOp,
        x: f64,
        within: Option<&RoaringBitmap>,
    ) -> Result<RoaringBitmap> {
        self.inner.range(name, op, x, within)
    }
}
