//! The People page over real HTTP on loopback: every page and tab, every action, the
//! login, and the XSS and CSRF cases that must do no harm.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod web_support;

use std::sync::Arc;

use profiledb::{ActivityFilter, Ident, ProfileDb};
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use web_support::*;

/// A client that keeps the page's session cookie, follows nothing, and reads the CSRF
/// token from the last page.
struct Visitor<'a> {
    server: &'a Server,
    http: Client,
    cookie: Option<String>,
    csrf: String,
    bearer: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> String {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

impl<'a> Visitor<'a> {
    fn new(server: &'a Server) -> Visitor<'a> {
        Visitor {
            server,
            http: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
            bearer: None,
        }
    }

    fn keep(&mut self, response: reqwest::blocking::Response) -> Page {
        for c in response.headers().get_all(SET_COOKIE) {
            let pair = c.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().unwrap();
        if let Some(at) = body.find(r#"name="csrf" value=""#) {
            let rest = &body[at + 19..];
            self.csrf = rest[..rest.find('"').unwrap()].to_owned();
        }
        Page {
            status,
            headers,
            body,
        }
    }

    fn get(&mut self, path: &str) -> Page {
        let mut req = self.http.get(self.server.url(path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(k) = &self.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        let response = req.send().unwrap();
        self.keep(response)
    }

    fn post_with(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut req = self.http.post(self.server.url(path)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(k) = &self.bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {k}"));
        }
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        let response = req.send().unwrap();
        self.keep(response)
    }

    /// Posts `form` with this session's CSRF token, as the page's own forms do.
    fn act(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut full = vec![("csrf", csrf.as_str())];
        full.extend_from_slice(form);
        let origin = format!("http://{}", self.server.addr);
        self.post_with(path, &full, Some(&origin))
    }
}

fn ann_path(db: &ProfileDb) -> String {
    person_path(db, &Ident::id(ANN))
}

#[test]
fn the_people_list_searches_filters_and_pages() {
    let (_dir, db) = workspace(300);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);

    let page = v.get("/");
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<strong>301</strong> people match"),
        "{}",
        page.body
    );
    assert!(page.body.contains("user-00000000"));
    assert!(page.body.contains("user0@example.com"));
    assert!(
        page.body.contains("2026-01-01 00:00:00 UTC"),
        "created and updated times"
    );

    // Search by id prefix and by email prefix (any case).
    let page = v.get("/?search=user-0000012");
    let expected = db
        .people_page(Some("user-0000012"), None, 50, None)
        .unwrap();
    assert_eq!(expected.count, 10);
    assert!(page.body.contains("<strong>10</strong> people match"));
    for p in &expected.people {
        assert!(page.body.contains(&format!("data-cio=\"{}\"", p.cio_id)));
    }
    let page = v.get("/?search=ANN.LEE");
    assert!(page.body.contains("<strong>1</strong> person match"));
    assert!(page.body.contains("Ann.Lee@Example.com"));

    // A valid condition: the count is the library's.
    let cond = r#"attr.plan = "pro" and not unsubscribed"#;
    let page = v.get(&format!("/?where={}", enc(cond)));
    assert_eq!(page.status, StatusCode::OK);
    let n = db.count(cond).unwrap();
    assert!(page
        .body
        .contains(&format!("<strong>{n}</strong> people match")));

    // An invalid one: refused inline with the position marked, the text kept in the box.
    let bad = r#"attr.plan = "pro" and and"#;
    let page = v.get(&format!("/?where={}", enc(bad)));
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("id=\"condition-error\""));
    assert!(
        page.body.contains("`condition` does not parse: at byte 22"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("and <mark>and</mark></pre>"),
        "the mark is on the token at byte 22"
    );
    assert!(page
        .body
        .contains("value=\"attr.plan = &quot;pro&quot; and and\""));
    // An unknown segment is the library's refusal, without a position.
    let page = v.get(&format!("/?where={}", enc("segment:nosuch")));
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("nosuch"));

    // Paging by cursor: the next link continues where the page ended, in id order.
    let page = v.get("/");
    let first = db.people_page(None, None, 50, None).unwrap();
    let next = first.next.unwrap();
    assert!(page.body.contains(&format!("/?after={}", next.cio_id())));
    let page2 = v.get(&format!("/?after={}", next.cio_id()));
    let second = db.people_page(None, None, 50, Some(next)).unwrap();
    assert!(page2
        .body
        .contains(&format!("data-cio=\"{}\"", second.people[0].cio_id)));
    assert!(!page2
        .body
        .contains(&format!("data-cio=\"{}\"", first.people[0].cio_id)));
    assert!(page2.body.contains("First page"));
    // Search and condition travel with the cursor.
    let page = v.get(&format!("/?search=user&where={}", enc("all")));
    assert!(page.body.contains("/?search=user&amp;where=all&amp;after="));

    let page = v.get("/?after=not-hex");
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("after: `not-hex` is not a cursor"));
}

#[test]
fn a_profile_and_its_tabs_show_the_library_answer() {
    let (_dir, db) = workspace(50);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);
    let ann = Ident::id(ANN);
    let profile = db.profile(&ann, 10).unwrap().unwrap();
    let base = ann_path(&db);

    // The same profile by id, email (any case), and cio_id; URL-encoded.
    for path in [
        format!("/people/{ANN}"),
        format!("/people/{}", enc("ann.lee@example.com")),
        base.clone(),
    ] {
        let page = v.get(&path);
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page
            .body
            .contains("<h1 id=\"person-name\">Ann.Lee@Example.com</h1>"));
    }

    let page = v.get(&base);
    let body = &page.body;
    // Subscription and topics.
    assert!(body.contains("id=\"subscription-status\">Subscribed<"));
    for t in &profile.subscription.topics {
        let state = if t.subscribed { "in" } else { "out" };
        let li = format!(
            "data-topic=\"{}\"><span>{}</span><span class=\"badge {}\">{state}</span>",
            t.id,
            t.name,
            if t.subscribed { "on" } else { "off" }
        );
        assert!(body.contains(&li), "topic {} {state}", t.id);
    }
    // Identifiers and attributes.
    assert!(body.contains("data-ident=\"cio_id\""));
    assert!(body.contains("<td class=\"value\">ann-lee</td>"));
    for (name, value) in &profile.person.attributes {
        assert!(
            body.contains(&format!("data-attr=\"{name}\"")),
            "attribute {name}"
        );
        let _ = value;
    }
    assert!(body.contains("<span class=\"v\">enterprise</span>"));
    assert!(body.contains("<code class=\"v\">34</code>"));
    // Recent activity, newest first, attribute changes as old → new.
    let kinds: Vec<&str> = profile.activities.iter().map(|a| a.kind.as_str()).collect();
    let mut at = 0;
    for a in &profile.activities {
        let marker = format!("data-cursor=\"{}\"", a.cursor);
        let found = body[at..]
            .find(&marker)
            .unwrap_or_else(|| panic!("{kinds:?}: {marker}"));
        at += found;
    }
    assert!(body.contains("<span class=\"old\">pro</span> → <span class=\"new\">enterprise</span>"));
    assert!(body.contains("Event “&lt;img src=x onerror=alert(1)&gt;”"));
    assert!(body.contains("Viewed page https://example.com/pricing"));
    // Deliveries with status and metric times.
    assert!(body.contains("data-delivery=\"dlv-ann-welcome\""));
    assert!(body.contains("<span class=\"badge\">opened</span>"));
    assert!(body.contains("data-metric=\"delivered\">delivered <time"));
    // Segments split, devices, relationships linking to the object.
    assert!(body.contains("data-segments=\"data-driven\""));
    assert!(body.contains("data-segments=\"manual\""));
    for s in &profile.segments {
        assert!(body.contains(&format!("data-segment=\"{}\"", s.id)));
    }
    assert!(body.contains("data-device=\"apns-ann-iphone\""));
    assert!(body.contains("<span class=\"app-version\">2.3.0</span>"));
    assert!(body.contains("href=\"/objects/1/company-7\""));
    assert!(body.contains("<dt>role</dt><dd><span class=\"v\">admin</span></dd>"));
    assert!(body.contains("<dt>name</dt><dd><span class=\"v\">Company 7</span></dd>"));

    // Attributes tab: every attribute with its time, then the names Ann lacks.
    let page = v.get(&format!("{base}/attributes"));
    assert_eq!(page.status, StatusCode::OK);
    for (name, t) in &profile.person.timestamps {
        assert!(
            page.body.contains(&format!("data-attr=\"{name}\"")),
            "{name} {t}"
        );
    }
    let missing = db.missing_attributes(&ann).unwrap();
    assert!(missing.contains(&"country".to_owned()));
    for m in &missing {
        assert!(page.body.contains(&format!("data-missing=\"{m}\"")));
    }

    // Activity tab: every entry; filters by type, name, time; paging.
    let page = v.get(&format!("{base}/activity"));
    let all = db.activities(&ann, &ActivityFilter::new(1000)).unwrap();
    assert_eq!(page.body.matches("data-cursor=").count(), all.len());
    let page = v.get(&format!("{base}/activity?type=event&name=purchase"));
    assert_eq!(page.body.matches("data-kind=\"event\"").count(), 3);
    assert_eq!(page.body.matches("data-cursor=").count(), 3);
    assert!(
        page.body.contains("<summary>data</summary>"),
        "event data expandable"
    );
    let since = T0 - 10 * 86_400;
    let page = v.get(&format!(
        "{base}/activity?type=event&name=purchase&since={since}"
    ));
    assert_eq!(page.body.matches("data-cursor=").count(), 2);
    let page = v.get(&format!(
        "{base}/activity?type=event&name=purchase&since=2025-12-20T00%3A00&until=2025-12-25T00%3A00"
    ));
    assert_eq!(
        page.body.matches("data-cursor=").count(),
        1,
        "the 9-days-ago purchase"
    );
    let page = v.get(&format!("{base}/activity?since=yesterday"));
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("since: `yesterday` is not a time"));
    let page = v.get(&format!("{base}/activity?before=12"));
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page
        .body
        .contains("`cursor` is not a cursor this database returned"));

    // Deliveries and Devices tabs.
    let page = v.get(&format!("{base}/deliveries"));
    assert!(page.body.contains("data-delivery=\"dlv-ann-welcome\""));
    assert!(page.body.contains("Welcome to &lt;b&gt;Pro&lt;/b&gt;"));
    let page = v.get(&format!("{base}/devices"));
    assert!(page
        .body
        .contains("<td class=\"platform\" data-label=\"platform\">ios</td>"));
    assert!(page.body.contains("iPhone15,2"));

    // Unknown people: 404 on every tab, with the library's wording.
    for tab in [
        "",
        "/attributes",
        "/activity",
        "/deliveries",
        "/devices",
        "/confirm/delete",
    ] {
        let page = v.get(&format!("/people/nobody{tab}"));
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{tab}");
        assert!(page.body.contains("No person has the id `nobody`."));
    }
    assert_eq!(
        v.get(&format!("{base}/confirm/explode")).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(v.get("/no/such/page").status, StatusCode::NOT_FOUND);
}

