//! The Parquet export (feature `parquet`): every table read back with the parquet crate's
//! own Arrow reader equals what the library's public reads answer, on a synthetic
//! database; bad directories are refused naming `dir`; nothing is ever overwritten.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow_array::{
    Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use profiledb::export::parquet::{ParquetOptions, ParquetReport, TABLES};
use profiledb::{
    parse_condition, ActivityFilter, ChangeFeed, Channel, Cursor, DeviceInput, Durability, Error,
    Ident, IdentKind, Identify, ManualClock, Metric, NewDelivery, ObjectRef, Op, Platform,
    ProfileDb, Track, Value,
};

use common::T0;
use profiledb::Clock;

/// One cell read back.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    U32(u32),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
}

impl Cell {
    fn u32(&self) -> u32 {
        match self {
            Cell::U32(x) => *x,
            other => panic!("expected a u32, got {other:?}"),
        }
    }
    fn u64(&self) -> u64 {
        match self {
            Cell::U64(x) => *x,
            other => panic!("expected a u64, got {other:?}"),
        }
    }
    fn i64(&self) -> i64 {
        match self {
            Cell::I64(x) => *x,
            other => panic!("expected an i64, got {other:?}"),
        }
    }
    fn bool(&self) -> bool {
        match self {
            Cell::Bool(x) => *x,
            other => panic!("expected a bool, got {other:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Cell::Str(x) => x,
            other => panic!("expected a string, got {other:?}"),
        }
    }
    fn opt_str(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Str(x) => Some(x.clone()),
            other => panic!("expected a string or null, got {other:?}"),
        }
    }
    /// A text form for keys.
    fn key_text(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::U32(x) => x.to_string(),
            Cell::U64(x) => x.to_string(),
            Cell::I64(x) => x.to_string(),
            Cell::F64(x) => x.to_string(),
            Cell::Bool(x) => x.to_string(),
            Cell::Str(x) => format!("{x:?}"),
        }
    }
}

type Row = BTreeMap<String, Cell>;

fn cells(batch: &RecordBatch) -> Vec<Row> {
    let schema = batch.schema();
    let mut rows = vec![Row::new(); batch.num_rows()];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let any = column.as_any();
        for (i, row) in rows.iter_mut().enumerate() {
            let cell = if column.is_null(i) {
                Cell::Null
            } else if let Some(a) = any.downcast_ref::<UInt32Array>() {
                Cell::U32(a.value(i))
            } else if let Some(a) = any.downcast_ref::<UInt64Array>() {
                Cell::U64(a.value(i))
            } else if let Some(a) = any.downcast_ref::<Int64Array>() {
                Cell::I64(a.value(i))
            } else if let Some(a) = any.downcast_ref::<Float64Array>() {
                Cell::F64(a.value(i))
            } else if let Some(a) = any.downcast_ref::<BooleanArray>() {
                Cell::Bool(a.value(i))
            } else if let Some(a) = any.downcast_ref::<StringArray>() {
                Cell::Str(a.value(i).to_owned())
            } else {
                panic!("column {} has type {}", field.name(), column.data_type());
            };
            row.insert(field.name().clone(), cell);
        }
    }
    rows
}

/// Every row of `table` in the files `files` names, with the parquet crate's reader;
/// also checks each file's schema names the table's columns in order.
fn read_files(paths: &[&Path], table: &str) -> Vec<Row> {
    let spec = TABLES.iter().find(|t| t.name == table).unwrap();
    let mut out = Vec::new();
    for path in paths {
        let file = std::fs::File::open(path).unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let names: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let expected: Vec<String> = spec
            .columns
            .iter()
            .map(|c| c.name.to_owned())
            .chain(["_commit".to_owned(), "_deleted".to_owned()])
            .collect();
        assert_eq!(names, expected, "{table}'s columns in {}", path.display());
        for batch in builder.build().unwrap() {
            out.extend(cells(&batch.unwrap()));
        }
    }
    out
}

/// Every row of `table` the run `report` wrote.
fn read(report: &ParquetReport, table: &str) -> Vec<Row> {
    let files: Vec<&Path> = report
        .files
        .iter()
        .filter(|f| f.table == table)
        .map(|f| f.path.as_path())
        .collect();
    assert_eq!(files.len(), 1, "one file of {table}");
    read_files(&files, table)
}

/// The key of a row of `table`, as text.
fn key_of(table: &str, row: &Row) -> String {
    let spec = TABLES.iter().find(|t| t.name == table).unwrap();
    spec.columns[..spec.key]
        .iter()
        .map(|c| row[c.name].key_text())
        .collect::<Vec<_>>()
        .join("|")
}

