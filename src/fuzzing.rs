//! Fuzz entry points: one function per target in `fuzz/fuzz_targets/`, each also replayed
//! over its corpus by `tests/fuzz_corpus.rs` on stable Rust.
//!
//! Each function takes arbitrary bytes and panics only when it finds a real bug: a panic
//! from the code under test, or a broken invariant, asserted with a message. Invalid input
//! is never a reason to panic. Not part of the supported API.
//!
//! - [`record_decode`]: every record decoder, through the envelope and straight past the
//!   checksum.
//! - [`ingest_json`]: one ingest message against a small database, which must then pass
//!   `verify`.
//! - [`query_parse`]: the condition-language and filter-JSON parsers; printing round-trips.
//! - [`ops_model`]: a sequence of operations (and reopen and crash steps) against a
//!   plain in-memory model.
//! - [`open_damaged`]: a small database with its files damaged: typed errors or reported
//!   loss, never silently fewer records.

mod query;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::model::{Channel, Ident, ObjectRef, Platform, TrackKind, Value};
use crate::store::bitmaps::{
    decode_chunk, decode_log, encode_chunk, encode_log, BitmapKey, LogEntries,
};
use crate::store::codec::{self, RECORD_VERSION};
use crate::store::records::{
    ActivityRecord, AttributesRecord, DeliveryRecord, DeviceRecord, MetaValue, ObjectRecord,
    ObjectTypeRecord, PersonRecord, RelationshipRecord, SegmentRecord, SuppressedRecord,
    TopicRecord,
};
use crate::store::{
    ident_from_key, ident_key, pid_from_key, pid_key, track_kind_name, ActivityF,
    AnonRelationshipsF, AnonymousF, BitmapLogF, DeliveriesF, EventBlocksF, EventIdsF, Family,
    MembersF, ObjectsF, RelationshipsF,
};
use crate::{
    DeviceInput, Durability, Error, Faults, Identify, ManualClock, Metric, NewDelivery, Op,
    ProfileDb, Track,
};

pub use query::query_parse;

/// The clock of every database the fuzzers open: fixed, so runs are repeatable.
const T0: i64 = 1_767_225_600;

// ---------------------------------------------------------------------------------------
// record_decode