#[test]
fn activity_pages_through_a_long_timeline() {
    let (_dir, db) = workspace(1);
    let who = Ident::id(ANN);
    for i in 0..120 {
        db.track(profiledb::Track::event(who.clone(), "tick").timestamp(T0 + i))
            .unwrap();
    }
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);
    let base = ann_path(&db);
    let mut path = format!("{base}/activity?type=event&name=tick");
    let mut seen = 0;
    for _ in 0..10 {
        let page = v.get(&path);
        seen += page.body.matches("data-cursor=").count();
        let Some(at) = page.body.find("id=\"next-page\" href=\"") else {
            break;
        };
        let rest = &page.body[at + 21..];
        path = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    }
    assert_eq!(seen, 120);
}

#[test]
fn segments_and_objects() {
    let (_dir, db) = workspace(200);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);

    let page = v.get("/segments");
    assert_eq!(page.status, StatusCode::OK);
    for s in db.segments() {
        let row = format!("data-segment=\"{}\"", s.id);
        let at = page.body.find(&row).unwrap();
        let size = format!(
            "<td class=\"num size\" data-label=\"size\">{}</td>",
            s.members
        );
        assert!(page.body[at..].contains(&size), "{}", s.name);
    }
    let biggest = db.segments().into_iter().max_by_key(|s| s.members).unwrap();
    assert!(biggest.members > 50, "a segment big enough to page");
    let page = v.get(&format!("/segments/{}", biggest.id));
    assert!(page.body.contains(&format!(
        "<strong id=\"segment-size\">{}</strong>",
        biggest.members
    )));
    assert!(page.body.contains("id=\"segment-condition\""));
    assert_eq!(page.body.matches("data-cio=").count(), 50);
    let at = page.body.find("id=\"next-page\" href=\"").unwrap();
    let rest = &page.body[at + 21..];
    let next = rest[..rest.find('"').unwrap()].to_owned();
    let page = v.get(&next);
    assert_eq!(
        page.body.matches("data-cio=").count() as u64,
        (biggest.members - 50).min(50)
    );
    let vip = db.segments().into_iter().find(|s| s.name == "VIP").unwrap();
    let page = v.get(&format!("/segments/{}", vip.id));
    assert!(page.body.contains("Manual segment"));
    assert!(page.body.contains("user-00000000"));
    assert_eq!(v.get("/segments/999").status, StatusCode::NOT_FOUND);
    assert_eq!(v.get("/segments/abc").status, StatusCode::NOT_FOUND);

    let page = v.get("/objects/1/company-7");
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .body
        .contains("<h1 id=\"object-name\">Companies company-7</h1>"));
    assert!(page.body.contains("<span class=\"v\">Company 7</span>"));
    let related = db
        .object_people(&profiledb::ObjectRef::new(1, "company-7"))
        .unwrap();
    assert!(page
        .body
        .contains(&format!("Related people ({})", related.len())));
    for (pid, _) in &related {
        assert!(page
            .body
            .contains(&format!("href=\"/people/cio_{}\"", pid.cio_id())));
    }
    assert!(
        page.body.contains("<dt>role</dt>"),
        "Ann's relationship attributes"
    );
    assert_eq!(
        v.get("/objects/1/nothing-here").status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(v.get("/objects/x/company-7").status, StatusCode::NOT_FOUND);
}

