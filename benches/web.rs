//! Server-side render time of the People page: from the request entering the page's
//! router to the whole HTML body, no network (the router is called in process).
//!
//! Run with `cargo bench --bench web`. The database is either
//! - `PROFILEDB_BENCH_DB=DIR`: an existing database, e.g. one made by
//!   `profiledb --db DIR demo --people 1000000` (the README's figures), or
//! - `PROFILEDB_BENCH_PEOPLE` synthetic people (default 100,000) built in a temporary
//!   directory with the demo's generator (`profiledb::synth`), its topics and segments.
//!
//! Cases (`web/…`): the People list's first page, a page deep in the list (cursor), an
//! id prefix search, a condition, a profile's Overview, its Attributes and Activity tabs,
//! and the Segments list. The profile is synthetic person 7 (`user-00000007`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use profiledb::server::web::{router, WebState};
use profiledb::synth;
use profiledb::{Durability, Op, ProfileDb};
use tower::ServiceExt;

fn build(people: u64, dir: &std::path::Path) -> ProfileDb {
    let db = ProfileDb::builder()
        .durability(Durability::Buffered)
        .open(dir)
        .expect("open");
    for (id, name, default) in synth::topics() {
        db.define_topic(id, &name, default).expect("topic");
    }
    db.define_object_type(1, "Companies").expect("type");
    db.index_attribute("plan").expect("index");
    let now = db.now();
    let mut n = 0;
    while n < people {
        let end = (n + 1000).min(people);
        let ops: Vec<Op> = (n..end)
            .flat_map(|i| synth::person_ops(i, synth::SEED, now))
            .collect();
        db.write_batch(&ops).expect("load");
        n = end;
    }
    for (name, condition) in synth::segments(5) {
        db.create_segment(&name, Some(&condition)).expect("segment");
    }
    db.flush().expect("flush");
    db
}

fn bench_pages(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let db = match std::env::var_os("PROFILEDB_BENCH_DB") {
        Some(dir) => ProfileDb::open(dir).expect("open PROFILEDB_BENCH_DB"),
        None => {
            let people = std::env::var("PROFILEDB_BENCH_PEOPLE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000);
            build(people, tmp.path())
        }
    };
    let people = db.stats().expect("stats").people;
    eprintln!("web bench over {people} people");
    let app = router(WebState::new(Arc::new(db), None).expect("state"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let get = |path: &str| {
        let app = app.clone();
        let request = Request::get(path).body(Body::empty()).expect("request");
        rt.block_on(async move {
            let response = app.oneshot(request).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body")
                .len()
        })
    };
    let deep = format!("/?after={:08x}", people.saturating_sub(100));
    let person = synth::person_id(7);
    let cases = [
        ("people_list", "/".to_owned()),
        ("people_list_deep", deep),
        ("people_search", "/?search=user-0000012".to_owned()),
        (
            "people_where",
            "/?where=attr.plan%20%3D%20%22pro%22%20and%20topic%3A3%20and%20not%20unsubscribed"
                .to_owned(),
        ),
        ("profile", format!("/people/{person}")),
        ("profile_attributes", format!("/people/{person}/attributes")),
        ("profile_activity", format!("/people/{person}/activity")),
        ("segments", "/segments".to_owned()),
    ];
    let mut g = c.benchmark_group("web");
    g.sample_size(30).measurement_time(Duration::from_secs(4));
    for (name, path) in &cases {
        eprintln!("{name}: {path} is {} bytes of HTML", get(path));
        g.bench_function(*name, |b| b.iter(|| get(path)));
    }
    g.finish();
}

criterion_group!(benches, bench_pages);
criterion_main!(benches);
