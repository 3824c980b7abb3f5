//! Durability proof: `Durability::Flush` writes and `flush()` end in fsync of the
//! database files and directories, and the `COMMIT` file is replaced only after the data
//! is durable. sled 0.34's own flush ends in `sync_file_range`, which is not enough.
//!
//! A child process (this test binary re-run on `durability_child`) writes under
//! `strace -f -y`, marking the start and the end of each call with a `rename` of a marker
//! file, which strace shows by name; the parent reads the trace between the markers.
//!
//! Without strace (or when ptrace is not permitted) the syscall proof cannot run: the
//! test says so loudly on stderr and still runs the child, which checks what it can see
//! from inside (the `COMMIT` file names each acknowledged commit before the call returns).
//! Set `PROFILEDB_REQUIRE_STRACE=1` (CI machines that have strace) to make a missing
//! strace a failure instead.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use profiledb::{Durability, Ident, Identify, ManualClock, ProfileDb};

mod common;

const CHILD_ENV: &str = "PROFILEDB_DURABILITY_CHILD";
const WRITES: u64 = 3;

fn commit_file_seq(dir: &Path) -> u64 {
    common::commit_file_seq(dir)
}

/// Marks a point in the trace: renames the marker file to `name`.
struct Marker {
    dir: PathBuf,
    current: PathBuf,
}

impl Marker {
    fn new(dir: PathBuf) -> Marker {
        std::fs::create_dir_all(&dir).unwrap();
        let current = dir.join("start");
        std::fs::write(&current, b"").unwrap();
        Marker { dir, current }
    }
    fn mark(&mut self, name: &str) {
        let next = self.dir.join(name);
        std::fs::rename(&self.current, &next).unwrap();
        self.current = next;
    }
}

/// The child: `WRITES` writes with `Durability::Flush`, then buffered writes and one
/// `flush()`, each between markers; checks the `COMMIT` file after each.
#[test]
fn durability_child() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = PathBuf::from(root);
    let mut marker = Marker::new(root.join("markers"));
    let clock = Arc::new(ManualClock::new(1_767_225_600));
    {
        let dir = root.join("flushed");
        marker.mark("open-begin");
        let db = ProfileDb::builder()
            .clock(clock.clone())
            .durability(Durability::Flush)
            .open(&dir)
            .unwrap();
        marker.mark("open-done");
        for i in 1..=WRITES {
            marker.mark(&format!("write-{i}-begin"));
            db.identify(
                Identify::new(Ident::id(format!("u{i}"))).set("n", i64::try_from(i).unwrap()),
            )
            .unwrap();
            marker.mark(&format!("write-{i}-acked"));
            let s = db.stats().unwrap();
            assert_eq!(s.durable_seq, s.commit_seq);
            assert_eq!(commit_file_seq(&dir), s.commit_seq, "write {i}");
        }
    }
    {
        let dir = root.join("buffered");
        let db = ProfileDb::builder()
            .clock(clock)
            .durability(Durability::Buffered)
            .open(&dir)
            .unwrap();
        for i in 1..=WRITES {
            db.identify(Identify::new(Ident::id(format!("u{i}"))))
                .unwrap();
        }
        let s = db.stats().unwrap();
        assert!(s.durable_seq < s.commit_seq);
        assert!(commit_file_seq(&dir) < s.commit_seq);
        marker.mark("flush-begin");
        db.flush().unwrap();
        marker.mark("flush-done");
        assert_eq!(commit_file_seq(&dir), s.commit_seq);
    }
    println!("CHILD-OK");
}

fn child(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "durability_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, root);
    cmd
}

/// Whether strace is installed and may trace a child here.
fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One traced syscall: the thread, the call, and its first argument (a path, thanks to
/// `-y`) and for renames the second.
#[derive(Debug)]
struct Call {
    tid: u32,
    name: String,
    args: String,
}

fn parse_trace(text: &str) -> Vec<Call> {
    text.lines()
        .filter_map(|line| {
            let (tid, rest) = line.split_once(' ')?;
            let rest = rest.trim_start();
            let (name, args) = rest.split_once('(')?;
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None; // "<... resumed>", "+++ exited", signals
            }
            Some(Call {
                tid: tid.parse().ok()?,
                name: name.to_owned(),
                args: args.to_owned(),
            })
        })
        .collect()
}