/// Wraps `payload` in a valid envelope for `key` in the family tagged `tag` (version byte
/// and checksum), so that the payload decoders behind the checksum see fuzzed bytes.
fn envelope(tag: u8, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&(codec::checksum(tag, key, payload) ^ 0xFFFF_FFFF).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The family tag and key the payload laws seal their envelopes with.
const LAW_TAG: u8 = 4;
const LAW_KEY: &[u8] = b"fuzz";

/// The laws of one payload type: the envelope decoder agrees with the bare payload
/// decoder, and whatever decodes re-encodes to something that decodes to the same value.
fn payload_laws<T>(payload: &[u8])
where
    T: bincode::Encode + bincode::Decode<()> + PartialEq + Debug,
{
    let bare = codec::decode_payload::<T>(payload);
    let wrapped = codec::decode::<T>(LAW_TAG, LAW_KEY, &envelope(LAW_TAG, LAW_KEY, payload));
    match (&bare, &wrapped) {
        (Ok(a), Ok(b)) => assert!(a == b, "envelope and payload decoders disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "envelope and payload decoders disagree on {}: {bare:?} vs {wrapped:?}",
            std::any::type_name::<T>()
        ),
    }
    if let Ok(value) = bare {
        let bytes = codec::encode(LAW_TAG, LAW_KEY, &value).unwrap_or_else(|e| {
            panic!(
                "a decoded {} does not encode: {e}",
                std::any::type_name::<T>()
            )
        });
        match codec::decode::<T>(LAW_TAG, LAW_KEY, &bytes) {
            Ok(again) => assert!(
                again == value,
                "decode(encode(x)) != x for {}: {value:?} vs {again:?}",
                std::any::type_name::<T>()
            ),
            Err(e) => panic!(
                "a re-encoded {} does not decode ({e}): {value:?}",
                std::any::type_name::<T>()
            ),
        }
    }
}

/// Asserts that a key a decoder accepted is exactly the key its encoder builds from the
/// decoded parts: keys are canonical, so two keys never name one record.
#[track_caller]
fn key_law(family: &str, key: &[u8], rebuilt: &[u8]) {
    assert!(
        key == rebuilt,
        "{family} key {} decodes, but its parts encode as {}",
        codec::hex(key),
        codec::hex(rebuilt)
    );
}

fn key_laws(k: &[u8]) {
    if let Ok(pid) = pid_from_key(Family::People, k) {
        key_law("people", k, &pid_key(pid));
    }
    if let Ok((kind, v)) = ident_from_key(Family::Identifiers, k) {
        key_law("identifiers", k, &ident_key(kind, &v));
    }
    if let Ok((pid, t, seq)) = ActivityF::decode_key(k) {
        key_law("activity", k, &ActivityF::key(pid, t, seq));
    }
    if let Ok((owner, id)) = EventIdsF::decode_key(k) {
        key_law("event_ids", k, &EventIdsF::key(&owner, &id));
    }
    if let Ok((anon, t, seq)) = AnonymousF::decode_key(k) {
        key_law("anonymous", k, &AnonymousF::key(&anon, t, seq));
    }
    if let Ok((pid, t, id)) = DeliveriesF::decode_key(k) {
        key_law("deliveries", k, &DeliveriesF::key(pid, t, &id));
    }
    if let Ok((t, o)) = ObjectsF::decode_key(k) {
        key_law("objects", k, &ObjectsF::key(t, &o));
    }
    if let Ok((pid, t, o)) = RelationshipsF::decode_key(k) {
        key_law("relationships", k, &RelationshipsF::key(pid, t, &o));
    }
    if let Ok((t, o, pid)) = MembersF::decode_key(k) {
        key_law("members", k, &MembersF::key(t, &o, pid));
    }
    if let Ok((a, t, o)) = AnonRelationshipsF::decode_key(k) {
        key_law("anon_relationships", k, &AnonRelationshipsF::key(&a, t, &o));
    }
    if let Ok((code, name, day, block)) = EventBlocksF::decode_key(k) {
        let kind = track_kind_name(code);
        key_law(
            "event_blocks",
            k,
            &EventBlocksF::key(kind, &name, day, block),
        );
    }
    if let Ok((bk, chunk)) = BitmapKey::decode_chunk_key(k) {
        key_law("bitmaps", k, &bk.chunk_key(chunk));
    }
    if let Ok((seq, part)) = BitmapLogF::decode_key(k) {
        key_law("bitmap_log", k, &BitmapLogF::key(seq, part));
    }
    if let Ok((seq, part)) = crate::store::ChangesF::decode_key(k) {
        key_law("changes", k, &crate::store::ChangesF::key(seq, part));
    }
}

fn chunk_laws(chunk: u16, bytes: &[u8]) {
    if let Ok(bitmap) = decode_chunk(&[], chunk, bytes) {
        let lo = u32::from(chunk) << 16;
        assert!(
            bitmap.iter().all(|m| m >> 16 == lo >> 16),
            "a decoded chunk {chunk} holds members outside its range"
        );
        match decode_chunk(&[], chunk, &encode_chunk(&bitmap)) {
            Ok(again) => assert!(again == bitmap, "chunk {chunk} does not round-trip"),
            Err(e) => panic!("a re-encoded chunk {chunk} does not decode: {e}"),
        }
    }
}

/// A `bitmap_log` value that decodes re-encodes to the same entries.
fn log_laws(bytes: &[u8]) {
    let Ok(entries) = codec::decode_payload::<LogEntries>(bytes) else {
        return;
    };
    if let Ok(changes) = decode_log(&[], entries.clone()) {
        for (_, add, remove) in &changes {
            assert!(
                add.windows(2).all(|w| w.first() < w.get(1))
                    && remove.windows(2).all(|w| w.first() < w.get(1)),
                "decoded log pids are not strictly ascending"
            );
        }
        assert!(
            encode_log(&changes) == entries,
            "a decoded log record does not re-encode to itself"
        );
    }
}

/// Arbitrary bytes into every record decoder: the envelope and payload of each family's
/// values, each key codec, and bitmap chunks. The checksum stops almost every mutation
/// before the payload decoder, so the first byte also selects a value type whose payload
/// decoder gets the rest directly (and, in a valid envelope, the full decoder).
///
/// # Panics
/// On a decoder that panics, or one that breaks its laws (see `payload_laws`,
/// `key_laws`, `chunk_laws`): real bugs.
pub fn record_decode(bytes: &[u8]) {
    crate::store::decode_everything(bytes);
    block_laws(bytes);
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    match selector % 23 {
        0 => payload_laws::<MetaValue>(rest),
        1 => payload_laws::<PersonRecord>(rest),
        2 => payload_laws::<u32>(rest),
        3 => payload_laws::<AttributesRecord>(rest),
        4 => payload_laws::<ActivityRecord>(rest),
        5 => payload_laws::<SuppressedRecord>(rest),
        6 => payload_laws::<DeliveryRecord>(rest),
        7 => payload_laws::<DeviceRecord>(rest),
        8 => payload_laws::<ObjectRecord>(rest),
        9 => payload_laws::<ObjectTypeRecord>(rest),
        10 => payload_laws::<RelationshipRecord>(rest),
        11 => payload_laws::<(i64, u64)>(rest),
        12 => payload_laws::<(u32, i64)>(rest),
        13 => payload_laws::<TopicRecord>(rest),
        14 => payload_laws::<SegmentRecord>(rest),
        15 => payload_laws::<Value>(rest),
        16 => payload_laws::<Vec<u8>>(rest),
        17 => {
            // A family, a key of the length the next byte says, and a value in a valid
            // envelope: the whole of `verify`'s per-record check.
            let Some((&f, rest)) = rest.split_first() else {
                return;
            };
            let Some((&len, rest)) = rest.split_first() else {
                return;
            };
            let family = Family::ALL
                .get(usize::from(f) % Family::ALL.len())
                .copied()
                .unwrap_or(Family::Meta);
            let (key, value) = rest.split_at(usize::from(len).min(rest.len()));
            let _ = family.check_record(key, &envelope(family.tag(), key, value));
        }
        18 => key_laws(rest),
        19 => log_laws(rest),
        20 => payload_laws::<crate::store::event_blocks::EventBlock>(rest),
        21 => {
            let (chunk, rest) = match rest.split_first_chunk::<2>() {
                Some((c, r)) => (u16::from_be_bytes(*c), r),
                None => (0, rest),
            };
            chunk_laws(chunk, rest);
        }
        _ => payload_laws::<crate::store::records::ChangesRecord>(rest),
    }
}

/// An `activity` block (a 20-byte key, then the entries past the checksum): entries that
/// decode re-encode into a block, under the same key, that decodes to them again.
fn block_laws(bytes: &[u8]) {
    use crate::store::timeline::{decode_block, decode_entries, encode_block};
    let Some((key, rest)) = bytes.split_at_checked(20) else {
        return;
    };
    let Ok(records) = decode_entries(key, rest) else {
        return;
    };
    let pairs: Vec<(&[u8], &[u8])> = records
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let Some((k, v)) = encode_block(&pairs) else {
        panic!("decoded block entries do not encode");
    };
    assert_eq!(k, key, "a re-encoded block moved to another key");
    assert_eq!(
        decode_block(&k, &v).as_ref(),
        Ok(&records),
        "block round trip"
    );
}

// ---------------------------------------------------------------------------------------
// ingest_json

/// How many messages one ingest database takes before it is replaced with a fresh one,
/// so that it stays small (and `verify`, which reads everything, stays fast).
const INGEST_DB_MESSAGES: u32 = 200;

struct IngestDb {
    db: ProfileDb,
    messages: u32,
    // Dropped after `db` (field order), removing the directory.
    _dir: tempfile::TempDir,
}

fn open_ingest_db() -> IngestDb {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let db = fuzz_builder()
        .open(dir.path())
        .unwrap_or_else(|e| panic!("opening a fresh database failed: {e}"));
    // A topic, indexed attributes and segments, so messages exercise their maintenance.
    let setup = || -> crate::Result<()> {
        db.define_topic(1, "news", true)?;
        db.index_attribute("plan")?;
        db.create_segment("manual", None)?;
        db.create_segment("pro", Some("attr.plan = \"pro\""))?;
        db.create_segment("buyers", Some("event:purchase and not unsubscribed"))?;
        Ok(())
    };
    setup().unwrap_or_else(|e| panic!("setting up the ingest database failed: {e}"));
    IngestDb {
        db,
        messages: 0,
        _dir: dir,
    }
}

fn fuzz_builder() -> crate::Builder {
    // The change feed is on, so every write also runs its collection, and damage and
    // crashes reach its records.
    ProfileDb::builder()
        .durability(Durability::Buffered)
        .cache_bytes(4 << 20)
        .clock(Arc::new(ManualClock::new(T0)))
        .change_feed(Some(crate::ChangeFeed::default()))
}

/// The change feed reads whole from its oldest cursor, and the people it created minus
/// those it deleted are the people the database holds (the feed of every database this
/// is run on keeps its changes far longer than its clock moves, so nothing has expired).
fn feed_law(db: &ProfileDb, step: usize) {
    let status = match db.change_feed() {
        Ok(Some(s)) => s,
        other => panic!("step {step}: the change feed is not on: {other:?}"),
    };
    let mut at = status.oldest;
    let mut people = 0i64;
    loop {
        let page = db
            .changes(at, 4096)
            .unwrap_or_else(|e| panic!("step {step}: reading the change feed failed: {e}"));
        for c in &page.changes {
            match c.kind {
                crate::ChangeKind::PersonCreated { .. } => people += 1,
                crate::ChangeKind::PersonDeleted { .. } => people -= 1,
                _ => {}
            }
        }
        at = page.next;
        if !page.more {
            break;
        }
    }
    let held = db
        .counts()
        .unwrap_or_else(|e| panic!("step {step}: counts failed: {e}"))
        .people;
    assert!(
        i64::try_from(held).is_ok_and(|h| h == people),
        "step {step}: the change feed created {people} people net, the database holds {held}"
    );
}

thread_local! {
    static INGEST: RefCell<Option<IngestDb>> = const { RefCell::new(None) };
}

/// Arbitrary bytes as one ingest message (lossily decoded to text) against a small
/// database kept for the process (replaced every few hundred messages). The message must
/// not panic and may fail only as input (a rejection in the report); a message applying
/// nothing must change nothing; after every message the database passes `verify`.
///
/// # Panics
/// On a panic in ingest, an `Err` from ingest (storage or corruption on a healthy
/// database), or a database that fails `verify`: real bugs.
pub fn ingest_json(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    INGEST.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot
            .as_ref()
            .is_none_or(|s| s.messages >= INGEST_DB_MESSAGES)
        {
            *slot = None; // close the old one before opening the next
            *slot = Some(open_ingest_db());
        }
        let Some(state) = slot.as_mut() else {
            return;
        };
        state.messages += 1;
        let db = &state.db;
        let seq = || {
            db.stats()
                .map(|s| s.commit_seq)
                .unwrap_or_else(|e| panic!("stats failed on a healthy database: {e}"))
        };
        let before = seq();
        let report = db
            .ingest_str(&text)
            .unwrap_or_else(|e| panic!("ingest failed on a healthy database: {e}"));
        if report.applied == 0 {
            let after = seq();
            assert!(
                before == after,
                "a message that applied nothing committed something ({before:?} -> {after:?}); \
                 rejections: {:?}",
                report.rejected
            );
        }
        let verify = db
            .verify()
            .unwrap_or_else(|e| panic!("verify failed to run: {e}"));
        assert!(
            verify.is_ok(),
            "after ingesting {text:?} verify found: {:?}",
            verify.problems
        );
    });
}

