//! A server on a free loopback port over a temporary database, for the server tests.
#![allow(dead_code, reason = "each test file uses part of it")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use profiledb::server::{Config, Keys, Server};
use profiledb::{Durability, ManualClock, ProfileDb};

pub const SITE: &str = "site-1";
pub const API_KEY: &str = "track-secret";
pub const WRITE_KEY: &str = "write-secret";
pub const APP_KEY: &str = "app-secret";
pub const WEBHOOK_KEY: &str = "hook-secret";
/// The tests' fixed "now".
pub const NOW: i64 = 1_790_000_000;

pub fn keys() -> Keys {
    Keys {
        site_id: Some(SITE.into()),
        api_key: Some(API_KEY.into()),
        write_key: Some(WRITE_KEY.into()),
        app_key: Some(APP_KEY.into()),
        webhook_key: Some(WEBHOOK_KEY.into()),
    }
}

pub struct TestServer {
    pub db: ProfileDb,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), profiledb::server::ServeError>>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(Config {
            keys: keys(),
            ..Config::default()
        })
    }

    pub fn with(config: Config) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let db = ProfileDb::builder()
            .durability(Durability::Buffered)
            .clock(Arc::new(ManualClock::new(NOW)))
            .open(dir.path())
            .unwrap();
        let server = Server::bind(db.clone(), "127.0.0.1:0".parse().unwrap(), config).unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            server.run(async move {
                let _ = stopped.await;
            })
        });
        TestServer {
            db,
            addr,
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server (drain, flush) and waits for it.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A request builder with Track's Basic auth.
pub fn track(
    c: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::blocking::RequestBuilder {
    c.request(method, url).basic_auth(SITE, Some(API_KEY))
}

/// Runs `f(thread, base_url)` on `n` threads at once and waits for them all.
pub fn in_parallel(s: &TestServer, n: usize, f: impl Fn(usize, &str) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|t| {
            let (f, url) = (f.clone(), s.url(""));
            std::thread::spawn(move || f(t, &url))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