/// The synthetic database: 300 people of the shared workload with topics and
/// segments, plus deliveries with metrics, objects with attributes, a manual segment,
/// two deleted people, a suppressed identifier, device attributes and an anonymous
/// id's events.
fn build(db: &ProfileDb) {
    for (id, name, default) in profiledb::synth::topics() {
        db.define_topic(id, &name, default).unwrap();
    }
    let ops: Vec<Op> = (0..300u64)
        .flat_map(|n| profiledb::synth::person_ops(n, profiledb::synth::SEED, T0))
        .collect();
    for chunk in ops.chunks(500) {
        db.write_batch(chunk).unwrap();
    }
    for (name, cond) in profiledb::synth::segments(6) {
        db.create_segment(&name, Some(&cond)).unwrap();
    }
    let vip = db.create_segment("VIP", None).unwrap();
    db.add_to_segment(
        vip,
        &[
            Ident::id(profiledb::synth::person_id(3)),
            Ident::id(profiledb::synth::person_id(4)),
        ],
    )
    .unwrap();
    db.define_object_type(1, "Companies").unwrap();
    db.identify_object(
        &ObjectRef::new(1, "company-7"),
        vec![
            ("name".into(), "Acme".into()),
            ("seats".into(), 12i64.into()),
        ],
    )
    .unwrap();
    for n in 0..40u64 {
        let who = Ident::id(profiledb::synth::person_id(n));
        let id = format!("dlv-{n}");
        db.add_delivery(
            &who,
            NewDelivery::new(
                &id,
                if n % 2 == 0 {
                    Channel::Email
                } else {
                    Channel::Push
                },
            )
            .campaign_id("7")
            .subject(format!("Hello {n}"))
            .created(T0 - 3_600 + n as i64),
        )
        .unwrap();
        for (i, metric) in ["sent", "delivered", "opened"].iter().enumerate() {
            if n % 3 >= i as u64 {
                db.report_metric(Metric::new(&id, *metric).timestamp(T0 + i as i64 * 60))
                    .unwrap();
            }
        }
    }
    db.add_device(
        &Ident::id(profiledb::synth::person_id(5)),
        DeviceInput::new("tok-extra", Platform::Android).attribute("app_version", "1.2"),
    )
    .unwrap();
    db.identify(
        Identify::new(Ident::id(profiledb::synth::person_id(6)))
            .set("nickname", "Six")
            .set("ratio", 0.25)
            .set("tags", vec!["a", "b"]),
    )
    .unwrap();
    db.delete(&Ident::id(profiledb::synth::person_id(10)))
        .unwrap();
    db.suppress(&Ident::id(profiledb::synth::person_id(11)))
        .unwrap();
    db.suppress(&Ident::email("nobody@example.com")).unwrap();
    db.track(Track::event(Ident::anonymous_id("anon-1"), "viewed").timestamp(T0 - 10))
        .unwrap();
}

fn export(db: &ProfileDb, dir: &Path) -> ParquetReport {
    // Small row groups, so the files hold several.
    db.export_parquet(dir, ParquetOptions::new().row_group_rows(100))
        .unwrap()
}

/// The table's rows keyed, checking that no key repeats.
fn keyed(table: &str, rows: Vec<Row>) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    for row in rows {
        let key = key_of(table, &row);
        assert!(
            out.insert(key.clone(), row).is_none(),
            "{table}: key {key} twice"
        );
    }
    out
}

fn json(v: &Value) -> String {
    v.to_string()
}