// ---------------------------------------------------------------------------------------
// open_damaged

/// A small valid database, closed cleanly: its files (relative path, bytes) and everyone
/// in it.
struct Pristine {
    files: Vec<(PathBuf, Vec<u8>)>,
    people: Vec<crate::Person>,
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            read_tree(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            out.push((rel, std::fs::read(&path)?));
        }
    }
    Ok(())
}

/// How many synthetic people the damaged database holds.
const DAMAGED_PEOPLE: u64 = 40;

fn build_pristine() -> Pristine {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let db = fuzz_builder()
        .open(dir.path())
        .unwrap_or_else(|e| panic!("opening a fresh database failed: {e}"));
    let build = || -> crate::Result<Vec<crate::Person>> {
        db.create_segment("pro", Some("attr.plan = \"pro\""))?;
        // Several commits and flushes, so sled's log holds many entries.
        for n in 0..DAMAGED_PEOPLE {
            db.write_batch(&crate::synth::person_ops(n, crate::synth::SEED, T0))?;
            if n % 10 == 9 {
                db.flush()?;
            }
            // The last people's commits stay in the bitmap log (close checkpoints only
            // after more than this was written), so damage reaches log records too.
            if n + 3 == DAMAGED_PEOPLE {
                db.checkpoint()?;
            }
        }
        assert!(
            !db.raw_records(Family::BitmapLog)?.is_empty(),
            "the pristine database holds bitmap log records"
        );
        db.people()
    };
    let people = build().unwrap_or_else(|e| panic!("building the database failed: {e}"));
    assert!(
        people.len() as u64 == DAMAGED_PEOPLE,
        "synthetic people lost"
    );
    db.close()
        .unwrap_or_else(|e| panic!("closing the database failed: {e}"));
    // sled lets go of its files a moment after the last handle is dropped.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut files = Vec::new();
    read_tree(dir.path(), dir.path(), &mut files)
        .unwrap_or_else(|e| panic!("reading the database files failed: {e}"));
    Pristine { files, people }
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(build_pristine)
}

/// Reads small numbers off the front of the fuzz input; zeros when it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    /// A number below `n` (which must be > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }
    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }
}

