//! Writing an export ([`ProfileDb::export`]) and applying one of its lines (the
//! `restore_begin`, `restore` and `restore_end` extension messages) to a database. The
//! format is in [the module above](crate::export).

use std::io::Write;
use std::sync::atomic::Ordering;

use serde_json::{json, Map as JsonMap, Value as Json};

use crate::db::{ProfileDb, FORMAT_VERSION};
use crate::error::{Error, InputError, Result, StorageError};
use crate::store::records::MetaValue;
use crate::store::{self, meta_keys, Counters, Family, Txn};

/// The most records one `restore` line holds.
pub const RECORDS_PER_LINE: usize = 512;

/// Bytes of hex after which a `restore` line is ended early.
const BYTES_PER_LINE: usize = 256 * 1024;

fn io(e: std::io::Error) -> Error {
    Error::Storage(StorageError::Io(e))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

fn write_line(out: &mut dyn Write, v: &Json) -> Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(|e| io(e.into()))?;
    out.write_all(b"\n").map_err(io)
}

fn record(family: Family, key: &[u8], value: &[u8]) -> Json {
    json!([
        family.name(),
        store::codec::hex(key),
        store::codec::hex(value)
    ])
}

impl ProfileDb {
    /// Writes the whole database to `out` as JSON lines that [`ingest`](ProfileDb::ingest)
    /// (into a fresh database) reads back into an equal one; returns the number of lines.
    /// The format is in [`crate::export`]. Writers wait while the export runs, so it is one
    /// consistent snapshot.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> Result<(), profiledb::Error> {
    /// use profiledb::{Ident, Identify, ProfileDb};
    /// let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    /// let db = ProfileDb::open(a.path())?;
    /// db.identify(Identify::new(Ident::id("u-1")).set("plan", "pro"))?;
    /// let mut out = Vec::new();
    /// db.export(&mut out)?;
    /// let copy = ProfileDb::open(b.path())?;
    /// for line in String::from_utf8(out).unwrap().lines() {
    ///     assert!(copy.ingest_str(line)?.rejected.is_empty());
    /// }
    /// assert_eq!(copy.person(&Ident::id("u-1"))?, db.person(&Ident::id("u-1"))?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Storage`] when reading the database or writing to `out` fails;
    /// [`Error::Corrupted`] for a damaged record (nothing damaged is ever exported).
    pub fn export(&self, out: &mut dyn Write) -> Result<u64> {
        // The bitmaps are exported as chunks: fold the log into them first, and hold the
        // writer lock so no commit logs anew while the export runs.
        let mut writer = self.restore_writer()?;
        self.fold_locked(&mut writer)?;
        // Commits take the gate for writing: holding it for reading keeps them out.
        let _gate = self.read_gate();
        let kv = self.inner.store.kv();
        let all = || (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded);
        let mut meta = Vec::new();
        let (mut next_pid, mut next_seq, mut commit_seq) = (1, 1, 0);
        for item in kv.range(Family::Meta, all(), false) {
            let (k, v) = item?;
            if k == meta_keys::COUNTERS {
                if let MetaValue::Counters {
                    next_pid: p,
                    next_seq: s,
                    commit_seq: c,
                    ..
                } = store::decode_value::<store::MetaF>(&k, &v)?
                {
                    (next_pid, next_seq, commit_seq) = (p, s, c);
                }
                continue;
            }
            if k == meta_keys::FEED {
                // The change feed is this database's own history: not exported.
                continue;
            }
            Family::Meta.check_record(&k, &v)?;
            meta.push(record(Family::Meta, &k, &v));
        }
        write_line(
            out,
            &json!({
                "type": "profiledb",
                "action": "restore_begin",
                "format": FORMAT_VERSION,
                "next_pid": next_pid,
                "next_seq": next_seq,
                "commit_seq": commit_seq,
                "records": meta,
            }),
        )?;
        let mut lines = 1u64;
        let mut total = 0u64;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut flush = |batch: &mut Vec<Json>, out: &mut dyn Write| -> Result<()> {
            if !batch.is_empty() {
                write_line(
                    out,
                    &json!({"type": "profiledb", "action": "restore", "records": batch}),
                )?;
                batch.clear();
                lines += 1;
            }
            Ok(())
        };
        for &family in Family::ALL
            .iter()
            .filter(|f| !matches!(f, Family::Meta | Family::Changes))
        {
            for item in kv.range(family, all(), false) {
                let (k, v) = item?;
                // A damaged record stops the export: it is never copied on silently.
                family.check_record(&k, &v)?;
                bytes += 2 * (k.len() + v.len());
                batch.push(record(family, &k, &v));
                total += 1;
                if batch.len() >= RECORDS_PER_LINE || bytes >= BYTES_PER_LINE {
                    flush(&mut batch, out)?;
                    bytes = 0;
                }
            }
        }
        flush(&mut batch, out)?;
        write_line(
            out,
            &json!({"type": "profiledb", "action": "restore_end", "records": total}),
        )?;
        out.flush().map_err(io)?;
        Ok(lines + 1)
    }
}

