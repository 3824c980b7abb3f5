//! The peer: the same operations over SQLite tables and indexes, written the way a
//! competent engineer would (and tuned as a reviewer would ask: WAL, a page cache the
//! size of profiledb's, mmap, in-memory temp store, cached prepared statements, one
//! transaction per batch, an index for every access path the workload uses).
//!
//! Semantics follow profiledb's for the workload's operations: identity by `id` and
//! lowercased `email` (suppression checked), attributes as one JSON document with the
//! time each top-level attribute was set, topic preferences and the unsubscribed flag
//! kept as indexed rows/columns, every change recorded in the activity timeline
//! (profile creation, attribute changes with old/new, device and relationship changes,
//! segment entered/exited), data-driven segments re-evaluated on write for the person
//! touched (only the segments reading what changed), clock segments by `refresh`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use profiledb::query::Expr;
use rusqlite::{params, Connection, OptionalExtension, ToSql};
use serde_json::{json, Map, Value as Json};

use super::sql::{self, Names, Reads};
use super::workload::{Work, V};
use super::{Batch, Engine, EQ_INDEXED, NOW, RANGE_INDEXED};

const KIND_ID: i64 = 1;
const KIND_EMAIL: i64 = 2;
const MAX_DEVICES: i64 = 25;

const SCHEMA: &str = "
CREATE TABLE people (
    pid INTEGER PRIMARY KEY,
    id TEXT,
    email TEXT,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    unsubscribed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX people_unsubscribed ON people(unsubscribed) WHERE unsubscribed = 1;
CREATE TABLE identifiers (
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE suppressed (
    kind INTEGER NOT NULL,
    value TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE attributes (
    pid INTEGER PRIMARY KEY,
    data TEXT NOT NULL,
    set_at TEXT NOT NULL
);
CREATE TABLE activity (
    seq INTEGER PRIMARY KEY,
    pid INTEGER NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    data TEXT
);
CREATE INDEX activity_timeline ON activity(pid, time);
CREATE INDEX events_by_person ON activity(pid, name, time) WHERE kind = 'event';
CREATE INDEX events_by_name ON activity(name, time, pid) WHERE kind = 'event';
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    created INTEGER NOT NULL,
    channel TEXT NOT NULL,
    subject TEXT,
    status TEXT NOT NULL,
    metrics TEXT NOT NULL
);
CREATE INDEX deliveries_by_person ON deliveries(pid, created);
CREATE TABLE devices (
    pid INTEGER NOT NULL,
    token TEXT NOT NULL,
    platform TEXT NOT NULL,
    last_used INTEGER NOT NULL,
    status TEXT NOT NULL,
    attrs TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (pid, token)
) WITHOUT ROWID;
CREATE UNIQUE INDEX device_tokens ON devices(token);
CREATE INDEX devices_by_platform ON devices(platform, pid);
CREATE TABLE objects (
    type INTEGER NOT NULL,
    oid TEXT NOT NULL,
    attrs TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (type, oid)
) WITHOUT ROWID;
CREATE TABLE relationships (
    pid INTEGER NOT NULL,
    type INTEGER NOT NULL,
    oid TEXT NOT NULL,
    attrs TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (pid, type, oid)
) WITHOUT ROWID;
CREATE INDEX relationship_members ON relationships(type, oid, pid);
CREATE TABLE topics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    dflt INTEGER NOT NULL
);
CREATE TABLE topic_prefs (
    topic INTEGER NOT NULL,
    subscribed INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (topic, subscribed, pid)
) WITHOUT ROWID;
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    cond TEXT
);
CREATE TABLE segment_members (
    seg INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (seg, pid)
) WITHOUT ROWID;
CREATE INDEX segment_members_by_person ON segment_members(pid, seg);
";

struct Segment {
    id: u32,
    name: String,
    reads: Reads,
    holds: String,
    set: String,
}

#[derive(Default, Clone, Copy)]
struct Touch {
    attrs: bool,
    events: bool,
    devices: bool,
    relations: bool,
}

pub struct SqliteEngine {
    pub conn: Connection,
    dir: PathBuf,
    now: i64,
    segments: Vec<Segment>,
    segment_ids: BTreeMap<String, u32>,
    topics: BTreeMap<u32, bool>,
}

/// Reads the newest `limit` timeline entries of `pid` (decoding each entry's data, as
/// profiledb does) and counts them.
fn timeline_rows(c: &Connection, pid: i64, limit: usize) -> usize {
    let mut stmt = c
        .prepare_cached(
            "SELECT seq, time, kind, name, data FROM activity WHERE pid = ?1 \
             ORDER BY time DESC, seq DESC LIMIT ?2",
        )
        .expect("prepare");
    let rows = stmt
        .query_map(params![pid, limit as i64], |r| {
            let data: Option<String> = r.get(4)?;
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                data.map(|d| serde_json::from_str::<Json>(&d).expect("json")),
            ))
        })
        .expect("activity");
    collect_rows(rows)
}

/// Reads every row (as the profiledb side builds its vectors) and counts them.
fn collect_rows<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> usize {
    let rows: Vec<T> = rows.collect::<rusqlite::Result<_>>().expect("rows");
    rows.len()
}