#[test]
fn every_table_read_back_equals_the_library_answers() {
    let (dir, db, _clock) = common::open();
    build(&db);
    let out = tempfile::tempdir().unwrap();
    let report = export(&db, out.path());
    let commit = db.stats().unwrap().commit_seq;
    assert_eq!(report.commit, commit);
    assert_eq!(report.files.len(), TABLES.len());
    for t in TABLES {
        for row in read(&report, t.name) {
            assert_eq!(row["_commit"].u64(), commit, "{}", t.name);
            assert!(!row["_deleted"].bool(), "{}", t.name);
        }
    }
    let ident = |pid: u32| Ident::cio_id(format!("{pid:08x}"));

    // people
    let people = db.people().unwrap();
    let rows = keyed("people", read(&report, "people"));
    assert_eq!(rows.len(), people.len());
    assert_eq!(rows.len() as u64, db.counts().unwrap().people);
    let mut pids = BTreeSet::new();
    for p in &people {
        pids.insert(p.pid.0);
        let r = &rows[&p.pid.0.to_string()];
        assert_eq!(r["cio_id"].str(), p.cio_id);
        assert_eq!(r["id"].opt_str(), p.id);
        assert_eq!(r["email"].opt_str(), p.email);
        assert_eq!(r["phone"].opt_str(), p.phone);
        assert_eq!(r["anonymous_id"].opt_str(), p.anonymous_id);
        assert_eq!(r["created"].i64(), p.created);
        assert_eq!(r["updated"].i64(), p.updated);
        assert_eq!(r["unsubscribed"].bool(), p.unsubscribed());
        let suppressed = [IdentKind::Id, IdentKind::Email, IdentKind::Phone]
            .into_iter()
            .filter_map(|k| p.identifier(k).map(|v| Ident::new(k, v)))
            .any(|i| db.is_suppressed(&i).unwrap());
        assert_eq!(r["suppressed"].bool(), suppressed);
    }
    assert!(
        people.iter().any(|p| p.unsubscribed()),
        "the data has unsubscribed people"
    );

    // attributes
    let rows = keyed("attributes", read(&report, "attributes"));
    let mut expected = 0;
    for p in &people {
        for (name, value) in &p.attributes {
            expected += 1;
            let r = &rows[&format!("{}|{name:?}", p.pid.0)];
            assert_eq!(r["value"].str(), json(value));
            assert_eq!(
                r["set_at"],
                p.timestamps.get(name).map_or(Cell::Null, |t| Cell::I64(*t))
            );
            match value {
                Value::String(s) => {
                    assert_eq!(r["value_type"].str(), "string");
                    assert_eq!(r["value_string"].str(), s);
                }
                Value::Int(x) => {
                    assert_eq!(r["value_type"].str(), "int");
                    assert_eq!(r["value_int"].i64(), *x);
                    assert_eq!(r["value_float"], Cell::F64(*x as f64));
                }
                Value::Float(x) => {
                    assert_eq!(r["value_type"].str(), "float");
                    assert_eq!(r["value_float"], Cell::F64(*x));
                    assert_eq!(r["value_int"], Cell::Null);
                }
                Value::Bool(x) => assert_eq!(r["value_bool"].bool(), *x),
                Value::Map(_) => assert_eq!(r["value_type"].str(), "map"),
                Value::Array(_) => assert_eq!(r["value_type"].str(), "array"),
                Value::Null => assert_eq!(r["value_type"].str(), "null"),
            }
        }
    }
    assert_eq!(rows.len(), expected);
    for kind in ["float", "array", "map", "string", "int", "bool"] {
        assert!(
            rows.values().any(|r| r["value_type"].str() == kind),
            "no attribute of type {kind}"
        );
    }

    // topic preferences: explicit ones, and with each topic's default they give every
    // person's effective state as the profile shows it.
    let rows = keyed("topic_preferences", read(&report, "topic_preferences"));
    let topic_rows = read(&report, "topics");
    assert_eq!(
        db.topics(),
        topic_rows
            .iter()
            .map(|r| (
                r["id"].u32(),
                r["name"].str().to_owned(),
                r["default_subscribed"].bool()
            ))
            .collect::<Vec<_>>()
    );
    let topics = keyed("topics", topic_rows);
    let mut states = 0;
    for p in &people {
        let profile = db.profile(&ident(p.pid.0), 1).unwrap().unwrap();
        for t in &profile.subscription.topics {
            let explicit = rows.get(&format!("{}|{}", p.pid.0, t.id));
            let default = topics[&t.id.to_string()]["default_subscribed"].bool();
            let state = explicit.map_or(default, |r| r["subscribed"].bool());
            assert_eq!(state, t.subscribed, "person {} topic {}", p.pid.0, t.id);
            states += 1;
        }
    }
    assert_eq!(states, people.len() * 10);
    assert!(!rows.is_empty());
    for r in rows.values() {
        assert!(pids.contains(&r["person"].u32()));
    }

    // activities, people's and the anonymous id's
    let rows = keyed("activities", read(&report, "activities"));
    let mut n = 0;
    for p in &people {
        for a in db
            .activities(&ident(p.pid.0), &ActivityFilter::new(usize::MAX))
            .unwrap()
        {
            n += 1;
            let r = &rows[&a.cursor.seq.to_string()];
            assert_eq!(r["person"].u32(), p.pid.0);
            assert_eq!(r["timestamp"].i64(), a.timestamp);
            assert_eq!(r["kind"].str(), a.kind);
            assert_eq!(r["name"].opt_str(), a.name);
            assert_eq!(r["data"].str(), json(&a.data));
        }
    }
    // An anonymous id's events are not exported (the change feed does not carry them).
    let anon = db.anonymous_events("anon-1", 100).unwrap();
    assert_eq!(anon.len(), 1);
    assert!(!rows.contains_key(&anon[0].cursor.seq.to_string()));
    assert_eq!(rows.len(), n);

    // deliveries and metrics
    let deliveries = keyed("deliveries", read(&report, "deliveries"));
    let metrics = keyed("metrics", read(&report, "metrics"));
    let (mut nd, mut nm) = (0, 0);
    for p in &people {
        for d in db.deliveries(&ident(p.pid.0), usize::MAX).unwrap() {
            nd += 1;
            let r = &deliveries[&format!("{:?}", d.id)];
            assert_eq!(r["person"].u32(), p.pid.0);
            assert_eq!(r["created"].i64(), d.created);
            assert_eq!(r["channel"].str(), d.channel.as_str());
            assert_eq!(r["campaign_id"].opt_str(), d.campaign_id);
            assert_eq!(r["message_id"].opt_str(), d.message_id);
            assert_eq!(r["subject"].opt_str(), d.subject);
            assert_eq!(r["recipient"].opt_str(), d.recipient);
            assert_eq!(r["status"].str(), d.status);
            for (metric, at) in &d.metrics {
                nm += 1;
                let m = &metrics[&format!("{:?}|{metric:?}", d.id)];
                assert_eq!(m["at"].i64(), *at);
                assert_eq!(m["person"].u32(), p.pid.0);
            }
        }
    }
    assert_eq!((deliveries.len(), metrics.len()), (nd, nm));
    assert_eq!(nd as u64, db.counts().unwrap().deliveries);
    assert!(nm > nd, "several metrics per delivery");

    // devices
    let rows = keyed("devices", read(&report, "devices"));
    let mut n = 0;
    for p in &people {
        for d in db.devices(&ident(p.pid.0)).unwrap() {
            n += 1;
            let r = &rows[&format!("{}|{:?}", p.pid.0, d.token)];
            assert_eq!(r["platform"].str(), d.platform.as_str());
            assert_eq!(r["last_used"].i64(), d.last_used);
            assert_eq!(r["status"].str(), d.status.as_str());
            assert_eq!(
                r["attributes"].str(),
                json(&Value::Map(d.attributes.clone()))
            );
        }
    }
    assert_eq!(rows.len(), n);
    assert!(rows
        .values()
        .any(|r| r["attributes"].str().contains("app_version")));

    // relationships and objects
    let rels = keyed("relationships", read(&report, "relationships"));
    let objects = keyed("objects", read(&report, "objects"));
    let mut n = 0;
    let mut related = BTreeSet::new();
    for p in &people {
        for rel in db.relationships(&ident(p.pid.0)).unwrap() {
            n += 1;
            let key = format!(
                "{}|{}|{:?}",
                p.pid.0, rel.object.type_id, rel.object.object_id
            );
            assert_eq!(
                rels[&key]["attributes"].str(),
                json(&Value::Map(rel.attributes))
            );
            related.insert(rel.object);
        }
    }
    assert_eq!(rels.len(), n);
    assert_eq!(objects.len() as u64, db.counts().unwrap().objects);
    for r in objects.values() {
        let o = ObjectRef::new(r["object_type"].u32(), r["object_id"].str());
        let obj = db.object(&o).unwrap().unwrap();
        assert_eq!(r["attributes"].str(), json(&Value::Map(obj.attributes)));
        assert_eq!(r["created"].i64(), obj.created);
        assert_eq!(r["updated"].i64(), obj.updated);
    }
    assert!(objects.contains_key(r#"1|"company-7""#));
    let types = read(&report, "object_types");
    assert_eq!(
        db.object_types().unwrap(),
        types
            .iter()
            .map(|r| (r["id"].u32(), r["name"].str().to_owned()))
            .collect::<Vec<_>>()
    );

    // segments and memberships
    let segments = keyed("segments", read(&report, "segments"));
    let members = read(&report, "segment_memberships");
    let infos = db.segments();
    assert_eq!(segments.len(), infos.len());
    for s in &infos {
        let r = &segments[&s.id.to_string()];
        assert_eq!(r["name"].str(), s.name);
        assert_eq!(r["condition"].opt_str(), s.condition);
        assert_eq!(
            r["kind"].str(),
            if s.condition.is_some() {
                "data_driven"
            } else {
                "manual"
            }
        );
        let got: BTreeSet<u32> = members
            .iter()
            .filter(|m| m["segment"].u32() == s.id)
            .map(|m| m["person"].u32())
            .collect();
        let (want, _) = db
            .evaluate(&parse_condition(&format!("segment:#{}", s.id)).unwrap())
            .unwrap();
        assert_eq!(
            got,
            want.iter().collect::<BTreeSet<u32>>(),
            "segment {}",
            s.name
        );
        assert_eq!(got.len() as u64, s.members);
    }
    assert!(members.len() > 50);

    // suppressions
    let rows = read(&report, "suppressions");
    assert!(rows.len() >= 3, "person 11's id and email, and nobody@");
    for r in &rows {
        let kind = IdentKind::from_name(r["kind"].str()).unwrap();
        assert!(db
            .is_suppressed(&Ident::new(kind, r["value"].str()))
            .unwrap());
    }
    drop(dir);
}

#[test]
fn a_second_run_writes_beside_the_first_and_never_overwrites() {
    let (_dir, db, _clock) = common::open();
    build(&db);
    let out = tempfile::tempdir().unwrap();
    let first = export(&db, out.path());
    let second = export(&db, out.path());
    assert_eq!((first.run, second.run), (1, 2));
    for (a, b) in first.files.iter().zip(&second.files) {
        assert_ne!(a.path, b.path);
        assert_eq!(a.rows, b.rows, "{}", a.table);
        assert!(a.path.exists() && b.path.exists());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&second.manifest).unwrap()).unwrap();
    assert_eq!(manifest["run"], 2);
    assert_eq!(manifest["commit"], second.commit);
    assert_eq!(manifest["files"].as_array().unwrap().len(), TABLES.len());
    assert_eq!(
        manifest["files"][0]["rows"].as_u64(),
        Some(second.files[0].rows)
    );

    // A file of ours in a table's folder is never touched: the next run numbers past it.
    let mine = out
        .path()
        .join("topics")
        .join(format!("{:06}-full-{}.parquet", 3, second.commit));
    std::fs::write(&mine, b"mine").unwrap();
    let third = export(&db, out.path());
    assert_eq!(third.run, 4);
    assert_eq!(std::fs::read(&mine).unwrap(), b"mine");
    assert_eq!(walk(out.path()).len(), 3 * (TABLES.len() + 1) + 1);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_directory_that_is_a_file_or_holds_a_file_for_a_table_is_refused_naming_dir() {
    let (_dir, db, _clock) = common::open();
    db.identify(Identify::new(Ident::id("u-1"))).unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let e = db.export_parquet(&file, ParquetOptions::new()).unwrap_err();
    assert_eq!(common::input_field(&e), "dir", "{e}");
    assert!(e.to_string().contains("is a file"), "{e}");

    let inside = out.path().join("export");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("people"), b"x").unwrap();
    let e = db
        .export_parquet(&inside, ParquetOptions::new())
        .unwrap_err();
    assert_eq!(common::input_field(&e), "dir", "{e}");

    // Below a file: cannot be created.
    let e = db
        .export_parquet(&file.join("sub"), ParquetOptions::new())
        .unwrap_err();
    assert_eq!(common::input_field(&e), "dir", "{e}");
}

#[test]
fn an_empty_database_exports_empty_tables_and_progress_reaches_the_end() {
    let (_dir, db, _clock) = common::open();
    let out = tempfile::tempdir().unwrap();
    let report = db
        .export_parquet(out.path(), ParquetOptions::new())
        .unwrap();
    assert_eq!(report.rows(), 0);
    for t in TABLES {
        assert!(read(&report, t.name).is_empty());
    }
    let (_dir2, db2, _clock2) = common::open();
    build(&db2);
    let seen = std::sync::Mutex::new(Vec::new());
    let f = |p: profiledb::export::parquet::ParquetProgress| seen.lock().unwrap().push(p);
    db2.export_parquet(
        out.path().join("b").as_path(),
        ParquetOptions::new().progress(&f),
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.done, last.total);
    assert!(last.total > 0);
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "monotone");
}