/// One stored record: family, key, value (envelope included).
type RawRecord = (Family, Vec<u8>, Vec<u8>);

/// The oldest format whose export this build restores. Its records keep their bytes in
/// this format except the families this format retired (format 2's `ranges` and
/// `events_by_name`), which are dropped: the ordered indexes are rebuilt from the
/// attributes at `restore_end`, and a person's occurrences of an event are read from
/// `activity`.
pub const OLDEST_RESTORABLE: u32 = 2;

/// Families a format-2 export (or a format-3 export of a build from before
/// `events_by_name` was retired) may hold that format 3 no longer has: derived data,
/// skipped.
const RETIRED: &[&str] = &["ranges", "events_by_name"];

/// A restore in progress from an older format's export.
#[derive(Debug, Default)]
pub(crate) struct Upgrade {
    /// The export's format, when older than this build's; `None` otherwise.
    from: Option<u32>,
    /// Records of retired families skipped so far.
    skipped: u64,
    /// The exported database's last commit (`restore_begin`'s `commit_seq`).
    commit_seq: u64,
}

/// Parses `records` into (family, key, value), refusing with the field's path.
fn parse_records(
    m: &JsonMap<String, Json>,
    from: Option<u32>,
    skipped: &mut u64,
) -> std::result::Result<Vec<RawRecord>, InputError> {
    let Some(Json::Array(list)) = m.get("records") else {
        return Err(InputError::invalid("records", "must be an array"));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let at = format!("records[{i}]");
        let (Some(name), Some(key), Some(value)) = (
            r.get(0).and_then(Json::as_str),
            r.get(1).and_then(Json::as_str),
            r.get(2).and_then(Json::as_str),
        ) else {
            return Err(InputError::invalid(
                at,
                "must be [family, key in hex, value in hex]",
            ));
        };
        // Also in this format's exports: builds of format 3 before `events_by_name`
        // was retired wrote it.
        if RETIRED.contains(&name) {
            *skipped += 1;
            continue;
        }
        let family = Family::ALL
            .iter()
            .copied()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                InputError::invalid(format!("{at}.family"), format!("`{name}` is not a family"))
            })?;
        let key =
            unhex(key).ok_or_else(|| InputError::invalid(format!("{at}.key"), "is not hex"))?;
        let value =
            unhex(value).ok_or_else(|| InputError::invalid(format!("{at}.value"), "is not hex"))?;
        // Checksum, decoding, and the key's shape.
        family.check_record(&key, &value).map_err(|e| {
            InputError::invalid(format!("{at}.value"), format!("is not a valid record: {e}"))
        })?;
        let value = match from {
            Some(_) => upgrade_record(family, &key, value)
                .map_err(|e| InputError::invalid(format!("{at}.value"), e.to_string()))?,
            None => value,
        };
        out.push((family, key, value));
    }
    Ok(out)
}

