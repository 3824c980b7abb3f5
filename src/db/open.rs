//! Opening a database: the marker file, creating, recovery against `COMMIT`, loading
//! the bitmaps and the catalog.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use crate::commit_file::CommitFile;
use crate::error::{Error, OpenError, Result};
use crate::feed::FeedState;
use crate::index::{Bitmaps, Delta};
use crate::segments::Catalog;
use crate::store::kv::{is_lock_error, FaultKv, Kv, SledKv};
use crate::store::records::MetaValue;
use crate::store::timeline::Blocked;
use crate::store::{corrupted, meta_keys, Counters, Family, MetaF, Store, Txn};

use super::write::{Durable, Writer};
use super::{Builder, Inner, ProfileDb, FORMAT_VERSION, MARKER, SLED_DIR};

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Open(OpenError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `dir/name` atomically: a temp file, fsync, rename, fsync of `dir`.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn marker_text() -> String {
    format!("profiledb\nformat {FORMAT_VERSION}\n")
}

/// Reads the marker; `Ok(version)` or why the directory is not ours.
fn read_marker(dir: &Path) -> Result<u32> {
    let path = dir.join(MARKER);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let sample = fs::read_dir(dir)
                .ok()
                .and_then(|mut it| it.next())
                .and_then(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(OpenError::NotADatabase {
                path: dir.to_path_buf(),
                reason: format!("the directory is not empty (it holds `{sample}`, among others) and has no {MARKER} file"),
            }
            .into());
        }
        Err(e) => return Err(io_err(&path, e)),
    };
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    let version = match (lines.next(), lines.next()) {
        (Some("profiledb"), Some(v)) => v
            .strip_prefix("format ")
            .and_then(|n| n.trim().parse::<u32>().ok()),
        _ => None,
    };
    version.ok_or_else(|| {
        OpenError::NotADatabase {
            path: dir.to_path_buf(),
            reason: format!("its {MARKER} file is not a profiledb marker"),
        }
        .into()
    })
}

impl ProfileDb {
    /// Opens (or creates) the database in `path` with the default configuration.
    ///
    /// # Errors
    /// As [`Builder::open`](crate::Builder::open).
    pub fn open(path: impl AsRef<Path>) -> Result<ProfileDb> {
        Builder::default().open(path)
    }