/// Says loudly why the DuckDB check did not run; a failure when
/// `PROFILEDB_REQUIRE_DUCKDB=1` (as `.ci/run` sets it where python3 is present).
fn skip_duckdb(why: &str) {
    if std::env::var("PROFILEDB_REQUIRE_DUCKDB").as_deref() == Ok("1") {
        panic!("the DuckDB check cannot run because {why}, and PROFILEDB_REQUIRE_DUCKDB=1");
    }
    // Straight to stderr, past the test harness's capture: a skip must be seen under
    // plain `cargo test`.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: tests/parquet.rs duckdb_reads_the_export_as_profiledb_answers because {why} \
         (pip install duckdb; PROFILEDB_REQUIRE_DUCKDB=1 makes this a failure)"
    );
}

/// Runs tests/duckdb/check_export.py over `export`, made from the database at `db`.
/// Returns false when it was skipped.
fn duckdb_check(db: &Path, export: &Path) -> bool {
    let Some(binary) = option_env!("CARGO_BIN_EXE_profiledb") else {
        skip_duckdb("the profiledb binary is not built (feature `cli` is off)");
        return false;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb/check_export.py");
    let out = match std::process::Command::new("python3")
        .arg(&script)
        .arg(binary)
        .arg(db)
        .arg(export)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip_duckdb(&format!("python3 cannot be run ({e})"));
            return false;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        skip_duckdb(&format!(
            "the duckdb Python package is missing ({})",
            stderr.trim()
        ));
        return false;
    }
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the DuckDB check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    true
}

