//! The People page in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver + fantoccini). Opens the list on a synthetic workspace, searches,
//! filters with a valid and an invalid condition, opens a profile and checks every
//! section against `profile()`, uses each tab, performs each action and sees its effect,
//! and saves a screenshot of each page at 1280 and 390 px under
//! `target/screenshots/`.
//!
//! Skips, saying so on stderr, when `/usr/bin/chromium` (or `PROFILEDB_CHROMIUM`) or
//! `chromedriver` is missing (`.ci/run` installs both).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod web_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use profiledb::{ActivityFilter, Ident, ProfileDb};
use serde_json::json;
use web_support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's path: `/usr/bin/chromium`, or `PROFILEDB_CHROMIUM` when set.
fn chromium() -> PathBuf {
    std::env::var_os("PROFILEDB_CHROMIUM").map_or_else(|| PathBuf::from(CHROMIUM), PathBuf::from)
}

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(path: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Session<'a> {
    c: Client,
    server: &'a Server,
    shots: PathBuf,
    width: u32,
}

impl Session<'_> {
    async fn go(&self, path: &str) {
        self.c.goto(&self.server.url(path)).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.c.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        out
    }

    async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.c.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.attr(attr).await.unwrap().unwrap_or_default());
        }
        out
    }

    /// Clicks something that stays on the page.
    async fn click_here(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks a link or submit button, and waits for the next page to load.
    async fn click(&self, css: &str) {
        self.c
            .execute("window.__old_page = true;", vec![])
            .await
            .unwrap();
        self.click_here(css).await;
        let started = Instant::now();
        loop {
            let done = self
                .c
                .execute(
                    "return window.__old_page === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await;
            if matches!(done, Ok(serde_json::Value::Bool(true))) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "clicking {css} loaded no new page within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn path(&self) -> String {
        let url = self.c.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Sets the viewport (not the window) to `width` × `height` CSS pixels.
    async fn viewport(&mut self, width: u32, height: u32) {
        self.c.set_window_size(width, height).await.unwrap();
        let inner = self
            .c
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .unwrap();
        let w = inner[0].as_u64().unwrap() as u32;
        let h = inner[1].as_u64().unwrap() as u32;
        if w != width || h != height {
            self.c
                .set_window_size(
                    width + (width - w.min(width)),
                    height + (height - h.min(height)),
                )
                .await
                .unwrap();
        }
        self.width = width;
    }

    /// Saves the page as `NAME-WIDTH.png`, after checking nothing overflows sideways.
    async fn shot(&self, name: &str) {
        let overflow = self
            .c
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{name} at {} px scrolls sideways by {overflow} px",
            self.width
        );
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}-{}.png", self.width)), png).unwrap();
    }
}

async fn connect(driver: &Driver, chromium: &Path, profile_dir: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile_dir.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap()
}

/// Says why the test did nothing, on the real stderr: libtest captures `eprintln!` of a
/// passing test, and a skip must be seen under plain `cargo test`.
fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED tests/browser.rs: {why}");
}

#[test]
fn the_people_page_in_chromium() {
    let Some(driver_path) = chromedriver() else {
        skipped("chromedriver is not installed (apt-get install chromium-driver)");
        return;
    };
    let chromium = chromium();
    if !chromium.is_file() {
        skipped(&format!(
            "{} is not installed (apt-get install chromium)",
            chromium.display()
        ));
        return;
    }
    let (_dir, db) = workspace(300);
    let server = Server::start(db.clone(), None);
    let keyed = Server::start(db.clone(), Some("app-key-for-the-browser"));
    let driver = Driver::start(&driver_path);
    let profile_dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = connect(&driver, &chromium, profile_dir.path()).await;
        let mut s = Session {
            c,
            server: &server,
            shots: screenshots_dir(),
            width: 1280,
        };
        s.viewport(1280, 1400).await;
        walk(&mut s, &db).await;
        log_in(&mut s, &keyed).await;
        s.server = &server;
        s.viewport(390, 1200).await;
        narrow(&s, &db).await;
        s.c.close().await.unwrap();
    });
    drop(driver);
    eprintln!("screenshots in {}", screenshots_dir().display());
}