#[test]
fn every_action_goes_through_the_library_and_shows_in_the_activity() {
    let (_dir, db) = workspace(20);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);
    let ann = Ident::id(ANN);
    let base = ann_path(&db);
    v.get(&base);
    assert!(
        v.cookie.is_some() && !v.csrf.is_empty(),
        "no-auth still gives a session for CSRF"
    );

    // Set an attribute (text, then JSON), then remove it.
    let page = v.act(
        &format!("{base}/attributes/set"),
        &[("name", "favourite"), ("value", "tea"), ("as", "text")],
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location(),
        format!("{base}/attributes?done=attribute_set")
    );
    let person = db.person(&ann).unwrap().unwrap();
    assert_eq!(person.attributes["favourite"], "tea".into());
    let latest = &db.activities(&ann, &ActivityFilter::new(1)).unwrap()[0];
    assert_eq!(latest.kind, "attribute_change");
    assert!(latest.data.as_map().unwrap().contains_key("favourite"));
    let page = v.get(&page.location());
    assert!(page.body.contains("The attribute was set."));

    v.act(
        &format!("{base}/attributes/set"),
        &[("name", "lucky"), ("value", "[7, 13]"), ("as", "json")],
    );
    let person = db.person(&ann).unwrap().unwrap();
    assert_eq!(person.attributes["lucky"].to_string(), "[7,13]");
    let page = v.act(
        &format!("{base}/attributes/set"),
        &[("name", "lucky"), ("value", "{nope"), ("as", "json")],
    );
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("value: is not valid JSON"));
    // A refusal from the library carries its text.
    let long = "x".repeat(200);
    let page = v.act(
        &format!("{base}/attributes/set"),
        &[("name", &long), ("value", "1")],
    );
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("150"), "{}", page.body);

    let page = v.act(
        &format!("{base}/attributes/remove"),
        &[("name", "favourite")],
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(attribute(&db, &ann, "favourite"), None);
    let latest = &db.activities(&ann, &ActivityFilter::new(1)).unwrap()[0];
    assert_eq!(latest.kind, "attribute_change");

    // Manual segment membership.
    let vip = db.segments().into_iter().find(|s| s.name == "VIP").unwrap();
    let page = v.get(&base);
    assert!(page.body.contains(&format!(
        "<option value=\"{}\">VIP (#{})</option>",
        vip.id, vip.id
    )));
    let page = v.act(
        &format!("{base}/segments/add"),
        &[("segment", &vip.id.to_string())],
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(db
        .person_segments(&ann)
        .unwrap()
        .iter()
        .any(|s| s.id == vip.id));
    let latest = &db.activities(&ann, &ActivityFilter::new(1)).unwrap()[0];
    assert_eq!(latest.kind, "segment_entered");
    let page = v.get(&page.location());
    assert!(page.body.contains("Added to the segment."));
    assert!(page.body.contains("title=\"Remove from VIP\""));
    let page = v.act(
        &format!("{base}/segments/remove"),
        &[("segment", &vip.id.to_string())],
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(!db
        .person_segments(&ann)
        .unwrap()
        .iter()
        .any(|s| s.id == vip.id));
    assert_eq!(
        db.activities(&ann, &ActivityFilter::new(1)).unwrap()[0].kind,
        "segment_exited"
    );
    // A data-driven segment refuses manual membership: the library's words.
    let page = v.act(&format!("{base}/segments/add"), &[("segment", "1")]);
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("segment"), "{}", page.body);

    // Delete, with its confirmation page; and a POST without the confirmation does nothing.
    let victim = Ident::id(profiledb::synth::person_id(3));
    let vpath = person_path(&db, &victim);
    let page = v.get(&format!("{vpath}/confirm/delete"));
    assert!(page.body.contains("Delete this person?"));
    let page = v.act(&format!("{vpath}/delete"), &[]);
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(db.person(&victim).unwrap().is_some());
    let page = v.act(&format!("{vpath}/delete"), &[("confirm", "yes")]);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/?done=deleted");
    assert!(db.person(&victim).unwrap().is_none());
    assert_eq!(v.get(&vpath).status, StatusCode::NOT_FOUND);
    assert!(v
        .get("/?done=deleted")
        .body
        .contains("The person was deleted."));

    // Suppress: the person goes and their identifiers are blocked.
    let victim = Ident::id(profiledb::synth::person_id(4));
    let vpath = person_path(&db, &victim);
    assert!(v
        .get(&format!("{vpath}/confirm/suppress"))
        .body
        .contains("Suppress this person?"));
    let page = v.act(&format!("{vpath}/suppress"), &[("confirm", "yes")]);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(db.person(&victim).unwrap().is_none());
    assert!(db.is_suppressed(&victim).unwrap());
    // Actions that do not exist.
    let ann_base = ann_path(&db);
    assert_eq!(
        v.act(&format!("{ann_base}/explode"), &[("confirm", "yes")])
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        v.act(&format!("{ann_base}/segments/explode"), &[("segment", "6")])
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        v.act(&format!("{ann_base}/attributes"), &[]).status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Acting on somebody who is not there does nothing, and blocks nothing.
    let page = v.act("/people/never-was/suppress", &[("confirm", "yes")]);
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!db.is_suppressed(&Ident::id("never-was")).unwrap());
}

fn unchanged(db: &ProfileDb) -> Vec<(String, String)> {
    db.people()
        .unwrap()
        .into_iter()
        .map(|p| (p.cio_id.clone(), format!("{:?}", p.attributes)))
        .collect()
}

#[test]
fn csrf_cannot_make_a_browser_act() {
    let (_dir, db) = workspace(10);
    let server = Server::start(db.clone(), None);
    let base = ann_path(&db);
    let before = unchanged(&db);
    let segments_before = db.segments();

    let mut victim = Visitor::new(&server);
    victim.get(&base);
    let origin = format!("http://{}", server.addr);

    // A cross-site form: the browser would send the victim's cookie (were it not
    // SameSite=Strict), but the attacker cannot know the token.
    for form in [
        vec![("name", "pwned"), ("value", "1")],
        vec![("csrf", "0000"), ("name", "pwned"), ("value", "1")],
    ] {
        let page = victim.post_with(&format!("{base}/attributes/set"), &form, None);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.body.contains("CSRF token"));
    }
    // Another session's token does not fit this session.
    let mut attacker = Visitor::new(&server);
    attacker.get("/");
    let stolen = attacker.csrf.clone();
    assert_ne!(stolen, victim.csrf);
    let page = victim.post_with(
        &format!("{base}/delete"),
        &[("csrf", &stolen), ("confirm", "yes")],
        None,
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // The right token, but posted from another site's page.
    let token = victim.csrf.clone();
    let page = victim.post_with(
        &format!("{base}/delete"),
        &[("csrf", &token), ("confirm", "yes")],
        Some("http://evil.example"),
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("another site"));
    // No cookie at all (what SameSite=Strict leaves a cross-site request).
    let mut bare = Visitor::new(&server);
    let page = bare.post_with(
        &format!("{base}/suppress"),
        &[("csrf", &token), ("confirm", "yes")],
        Some(&origin),
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    // A forged session cookie fails its MAC.
    let mut forged = Visitor::new(&server);
    forged.cookie = Some(format!("pdb_session=00.{}.00", u64::MAX));
    let page = forged.post_with(
        &format!("{base}/delete"),
        &[("csrf", "00"), ("confirm", "yes")],
        Some(&origin),
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);

    assert_eq!(unchanged(&db), before, "no attack changed anybody");
    assert_eq!(db.segments(), segments_before);
    let cookie = victim.cookie.clone().unwrap();
    assert!(cookie.starts_with("pdb_session="));
    let page = victim.get("/");
    assert!(
        page.headers.get(SET_COOKIE).is_none(),
        "a valid session is kept"
    );
    let fresh = Visitor::new(&server).get("/");
    let set = fresh
        .headers
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
}

#[test]
fn xss_in_stored_values_is_shown_never_run() {
    let (_dir, db) = workspace(5);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);
    let base = ann_path(&db);
    for path in [
        base.clone(),
        format!("{base}/attributes"),
        format!("{base}/activity"),
        format!("{base}/deliveries"),
        "/?search=ann".to_owned(),
        format!("/?where={}", enc(XSS_SCRIPT)),
        format!("/?search={}", enc(XSS_QUOTES)),
        format!("/people/{}", enc(XSS_SCRIPT)),
        format!("/segments/{}", enc(XSS_SCRIPT)),
    ] {
        let page = v.get(&path);
        let body = &page.body;
        assert!(!body.contains("<script>alert"), "{path}: a raw script tag");
        assert!(!body.contains("<img src=x"), "{path}: a raw img tag");
        assert!(
            !body.contains("\" onmouseover="),
            "{path}: an attribute broke out"
        );
        assert!(!body.contains("<b>Pro"), "{path}");
        let csp = page
            .headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}");
        assert_eq!(
            body.matches("<script").count(),
            1,
            "{path}: only the page's own script"
        );
    }
    let page = v.get(&format!("{base}/attributes"));
    assert!(page
        .body
        .contains("&lt;script&gt;alert('xss')&lt;/script&gt;"));
    assert!(page
        .body
        .contains("&quot; onmouseover=&quot;alert(1)&quot; data-x='&amp;amp;'"));
    assert!(page.body.contains(UNICODE), "unicode shown as it is");
    let page = v.get(&format!("{base}/activity"));
    assert!(page
        .body
        .contains("Event “&lt;img src=x onerror=alert(1)&gt;”"));
    // Set through the page, shown escaped too.
    v.act(
        &format!("{base}/attributes/set"),
        &[("name", "<i>n</i>"), ("value", "\"><svg onload=alert(1)>")],
    );
    let page = v.get(&format!("{base}/attributes"));
    assert!(page.body.contains("&lt;i&gt;n&lt;/i&gt;"));
    assert!(page.body.contains("&quot;&gt;&lt;svg onload=alert(1)&gt;"));
    assert!(!page.body.contains("<svg"));
}