/// The calls strictly between the renames to marker `from` and to marker `to`, on the
/// thread that made them (the caller's thread).
fn window<'a>(calls: &'a [Call], from: &str, to: &str) -> (u32, &'a [Call]) {
    let is_mark = |c: &Call, m: &str| {
        c.name.starts_with("rename") && c.args.contains(&format!("/markers/{m}\""))
    };
    let a = calls
        .iter()
        .position(|c| is_mark(c, from))
        .unwrap_or_else(|| panic!("marker {from} not in the trace"));
    let b = calls.iter().position(|c| is_mark(c, to)).unwrap();
    (calls[a].tid, &calls[a + 1..b])
}

/// Asserts that the calls in `w` (on thread `tid`) make `dir`'s data durable and then
/// record it in `COMMIT`: fsync (or fdatasync) of sled's data file, then of `COMMIT`.
/// With `new_files`, also of the sled directory before `COMMIT` (files were created).
fn assert_durable(what: &str, dir: &str, tid: u32, w: &[Call], new_files: bool) {
    let mine: Vec<&Call> = w.iter().filter(|c| c.tid == tid).collect();
    let sync = |c: &Call, path: &str| {
        (c.name == "fsync" || c.name == "fdatasync") && c.args.contains(&format!("<{path}>"))
    };
    let find = |pred: &dyn Fn(&Call) -> bool, desc: &str| -> usize {
        mine.iter().position(|c| pred(c)).unwrap_or_else(|| {
            panic!(
                "{what}: no {desc} on the caller's thread after the call began; traced: {:#?}",
                mine
            )
        })
    };
    let data = find(&|c| sync(c, &format!("{dir}/sled/db")), "fsync of sled/db");
    let commit = find(&|c| sync(c, &format!("{dir}/COMMIT")), "fsync of COMMIT");
    assert!(
        data < commit,
        "{what}: COMMIT recorded the commit before the data was durable: {mine:#?}"
    );
    if new_files {
        let sled_dir = find(
            &|c| sync(c, &format!("{dir}/sled")),
            "fsync of the sled directory",
        );
        assert!(sled_dir < commit, "{what}: {mine:#?}");
    }
}

#[test]
fn flush_durability_and_flush_end_in_fsync() {
    let root = tempfile::tempdir().unwrap();
    // strace -y prints resolved paths.
    let root_path = root.path().canonicalize().unwrap();
    if !strace_works() {
        let msg = "strace is not installed (or may not trace here): the fsync proof of \
                   Durability::Flush and flush() did NOT run; only the COMMIT-file checks \
                   inside the child ran. Install strace to run it.";
        eprintln!("\n!!!!!!!!!!\n!!! {msg}\n!!!!!!!!!!\n");
        assert!(
            std::env::var("PROFILEDB_REQUIRE_STRACE").is_err(),
            "PROFILEDB_REQUIRE_STRACE is set: {msg}"
        );
        let out = child(&root_path).output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("CHILD-OK"),
            "the child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let trace = root_path.join("trace");
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e"])
        .arg("trace=fsync,fdatasync,sync_file_range,rename,renameat,renameat2")
        .arg("-o")
        .arg(&trace)
        .arg(&exe)
        .args([
            "durability_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &root_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("CHILD-OK"),
        "the traced child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = parse_trace(&text);
    let flushed = root_path.join("flushed").display().to_string();
    for i in 1..=WRITES {
        let (tid, w) = window(
            &calls,
            &format!("write-{i}-begin"),
            &format!("write-{i}-acked"),
        );
        assert_durable(
            &format!("Durability::Flush write {i}"),
            &flushed,
            tid,
            w,
            false,
        );
    }
    let buffered = root_path.join("buffered").display().to_string();
    let (tid, w) = window(&calls, "flush-begin", "flush-done");
    assert_durable("flush()", &buffered, tid, w, false);
    let (tid, w) = window(&calls, "open-begin", "open-done");
    assert_durable("creating a database", &flushed, tid, w, true);
    let syncs = calls
        .iter()
        .filter(|c| c.name == "fsync" || c.name == "fdatasync")
        .count();
    eprintln!(
        "durability: {} traced calls, {syncs} fsync/fdatasync; each of {WRITES} Flush writes \
         and flush() synced sled/db, then COMMIT; creating the database also synced sled/",
        calls.len()
    );
}