/// The whole tour at 1280 px.
async fn walk(s: &mut Session<'_>, db: &Arc<ProfileDb>) {
    // The list.
    s.go("/").await;
    assert_eq!(s.c.title().await.unwrap(), "People · profiledb");
    assert_eq!(s.text("#count").await, "301 people match");
    assert_eq!(s.attrs("table.people tbody tr", "data-cio").await.len(), 50);
    s.shot("people").await;

    // Search.
    s.fill("input[name=search]", "user-0000012").await;
    s.click("form.filters button[type=submit]").await;
    assert_eq!(s.path().await, "/?search=user-0000012&where=");
    assert_eq!(s.text("#count").await, "10 people match");
    let expected: Vec<String> = db
        .people_page(Some("user-0000012"), None, 50, None)
        .unwrap()
        .people
        .iter()
        .map(|p| p.cio_id.clone())
        .collect();
    assert_eq!(s.attrs("table.people tbody tr", "data-cio").await, expected);

    // A valid condition, then an invalid one.
    s.fill("input[name=search]", "").await;
    let cond = r#"attr.plan = "pro" and not unsubscribed"#;
    s.fill("input[name=where]", cond).await;
    s.click("form.filters button[type=submit]").await;
    let n = db.count(cond).unwrap();
    assert_eq!(s.text("#count").await, format!("{n} people match"));
    s.shot("people-filtered").await;
    s.fill("input[name=where]", "attr.plan = = 1").await;
    s.click("form.filters button[type=submit]").await;
    let error = s.text("#condition-error").await;
    assert!(error.contains("does not parse: at byte 12"), "{error}");
    assert_eq!(s.text("#condition-error mark").await, "=");
    s.shot("people-invalid-condition").await;

    // Open a profile from the list.
    s.go("/?search=ann").await;
    s.click("table.people tbody tr a").await;
    let ann = Ident::id(ANN);
    let base = person_path(db, &ann);
    assert_eq!(s.path().await, base);
    check_overview(s, db, &ann).await;
    s.shot("profile").await;

    // Each tab.
    s.click(".tabs a[href$='/attributes']").await;
    let person = db.person(&ann).unwrap().unwrap();
    for (name, v) in &person.attributes {
        let css = format!("#all-attributes tr[data-attr='{name}'] td.value");
        assert_eq!(s.text(&css).await, shown(v), "{name}");
    }
    assert_eq!(
        s.attrs("#missing-attributes li", "data-missing").await,
        db.missing_attributes(&ann).unwrap()
    );
    s.shot("tab-attributes").await;

    s.click(".tabs a[href$='/activity']").await;
    let all = db.activities(&ann, &ActivityFilter::new(50)).unwrap();
    let cursors: Vec<String> = all.iter().map(|a| a.cursor.to_string()).collect();
    assert_eq!(s.attrs("ol.timeline > li", "data-cursor").await, cursors);
    s.fill("input[name=type]", "event").await;
    s.fill("input[name=name]", "purchase").await;
    s.click("form.filters button[type=submit]").await;
    let purchases = db
        .activities(
            &ann,
            &ActivityFilter::new(50).kind("event").name("purchase"),
        )
        .unwrap();
    assert_eq!(
        s.attrs("ol.timeline > li", "data-cursor").await.len(),
        purchases.len()
    );
    // The event data opens on click.
    let pre =
        s.c.find(Locator::Css("ol.timeline > li pre.json"))
            .await
            .unwrap();
    assert!(!pre.is_displayed().await.unwrap());
    s.click_here("ol.timeline > li details summary").await;
    assert!(pre.is_displayed().await.unwrap());
    assert!(pre.text().await.unwrap().contains("\"amount\": 240"));
    s.shot("tab-activity").await;

    s.click(".tabs a[href$='/deliveries']").await;
    assert_eq!(
        s.attrs("#all-deliveries tr[data-delivery]", "data-delivery")
            .await,
        vec!["dlv-ann-welcome".to_owned()]
    );
    assert_eq!(s.text("#all-deliveries td.status").await, "opened");
    s.shot("tab-deliveries").await;

    s.click(".tabs a[href$='/devices']").await;
    assert_eq!(s.text("#all-devices td.token").await, "apns-ann-iphone");
    assert_eq!(s.text("#all-devices td.app-version").await, "2.3.0");
    s.shot("tab-devices").await;

    // Hostile values show as text and never run.
    s.go(&format!("{base}/attributes")).await;
    s.fill("#set-attribute input[name=name]", "trap").await;
    s.fill(
        "#set-attribute input[name=value]",
        "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>",
    )
    .await;
    s.click("#set-attribute button[type=submit]").await;
    assert_eq!(s.text("p.notice").await, "The attribute was set.");
    assert_eq!(
        s.text("#all-attributes tr[data-attr='trap'] td.value")
            .await,
        "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"
    );
    assert_eq!(
        s.text("#all-attributes tr[data-attr='bio'] td.value").await,
        XSS_SCRIPT
    );
    assert_eq!(
        s.text("#all-attributes tr[data-attr='nickname'] td.value")
            .await,
        UNICODE
    );
    let pwned =
        s.c.execute("return window.__pwned === undefined;", vec![])
            .await
            .unwrap();
    assert_eq!(pwned, json!(true), "a stored value ran as script");

    // Set an attribute, see it in the activity; remove it.
    s.fill("#set-attribute input[name=name]", "favourite").await;
    s.fill("#set-attribute input[name=value]", "42").await;
    s.c.find(Locator::Css("#set-attribute select[name=as]"))
        .await
        .unwrap()
        .select_by_value("json")
        .await
        .unwrap();
    s.click("#set-attribute button[type=submit]").await;
    assert_eq!(
        s.path().await,
        format!("{base}/attributes?done=attribute_set")
    );
    assert_eq!(
        s.text("#all-attributes tr[data-attr='favourite'] td.value")
            .await,
        "42"
    );
    assert_eq!(
        db.person(&ann).unwrap().unwrap().attributes["favourite"],
        42i64.into()
    );
    s.shot("action-attribute-set").await;
    s.click(".tabs a[href$='/activity']").await;
    let first = s.text("ol.timeline > li").await;
    assert!(first.contains("favourite: — → 42"), "{first}");
    s.go(&format!("{base}/attributes")).await;
    s.click("#all-attributes tr[data-attr='favourite'] form button")
        .await;
    assert_eq!(s.text("p.notice").await, "The attribute was removed.");
    assert!(s
        .attrs("#all-attributes tr[data-attr='favourite']", "data-attr")
        .await
        .is_empty());
    assert_eq!(attribute(db, &ann, "favourite"), None);

    // Add to a manual segment and remove again.
    s.go(&base).await;
    let vip = db.segments().into_iter().find(|x| x.name == "VIP").unwrap();
    s.c.find(Locator::Css("#manual-segments select[name=segment]"))
        .await
        .unwrap()
        .select_by_value(&vip.id.to_string())
        .await
        .unwrap();
    s.click("#manual-segments button[type=submit]").await;
    assert_eq!(s.text("p.notice").await, "Added to the segment.");
    assert_eq!(
        s.attrs("ul[data-segments=manual] li", "data-segment").await,
        vec![vip.id.to_string()]
    );
    assert!(db
        .person_segments(&ann)
        .unwrap()
        .iter()
        .any(|x| x.id == vip.id));
    let first = s.text("#activity ol.timeline > li").await;
    assert!(first.contains("Entered segment VIP"), "{first}");
    s.shot("action-segment-added").await;
    s.click("#manual-segments form.chip button").await;
    assert_eq!(s.text("p.notice").await, "Removed from the segment.");
    assert!(!db
        .person_segments(&ann)
        .unwrap()
        .iter()
        .any(|x| x.id == vip.id));

    // Delete and suppress, each through its confirmation.
    for (n, action, notice) in [
        (3u64, "delete", "The person was deleted."),
        (4, "suppress", "The person was suppressed and deleted."),
    ] {
        let who = Ident::id(profiledb::synth::person_id(n));
        s.go(&person_path(db, &who)).await;
        s.click(&format!("#{action}-link")).await;
        assert!(s.text("#confirm h1").await.ends_with("this person?"));
        s.shot(&format!("confirm-{action}")).await;
        s.click("#confirm-button").await;
        assert_eq!(s.text("p.notice").await, notice);
        assert!(db.person(&who).unwrap().is_none());
    }
    assert!(db
        .is_suppressed(&Ident::id(profiledb::synth::person_id(4)))
        .unwrap());
    s.shot("people-after-delete").await;

    // Segments, one segment, an object.
    s.click(".topbar nav a[href='/segments']").await;
    for info in db.segments() {
        let css = format!("#segments-table tr[data-segment='{}'] td.size", info.id);
        assert_eq!(s.text(&css).await, info.members.to_string());
    }
    s.shot("segments").await;
    s.click("#segments-table tr[data-segment='1'] a").await;
    let one = db.segments().into_iter().find(|x| x.id == 1).unwrap();
    assert_eq!(s.text("#segment-size").await, one.members.to_string());
    s.shot("segment").await;
    s.go(&base).await;
    s.click("#relationships a[href='/objects/1/company-7']")
        .await;
    assert_eq!(s.text("#object-name").await, "Companies company-7");
    s.shot("object").await;
}

