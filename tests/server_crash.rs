//! Crash under load: `profiledb serve` is killed with SIGKILL while clients send; after
//! a restart every request that was answered 2xx is there, and no request is half
//! applied.
#![cfg(all(feature = "server", unix))]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profiledb::{ActivityFilter, Ident, ProfileDb, Value};
use serde_json::json;

const CLIENTS: usize = 8;
/// Acknowledged requests before the kill, per round.
const KILL_AFTER: usize = 300;
/// Most requests one client sends per round (bounds the loop if the kill is late).
const MAX_PER_CLIENT: usize = 2_000;
const ROUNDS: usize = 3;

fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--db")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, base)
}

/// One request: a Track v2 batch that sets `a` and `b` to the same value on a person
/// and records an event with the same id; applied whole or not at all.
fn request(client: usize, round: usize, i: usize) -> (String, serde_json::Value) {
    let person = format!("c{client}-r{round}-{i}");
    let body = json!({"batch": [
        {"type": "person", "action": "identify", "identifiers": {"id": person}, "attributes": {"a": i, "b": i}},
        {"type": "person", "action": "event", "identifiers": {"id": person}, "name": "tick", "id": format!("e-{person}")},
    ]});
    (person, body)
}

#[test]
fn every_acknowledged_write_survives_kill_9_and_none_is_half_applied() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    for round in 0..ROUNDS {
        let (mut child, base) = start(dir.path());
        let count = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (base, count, dead, acked) =
                    (base.clone(), count.clone(), dead.clone(), acked.clone());
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(10))
                        .build()
                        .unwrap();
                    for i in 0..MAX_PER_CLIENT {
                        let (person, body) = request(c, round, i);
                        match http.post(format!("{base}/api/v2/batch")).json(&body).send() {
                            Ok(res) if res.status().is_success() => {
                                acked.lock().unwrap().push((person, i));
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(res) => panic!("unexpected answer {}", res.status()),
                            // The server is gone.
                            Err(_) if dead.load(Ordering::SeqCst) => return,
                            Err(e) => panic!("request failed before the kill: {e}"),
                        }
                    }
                })
            })
            .collect();
        while count.load(Ordering::SeqCst) < KILL_AFTER {
            std::thread::sleep(Duration::from_millis(2));
        }
        dead.store(true, Ordering::SeqCst);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for c in clients {
            c.join().unwrap();
        }

        let db = ProfileDb::open(dir.path()).unwrap();
        assert!(db.verify().unwrap().is_ok(), "round {round}: damaged");
        for (person, i) in acked.lock().unwrap().iter() {
            let who = Ident::id(person.clone());
            let p = db
                .person(&who)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acknowledged {person} is missing"));
            assert_eq!(p.attributes["a"], Value::Int(*i as i64));
        }
        // Nothing half applied: everyone written has both attributes and the event.
        for p in db.people().unwrap() {
            let id = p.id.clone().unwrap();
            assert_eq!(p.attributes.get("a"), p.attributes.get("b"), "{id}");
            let events = db
                .activities(
                    &Ident::id(id.clone()),
                    &ActivityFilter::new(5).kind("event"),
                )
                .unwrap();
            assert_eq!(events.len(), 1, "{id}: the identify without its event");
        }
        db.close().unwrap();
    }
    assert!(acked.lock().unwrap().len() >= ROUNDS * KILL_AFTER);
}