/// A checked record of an older format's export, as this format stores it: the
/// `meta` format record names this format; every other kept family is unchanged.
fn upgrade_record(family: Family, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>> {
    if family == Family::Meta && key == meta_keys::FORMAT {
        if let MetaValue::Format { created, .. } = store::decode_value::<store::MetaF>(key, &value)?
        {
            let format = MetaValue::Format {
                version: FORMAT_VERSION,
                created,
            };
            return store::codec::encode(Family::Meta.tag(), key, &format)
                .map_err(|reason| store::corrupted(Family::Meta, key, reason));
        }
    }
    Ok(value)
}

/// Stages one checked record, decoded to its type, in `txn`.
fn stage(txn: &mut Txn<'_>, family: Family, key: Vec<u8>, value: &[u8]) -> Result<()> {
    use crate::store::*;
    if family == Family::BitmapLog {
        // An export folds the log first: a log record in one is not a restore's to write
        // (its commit numbers are another database's).
        return Err(InputError::invalid(
            "records",
            "a restore carries no bitmap_log record (an export folds the log into the chunks)",
        )
        .into());
    }
    if family == Family::Changes || (family == Family::Meta && key == meta_keys::FEED) {
        // The change feed is this database's own history: an export leaves it out.
        return Err(InputError::invalid(
            "records",
            "a restore carries no change feed record (an export leaves the feed out)",
        )
        .into());
    }
    macro_rules! put {
        ($($variant:ident => $fam:ty,)*) => {
            match family {
                $(Family::$variant => {
                    let v = decode_value::<$fam>(&key, value)?;
                    txn.put::<$fam>(key, v);
                })*
                // Unused since format 3: `check_record` refuses their records first.
                Family::Ranges | Family::EventsByName => {
                    return Err(corrupted(
                        family,
                        &key,
                        format!("family `{}` is unused since format 3", family.name()),
                    ));
                }
            }
        };
    }
    put! {
        Meta => MetaF,
        People => PeopleF,
        Identifiers => IdentifiersF,
        Attributes => AttributesF,
        Activity => ActivityF,
        Suppressed => SuppressedF,
        EventIds => EventIdsF,
        Anonymous => AnonymousF,
        Deliveries => DeliveriesF,
        DeliveryIds => DeliveryIdsF,
        Devices => DevicesF,
        DeviceTokens => DeviceTokensF,
        ObjectTypes => ObjectTypesF,
        Objects => ObjectsF,
        Relationships => RelationshipsF,
        Members => MembersF,
        AnonRelationships => AnonRelationshipsF,
        Bitmaps => BitmapsF,
        Topics => TopicsF,
        Segments => SegmentsF,
        BitmapLog => BitmapLogF,
        EventBlocks => EventBlocksF,
        Changes => ChangesF,
    }
    Ok(())
}

/// Records outside `meta`.
fn data_records(db: &ProfileDb) -> Result<u64> {
    let kv = db.inner.store.kv();
    let mut n = 0u64;
    for &family in Family::ALL
        .iter()
        .filter(|f| !matches!(f, Family::Meta | Family::Changes))
    {
        for item in kv.range(
            family,
            (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
            false,
        ) {
            item?;
            n += 1;
        }
    }
    Ok(n)
}

fn is_empty(db: &ProfileDb) -> Result<bool> {
    let kv = db.inner.store.kv();
    // A fresh database's meta holds only its format record and counters.
    for item in kv.range(
        Family::Meta,
        (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
        false,
    ) {
        let (key, _) = item?;
        if ![meta_keys::FORMAT, meta_keys::COUNTERS, meta_keys::FEED].contains(&key.as_slice()) {
            return Ok(false);
        }
    }
    for &family in Family::ALL
        .iter()
        .filter(|f| !matches!(f, Family::Meta | Family::Changes))
    {
        if kv
            .range(
                family,
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded),
                false,
            )
            .next()
            .is_some()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn count(m: &JsonMap<String, Json>, key: &str) -> std::result::Result<u64, InputError> {
    m.get(key)
        .and_then(Json::as_u64)
        .ok_or_else(|| InputError::invalid(key, "must be a whole number"))
}

/// Applies one extension message (`"type": "profiledb"`); [`ProfileDb::ingest`] hands
/// them here.
pub(crate) fn apply(
    db: &ProfileDb,
    m: &JsonMap<String, Json>,
) -> Result<std::result::Result<(), InputError>> {
    let action = match m.get("action").and_then(Json::as_str) {
        Some(a) => a,
        None => return Ok(Err(InputError::invalid("action", "is required"))),
    };
    let restoring = db.inner.restoring.load(Ordering::SeqCst);
    match action {
        "restore_begin" if restoring => Ok(Err(InputError::invalid(
            "action",
            "a restore is already in progress: restore_begin comes once, first",
        ))),
        "restore" | "restore_end" if !restoring => Ok(Err(InputError::invalid(
            "action",
            format!("{action} without a restore_begin before it"),
        ))),
        "restore_begin" => {
            let format = m
                .get("format")
                .and_then(Json::as_u64)
                .and_then(|f| u32::try_from(f).ok())
                .filter(|f| (OLDEST_RESTORABLE..=FORMAT_VERSION).contains(f));
            let Some(format) = format else {
                return Ok(Err(InputError::invalid(
                    "format",
                    format!(
                        "must be {OLDEST_RESTORABLE} to {FORMAT_VERSION}, the formats this \
                         build restores"
                    ),
                )));
            };
            let from = (format < FORMAT_VERSION).then_some(format);
            let mut skipped = 0;
            let (next_pid, next_seq) = match (count(m, "next_pid"), count(m, "next_seq")) {
                (Ok(p), Ok(s)) => (p, s),
                (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
            };
            // Optional (exports before the change feed have none).
            let commit_seq = match m.get("commit_seq").map(|_| count(m, "commit_seq")) {
                None => 0,
                Some(Ok(c)) => c,
                Some(Err(e)) => return Ok(Err(e)),
            };
            let records = match parse_records(m, from, &mut skipped) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(i) = records
                .iter()
                .position(|(f, k, _)| *f != Family::Meta || k.as_slice() == meta_keys::COUNTERS)
            {
                return Ok(Err(InputError::invalid(
                    format!("records[{i}]"),
                    "restore_begin carries only meta records other than the counters",
                )));
            }
            if !is_empty(db)? {
                return Ok(Err(InputError::invalid(
                    "action",
                    "restore_begin needs a database that holds no records yet",
                )));
            }
            let counters = Counters {
                next_pid,
                next_seq,
                counts: Default::default(),
            };
            let staged = db.commit_restore(
                |txn| {
                    for (family, key, value) in records {
                        stage(txn, family, key, &value)?;
                    }
                    Ok(())
                },
                Some(counters),
                true,
            );
            if staged.is_ok() {
                *upgrade(db) = Upgrade {
                    from,
                    skipped,
                    commit_seq,
                };
                db.inner.restoring.store(true, Ordering::SeqCst);
            }
            into_refusal(staged)
        }
        "restore" => {
            let from = upgrade(db).from;
            let mut skipped = 0;
            let records = match parse_records(m, from, &mut skipped) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let kv = db.inner.store.kv();
            for (i, (family, key, _)) in records.iter().enumerate() {
                if *family == Family::Meta || kv.get(*family, key)?.is_some() {
                    return Ok(Err(InputError::invalid(
                        format!("records[{i}].key"),
                        "is already in the database (or is a meta record): a restore never \
                         overwrites",
                    )));
                }
            }
            let staged = db.commit_restore(
                |txn| {
                    for (family, key, value) in records {
                        stage(txn, family, key, &value)?;
                    }
                    Ok(())
                },
                None,
                false,
            );
            if staged.is_ok() {
                upgrade(db).skipped += skipped;
            }
            into_refusal(staged)
        }
        "restore_end" => {
            let expected = match count(m, "records") {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            let (from, skipped, commit_seq) = {
                let u = upgrade(db);
                (u.from, u.skipped, u.commit_seq)
            };
            let held = data_records(db)? + skipped;
            if held != expected {
                return Ok(Err(InputError::invalid(
                    "records",
                    format!(
                        "the export holds {expected} records but the database has {held}: \
                         restore lines are missing or extra"
                    ),
                )));
            }
            // The restore's last commit takes the exported database's last commit number
            // (when the restore has not passed it already): a restored database numbers
            // its commits on from its source's, so a cursor of the source's change feed
            // is before the restored feed's start and expires instead of naming other
            // commits, and an export of the restored database says the same number.
            let done = match from {
                Some(_) => db.rebuild_derived(),
                None => Ok(()),
            }
            .and_then(|()| db.raise_commit_seq(commit_seq.saturating_sub(1)))
            .and_then(|()| db.commit_restore(|_| Ok(()), None, true));
            if done.is_ok() {
                *upgrade(db) = Upgrade::default();
                db.inner.restoring.store(false, Ordering::SeqCst);
            }
            into_refusal(done)
        }
        other => Ok(Err(InputError::invalid(
            "action",
            format!(
                "`{other}` is not a profiledb extension action (restore_begin, restore, \
                 restore_end)"
            ),
        ))),
    }
}

/// The restore in progress's upgrade state.
fn upgrade(db: &ProfileDb) -> std::sync::MutexGuard<'_, Upgrade> {
    db.inner
        .restore_from
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProfileDb {
    /// Rebuilds, from the records they derive from, the data a format-3 database keeps
    /// that an older format's export does not carry (event blocks from `activity`, the
    /// bit slices of ordered indexes from `attributes`): run at the end of restoring one.
    fn rebuild_derived(&self) -> Result<()> {
        use crate::index::chunk_of;
        use crate::store::bitmaps::encode_chunk;
        use crate::store::{BitmapsF, EventBlocksF};
        // Event blocks, new in format 3, from the activity restored: in batches of about
        // 4 MiB (each block is at most about 8 KiB).
        let mut blocks = crate::activity::build_blocks(&self.inner.store)?.into_iter();
        loop {
            let batch: Vec<_> = blocks.by_ref().take(512).collect();
            if batch.is_empty() {
                break;
            }
            self.commit_restore(
                |txn| {
                    for (key, block) in batch {
                        txn.put::<EventBlocksF>(key, block);
                    }
                    Ok(())
                },
                None,
                false,
            )?;
        }
        // Ordered indexes: format 2 kept them in `ranges`, format 3 in bitmaps.
        let ranged = self.catalog().ranged.clone();
        let slices = self.range_slices(&ranged)?;
        self.commit_restore(
            |txn| {
                for (key, bitmap) in slices {
                    let chunks: std::collections::BTreeSet<u16> =
                        bitmap.iter().map(|pid| (pid >> 16) as u16).collect();
                    for chunk in chunks {
                        let members = chunk_of(&bitmap, chunk);
                        txn.put::<BitmapsF>(key.chunk_key(chunk), encode_chunk(&members));
                    }
                }
                Ok(())
            },
            None,
            false,
        )
    }
}

fn into_refusal(r: Result<()>) -> Result<std::result::Result<(), InputError>> {
    match r {
        Ok(()) => Ok(Ok(())),
        Err(Error::Input(e)) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}