async fn check_overview(s: &Session<'_>, db: &ProfileDb, who: &Ident) {
    let profile = db.profile(who, 10).unwrap().unwrap();
    let p = &profile.person;
    assert_eq!(
        s.text("#subscription-status").await,
        if profile.subscription.unsubscribed {
            "Unsubscribed from all messages"
        } else {
            "Subscribed"
        }
    );
    for t in &profile.subscription.topics {
        let state = s.text(&format!("li[data-topic='{}'] .badge", t.id)).await;
        assert_eq!(
            state,
            if t.subscribed { "in" } else { "out" },
            "topic {}",
            t.id
        );
    }
    assert_eq!(
        s.text("tr[data-ident='id'] td.value").await,
        p.id.clone().unwrap()
    );
    assert_eq!(
        s.text("tr[data-ident='email'] td.value").await,
        p.email.clone().unwrap()
    );
    assert_eq!(s.text("tr[data-ident='cio_id'] td.value").await, p.cio_id);
    for (name, v) in &p.attributes {
        let css = format!("#identifiers tr[data-attr='{name}'] td.value");
        assert_eq!(s.text(&css).await, shown(v), "{name}");
    }
    let cursors: Vec<String> = profile
        .activities
        .iter()
        .map(|a| a.cursor.to_string())
        .collect();
    assert_eq!(
        s.attrs("#activity li[data-cursor]", "data-cursor").await,
        cursors
    );
    let ids: Vec<String> = profile.deliveries.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        s.attrs("#deliveries tr[data-delivery]", "data-delivery")
            .await,
        ids
    );
    let statuses: Vec<String> = profile
        .deliveries
        .iter()
        .map(|d| d.status.clone())
        .collect();
    assert_eq!(s.texts("#deliveries td.status").await, statuses);
    for kind in ["data-driven", "manual"] {
        let ids: Vec<String> = profile
            .segments
            .iter()
            .filter(|x| (x.kind == "manual") == (kind == "manual"))
            .map(|x| x.id.to_string())
            .collect();
        let css = format!("ul[data-segments='{kind}'] li");
        assert_eq!(s.attrs(&css, "data-segment").await, ids, "{kind}");
    }
    let tokens: Vec<String> = profile.devices.iter().map(|d| d.token.clone()).collect();
    assert_eq!(
        s.attrs("#devices li[data-device]", "data-device").await,
        tokens
    );
    let objects: Vec<String> = profile
        .relationships
        .iter()
        .map(|r| r.object.to_string())
        .collect();
    assert_eq!(
        s.attrs("#relationships tr[data-object]", "data-object")
            .await,
        objects
    );
    let rel = s.text("#relationships tr[data-object]").await;
    assert!(rel.contains("Company 7") && rel.contains("admin"), "{rel}");
}