#[test]
fn with_a_key_every_page_needs_the_key_or_a_session() {
    let (_dir, db) = workspace(10);
    let server = Server::start(db.clone(), Some("s3cret-app-key"));
    let base = ann_path(&db);
    let mut v = Visitor::new(&server);

    for path in [
        "/",
        "/segments",
        "/segments/1",
        "/objects/1/company-7",
        &base,
        &format!("{base}/devices"),
    ] {
        let page = v.get(path);
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(page.location(), format!("/login?next={}", enc(path)));
        assert!(!page.body.contains("ann"), "{path} leaks nothing");
    }
    assert!(v.cookie.is_none(), "no session without the key");
    let before = unchanged(&db);
    let page = v.post_with(&format!("{base}/delete"), &[("confirm", "yes")], None);
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);

    // Wrong key, then the right one.
    let page = v.get("/login?next=%2Fsegments");
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("App API key"));
    let page = v.post_with("/login", &[("key", "guess"), ("next", "/segments")], None);
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(v.cookie.is_none());
    let page = v.post_with(
        "/login",
        &[("key", "s3cret-app-key"), ("next", "/segments")],
        None,
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/segments");
    assert!(v.cookie.is_some());
    // Never redirected off the site.
    let mut other = Visitor::new(&server);
    let page = other.post_with(
        "/login",
        &[("key", "s3cret-app-key"), ("next", "//evil.example/")],
        None,
    );
    assert_eq!(page.location(), "/");

    let page = v.get(&base);
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Log out"));
    // Acting needs the token as well as the session.
    let page = v.post_with(
        &format!("{base}/attributes/set"),
        &[("name", "k"), ("value", "v")],
        None,
    );
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(unchanged(&db), before);
    let page = v.act(
        &format!("{base}/attributes/set"),
        &[("name", "k"), ("value", "v")],
    );
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        db.person(&Ident::id(ANN)).unwrap().unwrap().attributes["k"],
        "v".into()
    );

    // The key as a header opens pages and actions, no token needed.
    let mut api = Visitor::new(&server);
    api.bearer = Some("s3cret-app-key".into());
    assert_eq!(api.get(&base).status, StatusCode::OK);
    let page = api.post_with(&format!("{base}/attributes/remove"), &[("name", "k")], None);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(attribute(&db, &Ident::id(ANN), "k"), None);
    api.bearer = Some("wrong".into());
    assert_eq!(api.get(&base).status, StatusCode::SEE_OTHER);

    // Logging out ends the session.
    let page = v.act("/logout", &[]);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(v.cookie.is_none());
    assert_eq!(v.get("/").status, StatusCode::SEE_OTHER);

    // Static files open without a session (the login page needs its style).
    assert_eq!(
        Visitor::new(&server).get("/static/app.css").status,
        StatusCode::OK
    );
    let _ = Arc::strong_count(&db);
}

#[test]
fn the_router_merges_into_a_server_router_with_a_fallback() {
    let (_dir, db) = workspace(1);
    let state = profiledb::server::web::WebState::new(db, None).unwrap();
    // What the server does: its own routes and fallback, then the page's routes.
    let app: axum::Router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "{}") })
        .merge(profiledb::server::web::router(state));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use tower::ServiceExt;
        for (path, status) in [("/", 200), ("/healthz", 200), ("/api/v1/nothing", 404)] {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{path}");
        }
    });
}

#[test]
fn pages_are_not_cached_and_cannot_be_framed() {
    let (_dir, db) = workspace(1);
    let server = Server::start(db.clone(), None);
    let mut v = Visitor::new(&server);
    let page = v.get(&ann_path(&db));
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    assert!(page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let css = v.get("/static/app.css");
    assert_eq!(
        css.headers.get("cache-control").unwrap(),
        "public, max-age=3600"
    );
}