/// Runs the built `profiledb` binary (the caller checked it is built).
fn cli(db: &Path, args: &[&str]) -> String {
    let Some(binary) = option_env!("CARGO_BIN_EXE_profiledb") else {
        panic!("the profiledb binary is not built");
    };
    let out = std::process::Command::new(binary)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "profiledb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn duckdb_reads_the_export_as_profiledb_answers() {
    let (dir, db, _clock) = common::open();
    build(&db);
    db.close().unwrap();
    if option_env!("CARGO_BIN_EXE_profiledb").is_none() {
        skip_duckdb("the profiledb binary is not built (feature `cli` is off)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let export = out.path().join("export");
    let printed = cli(
        dir.path(),
        &["export", "--format", "parquet", export.to_str().unwrap()],
    );
    assert!(printed.contains("next cursor: "), "{printed}");
    assert!(printed.contains("segment_memberships"), "{printed}");
    duckdb_check(dir.path(), &export);
}

/// The README's table of tables, from [`TABLES`].
fn schema_markdown() -> String {
    use profiledb::export::parquet::BOOKKEEPING;
    let mut out = String::new();
    for t in TABLES {
        let keys: Vec<String> = t.columns[..t.key]
            .iter()
            .map(|c| format!("`{}`", c.name))
            .collect();
        out.push_str(&format!(
            "**`{}`**: {}; key {}.\n\n| column | Arrow type | meaning |\n|---|---|---|\n",
            t.name,
            t.doc,
            keys.join(", ")
        ));
        for c in t.columns.iter().chain(BOOKKEEPING) {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                c.name,
                c.ty.arrow(),
                c.doc
            ));
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_readme_shows_every_table_as_the_code_defines_it() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let want = schema_markdown();
    if !readme.contains(&want) {
        let _ = std::fs::write(
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("parquet-schema.md"),
            &want,
        );
        panic!(
            "README.md's Parquet tables differ from the code's; the code's are in {}",
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("parquet-schema.md")
                .display()
        );
    }
}

/// A database with the change feed on, at `T0` on a manual clock.
fn open_with_feed() -> (tempfile::TempDir, ProfileDb, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(clock.clone()))
        .durability(Durability::Buffered)
        .change_feed(Some(ChangeFeed::keep_days(7)))
        .open(dir.path())
        .unwrap();
    (dir, db, clock)
}

/// Every run in `dir` applied in order, per table, by the README's rule: for each key
/// the row with the highest `_commit`, dropped when `_deleted`; without the bookkeeping.
fn applied(dir: &Path) -> BTreeMap<&'static str, BTreeMap<String, Row>> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join(t.name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
        let mut latest: BTreeMap<String, Row> = BTreeMap::new();
        for row in read_files(&paths, t.name) {
            let key = key_of(t.name, &row);
            let newer = latest
                .get(&key)
                .is_none_or(|old| old["_commit"].u64() < row["_commit"].u64());
            if newer {
                latest.insert(key, row);
            }
        }
        let table = latest
            .into_iter()
            .filter(|(_, r)| !r["_deleted"].bool())
            .map(|(k, mut r)| {
                r.remove("_commit");
                r.remove("_deleted");
                (k, r)
            })
            .collect();
        out.insert(t.name, table);
    }
    out
}

/// Rows of an increment's file with `_deleted`, per table.
fn deletions(report: &ParquetReport) -> BTreeMap<&'static str, usize> {
    TABLES
        .iter()
        .map(|t| {
            let n = read(report, t.name)
                .iter()
                .filter(|r| r["_deleted"].bool())
                .count();
            (t.name, n)
        })
        .collect()
}

