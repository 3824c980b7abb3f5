//! Replays every fuzz corpus file through the same functions the fuzz targets call
//! (`profiledb::fuzzing`), so stable CI runs the corpora; long fuzzing is
//! `fuzz/fuzz-all.sh SECONDS` with the nightly toolchain (see the README).
//!
//! The seeds were written by `regenerate_seed_corpora` below (`cargo test --test
//! fuzz_corpus -- --ignored`), except the hand-written ones it leaves alone and the
//! regression inputs found by fuzzing (named `regression_*`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;

use profiledb::fuzzing;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Runs `f` over every file of `target`'s corpus, naming the file that fails.
fn replay(target: &str, min_files: usize, f: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.len() >= min_files,
        "the {target} seed corpus is missing"
    );
    for (name, bytes) in &files {
        if let Err(panic) = std::panic::catch_unwind(|| f(bytes)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("fuzz/corpus/{target}/{name}: {msg}");
        }
    }
}

#[test]
fn record_decode_corpus_replays() {
    replay("record_decode", 20, fuzzing::record_decode);
    // The seeds that are valid records still decode: the replay exercises real decoders.
    let files = corpus("record_decode");
    let valid = files
        .iter()
        .find(|(n, _)| n == "value_map")
        .map(|(_, b)| b.clone())
        .unwrap();
    let v: profiledb::Value = profiledb::internal::codec::decode(4, b"", &valid).unwrap();
    assert_eq!(v.to_json(), serde_json::json!({"plan": "pro"}));
}

#[test]
fn ingest_json_corpus_replays() {
    replay("ingest_json", 30, fuzzing::ingest_json);
}

#[test]
fn query_parse_corpus_replays() {
    replay("query_parse", 20, fuzzing::query_parse);
}

#[test]
fn ops_model_corpus_replays() {
    replay("ops_model", 10, fuzzing::ops_model);
}

#[test]
fn open_damaged_corpus_replays() {
    replay("open_damaged", 5, fuzzing::open_damaged);
}

// ---------------------------------------------------------------------------------------
// Seed generation

/// Writes `bytes` as seed `name` of `target`.
fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The ops_model input bytes of one write (see `fuzzing::read_write`): a step byte
/// that is neither reopen (0) nor crash (1), the write's tag, the person, its arguments.
fn w(tag: u8, who: u8, args: &[u8]) -> Vec<u8> {
    let mut v = vec![2, tag, who];
    v.extend_from_slice(args);
    v
}

