//! Replays every fuzz corpus file through the same functions the fuzz targets call, so
//! stable CI runs the corpora (long fuzzing is `cargo +nightly fuzz`, see the README).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
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

#[test]
fn record_decode_corpus_replays_without_panic() {
    let files = corpus("record_decode");
    assert!(files.len() >= 5, "the seed corpus is missing");
    for (_, bytes) in &files {
        profiledb::store::decode_everything(bytes);
    }
    // The seeds that are valid records still decode: the replay exercises real decoders.
    let valid = files
        .iter()
        .find(|(n, _)| n == "value_map")
        .map(|(_, b)| b.clone())
        .unwrap();
    let v: profiledb::Value = profiledb::store::codec::decode(4, b"", &valid).unwrap();
    assert_eq!(v.to_json(), serde_json::json!({"plan": "pro"}));
}