/// More writes of every kind, deletes, a merge and segment changes.
fn churn(db: &ProfileDb, clock: &ManualClock, round: u64) {
    clock.advance(3_600);
    let id = |n: u64| Ident::id(profiledb::synth::person_id(n));
    let base = 300 + round * 40;
    let ops: Vec<Op> = (base..base + 20)
        .flat_map(|n| profiledb::synth::person_ops(n, profiledb::synth::SEED, T0))
        .collect();
    db.write_batch(&ops).unwrap();
    let r = round * 50;
    // Attribute changes, topic preferences set, flipped and removed, unsubscribing.
    db.identify(
        Identify::new(id(r + 12))
            .set("plan", "gold")
            .set("cio_subscription_preferences.topics.topic_3", false)
            .set("cio_subscription_preferences.topics.topic_4", true)
            .set("unsubscribed", true)
            .remove("score"),
    )
    .unwrap();
    db.identify(Identify::new(id(r + 13)).remove("cio_subscription_preferences"))
        .unwrap();
    // Deletes: a person with a delivery, device and relationship; a device; a
    // relationship; an object.
    db.delete(&id(r + 1)).unwrap();
    db.add_device(
        &id(r + 14),
        DeviceInput::new(format!("tok-x{round}"), Platform::Ios),
    )
    .unwrap();
    db.delete_device(&id(r + 14), &format!("tok-x{round}"))
        .unwrap();
    for n in r + 15..r + 30 {
        let _ = db.delete_device(&id(n), &format!("tok-{n}"));
    }
    for rel in db.relationships(&id(r + 16)).unwrap() {
        db.delete_relationship(&id(r + 16), &rel.object).unwrap();
    }
    db.add_relationship(
        &id(r + 17),
        &ObjectRef::new(1, "company-7"),
        vec![("role".into(), "admin".into())],
    )
    .unwrap();
    // An object the last run exported (some related person's).
    let object = (r + 40..r + 140)
        .flat_map(|n| db.relationships(&id(n)).unwrap_or_default())
        .map(|rel| rel.object)
        .find(|o| o.object_id != "company-7")
        .unwrap();
    db.delete_object(&object).unwrap();
    db.identify_object(
        &ObjectRef::new(1, "company-7"),
        vec![("seats".into(), (20 + round as i64).into())],
    )
    .unwrap();
    // A merge: the secondary's rows move or go.
    db.merge(&id(r + 30), &id(r + 31)).unwrap();
    // Deliveries: new ones, metrics on old ones.
    db.add_delivery(
        &id(r + 32),
        NewDelivery::new(format!("dlv-new-{round}"), Channel::Sms).created(T0 + 10),
    )
    .unwrap();
    db.report_metric(Metric::new(format!("dlv-new-{round}"), "delivered").timestamp(T0 + 20))
        .unwrap();
    for n in (r + 2..r + 8).filter(|n| *n < 40) {
        let _ = db.report_metric(Metric::new(format!("dlv-{n}"), "clicked").timestamp(T0 + 30));
    }
    // Segments: a new one, one deleted, manual membership changes, a topic and an
    // object type renamed, a suppression and an unsuppression.
    let seg = db
        .create_segment(&format!("Gold {round}"), Some(r#"attr.plan = "gold""#))
        .unwrap();
    assert!(seg > 0);
    let victim = db
        .segments()
        .iter()
        .find(|s| s.name.starts_with("Segment"))
        .map(|s| s.id);
    if let Some(v) = victim {
        db.delete_segment(v).unwrap();
    }
    let vip = db.segments().iter().find(|s| s.name == "VIP").unwrap().id;
    db.add_to_segment(vip, &[id(r + 33)]).unwrap();
    db.remove_from_segment(vip, &[id(3)]).unwrap();
    db.define_topic(2, &format!("Topic two {round}"), true)
        .unwrap();
    db.define_object_type(1, &format!("Companies {round}"))
        .unwrap();
    db.suppress(&id(r + 34)).unwrap();
    let _ = db.unsuppress(&Ident::email("nobody@example.com"));
}

#[test]
fn a_full_export_and_its_increments_applied_in_order_equal_a_fresh_full_export() {
    let (dir, db, clock) = open_with_feed();
    build(&db);
    let out = tempfile::tempdir().unwrap();
    let full = export(&db, out.path());
    assert_eq!(full.cursor, db.change_cursor().unwrap());
    assert_eq!(full.since, None);

    churn(&db, &clock, 0);
    let first = db
        .export_parquet(out.path(), ParquetOptions::new().since(full.cursor))
        .unwrap();
    assert_eq!(first.since, Some(full.cursor));
    assert!(first.commit > full.commit);
    for t in TABLES {
        for row in read(&first, t.name) {
            assert_eq!(row["_commit"].u64(), first.commit, "{}", t.name);
        }
    }
    // Far fewer rows than the whole, and deletions where the churn removed rows.
    assert!(
        first.rows() * 3 < full.rows(),
        "{} vs {}",
        first.rows(),
        full.rows()
    );
    let gone = deletions(&first);
    for table in [
        "people",
        "attributes",
        "activities",
        "deliveries",
        "metrics",
        "devices",
        "relationships",
        "objects",
        "segment_memberships",
        "topic_preferences",
        "segments",
        "suppressions",
    ] {
        assert!(gone[table] > 0, "no deletion in {table}: {gone:?}");
    }

    churn(&db, &clock, 1);
    let second = db
        .export_parquet(out.path(), ParquetOptions::new().since(first.cursor))
        .unwrap();
    assert_eq!(
        (full.run, first.run, second.run),
        (1, 2, 3),
        "runs number in order"
    );
    // Nothing changed since: an empty increment (but suppressions, written whole).
    let third = db
        .export_parquet(out.path(), ParquetOptions::new().since(second.cursor))
        .unwrap();
    let suppressed = db.raw_records(profiledb::Family::Suppressed).unwrap().len() as u64;
    assert!(suppressed > 0);
    for f in &third.files {
        let want = if f.table == "suppressions" {
            suppressed
        } else {
            0
        };
        assert_eq!(f.rows, want, "{}", f.table);
    }
    assert!(read(&third, "suppressions")
        .iter()
        .all(|r| !r["_deleted"].bool()));

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = export(&db, fresh_dir.path());
    assert_eq!(fresh.commit, second.commit);
    let got = applied(out.path());
    let want = applied(fresh_dir.path());
    for t in TABLES {
        let (g, w) = (&got[t.name], &want[t.name]);
        for (k, row) in w {
            assert_eq!(g.get(k), Some(row), "{}: key {k}", t.name);
        }
        let extra: Vec<&String> = g.keys().filter(|k| !w.contains_key(*k)).collect();
        assert!(
            extra.is_empty(),
            "{}: rows a fresh export lacks: {extra:?}",
            t.name
        );
    }

    // DuckDB applies the same runs and agrees with the command line.
    db.close().unwrap();
    if option_env!("CARGO_BIN_EXE_profiledb").is_some() {
        duckdb_check(dir.path(), out.path());
    }
}

#[test]
fn an_increment_the_feed_cannot_serve_is_refused_and_writes_nothing() {
    // The feed off: an input error on `change_feed`, before DIR is touched.
    let (_dir, db, _clock) = common::open();
    build(&db);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("export");
    let e = db
        .export_parquet(
            &target,
            ParquetOptions::new().since(Cursor::after_commit(1)),
        )
        .unwrap_err();
    assert_eq!(common::input_field(&e), "change_feed", "{e}");
    assert!(!target.exists(), "nothing written");

    // Turned on later: a cursor from before is expired, never a silent gap.
    let before = db.change_cursor().unwrap();
    db.set_change_feed(Some(ChangeFeed::keep_days(1))).unwrap();
    db.identify(Identify::new(Ident::id("late"))).unwrap();
    let e = db
        .export_parquet(&target, ParquetOptions::new().since(before))
        .unwrap_err();
    assert!(matches!(e, Error::CursorExpired { .. }), "{e}");
    assert!(!target.exists(), "nothing written");

    // A cursor beyond the database: refused naming `cursor`.
    let e = db
        .export_parquet(
            &target,
            ParquetOptions::new().since(Cursor::after_commit(1_000_000)),
        )
        .unwrap_err();
    assert_eq!(common::input_field(&e), "cursor", "{e}");
    assert!(!target.exists(), "nothing written");
}

/// Runs the built `profiledb` binary, expecting it to fail; returns its stderr.
fn cli_fails(db: &Path, args: &[&str]) -> String {
    let Some(binary) = option_env!("CARGO_BIN_EXE_profiledb") else {
        panic!("the profiledb binary is not built");
    };
    let out = std::process::Command::new(binary)
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "profiledb {args:?} should fail");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn the_command_line_prints_files_rows_and_the_cursor_and_refuses_what_cannot_work() {
    if option_env!("CARGO_BIN_EXE_profiledb").is_none() {
        return; // the CLI is not built without feature `cli`
    }
    let (dir, db, _clock) = common::open();
    build(&db);
    db.close().unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("w");
    let t = target.to_str().unwrap();
    let printed = cli(dir.path(), &["export", "--format", "parquet", t]);
    for table in TABLES {
        assert!(
            printed.contains(&format!("{}/{}/000001-full-", t, table.name)),
            "{printed}"
        );
    }
    let cursor = printed
        .lines()
        .find_map(|l| l.strip_prefix("next cursor: "))
        .unwrap()
        .to_owned();
    assert!(cursor.parse::<Cursor>().is_ok(), "{cursor}");
    assert!(printed.contains("needs `profiledb feed on`"), "{printed}");

    // --since with the feed off: refused, nothing written.
    let e = cli_fails(
        dir.path(),
        &["export", "--format", "parquet", t, "--since", &cursor],
    );
    assert!(e.contains("change_feed"), "{e}");
    assert_eq!(walk(&target).len(), TABLES.len() + 1);
    let e = cli_fails(
        dir.path(),
        &["export", "--format", "parquet", t, "--since", "x"],
    );
    assert!(e.starts_with("error: --since:"), "{e}");
    let e = cli_fails(dir.path(), &["export", "--format", "parquet", "-"]);
    assert!(e.contains("not `-`"), "{e}");
    let e = cli_fails(dir.path(), &["export", "--since", "3"]);
    assert!(e.contains("--format parquet"), "{e}");
    let file = out.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let e = cli_fails(
        dir.path(),
        &["export", "--format", "parquet", file.to_str().unwrap()],
    );
    assert!(e.contains("`dir`") && e.contains("is a file"), "{e}");

    // With the feed on: a full run, a change, an increment from its cursor.
    cli(dir.path(), &["feed", "on"]);
    let printed = cli(dir.path(), &["export", "--format", "parquet", t]);
    assert!(!printed.contains("feed on"), "{printed}");
    let cursor = printed
        .lines()
        .find_map(|l| l.strip_prefix("next cursor: "))
        .unwrap()
        .to_owned();
    let db = ProfileDb::open(dir.path()).unwrap();
    db.identify(Identify::new(Ident::id("late")).set("plan", "pro"))
        .unwrap();
    db.close().unwrap();
    let printed = cli(
        dir.path(),
        &["export", "--format", "parquet", t, "--since", &cursor],
    );
    assert!(
        printed.contains(&format!("(changes after {cursor})")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{t}/people/000003-{cursor}-")),
        "{printed}"
    );
}

/// Every file under `dir` (folders aside).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walk(dir)
}

#[test]
fn a_run_that_fails_reading_leaves_no_file_and_a_damaged_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let faults = profiledb::Faults::new();
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(ManualClock::new(T0)))
        .durability(Durability::Buffered)
        .faults(faults.clone())
        .open(dir.path())
        .unwrap();
    build(&db);
    let out = tempfile::tempdir().unwrap();
    let probe = out.path().join("probe");
    let r0 = faults.reads_seen();
    let whole = db.export_parquet(&probe, ParquetOptions::new()).unwrap();
    let reads = faults.reads_seen() - r0;
    assert!(reads > 1000, "{reads}");
    // A read failing anywhere (first, last, and in each table's scan): an error, and
    // none of the run's files are left, temporary or published.
    let mut at: Vec<u64> = (1..=16).map(|i| reads * i / 16).collect();
    at.insert(0, 1);
    for n in at {
        let target = out.path().join(format!("fail-{n}"));
        faults.fail_read_at(n);
        let e = db
            .export_parquet(&target, ParquetOptions::new())
            .unwrap_err();
        assert!(matches!(e, Error::Storage(_)), "read {n}: {e}");
        faults.clear();
        assert_eq!(
            files_under(&target),
            Vec::<std::path::PathBuf>::new(),
            "read {n}"
        );
        // The handle goes on: the same directory takes a whole run.
        let again = db.export_parquet(&target, ParquetOptions::new()).unwrap();
        assert_eq!(again.run, 1);
        assert_eq!(again.rows(), whole.rows());
    }
    // A damaged record: `Error::Corrupted`, never a panic, nothing left.
    let key = db.raw_records(profiledb::Family::Attributes).unwrap()[5]
        .0
        .clone();
    faults.corrupt_reads_of(profiledb::Family::Attributes, key);
    let target = out.path().join("corrupt");
    let e = db
        .export_parquet(&target, ParquetOptions::new())
        .unwrap_err();
    assert!(matches!(e, Error::Corrupted { .. }), "{e}");
    assert_eq!(files_under(&target), Vec::<std::path::PathBuf>::new());
}