fn topic_of(name: &str) -> Option<i64> {
    name.strip_prefix("cio_subscription_preferences.topics.topic_")?
        .parse()
        .ok()
}

/// Sets (or with `None` removes) the value at the dotted `path`.
fn set_path(map: &mut Map<String, Json>, path: &[&str], value: Option<Json>) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Some(v) => {
                map.insert((*first).to_owned(), v);
            }
            None => {
                map.remove(*first);
            }
        }
        return;
    }
    let child = map
        .entry((*first).to_owned())
        .or_insert_with(|| Json::Object(Map::new()));
    if !child.is_object() {
        *child = Json::Object(Map::new());
    }
    if let Json::Object(c) = child {
        set_path(c, rest, value);
        if c.is_empty() {
            map.remove(*first);
        }
    }
}

fn get_path<'a>(map: &'a Map<String, Json>, path: &[&str]) -> Option<&'a Json> {
    let (first, rest) = path.split_first()?;
    let v = map.get(*first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        get_path(v.as_object()?, rest)
    }
}

/// Makes SQLite allocate through Rust's global allocator (mimalloc in the benches), so
/// that both engines run on the same allocator. Runs once per process, before SQLite
/// initializes; panics if SQLite refuses it.
pub fn use_global_allocator() {
    use std::alloc::{alloc, dealloc, realloc, Layout};
    use std::ffi::{c_int, c_void};
    use std::ptr::null_mut;

    // Each block carries its size in a 16-byte header, for free, realloc and xSize.
    const HEAD: usize = 16;
    fn layout(total: usize) -> Option<Layout> {
        Layout::from_size_align(total, HEAD).ok()
    }
    unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
        let total = usize::try_from(n).unwrap_or(0) + HEAD;
        let Some(l) = layout(total) else {
            return null_mut();
        };
        // SAFETY: the layout is non-zero in size; the header is written inside it.
        unsafe {
            let base = alloc(l);
            if base.is_null() {
                return null_mut();
            }
            base.cast::<usize>().write(total);
            base.add(HEAD).cast()
        }
    }
    unsafe extern "C" fn x_free(p: *mut c_void) {
        if p.is_null() {
            return;
        }
        // SAFETY: `p` came from x_malloc/x_realloc, so its header precedes it.
        unsafe {
            let base = p.cast::<u8>().sub(HEAD);
            let total = base.cast::<usize>().read();
            if let Some(l) = layout(total) {
                dealloc(base, l);
            }
        }
    }
    unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
        if p.is_null() {
            // SAFETY: as x_malloc.
            return unsafe { x_malloc(n) };
        }
        let new_total = usize::try_from(n).unwrap_or(0) + HEAD;
        // SAFETY: `p` came from x_malloc/x_realloc; the old layout is in its header.
        unsafe {
            let base = p.cast::<u8>().sub(HEAD);
            let Some(old) = layout(base.cast::<usize>().read()) else {
                return null_mut();
            };
            let moved = realloc(base, old, new_total);
            if moved.is_null() {
                return null_mut();
            }
            moved.cast::<usize>().write(new_total);
            moved.add(HEAD).cast()
        }
    }
    unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
        if p.is_null() {
            return 0;
        }
        // SAFETY: `p` came from x_malloc/x_realloc.
        let total = unsafe { p.cast::<u8>().sub(HEAD).cast::<usize>().read() };
        c_int::try_from(total - HEAD).unwrap_or(c_int::MAX)
    }
    unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
        n.saturating_add(7) & !7
    }
    unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
        rusqlite::ffi::SQLITE_OK
    }
    unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let methods = rusqlite::ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: null_mut(),
        };
        // SAFETY: called before any connection exists in this process; SQLite copies
        // the methods before returning.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_shutdown();
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const rusqlite::ffi::sqlite3_mem_methods,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK, "SQLite refused the allocator");
    });
}

