//! Customer.io's own clients, unmodified, against `profiledb serve`: `customerio-node`
//! (npm) and `customerio-cdp-analytics` (PyPI) run the journeys in `tests/clients/` and
//! the stored profiles are checked through the library and the App API.
//!
//! The clients come from the registries: `.ci/run` installs them (`npm install` in
//! `tests/clients/`, `pip install -r tests/clients/requirements.txt`). Where node,
//! python or the packages are missing, each test says so on stderr and skips.
#![cfg(feature = "server")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

mod server_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use profiledb::{ActivityFilter, Ident, ObjectRef};
use serde_json::Value as Json;
use server_common::*;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Whether `program args` runs and succeeds.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    eprintln!("  (.ci/run installs it; see tests/server_clients.rs)");
}

#[test]
fn customerio_node_journey() {
    if !runs("node", &["--version"]) {
        return skip("customerio_node_journey: `node` is not installed");
    }
    if !clients_dir().join("node_modules/customerio-node").is_dir() {
        return skip(
            "customerio_node_journey: customerio-node is not installed in tests/clients \
             (run `npm install --prefix tests/clients`)",
        );
    }
    let s = TestServer::start();
    let segment = s.db.create_segment("Node VIPs", None).unwrap();
    let out = Command::new("node")
        .current_dir(clients_dir())
        .arg("journey.js")
        .args([
            &s.url(""),
            SITE,
            API_KEY,
            APP_KEY,
            WRITE_KEY,
            &segment.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "node journey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Json = serde_json::from_slice(&out.stdout).unwrap();

    let n1 = Ident::id("n-1");
    let p = s.db.profile(&n1, 100).unwrap().unwrap();
    let person = &p.person;
    // What the App API answered the client is what the library holds.
    let c = &got["n1"]["customer"];
    assert_eq!(c["identifiers"]["cio_id"], person.cio_id.as_str());
    for (k, v) in &person.attributes {
        assert_eq!(c["attributes"][k], v.to_json(), "attribute {k}");
    }
    assert_eq!(person.attributes["plan"], "pro".into());
    assert_eq!(person.attributes["team"], "core".into());
    // Events (deduplicated), page, screen, the merged person's data, the relationship.
    let names: Vec<(&str, Option<&str>)> = p
        .activities
        .iter()
        .map(|a| (a.kind.as_str(), a.name.as_deref()))
        .collect();
    for want in [
        ("event", Some("purchase")),
        ("page", Some("/pricing")),
        ("screen", Some("Settings")),
        ("event", Some("signed_contract")),
    ] {
        assert!(names.contains(&want), "{want:?} missing from {names:?}");
    }
    assert_eq!(p.devices.len(), 1, "{:?}", p.devices);
    assert_eq!(p.devices[0].token, "apns-n1");
    assert_eq!(c["devices"][0]["id"], "apns-n1");
    assert_eq!(p.relationships.len(), 1);
    assert_eq!(p.relationships[0].object, ObjectRef::new(1, "acme"));
    assert_eq!(p.relationships[0].object_attributes["name"], "Acme".into());
    assert!(
        s.db.person(&Ident::id("n-3")).unwrap().is_none(),
        "merged away"
    );
    assert_eq!(p.segments.len(), 1);
    assert_eq!(p.segments[0].id, segment);
    // Anonymous activity followed the visitor who identified with it.
    let n2 =
        s.db.activities(&Ident::id("n-2"), &ActivityFilter::new(50).kind("event"))
            .unwrap();
    assert!(
        n2.iter()
            .any(|a| a.name.as_deref() == Some("viewed_product")),
        "{n2:?}"
    );
    assert_eq!(got["n2"]["customer"]["id"], "n-2");
    assert_eq!(got["byEmail"]["results"][0]["id"], "n-1");
    assert!(s.db.is_suppressed(&Ident::id("n-4")).unwrap());
    assert_eq!(got["n4Status"], 404);
    let form =
        s.db.person(&Ident::email("form@example.com"))
            .unwrap()
            .unwrap();
    assert_eq!(form.attributes["first_name"], "Forma".into());
    // Pipelines through the Node client.
    let np = s.db.profile(&Ident::id("np-1"), 20).unwrap().unwrap();
    assert!(np
        .activities
        .iter()
        .any(|a| a.name.as_deref() == Some("Order Completed")));
    assert_eq!(np.relationships[0].object, ObjectRef::new(1, "globex"));
    assert_eq!(
        got["np1"]["customer"]["attributes"]["email"],
        "np@example.com"
    );
}

#[test]
fn customerio_cdp_analytics_python_journey() {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| runs(p, &["--version"]));
    let Some(python) = python else {
        return skip("customerio_cdp_analytics_python_journey: python is not installed");
    };
    if !runs(python, &["-c", "import customerio.analytics"]) {
        return skip(
            "customerio_cdp_analytics_python_journey: customerio-cdp-analytics is not \
             installed (run `pip install -r tests/clients/requirements.txt`)",
        );
    }
    let s = TestServer::start();
    let out = Command::new(python)
        .current_dir(clients_dir())
        .arg("journey.py")
        .args([&s.url(""), WRITE_KEY])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python journey failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = s.db.profile(&Ident::id("py-1"), 100).unwrap().unwrap();
    assert_eq!(p.person.attributes["plan"], "pro".into());
    assert_eq!(p.person.email.as_deref(), Some("py@example.com"));
    let names: Vec<(&str, Option<&str>)> = p
        .activities
        .iter()
        .map(|a| (a.kind.as_str(), a.name.as_deref()))
        .collect();
    assert!(
        names.contains(&("event", Some("Order Completed"))),
        "{names:?}"
    );
    assert!(names.iter().any(|(k, _)| *k == "page"), "{names:?}");
    assert!(names.iter().any(|(k, _)| *k == "screen"), "{names:?}");
    assert_eq!(p.relationships[0].object, ObjectRef::new(1, "initech"));
    assert_eq!(p.devices[0].token, "tok-py1");
    assert!(
        s.db.person(&Ident::id("py-3")).unwrap().is_none(),
        "aliased away"
    );
    let py2 =
        s.db.activities(&Ident::id("py-2"), &ActivityFilter::new(20).kind("event"))
            .unwrap();
    assert!(py2
        .iter()
        .any(|a| a.name.as_deref() == Some("Product Viewed")));
    assert!(s.db.is_suppressed(&Ident::id("py-4")).unwrap());
    // The App API answers what the library holds.
    let (status, got) = {
        let res = client()
            .get(s.url("/v1/customers/py-1/attributes"))
            .bearer_auth(APP_KEY)
            .send()
            .unwrap();
        (res.status().as_u16(), res.json::<Json>().unwrap())
    };
    assert_eq!(status, 200);
    for (k, v) in &p.person.attributes {
        assert_eq!(
            got["customer"]["attributes"][k],
            v.to_json(),
            "attribute {k}"
        );
    }
}