/// Applies the damage the input describes to the files: each step names a file and a
/// position and flips a bit, truncates, zeroes a range, or overwrites bytes.
fn damage(files: &mut [(PathBuf, Vec<u8>)], input: &mut Input<'_>) -> Vec<String> {
    let mut log = Vec::new();
    while !input.is_empty() && log.len() < 8 {
        let kind = input.byte() % 4;
        let which = input.below(files.len());
        let Some((name, bytes)) = files.get_mut(which) else {
            break;
        };
        let len = bytes.len();
        let pos = (input.u32() as usize) % len.max(1);
        match kind {
            0 => {
                let bit = input.byte() % 8;
                if let Some(b) = bytes.get_mut(pos) {
                    *b ^= 1 << bit;
                }
                log.push(format!(
                    "flip bit {bit} of byte {pos} of {}",
                    name.display()
                ));
            }
            1 => {
                bytes.truncate(pos);
                log.push(format!("truncate {} to {pos} bytes", name.display()));
            }
            2 => {
                let n = usize::from(input.byte()) * 16 + 1;
                let end = pos.saturating_add(n).min(len);
                if let Some(range) = bytes.get_mut(pos..end) {
                    range.fill(0);
                }
                log.push(format!("zero bytes {pos}..{end} of {}", name.display()));
            }
            _ => {
                let n = usize::from(input.byte() % 8) + 1;
                for i in 0..n {
                    let v = input.byte();
                    if let Some(b) = bytes.get_mut(pos + i) {
                        *b = v;
                    }
                }
                log.push(format!(
                    "overwrite {n} bytes at {pos} of {}",
                    name.display()
                ));
            }
        }
    }
    log
}

/// The last panic message seen by [`quiet_panic_hook`].
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the panic hook with one that only records the message. sled can panic on
/// damaged files; profiledb contains those panics and returns an error, but libFuzzer's
/// hook would abort the process at the panic itself, before it is contained. The
/// `open_damaged` target installs this; a panic that escapes the public API is still
/// reported (with the recorded message) by [`open_damaged`].
pub fn quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => (*s).to_owned(),
            None => info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("{msg}{at}"));
        }
    }));
}

/// What opening and reading a damaged database came to: `Ok(true)` when it opened and
/// read back whole and sound, `Ok(false)` when damage was reported, `Err` when damage
/// went unreported.
fn read_damaged(dir: &Path, expected: &[crate::Person]) -> Result<bool, String> {
    let db = match ProfileDb::builder()
        .cache_bytes(4 << 20)
        .clock(Arc::new(ManualClock::new(T0)))
        .open(dir)
    {
        Ok(db) => db,
        // Any typed error is a fine answer (DataLoss included); the test is that it is
        // an error and not a panic. Its message must say something.
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error with no message: {e:?}");
            return Ok(false);
        }
    };
    let people = db.people();
    let verify = db.verify();
    let mut lookups_ok = true;
    for p in expected {
        let Some(id) = p.id.as_deref() else { continue };
        match db.person(&Ident::id(id)) {
            Ok(Some(found)) if found == *p => {}
            _ => lookups_ok = false,
        }
    }
    let sound = matches!(&verify, Ok(r) if r.is_ok());
    let whole = if let (Ok(people), true) = (&people, sound) {
        // Open, read and verify all said the database is whole: then it must be.
        if people != expected || !lookups_ok {
            return Err(format!(
                "the damaged database opened without DataLoss and verify found nothing, \
                 but it holds {} of {} people (or they changed)",
                people.len(),
                expected.len()
            ));
        }
        true
    } else {
        false
    };
    drop(db);
    Ok(whole)
}