/// With a key, the page asks for it, and the right key opens it.
async fn log_in(s: &mut Session<'_>, keyed: &Server) {
    s.c.goto(&keyed.url("/segments")).await.unwrap();
    assert_eq!(s.path().await, "/login?next=%2Fsegments");
    s.fill("input[name=key]", "wrong").await;
    s.click(".login button[type=submit]").await;
    assert!(s
        .text(".login .error")
        .await
        .contains("not this server's App API key"));
    s.shot("login").await;
    s.fill("input[name=key]", "app-key-for-the-browser").await;
    s.click(".login button[type=submit]").await;
    assert_eq!(s.path().await, "/segments");
    assert!(s.text(".topbar").await.contains("Log out"));
}

/// Every page at phone width: nothing scrolls sideways, and a screenshot of each.
async fn narrow(s: &Session<'_>, db: &ProfileDb) {
    let base = person_path(db, &Ident::id(ANN));
    for (name, path) in [
        ("people", "/".to_owned()),
        (
            "people-invalid-condition",
            format!("/?where={}", enc("attr.plan = = 1")),
        ),
        ("profile", base.clone()),
        ("tab-attributes", format!("{base}/attributes")),
        ("tab-activity", format!("{base}/activity")),
        ("tab-deliveries", format!("{base}/deliveries")),
        ("tab-devices", format!("{base}/devices")),
        ("confirm-delete", format!("{base}/confirm/delete")),
        ("segments", "/segments".to_owned()),
        ("segment", "/segments/1".to_owned()),
        ("object", "/objects/1/company-7".to_owned()),
    ] {
        s.go(&path).await;
        s.shot(name).await;
    }
    // The list still searches at this width.
    s.go("/").await;
    s.fill("input[name=search]", "ann").await;
    s.click("form.filters button[type=submit]").await;
    assert_eq!(s.text("#count").await, "1 person match");
}