/// A small deterministic generator for the randomized runs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = profiledb::synth::mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One random operation of any kind the feed reports; failures (an unknown person, a
/// suppressed identifier...) are part of the mix and ignored.
fn random_op(db: &ProfileDb, clock: &ManualClock, rng: &mut Rng, people: u64) {
    let who = |n: u64| Ident::id(profiledb::synth::person_id(n));
    let p = rng.below(people);
    let q = rng.below(people);
    match rng.below(22) {
        0..=3 => {
            let mut op =
                Identify::new(who(p)).set("plan", ["free", "pro", "gold"][rng.below(3) as usize]);
            if rng.below(2) == 0 {
                op = op.set(
                    format!(
                        "cio_subscription_preferences.topics.topic_{}",
                        1 + rng.below(10)
                    ),
                    rng.below(2) == 0,
                );
            }
            if rng.below(4) == 0 {
                op = op.remove("score");
            }
            if rng.below(5) == 0 {
                op = op.set("unsubscribed", rng.below(2) == 0);
            }
            if rng.below(8) == 0 {
                // An identifier changes (or clashes with someone's, and is refused).
                op = op.set("email", format!("moved{}@example.com", rng.below(20)));
            }
            if rng.below(10) == 0 {
                op = op.set("phone", format!("+1555000{:04}", rng.below(30)));
            }
            let _ = db.identify(op);
        }
        4 => {
            let _ = db.delete(&who(p));
        }
        5 => {
            let _ = db.merge(&who(p), &who(q));
        }
        6 => {
            let _ = db.suppress(&who(p));
        }
        7 => {
            let _ = db.unsuppress(&who(p));
        }
        8 => {
            // Tokens move between people too.
            let token = format!("tok-r{}", rng.below(8));
            let _ = db.add_device(
                &who(p),
                DeviceInput::new(token, Platform::Android).attribute("v", q as i64),
            );
        }
        9 => {
            let _ = db.delete_device(&who(p), &format!("tok-r{}", rng.below(8)));
        }
        10 => {
            let id = format!("dlv-r{}", rng.below(1_000_000));
            let _ = db.add_delivery(
                &who(p),
                NewDelivery::new(&id, Channel::Email).created(T0 + q as i64),
            );
        }
        11 => {
            let id = format!("dlv-{}", rng.below(40));
            let metric = ["delivered", "opened", "clicked", "bounced"][rng.below(4) as usize];
            let _ = db.report_metric(Metric::new(id, metric).timestamp(clock.now() + 5));
        }
        12 => {
            let o = ObjectRef::new(1, format!("company-{}", rng.below(100)));
            let _ = db.add_relationship(&who(p), &o, vec![("r".into(), (q as i64).into())]);
        }
        13 => {
            let o = ObjectRef::new(1, format!("company-{}", rng.below(100)));
            let _ = db.delete_relationship(&who(p), &o);
        }
        14 => {
            let o = ObjectRef::new(1, format!("company-{}", rng.below(100)));
            if rng.below(2) == 0 {
                let _ = db.identify_object(&o, vec![("n".into(), (q as i64).into())]);
            } else {
                let _ = db.delete_object(&o);
            }
        }
        15 => {
            let name = format!("R{}", rng.below(4));
            match db.segments().iter().find(|s| s.name == name).map(|s| s.id) {
                Some(id) => {
                    let _ = db.delete_segment(id);
                }
                None => {
                    let _ = db.create_segment(
                        &name,
                        Some(r#"attr.plan = "gold" or event:purchase within 2d"#),
                    );
                }
            }
        }
        16 => {
            if let Some(vip) = db.segments().iter().find(|s| s.name == "VIP").map(|s| s.id) {
                if rng.below(2) == 0 {
                    let _ = db.add_to_segment(vip, &[who(p)]);
                } else {
                    let _ = db.remove_from_segment(vip, &[who(p)]);
                }
            }
        }
        17 if rng.below(4) == 0 => {
            let _ = db.define_object_type(1 + rng.below(2) as u32, &format!("Type {q}"));
        }
        17 => {
            let _ = db.define_topic(
                1 + rng.below(12) as u32,
                &format!("T{q}"),
                rng.below(2) == 0,
            );
        }
        18 => {
            // Time passes: clock-reading segments change on refresh, old activity expires.
            clock.advance(86_400);
            let _ = db.refresh();
            if rng.below(3) == 0 {
                let _ = db.expire(clock.now() - 20 * 86_400);
            }
        }
        19 => {
            // An anonymous visitor's events, then their identification.
            let anon = format!("anon-r{}", rng.below(5));
            let _ =
                db.track(Track::event(Ident::anonymous_id(&anon), "viewed").timestamp(clock.now()));
            if rng.below(2) == 0 {
                let _ = db.identify(Identify::new(who(p)).set("anonymous_id", anon));
            }
        }
        20 => {
            let _ = db.track(
                Track::event(who(p), "purchase")
                    .property("amount", q as i64)
                    .timestamp(clock.now()),
            );
        }
        _ => {
            let _ = db.write_batch(&profiledb::synth::person_ops(
                people + rng.below(50),
                9,
                clock.now(),
            ));
        }
    }
}

#[test]
fn random_writes_between_increments_apply_to_what_a_fresh_full_export_writes() {
    // PROFILEDB_PARQUET_SEEDS=N runs more seeds (4 by default).
    let seeds = std::env::var("PROFILEDB_PARQUET_SEEDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(4);
    for seed in 1..=seeds {
        let (_dir, db, clock) = open_with_feed();
        build(&db);
        let out = tempfile::tempdir().unwrap();
        let mut cursor = export(&db, out.path()).cursor;
        let mut rng = Rng(seed);
        for _round in 0..4 {
            for _ in 0..60 {
                random_op(&db, &clock, &mut rng, 300);
            }
            let inc = db
                .export_parquet(out.path(), ParquetOptions::new().since(cursor))
                .unwrap();
            cursor = inc.cursor;
        }
        let fresh_dir = tempfile::tempdir().unwrap();
        export(&db, fresh_dir.path());
        let got = applied(out.path());
        let want = applied(fresh_dir.path());
        for t in TABLES {
            let (g, w) = (&got[t.name], &want[t.name]);
            let missing: Vec<&String> = w.keys().filter(|k| g.get(*k) != w.get(*k)).collect();
            let extra: Vec<&String> = g.keys().filter(|k| !w.contains_key(*k)).collect();
            let show: Vec<(Option<&Row>, Option<&Row>)> = missing
                .iter()
                .chain(&extra)
                .take(3)
                .map(|k| (g.get(*k), w.get(*k)))
                .collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "seed {seed}, {}: differing or missing {missing:?}, extra {extra:?}; \
                 (applied, fresh): {show:?}",
                t.name
            );
        }
    }
}