/// A small valid database (built once per process) copied to a temp dir, its files
/// damaged as the input says (flipped bits, truncation, zeroed ranges, overwritten
/// bytes), then opened, every profile read, and verified. Typed errors and reported data
/// loss are fine; a database that opens without `DataLoss`, reads back and verifies clean
/// must hold every record unchanged.
///
/// # Panics
/// On silently lost or changed records, or a panic escaping the public API (the process
/// aborts with the message): real bugs.
pub fn open_damaged(bytes: &[u8]) {
    let pristine = pristine();
    let mut files = pristine.files.clone();
    let log = damage(&mut files, &mut Input(bytes));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    for (rel, content) in &files {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("write: {e}"));
    }
    let outcome = std::panic::catch_unwind(|| read_damaged(dir.path(), &pristine.people));
    if !matches!(outcome, Ok(Ok(_))) || (log.is_empty() && !matches!(outcome, Ok(Ok(true)))) {
        // Report with the default hook (printing), whatever hook the target installed.
        drop(std::panic::take_hook());
    }
    match outcome {
        Ok(Ok(true)) => {}
        // Without damage the copy must open whole, or every other verdict is vacuous.
        Ok(Ok(false)) if log.is_empty() => {
            panic!("the undamaged copy of the database did not open whole")
        }
        Ok(Ok(false)) => {}
        Ok(Err(silent)) => panic!("{silent}; damage: {log:?}"),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .or_else(|| LAST_PANIC.lock().ok().and_then(|m| m.clone()))
                .unwrap_or_default();
            panic!("a panic escaped the public API: {msg}; damage: {log:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// ops_model

const WHO: [&str; 3] = ["u0", "u1", "u2"];
const ATTRS: [&str; 2] = ["a", "b"];
const EVENTS: [&str; 2] = ["e0", "e1"];
/// How long before the clock's now an event happens: now, within the hours kept per hour,
/// and in days rolled up into one bitmap a day (`index::HOUR_DAYS`).
const AGO: [i64; 4] = [0, 7_200, 40 * 86_400, 100 * 86_400 + 5_000];
/// How far the model database's clock moves at each reopen: past the hours kept per hour,
/// so the next write rolls some of them up into days.
const REOPEN_ADVANCE: i64 = 20 * 86_400;
/// How far back from the clock's now an expiry step cuts (each between two of `AGO`).
const EXPIRE_AGO: [i64; 3] = [3_600, 9 * 86_400, 50 * 86_400];
/// The `within` windows whose counts are checked against each person's own events.
const WINDOWS: [i64; 4] = [3_600, 30 * 86_400, 60 * 86_400, 400 * 86_400];
const TOKENS: [&str; 3] = ["t0", "t1", "t2"];
const DELIVERIES: [&str; 2] = ["d0", "d1"];
const METRICS: [&str; 2] = ["opened", "clicked"];
const OBJECTS: [(u32, &str); 3] = [(1, "o0"), (1, "o1"), (2, "o0")];

fn value(n: u8) -> Value {
    match n % 3 {
        0 => Value::Int(1),
        1 => Value::Int(2),
        _ => Value::String("x".into()),
    }
}

fn pick<T: Copy>(pool: &[T], n: usize) -> T {
    // Every pool is non-empty; `n` comes from `Input::below(pool.len())`.
    #[allow(clippy::indexing_slicing)]
    pool[n % pool.len()]
}

/// One write of the model test. Indices are into the pools above.
#[derive(Debug, Clone)]
enum Write {
    Set {
        who: usize,
        attr: usize,
        value: u8,
    },
    Unset {
        who: usize,
        attr: usize,
    },
    /// `ago`: how long before the clock's now the event happened (an index into `AGO`).
    Event {
        who: usize,
        name: usize,
        ago: usize,
    },
    AddDevice {
        who: usize,
        token: usize,
        ios: bool,
    },
    DeleteDevice {
        who: usize,
        token: usize,
    },
    AddDelivery {
        who: usize,
        id: usize,
    },
    Metric {
        id: usize,
        metric: usize,
    },
    Relate {
        who: usize,
        object: usize,
    },
    Unrelate {
        who: usize,
        object: usize,
    },
    SegmentAdd {
        who: usize,
    },
    SegmentRemove {
        who: usize,
    },
    Merge {
        primary: usize,
        secondary: usize,
    },
    Delete {
        who: usize,
    },
    Suppress {
        who: usize,
    },
    Unsuppress {
        who: usize,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Write(Write),
    /// Several writes as one `write_batch`, with the `at`-th key write failing (if the
    /// batch gets that far): all of it lands or none.
    Crash(Vec<Write>, u64),
    /// Close and reopen.
    Reopen,
    /// Compact the files (`ProfileDb::compact`): nothing the database shows changes.
    Compact,
    /// Expire every occurrence older than the clock's now minus `EXPIRE_AGO[n]`.
    Expire(usize),
}

fn read_write(input: &mut Input<'_>) -> Write {
    let tag = input.byte() % 15;
    let who = input.below(WHO.len());
    match tag {
        0 => Write::Set {
            who,
            attr: input.below(ATTRS.len()),
            value: input.byte(),
        },
        1 => Write::Unset {
            who,
            attr: input.below(ATTRS.len()),
        },
        2 => Write::Event {
            who,
            name: input.below(EVENTS.len()),
            ago: input.below(AGO.len()),
        },
        3 => Write::AddDevice {
            who,
            token: input.below(TOKENS.len()),
            ios: input.bool(),
        },
        4 => Write::DeleteDevice {
            who,
            token: input.below(TOKENS.len()),
        },
        5 => Write::AddDelivery {
            who,
            id: input.below(DELIVERIES.len()),
        },
        6 => Write::Metric {
            id: input.below(DELIVERIES.len()),
            metric: input.below(METRICS.len()),
        },
        7 => Write::Relate {
            who,
            object: input.below(OBJECTS.len()),
        },
        8 => Write::Unrelate {
            who,
            object: input.below(OBJECTS.len()),
        },
        9 => Write::SegmentAdd { who },
        10 => Write::SegmentRemove { who },
        11 => Write::Merge {
            primary: who,
            secondary: input.below(WHO.len()),
        },
        12 => Write::Delete { who },
        13 => Write::Suppress { who },
        _ => Write::Unsuppress { who },
    }
}

fn read_steps(bytes: &[u8]) -> Vec<Step> {
    let mut input = Input(bytes);
    let mut steps = Vec::new();
    while !input.is_empty() && steps.len() < 48 {
        let step = match input.byte() % 32 {
            0 | 16 => Step::Reopen,
            // Rare: a compaction copies the whole database.
            31 => Step::Compact,
            30 => Step::Expire(input.below(EXPIRE_AGO.len())),
            1 | 17 => {
                let n = input.below(4) + 1;
                let writes = (0..n).map(|_| read_write(&mut input)).collect();
                Step::Crash(writes, u64::from(input.byte() % 32) + 1)
            }
            _ => Step::Write(read_write(&mut input)),
        };
        steps.push(step);
    }
    steps
}

/// One person of the model: what the database must show for them.
#[derive(Debug, Clone, Default, PartialEq)]
struct MPerson {
    attrs: BTreeMap<String, Value>,
    events: BTreeMap<String, u64>,
    /// Token → is iOS.
    devices: BTreeMap<String, bool>,
    /// Delivery id → metrics reported.
    deliveries: BTreeMap<String, BTreeSet<String>>,
    related: BTreeSet<(u32, String)>,
    in_manual: bool,
    /// Event name → the time of each occurrence (what an expiry removes; not compared:
    /// `events` holds the counts the database shows).
    times: BTreeMap<String, Vec<i64>>,
}

/// The model: people by `id` (the only identifier the test uses) and suppressed ids.
#[derive(Debug, Clone, Default)]
struct Model {
    people: BTreeMap<String, MPerson>,
    suppressed: BTreeSet<String>,
    /// The database clock's now, for the times of events.
    now: i64,
}

/// The model's verdict on a write the database must refuse.
#[derive(Debug)]
struct Refused;

impl Model {
    /// The person `id` names, created (as an identify with no attributes creates them)
    /// when nobody has it; a suppressed id is refused.
    fn get_or_create(&mut self, id: &str) -> Result<&mut MPerson, Refused> {
        if self.suppressed.contains(id) {
            return Err(Refused);
        }
        Ok(self.people.entry(id.to_owned()).or_default())
    }

    fn delivery_owner(&self, id: &str) -> Option<String> {
        self.people
            .iter()
            .find(|(_, p)| p.deliveries.contains_key(id))
            .map(|(who, _)| who.clone())
    }

    fn apply(&mut self, w: &Write) -> Result<(), Refused> {
        match *w {
            Write::Set {
                who,
                attr,
                value: v,
            } => {
                let p = self.get_or_create(pick(&WHO, who))?;
                p.attrs.insert(pick(&ATTRS, attr).to_owned(), value(v));
            }
            Write::Unset { who, attr } => {
                let p = self.get_or_create(pick(&WHO, who))?;
                p.attrs.remove(pick(&ATTRS, attr));
            }
            Write::Event { who, name, ago } => {
                let now = self.now;
                let p = self.get_or_create(pick(&WHO, who))?;
                *p.events.entry(pick(&EVENTS, name).to_owned()).or_default() += 1;
                p.times
                    .entry(pick(&EVENTS, name).to_owned())
                    .or_default()
                    .push(now - AGO.get(ago).copied().unwrap_or(0));
            }
            Write::AddDevice { who, token, ios } => {
                let who = pick(&WHO, who);
                let token = pick(&TOKENS, token);
                self.get_or_create(who)?;
                // A token belongs to one person: adding it elsewhere moves it.
                for p in self.people.values_mut() {
                    p.devices.remove(token);
                }
                self.get_or_create(who)?
                    .devices
                    .insert(token.to_owned(), ios);
            }
            Write::DeleteDevice { who, token } => {
                if let Some(p) = self.people.get_mut(pick(&WHO, who)) {
                    p.devices.remove(pick(&TOKENS, token));
                }
            }
            Write::AddDelivery { who, id } => {
                let id = pick(&DELIVERIES, id);
                // Recorded once under its id: the same id again is refused.
                if self.delivery_owner(id).is_some() {
                    return Err(Refused);
                }
                self.get_or_create(pick(&WHO, who))?
                    .deliveries
                    .insert(id.to_owned(), BTreeSet::new());
            }
            Write::Metric { id, metric } => {
                let id = pick(&DELIVERIES, id);
                if let Some(owner) = self.delivery_owner(id) {
                    if let Some(d) = self
                        .people
                        .get_mut(&owner)
                        .and_then(|p| p.deliveries.get_mut(id))
                    {
                        d.insert(pick(&METRICS, metric).to_owned());
                    }
                }
            }
            Write::Relate { who, object } => {
                let (t, o) = pick(&OBJECTS, object);
                self.get_or_create(pick(&WHO, who))?
                    .related
                    .insert((t, o.to_owned()));
            }
            Write::Unrelate { who, object } => {
                let (t, o) = pick(&OBJECTS, object);
                if let Some(p) = self.people.get_mut(pick(&WHO, who)) {
                    p.related.remove(&(t, o.to_owned()));
                }
            }
            Write::SegmentAdd { who } => {
                // Unknown people are ignored.
                if let Some(p) = self.people.get_mut(pick(&WHO, who)) {
                    p.in_manual = true;
                }
            }
            Write::SegmentRemove { who } => {
                if let Some(p) = self.people.get_mut(pick(&WHO, who)) {
                    p.in_manual = false;
                }
            }
            Write::Merge { primary, secondary } => {
                let (p, s) = (pick(&WHO, primary), pick(&WHO, secondary));
                // No primary: ignored. No secondary: not found. Both the same: refused.
                if !self.people.contains_key(p) || !self.people.contains_key(s) {
                    return Ok(());
                }
                if p == s {
                    return Err(Refused);
                }
                let Some(sec) = self.people.remove(s) else {
                    return Ok(());
                };
                let Some(pri) = self.people.get_mut(p) else {
                    return Ok(());
                };
                for (k, v) in sec.attrs {
                    pri.attrs.entry(k).or_insert(v);
                }
                for (k, n) in sec.events {
                    *pri.events.entry(k).or_default() += n;
                }
                for (k, t) in sec.times {
                    pri.times.entry(k).or_default().extend(t);
                }
                pri.devices.extend(sec.devices);
                pri.deliveries.extend(sec.deliveries);
                pri.related.extend(sec.related);
                pri.in_manual |= sec.in_manual;
            }
            Write::Delete { who } => {
                self.people.remove(pick(&WHO, who));
            }
            Write::Suppress { who } => {
                let who = pick(&WHO, who);
                self.people.remove(who);
                self.suppressed.insert(who.to_owned());
            }
            Write::Unsuppress { who } => {
                self.suppressed.remove(pick(&WHO, who));
            }
        }
        Ok(())
    }

    /// Every occurrence before `before` expires.
    fn expire(&mut self, before: i64) {
        for p in self.people.values_mut() {
            for (name, times) in &mut p.times {
                times.retain(|t| *t >= before);
                let n = times.len() as u64;
                if n == 0 {
                    p.events.remove(name);
                } else {
                    p.events.insert(name.clone(), n);
                }
            }
        }
    }

    /// The audience counts the test compares, by condition (`M`, `D1`, `D2` stand for
    /// the segment ids).
    fn counts(&self) -> Vec<(&'static str, u64)> {
        let n = |f: &dyn Fn(&MPerson) -> bool| self.people.values().filter(|p| f(p)).count() as u64;
        let ev = |p: &MPerson, e: &str| p.events.get(e).copied().unwrap_or(0);
        let d1 = |p: &MPerson| p.attrs.get("a") == Some(&Value::Int(1));
        let d2 = |p: &MPerson| ev(p, "e0") >= 1 && p.devices.values().any(|ios| *ios);
        vec![
            ("all", n(&|_| true)),
            ("attr.a = 1", n(&d1)),
            ("attr.b exists", n(&|p| p.attrs.contains_key("b"))),
            (
                "attr.a = \"x\" or attr.b = 2",
                n(&|p| {
                    p.attrs.get("a") == Some(&Value::String("x".into()))
                        || p.attrs.get("b") == Some(&Value::Int(2))
                }),
            ),
            ("event:e0", n(&|p| ev(p, "e0") >= 1)),
            ("event:e1 count >= 2", n(&|p| ev(p, "e1") >= 2)),
            (
                "device.platform = \"ios\"",
                n(&|p| p.devices.values().any(|i| *i)),
            ),
            ("related:1", n(&|p| p.related.iter().any(|(t, _)| *t == 1))),
            (
                "related:1:o0",
                n(&|p| p.related.contains(&(1, "o0".into()))),
            ),
            ("related:2", n(&|p| p.related.iter().any(|(t, _)| *t == 2))),
            (
                "delivery:opened",
                n(&|p| p.deliveries.values().any(|m| m.contains("opened"))),
            ),
            ("segment:M", n(&|p| p.in_manual)),
            ("not segment:M", n(&|p| !p.in_manual)),
            ("segment:D1", n(&d1)),
            ("segment:D2", n(&d2)),
        ]
    }

    fn segments_of(p: &MPerson, ids: &Segments) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        if p.in_manual {
            out.insert(ids.manual);
        }
        if p.attrs.get("a") == Some(&Value::Int(1)) {
            out.insert(ids.d1);
        }
        if p.events.get("e0").is_some_and(|n| *n >= 1) && p.devices.values().any(|ios| *ios) {
            out.insert(ids.d2);
        }
        out
    }
}

/// The segment ids of the model test's database.
struct Segments {
    manual: u32,
    d1: u32,
    d2: u32,
}

fn to_op(w: &Write, manual: u32, now: i64) -> Op {
    let id = |n: usize| Ident::id(pick(&WHO, n));
    let object = |n: usize| {
        let (t, o) = pick(&OBJECTS, n);
        ObjectRef::new(t, o)
    };
    match *w {
        Write::Set {
            who,
            attr,
            value: v,
        } => Op::Identify(Identify::new(id(who)).set(pick(&ATTRS, attr), value(v))),
        Write::Unset { who, attr } => {
            Op::Identify(Identify::new(id(who)).remove(pick(&ATTRS, attr)))
        }
        Write::Event { who, name, ago } => {
            let track = Track::event(id(who), pick(&EVENTS, name));
            match AGO.get(ago).copied().unwrap_or(0) {
                0 => Op::Track(track),
                ago => Op::Track(track.timestamp(now - ago)),
            }
        }
        Write::AddDevice { who, token, ios } => Op::AddDevice {
            person: id(who),
            device: DeviceInput::new(
                pick(&TOKENS, token),
                if ios {
                    Platform::Ios
                } else {
                    Platform::Android
                },
            ),
        },
        Write::DeleteDevice { who, token } => Op::DeleteDevice {
            person: id(who),
            token: pick(&TOKENS, token).to_owned(),
        },
        Write::AddDelivery { who, id: d } => Op::AddDelivery {
            person: id(who),
            delivery: NewDelivery::new(pick(&DELIVERIES, d), Channel::Email),
        },
        Write::Metric { id: d, metric } => {
            Op::Metric(Metric::new(pick(&DELIVERIES, d), pick(&METRICS, metric)))
        }
        Write::Relate { who, object: o } => Op::AddRelationship {
            person: id(who),
            object: object(o),
            attributes: Vec::new(),
        },
        Write::Unrelate { who, object: o } => Op::DeleteRelationship {
            person: id(who),
            object: object(o),
        },
        Write::SegmentAdd { who } => Op::AddToSegment {
            segment: manual,
            people: vec![id(who)],
        },
        Write::SegmentRemove { who } => Op::RemoveFromSegment {
            segment: manual,
            people: vec![id(who)],
        },
        Write::Merge { primary, secondary } => Op::Merge {
            primary: id(primary),
            secondary: id(secondary),
        },
        Write::Delete { who } => Op::Delete(id(who)),
        Write::Suppress { who } => Op::Suppress(id(who)),
        Write::Unsuppress { who } => Op::Unsuppress(id(who)),
    }
}

/// Whether `e` is the database refusing a write (bad input or a suppressed identifier,
/// possibly inside a batch), as opposed to a failure.
fn is_refusal(e: &Error) -> bool {
    match e {
        Error::Input(_) | Error::Suppressed { .. } => true,
        Error::InBatch { source, .. } => is_refusal(source),
        _ => false,
    }
}

/// Whether `e` is the fault the crash step injected.
fn is_injected(e: &Error) -> bool {
    match e {
        Error::Storage(crate::StorageError::Injected(_)) => true,
        Error::InBatch { source, .. } => is_injected(source),
        _ => false,
    }
}

fn open_model_db(dir: &Path, faults: &Faults, clock: &ManualClock) -> ProfileDb {
    fuzz_builder()
        .faults(faults.clone())
        .clock(Arc::new(clock.clone()))
        // The clock moves at each reopen: the feed keeps every change regardless.
        .change_feed(Some(
            crate::ChangeFeed::keep_seconds(i64::from(u32::MAX))
                .unwrap_or_else(|e| panic!("a feed setting: {e}")),
        ))
        // A checkpoint (sled closed and reopened under the handle) every few writes.
        .checkpoint_bytes(2 << 10)
        .open(dir)
        .unwrap_or_else(|e| panic!("reopening the model database failed: {e}"))
}

/// Everything the database says about one person, in the model's terms.
fn observe(db: &ProfileDb, who: &str) -> crate::Result<Option<MPerson>> {
    let ident = Ident::id(who);
    let Some(person) = db.person(&ident)? else {
        return Ok(None);
    };
    let mut p = MPerson {
        attrs: person.attributes.into_iter().collect(),
        ..MPerson::default()
    };
    for name in EVENTS {
        let n = db.event_count(&ident, TrackKind::Event, name, None, None)?;
        if n > 0 {
            p.events.insert(name.to_owned(), n);
        }
    }
    for d in db.devices(&ident)? {
        p.devices.insert(d.token, d.platform == Platform::Ios);
    }
    for d in db.deliveries(&ident, 100)? {
        p.deliveries.insert(d.id, d.metrics.into_keys().collect());
    }
    for r in db.relationships(&ident)? {
        p.related.insert((r.object.type_id, r.object.object_id));
    }
    Ok(Some(p))
}

fn check(db: &ProfileDb, model: &Model, ids: &Segments, step: usize, steps: &[Step]) {
    let ctx = || format!("after step {step} of {steps:?}");
    for who in WHO {
        let seen =
            observe(db, who).unwrap_or_else(|e| panic!("reading {who} failed: {e}; {}", ctx()));
        let want = model.people.get(who);
        if let (Some(seen), Some(want)) = (&seen, want) {
            let mut want_no_seg = want.clone();
            want_no_seg.in_manual = false;
            want_no_seg.times.clear();
            assert!(
                *seen == want_no_seg,
                "person {who}: the database has {seen:?}, the model {want:?}; {}",
                ctx()
            );
            let segs: BTreeSet<u32> = db
                .person_segments(&Ident::id(who))
                .unwrap_or_else(|e| panic!("segments of {who}: {e}"))
                .into_iter()
                .map(|s| s.id)
                .collect();
            assert!(
                segs == Model::segments_of(want, ids),
                "person {who} is in segments {segs:?}, the model says {:?}; {}",
                Model::segments_of(want, ids),
                ctx()
            );
        } else {
            assert!(
                seen.is_none() && want.is_none(),
                "person {who}: the database has {seen:?}, the model {want:?}; {}",
                ctx()
            );
        }
        let suppressed = db
            .is_suppressed(&Ident::id(who))
            .unwrap_or_else(|e| panic!("is_suppressed({who}): {e}"));
        assert!(
            suppressed == model.suppressed.contains(who),
            "{who} suppressed: database {suppressed}, model {}; {}",
            model.suppressed.contains(who),
            ctx()
        );
    }
    for (cond, want) in model.counts() {
        let text = cond
            .replace("segment:M", &format!("segment:#{}", ids.manual))
            .replace("segment:D1", &format!("segment:#{}", ids.d1))
            .replace("segment:D2", &format!("segment:#{}", ids.d2));
        let got = db
            .count(&text)
            .unwrap_or_else(|e| panic!("count {text:?} failed: {e}"));
        assert!(
            got == want,
            "count {text:?}: the database says {got}, the model {want}; {}",
            ctx()
        );
    }
    // A window's count, answered from the hour and day bitmaps, equals the people with
    // an occurrence in it read from their own events.
    let now = db.now();
    for window in WINDOWS {
        let text = format!("event:e0 within {window}s");
        let got = db
            .count(&text)
            .unwrap_or_else(|e| panic!("count {text:?} failed: {e}"));
        let mut want = 0;
        for who in WHO {
            let n = db
                .event_count(
                    &Ident::id(who),
                    crate::TrackKind::Event,
                    "e0",
                    Some(now - window),
                    None,
                )
                .unwrap_or_else(|e| panic!("event_count of {who} failed: {e}"));
            want += u64::from(n > 0);
        }
        assert!(
            got == want,
            "count {text:?}: the bitmaps say {got}, the people's events {want}; {}",
            ctx()
        );
    }
    let report = db
        .verify()
        .unwrap_or_else(|e| panic!("verify failed to run: {e}"));
    assert!(
        report.is_ok(),
        "verify found {:?}; {}",
        report.problems,
        ctx()
    );
}

/// An operation sequence read from the bytes (identify, attribute removal, event, device
/// add/delete, delivery and metric, relationship add/delete, manual segment add/remove,
/// merge, delete, suppress, unsuppress; reopen (the clock moves 20 days); compaction;
/// expiry of old events; and a crash step that fails a
/// key write mid-batch through [`Faults`]) run against a fresh database and a plain in-memory model
/// of three people addressed by `id`. After every step each person's profile (attributes,
/// event counts, devices, deliveries and their metrics, relationships, segments), their
/// suppression, and a set of audience counts (including data-driven segments) equal the
/// model's, and `verify` passes.
///
/// # Panics
/// On any disagreement with the model: a real bug (or a wrong model).
pub fn ops_model(bytes: &[u8]) {
    let steps = read_steps(bytes);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let faults = Faults::new();
    let clock = ManualClock::new(T0);
    let mut db = open_model_db(dir.path(), &faults, &clock);
    let setup = || -> crate::Result<Segments> {
        Ok(Segments {
            manual: db.create_segment("manual", None)?,
            d1: db.create_segment("a is 1", Some("attr.a = 1"))?,
            d2: db.create_segment("ios e0", Some("event:e0 and device.platform = \"ios\""))?,
        })
    };
    let ids = setup().unwrap_or_else(|e| panic!("setting up segments failed: {e}"));
    let mut model = Model::default();
    for (i, step) in steps.iter().enumerate() {
        model.now = db.now();
        match step {
            Step::Reopen => {
                db.close().unwrap_or_else(|e| panic!("close failed: {e}"));
                clock.advance(REOPEN_ADVANCE);
                db = open_model_db(dir.path(), &faults, &clock);
                feed_law(&db, i);
            }
            Step::Expire(n) => {
                let before = db.now() - EXPIRE_AGO.get(*n).copied().unwrap_or(0);
                db.expire(before)
                    .unwrap_or_else(|e| panic!("step {i}: expire({before}) failed: {e}"));
                model.expire(before);
            }
            Step::Compact => {
                let done = db
                    .compact()
                    .unwrap_or_else(|e| panic!("step {i}: compaction failed: {e}"));
                assert!(
                    done.is_some(),
                    "step {i}: no read in progress, yet no compaction"
                );
                feed_law(&db, i);
            }
            Step::Write(w) => {
                let mut next = model.clone();
                let want = next.apply(w);
                let got = db.write_batch(&[to_op(w, ids.manual, db.now())]);
                match (want, got) {
                    (Ok(()), Ok(_)) => model = next,
                    (Err(Refused), Err(e)) if is_refusal(&e) => {}
                    (want, got) => panic!(
                        "step {i} {w:?}: the model says {want:?}, the database {got:?}; {steps:?}"
                    ),
                }
            }
            Step::Crash(writes, at) => {
                let mut next = model.clone();
                let want: Result<(), Refused> = writes.iter().try_for_each(|w| next.apply(w));
                let ops: Vec<Op> = writes
                    .iter()
                    .map(|w| to_op(w, ids.manual, db.now()))
                    .collect();
                let before = db
                    .stats()
                    .unwrap_or_else(|e| panic!("stats failed: {e}"))
                    .commit_seq;
                faults.fail_write_at(*at);
                let got = db.write_batch(&ops);
                faults.clear();
                match (want, got) {
                    (Ok(()), Ok(_)) => model = next,
                    (Err(Refused), Err(e)) if is_refusal(&e) => {}
                    (Ok(()), Err(e)) if is_injected(&e) => {
                        // The injected fault: nothing of the batch landed, and the handle
                        // refuses writes until reopened.
                        let again = db.write_batch(&[to_op(
                            &Write::Delete { who: 0 },
                            ids.manual,
                            db.now(),
                        )]);
                        assert!(
                            matches!(again, Err(Error::Poisoned)),
                            "a write after a failed commit was not refused: {again:?}"
                        );
                        // What was committed before stays: flush it (allowed on a poisoned
                        // handle), then reopen.
                        db.flush()
                            .unwrap_or_else(|e| panic!("flush after a failed commit: {e}"));
                        drop(db);
                        db = open_model_db(dir.path(), &faults, &clock);
                        // The fault may have struck after the commit landed (in the
                        // checkpoint or the fold that follows it, which the write reports
                        // as its error): then the batch is there whole, one commit more.
                        let after = db
                            .stats()
                            .unwrap_or_else(|e| panic!("stats failed: {e}"))
                            .commit_seq;
                        if after > before {
                            model = next;
                        }
                    }
                    (want, got) => panic!(
                        "step {i} crash {writes:?} at write {at}: the model says {want:?}, \
                         the database {got:?}; {steps:?}"
                    ),
                }
            }
        }
        check(&db, &model, &ids, i, &steps);
    }
    drop(db);
}