impl SqliteEngine {
    pub fn open(dir: &Path, cache_bytes: u64) -> SqliteEngine {
        use_global_allocator();
        let conn = Connection::open(dir.join("peer.sqlite3")).expect("open sqlite");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("wal");
        assert_eq!(mode, "wal");
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -{};
             PRAGMA mmap_size = 2147418112;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 4096;",
            cache_bytes / 1024
        ))
        .expect("pragmas");
        let exists: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'people'",
                [],
                |r| r.get(0),
            )
            .expect("schema check");
        if !exists {
            conn.execute_batch(SCHEMA).expect("schema");
        }
        conn.set_prepared_statement_cache_capacity(256);
        let mut engine = SqliteEngine {
            conn,
            dir: dir.to_path_buf(),
            now: NOW,
            segments: Vec::new(),
            segment_ids: BTreeMap::new(),
            topics: BTreeMap::new(),
        };
        if exists {
            engine.load_catalog();
        }
        engine
    }

    /// On reopen: the topic defaults and segment definitions, as profiledb loads its
    /// catalog at open.
    fn load_catalog(&mut self) {
        let topics: Vec<(u32, bool)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, dflt FROM topics")
                .expect("topics");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("topics");
            rows.collect::<rusqlite::Result<_>>().expect("topics")
        };
        self.topics = topics.into_iter().collect();
        let segments: Vec<(u32, String, Option<String>)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, name, cond FROM segments ORDER BY id")
                .expect("segments");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .expect("segments");
            rows.collect::<rusqlite::Result<_>>().expect("segments")
        };
        for (id, name, cond) in segments {
            self.segment_ids.insert(name.clone(), id);
            if let Some(condition) = cond {
                let expr: Expr = profiledb::query::parse(&condition).expect("condition");
                let mut reads = Reads::default();
                let names = self.names();
                let holds = format!("SELECT {}", sql::holds(&expr, &names, &mut reads));
                let (set, _) = sql::set(&expr, &names, &mut Reads::default());
                self.segments.push(Segment {
                    id,
                    name,
                    reads,
                    holds,
                    set,
                });
            }
        }
    }

    fn names(&self) -> Names<'_> {
        Names {
            segments: &self.segment_ids,
            topics: &self.topics,
        }
    }

    fn begin(&self) {
        self.conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
    }

    fn commit(&self) {
        self.conn.execute_batch("COMMIT").expect("commit");
    }

    fn record(&self, pid: i64, time: i64, kind: &str, name: Option<&str>, data: &Json) {
        self.conn
            .prepare_cached(
                "INSERT INTO activity (pid, time, kind, name, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .expect("prepare")
            .execute(params![pid, time, kind, name, data.to_string()])
            .expect("activity");
    }

    fn suppressed(&self, kind: i64, value: &str) -> bool {
        self.conn
            .prepare_cached("SELECT 1 FROM suppressed WHERE kind = ?1 AND value = ?2")
            .expect("prepare")
            .exists(params![kind, value])
            .expect("suppressed")
    }

    fn lookup(&self, kind: i64, value: &str) -> Option<i64> {
        self.conn
            .prepare_cached("SELECT pid FROM identifiers WHERE kind = ?1 AND value = ?2")
            .expect("prepare")
            .query_row(params![kind, value], |r| r.get(0))
            .optional()
            .expect("lookup")
    }

    fn next_pid(&self) -> i64 {
        self.conn
            .prepare_cached("SELECT coalesce(max(pid) + 1, 0) FROM people")
            .expect("prepare")
            .query_row([], |r| r.get(0))
            .expect("next pid")
    }

    fn create_person(&self, id: &str, email: Option<(&str, &str)>) -> i64 {
        let pid = self.next_pid();
        self.conn
            .prepare_cached(
                "INSERT INTO people (pid, id, email, created, updated) VALUES (?1, ?2, ?3, ?4, ?4)",
            )
            .expect("prepare")
            .execute(params![pid, id, email.map(|e| e.0), self.now])
            .expect("person");
        let mut put = self
            .conn
            .prepare_cached("INSERT INTO identifiers (kind, value, pid) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        put.execute(params![KIND_ID, id, pid]).expect("id");
        if let Some((_, norm)) = email {
            put.execute(params![KIND_EMAIL, norm, pid]).expect("email");
        }
        let mut ids = Map::new();
        ids.insert("id".into(), json!(id));
        if let Some((given, _)) = email {
            ids.insert("email".into(), json!(given));
        }
        ids.insert("cio_id".into(), json!(format!("{pid:x}")));
        self.record(pid, self.now, "profile_create", None, &Json::Object(ids));
        pid
    }

    /// The person with `id`, created (with nothing else) if missing.
    fn resolve_or_create(&self, id: &str, touched: &mut BTreeMap<i64, Touch>) -> Option<i64> {
        if self.suppressed(KIND_ID, id) {
            return None;
        }
        Some(match self.lookup(KIND_ID, id) {
            Some(pid) => pid,
            None => {
                let pid = self.create_person(id, None);
                touched.entry(pid).or_default().attrs = true;
                pid
            }
        })
    }

    fn identify(&self, id: &str, attrs: &[(String, V)], touched: &mut BTreeMap<i64, Touch>) {
        let email = attrs.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("email", V::S(s)) => Some((s.as_str(), s.to_lowercase())),
            _ => None,
        });
        if self.suppressed(KIND_ID, id)
            || email
                .as_ref()
                .is_some_and(|(_, n)| self.suppressed(KIND_EMAIL, n))
        {
            return;
        }
        let by_id = self.lookup(KIND_ID, id);
        let by_email = email.as_ref().and_then(|(_, n)| self.lookup(KIND_EMAIL, n));
        if let (Some(a), Some(b)) = (by_id, by_email) {
            if a != b {
                return; // the email belongs to someone else: refused
            }
        }
        let (pid, created, mut data, mut set_at, old_email) = match by_id.or(by_email) {
            None => {
                let pid = self.create_person(id, email.as_ref().map(|(g, n)| (*g, n.as_str())));
                (
                    pid,
                    true,
                    Map::new(),
                    Map::new(),
                    email.as_ref().map(|e| e.0.to_owned()),
                )
            }
            Some(pid) => {
                let (data, set_at): (String, String) = self
                    .conn
                    .prepare_cached("SELECT data, set_at FROM attributes WHERE pid = ?1")
                    .expect("prepare")
                    .query_row([pid], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .expect("attributes")
                    .unwrap_or_else(|| ("{}".into(), "{}".into()));
                let old_email: Option<String> = self
                    .conn
                    .prepare_cached("SELECT email FROM people WHERE pid = ?1")
                    .expect("prepare")
                    .query_row([pid], |r| r.get(0))
                    .expect("person");
                (
                    pid,
                    false,
                    serde_json::from_str(&data).expect("attributes json"),
                    serde_json::from_str(&set_at).expect("set_at json"),
                    old_email,
                )
            }
        };
        let mut changes = Map::new();
        let mut topics_changed = Vec::new();
        for (name, v) in attrs {
            if name == "email" {
                continue;
            }
            let path: Vec<&str> = name.split('.').collect();
            let new = v.to_json();
            let old = get_path(&data, &path).cloned();
            if old.as_ref() == Some(&new) {
                continue;
            }
            set_path(&mut data, &path, Some(new.clone()));
            if let Some(top) = path.first() {
                set_at.insert((*top).to_owned(), json!(self.now));
            }
            changes.insert(
                name.clone(),
                json!({ "old": old.unwrap_or(Json::Null), "new": new }),
            );
            if let Some(t) = topic_of(name) {
                topics_changed.push((t, new.as_bool().unwrap_or(false)));
            }
        }
        let mut new_email = None;
        if let Some((given, norm)) = &email {
            let same = old_email.as_deref().map(str::to_lowercase).as_deref() == Some(norm);
            if created {
                changes.insert("email".into(), json!({ "old": null, "new": given }));
            } else if !same && old_email.is_none() {
                new_email = Some((*given, norm.as_str()));
                changes.insert("email".into(), json!({ "old": null, "new": given }));
            }
        }
        if changes.is_empty() {
            return;
        }
        let unsubscribed = data.get("unsubscribed") == Some(&Json::Bool(true));
        if created {
            self.conn
                .prepare_cached("INSERT INTO attributes (pid, data, set_at) VALUES (?1, ?2, ?3)")
                .expect("prepare")
                .execute(params![
                    pid,
                    Json::Object(data).to_string(),
                    Json::Object(set_at).to_string()
                ])
                .expect("attributes");
            if unsubscribed {
                self.conn
                    .prepare_cached("UPDATE people SET unsubscribed = 1 WHERE pid = ?1")
                    .expect("prepare")
                    .execute([pid])
                    .expect("unsubscribed");
            }
        } else {
            self.conn
                .prepare_cached(
                    "INSERT INTO attributes (pid, data, set_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (pid) DO UPDATE SET data = excluded.data, set_at = excluded.set_at",
                )
                .expect("prepare")
                .execute(params![
                    pid,
                    Json::Object(data).to_string(),
                    Json::Object(set_at).to_string()
                ])
                .expect("attributes");
            self.conn
                .prepare_cached(
                    "UPDATE people SET updated = ?2, unsubscribed = ?3, email = coalesce(?4, email) \
                     WHERE pid = ?1",
                )
                .expect("prepare")
                .execute(params![pid, self.now, unsubscribed, new_email.map(|e| e.0)])
                .expect("person");
            if let Some((_, norm)) = new_email {
                self.conn
                    .prepare_cached(
                        "INSERT INTO identifiers (kind, value, pid) VALUES (?1, ?2, ?3)",
                    )
                    .expect("prepare")
                    .execute(params![KIND_EMAIL, norm, pid])
                    .expect("email");
            }
            let mut del = self
                .conn
                .prepare_cached(
                    "DELETE FROM topic_prefs WHERE topic = ?1 AND subscribed IN (0, 1) AND pid = ?2",
                )
                .expect("prepare");
            for (t, _) in &topics_changed {
                del.execute(params![t, pid]).expect("topic");
            }
        }
        let mut put = self
            .conn
            .prepare_cached("INSERT INTO topic_prefs (topic, subscribed, pid) VALUES (?1, ?2, ?3)")
            .expect("prepare");
        for (t, sub) in &topics_changed {
            put.execute(params![t, sub, pid]).expect("topic");
        }
        self.record(
            pid,
            self.now,
            "attribute_change",
            None,
            &Json::Object(changes),
        );
        touched.entry(pid).or_default().attrs = true;
    }

    fn event(
        &self,
        id: &str,
        name: &str,
        props: &[(String, V)],
        ts: i64,
        touched: &mut BTreeMap<i64, Touch>,
    ) {
        let Some(pid) = self.resolve_or_create(id, touched) else {
            return;
        };
        let data: Map<String, Json> = props
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        self.record(pid, ts, "event", Some(name), &Json::Object(data));
        touched.entry(pid).or_default().events = true;
    }

    fn device(
        &self,
        id: &str,
        token: &str,
        platform: &str,
        last_used: i64,
        touched: &mut BTreeMap<i64, Touch>,
    ) {
        let Some(pid) = self.resolve_or_create(id, touched) else {
            return;
        };
        let existing: Option<(i64, String, i64, String)> = self
            .conn
            .prepare_cached("SELECT pid, platform, last_used, status FROM devices WHERE token = ?1")
            .expect("prepare")
            .query_row([token], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
            .expect("device");
        let mine = existing.as_ref().filter(|e| e.0 == pid);
        if mine.is_none() {
            let count: i64 = self
                .conn
                .prepare_cached("SELECT count(*) FROM devices WHERE pid = ?1")
                .expect("prepare")
                .query_row([pid], |r| r.get(0))
                .expect("count");
            assert!(count < MAX_DEVICES, "too many devices");
        }
        if let Some((previous, old_platform, ..)) = existing.as_ref().filter(|e| e.0 != pid) {
            self.conn
                .prepare_cached("DELETE FROM devices WHERE pid = ?1 AND token = ?2")
                .expect("prepare")
                .execute(params![previous, token])
                .expect("move device");
            self.record(
                *previous,
                self.now,
                "device_change",
                None,
                &json!({ "action": "moved", "token": token, "platform": old_platform }),
            );
            touched.entry(*previous).or_default().devices = true;
        }
        if let Some((_, p, l, _)) = mine {
            if p == platform && *l == last_used {
                return;
            }
        }
        let action = if mine.is_some() { "update" } else { "add" };
        self.conn
            .prepare_cached(
                "INSERT INTO devices (pid, token, platform, last_used, status, attrs, created) \
                 VALUES (?1, ?2, ?3, ?4, '', '{}', ?5) \
                 ON CONFLICT (pid, token) DO UPDATE SET platform = excluded.platform, \
                 last_used = excluded.last_used",
            )
            .expect("prepare")
            .execute(params![pid, token, platform, last_used, self.now])
            .expect("device");
        self.record(
            pid,
            self.now,
            "device_change",
            None,
            &json!({ "action": action, "token": token, "platform": platform }),
        );
        touched.entry(pid).or_default().devices = true;
    }

    fn relate(
        &self,
        id: &str,
        type_id: u32,
        object_id: &str,
        attrs: &[(String, V)],
        touched: &mut BTreeMap<i64, Touch>,
    ) {
        let Some(pid) = self.resolve_or_create(id, touched) else {
            return;
        };
        self.conn
            .prepare_cached(
                "INSERT INTO objects (type, oid, attrs, created, updated) VALUES (?1, ?2, '{}', ?3, ?3) \
                 ON CONFLICT DO NOTHING",
            )
            .expect("prepare")
            .execute(params![type_id, object_id, self.now])
            .expect("object");
        let existing: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT attrs FROM relationships WHERE pid = ?1 AND type = ?2 AND oid = ?3",
            )
            .expect("prepare")
            .query_row(params![pid, type_id, object_id], |r| r.get(0))
            .optional()
            .expect("relationship");
        let mut map: Map<String, Json> = existing
            .as_deref()
            .map(|s| serde_json::from_str(s).expect("json"))
            .unwrap_or_default();
        let mut changes = Map::new();
        for (k, v) in attrs {
            let new = v.to_json();
            let old = map.insert(k.clone(), new.clone());
            if old.as_ref() != Some(&new) {
                changes.insert(k.clone(), json!({ "old": old, "new": new }));
            }
        }
        if existing.is_some() && changes.is_empty() {
            return;
        }
        self.conn
            .prepare_cached(
                "INSERT INTO relationships (pid, type, oid, attrs, created) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (pid, type, oid) DO UPDATE SET attrs = excluded.attrs",
            )
            .expect("prepare")
            .execute(params![
                pid,
                type_id,
                object_id,
                Json::Object(map).to_string(),
                self.now
            ])
            .expect("relationship");
        let name = format!("{type_id}:{object_id}");
        let data = if changes.is_empty() {
            Json::Null
        } else {
            Json::Object(changes)
        };
        let kind = if existing.is_none() {
            "add_relationship"
        } else {
            "relationship_attribute_change"
        };
        self.record(pid, self.now, kind, Some(&name), &data);
        touched.entry(pid).or_default().relations = true;
    }

    fn delivery(
        &self,
        id: &str,
        delivery_id: &str,
        subject: &str,
        created: i64,
        touched: &mut BTreeMap<i64, Touch>,
    ) {
        let exists = self
            .conn
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1")
            .expect("prepare")
            .exists([delivery_id])
            .expect("delivery");
        assert!(!exists, "delivery `{delivery_id}` is already recorded");
        let Some(pid) = self.resolve_or_create(id, touched) else {
            return;
        };
        self.conn
            .prepare_cached(
                "INSERT INTO deliveries (id, pid, created, channel, subject, status, metrics) \
                 VALUES (?1, ?2, ?3, 'email', ?4, 'created', '{}')",
            )
            .expect("prepare")
            .execute(params![delivery_id, pid, created, subject])
            .expect("delivery");
    }

    fn metric(&self, delivery_id: &str, metric: &str, ts: i64) {
        let Some((pid, metrics)): Option<(i64, String)> = self
            .conn
            .prepare_cached("SELECT pid, metrics FROM deliveries WHERE id = ?1")
            .expect("prepare")
            .query_row([delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .expect("delivery")
        else {
            return;
        };
        let mut m: Map<String, Json> = serde_json::from_str(&metrics).expect("json");
        let first = !m.contains_key(metric);
        m.entry(metric.to_owned()).or_insert(json!(ts));
        self.conn
            .prepare_cached(
                "UPDATE deliveries SET metrics = ?2, status = CASE WHEN ?3 THEN ?4 ELSE status END \
                 WHERE id = ?1",
            )
            .expect("prepare")
            .execute(params![delivery_id, Json::Object(m).to_string(), first, metric])
            .expect("metric");
        self.record(
            pid,
            ts,
            &format!("{metric}_email"),
            None,
            &json!({ "delivery_id": delivery_id }),
        );
    }

    fn apply(&self, w: &Work, touched: &mut BTreeMap<i64, Touch>) {
        match w {
            Work::Identify { id, attrs } => self.identify(id, attrs, touched),
            Work::Event {
                id,
                name,
                props,
                ts,
            } => self.event(id, name, props, *ts, touched),
            Work::Device {
                id,
                token,
                platform,
                last_used,
            } => self.device(id, token, platform.as_str(), *last_used, touched),
            Work::Relate {
                id,
                type_id,
                object_id,
                attrs,
            } => self.relate(id, *type_id, object_id, attrs, touched),
            Work::Delivery {
                id,
                delivery_id,
                subject,
                created,
            } => self.delivery(id, delivery_id, subject, *created, touched),
            Work::Metric {
                delivery_id,
                metric,
                ts,
            } => self.metric(delivery_id, metric, *ts),
        }
    }

    /// Binds `:pid` and `:now` where the statement has them.
    fn bind<'a>(
        stmt: &rusqlite::Statement<'_>,
        pid: &'a i64,
        now: &'a i64,
    ) -> Vec<(&'static str, &'a dyn ToSql)> {
        let mut out: Vec<(&'static str, &'a dyn ToSql)> = Vec::new();
        if stmt.parameter_index(":pid").ok().flatten().is_some() {
            out.push((":pid", pid));
        }
        if stmt.parameter_index(":now").ok().flatten().is_some() {
            out.push((":now", now));
        }
        out
    }

    /// Re-evaluates, for every person touched, the data-driven segments reading what
    /// changed (and those reading a segment that changed), in creation order; records
    /// entered/exited activity per person.
    fn maintain(&self, touched: &BTreeMap<i64, Touch>) {
        if self.segments.is_empty() {
            return;
        }
        for (&pid, t) in touched {
            let mut changed: BTreeSet<u32> = BTreeSet::new();
            let mut entered = Vec::new();
            let mut exited = Vec::new();
            for s in &self.segments {
                let r = &s.reads;
                let affected = (r.attrs && t.attrs)
                    || (r.events && t.events)
                    || (r.devices && t.devices)
                    || (r.relations && t.relations)
                    || r.segments.iter().any(|x| changed.contains(x));
                if !affected {
                    continue;
                }
                let mut stmt = self.conn.prepare_cached(&s.holds).expect("prepare");
                let binds = Self::bind(&stmt, &pid, &self.now);
                let want: bool = stmt
                    .query_row(binds.as_slice(), |r| r.get(0))
                    .expect("segment check");
                let have = self
                    .conn
                    .prepare_cached("SELECT 1 FROM segment_members WHERE seg = ?1 AND pid = ?2")
                    .expect("prepare")
                    .exists(params![s.id, pid])
                    .expect("member");
                if want == have {
                    continue;
                }
                if want {
                    self.conn
                        .prepare_cached("INSERT INTO segment_members (seg, pid) VALUES (?1, ?2)")
                        .expect("prepare")
                        .execute(params![s.id, pid])
                        .expect("enter");
                    entered.push(s);
                } else {
                    self.conn
                        .prepare_cached("DELETE FROM segment_members WHERE seg = ?1 AND pid = ?2")
                        .expect("prepare")
                        .execute(params![s.id, pid])
                        .expect("exit");
                    exited.push(s);
                }
                changed.insert(s.id);
            }
            for (list, kind) in [(entered, "segment_entered"), (exited, "segment_exited")] {
                self.record_segments(
                    pid,
                    kind,
                    &list
                        .iter()
                        .map(|s| (s.id, s.name.as_str()))
                        .collect::<Vec<_>>(),
                );
            }
        }
    }

    fn record_segments(&self, pid: i64, kind: &str, list: &[(u32, &str)]) {
        if list.is_empty() {
            return;
        }
        let ids: Vec<u32> = list.iter().map(|s| s.0).collect();
        let names: Vec<&str> = list.iter().map(|s| s.1).collect();
        let name = match names.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        self.record(
            pid,
            self.now,
            kind,
            name,
            &json!({ "segment_ids": ids, "segments": names }),
        );
    }
}

impl Engine for SqliteEngine {
    fn ingest_batch(&mut self, batch: &Batch) {
        self.begin();
        let mut touched = BTreeMap::new();
        for w in &batch.work {
            self.apply(w, &mut touched);
        }
        self.maintain(&touched);
        self.commit();
    }

    fn durable_write(&mut self, batch: &Batch) {
        self.conn
            .execute_batch("PRAGMA synchronous = FULL")
            .expect("full");
        self.ingest_batch(batch);
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL")
            .expect("normal");
    }

    fn define_topics(&mut self) {
        for (id, name, default) in profiledb::synth::topics() {
            self.conn
                .execute(
                    "INSERT INTO topics (id, name, dflt) VALUES (?1, ?2, ?3)",
                    params![id, name, default],
                )
                .expect("topic");
            self.topics.insert(id, default);
        }
    }

    fn index_attributes(&mut self) {
        for a in EQ_INDEXED.iter().chain(RANGE_INDEXED.iter()) {
            self.conn
                .execute_batch(&format!(
                    "CREATE INDEX attr_{a} ON attributes(json_extract(data, '$.{a}'))"
                ))
                .expect("index");
        }
    }

    fn create_segment(&mut self, name: &str, condition: &str) {
        let expr: Expr = profiledb::query::parse(condition).expect("condition");
        let id = self.segments.last().map_or(1, |s| s.id + 1);
        let mut reads = Reads::default();
        let names = self.names();
        let holds = format!("SELECT {}", sql::holds(&expr, &names, &mut reads));
        let (set, _) = sql::set(&expr, &names, &mut Reads::default());
        self.begin();
        self.conn
            .execute(
                "INSERT INTO segments (id, name, cond) VALUES (?1, ?2, ?3)",
                params![id, name, condition],
            )
            .expect("segment");
        let fill = format!("INSERT INTO segment_members (seg, pid) SELECT {id}, pid FROM ({set})");
        let mut stmt = self.conn.prepare(&fill).expect("prepare");
        let binds = Self::bind(&stmt, &0, &self.now);
        stmt.execute(binds.as_slice()).expect("members");
        drop(stmt);
        self.commit();
        self.segment_ids.insert(name.to_owned(), id);
        self.segments.push(Segment {
            id,
            name: name.to_owned(),
            reads,
            holds,
            set,
        });
    }

    fn profile_overview(&mut self, id: &str, recent: usize) -> usize {
        let c = &self.conn;
        c.execute_batch("BEGIN").expect("begin");
        let pid = self.lookup(KIND_ID, id).expect("the person exists");
        let (_id, _email, _created, _updated, _unsub): (
            Option<String>,
            Option<String>,
            i64,
            i64,
            bool,
        ) = c
            .prepare_cached(
                "SELECT id, email, created, updated, unsubscribed FROM people WHERE pid = ?1",
            )
            .expect("prepare")
            .query_row([pid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .expect("person");
        let attrs: Option<(String, String)> = c
            .prepare_cached("SELECT data, set_at FROM attributes WHERE pid = ?1")
            .expect("prepare")
            .query_row([pid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .expect("attributes");
        let mut n = 0;
        if let Some((data, set_at)) = attrs {
            let data: Map<String, Json> = serde_json::from_str(&data).expect("json");
            let _set_at: Map<String, Json> = serde_json::from_str(&set_at).expect("json");
            n += data.len();
        }
        let mut stmt = c
            .prepare_cached(
                "SELECT t.id, t.name, coalesce((SELECT p.subscribed FROM topic_prefs p \
                 WHERE p.topic = t.id AND p.subscribed IN (0, 1) AND p.pid = ?1), t.dflt) \
                 FROM topics t ORDER BY t.id",
            )
            .expect("prepare");
        let topics = stmt
            .query_map([pid], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .expect("topics");
        n += collect_rows(topics);
        drop(stmt);
        n += timeline_rows(c, pid, recent);
        let mut stmt = c
            .prepare_cached(
                "SELECT id, created, channel, subject, status, metrics FROM deliveries \
                 WHERE pid = ?1 ORDER BY created DESC, id DESC LIMIT ?2",
            )
            .expect("prepare");
        let rows = stmt
            .query_map(params![pid, recent as i64], |r| {
                let metrics: String = r.get(5)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, String>(4)?,
                    serde_json::from_str::<Json>(&metrics).expect("json"),
                ))
            })
            .expect("deliveries");
        n += collect_rows(rows);
        drop(stmt);
        n += self.segments_of(pid);
        let mut stmt = c
            .prepare_cached(
                "SELECT token, platform, last_used, status, attrs FROM devices WHERE pid = ?1 \
                 ORDER BY token",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([pid], |r| {
                let attrs: String = r.get(4)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    serde_json::from_str::<Json>(&attrs).expect("json"),
                ))
            })
            .expect("devices");
        n += collect_rows(rows);
        drop(stmt);
        let mut stmt = c
            .prepare_cached(
                "SELECT r.type, r.oid, r.attrs, o.attrs FROM relationships r \
                 LEFT JOIN objects o ON o.type = r.type AND o.oid = r.oid WHERE r.pid = ?1",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([pid], |r| {
                let a: String = r.get(2)?;
                let o: Option<String> = r.get(3)?;
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    serde_json::from_str::<Json>(&a).expect("json"),
                    o.map(|o| serde_json::from_str::<Json>(&o).expect("json")),
                ))
            })
            .expect("relationships");
        n += collect_rows(rows);
        drop(stmt);
        c.execute_batch("COMMIT").expect("commit");
        n
    }

    fn timeline_page(&mut self, id: &str, limit: usize) -> usize {
        let Some(pid) = self.lookup(KIND_ID, id) else {
            return 0;
        };
        timeline_rows(&self.conn, pid, limit)
    }

    fn count(&mut self, condition: &str) -> u64 {
        let q = self.count_sql(condition);
        let mut stmt = self.conn.prepare_cached(&q).expect("prepare");
        let binds = Self::bind(&stmt, &0, &self.now);
        stmt.query_row(binds.as_slice(), |r| r.get::<_, i64>(0))
            .expect("count") as u64
    }

    fn segment_list(&mut self, id: &str) -> usize {
        match self.lookup(KIND_ID, id) {
            Some(pid) => self.segments_of(pid),
            None => 0,
        }
    }

    fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    fn refresh(&mut self) -> (u64, u64) {
        self.begin();
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS fresh (pid INTEGER PRIMARY KEY); DELETE FROM fresh;",
            )
            .expect("temp");
        let mut dirty: BTreeSet<u32> = BTreeSet::new();
        let mut changes: BTreeMap<(i64, bool), Vec<(u32, &str)>> = BTreeMap::new();
        let (mut entered_n, mut exited_n) = (0u64, 0u64);
        for s in &self.segments {
            if !s.reads.clock && !s.reads.segments.iter().any(|x| dirty.contains(x)) {
                continue;
            }
            self.conn.execute_batch("DELETE FROM fresh").expect("clear");
            let fill = format!("INSERT INTO fresh (pid) {}", s.set);
            let mut stmt = self.conn.prepare_cached(&fill).expect("prepare");
            let binds = Self::bind(&stmt, &0, &self.now);
            stmt.execute(binds.as_slice()).expect("fresh");
            drop(stmt);
            let entered: Vec<i64> = self
                .conn
                .prepare_cached(
                    "SELECT pid FROM fresh EXCEPT SELECT pid FROM segment_members WHERE seg = ?1",
                )
                .expect("prepare")
                .query_map([s.id], |r| r.get(0))
                .expect("entered")
                .map(|r| r.expect("row"))
                .collect();
            let exited: Vec<i64> = self
                .conn
                .prepare_cached(
                    "SELECT pid FROM segment_members WHERE seg = ?1 EXCEPT SELECT pid FROM fresh",
                )
                .expect("prepare")
                .query_map([s.id], |r| r.get(0))
                .expect("exited")
                .map(|r| r.expect("row"))
                .collect();
            if entered.is_empty() && exited.is_empty() {
                continue;
            }
            dirty.insert(s.id);
            let mut ins = self
                .conn
                .prepare_cached("INSERT INTO segment_members (seg, pid) VALUES (?1, ?2)")
                .expect("prepare");
            for pid in &entered {
                ins.execute(params![s.id, pid]).expect("enter");
                changes
                    .entry((*pid, true))
                    .or_default()
                    .push((s.id, &s.name));
            }
            drop(ins);
            let mut del = self
                .conn
                .prepare_cached("DELETE FROM segment_members WHERE seg = ?1 AND pid = ?2")
                .expect("prepare");
            for pid in &exited {
                del.execute(params![s.id, pid]).expect("exit");
                changes
                    .entry((*pid, false))
                    .or_default()
                    .push((s.id, &s.name));
            }
            entered_n += entered.len() as u64;
            exited_n += exited.len() as u64;
        }
        for ((pid, entered), list) in &changes {
            let kind = if *entered {
                "segment_entered"
            } else {
                "segment_exited"
            };
            self.record_segments(*pid, kind, list);
        }
        self.commit();
        (entered_n, exited_n)
    }

    fn flush(&mut self) {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }

    fn bytes_on_disk(&self) -> u64 {
        super::dir_bytes(&self.dir)
    }

    fn compact(&mut self) {
        self.conn.execute_batch("VACUUM").expect("vacuum");
        self.flush();
    }

    fn explain(&mut self, condition: &str) -> String {
        let q = format!("EXPLAIN QUERY PLAN {}", self.count_sql(condition));
        let mut stmt = self.conn.prepare(&q).expect("prepare");
        let binds = Self::bind(&stmt, &0, &self.now);
        let rows = stmt
            .query_map(binds.as_slice(), |r| r.get::<_, String>(3))
            .expect("plan");
        let steps: Vec<String> = rows.collect::<rusqlite::Result<_>>().expect("plan");
        format!("{q}\n{}", steps.join("\n"))
    }
}

impl SqliteEngine {
    /// `SELECT count(*)` of the people matching `condition`.
    fn count_sql(&self, condition: &str) -> String {
        let expr = profiledb::query::parse(condition).expect("condition");
        sql::count(&expr, &self.names())
    }

    fn segments_of(&self, pid: i64) -> usize {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT s.id, s.name, s.cond IS NOT NULL FROM segment_members m \
                 JOIN segments s ON s.id = m.seg WHERE m.pid = ?1 ORDER BY s.id",
            )
            .expect("prepare");
        let rows = stmt
            .query_map([pid], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })
            .expect("segments");
        collect_rows(rows)
    }
}
