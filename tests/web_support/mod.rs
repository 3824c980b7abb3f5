//! Shared by the People page tests: a synthetic workspace, and the page's router served
//! on a free loopback port.
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::sync::Arc;

use profiledb::server::web::{router, WebState};
use profiledb::synth;
use profiledb::{
    Channel, DeviceInput, Durability, Ident, Identify, ManualClock, Metric, NewDelivery, ObjectRef,
    Op, Platform, ProfileDb, Track, Value,
};

/// The fixed "now" of the tests: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600;

/// The attribute values the XSS cases store and expect to see shown, never run.
pub const XSS_SCRIPT: &str = "<script>alert('xss')</script>";
pub const XSS_QUOTES: &str = r#"" onmouseover="alert(1)" data-x='&amp;'"#;
pub const UNICODE: &str = "Zoë 🚀 日本語 \u{202e}reversed";

/// The hand-made person with something in every section.
pub const ANN: &str = "ann-lee";

/// A workspace of `people` synthetic people (the demo's generator), 10 topics, five
/// data-driven segments and a manual one ("VIP"), 100 companies, and Ann, who has an
/// attribute, event, page view, device, delivery and relationship of every kind,
/// including hostile strings.
pub fn workspace(people: u64) -> (tempfile::TempDir, Arc<ProfileDb>) {
    let dir = tempfile::tempdir().unwrap();
    let db = ProfileDb::builder()
        .clock(Arc::new(ManualClock::new(T0)))
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    for (id, name, default) in synth::topics() {
        db.define_topic(id, &name, default).unwrap();
    }
    db.define_object_type(1, "Companies").unwrap();
    let mut n = 0;
    while n < people {
        let end = (n + 500).min(people);
        let ops: Vec<Op> = (n..end)
            .flat_map(|i| synth::person_ops(i, synth::SEED, T0))
            .collect();
        db.write_batch(&ops).unwrap();
        n = end;
    }
    for c in 0..100u64 {
        db.identify_object(
            &ObjectRef::new(1, format!("company-{c}")),
            vec![
                ("name".into(), Value::from(format!("Company {c}"))),
                ("employees".into(), Value::from((c * 37 % 500 + 5) as i64)),
            ],
        )
        .unwrap();
    }
    for (name, condition) in synth::segments(5) {
        db.create_segment(&name, Some(&condition)).unwrap();
    }
    let vip = db.create_segment("VIP", None).unwrap();
    db.add_to_segment(vip, &[Ident::id(synth::person_id(0))])
        .unwrap();
    add_ann(&db);
    db.flush().unwrap();
    (dir, Arc::new(db))
}

fn add_ann(db: &ProfileDb) {
    let ann = Ident::id(ANN);
    db.identify(
        Identify::new(ann.clone())
            .set("email", "Ann.Lee@Example.com")
            .set("first_name", "Ann")
            .set("plan", "pro")
            .set("age", 34i64)
            .set("bio", XSS_SCRIPT)
            .set("quote", XSS_QUOTES)
            .set("nickname", UNICODE)
            .set("cio_subscription_preferences.topics.topic_2", true)
            .set("cio_subscription_preferences.topics.topic_3", false)
            .timestamp(T0 - 86_400),
    )
    .unwrap();
    db.identify(Identify::new(ann.clone()).set("plan", "enterprise"))
        .unwrap();
    db.track(Track::page(ann.clone(), "https://example.com/pricing").timestamp(T0 - 3600))
        .unwrap();
    for (days, amount) in [(20, 120i64), (9, 180), (2, 240)] {
        db.track(
            Track::event(ann.clone(), "purchase")
                .property("amount", amount)
                .property("note", XSS_SCRIPT)
                .timestamp(T0 - days * 86_400),
        )
        .unwrap();
    }
    db.track(Track::event(ann.clone(), "<img src=x onerror=alert(1)>").timestamp(T0 - 60))
        .unwrap();
    db.add_device(
        &ann,
        DeviceInput::new("apns-ann-iphone", Platform::Ios)
            .attribute("app_version", "2.3.0")
            .attribute("device_model", "iPhone15,2")
            .last_used(T0 - 600),
    )
    .unwrap();
    db.add_delivery(
        &ann,
        NewDelivery::new("dlv-ann-welcome", Channel::Email)
            .campaign_id("7")
            .recipient("Ann.Lee@Example.com")
            .subject("Welcome to <b>Pro</b>")
            .created(T0 - 7200),
    )
    .unwrap();
    db.report_metric(Metric::new("dlv-ann-welcome", "delivered").timestamp(T0 - 7100))
        .unwrap();
    db.report_metric(Metric::new("dlv-ann-welcome", "opened").timestamp(T0 - 7000))
        .unwrap();
    db.add_relationship(
        &ann,
        &ObjectRef::new(1, "company-7"),
        vec![("role".into(), Value::from("admin"))],
    )
    .unwrap();
}

/// The People page served on a free loopback port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Server {
    /// Serves the page over `db`, opened by `key` (`None`: no key, as `--no-auth`).
    pub fn start(db: Arc<ProfileDb>, key: Option<&str>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let state = WebState::new(db, key.map(str::to_owned)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router(state)).await.unwrap();
        });
        Server {
            addr,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

/// `s` percent-encoded as a path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The address of a person's profile as the page links it.
pub fn person_path(db: &ProfileDb, ident: &Ident) -> String {
    let p = db.person(ident).unwrap().unwrap();
    format!("/people/cio_{}", p.cio_id)
}

/// A value as the page shows it: a string as itself, anything else as compact JSON.
pub fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Person `who`'s attribute `name`, if they have it.
pub fn attribute(db: &ProfileDb, who: &Ident, name: &str) -> Option<Value> {
    db.person(who)
        .unwrap()
        .unwrap()
        .attributes
        .get(name)
        .cloned()
}