    /// A builder for opening with a configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn open_with(config: Builder, dir: &Path) -> Result<ProfileDb> {
        super::memory::check(&config)?;
        let fresh = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
                true
            }
            Err(e) => return Err(io_err(dir, e)),
        };
        if fresh {
            replace_file(dir, MARKER, marker_text().as_bytes()).map_err(|e| io_err(dir, e))?;
        } else {
            let found = read_marker(dir)?;
            if found != FORMAT_VERSION {
                return Err(OpenError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                }
                .into());
            }
        }
        // The database's own lock, held for the handle's life: one handle at a time, and
        // none while another's compaction swaps sled's files.
        let lock = match crate::store::kv::lock_database(&dir.join(MARKER), 50) {
            Ok(Some(file)) => file,
            Ok(None) => {
                return Err(Error::Open(OpenError::Locked {
                    path: dir.to_path_buf(),
                }))
            }
            Err(e) => return Err(io_err(&dir.join(MARKER), std::io::Error::other(e))),
        };
        // A damaged COMMIT file leaves the last durable commit unknown: an error, unless
        // opening for salvage, which rewrites it.
        let (durable_seq, commit_file, commit_damaged) = match CommitFile::open(dir) {
            Ok((seq, file)) => (seq, file, None),
            Err(e @ Error::Corrupted { .. }) if config.salvage => {
                (None, CommitFile::recreate(dir), Some(e.to_string()))
            }
            Err(e) => return Err(e),
        };

        let sled_dir = dir.join(SLED_DIR);
        // sled 0.34 releases its file lock only when its background threads let go of
        // the database, a moment after the last handle is dropped; so a reopen right
        // after a close retries for up to a second before calling the database locked.
        let cache = config
            .memory_budget
            .map_or(config.cache_bytes, super::memory::first_cache);
        let sled = match SledKv::open_waiting(&sled_dir, cache, 50) {
            Ok(kv) => kv,
            Err(e) if is_lock_error(&e) => {
                return Err(Error::Open(OpenError::Locked {
                    path: dir.to_path_buf(),
                }))
            }
            Err(other) => {
                return Err(Error::Open(OpenError::Damaged {
                    reason: other.to_string(),
                }))
            }
        };
        let kv: Box<dyn Kv> = match &config.faults {
            Some(f) => Box::new(FaultKv::new(sled, f.clone())),
            None => Box::new(sled),
        };
        let store = Store::new(Box::new(Blocked::new(kv)));

        let format = store.get::<MetaF>(meta_keys::FORMAT)?;
        let initialized = match format {
            Some(MetaValue::Format { version, .. }) if version == FORMAT_VERSION => true,
            Some(MetaValue::Format { version, .. }) => {
                return Err(OpenError::UnsupportedFormat {
                    found: version,
                    supported: FORMAT_VERSION,
                }
                .into())
            }
            Some(_) => {
                return Err(corrupted(
                    Family::Meta,
                    meta_keys::FORMAT,
                    "expected the format record",
                ))
            }
            None => false,
        };
        if initialized {
            drop_retired_keys(&store)?;
        }
        let (counters, commit_seq) = match store.get::<MetaF>(meta_keys::COUNTERS)? {
            None => (
                Counters {
                    next_pid: 1,
                    next_seq: 1,
                    counts: Default::default(),
                },
                0,
            ),
            Some(MetaValue::Counters {
                next_pid,
                next_seq,
                commit_seq,
                counts,
            }) => (
                Counters {
                    next_pid,
                    next_seq,
                    counts,
                },
                commit_seq,
            ),
            Some(_) => {
                return Err(corrupted(
                    Family::Meta,
                    meta_keys::COUNTERS,
                    "expected the counters record",
                ))
            }
        };
        // The chunks, then the log replayed over them.
        let (bitmaps, log) = Bitmaps::load(&store, commit_seq)?;
        let catalog = Catalog::load(&store)?;
        let feed = FeedState::load(&store)?;
        let durable_seq = durable_seq.unwrap_or(0);
        let lost = durable_seq > commit_seq;
        let salvaged = lost || commit_damaged.is_some();
        if lost && !config.salvage {
            return Err(Error::DataLoss {
                durable_seq,
                recovered_seq: commit_seq,
            });
        }

        let db = ProfileDb {
            inner: Arc::new(Inner {
                store,
                writer: Mutex::new(Writer {
                    counters,
                    commit_seq,
                    log,
                    feed,
                    budget_retry: 0,
                }),
                gate: RwLock::new(bitmaps),
                catalog: RwLock::new(catalog),
                committed: AtomicU64::new(commit_seq),
                feed_since: AtomicU64::new(feed.map_or(crate::feed::OFF, |f| f.since)),
                durable: Mutex::new(Durable {
                    seq: if salvaged { 0 } else { durable_seq },
                    file: commit_file,
                }),
                poisoned: AtomicBool::new(false),
                checkpoints: AtomicU64::new(0),
                restoring: AtomicBool::new(false),
                restore_from: Mutex::default(),
                salvaged: match commit_damaged {
                    Some(why) => Some(format!(
                        "data loss unknown: opened for salvage over a damaged COMMIT file \
                         ({why}); sled recovered commit #{commit_seq}"
                    )),
                    None => lost.then(|| {
                        format!(
                            "data loss: opened for salvage with {} acknowledged commits \
                             missing (durable commit #{durable_seq}, sled recovered \
                             #{commit_seq})",
                            durable_seq - commit_seq
                        )
                    }),
                },
                config,
                dir: dir.to_path_buf(),
                _lock: lock,
            }),
        };
        if !initialized {
            let now = db.inner.config.clock.now();
            let mut writer = db.writer()?;
            let mut txn = Txn::new(&db.inner.store);
            txn.put::<MetaF>(
                meta_keys::FORMAT.to_vec(),
                MetaValue::Format {
                    version: FORMAT_VERSION,
                    created: now,
                },
            );
            db.commit(&mut writer, txn, counters, &Delta::default())?;
            drop(writer);
            db.make_durable()?;
        } else if salvaged {
            // What sled recovered becomes the durable state.
            db.inner.store.kv().flush()?;
            let mut durable = db
                .inner
                .durable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            durable.file.reset(commit_seq).map_err(|e| io_err(dir, e))?;
            durable.seq = commit_seq;
        }
        if lost {
            // Commits up to `durable_seq` were acknowledged (and the change feed may have
            // served them) but are gone: number on after them, and start the feed
            // afresh, so a cursor into what was lost expires.
            let mut writer = db.restore_writer()?;
            writer.commit_seq = writer.commit_seq.max(durable_seq);
            db.restart_feed(&mut writer)?;
        }
        if let Some(setting) = db.inner.config.change_feed {
            db.set_change_feed(setting)?;
        }
        // Under a budget, the cache sled opened with and the bitmaps now read may pass
        // it: open sled again with the cache they leave. Otherwise the next reopen
        // sizes it.
        db.size_cache();
        if db.cache_over_budget() {
            // Only the reopen: no fold, no pruning, not counted as a checkpoint. Nothing
            // else holds the handle yet, so no read keeps it from running.
            db.make_durable()?;
            db.inner.store.kv().checkpoint()?;
        }
        Ok(db)
    }
}

/// Deletes the `events_by_name` keys (tag 7) a database written by a build of format 3
/// from before that family's retirement still holds: derived data nothing reads (a
/// person's occurrences are read from `activity`, and `meta/counters`' event count is
/// the same number either way). In batches of 10,000 keys, none a commit; a crash
/// between them leaves the rest for the next open. A database without any costs one
/// empty range read.
fn drop_retired_keys(store: &Store) -> Result<()> {
    use std::ops::Bound::Unbounded;
    let kv = store.kv();
    loop {
        let keys: Vec<Vec<u8>> = kv
            .range(Family::EventsByName, (Unbounded, Unbounded), false)
            .take(10_000)
            .map(|r| r.map(|(k, _)| k))
            .collect::<std::result::Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        let writes = crate::store::kv::WriteSet {
            families: vec![(
                Family::EventsByName,
                keys.into_iter().map(|k| (k, None)).collect(),
            )],
        };
        kv.commit(&writes)?;
    }
}