/// Writes the seed corpora. Run by hand after a format or input change:
/// `cargo test --test fuzz_corpus -- --ignored regenerate_seed_corpora`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn regenerate_seed_corpora() {
    use profiledb::{Family, ProfileDb};

    // record_decode: one real record of every family of a synthetic database, whole (for
    // the envelope), as a payload behind its type selector, and its key behind the key
    // selector; bitmap chunks behind the chunk selector.
    let dir = tempfile::tempdir().unwrap();
    // A fixed clock, so that regenerating writes the same bytes.
    let db = ProfileDb::builder()
        .clock(std::sync::Arc::new(profiledb::ManualClock::new(
            1_767_225_600,
        )))
        .change_feed(Some(profiledb::ChangeFeed::default()))
        .open(dir.path())
        .unwrap();
    db.create_segment("pro", Some("attr.plan = \"pro\""))
        .unwrap();
    db.create_segment("manual", None).unwrap();
    db.define_topic(1, "news", true).unwrap();
    for n in 0..5 {
        db.write_batch(&profiledb::synth::person_ops(
            n,
            profiledb::synth::SEED,
            1_767_225_600,
        ))
        .unwrap();
    }
    // Fold the bitmap log into chunks; the writes below leave `bitmap_log` records.
    db.checkpoint().unwrap();
    db.add_to_segment(2, &[profiledb::Ident::id(profiledb::synth::person_id(1))])
        .unwrap();
    db.add_delivery(
        &profiledb::Ident::id(profiledb::synth::person_id(0)),
        profiledb::NewDelivery::new("d-1", profiledb::Channel::Email),
    )
    .unwrap();
    db.report_metric(profiledb::Metric::new("d-1", "opened"))
        .unwrap();
    db.suppress(&profiledb::Ident::email("gone@example.com"))
        .unwrap();
    // The payload selector of each family's value type (`fuzzing::record_decode`).
    let selector = |f: Family| -> Option<u8> {
        Some(match f {
            Family::Meta => 0,
            Family::People => 1,
            Family::Identifiers | Family::DeviceTokens => 2,
            Family::Attributes => 3,
            Family::Activity | Family::Anonymous => 4,
            Family::Suppressed => 5,
            Family::Deliveries => 6,
            Family::Devices => 7,
            Family::Objects => 8,
            Family::ObjectTypes => 9,
            Family::Relationships | Family::AnonRelationships => 10,
            Family::EventIds => 11,
            Family::DeliveryIds => 12,
            Family::Topics => 13,
            Family::Segments => 14,
            Family::Bitmaps => 16,
            Family::BitmapLog => 19,
            Family::EventBlocks => 20,
            Family::Changes => 22,
            _ => return None,
        })
    };
    for &family in Family::ALL {
        let records = db.raw_records(family).unwrap();
        let Some((key, value)) = records.first() else {
            continue;
        };
        let name = family.name();
        seed("record_decode", &format!("{name}_record"), value);
        let mut k = vec![18];
        k.extend_from_slice(key);
        seed("record_decode", &format!("{name}_keycodec"), &k);
        if let Some(sel) = selector(family) {
            let mut p = vec![sel];
            p.extend_from_slice(&value[5..]);
            seed("record_decode", &format!("{name}_payload"), &p);
        }
        // The whole per-record check: selector 17, family index, key length, key, payload.
        let mut c = vec![17, family.tag() - 1, key.len() as u8];
        c.extend_from_slice(key);
        c.extend_from_slice(&value[5..]);
        seed("record_decode", &format!("{name}_check"), &c);
        if family == Family::Bitmaps {
            let bytes: Vec<u8> =
                profiledb::internal::codec::decode(family.tag(), key, value).unwrap();
            let mut c = vec![21];
            c.extend_from_slice(&key[key.len() - 2..]);
            c.extend_from_slice(&bytes);
            seed("record_decode", "bitmaps_chunk", &c);
        }
    }
    let attrs = db.raw_records(Family::Attributes).unwrap();
    let mut p = vec![15];
    // A Value payload: the attribute map's first value would need parsing; a whole map of
    // a real person is selector 3 above. Here a nested Value written by the codec.
    let v = profiledb::Value::from_json(
        &serde_json::json!({"a": [1, 2.5, "x", null, true, {"b": {}}]}),
        "v",
    )
    .unwrap();
    p.extend_from_slice(&profiledb::internal::codec::encode(4, b"", &v).unwrap()[5..]);
    seed("record_decode", "value_payload", &p);
    assert!(!attrs.is_empty());
    drop(db);

    // ingest_json: every line of the client and spec fixtures, one message per file.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for sub in ["clients", "specs"] {
        let mut files: Vec<_> = std::fs::read_dir(fixtures.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        for path in files {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
                seed(
                    "ingest_json",
                    &format!("{stem}-{i:02}.json"),
                    line.as_bytes(),
                );
            }
        }
    }

    // query_parse: the language's examples, and App API filters.
    let conditions = [
        "segment:\"Trial users\" and topic:3 and not unsubscribed",
        "event:purchase[amount > 20] count >= 3 within 30d",
        "device.platform = \"ios\"",
        "attr.created_at > now-7d",
        "related:1:acme",
        "related:1:\"Acme Inc\" or related:2",
        "topic:1 or topic:2 and topic:3",
        "not (topic:1 and topic:2)",
        "NOT(topic:1) AND all",
        "attr.a.b.\"c.d\" exists",
        "attr.plan contains \"pro\" or attr.plan starts_with \"ent\"",
        "attr.score >= -5 and attr.ratio < 2.5E-3 and attr.n != +7",
        "delivery:opened[campaign_id = \"42\"] within 7d",
        "event:\"Product Viewed\"[price.amount >= 1e3, sku = \"a\\\"b\"] count = 0",
        "segment:#3 and not not segment:trial",
        "attr.t > now+2h or attr.t <= now - 1w",
        "device.last_used > now-7d and device.status = \"bounced\"",
        "unsubscribed or attr.vip = true or attr.x = false",
        "((((all))))",
        "attr.a = 1 and (attr.b = 2 or (attr.c = 3 and attr.d = 4))",
    ];
    for (i, c) in conditions.iter().enumerate() {
        seed("query_parse", &format!("text-{i:02}"), c.as_bytes());
    }
    let filters = [
        serde_json::json!({"and": [{"segment": {"id": 3}}, {"or": [{"attribute": {"field": "interest", "operator": "eq", "value": "roadrunners"}}]}]}),
        serde_json::json!({"not": {"attribute": {"field": "a.b", "operator": "exists"}}}),
        serde_json::json!({"or": [{"attribute": {"field": "n", "operator": "eq", "value": 1.5}}, {"attribute": {"field": "b", "operator": "eq", "value": true}}]}),
        serde_json::json!({"segment": {"id": 7}}),
    ];
    for (i, f) in filters.iter().enumerate() {
        seed(
            "query_parse",
            &format!("filter-{i:02}.json"),
            f.to_string().as_bytes(),
        );
    }

    // ops_model: each kind of write, then mixtures with reopen and crash steps. Tags:
    // 0 set, 1 unset, 2 event, 3 add device, 4 delete device, 5 add delivery, 6 metric,
    // 7 relate, 8 unrelate, 9 segment add, 10 segment remove, 11 merge, 12 delete,
    // 13 suppress, 14 unsuppress.
    let seqs: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "identify",
            vec![w(0, 0, &[0, 0]), w(0, 0, &[1, 2]), w(1, 0, &[0])],
        ),
        ("events", vec![w(2, 0, &[0]), w(2, 1, &[1]), w(2, 1, &[1])]),
        (
            "devices",
            vec![
                w(3, 0, &[0, 1]),
                w(2, 0, &[0]),
                w(3, 1, &[0, 0]),
                w(4, 1, &[0]),
            ],
        ),
        (
            "deliveries",
            vec![
                w(5, 0, &[0]),
                w(6, 0, &[0, 0]),
                w(5, 1, &[0]),
                w(6, 0, &[1, 1]),
            ],
        ),
        (
            "relations",
            vec![w(7, 0, &[0]), w(7, 1, &[2]), w(8, 0, &[0])],
        ),
        (
            "segments",
            vec![w(0, 0, &[0, 0]), w(9, 0, &[]), w(9, 1, &[]), w(10, 0, &[])],
        ),
        (
            "merge",
            vec![
                w(0, 0, &[0, 0]),
                w(0, 1, &[1, 1]),
                w(3, 1, &[0, 1]),
                w(2, 1, &[0]),
                w(5, 1, &[0]),
                w(6, 0, &[0, 0]),
                w(7, 1, &[0]),
                w(9, 1, &[]),
                w(11, 0, &[1]),
                w(11, 0, &[0]),
            ],
        ),
        (
            "suppress",
            vec![
                w(0, 0, &[0, 0]),
                w(13, 0, &[]),
                w(0, 0, &[0, 1]),
                w(2, 0, &[0]),
                w(14, 0, &[]),
                w(0, 0, &[0, 1]),
                w(12, 0, &[]),
            ],
        ),
        (
            "reopen",
            vec![
                w(0, 0, &[0, 0]),
                w(3, 0, &[0, 1]),
                vec![0],
                w(2, 0, &[0]),
                vec![0],
            ],
        ),
        (
            "crash",
            vec![
                w(0, 0, &[0, 0]),
                // Crash: 3 writes, the 2nd key write fails.
                vec![1, 2, 0, 1, 0, 1, 2, 2, 0, 3, 0, 0, 1, 1],
                w(0, 1, &[0, 1]),
                // Crash that never reaches its fault (31st write): it all lands.
                vec![1, 0, 2, 0, 0, 30],
                // Crash refused (merging someone into themselves).
                vec![1, 1, 2, 1, 0, 11, 1, 1, 0],
            ],
        ),
    ];
    for (name, steps) in seqs {
        seed("ops_model", name, &steps.concat());
    }

    // open_damaged: no damage, and each kind of damage (kind, file index, position u32,
    // argument) at a few places; file indices run over the sorted file list.
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("none", vec![]),
        ("flip-commit", vec![0, 0, 0, 0, 0, 3, 1]),
        ("flip-marker", vec![0, 1, 0, 0, 0, 10, 0]),
        ("flip-db", vec![0, 3, 0, 0, 0x12, 0x34, 5]),
        ("truncate-db", vec![1, 3, 0, 0, 0x40, 0]),
        ("zero-db", vec![2, 3, 0, 0, 0x10, 0, 50]),
        (
            "overwrite-conf",
            vec![3, 2, 0, 0, 0, 4, 3, 0xFF, 0xFF, 0xFF],
        ),
        ("flip-last", vec![0, 4, 0xFF, 0xFF, 0xFF, 0xF0, 2]),
    ];
    for (name, bytes) in damaged {
        seed("open_damaged", name, &bytes);
    }
}
